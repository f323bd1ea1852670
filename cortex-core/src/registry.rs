//! The [`Registry`] trait and [`InMemoryRegistry`]: served model name → healthy endpoints.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::{Endpoint, InstanceId};

/// The endpoints of one served model, in registration order. Cheap to clone.
pub type Endpoints = Arc<[Endpoint]>;

/// Served model name → the endpoints ready to take its traffic.
///
/// The [`Supervisor`](crate::Supervisor) writes it (an endpoint is registered once ready and
/// deregistered before it is stopped or when it stops answering); the gateway reads it on every
/// request through [`resolve`](Self::resolve), which must therefore never wait on a lock. The trait
/// is object safe and synchronous: a registry is shared as `Arc<dyn Registry>`.
pub trait Registry: Send + Sync + 'static {
    /// Adds `endpoint` under its served name. Returns `false`, changing nothing, when an endpoint
    /// with the same instance is already registered under that name.
    fn register(&self, endpoint: Endpoint) -> bool;

    /// Removes the endpoint of `instance` from `served_name`, returning it if it was there.
    fn deregister(&self, served_name: &str, instance: &InstanceId) -> Option<Endpoint>;

    /// The endpoints serving `served_name`; `None` when there are none.
    fn resolve(&self, served_name: &str) -> Option<Endpoints>;

    /// Everything registered, at one instant.
    fn snapshot(&self) -> Arc<RegistrySnapshot>;

    /// Every change from now on: the receiver always holds the latest snapshot, and is notified when
    /// it changes (a slow subscriber skips intermediate snapshots rather than lagging).
    fn subscribe(&self) -> watch::Receiver<Arc<RegistrySnapshot>>;
}

impl fmt::Debug for dyn Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("version", &self.snapshot().version)
            .finish_non_exhaustive()
    }
}

/// Everything a registry holds at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistrySnapshot {
    /// Incremented by each change; 0 for the empty registry.
    pub version: u64,
    /// Served name → endpoints. Names with no endpoint are absent.
    pub models: HashMap<Arc<str>, Endpoints>,
}

// === impl RegistrySnapshot ===

impl RegistrySnapshot {
    /// The endpoints of `served_name`.
    pub fn get(&self, served_name: &str) -> Option<&Endpoints> {
        self.models.get(served_name)
    }

    /// How many endpoints there are in all.
    pub fn endpoint_count(&self) -> usize {
        self.models.values().map(|e| e.len()).sum()
    }
}

/// A [`Registry`] in memory: reads are a lock-free snapshot load (arc-swap), writes are serialized
/// and copy the map.
///
/// Writes happen a few times per model lifetime and reads on every request, so copy-on-write is the
/// right trade: a `resolve` is an atomic load, a hash lookup and a reference-count increment, with no
/// lock shared with writers or other readers.
///
/// ```
/// use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry};
///
/// let registry = InMemoryRegistry::new();
/// let endpoint = Endpoint::new(
///     ModelId::new("gemma").unwrap(),
///     "gemma-3",
///     0,
///     InstanceId::new("pid-41"),
///     EngineKind::LLAMA_CPP,
///     "http://127.0.0.1:39211".parse().unwrap(),
/// );
/// assert!(registry.register(endpoint.clone()));
/// assert_eq!(&*registry.resolve("gemma-3").unwrap(), &[endpoint]);
/// registry.deregister("gemma-3", &InstanceId::new("pid-41"));
/// assert!(registry.resolve("gemma-3").is_none());
/// ```
pub struct InMemoryRegistry {
    current: ArcSwap<RegistrySnapshot>,
    /// Serializes writers; readers never touch it.
    write: Mutex<()>,
    changes: watch::Sender<Arc<RegistrySnapshot>>,
}

// === impl InMemoryRegistry ===

impl InMemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        let empty = Arc::new(RegistrySnapshot::default());
        Self {
            current: ArcSwap::new(empty.clone()),
            write: Mutex::new(()),
            changes: watch::Sender::new(empty),
        }
    }

    /// Applies `change` to a copy of the current map; publishes it when `change` returns `true`.
    fn update(&self, change: impl FnOnce(&mut HashMap<Arc<str>, Endpoints>) -> bool) {
        let _guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        let mut models = current.models.clone();
        if change(&mut models) {
            let next = Arc::new(RegistrySnapshot {
                version: current.version + 1,
                models,
            });
            self.current.store(next.clone());
            self.changes.send_replace(next);
        }
    }
}

