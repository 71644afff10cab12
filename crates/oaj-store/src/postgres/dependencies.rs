//! Changes to the dependency graph after insert: adding and removing one dependency, and the
//! list of jobs that depend on a job.
//!
//! Adding locks the dependency's row before the job's, the order in which a dependency that
//! ends settles its dependents, so the two wait for each other instead of missing the new edge.
//! Two additions that would close a cycle between them lock the same rows in opposite orders, and
//! PostgreSQL aborts one of them as a deadlock instead of storing the cycle.

use oaj_core::{JobState, Transition};
use serde_json::json;

use super::db::Db;
use super::job_moves::{
    has_unsettled_dependencies, is_due, job_end, job_head, job_move, JobHead, JobMove,
};
use super::job_reads::job_get;
use super::rows::{decode_all, job_columns, job_from_row};
use super::tx::PgTx;
use crate::error::StoreError;
use crate::model::{DependencyChange, Job};
use crate::sqlite::dependencies::{add_effect, edit_conflict, is_editable, AddEffect, CycleSearch};

const SELECT_EDGE: &str =
    "SELECT 1 FROM job_dependencies WHERE job_id = $1 AND depends_on_id = $2 LIMIT 1";
const SELECT_DEPENDENCY_IDS: &str =
    "SELECT depends_on_id FROM job_dependencies WHERE job_id = $1 ORDER BY position";
const INSERT_EDGE: &str = "INSERT INTO job_dependencies (job_id, position, depends_on_id, settled)
    SELECT $1, COALESCE(MAX(position), -1) + 1, $2, $3 FROM job_dependencies WHERE job_id = $1";
const DELETE_EDGE: &str = "DELETE FROM job_dependencies WHERE job_id = $1 AND depends_on_id = $2";
const UPDATE_DEPENDS_ON: &str = "UPDATE jobs SET depends_on = $2, updated_at = $3 WHERE id = $1";
const SELECT_DEPENDENTS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on_id = $1)
    ORDER BY id"
);

/// Adds a dependency and returns the job afterwards.
pub(crate) async fn job_dependency_add(
    tx: &mut PgTx<'_>,
    change: &DependencyChange,
) -> Result<Job, StoreError> {
    let (job_id, depends_on_id) = (change.job_id.as_str(), change.depends_on_id.as_str());
    let dependency = job_head(tx, depends_on_id).await?;
    let head = job_head(tx, job_id)
        .await?
        .ok_or_else(|| StoreError::JobNotFound(job_id.into()))?;
    let dependency = dependency.ok_or_else(|| StoreError::JobNotFound(depends_on_id.into()))?;
    if !is_editable(head.state) {
        return Err(edit_conflict(job_id, head.state, "add"));
    }
    if tx
        .query_opt(SELECT_EDGE, &[&job_id, &depends_on_id])
        .await?
        .is_some()
    {
        return job_read(tx, job_id).await;
    }
    cycle_check(tx, job_id, depends_on_id).await?;

    let effect = add_effect(depends_on_id, dependency.state, head.on_dependency_failure);
    let settled = effect == AddEffect::Settled;
    tx.execute(INSERT_EDGE, &[&job_id, &depends_on_id, &settled])
        .await?;
    depends_on_copy(tx, job_id, change.now).await?;
    let data = json!({ "depends_on": depends_on_id, "settled": settled });
    tx.job_event("job.dependency_added".into(), job_id, data, change.now);
    add_apply(tx, job_id, &head, effect, change.now).await?;
    job_read(tx, job_id).await
}

/// Moves the job as the new dependency requires.
async fn add_apply(
    tx: &mut PgTx<'_>,
    job_id: &str,
    head: &JobHead,
    effect: AddEffect,
    now: i64,
) -> Result<(), StoreError> {
    match effect {
        AddEffect::Settled => {}
        AddEffect::Waits if head.state == JobState::Queued => {
            job_move(tx, &JobMove::new(job_id, head, Transition::Defer, now)).await?;
        }
        AddEffect::Waits => {}
        AddEffect::FailsJob(reason) => {
            let mut step = JobMove::new(job_id, head, Transition::Fail, now);
            step.error = Some(reason);
            job_end(tx, &step).await?;
        }
    }
    Ok(())
}

/// Removes a dependency and returns the job afterwards.
pub(crate) async fn job_dependency_remove(
    tx: &mut PgTx<'_>,
    change: &DependencyChange,
) -> Result<Job, StoreError> {
    let (job_id, depends_on_id) = (change.job_id.as_str(), change.depends_on_id.as_str());
    let head = job_head(tx, job_id)
        .await?
        .ok_or_else(|| StoreError::JobNotFound(job_id.into()))?;
    if !is_editable(head.state) {
        return Err(edit_conflict(job_id, head.state, "remove"));
    }
    let removed = tx.execute(DELETE_EDGE, &[&job_id, &depends_on_id]).await?;
    if removed == 0 {
        return Err(StoreError::DependencyNotFound {
            job_id: job_id.to_owned(),
            depends_on_id: depends_on_id.to_owned(),
        });
    }

    depends_on_copy(tx, job_id, change.now).await?;
    let data = json!({ "depends_on": depends_on_id });
    tx.job_event("job.dependency_removed".into(), job_id, data, change.now);
    let is_ready = head.state == JobState::Pending
        && is_due(head.run_at, change.now)
        && !has_unsettled_dependencies(tx, job_id).await?;
    if is_ready {
        job_move(
            tx,
            &JobMove::new(job_id, &head, Transition::Enqueue, change.now),
        )
        .await?;
    }
    job_read(tx, job_id).await
}

/// Lists the jobs that depend on a job, by id.
pub(crate) async fn job_dependents(db: Db<'_>, job_id: &str) -> Result<Vec<Job>, StoreError> {
    if job_get(db, job_id).await?.is_none() {
        return Err(StoreError::JobNotFound(job_id.to_owned()));
    }
    decode_all(db.query(SELECT_DEPENDENTS, &[&job_id]).await?, job_from_row)
}

async fn dependency_ids(tx: &PgTx<'_>, job_id: &str) -> Result<Vec<String>, StoreError> {
    let rows = tx.query(SELECT_DEPENDENCY_IDS, &[&job_id]).await?;
    decode_all(rows, |row| Ok(row.try_get(0)?))
}

async fn cycle_check(tx: &PgTx<'_>, job_id: &str, depends_on_id: &str) -> Result<(), StoreError> {
    if job_id == depends_on_id {
        return Err(StoreError::DependencyCycle {
            cycle: vec![job_id.to_owned(), job_id.to_owned()],
        });
    }
    let mut search = CycleSearch::new(job_id, depends_on_id);
    while let Some(node) = search.next_job() {
        let dependencies = dependency_ids(tx, &node).await?;
        search.visit(&node, dependencies)?;
    }
    Ok(())
}

/// Rewrites the job's JSON copy of its dependency ids from the dependency rows.
async fn depends_on_copy(tx: &PgTx<'_>, job_id: &str, now: i64) -> Result<(), StoreError> {
    let ids = json!(dependency_ids(tx, job_id).await?).to_string();
    tx.execute(UPDATE_DEPENDS_ON, &[&job_id, &ids, &now])
        .await?;
    Ok(())
}

async fn job_read(tx: &PgTx<'_>, job_id: &str) -> Result<Job, StoreError> {
    Ok(job_get(tx.db(), job_id)
        .await?
        .expect("the job was read in this transaction"))
}
