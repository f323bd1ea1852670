use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cortex_core::{Endpoint, InstanceId};

use crate::replicas::Replicas;
use tokio::time::Instant;

/// What one request said about a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Success,
    Failure,
    /// The client went away first: nothing learned.
    Neutral,
}

/// A circuit's state, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests pass; the count of consecutive failures.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Requests are refused until the cooldown ends.
    Open {
        /// Time left before a probe may go through.
        remaining: Duration,
    },
    /// One probe is in flight.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, cooldown: Duration },
    HalfOpen { cooldown: Duration },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) failures: NonZeroU32,
    pub(crate) cooldown: Duration,
    pub(crate) max_cooldown: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            failures: NonZeroU32::new(5).expect("5 is not 0"),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// `cooldown` ± 20%, so that circuits opened by one incident do not all probe at once.
fn jitter(cooldown: Duration) -> Duration {
    #[allow(clippy::cast_precision_loss, reason = "a draw below 1000")]
    let draw = crate::balance::random(1000) as f64 / 1000.0;
    cooldown.mul_f64(0.8 + 0.4 * draw)
}

/// One replica's circuit.
#[derive(Debug)]
pub(crate) struct Circuit {
    /// `model/replica`, for logs.
    name: String,
    model: Arc<str>,
    replica: Arc<str>,
    state: Mutex<State>,
}

// === impl Circuit ===

impl Circuit {
    pub(crate) fn new(model: Arc<str>, replica: Arc<str>) -> Self {
        Self {
            name: format!("{model}/{replica}"),
            model,
            replica,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a request (`Ok(true)` for the probe) or says how long to wait.
    pub(crate) fn admit(&self, now: Instant) -> Result<bool, Duration> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until, cooldown } if now >= until => {
                *state = State::HalfOpen { cooldown };
                self.gauge(2.0);
                tracing::info!(replica = %self.name, "circuit half-open: one probe request");
                Ok(true)
            }
            State::Open { until, .. } => Err(until - now),
            State::HalfOpen { .. } => Err(Duration::from_secs(1)),
        }
    }

    /// Whether a request would be admitted now (without admitting it).
    pub(crate) fn is_available(&self, now: Instant) -> bool {
        match *self.lock() {
            State::Closed { .. } => true,
            State::Open { until, .. } => now >= until,
            State::HalfOpen { .. } => false,
        }
    }

    pub(crate) fn report(&self, probe: bool, class: Class, policy: &Policy, now: Instant) {
        let mut state = self.lock();
        match (&mut *state, probe, class) {
            (State::Closed { failures }, false, Class::Success) => *failures = 0,
            (State::Closed { failures }, false, Class::Failure) => {
                *failures += 1;
                if *failures >= policy.failures.get() {
                    tracing::warn!(replica = %self.name, failures = *failures, cooldown = ?policy.cooldown, "circuit opened");
                    *state = State::Open {
                        until: now + jitter(policy.cooldown),
                        cooldown: policy.cooldown,
                    };
                    self.gauge(1.0);
                }
            }
            (State::HalfOpen { .. }, true, Class::Success) => {
                tracing::info!(replica = %self.name, "circuit closed: the probe succeeded");
                *state = State::Closed { failures: 0 };
                self.gauge(0.0);
            }
            (State::HalfOpen { cooldown }, true, Class::Failure) => {
                let next = cooldown.saturating_mul(2).min(policy.max_cooldown);
                tracing::warn!(replica = %self.name, cooldown = ?next, "circuit re-opened: the probe failed");
                *state = State::Open {
                    until: now + jitter(next),
                    cooldown: next,
                };
                self.gauge(1.0);
            }
            (State::HalfOpen { cooldown }, true, Class::Neutral) => {
                // The probe's client went away: the next request probes.
                *state = State::Open {
                    until: now,
                    cooldown: *cooldown,
                };
                self.gauge(1.0);
            }
            // Requests admitted before the circuit changed, and unanswered probes' neighbours.
            _ => {}
        }
    }

    fn snapshot(&self, now: Instant) -> CircuitState {
        match *self.lock() {
            State::Closed { failures } => CircuitState::Closed { failures },
            State::Open { until, .. } => CircuitState::Open {
                remaining: until.saturating_duration_since(now),
            },
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn gauge(&self, value: f64) {
        metrics::gauge!(
            "cortex_gateway_breaker_state",
            "model" => Arc::clone(&self.model),
            "replica" => Arc::clone(&self.replica)
        )
        .set(value);
    }
}

/// The circuits of every replica, shared by the breaker and the balancer: a view of the
/// [`Replicas`] table.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    replicas: Replicas,
}

// === impl Breakers ===

impl Breakers {
    /// An empty table of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// The circuits in `replicas`.
    pub fn over(replicas: Replicas) -> Self {
        Self { replicas }
    }

    pub(crate) fn circuit(&self, endpoint: Option<&Endpoint>) -> Arc<Circuit> {
        Arc::clone(&self.replicas.get(endpoint).circuit)
    }

    /// Whether `instance`'s circuit would admit a request now.
    pub fn is_available(&self, instance: &InstanceId) -> bool {
        self.replicas
            .find(instance)
            .is_none_or(|r| r.circuit.is_available(Instant::now()))
    }

    /// The state of `instance`'s circuit (closed with no failures when it has none yet).
    pub fn state(&self, instance: &InstanceId) -> CircuitState {
        self.replicas
            .find(instance)
            .map_or(CircuitState::Closed { failures: 0 }, |r| {
                r.circuit.snapshot(Instant::now())
            })
    }

    /// Forgets the circuits of instances not in `keep` (instances that left the registry).
    pub fn retain(&self, keep: impl Fn(&InstanceId) -> bool) {
        self.replicas.retain(keep);
    }
}
