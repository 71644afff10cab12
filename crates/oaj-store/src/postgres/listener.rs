//! The listener: one connection that LISTENs for this schema's notifications, wakes workers on
//! `work` and publishes committed events on `events`, reading them back in sequence order.
//!
//! Polling is the fallback: while the connection is down the listener wakes the workers and reads
//! new events on every tick, and it reconnects with a growing delay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, Notification};

use super::db::Db;
use super::job_reads::event_list;
use super::session::session_open;
use super::Names;
use crate::error::StoreError;
use crate::model::{Event, EventFilter};

/// How often the listener reads events and wakes workers when no notification arrives.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between two reconnection tries.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(10);

const SELECT_LAST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM events";

/// What the listener feeds.
pub(crate) struct Feeds {
    pub(crate) pool: Pool,
    pub(crate) names: Arc<Names>,
    pub(crate) notify: Arc<Notify>,
    pub(crate) events: broadcast::Sender<Event>,
    /// Set when the store is dropped. The listener may be running on another thread at that
    /// moment and see its connections close as the runtime shuts down, which is no failure.
    pub(crate) closed: Arc<AtomicBool>,
}

struct Listener {
    config: Config,
    feeds: Feeds,
    /// The last event published, or skipped while nobody subscribed.
    last_seq: i64,
    /// The LISTEN connection, `None` while it is down.
    session: Option<(Client, mpsc::UnboundedReceiver<Notification>)>,
}

/// Opens the LISTEN connection and starts the listener task. Returns once LISTEN is in effect,
/// so every event committed afterwards reaches the subscribers.
pub(crate) async fn listener_start(
    config: Config,
    feeds: Feeds,
) -> Result<JoinHandle<()>, StoreError> {
    let session = listen(&config, &feeds.names).await?;
    let client = feeds.pool.get().await?;
    let last_seq = Db::Client(&client)
        .query_value(SELECT_LAST_SEQ, &[])
        .await?;
    drop(client);
    let listener = Listener {
        config,
        feeds,
        last_seq,
        session: Some(session),
    };
    Ok(tokio::spawn(listener.run()))
}

async fn listen(
    config: &Config,
    names: &Names,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), StoreError> {
    let (client, receiver) = session_open(config).await?;
    let sql = format!(
        "LISTEN \"{}\"; LISTEN \"{}\"",
        names.events_channel, names.work_channel
    );
    client.batch_execute(&sql).await?;
    Ok((client, receiver))
}

impl Listener {
    async fn run(mut self) {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconnect_delay = POLL_INTERVAL;
        loop {
            let notification = match &mut self.session {
                Some((_, receiver)) => tokio::select! {
                    notification = receiver.recv() => Some(notification),
                    _ = poll.tick() => None,
                },
                None => {
                    tokio::time::sleep(reconnect_delay).await;
                    reconnect_delay = (reconnect_delay * 2).min(RECONNECT_DELAY_MAX);
                    self.reconnect().await;
                    if self.session.is_some() {
                        reconnect_delay = POLL_INTERVAL;
                    }
                    // Changes made while the connection was down sent notifications that were
                    // lost, so act as if both channels had fired.
                    self.wake_workers();
                    self.events_publish(None).await;
                    continue;
                }
            };
            match notification {
                Some(Some(notification)) => self.on_notification(&notification).await,
                Some(None) if self.is_closed() => return,
                Some(None) => {
                    tracing::warn!("postgres listener connection closed; polling until it is back");
                    self.session = None;
                }
                None => self.events_publish(None).await,
            }
        }
    }

    async fn reconnect(&mut self) {
        match listen(&self.config, &self.feeds.names).await {
            Ok(session) => {
                tracing::info!("postgres listener connection restored");
                self.session = Some(session);
            }
            Err(error) => tracing::warn!(error = %error, "cannot reconnect the postgres listener"),
        }
    }

    async fn on_notification(&mut self, notification: &Notification) {
        if notification.channel() == self.feeds.names.work_channel {
            self.wake_workers();
            return;
        }
        match notification.payload().parse::<i64>() {
            Ok(seq) => self.events_publish(Some(seq)).await,
            Err(_) => tracing::warn!(
                payload = notification.payload(),
                "ignored an event notification whose payload is not a sequence number"
            ),
        }
    }

    /// Reports whether the store was dropped, so that failures from here on are its shutdown.
    fn is_closed(&self) -> bool {
        self.feeds.closed.load(Ordering::Acquire)
    }

    fn wake_workers(&self) {
        self.feeds.notify.notify_waiters();
        self.feeds.notify.notify_one();
    }

    /// Publishes the events committed since the last one published. `seq` is the number a
    /// notification announced, used to skip ahead when nobody subscribes.
    async fn events_publish(&mut self, seq: Option<i64>) {
        if self.feeds.events.receiver_count() == 0 {
            if let Some(seq) = seq {
                self.last_seq = self.last_seq.max(seq);
            }
            return;
        }
        if seq.is_some_and(|seq| seq <= self.last_seq) {
            return;
        }
        if let Err(error) = self.events_read().await {
            if !self.is_closed() {
                tracing::warn!(error = %error, "cannot read new events to publish; retrying at the next tick");
            }
        }
    }

    async fn events_read(&mut self) -> Result<(), StoreError> {
        let client = self.feeds.pool.get().await?;
        loop {
            let filter = EventFilter {
                job_id: None,
                after_seq: self.last_seq,
                limit: 0,
            };
            let events = event_list(Db::Client(&client), &filter).await?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            self.last_seq = last.seq;
            for event in events {
                // The send fails only when every subscriber left meanwhile, which is normal.
                let _ = self.feeds.events.send(event);
            }
        }
    }
}
