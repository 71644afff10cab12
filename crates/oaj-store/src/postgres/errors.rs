//! Mapping of PostgreSQL client and pool errors onto [`StoreError`].

use crate::error::StoreError;

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> StoreError {
        match error.as_db_error() {
            // The server's own message (with its detail and hint) contains more than the
            // client's wrapper, which prints only "db error".
            Some(db) => StoreError::Database(format!("postgres {}: {db}", db.code().code())),
            None => StoreError::Database(format!("postgres connection: {error}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Database(format!(
            "cannot get a postgres connection from the pool: {error}"
        ))
    }
}

/// Reports whether PostgreSQL aborted a statement because of a deadlock (`40P01`) or a
/// serialization failure (`40001`), after which the same call may succeed when run again.
pub(crate) fn is_retryable(error: &StoreError) -> bool {
    match error {
        StoreError::Database(message) => {
            message.starts_with("postgres 40P01:") || message.starts_with("postgres 40001:")
        }
        _ => false,
    }
}

/// Copies the error of a failed group transaction for each call of the group.
pub(crate) fn error_copy(error: &StoreError) -> StoreError {
    match error {
        StoreError::Database(message) => StoreError::Database(message.clone()),
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Database(format!("write transaction failed: {other}")),
    }
}
