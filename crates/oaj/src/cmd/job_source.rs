//! Where `oaj jobs` reads and changes jobs: the local database, or a server's HTTP API.

use std::sync::Arc;

use anyhow::Context;
use oaj_core::{Clock, SystemClock};
use oaj_store::{
    ApprovalDecide, ApprovalDecision, Attempt, Event, EventFilter, Job, JobAction, JobFilter,
    StepRun, Store,
};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::ApiClient;

/// Events read per request from the server; the API's largest page.
const EVENT_PAGE: u32 = 1000;

/// The jobs that `oaj jobs` acts on.
pub enum JobSource {
    /// The embedded database.
    Local(Arc<dyn Store>),
    /// A running `oaj serve`.
    Remote(ApiClient),
}

/// A job with its step runs and attempts, as `oaj jobs show` prints it.
pub struct JobDetail {
    pub job: Job,
    pub steps: Vec<StepRun>,
    pub attempts: Vec<Attempt>,
}

/// An approval decision to record.
pub struct DecisionRequest {
    pub job_id: String,
    pub step_id: Option<String>,
    pub approved: bool,
    pub by: Option<String>,
    pub comment: Option<String>,
}

/// A page of `GET /v1/jobs`.
#[derive(Deserialize)]
struct JobPage {
    jobs: Vec<Job>,
}

impl JobSource {
    /// Lists jobs, newest first.
    pub async fn list(&self, filter: JobFilter) -> anyhow::Result<Vec<Job>> {
        let client = match self {
            JobSource::Local(store) => return Ok(store.job_list(filter).await?),
            JobSource::Remote(client) => client,
        };
        let mut query = vec![("limit", filter.limit.to_string())];
        if !filter.states.is_empty() {
            let states: Vec<String> = filter.states.iter().map(ToString::to_string).collect();
            query.push(("state", states.join(",")));
        }
        if let Some(workflow) = filter.workflow_id {
            query.push(("workflow", workflow));
        }
        if let Some(before) = filter.before_id {
            // The API pages with a cursor, `key.created_at.id`, whose key is the creation time
            // in the default newest-first order; the job named by --before gives all three.
            let job: Job = client.get(&["v1", "jobs", &before]).await?;
            let created_at = job.created_at;
            query.push(("cursor", format!("{created_at}.{created_at}.{}", job.id)));
        }
        let request = client.request(Method::GET, &["v1", "jobs"]).query(&query);
        let page: JobPage = client.json(request).await?;
        Ok(page.jobs)
    }

    /// Fetches a job with its step runs and attempts; fails when the job does not exist.
    pub async fn show(&self, id: &str) -> anyhow::Result<JobDetail> {
        match self {
            JobSource::Local(store) => Ok(JobDetail {
                job: job_found(store.as_ref(), id).await?,
                steps: store.step_run_list(id).await?,
                attempts: store.attempt_list(id).await?,
            }),
            JobSource::Remote(client) => Ok(JobDetail {
                job: client.get(&["v1", "jobs", id]).await?,
                steps: client.get(&["v1", "jobs", id, "steps"]).await?,
                attempts: client.get(&["v1", "jobs", id, "attempts"]).await?,
            }),
        }
    }

    /// Lists a job's events after sequence number `after`, in order.
    pub async fn events(&self, id: &str, after: i64) -> anyhow::Result<Vec<Event>> {
        let client = match self {
            JobSource::Local(store) => {
                job_found(store.as_ref(), id).await?;
                let filter = EventFilter {
                    job_id: Some(id.to_owned()),
                    after_seq: after,
                    limit: 100_000,
                };
                return Ok(store.event_list(filter).await?);
            }
            JobSource::Remote(client) => client,
        };
        let mut events: Vec<Event> = Vec::new();
        loop {
            let after = events.last().map_or(after, |event| event.seq);
            let query = [
                ("after", after.to_string()),
                ("limit", EVENT_PAGE.to_string()),
            ];
            let request = client
                .request(Method::GET, &["v1", "jobs", id, "events"])
                .query(&query);
            let page: Vec<Event> = client.json(request).await?;
            let is_last = page.len() < EVENT_PAGE as usize;
            events.extend(page);
            if is_last {
                return Ok(events);
            }
        }
    }

    /// Cancels, pauses, resumes or retries a job, and returns it afterwards.
    pub async fn action(&self, id: &str, action: JobAction) -> anyhow::Result<Job> {
        match self {
            JobSource::Local(store) => {
                let now = SystemClock.now_ms();
                Ok(store.job_action(id, action, now).await?)
            }
            JobSource::Remote(client) => {
                let name = match action {
                    JobAction::Cancel => "cancel",
                    JobAction::Pause => "pause",
                    JobAction::Resume => "resume",
                    JobAction::Retry => "retry",
                };
                let request = client.request(Method::POST, &["v1", "jobs", id, name]);
                client.json(request).await
            }
        }
    }

    /// Approves or rejects the approval step a job waits on.
    pub async fn decide(&self, decision: DecisionRequest) -> anyhow::Result<()> {
        let client = match self {
            JobSource::Local(store) => {
                let decide = ApprovalDecide {
                    job_id: decision.job_id,
                    step_id: decision.step_id,
                    decision: ApprovalDecision {
                        approved: decision.approved,
                        by: decision.by,
                        comment: decision.comment,
                        at: SystemClock.now_ms(),
                    },
                };
                return Ok(store.approval_decide(decide).await?);
            }
            JobSource::Remote(client) => client,
        };
        let name = if decision.approved {
            "approve"
        } else {
            "reject"
        };
        let body = json!({
            "step": decision.step_id,
            "by": decision.by,
            "comment": decision.comment,
        });
        let request = client
            .request(Method::POST, &["v1", "jobs", &decision.job_id, name])
            .json(&body);
        client.send(request).await?;
        Ok(())
    }

    /// Deletes a job that has ended, with its history.
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        match self {
            JobSource::Local(store) => Ok(store.job_delete(id).await?),
            JobSource::Remote(client) => {
                let request = client.request(Method::DELETE, &["v1", "jobs", id]);
                client.send(request).await?;
                Ok(())
            }
        }
    }
}

/// Reads a job from `store`; fails when it does not exist.
pub async fn job_found(store: &dyn Store, id: &str) -> anyhow::Result<Job> {
    store
        .job_get(id)
        .await?
        .with_context(|| format!("job {id} not found: list jobs with `oaj jobs list`"))
}
