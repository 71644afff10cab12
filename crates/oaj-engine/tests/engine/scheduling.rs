//! Which job runs first: priorities with ageing, dependencies between jobs, and delayed starts.

use oaj_core::{Clock, JobState, Priority, SystemClock};
use oaj_engine::JobSubmit;
use oaj_store::JobRef;
use serde_json::json;

use crate::harness::{test_config, Harness};

fn one_step() -> serde_json::Value {
    json!({"id": "one-step", "steps": [{"id": "only", "component": "noop"}]})
}

#[tokio::test]
async fn higher_priority_jobs_start_first() {
    let config = oaj_engine::EngineConfig {
        jobs_max: 1,
        ..test_config()
    };
    let mut harness = Harness::start_with(config, false).await;
    let mut ids = Vec::new();
    for priority in [
        Priority::Low,
        Priority::Medium,
        Priority::Critical,
        Priority::High,
        Priority::Medium,
    ] {
        let submit = JobSubmit {
            priority: Some(priority),
            ..JobSubmit::default()
        };
        ids.push((priority, harness.submit_with(&one_step(), submit).await));
    }
    harness.run();
    let mut started = Vec::new();
    for (priority, id) in &ids {
        let job = harness.wait_final(id).await;
        started.push((job.started_at.unwrap(), job.id.clone(), *priority));
    }
    started.sort();
    let order: Vec<Priority> = started.iter().map(|(_, _, priority)| *priority).collect();
    assert_eq!(
        order,
        [
            Priority::Critical,
            Priority::High,
            Priority::Medium,
            Priority::Medium,
            Priority::Low
        ]
    );
    // FIFO inside a priority: the first medium job submitted starts first.
    let mediums: Vec<&String> = started
        .iter()
        .filter(|(_, _, priority)| *priority == Priority::Medium)
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(mediums, [&ids[1].1, &ids[4].1]);
}

#[tokio::test]
async fn dependent_job_waits_then_runs() {
    let harness = Harness::start().await;
    let slow = json!({"id": "slow", "steps": [{"id": "wait", "component": "sleep", "inputs": {"ms": 100}}]});
    let first = harness.submit(&slow, json!({})).await;
    let submit = JobSubmit {
        depends_on: vec![JobRef::Id(first.clone())],
        ..JobSubmit::default()
    };
    let second = harness.submit_with(&one_step(), submit).await;
    let second_job = harness.wait_final(&second).await;
    let first_job = harness.wait_final(&first).await;
    assert_eq!(second_job.state, JobState::Completed);
    assert!(second_job.started_at.unwrap() >= first_job.finished_at.unwrap());
}

#[tokio::test]
async fn failed_dependency_fails_dependents_with_reason() {
    let harness = Harness::start().await;
    let failing = json!({"id": "failing", "steps": [{"id": "bad", "component": "fail", "inputs": {"retryable": false}}]});
    let first = harness.submit(&failing, json!({})).await;
    let submit = JobSubmit {
        depends_on: vec![JobRef::Id(first.clone())],
        ..JobSubmit::default()
    };
    let second = harness.submit_with(&one_step(), submit).await;
    let submit = JobSubmit {
        depends_on: vec![JobRef::Id(second.clone())],
        ..JobSubmit::default()
    };
    let third = harness.submit_with(&one_step(), submit).await;
    for id in [&second, &third] {
        let job = harness.wait_final(id).await;
        assert_eq!(job.state, JobState::Failed);
        assert!(job.error.unwrap().contains("dependency"), "job {id}");
        assert!(
            job.started_at.is_none(),
            "a job with a failed dependency never starts"
        );
    }
}

#[tokio::test]
async fn delayed_job_starts_after_run_at() {
    let harness = Harness::start().await;
    let run_at = SystemClock.now_ms() + 300;
    let submit = JobSubmit {
        run_at: Some(run_at),
        ..JobSubmit::default()
    };
    let id = harness.submit_with(&one_step(), submit).await;
    assert_eq!(
        harness.store().job_get(&id).await.unwrap().unwrap().state,
        JobState::Pending
    );
    let job = harness.wait_final(&id).await;
    assert_eq!(job.state, JobState::Completed);
    assert!(job.started_at.unwrap() >= run_at);
}

