//! One model's lifecycle, run as one task.
//!
//! The actor owns the model's instances from the moment they are planned. It is the only writer of
//! the model's status (but for the transitions [`Supervisor`](super::Supervisor) makes before it
//! exists and after it ends), which is what serializes start and stop of one model.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use humantime_serde::re::humantime::format_duration;
use tokio::time::{Instant, MissedTickBehavior, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::{Shared, Slot, emit, set_state};
use crate::error_chain;
use crate::{
    BoxFuture, DynHealthProbe, Endpoint, EngineKind, EventKind, Exit, HealthSpec, HealthStatus,
    Instance, InstanceId, LaunchPlan, LogLine, ModelId, ModelSpec, ModelState, RestartPolicy,
    RuntimeError,
};

pub(super) struct Actor {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    model: ModelId,
    served: Arc<str>,
    engine: EngineKind,
    /// The engine's own judgement of a start's log (whether its port was taken).
    engine_impl: Option<Arc<dyn crate::Engine>>,
    restart: RestartPolicy,
    /// Every stop that failed during this run; a run with any ends `Failed`.
    stop_errors: Mutex<Vec<String>>,
}

/// A replica that started and answered ready.
struct Up {
    instance: Instance,
    endpoint: Endpoint,
    /// The plan it runs: the one it was given, or the same on another port when that one was
    /// taken.
    plan: Arc<LaunchPlan>,
}

/// How many times a replica is started on a fresh port when its engine finds the port taken.
const PORT_TRIES: u32 = 3;

/// How one start of a replica went.
enum Attempt {
    Up(Box<Up>),
    NotUp(NotUp),
    /// It exited because its port was taken; it was stopped.
    PortTaken(Failure),
}

/// Why a replica did not come up.
enum NotUp {
    /// A stop was requested; the instance, if any, was stopped.
    Cancelled,
    /// It failed; the instance, if any, was stopped.
    Failed(Failure),
}

struct Failure {
    reason: String,
    log_tail: Vec<LogLine>,
}

/// How the wait for one starting replica ended.
enum Outcome {
    Ready,
    Cancelled,
    Exited(Result<Exit, RuntimeError>),
    TimedOut,
}

/// In-flight restarts: replica index and how the start went.
type Restarts<'a> = FuturesUnordered<BoxFuture<'a, (u32, Result<Up, NotUp>)>>;

/// Removals of exited instances in flight: replica index and why it went (with its log).
type Cleanups<'a> = FuturesUnordered<BoxFuture<'a, (u32, Failure)>>;

/// Waits for instance exits: replica index, instance and how it exited.
type Exits = FuturesUnordered<BoxFuture<'static, (u32, InstanceId, Result<Exit, RuntimeError>)>>;

/// A replica of a running model.
struct Live {
    plan: Arc<LaunchPlan>,
    up: Option<Up>,
    registered: bool,
    failures: u32,
    restarts: u32,
    probing: bool,
}

// === impl Actor ===

impl Actor {
    pub(super) fn new(shared: Arc<Shared>, slot: Arc<Slot>, spec: &ModelSpec) -> Self {
        Self {
            engine_impl: shared.engines.get(&spec.engine).cloned(),
            shared,
            slot,
            model: spec.id.clone(),
            served: spec.served_name().into(),
            engine: spec.engine.clone(),
            restart: spec.restart,
            stop_errors: Mutex::new(Vec::new()),
        }
    }

    /// Runs the model from its plans; `adopt[i]`, where given, is an instance already running
    /// replica `i` (left by an earlier manager), probed instead of started.
    pub(super) async fn run(self, plans: Vec<Arc<LaunchPlan>>, adopt: Vec<Option<Instance>>) {
        match self.start_all(&plans, adopt).await {
            Ok(ups) => self.running(plans, ups).await,
            // `start_all` already showed `Stopping`.
            Err(NotUp::Cancelled) => self.finish(None),
            Err(NotUp::Failed(f)) => self.finish(Some(f)),
        }
    }

    /// Sets the final state of this run: `Stopped`, or `Failed` for a failure or any failed stop.
    fn finish(&self, failure: Option<Failure>) {
        let errors = std::mem::take(
            &mut *self
                .stop_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let stop_error =
            (!errors.is_empty()).then(|| format!("stop failed: {}", errors.join("; ")));
        if let Some(e) = &stop_error {
            *self
                .slot
                .stop_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
        }
        let state = match (failure, stop_error) {
            (Some(f), None) => ModelState::Failed {
                reason: f.reason,
                log_tail: f.log_tail,
            },
            (Some(f), Some(e)) => ModelState::Failed {
                reason: format!("{}; {e}", f.reason),
                log_tail: f.log_tail,
            },
            (None, Some(e)) => ModelState::Failed {
                reason: e,
                log_tail: Vec::new(),
            },
            (None, None) => ModelState::Stopped,
        };
        self.set_state(state);
    }

    /// Starts every replica concurrently. If one fails, the others are cancelled; if a stop is
    /// requested, all are. Either way every instance that was started is stopped before this returns.
    async fn start_all(
        &self,
        plans: &[Arc<LaunchPlan>],
        adopt: Vec<Option<Instance>>,
    ) -> Result<Vec<Up>, NotUp> {
        let abort = self.slot.stop.child_token();
        let mut adopt = adopt.into_iter();
        let mut starts: FuturesUnordered<_> = plans
            .iter()
            .map(|plan| self.start_replica(plan, adopt.next().flatten(), &abort))
            .collect();
        let mut ups = Vec::with_capacity(plans.len());
        let mut failure = None;
        // Whether `Stopping` was shown; the starts may all end (cancelled) before this sees the stop.
        let mut stopping = false;
        loop {
            tokio::select! {
                next = starts.next() => match next {
                    None => break,
                    Some(Ok(up)) => ups.push(up),
                    Some(Err(NotUp::Cancelled)) => {}
                    Some(Err(NotUp::Failed(f))) => {
                        if failure.is_none() {
                            failure = Some(f);
                            abort.cancel();
                        }
                    }
                },
                () = self.slot.stop.cancelled(), if !stopping => {
                    stopping = true;
                    self.set_state(ModelState::Stopping);
                }
            }
        }
        drop(starts);
        if self.slot.stop.is_cancelled() && !stopping {
            stopping = true;
            self.set_state(ModelState::Stopping);
        }
        if stopping || failure.is_some() {
            // Replicas that became ready before the others failed (or the stop came) go too.
            join_all(
                ups.iter().map(|up| {
                    self.stop_replica(&up.endpoint, &plans[up.endpoint.replica as usize])
                }),
            )
            .await;
            return Err(match failure {
                Some(f) if !stopping => NotUp::Failed(f),
                _ => NotUp::Cancelled,
            });
        }
        // Neither stopped nor failed: every replica came up.
        debug_assert_eq!(ups.len(), plans.len());
        ups.sort_by_key(|up| up.endpoint.replica);
        Ok(ups)
    }

    /// Starts one replica (or takes over `adopted`, already running) and probes it until it is
    /// ready, it exits, the startup timeout passes, or `cancel` fires. On anything but ready, the
    /// instance is stopped before this returns.
    ///
    /// A local process that exits because its port was taken (another program bound it between
    /// the choice of the port and the engine's start: the engine says so in its log) is started
    /// again on a fresh port, up to [`PORT_TRIES`] starts in all.
    async fn start_replica(
        &self,
        plan: &Arc<LaunchPlan>,
        adopted: Option<Instance>,
        cancel: &CancellationToken,
    ) -> Result<Up, NotUp> {
        let mut plan = plan.clone();
        let mut adopted = adopted;
        for tries in 1.. {
            let failure = match self.start_once(&plan, adopted.take(), cancel).await {
                Attempt::Up(up) => return Ok(*up),
                Attempt::NotUp(not) => return Err(not),
                Attempt::PortTaken(failure) => failure,
            };
            let port = (tries < PORT_TRIES)
                .then(|| super::choose_ports(crate::TargetKind::Process, 0, 1).ok())
                .flatten()
                .and_then(|ports| ports.first().copied());
            let Some(port) = port else {
                return Err(NotUp::Failed(Failure {
                    reason: format!(
                        "{} (its port was taken, {tries} starts in all)",
                        failure.reason
                    ),
                    log_tail: failure.log_tail,
                }));
            };
            tracing::warn!(
                model = %self.model,
                replica = plan.replica,
                taken = plan.port,
                port,
                "the engine's port was taken before it could bind; starting it on another"
            );
            plan = Arc::new(plan.with_port(port));
        }
        unreachable!("the loop returns")
    }

    /// One start of [`start_replica`](Self::start_replica).
    async fn start_once(
        &self,
        plan: &Arc<LaunchPlan>,
        adopted: Option<Instance>,
        cancel: &CancellationToken,
    ) -> Attempt {
        let replica = plan.replica;
        if cancel.is_cancelled() {
            return Attempt::NotUp(NotUp::Cancelled);
        }
        let adopting = adopted.is_some();
        let instance = if let Some(instance) = adopted {
            instance
        } else {
            // Never dropped half-way: a runtime may have created something by the time it fails.
            match self.shared.runtime.start(plan).await {
                Ok(instance) => instance,
                Err(e) => {
                    return Attempt::NotUp(NotUp::Failed(Failure {
                        reason: format!(
                            "replica {replica} could not be started: {}",
                            error_chain(&e)
                        ),
                        log_tail: Vec::new(),
                    }));
                }
            }
        };
        let endpoint = Endpoint::new(
            self.model.clone(),
            self.served.clone(),
            replica,
            instance.id.clone(),
            self.engine.clone(),
            instance.base_url.clone(),
        );
        self.update_replica(replica, |r| {
            r.instance = Some(instance.id.clone());
            r.endpoint = Some(endpoint.clone());
            r.health = None;
            r.consecutive_failures = 0;
        });
        let instance_id = instance.id.clone();
        self.emit(if adopting {
            EventKind::Adopted {
                replica,
                instance: instance_id,
            }
        } else {
            EventKind::InstanceStarted {
                replica,
                instance: instance_id,
            }
        });

        let last = Mutex::new(None);
        let deadline = Instant::now() + plan.health.startup_timeout;
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => Outcome::Cancelled,
            exit = self.shared.runtime.wait(&instance.id) => Outcome::Exited(exit),
            () = sleep_until(deadline) => Outcome::TimedOut,
            () = self.probe_until_ready(&endpoint, &plan.health, &last) => Outcome::Ready,
        };
        let mut exited = false;
        let reason = match outcome {
            Outcome::Ready => {
                return Attempt::Up(Box::new(Up {
                    instance,
                    endpoint,
                    plan: plan.clone(),
                }));
            }
            Outcome::Cancelled => {
                self.stop_replica(&endpoint, plan).await;
                return Attempt::NotUp(NotUp::Cancelled);
            }
            Outcome::Exited(exit) => {
                exited = true;
                let exit = self.exited(&endpoint, exit);
                format!("replica {replica} exited while starting, with {exit}")
            }
            Outcome::TimedOut => {
                let last = last.lock().unwrap_or_else(PoisonError::into_inner).take();
                format!(
                    "replica {replica} was not ready after {} (last probe: {})",
                    format_duration(plan.health.startup_timeout),
                    last.map_or_else(|| "none answered".to_owned(), |s| s.to_string()),
                )
            }
        };
        // Read the log before the stop removes it.
        let log_tail = self.log_tail(&instance.id).await;
        self.stop_replica(&endpoint, plan).await;
        let failure = Failure { reason, log_tail };
        let port_taken = exited
            && matches!(plan.target, crate::Target::Process { .. })
            && self
                .engine_impl
                .as_ref()
                .is_some_and(|e| e.port_taken(&failure.log_tail));
        if port_taken {
            Attempt::PortTaken(failure)
        } else {
            Attempt::NotUp(NotUp::Failed(failure))
        }
    }

    /// Probes with a doubling interval until one probe says ready; never returns otherwise.
    async fn probe_until_ready(
        &self,
        endpoint: &Endpoint,
        spec: &HealthSpec,
        last: &Mutex<Option<HealthStatus>>,
    ) {
        let mut wait = spec.poll_interval;
        loop {
            let status = probe_once(
                self.shared.probe.as_ref(),
                endpoint,
                spec,
                self.shared.config.probe_timeout,
            )
            .await;
            self.record_health(endpoint.replica, &status, 0);
            if status.is_ready() {
                return;
            }
            *last.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
            sleep(wait).await;
            wait = (wait * 2).min(spec.max_poll_interval.max(spec.poll_interval));
        }
    }

    /// The running phase: probe, watch for exits, restart when allowed, until stopped or failed.
    async fn running(self, plans: Vec<Arc<LaunchPlan>>, ups: Vec<Up>) {
        let config = &self.shared.config;
        debug_assert_eq!(plans.len(), ups.len());
        let mut live: Vec<Live> = ups
            .into_iter()
            .map(|up| Live {
                plan: up.plan.clone(),
                up: Some(up),
                registered: false,
                failures: 0,
                restarts: 0,
                probing: false,
            })
            .collect();
        let mut exits = Exits::new();
        for r in &mut live {
            self.register(r);
            exits.push(self.wait_exit(r));
        }
        self.refresh_state(&live, "");

        let mut probes: FuturesUnordered<BoxFuture<'static, (u32, InstanceId, HealthStatus)>> =
            FuturesUnordered::new();
        let mut restarts = Restarts::new();
        let mut cleanups = Cleanups::new();
        // Cancelled by a stop, or when the model fails: ends in-flight restarts.
        let run = self.slot.stop.child_token();
        let mut tick = tokio::time::interval_at(
            Instant::now() + config.probe_interval,
            config.probe_interval,
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let failure = loop {
            tokio::select! {
                () = self.slot.stop.cancelled() => break None,
                _ = tick.tick() => {
                    for r in live.iter_mut().filter(|r| !r.probing) {
                        if let Some(up) = &r.up {
                            r.probing = true;
                            probes.push(self.probe_task(up.endpoint.clone(), r.plan.clone()));
                        }
                    }
                }
                Some((replica, instance, status)) = probes.next() => {
                    self.on_probe(&mut live, replica, &instance, &status);
                }
                Some((replica, instance, exit)) = exits.next() => {
                    self.on_exit(&mut live, replica, &instance, exit, &mut cleanups);
                }
                Some((replica, failure)) = cleanups.next() => {
                    if let Some(f) = self.try_restart(&mut live, replica, failure, &run, &mut restarts) {
                        break Some(f);
                    }
                }
                Some((replica, result)) = restarts.next() => {
                    if let Some(f) = self.on_restarted(&mut live, replica, result, &run, &mut restarts, &mut exits) {
                        break Some(f);
                    }
                }
            }
        };
        self.wind_down(live, restarts, cleanups, &run, failure)
            .await;
    }

    /// An instance exited: out of the registry at once; its log kept and the instance removed in
    /// the background (`cleanups`, so that a runtime slow to remove it holds up neither the other
    /// replicas' probes nor a stop), then restarted if the policy allows, else the model fails.
    fn on_exit<'a>(
        &'a self,
        live: &mut [Live],
        replica: u32,
        instance: &InstanceId,
        exit: Result<Exit, RuntimeError>,
        cleanups: &mut Cleanups<'a>,
    ) {
        let Some(r) = live.get_mut(replica as usize) else {
            return;
        };
        // An exit of an instance already replaced is old news.
        let Some(up) = r.up.take_if(|up| &up.instance.id == instance) else {
            return;
        };
        let exit = self.exited(&up.endpoint, exit);
        self.deregister(r, &up.endpoint, &format!("instance exited with {exit}"));
        let plan = r.plan.clone();
        cleanups.push(Box::pin(async move {
            let log_tail = self.log_tail(&up.instance.id).await;
            self.stop_replica(&up.endpoint, &plan).await;
            let reason = format!("replica {replica} exited with {exit}");
            (replica, Failure { reason, log_tail })
        }));
    }

    /// A restart finished: back in the registry, or another attempt, or the model fails (returned).
    fn on_restarted<'a>(
        &'a self,
        live: &mut [Live],
        replica: u32,
        result: Result<Up, NotUp>,
        run: &CancellationToken,
        restarts: &mut Restarts<'a>,
        exits: &mut Exits,
    ) -> Option<Failure> {
        let r = live.get_mut(replica as usize)?;
        match result {
            Ok(up) => {
                r.plan = up.plan.clone();
                r.up = Some(up);
                r.failures = 0;
                self.register(r);
                exits.push(self.wait_exit(r));
                self.refresh_state(live, "");
                None
            }
            Err(NotUp::Cancelled) => None,
            Err(NotUp::Failed(f)) => self.try_restart(live, replica, f, run, restarts),
        }
    }

    /// Schedules another restart of `replica` if the policy allows; else returns the failure.
    fn try_restart<'a>(
        &'a self,
        live: &mut [Live],
        replica: u32,
        failure: Failure,
        run: &CancellationToken,
        restarts: &mut Restarts<'a>,
    ) -> Option<Failure> {
        let r = live.get_mut(replica as usize)?;
        match self.restart {
            RestartPolicy::OnFailure {
                max_restarts,
                backoff,
            } if r.restarts < max_restarts => {
                r.restarts += 1;
                let reason = format!(
                    "{}; restarting (attempt {} of {max_restarts})",
                    failure.reason, r.restarts
                );
                self.restart_replica(r, max_restarts, backoff, run, restarts, &reason);
                self.refresh_state(live, &reason);
                None
            }
            _ => Some(failure),
        }
    }

    /// Failed or stopping: everything goes. Endpoints leave the registry before any instance is
    /// stopped, so no request is routed to an instance that is going away.
    async fn wind_down(
        &self,
        mut live: Vec<Live>,
        mut restarts: Restarts<'_>,
        cleanups: Cleanups<'_>,
        run: &CancellationToken,
        failure: Option<Failure>,
    ) {
        if failure.is_none() {
            self.set_state(ModelState::Stopping);
        }
        let why = if failure.is_some() {
            "model failed"
        } else {
            "model stopping"
        };
        let mut drains = Vec::new();
        for r in &mut live {
            if let Some(up) = &r.up {
                let endpoint = up.endpoint.clone();
                // Only what was serving has requests to finish; a failed model has none to wait for.
                if r.registered && failure.is_none() {
                    if let Some(drain) = &self.shared.drain {
                        drains.push(drain.drained(&endpoint));
                    }
                }
                self.deregister(r, &endpoint, why);
            }
        }
        if !drains.is_empty() {
            let timeout = self.shared.config.drain_timeout;
            if tokio::time::timeout(timeout, join_all(drains))
                .await
                .is_err()
            {
                tracing::warn!(model = %self.model, ?timeout, "requests still in flight after the drain timeout: stopping anyway");
            }
        }
        // In-flight restarts see the cancellation and stop what they started; one that won the race
        // and came up is stopped with the rest.
        run.cancel();
        while let Some((replica, result)) = restarts.next().await {
            if let (Ok(up), Some(r)) = (result, live.get_mut(replica as usize)) {
                r.up = Some(up);
            }
        }
        // Removals of exited instances still in flight finish alongside the stops.
        let stops = join_all(live.iter().filter_map(|r| {
            r.up.as_ref()
                .map(|up| self.stop_replica(&up.endpoint, &r.plan))
        }));
        tokio::join!(stops, cleanups.collect::<Vec<_>>());
        self.finish(failure);
    }

    /// Schedules a restart of `r` after `backoff`, abandoned when `run` is cancelled.
    fn restart_replica<'a>(
        &'a self,
        r: &Live,
        max: u32,
        backoff: Duration,
        run: &CancellationToken,
        restarts: &mut Restarts<'a>,
        reason: &str,
    ) {
        let replica = r.plan.replica;
        tracing::warn!(model = %self.model, replica, %reason, "restarting replica");
        self.emit(EventKind::Restarting {
            replica,
            attempt: r.restarts,
            max,
        });
        self.update_replica(replica, |s| s.restarts = r.restarts);
        let plan = r.plan.clone();
        let cancel = run.child_token();
        restarts.push(Box::pin(async move {
            let result = tokio::select! {
                () = cancel.cancelled() => Err(NotUp::Cancelled),
                () = sleep(backoff) => self.start_replica(&plan, None, &cancel).await,
            };
            (replica, result)
        }));
    }

    fn on_probe(
        &self,
        live: &mut [Live],
        replica: u32,
        instance: &InstanceId,
        status: &HealthStatus,
    ) {
        let threshold = self.shared.config.failure_threshold.max(1);
        let Some(r) = live.get_mut(replica as usize) else {
            return;
        };
        r.probing = false;
        let Some(up) = r.up.as_ref().filter(|up| &up.instance.id == instance) else {
            return; // an answer about an instance that has gone since
        };
        let endpoint = up.endpoint.clone();
        if status.is_ready() {
            r.failures = 0;
            self.record_health(replica, status, 0);
            if !r.registered {
                self.register(r);
                self.refresh_state(live, "");
            }
            return;
        }
        r.failures += 1;
        self.record_health(replica, status, r.failures);
        if r.failures >= threshold && r.registered {
            let reason = format!(
                "replica {replica}: {} probes failed in a row (last: {status})",
                r.failures
            );
            self.deregister(r, &endpoint, &reason);
            self.refresh_state(live, &reason);
        }
    }

    /// Running or unhealthy, from how many replicas are registered.
    fn refresh_state(&self, live: &[Live], reason: &str) {
        let replicas = u32::try_from(live.len()).unwrap_or(u32::MAX);
        let healthy =
            u32::try_from(live.iter().filter(|r| r.registered).count()).unwrap_or(u32::MAX);
        if healthy == replicas {
            self.set_state(ModelState::Running);
            return;
        }
        let reason = if reason.is_empty() {
            // Keep the reason already shown when the change is a recovery of another replica.
            match &self.slot.status.borrow().state {
                ModelState::Unhealthy { reason, .. } => reason.clone(),
                _ => "some replicas are not ready".to_owned(),
            }
        } else {
            reason.to_owned()
        };
        self.set_state(ModelState::Unhealthy {
            healthy,
            replicas,
            reason,
        });
    }

    fn register(&self, r: &mut Live) {
        let Some(up) = &r.up else { return };
        if !r.registered {
            self.shared.registry.register(up.endpoint.clone());
            for alias in &up.plan.aliases {
                let mut endpoint = up.endpoint.clone();
                endpoint.served_name = alias.as_str().into();
                self.shared.registry.register(endpoint);
            }
            r.registered = true;
            self.update_replica(up.endpoint.replica, |s| s.registered = true);
            self.emit(EventKind::Registered {
                endpoint: up.endpoint.clone(),
            });
        }
    }

    fn deregister(&self, r: &mut Live, endpoint: &Endpoint, reason: &str) {
        if r.registered {
            self.shared
                .registry
                .deregister(&endpoint.served_name, &endpoint.instance);
            for alias in &r.plan.aliases {
                self.shared.registry.deregister(alias, &endpoint.instance);
            }
            r.registered = false;
            self.update_replica(endpoint.replica, |s| s.registered = false);
            self.emit(EventKind::Deregistered {
                endpoint: endpoint.clone(),
                reason: reason.to_owned(),
            });
        }
    }

    /// Records an instance's exit; returns it for messages.
    fn exited(&self, endpoint: &Endpoint, exit: Result<Exit, RuntimeError>) -> String {
        let (exit, text) = match exit {
            Ok(exit) => (Some(exit), exit.to_string()),
            Err(e) => (None, format!("an unknown status ({})", error_chain(&e))),
        };
        self.emit(EventKind::InstanceExited {
            replica: endpoint.replica,
            instance: endpoint.instance.clone(),
            exit,
        });
        text
    }

    /// Stops and removes one instance with its plan's grace period; a failure is kept for
    /// [`finish`](Self::finish).
    async fn stop_replica(&self, endpoint: &Endpoint, plan: &LaunchPlan) {
        match self
            .shared
            .runtime
            .stop(&endpoint.instance, plan.stop_grace)
            .await
        {
            Ok(()) => {
                // The last probe answer no longer describes anything: the instance is gone
                // (it was deregistered before the stop began).
                self.update_replica(endpoint.replica, |s| {
                    s.health = Some(HealthStatus::Down {
                        reason: "stopped".to_owned(),
                    });
                });
                self.emit(EventKind::InstanceStopped {
                    replica: endpoint.replica,
                    instance: endpoint.instance.clone(),
                });
            }
            Err(e) => {
                let e = format!(
                    "replica {} ({}): {}",
                    endpoint.replica,
                    endpoint.instance,
                    error_chain(&e)
                );
                tracing::error!(model = %self.model, error = %e, "could not stop instance");
                self.stop_errors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(e);
            }
        }
    }

    async fn log_tail(&self, instance: &InstanceId) -> Vec<LogLine> {
        match self
            .shared
            .runtime
            .logs(instance, self.shared.config.log_tail_lines)
            .await
        {
            Ok(lines) => lines,
            Err(e) => {
                tracing::warn!(model = %self.model, error = %error_chain(&e), "could not read the log tail");
                Vec::new()
            }
        }
    }

    fn wait_exit(
        &self,
        r: &Live,
    ) -> BoxFuture<'static, (u32, InstanceId, Result<Exit, RuntimeError>)> {
        let runtime = self.shared.runtime.clone();
        let replica = r.plan.replica;
        let id = r.up.as_ref().map(|up| up.instance.id.clone());
        Box::pin(async move {
            match id {
                Some(id) => {
                    let exit = runtime.wait(&id).await;
                    (replica, id, exit)
                }
                None => std::future::pending().await,
            }
        })
    }

    fn probe_task(
        &self,
        endpoint: Endpoint,
        plan: Arc<LaunchPlan>,
    ) -> BoxFuture<'static, (u32, InstanceId, HealthStatus)> {
        let probe = self.shared.probe.clone();
        let limit = self.shared.config.probe_timeout;
        Box::pin(async move {
            let status = probe_once(probe.as_ref(), &endpoint, &plan.health, limit).await;
            (endpoint.replica, endpoint.instance, status)
        })
    }

    /// Stores the latest probe answer; announces it when it differs from the one before.
    fn record_health(&self, replica: u32, status: &HealthStatus, consecutive_failures: u32) {
        let mut changed = false;
        self.update_replica(replica, |r| {
            changed = r.health.as_ref() != Some(status);
            r.health = Some(status.clone());
            r.consecutive_failures = consecutive_failures;
        });
        if changed {
            self.emit(EventKind::Health {
                replica,
                status: status.clone(),
                consecutive_failures,
            });
        }
    }

    fn update_replica(&self, replica: u32, f: impl FnOnce(&mut crate::ReplicaStatus)) {
        self.slot.status.send_modify(|s| {
            if let Some(r) = s.replicas.get_mut(replica as usize) {
                f(r);
            }
        });
    }

    fn set_state(&self, to: ModelState) {
        set_state(&self.shared, &self.slot, to);
    }

    fn emit(&self, kind: EventKind) {
        emit(&self.shared, &self.model, kind);
    }
}

/// One probe, bounded by `limit`.
async fn probe_once(
    probe: &dyn DynHealthProbe,
    endpoint: &Endpoint,
    spec: &HealthSpec,
    limit: Duration,
) -> HealthStatus {
    timeout(limit, probe.probe(endpoint, spec))
        .await
        .unwrap_or_else(|_| {
            HealthStatus::down(format!("probe timed out after {}", format_duration(limit)))
        })
}
