//! Election of the maintenance leader: the process whose dedicated connection holds a
//! session-level advisory lock on the schema runs maintenance, and the others skip it.
//!
//! The server releases the lock when the leader's connection ends, including when its process is
//! killed, and then the next process to try takes it. A leader whose machine vanishes without
//! closing its socket keeps the lock until the server notices the dead connection, which depends
//! on the server's TCP keepalive settings.

use tokio::sync::Mutex;
use tokio_postgres::{Client, Config};

use super::session::session_open;
use super::Names;
use crate::error::StoreError;

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1, $2)";

/// This process's claim on the maintenance lock.
pub(crate) struct Leader {
    config: Config,
    session: Mutex<Option<Session>>,
}

struct Session {
    client: Client,
    is_leader: bool,
}

impl Leader {
    /// Builds a leader that connects on first use.
    pub(crate) fn new(config: Config) -> Leader {
        Leader {
            config,
            session: Mutex::new(None),
        }
    }

    /// Reports whether this process leads maintenance, taking the lead when it is free. Cheap
    /// when another process leads: one query on an open connection.
    pub(crate) async fn is_leader(&self, names: &Names) -> Result<bool, StoreError> {
        let mut guard = self.session.lock().await;
        if let Some(session) = guard.as_ref() {
            // A leader checks that its connection, and with it the lock, is still alive.
            let is_alive = !session.client.is_closed()
                && (!session.is_leader || session.client.simple_query("").await.is_ok());
            if !is_alive {
                if session.is_leader {
                    tracing::warn!("lost the maintenance lead with its connection");
                }
                *guard = None;
            }
        }
        let session = match guard.as_mut() {
            Some(session) => session,
            None => {
                let (client, _notifications) = session_open(&self.config).await?;
                guard.insert(Session {
                    client,
                    is_leader: false,
                })
            }
        };
        if !session.is_leader {
            let row = session
                .client
                .query_one(TRY_LOCK, &[&names.lock_class_maintenance, &names.lock_id])
                .await?;
            session.is_leader = row.try_get(0)?;
            if session.is_leader {
                tracing::info!(schema = %names.schema, "took the maintenance lead");
            }
        }
        Ok(session.is_leader)
    }
}
