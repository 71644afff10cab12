//! `GET /v1/events`: stored events replayed from a sequence number, then live events, as
//! Server-Sent Events.
//!
//! The stream subscribes to live events before it reads stored ones, so nothing committed in
//! between is lost. It remembers the last sequence number it sent and drops any live event at or
//! below it, so the boundary between replay and live repeats nothing. A subscriber that falls
//! behind the in-process channel goes back to reading the store.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use oaj_store::{Event, EventFilter, StoreError};
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::AppState;

/// Events read from the store per page of a replay.
const REPLAY_PAGE: u32 = 500;
/// Jobs whose batch and workflow a stream remembers for filtering before it starts over.
const JOB_CACHE_MAX: usize = 10_000;

/// Which events to stream, and from where.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    /// Only this job's events.
    job: Option<String>,
    /// Only events of jobs in this batch.
    batch: Option<String>,
    /// Only events of jobs of this workflow.
    workflow: Option<String>,
    /// Event kinds, comma-separated: an exact kind such as `job.completed`, or a prefix ending in
    /// a dot such as `attempt.`.
    kind: Option<String>,
    /// Replay stored events after this sequence number first. The `Last-Event-ID` header, sent by
    /// a reconnecting browser, takes precedence.
    after: Option<i64>,
}

/// Streams events as Server-Sent Events: each has the event's `seq` as its id, its kind as the
/// event name, and the event as JSON data. Without `after` or `Last-Event-ID`, only new events
/// are sent.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this sequence number")),
    responses((status = 200, description = "An endless text/event-stream", content_type = "text/event-stream"),
        (status = 400, description = "A parameter does not parse, or the store rejects it", body = ApiError),
        (status = 503, description = "The store cannot serve the replay now", body = ApiError)))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::query("Last-Event-ID", "Last-Event-ID must be a sequence number")
                })?,
        ),
        None => None,
    };
    let receiver = state.store().event_subscribe();
    let start = match last_event_id.or(query.after) {
        Some(after) => Start::Replay(after),
        None => Start::Live,
    };
    let mut cursor = Cursor::new(state.clone(), receiver, query, start);
    // The first page is read before the response starts, so that a filter the store rejects or a
    // store that is down gets a 4xx or a 503 instead of an empty stream that closes at once.
    if cursor.is_replaying {
        cursor.replay_read().await?;
    }
    let events = futures_util::stream::unfold(cursor, |mut cursor| async move {
        let event = cursor.next().await?;
        Some((Ok(event), cursor))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

enum Start {
    Replay(i64),
    Live,
}

/// The position of one stream: what it sent last, and what it has read but not sent.
struct Cursor {
    state: AppState,
    shutdown: CancellationToken,
    receiver: broadcast::Receiver<Event>,
    query: StreamQuery,
    kinds: Vec<String>,
    /// Sequence number of the last event passed on (sent or filtered out).
    last_seq: i64,
    /// `true` while stored events remain to be read.
    is_replaying: bool,
    buffer: VecDeque<Event>,
    /// Batch and workflow of jobs seen so far, for the batch and workflow filters.
    jobs: HashMap<String, Option<(Option<String>, String)>>,
}

impl Cursor {
    fn new(
        state: AppState,
        receiver: broadcast::Receiver<Event>,
        query: StreamQuery,
        start: Start,
    ) -> Cursor {
        let kinds = query
            .kind
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|kind| !kind.is_empty())
            .map(str::to_owned)
            .collect();
        let (last_seq, is_replaying) = match start {
            Start::Replay(after) => (after, true),
            // Live only: anything the channel already holds is newer than the subscription.
            Start::Live => (i64::MIN, false),
        };
        Cursor {
            shutdown: state.shutdown.clone(),
            state,
            receiver,
            query,
            kinds,
            last_seq,
            is_replaying,
            buffer: VecDeque::new(),
            jobs: HashMap::new(),
        }
    }

    /// Returns the next event that passes the filters, or `None` when the stream ends (at
    /// shutdown, or when the store fails).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let event = self.next_unfiltered().await?;
            if event.seq <= self.last_seq {
                continue;
            }
            self.last_seq = event.seq;
            if self.is_match(&event).await {
                return Some(sse_event(&event));
            }
        }
    }

    async fn next_unfiltered(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(event);
            }
            if self.is_replaying {
                self.replay_page().await?;
                continue;
            }
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                _ = self.shutdown.cancelled() => return None,
            };
            match received {
                Ok(event) => return Some(event),
                // Missed events are still in the store: read them back from the last one sent.
                // A stream that has passed on nothing yet has no position to resume from, and
                // its client asked only for new events, so it just goes on.
                Err(RecvError::Lagged(_)) => self.is_replaying = self.last_seq != i64::MIN,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    async fn replay_page(&mut self) -> Option<()> {
        match self.replay_read().await {
            Ok(()) => Some(()),
            Err(error) => {
                tracing::warn!(error = %error, "event stream replay failed; closing the stream");
                None
            }
        }
    }

    /// Reads the next page of stored events into the buffer.
    async fn replay_read(&mut self) -> Result<(), StoreError> {
        let filter = EventFilter {
            job_id: self.query.job.clone(),
            after_seq: self.last_seq.max(0),
            limit: REPLAY_PAGE,
        };
        let events = self.state.store().event_list(filter).await?;
        self.is_replaying = events.len() == REPLAY_PAGE as usize;
        self.buffer.extend(events);
        Ok(())
    }

    async fn is_match(&mut self, event: &Event) -> bool {
        let kind_ok = self.kinds.is_empty()
            || self.kinds.iter().any(|kind| match kind.strip_suffix('.') {
                Some(prefix) => event
                    .kind
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.')),
                None => event.kind == *kind,
            });
        if !kind_ok {
            return false;
        }
        if let Some(job) = &self.query.job {
            if event.job_id.as_ref() != Some(job) {
                return false;
            }
        }
        if self.query.batch.is_none() && self.query.workflow.is_none() {
            return true;
        }
        let Some(job_id) = &event.job_id else {
            return false;
        };
        let Some((batch, workflow)) = self.job_context(job_id).await else {
            return false;
        };
        let batch_ok = self.query.batch.is_none() || self.query.batch == batch;
        let workflow_ok = self
            .query
            .workflow
            .as_ref()
            .is_none_or(|id| *id == workflow);
        batch_ok && workflow_ok
    }

    async fn job_context(&mut self, job_id: &str) -> Option<(Option<String>, String)> {
        if let Some(context) = self.jobs.get(job_id) {
            return context.clone();
        }
        let context = match self.state.store().job_get(job_id).await {
            Ok(job) => job.map(|job| (job.batch_id, job.workflow_id)),
            Err(error) => {
                tracing::warn!(error = %error, job_id, "reading a job for the event filter failed");
                None
            }
        };
        if self.jobs.len() >= JOB_CACHE_MAX {
            self.jobs.clear();
        }
        self.jobs.insert(job_id.to_owned(), context.clone());
        context
    }
}

fn sse_event(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).expect("an event serializes to JSON");
    SseEvent::default()
        .id(event.seq.to_string())
        .event(&event.kind)
        .data(data)
}
