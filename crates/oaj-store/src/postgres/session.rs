//! Dedicated connections outside the pool, for LISTEN and for holding a session-level lock.

use std::future::poll_fn;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Notification};

/// Opens a connection and drives it on a task of its own. Notifications go to the returned
/// receiver, which ends when the connection does.
pub(crate) async fn session_open(
    config: &Config,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
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
