//! Dedicated connections outside the pool, for LISTEN and for holding a session-level lock.

use std::future::poll_fn;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Notification};

use crate::error::StoreError;

/// Time allowed to open a connection, start-up and authentication included, when the URL sets no
/// `connect_timeout`. The client's own `connect_timeout` covers only the TCP connect, so a
/// listener that accepts and then sends nothing would hold a connect forever.
pub(crate) const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Returns the time allowed to open a connection with `config`: its `connect_timeout`, or
/// [`CONNECT_TIMEOUT_DEFAULT`], for each host of the URL, since the client tries them in turn.
pub(crate) fn connect_timeout(config: &Config) -> Duration {
    let per_host = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT_DEFAULT);
    let hosts = u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
    per_host.saturating_mul(hosts)
}

/// Opens a connection and drives it on a task of its own. Notifications go to the returned
/// receiver, which ends when the connection does.
pub(crate) async fn session_open(
    config: &Config,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), StoreError> {
    let timeout = connect_timeout(config);
    let (client, mut connection) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| connect_timed_out(timeout))??;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    // The send fails when the owner does not read notifications, and then the
                    // connection must still be driven for its client.
                    let _ = sender.send(notification);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    // The client's error prints only "db error", and the store's adds the server's
                    // code and message.
                    let error = crate::StoreError::from(error);
                    tracing::warn!(error = %error, "postgres session connection failed");
                    return;
                }
                None => return,
            }
        }
    });
    Ok((client, receiver))
}

/// Returns the error of a connection that did not open within `timeout`.
pub(crate) fn connect_timed_out(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "postgres connection: no answer from the server within {} s: check that the host and port \
         are a PostgreSQL server, or raise connect_timeout in the URL",
        timeout.as_secs_f64()
    ))
}
