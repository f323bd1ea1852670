//! The per-replica state of the stack in one table: each replica's circuit, queue slots and
//! in-flight count, keyed by its runtime instance, and pruned when the registry drops it.
//!
//! [`GatewayBuilder`](crate::GatewayBuilder) makes one [`Replicas`] over its registry and hands
//! it to the balancer, the breaker ([`Breakers`](crate::breaker::Breakers)) and the queue
//! ([`Queues`](crate::queue::Queues)). An entry is made the first time a request picks a replica;
//! each time one is made, entries whose instance the registry no longer holds are dropped. So a
//! model restarted a thousand times (a new instance each time) leaves at most its current replicas
//! in the table, not a thousand dead ones. Metric series are labelled by model and replica index
//! (`{model="gemma",replica="0"}`), not by instance, so restarts reuse them and the metrics page
//! does not grow either.
//!
//! The table is also the supervisor's [`Drain`](cortex_core::supervisor::Drain): a stop waits
//! until no request is in flight on a deregistered replica before the engine is stopped. That wait
//! polls the replica's count every 20 ms rather than being woken by each request's end, which
//! would cost every request a notification to spare a stop (not latency-critical) a few
//! milliseconds.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use cortex_core::{Endpoint, InstanceId, Registry};

use crate::breaker::Circuit;
use crate::queue::Slot;

/// One replica's state.
#[derive(Debug)]
pub(crate) struct Replica {
    /// The `model` metric label: the served name.
    pub(crate) model: Arc<str>,
    /// The `replica` metric label: the replica's index.
    pub(crate) index: Arc<str>,
    /// Requests in flight on it through the balancer.
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// Its circuit.
    pub(crate) circuit: Arc<Circuit>,
    /// Its queue, made with its slot count on first use.
    pub(crate) slot: OnceLock<Arc<Slot>>,
}

impl Replica {
    fn new(model: Arc<str>, index: Arc<str>) -> Self {
        let circuit = Arc::new(Circuit::new(Arc::clone(&model), Arc::clone(&index)));
        Self {
            model,
            index,
            in_flight: Arc::default(),
            circuit,
            slot: OnceLock::new(),
        }
    }

    /// Its queue, made with `slots()` permits the first time.
    pub(crate) fn slot(&self, slots: impl FnOnce() -> usize) -> Arc<Slot> {
        Arc::clone(self.slot.get_or_init(|| {
            Arc::new(Slot::new(
                Arc::clone(&self.model),
                Arc::clone(&self.index),
                slots(),
            ))
        }))
    }
}

/// The table. Clones share it. See the [module docs](self).
#[derive(Clone, Default)]
pub struct Replicas {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    by_instance: RwLock<HashMap<InstanceId, Arc<Replica>>>,
    /// The state used when no replica was picked (a layer used without the balancer).
    single: OnceLock<Arc<Replica>>,
    registry: Option<Arc<dyn Registry>>,
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicas")
            .field("len", &self.len())
            .field("pruned", &self.inner.registry.is_some())
            .finish()
    }
}

// === impl Replicas ===

impl Replicas {
    /// A table that is never pruned (for layers used on their own).
    pub fn new() -> Self {
        Self::default()
    }

    /// A table pruned to the replicas `registry` holds.
    pub fn pruned_to(registry: Arc<dyn Registry>) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry: Some(registry),
                ..Inner::default()
            }),
        }
    }

    /// Replicas with state now.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no replica has state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests in flight on `instance` (picked by the balancer, their bodies not yet ended).
    pub fn in_flight(&self, instance: &InstanceId) -> usize {
        self.read().get(instance).map_or(0, |r| {
            r.in_flight.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<InstanceId, Arc<Replica>>> {
        self.inner
            .by_instance
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of `endpoint`'s replica (of the whole service when `None`), made when missing.
    pub(crate) fn get(&self, endpoint: Option<&Endpoint>) -> Arc<Replica> {
        let Some(endpoint) = endpoint else {
            return Arc::clone(
                self.inner
                    .single
                    .get_or_init(|| Arc::new(Replica::new(Arc::from("service"), Arc::from("0")))),
            );
        };
        if let Some(r) = self.read().get(&endpoint.instance) {
            return Arc::clone(r);
        }
        let live: Option<HashSet<InstanceId>> = self.inner.registry.as_ref().map(|registry| {
            registry
                .snapshot()
                .models
                .values()
                .flat_map(|e| e.iter().map(|e| e.instance.clone()))
                .collect()
        });
        let mut map = self
            .inner
            .by_instance
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = live {
            map.retain(|instance, _| live.contains(instance));
        }
        Arc::clone(map.entry(endpoint.instance.clone()).or_insert_with(|| {
            Arc::new(Replica::new(
                Arc::clone(&endpoint.served_name),
                Arc::from(endpoint.replica.to_string()),
            ))
        }))
    }

    /// The state of `instance`, if it has any.
    pub(crate) fn find(&self, instance: &InstanceId) -> Option<Arc<Replica>> {
        self.read().get(instance).cloned()
    }

    /// Forgets the replicas for which `keep` is false.
    pub fn retain(&self, keep: impl Fn(&InstanceId) -> bool) {
        self.inner
            .by_instance
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| keep(k));
    }
}

/// How often a drain looks at a replica's in-flight count.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl cortex_core::supervisor::Drain for Replicas {
    fn drained(&self, endpoint: &Endpoint) -> cortex_core::supervisor::Drained {
        // The count is held, not looked up again: the entry may be pruned from the table (the
        // registry no longer holds the replica) while requests on it are still running.
        let count = self
            .find(&endpoint.instance)
            .map(|r| Arc::clone(&r.in_flight));
        Box::pin(async move {
            let Some(count) = count else { return };
            while count.load(std::sync::atomic::Ordering::Acquire) > 0 {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use cortex_core::supervisor::Drain as _;
    use cortex_core::{EngineKind, InMemoryRegistry};

    use super::*;

    fn endpoint(instance: &str) -> Endpoint {
        Endpoint::new(
            "gemma".parse().unwrap(),
            "gemma",
            0,
            InstanceId::new(instance),
            EngineKind::LLAMA_CPP,
            "http://127.0.0.1:1".parse().unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_when_the_last_request_on_the_replica_ends_even_once_pruned() {
        let registry: Arc<dyn Registry> = Arc::new(InMemoryRegistry::new());
        let table = Replicas::pruned_to(Arc::clone(&registry));
        let old = endpoint("old");
        let count = Arc::clone(&table.get(Some(&old)).in_flight);
        count.fetch_add(2, Ordering::AcqRel);
        let drained = tokio::spawn(table.drained(&old));
        // Another replica's first request prunes `old` (the registry does not hold it).
        let _ = table.get(Some(&endpoint("new")));
        assert!(table.find(&old.instance).is_none());
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!drained.is_finished());
        count.fetch_sub(1, Ordering::AcqRel);
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!drained.is_finished());
        count.fetch_sub(1, Ordering::AcqRel);
        tokio::time::timeout(std::time::Duration::from_millis(100), drained)
            .await
            .expect("drained within a poll")
            .unwrap();
        // A replica never used has nothing to drain.
        table.drained(&endpoint("unused")).await;
    }
}