impl Default for InMemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryRegistry")
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl Registry for InMemoryRegistry {
    fn register(&self, endpoint: Endpoint) -> bool {
        let mut added = false;
        self.update(|models| {
            let key = endpoint.served_name.clone();
            let existing = models.get(&key).map(|e| &e[..]).unwrap_or_default();
            if existing.iter().any(|e| e.instance == endpoint.instance) {
                return false;
            }
            let mut list = Vec::with_capacity(existing.len() + 1);
            list.extend_from_slice(existing);
            list.push(endpoint);
            models.insert(key, list.into());
            added = true;
            true
        });
        added
    }

    fn deregister(&self, served_name: &str, instance: &InstanceId) -> Option<Endpoint> {
        let mut removed = None;
        self.update(|models| {
            let Some(existing) = models.get(served_name) else {
                return false;
            };
            let Some(pos) = existing.iter().position(|e| &e.instance == instance) else {
                return false;
            };
            let mut list = existing.to_vec();
            removed = Some(list.remove(pos));
            if list.is_empty() {
                models.remove(served_name);
            } else {
                models.insert(served_name.into(), list.into());
            }
            true
        });
        removed
    }

    #[inline]
    fn resolve(&self, served_name: &str) -> Option<Endpoints> {
        self.current.load().models.get(served_name).cloned()
    }

    fn snapshot(&self) -> Arc<RegistrySnapshot> {
        self.current.load_full()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<RegistrySnapshot>> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineKind, ModelId};

    fn endpoint(served: &str, instance: &str) -> Endpoint {
        Endpoint::new(
            ModelId::new("m").unwrap(),
            served,
            0,
            InstanceId::new(instance),
            EngineKind::LLAMA_CPP,
            "http://127.0.0.1:1".parse().unwrap(),
        )
    }

    #[test]
    fn register_resolve_deregister() {
        let r = InMemoryRegistry::new();
        assert!(r.resolve("a").is_none());
        assert!(r.register(endpoint("a", "i1")));
        assert!(
            !r.register(endpoint("a", "i1")),
            "duplicate instance refused"
        );
        assert!(r.register(endpoint("a", "i2")));
        assert!(r.register(endpoint("b", "i3")));
        let a = r.resolve("a").unwrap();
        assert_eq!(
            a.iter().map(|e| e.instance.as_str()).collect::<Vec<_>>(),
            ["i1", "i2"]
        );
        assert_eq!(r.snapshot().endpoint_count(), 3);
        assert_eq!(r.snapshot().version, 3);

        assert_eq!(
            r.deregister("a", &InstanceId::new("i1"))
                .unwrap()
                .instance
                .as_str(),
            "i1"
        );
        assert!(r.deregister("a", &InstanceId::new("i1")).is_none());
        assert!(r.deregister("zzz", &InstanceId::new("i1")).is_none());
        assert_eq!(r.snapshot().version, 4, "no-op changes publish nothing");
        r.deregister("a", &InstanceId::new("i2"));
        assert!(r.resolve("a").is_none());
        assert!(
            !r.snapshot().models.contains_key("a"),
            "empty names are removed"
        );
        // The snapshot resolved earlier is unaffected by later writes.
        assert_eq!(a.len(), 2);
    }

    #[tokio::test]
    async fn subscribers_see_changes() {
        let r = InMemoryRegistry::new();
        let mut rx = r.subscribe();
        assert_eq!(rx.borrow_and_update().version, 0);
        r.register(endpoint("a", "i1"));
        rx.changed().await.unwrap();
        let snap = rx.borrow_and_update().clone();
        assert_eq!(snap.version, 1);
        assert_eq!(snap.get("a").unwrap().len(), 1);
        r.deregister("a", &InstanceId::new("i1"));
        rx.changed().await.unwrap();
        assert!(rx.borrow().get("a").is_none());
    }

    #[test]
    fn concurrent_readers_and_writers() {
        let r = Arc::new(InMemoryRegistry::new());
        std::thread::scope(|s| {
            for w in 0..4 {
                let r = r.clone();
                s.spawn(move || {
                    for i in 0..200 {
                        let id = format!("w{w}-{i}");
                        assert!(r.register(endpoint("a", &id)));
                        assert!(r.deregister("a", &InstanceId::new(id)).is_some());
                    }
                    r.register(endpoint("a", &format!("w{w}-final")));
                });
            }
            for _ in 0..2 {
                let r = r.clone();
                s.spawn(move || {
                    for _ in 0..2000 {
                        if let Some(eps) = r.resolve("a") {
                            assert!(!eps.is_empty(), "a resolved list is never empty");
                        }
                    }
                });
            }
        });
        assert_eq!(r.resolve("a").unwrap().len(), 4);
        assert_eq!(r.snapshot().version, 4 * 401);
    }
}
