//! The job list with filters, a sort order and a keyset cursor.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};

use super::rows::{job_columns, job_from_row, query_all};
use crate::error::StoreError;
use crate::model::{Job, JobQuery, JobSort};

const SELECT_JOBS: &str = concat!("SELECT ", job_columns!(), " FROM jobs");

/// Jobs returned by one query when it sets no limit.
const QUERY_LIMIT_DEFAULT: u32 = 100;
/// The maximum number of jobs one query returns, whatever limit it requests.
const QUERY_LIMIT_MAX: u32 = 1000;

/// Lists the jobs that match `query`, in its order, after its cursor.
pub(crate) fn job_query(conn: &Connection, query: &JobQuery) -> Result<Vec<Job>, StoreError> {
    let (sql, values) = job_query_sql(query);
    query_all(conn, &sql, params_from_iter(values), job_from_row)
}

/// Builds the statement of `query` and the values of its parameters.
fn job_query_sql(query: &JobQuery) -> (String, Vec<SqlValue>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    filter_conditions(query, &mut conditions, &mut values);
    if let Some(cursor) = &query.after {
        // Row values compare left to right, which is exactly the keyset order.
        let (condition, cursor_values): (&str, Vec<SqlValue>) = match query.sort {
            JobSort::CreatedDesc => (
                "(created_at, id) < (?, ?)",
                vec![cursor.key.into(), cursor.id.clone().into()],
            ),
            JobSort::CreatedAsc => (
                "(created_at, id) > (?, ?)",
                vec![cursor.key.into(), cursor.id.clone().into()],
            ),
            JobSort::PriorityDesc => (
                "(priority, created_at, id) < (?, ?, ?)",
                vec![
                    cursor.key.into(),
                    cursor.created_at.into(),
                    cursor.id.clone().into(),
                ],
            ),
        };
        conditions.push(condition.to_owned());
        values.extend(cursor_values);
    }
    // NOTE: an index gives this order only with no filter, or with a single state, workflow or
    // batch (migrations 0003 and 0005). More states, two of those filters, or priority_desc sort
    // every matching row.
    let order = match query.sort {
        JobSort::CreatedDesc => "created_at DESC, id DESC",
        JobSort::CreatedAsc => "created_at ASC, id ASC",
        JobSort::PriorityDesc => "priority DESC, created_at DESC, id DESC",
    };
    let limit = match query.limit {
        0 => QUERY_LIMIT_DEFAULT,
        limit => limit.min(QUERY_LIMIT_MAX),
    };
    values.push(i64::from(limit).into());

    let mut sql = SELECT_JOBS.to_owned();
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {order} LIMIT ?"));
    (sql, values)
}

fn filter_conditions(query: &JobQuery, conditions: &mut Vec<String>, values: &mut Vec<SqlValue>) {
    if !query.states.is_empty() {
        let marks = vec!["?"; query.states.len()].join(", ");
        conditions.push(format!("state IN ({marks})"));
        values.extend(query.states.iter().map(|s| s.as_str().to_owned().into()));
    }
    let text = [
        ("workflow_id = ?", &query.workflow_id),
        ("batch_id = ?", &query.batch_id),
    ];
    for (condition, value) in text {
        if let Some(value) = value {
            conditions.push(condition.to_owned());
            values.push(value.clone().into());
        }
    }
    for tag in &query.tags {
        // Tags are stored as a JSON array of strings.
        conditions.push("EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE value = ?)".to_owned());
        values.push(tag.clone().into());
    }
    let numbers = [
        ("priority = ?", query.priority.map(|p| p.rank())),
        ("created_at >= ?", query.created_from),
        ("created_at < ?", query.created_until),
        ("finished_at >= ?", query.finished_from),
        ("finished_at < ?", query.finished_until),
    ];
    for (condition, value) in numbers {
        if let Some(value) = value {
            conditions.push(condition.to_owned());
            values.push(value.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use oaj_core::JobState;

    use super::*;
    use crate::model::JobCursor;
    use crate::sqlite::{connection, migrations};

    /// Returns the plan SQLite chooses for `query`, one step per line.
    fn plan(conn: &Connection, query: &JobQuery) -> String {
        let (sql, values) = job_query_sql(query);
        let mut statement = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("the query prepares");
        let steps = statement
            .query_map(params_from_iter(values), |row| row.get::<_, String>(3))
            .expect("the plan runs");
        steps
            .map(|step| step.expect("a plan step"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn newest_page_reads_index_without_sort() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("oaj.db");
        let mut conn = connection::open_writer(&path, Duration::from_secs(1)).expect("open");
        migrations::migrate(&mut conn, &path).expect("migrate");
        let cursor = JobCursor {
            key: 1,
            created_at: 1,
            id: "b".to_owned(),
        };
        let queries = [
            JobQuery::default(),
            JobQuery {
                states: vec![JobState::Completed],
                ..JobQuery::default()
            },
            JobQuery {
                states: vec![JobState::Queued],
                after: Some(cursor.clone()),
                ..JobQuery::default()
            },
            JobQuery {
                sort: JobSort::CreatedAsc,
                after: Some(cursor.clone()),
                ..JobQuery::default()
            },
            JobQuery {
                workflow_id: Some("w".to_owned()),
                after: Some(cursor),
                ..JobQuery::default()
            },
            JobQuery {
                batch_id: Some("b".to_owned()),
                ..JobQuery::default()
            },
        ];
        for query in queries {
            let plan = plan(&conn, &query);
            assert!(!plan.contains("TEMP B-TREE"), "{query:?} sorts: {plan}");
            assert!(
                plan.contains("INDEX jobs_"),
                "{query:?} uses no index: {plan}"
            );
        }
    }
}
