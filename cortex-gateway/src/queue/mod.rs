//! A concurrency limit per replica with a bounded FIFO wait.
//!
//! [`Queue`] gives each replica (the [`Picked`](crate::balance::Picked) endpoint's instance; one
//! queue for the whole service when nothing was picked) as many concurrent requests as it has
//! slots — llama-server's `--parallel`, 4 by default with `-np` auto — and makes the rest wait in
//! arrival order (tokio's fair semaphore). The permit is held until the response body ends or is
//! dropped, so a stream occupies its slot for as long as it runs. At most
//! [`QueueLayer::max_waiting`] requests wait per replica (256 by default); beyond that, or after
//! [`QueueLayer::timeout`] of waiting (30 s by default), the answer is 503 `queue_full` /
//! `queue_timeout` with `Retry-After`. A waiter whose client went away (its future dropped)
//! leaves the queue at once and its place goes to the next one.
//!
//! Each waiter holds tokio's `Semaphore::acquire_owned` future itself rather than polling through
//! tokio-util's `PollSemaphore`: `PollSemaphore` serves one `poll_ready` caller at a time, and a
//! replica's waiters are many request futures, each with its own timeout and its own place in line.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use cortex_gateway::queue::QueueLayer;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let service = ServiceBuilder::new()
//!     .layer(QueueLayer::new(4).max_waiting(64).timeout(Duration::from_secs(10)))
//!     .service_fn(|_req: Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//!     });
//! assert_eq!(service.oneshot(Request::new(())).await.unwrap().status(), 200);
//! # });
//! ```

mod future;
mod layer;
mod service;

use std::time::Duration;

pub use self::future::ResponseFuture;
pub(crate) use self::layer::Slot;
pub use self::layer::{QueueLayer, Queues};
pub use self::service::Queue;

/// The response body of [`Queue`]: holds the replica's permit until it ends.
pub type ResponseBody<B> =
    crate::guard::Guarded<crate::error::RefusalOr<B>, tokio::sync::OwnedSemaphorePermit>;

/// How long a request waited for its replica, in the response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueWait(pub Duration);
