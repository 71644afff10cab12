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
