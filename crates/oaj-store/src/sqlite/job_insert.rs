//! Job inserts: validation of dependencies, idempotency keys, and the first state of each job.

use std::collections::HashMap;

use oaj_core::{transition, JobState, Transition};
use rusqlite::params;
use serde_json::{json, Value};

use super::rows::{dependency_failure_as_str, query_first};
use super::workflows::WorkflowCache;
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{DependencyFailure, JobNew, JobRef};

const INSERT_BATCH: &str = "INSERT INTO batches (id, created_at) VALUES (?1, ?2)";
const INSERT_JOB: &str = "INSERT INTO jobs (id, workflow_id, workflow_version, state, priority,
    claim_key, input, error, tags, metadata, batch_id, depends_on, on_dependency_failure,
    run_at, timeout_ms, idempotency_key, request_hash, created_at, updated_at, finished_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
    ?18, ?19)";
const INSERT_DEPENDENCY: &str = "INSERT INTO job_dependencies (job_id, position, depends_on_id,
    settled) VALUES (?1, ?2, ?3, ?4)";
const SELECT_BY_KEY: &str = "SELECT id, request_hash, state FROM jobs WHERE idempotency_key = ?1";
const SELECT_STATE: &str = "SELECT state FROM jobs WHERE id = ?1";

/// Orders the jobs of one insert so that each comes after the jobs of the insert it depends on.
///
/// Fails with [`StoreError::DependencyInvalid`] for an index out of range, a job that depends on
/// itself, or a cycle, which the message names.
pub(crate) fn insert_order(jobs: &[JobNew]) -> Result<Vec<usize>, StoreError> {
    let mut edges = vec![Vec::new(); jobs.len()];
    for (index, job) in jobs.iter().enumerate() {
        for dependency in &job.depends_on {
            let JobRef::Index(target) = *dependency else {
                continue;
            };
            if target >= jobs.len() {
                return Err(StoreError::DependencyInvalid(format!(
                    "job {index} depends on index {target}, but the insert has {} jobs",
                    jobs.len()
                )));
            }
            if target == index {
                return Err(StoreError::DependencyInvalid(format!(
                    "job {index} depends on itself"
                )));
            }
            edges[index].push(target);
        }
    }
    topological_order(&edges)
}

/// Orders nodes so that each follows the nodes it points to, by depth-first search.
fn topological_order(edges: &[Vec<usize>]) -> Result<Vec<usize>, StoreError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    let mut order = Vec::with_capacity(edges.len());
    for root in 0..edges.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // Each frame is a node and the index of the next edge to follow from it.
        let mut path = vec![(root, 0)];
        marks[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let Some(&target) = edges[node].get(*next) else {
                marks[node] = Mark::Done;
                order.push(node);
                path.pop();
                continue;
            };
            *next += 1;
            match marks[target] {
                Mark::Done => {}
                Mark::New => {
                    marks[target] = Mark::OnPath;
                    path.push((target, 0));
                }
                Mark::OnPath => return Err(cycle_error(&path, target)),
            }
        }
    }
    Ok(order)
}

fn cycle_error(path: &[(usize, usize)], target: usize) -> StoreError {
    let start = path
        .iter()
        .position(|&(node, _)| node == target)
        .expect("a node marked on the path is on the path");
    let mut cycle: Vec<String> = path[start..]
        .iter()
        .map(|(node, _)| node.to_string())
        .collect();
    cycle.push(target.to_string());
    StoreError::DependencyInvalid(format!(
        "the jobs at indices {} depend on each other in a cycle",
        cycle.join(" -> ")
    ))
}

/// The state a new job starts in, decided from its dependencies and start time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FirstState {
    pub(crate) transition: Transition,
    pub(crate) error: Option<String>,
    /// For each dependency, whether it already stops holding the job back.
    pub(crate) settled: Vec<bool>,
}

