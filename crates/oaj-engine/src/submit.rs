//! Registering workflows and submitting jobs through the engine, with validation first.

use std::collections::HashMap;
use std::sync::Arc;

use oaj_core::validate::{input_check, workflow_parse_validate, Report};
use oaj_core::{Priority, Workflow};
use oaj_store::{DependencyFailure, JobNew, JobRef, StoreError, WorkflowInserted, WorkflowRecord};
use serde_json::Value;

use crate::engine::Engine;

/// A job to submit.
#[derive(Debug, Clone, Default)]
pub struct JobSubmit {
    /// Workflow id.
    pub workflow_id: String,
    /// Workflow version; the highest stored version when `None`.
    pub workflow_version: Option<String>,
    /// Input, checked against the workflow's declared inputs.
    pub input: Value,
    /// Priority; the workflow's default, else medium, when `None`.
    pub priority: Option<Priority>,
    /// Labels.
    pub tags: Vec<String>,
    /// Free-form metadata.
    pub metadata: Value,
    /// Jobs that must complete first.
    pub depends_on: Vec<JobRef>,
    /// The effect of a failed dependency.
    pub on_dependency_failure: DependencyFailure,
    /// Earliest start, in milliseconds since the Unix epoch.
    pub run_at: Option<i64>,
    /// Limit on the whole job, in milliseconds.
    pub timeout_ms: Option<i64>,
    /// Key that makes a repeat return the first job.
    pub idempotency_key: Option<String>,
}

/// The reasons a workflow or job is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The workflow document has problems.
    #[error("invalid workflow:\n{0}")]
    WorkflowInvalid(Report),
    /// The job input does not match the workflow's inputs.
    #[error("invalid input:\n{0}")]
    InputInvalid(Report),
    /// No stored workflow has this id (and version).
    #[error("workflow {id} {version} not found: register it first")]
    WorkflowNotFound {
        /// Workflow id.
        id: String,
        /// Version asked for, or `latest`.
        version: String,
    },
    /// The store rejected or failed the write.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Validates a workflow document and stores it as a version. Returns the parsed workflow and
    /// whether the version is new.
    pub async fn workflow_register(
        &self,
        text: &str,
    ) -> Result<(Workflow, WorkflowInserted), SubmitError> {
        let workflow = self
            .workflow_parse(text)
            .map_err(SubmitError::WorkflowInvalid)?;
        let document: Value =
            serde_json::from_str(text).expect("a document that parsed as a workflow is JSON");
        let record = WorkflowRecord {
            id: workflow.id.clone(),
            version: workflow.version.clone(),
            document: document.to_string(),
            created_at: self.clock().now_ms(),
        };
        let inserted = self.store().workflow_insert(record).await?;
        Ok((workflow, inserted))
    }

    /// Checks and submits one job; returns its id.
    pub async fn job_submit(&self, submit: JobSubmit) -> Result<String, SubmitError> {
        let mut ids = self.job_submit_many(vec![submit], None).await?;
        Ok(ids.remove(0))
    }

    /// Checks and submits jobs in one transaction, optionally as a batch; returns their ids.
    pub async fn job_submit_many(
        &self,
        submits: Vec<JobSubmit>,
        batch_id: Option<String>,
    ) -> Result<Vec<String>, SubmitError> {
        // Jobs of one call often share a workflow, so each version is read and parsed once.
        let mut workflows: HashMap<(String, Option<String>), (WorkflowRecord, Arc<Workflow>)> =
            HashMap::new();
        let mut jobs = Vec::with_capacity(submits.len());
        for submit in submits {
            let key = (submit.workflow_id.clone(), submit.workflow_version.clone());
            if !workflows.contains_key(&key) {
                let fetched = self.workflow_fetch(&submit).await?;
                workflows.insert(key.clone(), fetched);
            }
            let (record, workflow) = &workflows[&key];
            jobs.push(self.job_new(submit, record, workflow)?);
        }
        // A worker of this engine with free slots claims in the insert's own transaction, so the
        // new jobs start after one commit instead of two.
        let Some(slots) = self.shared.submit_slots_take(jobs.len()) else {
            return Ok(self.store().job_insert_many(jobs, batch_id).await?);
        };
        let claim = self.shared.claim_params(slots.count);
        let (ids, claimed) = self.store().job_insert_claim(jobs, batch_id, claim).await?;
        slots.hand_over(claimed).await;
        Ok(ids)
    }

    /// Parses and validates a document; agents registered with this engine count as known.
    pub fn workflow_parse(&self, text: &str) -> Result<Workflow, Report> {
        workflow_parse_registered(text, self.registry())
    }

    /// Reads and parses the workflow version that `submit` names.
    async fn workflow_fetch(
        &self,
        submit: &JobSubmit,
    ) -> Result<(WorkflowRecord, Arc<Workflow>), SubmitError> {
        let version = submit.workflow_version.as_deref();
        let record = self
            .store()
            .workflow_get(&submit.workflow_id, version)
            .await?
            .ok_or_else(|| SubmitError::WorkflowNotFound {
                id: submit.workflow_id.clone(),
                version: version.unwrap_or("latest").to_owned(),
            })?;
        let key = (record.id.clone(), record.version.clone());
        if let Some(workflow) = self.shared.parsed_get(&key, &record.document) {
            return Ok((record, workflow));
        }
        let workflow = self
            .workflow_parse(&record.document)
            .map_err(SubmitError::WorkflowInvalid)?;
        let workflow = Arc::new(workflow);
        self.shared
            .parsed_insert(key, record.document.clone(), workflow.clone());
        Ok((record, workflow))
    }

    fn job_new(
        &self,
        submit: JobSubmit,
        record: &WorkflowRecord,
        workflow: &Workflow,
    ) -> Result<JobNew, SubmitError> {
        let input = input_check(workflow, &submit.input).map_err(SubmitError::InputInvalid)?;
        let default_priority = workflow
            .defaults
            .as_ref()
            .and_then(|defaults| defaults.priority);
        Ok(JobNew {
            workflow_id: record.id.clone(),
            workflow_version: record.version.clone(),
            input,
            priority: submit.priority.or(default_priority).unwrap_or_default(),
            tags: submit.tags,
            metadata: if submit.metadata.is_null() {
                Value::Object(Default::default())
            } else {
                submit.metadata
            },
            depends_on: submit.depends_on,
            on_dependency_failure: submit.on_dependency_failure,
            run_at: submit.run_at,
            timeout_ms: submit.timeout_ms,
            idempotency_key: submit.idempotency_key,
            created_at: self.clock().now_ms(),
        })
    }
}

/// Parses and validates a document, counting the agents of `registry` as known components.
pub(crate) fn workflow_parse_registered(
    text: &str,
    registry: &crate::agent::AgentRegistry,
) -> Result<Workflow, Report> {
    let validation = workflow_parse_validate(text, &|name| registry.get(name).is_some());
    validation.workflow.ok_or(validation.report)
}
