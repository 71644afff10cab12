//! The job list with filters, a sort order and a keyset cursor.

use tokio_postgres::types::ToSql;

use super::db::Db;
use super::rows::{decode_all, job_columns, job_from_row};
use crate::error::StoreError;
use crate::model::{Job, JobQuery, JobSort};

const SELECT_JOBS: &str = concat!("SELECT ", job_columns!(), " FROM jobs");

/// Jobs returned by one query when it sets no limit.
const QUERY_LIMIT_DEFAULT: u32 = 100;
/// The maximum number of jobs one query returns, whatever limit it requests.
const QUERY_LIMIT_MAX: u32 = 1000;

/// The owned values of a query's placeholders, numbered from `$1` in push order.
#[derive(Default)]
struct Bindings {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Bindings {
    /// Adds a value and returns its placeholder.
    fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    fn as_params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Lists the jobs that match `query`, in its order, after its cursor.
pub(crate) async fn job_query(db: Db<'_>, query: &JobQuery) -> Result<Vec<Job>, StoreError> {
    let mut bindings = Bindings::default();
    let mut conditions = filter_conditions(query, &mut bindings);
    if let Some(cursor) = &query.after {
        // Row values compare left to right, which is exactly the keyset order. The id column is
        // declared COLLATE "C", so ids compare bytewise as in the SQLite store.
        let condition = match query.sort {
            JobSort::CreatedDesc => format!(
                "(created_at, id) < ({}, {})",
                bindings.push(cursor.key),
                bindings.push(cursor.id.clone())
            ),
            JobSort::CreatedAsc => format!(
                "(created_at, id) > ({}, {})",
                bindings.push(cursor.key),
                bindings.push(cursor.id.clone())
            ),
            JobSort::PriorityDesc => format!(
                "(priority, created_at, id) < ({}, {}, {})",
                bindings.push(cursor.key),
                bindings.push(cursor.created_at),
                bindings.push(cursor.id.clone())
            ),
        };
        conditions.push(condition);
    }
    let order = match query.sort {
        JobSort::CreatedDesc => "created_at DESC, id DESC",
        JobSort::CreatedAsc => "created_at ASC, id ASC",
        JobSort::PriorityDesc => "priority DESC, created_at DESC, id DESC",
    };
    let limit = match query.limit {
        0 => QUERY_LIMIT_DEFAULT,
        limit => limit.min(QUERY_LIMIT_MAX),
    };
    let limit = bindings.push(i64::from(limit));

    let mut sql = SELECT_JOBS.to_owned();
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {order} LIMIT {limit}"));
    decode_all(db.query(&sql, &bindings.as_params()).await?, job_from_row)
}

fn filter_conditions(query: &JobQuery, bindings: &mut Bindings) -> Vec<String> {
    let mut conditions = Vec::new();
    if !query.states.is_empty() {
        let states: Vec<String> = query.states.iter().map(|s| s.as_str().to_owned()).collect();
        conditions.push(format!("state = ANY({}::text[])", bindings.push(states)));
    }
    let text = [
        ("workflow_id", &query.workflow_id),
        ("batch_id", &query.batch_id),
    ];
    for (column, value) in text {
        if let Some(value) = value {
            conditions.push(format!("{column} = {}", bindings.push(value.clone())));
        }
    }
    for tag in &query.tags {
        // Tags are stored as a JSON array of strings, and jsonb's `?` tests for one of them.
        conditions.push(format!("tags::jsonb ? {}", bindings.push(tag.clone())));
    }
    let numbers = [
        ("priority =", query.priority.map(|p| p.rank())),
        ("created_at >=", query.created_from),
        ("created_at <", query.created_until),
        ("finished_at >=", query.finished_from),
        ("finished_at <", query.finished_until),
    ];
    for (condition, value) in numbers {
        if let Some(value) = value {
            conditions.push(format!("{condition} {}", bindings.push(value)));
        }
    }
    conditions
}
