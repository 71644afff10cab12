//! The store conformance suite: every test is an `async fn(Arc<dyn Store>)` that runs unchanged
//! against each store implementation. Each test gets a fresh store of its own.

mod support;

mod actions;
mod approvals;
mod attempt_records;
mod claims;
mod dependencies;
mod dependency_changes;
mod durability;
mod events;
mod idempotency;
mod job_query;
mod jobs;
mod leases;
mod maintenance;
mod postgres_only;
mod sqlite_open;
mod workers;
mod workflows;

/// Runs each named test of the enclosing module's parent against every store implementation.
#[macro_export]
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        $crate::sqlite_tests!($($name),*);
        $crate::postgres_tests!($($name),*);
    };
}

/// Runs each named test of the enclosing module's parent against a fresh SQLite store on a
/// temporary file.
#[macro_export]
macro_rules! sqlite_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = $crate::support::sqlite_store();
                    super::$name(store).await;
                }
            )*
        }
    };
}

/// Runs each named test of the enclosing module's parent against a fresh PostgreSQL store in a
/// schema of its own, on the server that `OAJ_TEST_DATABASE_URL` names. Without that variable
/// the tests fail under CI (`CI=true`) and are skipped, with a message, elsewhere.
#[macro_export]
macro_rules! postgres_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = $crate::support::postgres_store().await else {
                        return;
                    };
                    super::$name(store).await;
                }
            )*
        }
    };
}
