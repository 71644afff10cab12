//! Worker heartbeats, the worker list and the deletion of silent workers.

use std::sync::Arc;

use oaj_store::{MaintenanceParams, Store, WorkerBeat, WORKER_FORGET_MS};

use crate::support::*;

fn beat(worker_id: &str, now: i64, running: u32) -> WorkerBeat {
    WorkerBeat {
        worker_id: worker_id.to_owned(),
        hostname: "host-a".to_owned(),
        pid: 4242,
        started_at: T0,
        now,
        running,
    }
}

async fn worker_heartbeat_upserts(store: Arc<dyn Store>) {
    store.worker_heartbeat(beat("w-2", T0, 0)).await.unwrap();
    store.worker_heartbeat(beat("w-1", T0, 0)).await.unwrap();
    store
        .worker_heartbeat(beat("w-1", T0 + 5, 3))
        .await
        .unwrap();

    let workers = store.worker_list(T0 + 10).await.unwrap();
    let ids: Vec<&str> = workers.iter().map(|w| w.worker_id.as_str()).collect();
    assert_eq!(ids, ["w-1", "w-2"]);
    assert_eq!(workers[0].last_seen, T0 + 5);
    assert_eq!(workers[0].running, 3);
    assert_eq!(workers[0].hostname, "host-a");
    assert_eq!(workers[0].pid, 4242);
    assert_eq!(workers[0].started_at, T0);
}

async fn worker_heartbeat_keeps_latest_time(store: Arc<dyn Store>) {
    store
        .worker_heartbeat(beat("w-1", T0 + 5, 1))
        .await
        .unwrap();
    store.worker_heartbeat(beat("w-1", T0, 2)).await.unwrap();

    let workers = store.worker_list(T0 + 10).await.unwrap();
    assert_eq!(workers[0].last_seen, T0 + 5);
}

async fn worker_silent_is_forgotten(store: Arc<dyn Store>) {
    store.worker_heartbeat(beat("old", T0, 0)).await.unwrap();
    store
        .worker_heartbeat(beat("new", T0 + WORKER_FORGET_MS, 0))
        .await
        .unwrap();
    let now = T0 + WORKER_FORGET_MS + 1;
    let listed = store.worker_list(now).await.unwrap();
    assert_eq!(listed.len(), 1, "a silent worker is not listed: {listed:?}");

    let report = store
        .maintenance(MaintenanceParams {
            now,
            interruptions_max: 3,
            retention_ms: None,
            batch_size: 100,
        })
        .await
        .unwrap();
    assert_eq!(report.workers_deleted, 1);
    let all = store.worker_list(T0).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|w| w.worker_id.as_str()).collect();
    assert_eq!(ids, ["new"]);
}

crate::store_tests!(
    worker_heartbeat_upserts,
    worker_heartbeat_keeps_latest_time,
    worker_silent_is_forgotten,
);
