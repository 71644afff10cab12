//! Mapping of PostgreSQL client and pool errors onto [`StoreError`].

use std::error::Error;

use crate::error::StoreError;

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> StoreError {
        let Some(db) = error.as_db_error() else {
            let message = format!("postgres connection: {}", with_causes(&error));
            return if is_connection_lost(&error) {
                StoreError::Unavailable(message)
            } else {
                StoreError::Database(message)
            };
        };
        // The server's own message (with its detail and hint) contains more than the client's
        // wrapper, which prints only "db error".
        let code = db.code().code();
        let message = format!("postgres {code}: {db}");
        match code {
            // character_not_in_repertoire: a NUL character in a text parameter.
            "22021" => StoreError::TextInvalid(format!(
                "a value contains the NUL character (\\u0000), which PostgreSQL cannot store in \
                 text: remove it ({message})"
            )),
            // disk_full: the server could not extend a file or write its log.
            "53100" => StoreError::Full(message),
            // admin_shutdown, crash_shutdown, cannot_connect_now, and the connection exceptions.
            "57P01" | "57P02" | "57P03" => StoreError::Unavailable(message),
            _ if code.starts_with("08") => StoreError::Unavailable(message),
            _ => StoreError::Database(message),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> StoreError {
        match error {
            // The connection the pool tried to open failed: keep the client's own error, whose
            // code and causes the pool's message leaves out.
            deadpool_postgres::PoolError::Backend(error) => StoreError::from(error),
            other => StoreError::Unavailable(format!(
                "cannot get a postgres connection from the pool: {}",
                with_causes(&other)
            )),
        }
    }
}

/// Formats an error followed by each of its causes, because the client's errors print only their
/// kind ("error connecting to server") and keep the reason ("Connection refused") as a cause.
fn with_causes(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let part = next.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = next.source();
    }
    text
}

/// Reports whether a client error means the connection failed or ended, rather than a statement
/// that the client could not encode or decode.
fn is_connection_lost(error: &tokio_postgres::Error) -> bool {
    let mut cause = error.source();
    while let Some(next) = cause {
        if next.is::<std::io::Error>() {
            return true;
        }
        cause = next.source();
    }
    // The client has no public accessor for its error kind, so the two kinds without an I/O cause
    // are told by their text, as tokio-postgres 0.7 prints them.
    error.is_closed()
        || matches!(
            error.to_string().as_str(),
            "error connecting to server" | "timeout waiting for server"
        )
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
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        StoreError::TextInvalid(message) => StoreError::TextInvalid(message.clone()),
        StoreError::Full(message) => StoreError::Full(message.clone()),
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Database(format!("write transaction failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use deadpool_postgres::{PoolError, TimeoutType};

    use super::*;

    /// Regression: a group's full-disk error reached its other calls as `Database`, for which the
    /// API returns 500.
    #[test]
    fn error_copy_keeps_full_disk() {
        let copy = error_copy(&StoreError::Full("postgres 53100".into()));

        assert!(matches!(copy, StoreError::Full(_)), "{copy:?}");
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        let error = StoreError::from(PoolError::Timeout(TimeoutType::Wait));

        let StoreError::Unavailable(message) = error else {
            panic!("expected Unavailable, got {error:?}");
        };
        assert!(message.contains("from the pool"), "{message}");
    }

    /// An error that prints only its kind, as the client's errors do.
    #[derive(Debug)]
    struct KindOnly(std::io::Error);

    impl std::fmt::Display for KindOnly {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("error connecting to server")
        }
    }

    impl Error for KindOnly {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_follow_the_error() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");

        let text = with_causes(&KindOnly(refused));

        assert_eq!(text, "error connecting to server: refused");
    }
}