pub(crate) fn first_state(job: &JobNew, dependencies: &[(String, JobState)]) -> FirstState {
    let mut settled = Vec::with_capacity(dependencies.len());
    let mut failed_by = None;
    for (id, state) in dependencies {
        let is_failure = matches!(state, JobState::Failed | JobState::Cancelled);
        let runs_anyway = job.on_dependency_failure == DependencyFailure::Run;
        settled.push(*state == JobState::Completed || (is_failure && runs_anyway));
        if is_failure && !runs_anyway && failed_by.is_none() {
            failed_by = Some(format!("dependency {id} {state}"));
        }
    }
    let waits = settled.iter().any(|settled| !settled)
        || job.run_at.is_some_and(|run_at| run_at > job.created_at);
    let transition = match (&failed_by, waits) {
        (Some(_), _) => Transition::Fail,
        (None, true) => Transition::Defer,
        (None, false) => Transition::Enqueue,
    };
    FirstState {
        transition,
        error: failed_by,
        settled,
    }
}

/// Inserts jobs all or nothing and returns their ids in the order given.
pub(crate) fn job_insert_many(
    tx: &mut WriteTx<'_>,
    cache: &WorkflowCache,
    jobs: &[JobNew],
    batch_id: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let order = insert_order(jobs)?;
    if let Some(batch_id) = batch_id {
        let created_at = jobs
            .iter()
            .map(|job| job.created_at)
            .min()
            .unwrap_or_default();
        tx.conn
            .prepare_cached(INSERT_BATCH)?
            .execute(params![batch_id, created_at])?;
    }

    let mut inserted: HashMap<usize, (String, JobState)> = HashMap::new();
    let mut counts: HashMap<JobState, i64> = HashMap::new();
    for index in order {
        let job = &jobs[index];
        let outcome = match idempotent_match(tx, job)? {
            Some(existing) => existing,
            None => {
                let new = job_insert(tx, cache, job, index, &inserted, batch_id)?;
                *counts.entry(new.1).or_default() += 1;
                new
            }
        };
        inserted.insert(index, outcome);
    }
    for (state, count) in counts {
        tx.count_add(state, count);
    }
    if counts_have_queued(&inserted) {
        tx.wake_workers();
    }
    Ok((0..jobs.len())
        .map(|index| inserted[&index].0.clone())
        .collect())
}

fn counts_have_queued(inserted: &HashMap<usize, (String, JobState)>) -> bool {
    inserted
        .values()
        .any(|(_, state)| *state == JobState::Queued)
}

/// Returns the job stored under the insert's idempotency key when the requests match.
fn idempotent_match(
    tx: &WriteTx<'_>,
    job: &JobNew,
) -> Result<Option<(String, JobState)>, StoreError> {
    let Some(key) = &job.idempotency_key else {
        return Ok(None);
    };
    let stored = query_first(tx.conn, SELECT_BY_KEY, [key], |row| {
        let state: String = row.get(2)?;
        let state = state
            .parse()
            .map_err(|_| super::errors::corrupt("jobs.state", &state))?;
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Option<String>>(1)?,
            state,
        ))
    })?;
    let Some((id, hash, state)) = stored else {
        return Ok(None);
    };
    if hash.as_deref() != Some(request_hash(job).as_str()) {
        return Err(StoreError::IdempotencyKeyReused {
            key: key.clone(),
            job_id: id,
        });
    }
    Ok(Some((id, state)))
}