#[tokio::test]
async fn submit_to_idle_worker_claims_in_insert() {
    let harness = Harness::start().await;
    // A first job proves that the claim loop runs before the job under test is submitted.
    let first = harness.submit(&one_step(), json!({})).await;
    harness.wait_state(&first, JobState::Completed).await;
    let slow = json!({"id": "slow", "steps": [{"id": "nap", "component": "sleep", "inputs": {"ms": 200}}]});

    let id = harness.submit(&slow, json!({})).await;
    let submitted = harness.engine.store().job_get(&id).await.unwrap().unwrap();

    assert_eq!(submitted.state, JobState::Running);
    assert_eq!(
        submitted.lease_owner.as_deref(),
        Some(harness.engine.config().worker_id.as_str())
    );
    harness.wait_state(&id, JobState::Completed).await;
}

#[tokio::test]
async fn submit_to_full_worker_stays_queued() {
    let config = oaj_engine::EngineConfig {
        jobs_max: 1,
        ..test_config()
    };
    let harness = Harness::start_with(config, true).await;
    let slow = json!({"id": "slow", "steps": [{"id": "nap", "component": "sleep", "inputs": {"ms": 300}}]});
    let busy = harness.submit(&slow, json!({})).await;
    harness.wait_state(&busy, JobState::Running).await;

    let waiting = harness.submit(&one_step(), json!({})).await;
    let submitted = harness
        .engine
        .store()
        .job_get(&waiting)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(submitted.state, JobState::Queued);
    harness.wait_state(&busy, JobState::Completed).await;
    harness.wait_state(&waiting, JobState::Completed).await;
}

#[tokio::test]
async fn submit_checks_version_stored_again() {
    let harness = Harness::start_with(test_config(), false).await;
    let typed = |kind: &str| {
        json!({
            "id": "typed", "version": "1.0.0",
            "inputs": {"count": {"type": kind}},
            "steps": [{"id": "only", "component": "noop"}]
        })
    };
    let submit = || JobSubmit {
        workflow_id: "typed".to_owned(),
        input: json!({"count": 5}),
        ..JobSubmit::default()
    };
    harness
        .engine
        .workflow_register(&typed("string").to_string())
        .await
        .expect("valid workflow");
    let rejected = harness.engine.job_submit(submit()).await;
    assert!(rejected.is_err(), "{rejected:?}");

    harness
        .engine
        .store()
        .workflow_delete("typed", "1.0.0")
        .await
        .expect("no job uses the version");
    harness
        .engine
        .workflow_register(&typed("integer").to_string())
        .await
        .expect("valid workflow");
    let accepted = harness.engine.job_submit(submit()).await;
    assert!(accepted.is_ok(), "{accepted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_respect_jobs_max() {
    let config = oaj_engine::EngineConfig {
        jobs_max: 2,
        ..test_config()
    };
    let harness = Harness::start_with(config, true).await;
    let first = harness.submit(&one_step(), json!({})).await;
    harness.wait_state(&first, JobState::Completed).await;
    let slow = json!({"id": "slow", "steps": [{"id": "nap", "component": "sleep", "inputs": {"ms": 150}}]});
    harness
        .engine
        .workflow_register(&slow.to_string())
        .await
        .expect("valid workflow");

    let mut submits = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let engine = harness.engine.clone();
        submits.spawn(async move {
            let submit = JobSubmit {
                workflow_id: "slow".to_owned(),
                ..JobSubmit::default()
            };
            engine.job_submit(submit).await.expect("job accepted")
        });
    }
    let mut max_running = 0;
    loop {
        let counts = harness.engine.store().job_counts().await.unwrap();
        let count = |state| counts.get(&state).copied().unwrap_or(0);
        max_running = max_running.max(count(JobState::Running));
        if submits.is_empty() && count(JobState::Completed) == 41 {
            break;
        }
        while submits.try_join_next().is_some() {}
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(max_running <= 2, "{max_running} jobs ran at once");
    assert!(max_running >= 1);
}
