//! Changes to the dependency graph after insert: adding and removing one dependency, and the
//! list of jobs that depend on a job. The decisions are pure functions shared with PostgreSQL.

use std::collections::{HashMap, HashSet, VecDeque};

use oaj_core::{JobState, Transition};
use rusqlite::params;
use serde_json::json;

use super::job_moves::{
    dependency_effect, has_unsettled_dependencies, is_due, job_end, job_head, job_move,
    DependencyEffect, JobHead, JobMove,
};
use super::job_reads::job_get;
use super::rows::{job_columns, job_from_row, query_all, query_first};
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{DependencyChange, DependencyFailure, Job};

const SELECT_EDGE: &str =
    "SELECT 1 FROM job_dependencies WHERE job_id = ?1 AND depends_on_id = ?2 LIMIT 1";
const SELECT_DEPENDENCY_IDS: &str =
    "SELECT depends_on_id FROM job_dependencies WHERE job_id = ?1 ORDER BY position";
const INSERT_EDGE: &str = "INSERT INTO job_dependencies (job_id, position, depends_on_id, settled)
    SELECT ?1, COALESCE(MAX(position), -1) + 1, ?2, ?3 FROM job_dependencies WHERE job_id = ?1";
const DELETE_EDGE: &str = "DELETE FROM job_dependencies WHERE job_id = ?1 AND depends_on_id = ?2";
const UPDATE_DEPENDS_ON: &str = "UPDATE jobs SET depends_on = ?2, updated_at = ?3 WHERE id = ?1";
const SELECT_DEPENDENTS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on_id = ?1)
    ORDER BY id"
);

/// Reports whether a job's dependencies may change: only before a worker starts it.
///
/// NOTE: a job parked for an approval decision is pending too, so it accepts changes, but the
/// decision queues it without checking its dependencies.
pub(crate) fn is_editable(state: JobState) -> bool {
    matches!(
        state,
        JobState::Created | JobState::Pending | JobState::Queued | JobState::Paused
    )
}

/// Builds the error for a dependency change on a job that is running or has ended.
pub(crate) fn edit_conflict(job_id: &str, state: JobState, verb: &str) -> StoreError {
    StoreError::JobStateConflict {
        job_id: job_id.to_owned(),
        state,
        message: format!(
            "cannot {verb} a dependency: dependencies change only while the job is created, \
             pending, queued or paused"
        ),
    }
}

/// The effect of a new dependency on the job that gains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddEffect {
    /// The dependency already completed, or ended and the job runs anyway.
    Settled,
    /// The job waits for the dependency.
    Waits,
    /// The dependency failed or was cancelled, so the job fails with this reason.
    FailsJob(String),
}

/// Decides the effect of a dependency in `state`, with the same rules as insert.
pub(crate) fn add_effect(
    depends_on_id: &str,
    state: JobState,
    policy: DependencyFailure,
) -> AddEffect {
    if !state.is_final() {
        return AddEffect::Waits;
    }
    match dependency_effect(state, policy) {
        DependencyEffect::Satisfied => AddEffect::Settled,
        DependencyEffect::FailsDependent => {
            AddEffect::FailsJob(format!("dependency {depends_on_id} {state}"))
        }
    }
}

/// A breadth-first walk of the dependency graph from the new dependency, looking for a path back
/// to the job that gains it. The caller reads each visited job's dependencies from its store.
pub(crate) struct CycleSearch {
    job_id: String,
    depends_on_id: String,
    /// For each visited job, the job the walk reached it from.
    parents: HashMap<String, String>,
    visited: HashSet<String>,
    frontier: VecDeque<String>,
}

impl CycleSearch {
    /// Starts a walk that checks the edge `job_id -> depends_on_id`.
    pub(crate) fn new(job_id: &str, depends_on_id: &str) -> CycleSearch {
        CycleSearch {
            job_id: job_id.to_owned(),
            depends_on_id: depends_on_id.to_owned(),
            parents: HashMap::new(),
            visited: HashSet::from([depends_on_id.to_owned()]),
            frontier: VecDeque::from([depends_on_id.to_owned()]),
        }
    }

    /// Returns the next job whose dependencies the walk needs, or `None` when it is done.
    pub(crate) fn next_job(&mut self) -> Option<String> {
        self.frontier.pop_front()
    }

