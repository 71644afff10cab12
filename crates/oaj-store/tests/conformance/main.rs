//! The store conformance suite: every test is an `async fn(Arc<dyn Store>)` that runs unchanged
//! against each store implementation. Each test gets a fresh store of its own.

mod support;

mod actions;
mod approvals;
mod claims;
mod dependencies;
mod durability;
mod events;
mod idempotency;
mod job_query;
mod jobs;
mod leases;
mod maintenance;
mod sqlite_open;
mod workflows;

/// Runs each named test of the enclosing module's parent against a fresh SQLite store on a
/// temporary file. A PostgreSQL store adds its own macro that builds its store the same way.
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