/// Inserts one job and its dependency rows, and returns its id and first state.
fn job_insert(
    tx: &mut WriteTx<'_>,
    cache: &WorkflowCache,
    job: &JobNew,
    index: usize,
    inserted: &HashMap<usize, (String, JobState)>,
    batch_id: Option<&str>,
) -> Result<(String, JobState), StoreError> {
    if cache
        .get(tx.conn, &job.workflow_id, &job.workflow_version)?
        .is_none()
    {
        return Err(StoreError::WorkflowNotFound {
            id: job.workflow_id.clone(),
            version: job.workflow_version.clone(),
        });
    }
    let dependencies = dependencies_resolve(tx, job, index, inserted)?;
    let first = first_state(job, &dependencies);
    let state = transition(JobState::Created, first.transition)
        .expect("a created job may be deferred, queued or failed");
    let id = uuid::Uuid::now_v7().to_string();

    job_row_insert(tx, job, &id, state, &first, &dependencies, batch_id)?;
    for (position, ((dependency_id, _), settled)) in
        dependencies.iter().zip(&first.settled).enumerate()
    {
        tx.conn.prepare_cached(INSERT_DEPENDENCY)?.execute(params![
            id,
            position as i64,
            dependency_id,
            settled
        ])?;
    }
    let data = json!({
        "workflow_id": job.workflow_id,
        "version": job.workflow_version,
        "priority": job.priority.as_str(),
        "state": state.as_str(),
    });
    tx.job_event("job.created".to_owned(), &id, data, job.created_at)?;
    Ok((id, state))
}

/// Looks up each dependency's id and state, from this insert or from the store.
fn dependencies_resolve(
    tx: &WriteTx<'_>,
    job: &JobNew,
    index: usize,
    inserted: &HashMap<usize, (String, JobState)>,
) -> Result<Vec<(String, JobState)>, StoreError> {
    let mut resolved = Vec::with_capacity(job.depends_on.len());
    for dependency in &job.depends_on {
        let found = match dependency {
            JobRef::Index(target) => inserted
                .get(target)
                .cloned()
                .expect("insert_order puts dependencies first"),
            JobRef::Id(id) => (id.clone(), stored_state(tx, index, id)?),
        };
        resolved.push(found);
    }
    Ok(resolved)
}

fn stored_state(tx: &WriteTx<'_>, index: usize, id: &str) -> Result<JobState, StoreError> {
    let state: Option<String> = query_first(tx.conn, SELECT_STATE, [id], |row| Ok(row.get(0)?))?;
    let Some(state) = state else {
        return Err(StoreError::DependencyInvalid(format!(
            "job {index} depends on job {id}, which does not exist"
        )));
    };
    state
        .parse()
        .map_err(|_| super::errors::corrupt("jobs.state", state))
}

fn job_row_insert(
    tx: &WriteTx<'_>,
    job: &JobNew,
    id: &str,
    state: JobState,
    first: &FirstState,
    dependencies: &[(String, JobState)],
    batch_id: Option<&str>,
) -> Result<(), StoreError> {
    let depends_on: Vec<&str> = dependencies.iter().map(|(id, _)| id.as_str()).collect();
    let hash = job.idempotency_key.as_ref().map(|_| request_hash(job));
    tx.conn.prepare_cached(INSERT_JOB)?.execute(params![
        id,
        job.workflow_id,
        job.workflow_version,
        state.as_str(),
        job.priority.rank(),
        job.priority.claim_key(job.created_at),
        job.input.to_string(),
        first.error,
        json!(job.tags).to_string(),
        job.metadata.to_string(),
        batch_id,
        json!(depends_on).to_string(),
        dependency_failure_as_str(job.on_dependency_failure),
        job.run_at,
        job.timeout_ms,
        job.idempotency_key,
        hash,
        job.created_at,
        state.is_final().then_some(job.created_at),
    ])?;
    Ok(())
}

/// Hashes the parts of an insert request that make it the same request, with FNV-1a over
/// canonical JSON (object keys sorted), so the hash does not depend on key order or on the Rust
/// version. It detects a reused key by mistake; it does not resist a crafted collision.
pub(crate) fn request_hash(job: &JobNew) -> String {
    let request = json!({
        "workflow_id": job.workflow_id,
        "workflow_version": job.workflow_version,
        "input": canonical(&job.input),
        "priority": job.priority.as_str(),
        "tags": job.tags,
        "metadata": canonical(&job.metadata),
        "depends_on": job.depends_on,
        "on_dependency_failure": dependency_failure_as_str(job.on_dependency_failure),
        "run_at": job.run_at,
        "timeout_ms": job.timeout_ms,
    });
    let text = canonical(&request).to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Copies a JSON value with the keys of every object sorted.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.clone(), canonical(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}
