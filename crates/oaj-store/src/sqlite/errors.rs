//! Mapping of SQLite errors onto [`StoreError`].

use rusqlite::ErrorCode;

use crate::error::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(format!(
                "{error}; stop the other program or raise the busy timeout"
            )),
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
                StoreError::Corrupt(error.to_string())
            }
            Some(ErrorCode::DiskFull) => StoreError::Full(error.to_string()),
            _ => StoreError::Database(error.to_string()),
        }
    }
}

/// Builds the error for a stored value that does not decode, naming the column and the value.
pub(crate) fn corrupt(column: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {column} holds an invalid value: {value}"))
}
