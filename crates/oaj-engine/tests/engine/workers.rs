//! The worker heartbeat: an engine lists itself in the store, even with no work.

use std::time::Duration;

use oaj_core::{Clock, SystemClock};
use oaj_engine::EngineConfig;

use crate::harness::{test_config, Harness};

#[tokio::test]
async fn idle_engine_writes_heartbeat() {
    let worker_id = "idle-worker";
    let config = EngineConfig {
        worker_id: worker_id.to_owned(),
        ..test_config()
    };
    let mut harness = Harness::start_with(config, true).await;
    let listed = async {
        loop {
            let workers = harness
                .store()
                .worker_list(SystemClock.now_ms())
                .await
                .unwrap();
            if let Some(worker) = workers.into_iter().find(|w| w.worker_id == worker_id) {
                return worker;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let worker = tokio::time::timeout(Duration::from_secs(5), listed)
        .await
        .expect("the engine writes its first heartbeat when it starts");
    assert_eq!(worker.pid, std::process::id());
    assert_eq!(worker.running, 0);
    assert!(!worker.hostname.is_empty());
    assert!(worker.last_seen >= worker.started_at);
    harness.stop().await;
}
