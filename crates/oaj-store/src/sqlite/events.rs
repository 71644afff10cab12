//! Events: written in the transaction of the change they record, published after its commit.

use rusqlite::{params, Connection};
use serde_json::Value;

use super::rows::{event_columns, event_from_row, insert_rowid, query_all};
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{Event, EventFilter};

const INSERT_EVENT: &str = "INSERT INTO events (kind, job_id, step_id, item, attempt, data, at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Events returned by one list when the filter sets no limit, and the maximum it may request.
const SELECT_JOB_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
);
const SELECT_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
);

const LIST_LIMIT_DEFAULT: u32 = 1000;

impl WriteTx<'_> {
    /// Stores an event and keeps it to publish after the commit. `event.seq` is assigned here.
    pub(crate) fn event_add(&mut self, mut event: Event) -> Result<(), StoreError> {
        let data = event.data.to_string();
        event.seq = insert_rowid(
            self.conn,
            INSERT_EVENT,
            params![
                event.kind,
                event.job_id,
                event.step_id,
                event.item,
                event.attempt,
                data,
                event.at
            ],
        )?;
        self.events.push(event);
        Ok(())
    }

    /// Stores an event about a whole job.
    pub(crate) fn job_event(
        &mut self,
        kind: String,
        job_id: &str,
        data: Value,
        at: i64,
    ) -> Result<(), StoreError> {
        self.event_add(Event {
            seq: 0,
            kind,
            job_id: Some(job_id.to_owned()),
            step_id: None,
            item: None,
            attempt: None,
            data,
            at,
        })
    }
}

/// Lists events after `filter.after_seq`, in sequence order.
pub(crate) fn event_list(
    conn: &Connection,
    filter: &EventFilter,
) -> Result<Vec<Event>, StoreError> {
    let limit = match filter.limit {
        0 => LIST_LIMIT_DEFAULT,
        limit => limit.min(LIST_LIMIT_DEFAULT),
    };
    match &filter.job_id {
        Some(job_id) => query_all(
            conn,
            SELECT_JOB_EVENTS,
            params![job_id, filter.after_seq, limit],
            event_from_row,
        ),
        None => query_all(
            conn,
            SELECT_EVENTS,
            params![filter.after_seq, limit],
            event_from_row,
        ),
    }
}
