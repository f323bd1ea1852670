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
