//! `GET /metrics`: Prometheus text exposition, written by hand to keep it small.
//!
//! Job counts and queue depth are read from the store at each scrape. Attempt durations,
//! retries, timeouts and lease expiries are counted from the events this process sees, so they
//! start at zero when the process starts and miss events that other processes write.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use oaj_core::JobState;
use oaj_store::{Event, JobQuery, Store};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::AppState;

/// Upper bounds of the attempt duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Running attempts whose start the collector remembers before it starts over.
const STARTED_MAX: usize = 100_000;

/// An attempt's job, step, fan-out item and number, as its events carry them.
type AttemptKey = (String, String, Option<u32>, Option<u32>);

/// Counters built from events.
pub(crate) struct Metrics {
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    events: u64,
    retries: u64,
    timeouts: u64,
    lease_expiries: u64,
    /// Attempt durations by agent: bucket counts, sum in seconds, count.
    durations: BTreeMap<String, Histogram>,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Metrics {
    /// Starts the task that counts events until `shutdown` fires.
    pub(crate) fn start(store: Arc<dyn Store>, shutdown: CancellationToken) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics {
            counters: Mutex::new(Counters::default()),
        });
        tokio::spawn(collect(Arc::clone(&metrics), store, shutdown));
        metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters
            .lock()
            .expect("metrics counters are only added to, which does not panic")
    }
}

/// Which agent a step calls, from the workflow document.
struct AgentNames {
    store: Arc<dyn Store>,
    /// Workflow (id, version) of each job with a running attempt.
    job_workflows: HashMap<String, (String, String)>,
    /// Component of each step, by workflow (id, version).
    components: HashMap<(String, String), HashMap<String, String>>,
}

impl AgentNames {
    async fn agent(&mut self, job_id: &str, step_id: &str) -> String {
        let key = match self.job_workflows.get(job_id) {
            Some(key) => key.clone(),
            None => match self.store.job_get(job_id).await {
                Ok(Some(job)) => {
                    let key = (job.workflow_id, job.workflow_version);
                    self.job_workflows.insert(job_id.to_owned(), key.clone());
                    key
                }
                _ => return "unknown".to_owned(),
            },
        };
        if !self.components.contains_key(&key) {
            let components = match self.store.workflow_get(&key.0, Some(&key.1)).await {
                Ok(Some(record)) => step_components(&record.document),
                _ => HashMap::new(),
            };
            self.components.insert(key.clone(), components);
        }
        self.components[&key]
            .get(step_id)
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

fn step_components(document: &str) -> HashMap<String, String> {
    let document: Value = serde_json::from_str(document).unwrap_or_default();
    let steps = document["steps"].as_array().cloned().unwrap_or_default();
    steps
        .iter()
        .filter_map(|step| {
            let id = step["id"].as_str()?;
            let component = step["component"].as_str()?;
            Some((id.to_owned(), component.to_owned()))
        })
        .collect()
}

async fn collect(metrics: Arc<Metrics>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut receiver = store.event_subscribe();
    let mut names = AgentNames {
        store,
        job_workflows: HashMap::new(),
        components: HashMap::new(),
    };
    let mut started: HashMap<AttemptKey, i64> = HashMap::new();
    loop {
        let event = tokio::select! {
            received = receiver.recv() => received,
            _ = shutdown.cancelled() => return,
        };
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "metrics missed events while busy");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        observe(&metrics, &mut names, &mut started, event).await;
    }
}

async fn observe(
    metrics: &Metrics,
    names: &mut AgentNames,
    started: &mut HashMap<AttemptKey, i64>,
    event: Event,
) {
    let key = (
        event.job_id.clone().unwrap_or_default(),
        event.step_id.clone().unwrap_or_default(),
        event.item,
        event.attempt,
    );
    let duration_agent = match event.kind.as_str() {
        "attempt.started" => {
            if started.len() >= STARTED_MAX {
                started.clear();
            }
            started.insert(key, event.at);
            None
        }
        kind if kind.starts_with("attempt.") => match started.remove(&key) {
            Some(at) => {
                let agent = names.agent(&key.0, &key.1).await;
                Some((agent, (event.at - at).max(0) as f64 / 1000.0))
            }
            None => None,
        },
        "job.completed" | "job.failed" | "job.cancelled" => {
            names.job_workflows.remove(&key.0);
            None
        }
        _ => None,
    };
    let mut counters = metrics.lock();
    counters.events += 1;
    match event.kind.as_str() {
        "attempt.started" if event.attempt.is_some_and(|number| number > 1) => {
            counters.retries += 1
        }
        "attempt.timed_out" => counters.timeouts += 1,
        "job.rescued" => counters.lease_expiries += 1,
        _ => {}
    }
    if let Some((agent, seconds)) = duration_agent {
        let histogram = counters.durations.entry(agent).or_default();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }
}

/// Serves the metrics in the Prometheus text format, version 0.0.4.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) async fn serve(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let counts = state.store().job_counts().await?;
    let depth = state.store().queue_depth().await?;
    let workers = running_workers(&state).await?;
    let mut out = String::new();