    /// Records the dependencies of `job` and returns the error naming the cycle when one of them
    /// is the job that gains the new edge.
    pub(crate) fn visit(&mut self, job: &str, dependencies: Vec<String>) -> Result<(), StoreError> {
        for dependency in dependencies {
            if !self.visited.insert(dependency.clone()) {
                continue;
            }
            self.parents.insert(dependency.clone(), job.to_owned());
            if dependency == self.job_id {
                return Err(self.cycle_error());
            }
            self.frontier.push_back(dependency);
        }
        Ok(())
    }

    /// Builds the cycle `job -> depends_on -> ... -> job` from the recorded parents.
    fn cycle_error(&self) -> StoreError {
        let mut path = vec![self.job_id.clone()];
        let mut node = &self.job_id;
        while *node != self.depends_on_id {
            node = &self.parents[node];
            path.push(node.clone());
        }
        path.push(self.job_id.clone());
        path.reverse();
        StoreError::DependencyCycle { cycle: path }
    }
}

/// Adds a dependency and returns the job afterwards.
pub(crate) fn job_dependency_add(
    tx: &mut WriteTx<'_>,
    change: &DependencyChange,
) -> Result<Job, StoreError> {
    let (job_id, depends_on_id) = (change.job_id.as_str(), change.depends_on_id.as_str());
    let head = job_head(tx.conn, job_id)?.ok_or_else(|| StoreError::JobNotFound(job_id.into()))?;
    let dependency = job_head(tx.conn, depends_on_id)?
        .ok_or_else(|| StoreError::JobNotFound(depends_on_id.into()))?;
    if !is_editable(head.state) {
        return Err(edit_conflict(job_id, head.state, "add"));
    }
    if has_edge(tx, job_id, depends_on_id)? {
        return job_read(tx, job_id);
    }
    cycle_check(tx, job_id, depends_on_id)?;

    let effect = add_effect(depends_on_id, dependency.state, head.on_dependency_failure);
    let settled = effect == AddEffect::Settled;
    tx.conn
        .prepare_cached(INSERT_EDGE)?
        .execute(params![job_id, depends_on_id, settled])?;
    depends_on_copy(tx, job_id, change.now)?;
    let data = json!({ "depends_on": depends_on_id, "settled": settled });
    tx.job_event("job.dependency_added".into(), job_id, data, change.now)?;
    add_apply(tx, job_id, &head, effect, change.now)?;
    job_read(tx, job_id)
}

/// Moves the job as the new dependency requires.
fn add_apply(
    tx: &mut WriteTx<'_>,
    job_id: &str,
    head: &JobHead,
    effect: AddEffect,
    now: i64,
) -> Result<(), StoreError> {
    match effect {
        AddEffect::Settled => {}
        AddEffect::Waits if head.state == JobState::Queued => {
            job_move(tx, &JobMove::new(job_id, head, Transition::Defer, now))?;
        }
        AddEffect::Waits => {}
        AddEffect::FailsJob(reason) => {
            let mut step = JobMove::new(job_id, head, Transition::Fail, now);
            step.error = Some(reason);
            job_end(tx, &step)?;
        }
    }
    Ok(())
}

/// Removes a dependency and returns the job afterwards.
pub(crate) fn job_dependency_remove(
    tx: &mut WriteTx<'_>,
    change: &DependencyChange,
) -> Result<Job, StoreError> {
    let (job_id, depends_on_id) = (change.job_id.as_str(), change.depends_on_id.as_str());
    let head = job_head(tx.conn, job_id)?.ok_or_else(|| StoreError::JobNotFound(job_id.into()))?;
    if !is_editable(head.state) {
        return Err(edit_conflict(job_id, head.state, "remove"));
    }
    let removed = tx
        .conn
        .prepare_cached(DELETE_EDGE)?
        .execute(params![job_id, depends_on_id])?;
    if removed == 0 {
        return Err(StoreError::DependencyNotFound {
            job_id: job_id.to_owned(),
            depends_on_id: depends_on_id.to_owned(),
        });
    }

    depends_on_copy(tx, job_id, change.now)?;
    let data = json!({ "depends_on": depends_on_id });
    tx.job_event("job.dependency_removed".into(), job_id, data, change.now)?;
    let is_ready = head.state == JobState::Pending
        && is_due(head.run_at, change.now)
        && !has_unsettled_dependencies(tx.conn, job_id)?;
    if is_ready {
        job_move(
            tx,
            &JobMove::new(job_id, &head, Transition::Enqueue, change.now),
        )?;
    }
    job_read(tx, job_id)
}

