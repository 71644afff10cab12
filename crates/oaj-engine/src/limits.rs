//! Concurrency limits on attempts: global, per agent, and per `concurrency` key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Semaphores that bound how many attempts run at once.
pub(crate) struct Limits {
    global: Arc<Semaphore>,
    agents: HashMap<String, Arc<Semaphore>>,
    keys: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The permits an attempt holds while it runs; dropping them frees the slots.
pub(crate) struct Permits {
    _held: Vec<OwnedSemaphorePermit>,
}

impl Limits {
    pub(crate) fn new(global: usize, agents: &HashMap<String, usize>) -> Limits {
        let agents = agents
            .iter()
            .map(|(name, limit)| (name.clone(), Arc::new(Semaphore::new((*limit).max(1)))))
            .collect();
        Limits {
            global: Arc::new(Semaphore::new(global.max(1))),
            agents,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot under every limit that applies to this attempt.
    pub(crate) async fn acquire(&self, agent: &str, key: Option<(&str, u32)>) -> Permits {
        let mut held = Vec::with_capacity(3);
        if let Some((key, limit)) = key {
            held.push(acquire(self.key_semaphore(key, limit)).await);
        }
        if let Some(semaphore) = self.agents.get(agent) {
            held.push(acquire(semaphore.clone()).await);
        }
        held.push(acquire(self.global.clone()).await);
        Permits { _held: held }
    }

    fn key_semaphore(&self, key: &str, limit: u32) -> Arc<Semaphore> {
        let mut keys = self
            .keys
            .lock()
            .expect("limits lock is never held across a panic");
        // The first attempt with a key fixes its limit; documents that give one key two limits
        // get the first one seen.
        keys.entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(usize::try_from(limit).unwrap_or(1).max(1))))
            .clone()
    }
}

async fn acquire(semaphore: Arc<Semaphore>) -> OwnedSemaphorePermit {
    semaphore
        .acquire_owned()
        .await
        .expect("limit semaphores are never closed")
}
