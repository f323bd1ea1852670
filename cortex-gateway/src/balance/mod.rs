//! Load balancing across a model's replicas.
//!
//! [`Balance`] reads the [`Routed`](crate::route::Routed) endpoints of a request, picks one and
//! puts it into the request's extensions as [`Picked`], which the breaker, the queue and the proxy
//! read. Two policies: [`Policy::RoundRobin`] (per model) and [`Policy::LeastInFlight`], the power
//! of two choices: two replicas drawn at random, the one with fewer requests in flight wins. A
//! request counts as in flight until its response body ends or is dropped, so a long stream
//! weighs on its replica for as long as it runs. Replicas whose circuit is open (see
//! [`breaker`](crate::breaker)) are skipped while any other is available; when none is, the
//! pick is made among all and the breaker answers 503 at once.
//!
//! Written here rather than with `tower::balance`: that balancer owns a discovered set of
//! services, while a gateway's replica set is per request (per model, from the registry snapshot)
//! and must consult the breakers' table.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use cortex_gateway::balance::{BalanceLayer, Picked, Policy};
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let service = ServiceBuilder::new()
//!     .layer(BalanceLayer::new(Policy::LeastInFlight))
//!     .service_fn(|req: Request<()>| async move {
//!         // Without a `Routed` extension nothing is picked: the layer passes requests through.
//!         assert!(req.extensions().get::<Picked>().is_none());
//!         Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//!     });
//! service.oneshot(Request::new(())).await.unwrap();
//! # });
//! ```

mod layer;
mod service;

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use cortex_core::Endpoint;

pub use self::layer::BalanceLayer;
pub use self::service::Balance;

/// The response body of [`Balance`]: holds the replica's in-flight count until it ends.
pub type ResponseBody<B> = crate::guard::Guarded<B, service::InFlight>;

/// The future of [`Balance`].
pub type ResponseFuture<F> = service::ResponseFuture<F>;

/// The replica chosen for a request; in the request's extensions, and copied into the response's
/// by the proxy.
#[derive(Debug, Clone)]
pub struct Picked(pub Endpoint);

/// How a replica is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Each replica in turn, per model.
    RoundRobin,
    /// The less loaded of two random replicas (power of two choices).
    #[default]
    LeastInFlight,
}

/// A xorshift64* draw from a per-thread state seeded by the standard library's random hasher
/// keys: enough to spread picks, no cryptographic claim, no dependency.
pub(crate) fn random(bound: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(1);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the high bits scaled to `bound`"
        )]
        let pick = ((u128::from(r) * bound as u128) >> 64) as usize;
        pick
    })
}