/// Lists the jobs that depend on a job, by id.
pub(crate) fn job_dependents(
    conn: &rusqlite::Connection,
    job_id: &str,
) -> Result<Vec<Job>, StoreError> {
    if job_get(conn, job_id)?.is_none() {
        return Err(StoreError::JobNotFound(job_id.to_owned()));
    }
    query_all(conn, SELECT_DEPENDENTS, [job_id], job_from_row)
}

fn has_edge(tx: &WriteTx<'_>, job_id: &str, depends_on_id: &str) -> Result<bool, StoreError> {
    let found = query_first(tx.conn, SELECT_EDGE, [job_id, depends_on_id], |_| Ok(()))?;
    Ok(found.is_some())
}

fn dependency_ids(conn: &rusqlite::Connection, job_id: &str) -> Result<Vec<String>, StoreError> {
    query_all(conn, SELECT_DEPENDENCY_IDS, [job_id], |row| Ok(row.get(0)?))
}

fn cycle_check(tx: &WriteTx<'_>, job_id: &str, depends_on_id: &str) -> Result<(), StoreError> {
    if job_id == depends_on_id {
        return Err(StoreError::DependencyCycle {
            cycle: vec![job_id.to_owned(), job_id.to_owned()],
        });
    }
    let mut search = CycleSearch::new(job_id, depends_on_id);
    while let Some(node) = search.next_job() {
        let dependencies = dependency_ids(tx.conn, &node)?;
        search.visit(&node, dependencies)?;
    }
    Ok(())
}

/// Rewrites the job's JSON copy of its dependency ids from the dependency rows.
fn depends_on_copy(tx: &WriteTx<'_>, job_id: &str, now: i64) -> Result<(), StoreError> {
    let ids = dependency_ids(tx.conn, job_id)?;
    tx.conn.prepare_cached(UPDATE_DEPENDS_ON)?.execute(params![
        job_id,
        json!(ids).to_string(),
        now
    ])?;
    Ok(())
}

fn job_read(tx: &WriteTx<'_>, job_id: &str) -> Result<Job, StoreError> {
    Ok(job_get(tx.conn, job_id)?.expect("the job was read in this transaction"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(graph: &[(&str, &[&str])], job: &str, dependency: &str) -> Result<(), StoreError> {
        let graph: HashMap<&str, &[&str]> = graph.iter().copied().collect();
        let mut search = CycleSearch::new(job, dependency);
        while let Some(node) = search.next_job() {
            let next = graph.get(node.as_str()).copied().unwrap_or_default();
            search.visit(&node, next.iter().map(|id| id.to_string()).collect())?;
        }
        Ok(())
    }

    #[test]
    fn cycle_search_names_path() {
        let graph: &[(&str, &[&str])] = &[("b", &["c"]), ("c", &["a", "d"])];
        let Err(StoreError::DependencyCycle { cycle }) = walk(graph, "a", "b") else {
            panic!("expected a cycle");
        };
        assert_eq!(cycle, ["a", "b", "c", "a"]);
    }

    #[test]
    fn cycle_search_accepts_diamond() {
        let graph: &[(&str, &[&str])] = &[("b", &["c", "d"]), ("c", &["e"]), ("d", &["e"])];
        assert!(walk(graph, "a", "b").is_ok());
    }

    #[test]
    fn add_effect_follows_policy() {
        let fail = DependencyFailure::Fail;
        let run = DependencyFailure::Run;
        assert_eq!(add_effect("d", JobState::Running, fail), AddEffect::Waits);
        assert_eq!(
            add_effect("d", JobState::Completed, fail),
            AddEffect::Settled
        );
        assert_eq!(add_effect("d", JobState::Failed, run), AddEffect::Settled);
        assert_eq!(
            add_effect("d", JobState::Cancelled, fail),
            AddEffect::FailsJob("dependency d cancelled".into())
        );
    }
}
