use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cortex_core::{Endpoint, InstanceId};
use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::Queue;
use crate::replicas::Replicas;

type SlotsFn = dyn Fn(&Endpoint) -> usize + Send + Sync;

/// Applies [`Queue`]. See the [module docs](crate::queue).
#[derive(Clone)]
pub struct QueueLayer {
    pub(super) slots: usize,
    pub(super) per_replica: Option<Arc<SlotsFn>>,
    pub(super) max_waiting: usize,
    pub(super) timeout: Duration,
    pub(super) queues: Queues,
}

impl fmt::Debug for QueueLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueLayer")
            .field("slots", &self.slots)
            .field("max_waiting", &self.max_waiting)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// === impl QueueLayer ===

impl QueueLayer {
    /// `slots` concurrent requests per replica (at least 1).
    pub fn new(slots: usize) -> Self {
        Self {
            slots: slots.max(1),
            per_replica: None,
            max_waiting: 256,
            timeout: Duration::from_secs(30),
            queues: Queues::default(),
        }
    }

    /// `slots` concurrent requests per replica (at least 1) for replicas not yet seen.
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots.max(1);
        self
    }

    /// The slots of each replica, asked once per replica (its `--parallel`); 0 is taken as 1.
    pub fn per_replica(
        mut self,
        slots: impl Fn(&Endpoint) -> usize + Send + Sync + 'static,
    ) -> Self {
        self.per_replica = Some(Arc::new(slots));
        self
    }

    /// Requests that may wait per replica (default 256); more are refused at once.
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n;
        self
    }

    /// The longest wait (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The table of queues, to read depths from.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Uses (and fills) a shared table, such as the gateway's [`Replicas`].
    pub fn with_queues(mut self, queues: Queues) -> Self {
        self.queues = queues;
        self
    }
}

impl<S> Layer<S> for QueueLayer {
    type Service = Queue<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Queue {
            inner,
            config: self.clone(),
        }
    }
}

/// One replica's slots and waiters.
#[derive(Debug)]
pub(crate) struct Slot {
    /// `model/replica`, for messages.
    pub(crate) name: String,
    pub(crate) model: Arc<str>,
    pub(crate) replica: Arc<str>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) waiting: AtomicUsize,
}

impl Slot {
    pub(crate) fn new(model: Arc<str>, replica: Arc<str>, slots: usize) -> Self {
        Self {
            name: format!("{model}/{replica}"),
            model,
            replica,
            permits: Arc::new(Semaphore::new(slots.max(1))),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// The queues of every replica: a view of the [`Replicas`] table.
#[derive(Debug, Clone, Default)]
pub struct Queues {
    replicas: Replicas,
}

// === impl Queues ===

impl Queues {
    /// The queues in `replicas`.
    pub fn over(replicas: Replicas) -> Self {
        Self { replicas }
    }

    pub(crate) fn slot(
        &self,
        endpoint: Option<&Endpoint>,
        slots: impl FnOnce() -> usize,
    ) -> Arc<Slot> {
        self.replicas.get(endpoint).slot(slots)
    }

    /// Requests waiting for `instance`.
    pub fn waiting(&self, instance: &InstanceId) -> usize {
        self.replicas
            .find(instance)
            .and_then(|r| r.slot.get().map(|s| s.waiting.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    /// Free slots of `instance`, if it has been seen.
    pub fn free(&self, instance: &InstanceId) -> Option<usize> {
        self.replicas
            .find(instance)
            .and_then(|r| r.slot.get().map(|s| s.permits.available_permits()))
    }
}
