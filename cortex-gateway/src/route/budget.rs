//! A gateway-wide budget of request-body bytes held in memory.
//!
//! [`Route`](super::Route) reads each body whole before it can route it, and a request that waits
//! in a replica's queue keeps its body. The per-request [`body_limit`](super::RouteLayer::body_limit)
//! bounds one body, not their sum: a thousand clients each sending 32 MiB to a busy one-slot model
//! would hold 32 GiB. [`BodyBudget`] bounds the sum: every body reserves its bytes (its
//! `Content-Length` up front, else as its frames arrive) and keeps them until the replica's answer
//! begins; a request whose bytes do not fit is refused at once with 503 `server_overloaded` and a
//! `Retry-After`, never queued. Written by hand: an atomic counter, since a semaphore's permits
//! (`u32` per acquire in tokio) cannot count bytes of large bodies, and nothing waits for room.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The default budget: 256 MiB, eight bodies at the default body limit.
pub const DEFAULT_BODY_BUDGET: usize = 256 << 20;

/// Bytes of request bodies the gateway may hold at once, shared by every clone.
///
/// ```
/// use cortex_gateway::route::BodyBudget;
///
/// let budget = BodyBudget::new(1 << 20);
/// assert_eq!((budget.limit(), budget.used()), (1 << 20, 0));
/// ```
#[derive(Debug, Clone)]
pub struct BodyBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    used: AtomicUsize,
}

// === impl BodyBudget ===

impl BodyBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Reserves `bytes`, or `None` when they do not fit.
    pub(crate) fn reserve(&self, bytes: usize) -> Option<Reservation> {
        self.take(bytes).then(|| Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, bytes: usize) -> bool {
        let limit = self.inner.limit;
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= limit)
            })
            .is_ok()
    }
}

impl Default for BodyBudget {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_BUDGET)
    }
}

/// Bytes reserved for one body, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: BodyBudget,
    bytes: usize,
}

impl Reservation {
    /// Makes the reservation at least `bytes`; false when the rest does not fit.
    pub(crate) fn grow_to(&mut self, bytes: usize) -> bool {
        let more = bytes.saturating_sub(self.bytes);
        if more == 0 {
            return true;
        }
        if self.budget.take(more) {
            self.bytes += more;
            true
        } else {
            false
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .inner
            .used
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_the_limit_and_are_given_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).unwrap();
        assert!(!a.grow_to(61));
        assert!(a.grow_to(60));
        drop(b);
        assert!(a.grow_to(100));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 0);
        assert!(budget.reserve(usize::MAX).is_none());
    }
}
