//! A small pool of read connections. In WAL mode they read the last commit while the writer
//! works, so reads do not wait for writes (only for a free connection of the pool).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::connection::open_reader;
use crate::error::StoreError;

/// Read connections, each used by one blocking task at a time.
pub(crate) struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Opens `count` read connections to the file at `path`.
    pub(crate) fn open(
        path: &Path,
        count: usize,
        busy_timeout: Duration,
    ) -> Result<Readers, StoreError> {
        let idle = (0..count.max(1))
            .map(|_| open_reader(path, busy_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Readers {
            permits: Arc::new(Semaphore::new(idle.len())),
            idle: Arc::new(Mutex::new(idle)),
        })
    }

    /// Runs `op` on an idle read connection in a blocking task, waiting for one to free up.
    pub(crate) async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = Arc::clone(&self.idle);
        let task = tokio::task::spawn_blocking(move || {
            let borrowed = Borrowed::take(idle);
            let result = op(borrowed.conn());
            drop(borrowed);
            drop(permit);
            result
        });
        match task.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

/// A connection taken from the pool, put back when dropped, even when the read panics.
struct Borrowed {
    conn: Option<Connection>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl Borrowed {
    fn take(idle: Arc<Mutex<Vec<Connection>>>) -> Borrowed {
        let conn = lock(&idle)
            .pop()
            .expect("a permit guarantees an idle connection");
        Borrowed {
            conn: Some(conn),
            idle,
        }
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            lock(&self.idle).push(conn);
        }
    }
}

fn lock(idle: &Mutex<Vec<Connection>>) -> std::sync::MutexGuard<'_, Vec<Connection>> {
    // Only push and pop run under the lock, and neither panics, so the lock is never poisoned.
    idle.lock().expect("the pool lock is never poisoned")
}