    family(&mut out, "oaj_jobs", "gauge", "Jobs by state.");
    for job_state in JobState::ALL {
        let count = counts.get(&job_state).copied().unwrap_or(0);
        let _ = writeln!(out, "oaj_jobs{{state=\"{job_state}\"}} {count}");
    }
    family(
        &mut out,
        "oaj_queue_depth",
        "gauge",
        "Queued jobs by priority.",
    );
    for priority in oaj_core::Priority::ALL {
        let count = depth.get(&priority).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "oaj_queue_depth{{priority=\"{}\"}} {count}",
            priority.as_str()
        );
    }
    family(
        &mut out,
        "oaj_workers",
        "gauge",
        "Workers holding at least one running job.",
    );
    let _ = writeln!(out, "oaj_workers {workers}");
    counters_write(&mut out, &state.metrics.lock());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

fn counters_write(out: &mut String, counters: &Counters) {
    let totals = [
        (
            "oaj_events_total",
            "Events seen by this process since it started.",
            counters.events,
        ),
        (
            "oaj_retries_total",
            "Attempts started after a failed attempt.",
            counters.retries,
        ),
        (
            "oaj_timeouts_total",
            "Attempts stopped by their timeout.",
            counters.timeouts,
        ),
        (
            "oaj_lease_expiries_total",
            "Jobs rescued after their lease expired.",
            counters.lease_expiries,
        ),
    ];
    for (name, help, value) in totals {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "oaj_attempt_duration_seconds";
    family(out, name, "histogram", "Attempt durations by agent.");
    for (agent, histogram) in &counters.durations {
        let agent = label_escape(agent);
        for (bound, count) in DURATION_BUCKETS.iter().zip(histogram.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{agent=\"{agent}\",le=\"{bound}\"}} {count}"
            );
        }
        let count = histogram.count;
        let _ = writeln!(
            out,
            "{name}_bucket{{agent=\"{agent}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "{name}_sum{{agent=\"{agent}\"}} {}", histogram.sum);
        let _ = writeln!(out, "{name}_count{{agent=\"{agent}\"}} {count}");
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn label_escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn running_workers(state: &AppState) -> Result<usize, ApiError> {
    let query = JobQuery {
        states: vec![JobState::Running],
        limit: crate::PAGE_LIMIT_MAX,
        ..JobQuery::default()
    };
    let jobs = state.store().job_query(query).await?;
    let mut owners: Vec<&String> = jobs
        .iter()
        .filter_map(|job| job.lease_owner.as_ref())
        .collect();
    owners.sort();
    owners.dedup();
    // NOTE: counts the owners of the newest 1000 running jobs only.
    Ok(owners.len())
}
