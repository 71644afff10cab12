//! Events: written in the transaction of the change they record, published after its commit.

use std::sync::OnceLock;

use rusqlite::{params, Connection};
use serde_json::Value;

use super::rows::{event_columns, event_from_row, query_all};
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{Event, EventFilter};

/// The columns of one event row, in the order [`WriteTx::events_write`] binds them. `OR FAIL`
/// spares SQLite a statement journal (see "Hot statements run without a statement journal" in
/// docs/ARCHITECTURE.md).
const INSERT_EVENTS: &str = "INSERT OR FAIL INTO events (kind, job_id, step_id, item, attempt,
    data, at) VALUES ";
const EVENT_VALUES: &str = "(?, ?, ?, ?, ?, ?, ?)";

/// Rows per insert statement. The events of a request are written with as few statements as
/// these sizes allow, largest first, so that a few statements stay prepared for every count.
/// Three is the count of a `noop` job's finish.
const ROWS_PER_INSERT: [usize; 7] = [32, 16, 8, 4, 3, 2, 1];

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
    /// Keeps an event to store when the request ends and to publish after the commit.
    pub(crate) fn event_add(&mut self, event: Event) -> Result<(), StoreError> {
        self.events.push(event);
        Ok(())
    }

    /// Stores the events added since the last call and assigns their sequence numbers.
    ///
    /// A statement per event spent more on the statement than on the row: each one opened its
    /// cursors and read and wrote the AUTOINCREMENT counter in `sqlite_sequence`. Rows inserted
    /// by one statement get consecutive numbers, since only this connection writes and
    /// AUTOINCREMENT counts up from the highest number ever used.
    pub(crate) fn events_write(&mut self) -> Result<(), StoreError> {
        while self.events_written < self.events.len() {
            let left = self.events.len() - self.events_written;
            let rows = ROWS_PER_INSERT
                .into_iter()
                .find(|rows| *rows <= left)
                .expect("the sizes end with 1");
            let chunk = &mut self.events[self.events_written..self.events_written + rows];
            let mut statement = self.conn.prepare_cached(insert_sql(rows))?;
            let mut index = 1;
            for event in chunk.iter() {
                statement.raw_bind_parameter(index, &event.kind)?;
                statement.raw_bind_parameter(index + 1, &event.job_id)?;
                statement.raw_bind_parameter(index + 2, &event.step_id)?;
                statement.raw_bind_parameter(index + 3, event.item)?;
                statement.raw_bind_parameter(index + 4, event.attempt)?;
                statement.raw_bind_parameter(index + 5, json_text(&event.data))?;
                statement.raw_bind_parameter(index + 6, event.at)?;
                index += 7;
            }
            statement.raw_execute()?;
            let last = self.conn.last_insert_rowid();
            let first = last - i64::try_from(rows).expect("a chunk is small") + 1;
            for (seq, event) in (first..).zip(chunk) {
                event.seq = seq;
            }
            self.events_written += rows;
        }
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

/// Returns the insert statement for `rows` events, built once for each size.
fn insert_sql(rows: usize) -> &'static str {
    static STATEMENTS: OnceLock<Vec<String>> = OnceLock::new();
    let statements = STATEMENTS.get_or_init(|| {
        ROWS_PER_INSERT
            .iter()
            .map(|rows| format!("{INSERT_EVENTS}{}", vec![EVENT_VALUES; *rows].join(", ")))
            .collect()
    });
    let index = ROWS_PER_INSERT
        .iter()
        .position(|size| *size == rows)
        .expect("rows is one of ROWS_PER_INSERT");
    &statements[index]
}

/// Serializes event data. `serde_json::to_string` writes to a byte buffer, where `Display`
/// (`Value::to_string`) goes through a formatter adapter.
fn json_text(data: &Value) -> String {
    serde_json::to_string(data).expect("a JSON value serializes")
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
