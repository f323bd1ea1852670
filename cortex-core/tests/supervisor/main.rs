//! The supervisor's lifecycle under paused tokio time, with the scripted fakes of `test-util`.
//!
//! Each test starts from a [`Harness`]: a fake world (runtime + probe), a supervisor with one fake
//! engine, and a subscription to its events. Time is paused, so a test that waits 300 s of startup
//! timeout takes milliseconds, and every instant is exact.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use cortex_core::test_util::{Call, FakeEngine, FakeWorld, Script};
use cortex_core::{
    Diagnostic, Event, EventKind, HealthStatus, InstanceId, ModelId, ModelSource, ModelSpec,
    ModelState, ModelStatus, RestartPolicy, Supervisor, SupervisorConfig, SupervisorError, Target,
    TargetKind, plan::labels,
};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::time::{Instant, sleep, sleep_until};

mod follow;
mod reconcile;

const KIND: &str = "fake";

struct Harness {
    world: FakeWorld,
    sup: Supervisor,
    events: broadcast::Receiver<Event>,
    t0: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with(FakeWorld::new(), FakeEngine::new(KIND))
    }

    fn with(world: FakeWorld, engine: FakeEngine) -> Self {
        let sup = Supervisor::builder(Arc::new(world.runtime()), Arc::new(world.probe()))
            .engine(Arc::new(engine))
            .config(SupervisorConfig::default())
            .build();
        world.observe_registry(sup.registry().clone());
        let events = sup.subscribe();
        Self {
            world,
            sup,
            events,
            t0: Instant::now(),
        }
    }

    /// Sleeps until `t` after the harness was made.
    async fn at(&self, t: Duration) {
        sleep_until(self.t0 + t).await;
    }

    fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    fn status(&self, id: &ModelId) -> ModelStatus {
        self.sup.status(id).expect("model is known")
    }

    /// Every event received so far.
    fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(e) => out.push(e),
                Err(TryRecvError::Empty) => return out,
                Err(e) => panic!("event stream broken: {e}"),
            }
        }
    }

    /// The state transitions of `id` received so far, as `from>to` names.
    fn transitions(&mut self, id: &ModelId) -> Vec<String> {
        self.drain()
            .into_iter()
            .filter(|e| &e.model == id)
            .filter_map(|e| match e.kind {
                EventKind::StateChanged { from, to } => {
                    Some(format!("{}>{}", from.name(), to.name()))
                }
                _ => None,
            })
            .collect()
    }

    fn starts(&self) -> Vec<InstanceId> {
        self.world
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Start { instance, .. } => instance,
                _ => None,
            })
            .collect()
    }

    fn stops(&self) -> Vec<(InstanceId, Duration, bool)> {
        self.world
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Stop {
                    instance,
                    grace,
                    was_registered,
                } => Some((instance, grace, was_registered)),
                _ => None,
            })
            .collect()
    }
}

fn id(s: &str) -> ModelId {
    ModelId::new(s).unwrap()
}

fn spec(name: &str) -> ModelSpec {
    ModelSpec::new(
        id(name),
        KIND.into(),
        ModelSource::Path(format!("/models/{name}.gguf").into()),
    )
}

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

/// Waits until the model's state satisfies `f`.
async fn state_where(sup: &Supervisor, m: &ModelId, f: impl Fn(&ModelState) -> bool) -> ModelState {
    let mut rx = sup.watch(m).unwrap();
    rx.wait_for(|st| f(&st.state)).await.unwrap().state.clone()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn start_registers_then_stop_deregisters_first() {
    let mut h = Harness::new();
    let m = id("gemma");
    h.world.script(&m, Script::ready_after(s(3.0)));

    h.sup
        .start(spec("gemma").with_served_name("gemma-3"))
        .await
        .unwrap();
    // Probes at 0, 0.25, 0.75, 1.75, 3.75 s: ready is seen at the first probe after 3 s.
    assert_eq!(h.elapsed(), s(3.75));
    let status = h.status(&m);
    assert_eq!(status.state, ModelState::Running);
    assert_eq!(status.served_name, "gemma-3");
    assert!(status.replicas[0].registered);
    assert_eq!(status.replicas[0].health, Some(HealthStatus::Ready));

    let endpoints = h.sup.registry().resolve("gemma-3").expect("registered");
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0];
    let instance = h.world.live()[0].clone();
    assert_eq!(endpoint.instance, instance);
    let plan = h.world.plan_of(&instance).unwrap();
    assert_eq!(endpoint.base_url.port_u16(), Some(plan.port));
    assert_ne!(plan.port, 0);
    assert_eq!(plan.labels[labels::MANAGED_BY], labels::MANAGED_BY_VALUE);
    assert_eq!(plan.labels[labels::MODEL_ID], "gemma");
    assert_eq!(plan.labels[labels::REPLICA], "0");
    assert_eq!(plan.labels[labels::ENGINE], KIND);

    let events = h.drain();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match &e.kind {
            EventKind::StateChanged { .. } => "state",
            EventKind::Planned { .. } => "planned",
            EventKind::InstanceStarted { .. } => "started",
            EventKind::Health { .. } => "health",
            EventKind::Registered { .. } => "registered",
            _ => "other",
        })
        .collect();
    // Loading is reported once (not at every poll), then ready.
    assert_eq!(
        kinds,
        [
            "state",
            "planned",
            "started",
            "health",
            "health",
            "registered",
            "state"
        ]
    );
    assert!(
        matches!(&events[1].kind, EventKind::Planned { command, .. } if command.starts_with("fake-fake --port "))
    );

    h.sup.stop(&m).await.unwrap();
    assert_eq!(h.status(&m).state, ModelState::Stopped);
    assert!(h.sup.registry().resolve("gemma-3").is_none());
    assert!(h.world.live().is_empty(), "nothing left running");
    // The replica's status says so too: not registered, not ready.
    let replica = &h.status(&m).replicas[0];
    assert!(!replica.registered);
    assert_eq!(
        replica.health,
        Some(HealthStatus::Down {
            reason: "stopped".into()
        })
    );
    // Deregistered before the stop began, and stopped with the plan's grace period.
    assert_eq!(h.stops(), [(instance, s(5.0), false)]);
    let after: Vec<&str> = h
        .drain()
        .iter()
        .map(|e| match &e.kind {
            EventKind::StateChanged { to, .. } => to.name(),
            EventKind::Deregistered { .. } => "deregistered",
            EventKind::InstanceStopped { .. } => "instance_stopped",
            _ => "other",
        })
        .collect();
    assert_eq!(
        after,
        ["stopping", "deregistered", "instance_stopped", "stopped"]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn crash_during_load_fails_with_the_log_tail_and_leaves_nothing() {
    let mut h = Harness::new();
    let m = id("crashy");
    let logs: Vec<String> = (0..60).map(|i| format!("line {i}")).collect();
    h.world.script(
        &m,
        Script::never_ready()
            .with_exit_after(s(3.0), 1)
            .with_logs(logs),
    );

    let err = h.sup.start(spec("crashy")).await.unwrap_err();
    let SupervisorError::Failed {
        reason, log_tail, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(reason, "replica 0 exited while starting, with exit code 1");
    assert_eq!(log_tail.len(), 50, "the last 50 lines");
    assert_eq!(log_tail[0].line, "line 10");
    assert_eq!(log_tail[49].line, "line 59");
    assert_eq!(
        h.elapsed(),
        s(3.0),
        "the exit is seen at once, not at the next probe"
    );

    let ModelState::Failed {
        reason: r2,
        log_tail: t2,
    } = h.status(&m).state
    else {
        panic!()
    };
    assert_eq!(&r2, reason);
    assert_eq!(&t2, log_tail);
    assert!(h.world.live().is_empty(), "the exited instance was removed");
    assert_eq!(h.sup.registry().snapshot().version, 0, "never registered");
    assert_eq!(h.transitions(&m), ["stopped>starting", "starting>failed"]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn startup_timeout_fails_and_stops_the_instance() {
    let mut h = Harness::new();
    let m = id("slow");
    h.world
        .script(&m, Script::never_ready().with_logs(["loading tensors"]));

    let err = h
        .sup
        .start(spec("slow").with_startup_timeout(s(30.0)))
        .await
        .unwrap_err();
    assert_eq!(h.elapsed(), s(30.0));
    let SupervisorError::Failed {
        reason, log_tail, ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(
        reason,
        "replica 0 was not ready after 30s (last probe: loading (Loading model))"
    );
    assert_eq!(log_tail.len(), 1);
    assert_eq!(h.stops().len(), 1);
    assert!(h.world.live().is_empty());
    assert_eq!(h.transitions(&m), ["stopped>starting", "starting>failed"]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn flapping_health_deregisters_after_three_failures_and_recovers() {
    let mut h = Harness::new();
    let m = id("flappy");
    h.sup.start(spec("flappy")).await.unwrap();
    let instance = h.world.live()[0].clone();
    let down = HealthStatus::down("/health answered 500");
    let failures = |h: &Harness| h.status(&m).replicas[0].consecutive_failures;

    // One failure, then a pass: the count resets and the endpoint never leaves.
    h.world.set_health(&instance, Some(down.clone()));
    h.at(s(15.1)).await;
    assert_eq!(failures(&h), 1);
    assert!(h.sup.registry().resolve("flappy").is_some());
    h.world.set_health(&instance, None);
    h.at(s(30.1)).await;
    assert_eq!(failures(&h), 0);

    // Two failures in a row: still registered.
    h.world.set_health(&instance, Some(down.clone()));
    h.at(s(60.1)).await;
    assert_eq!(failures(&h), 2);
    assert_eq!(h.status(&m).state, ModelState::Running);
    assert!(h.sup.registry().resolve("flappy").is_some());

    // The third: out of the registry, and the state says why.
    h.at(s(75.1)).await;
    assert!(h.sup.registry().resolve("flappy").is_none());
    let ModelState::Unhealthy {
        healthy,
        replicas,
        reason,
    } = h.status(&m).state
    else {
        panic!("{:?}", h.status(&m).state)
    };
    assert_eq!((healthy, replicas), (0, 1));
    assert_eq!(
        reason,
        "replica 0: 3 probes failed in a row (last: down: /health answered 500)"
    );
    assert!(!h.status(&m).replicas[0].registered);

    // Recovery: back in the registry at the next passing probe.
    h.world.set_health(&instance, None);
    h.at(s(90.1)).await;
    assert_eq!(h.status(&m).state, ModelState::Running);
    assert_eq!(
        h.sup.registry().resolve("flappy").unwrap()[0].instance,
        instance
    );
    assert_eq!(
        h.transitions(&m),
        [
            "stopped>starting",
            "starting>running",
            "running>unhealthy",
            "unhealthy>running"
        ]
    );
    assert_eq!(
        h.starts().len(),
        1,
        "health failures never restart the instance"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hanging_probes_count_as_failures_after_the_probe_timeout() {
    let h = Harness::new();
    let m = id("hang");
    h.sup.start(spec("hang")).await.unwrap();
    let instance = h.world.live()[0].clone();
    h.world.hang_probes(&instance, true);
    // Ticks at 15, 30, 45 s; each probe gives up 5 s later.
    h.at(s(50.1)).await;
    let ModelState::Unhealthy { reason, .. } = h.status(&m).state else {
        panic!()
    };
    assert_eq!(
        reason,
        "replica 0: 3 probes failed in a row (last: down: probe timed out after 5s)"
    );

    // An unhealthy model stops like a running one.
    h.sup.stop(&m).await.unwrap();
    assert_eq!(h.status(&m).state, ModelState::Stopped);
    assert!(h.world.live().is_empty());
    assert_eq!(h.stops().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stop_during_start_cancels_the_start() {
    let mut h = Harness::new();
    let m = id("cancel");
    h.world.script(&m, Script::ready_after(s(100.0)));

    let start = tokio::spawn({
        let sup = h.sup.clone();
        async move { sup.start(spec("cancel")).await }
    });
    h.at(s(5.0)).await;
    assert_eq!(h.status(&m).state, ModelState::Starting);
    h.sup.stop(&m).await.unwrap();
    assert_eq!(
        h.elapsed(),
        s(5.0),
        "the stop does not wait for the start to finish"
    );
    let err = start.await.unwrap().unwrap_err();
    assert!(
        matches!(err, SupervisorError::StartCancelled { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "start of model cancel was cancelled by a stop"
    );
    assert!(h.world.live().is_empty());
    assert_eq!(h.stops().len(), 1);
    assert_eq!(h.sup.registry().snapshot().version, 0);
    assert_eq!(
        h.transitions(&m),
        ["stopped>starting", "starting>stopping", "stopping>stopped"]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stop_while_the_runtime_is_still_starting_stops_what_it_started() {
    let h = Harness::new();
    let m = id("mid");
    h.world
        .script(&m, Script::default().with_start_delay(s(10.0)));
    let start = tokio::spawn({
        let sup = h.sup.clone();
        async move { sup.start(spec("mid")).await }
    });
    h.at(s(2.0)).await;
    h.sup.stop(&m).await.unwrap();
    // The runtime's start is never abandoned half-way: the stop waits for it, then removes it.
    assert_eq!(h.elapsed(), s(10.0));
    assert!(matches!(
        start.await.unwrap(),
        Err(SupervisorError::StartCancelled { .. })
    ));
    assert_eq!(h.starts().len(), 1);
    assert_eq!(h.stops().len(), 1);
    assert!(h.world.live().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn two_models_start_concurrently() {
    let h = Harness::new();
    let (a, b) = (id("a"), id("b"));
    h.world.script(&a, Script::ready_after(s(10.0)));
    h.world.script(&b, Script::ready_after(s(20.0)));

    let (ra, rb) = tokio::join!(h.sup.start(spec("a")), h.sup.start(spec("b")));
    ra.unwrap();
    rb.unwrap();
    // Serialized, they would take 30 s or more.
    assert!(h.elapsed() < s(22.0), "{:?}", h.elapsed());
    let ea = h.sup.registry().resolve("a").unwrap();
    let eb = h.sup.registry().resolve("b").unwrap();
    assert_ne!(ea[0].base_url, eb[0].base_url, "distinct ports");
    let states: Vec<_> = h
        .sup
        .list()
        .into_iter()
        .map(|s| (s.id.to_string(), s.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a".into(), ModelState::Running),
            ("b".into(), ModelState::Running)
        ]
    );
    assert!(h.sup.shutdown().await.is_empty());
    assert!(h.world.live().is_empty());
    assert_eq!(h.sup.registry().snapshot().endpoint_count(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_second_start_is_refused() {
    let h = Harness::new();
    let m = id("once");
    h.world.script(&m, Script::ready_after(s(10.0)));
    let first = tokio::spawn({
        let sup = h.sup.clone();
        async move { sup.start(spec("once")).await }
    });
    h.at(s(1.0)).await;
    let err = h.sup.start(spec("once")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            SupervisorError::AlreadyStarted {
                state: ModelState::Starting,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "model once is already starting");

    first.await.unwrap().unwrap();
    let err = h.sup.start(spec("once")).await.unwrap_err();
    assert_eq!(err.to_string(), "model once is already running");
    assert_eq!(h.starts().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_start_during_stopping_waits_for_the_stop() {
    let h = Harness::new();
    let m = id("serial");
    h.world
        .script(&m, Script::default().with_stop_delay(s(10.0)));
    h.sup.start(spec("serial")).await.unwrap();
    let old = h.world.live()[0].clone();

    let stop = tokio::spawn({
        let (sup, m) = (h.sup.clone(), m.clone());
        async move { sup.stop(&m).await }
    });
    h.at(s(1.0)).await;
    assert_eq!(h.status(&m).state, ModelState::Stopping);
    h.sup.start(spec("serial")).await.unwrap();
    stop.await.unwrap().unwrap();

    assert!(h.elapsed() >= s(10.0), "the new start waited for the stop");
    let calls = h.world.calls();
    let order: Vec<&str> = calls
        .iter()
        .map(|c| match c {
            Call::Start { .. } => "start",
            Call::Stop { .. } => "stop",
            _ => "other",
        })
        .collect();
    assert_eq!(order, ["start", "stop", "start"]);
    let live = h.world.live();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0], old);
    assert_eq!(h.status(&m).state, ModelState::Running);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_exit_while_running_fails_without_restart_by_default() {
    let mut h = Harness::new();
    let m = id("dies");
    h.world.script(
        &m,
        Script::default().with_logs(["ggml_cuda_init: out of memory"]),
    );
    h.sup.start(spec("dies")).await.unwrap();
    let instance = h.world.live()[0].clone();

    h.at(s(7.0)).await;
    h.world.kill(&instance, 137);
    let state = state_where(&h.sup, &m, ModelState::is_terminal).await;
    let ModelState::Failed { reason, log_tail } = state else {
        panic!("{state:?}")
    };
    assert_eq!(reason, "replica 0 exited with exit code 137");
    assert_eq!(log_tail[0].line, "ggml_cuda_init: out of memory");
    assert_eq!(h.elapsed(), s(7.0), "seen at once, not at the next probe");
    assert!(h.sup.registry().resolve("dies").is_none());
    assert!(h.world.live().is_empty());
    assert_eq!(h.starts().len(), 1, "no restart");
    assert_eq!(
        h.transitions(&m),
        ["stopped>starting", "starting>running", "running>failed"]
    );

    // A failed model can be cleared by stop, and started again.
    h.sup.stop(&m).await.unwrap();
    assert_eq!(h.status(&m).state, ModelState::Stopped);
    h.sup.start(spec("dies")).await.unwrap();
    assert_eq!(h.starts().len(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_restart_policy_restarts_then_gives_up() {
    let mut h = Harness::new();
    let m = id("phoenix");
    let spec = spec("phoenix").with_restart(RestartPolicy::on_failure(2, s(5.0)));
    h.sup.start(spec).await.unwrap();

    for attempt in 1..=2 {
        let current = h.world.live_of(&m)[0].clone();
        h.world.kill(&current, 1);
        let state = state_where(&h.sup, &m, |st| matches!(st, ModelState::Unhealthy { .. })).await;
        let ModelState::Unhealthy {
            reason, healthy: 0, ..
        } = state
        else {
            panic!("{state:?}")
        };
        assert_eq!(
            reason,
            format!("replica 0 exited with exit code 1; restarting (attempt {attempt} of 2)")
        );
        assert!(h.sup.registry().resolve("phoenix").is_none());
        let t = Instant::now();
        state_where(&h.sup, &m, |st| *st == ModelState::Running).await;
        assert!(t.elapsed() >= s(5.0), "restarts wait for the backoff");
        let now = h.world.live_of(&m);
        assert_eq!(now.len(), 1);
        assert_ne!(now[0], current);
        assert_eq!(
            h.sup.registry().resolve("phoenix").unwrap()[0].instance,
            now[0]
        );
        assert_eq!(h.status(&m).replicas[0].restarts, attempt);
    }
    let current = h.world.live_of(&m)[0].clone();
    h.world.kill(&current, 1);
    let state = state_where(&h.sup, &m, ModelState::is_terminal).await;
    assert!(
        matches!(&state, ModelState::Failed { reason, .. } if reason == "replica 0 exited with exit code 1")
    );
    assert_eq!(h.starts().len(), 3);
    assert!(h.world.live().is_empty());
    let restarting = h
        .drain()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Restarting { .. }))
        .count();
    assert_eq!(restarting, 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stop_during_a_restart_backoff_leaves_nothing() {
    let h = Harness::new();
    let m = id("rb");
    h.sup
        .start(spec("rb").with_restart(RestartPolicy::on_failure(5, s(60.0))))
        .await
        .unwrap();
    h.world.kill(&h.world.live()[0].clone(), 1);
    h.at(s(10.0)).await;
    h.sup.stop(&m).await.unwrap();
    assert_eq!(h.status(&m).state, ModelState::Stopped);
    assert_eq!(h.starts().len(), 1, "the pending restart was abandoned");
    assert!(h.world.live().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refused_plan_starts_nothing() {
    let engine = FakeEngine::new(KIND).refusing([Diagnostic::error(
        "settings.cache_type_v",
        "a quantized V cache needs flash attention",
    )
    .with_suggestion("set flash_attn = \"on\"")]);
    let h = Harness::with(FakeWorld::new(), engine);
    let m = id("bad");
    let err = h.sup.start(spec("bad")).await.unwrap_err();
    assert!(matches!(err, SupervisorError::Plan { .. }), "{err}");
    let ModelState::Failed { reason, .. } = h.status(&m).state else {
        panic!()
    };
    assert_eq!(
        reason,
        "invalid settings for model bad:\nerror: settings.cache_type_v: a quantized V cache needs flash attention (set flash_attn = \"on\")"
    );
    assert!(h.world.calls().is_empty(), "the runtime was never asked");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_runtime_start_error_fails_the_model() {
    let h = Harness::new();
    let m = id("noimage");
    h.world.script(
        &m,
        Script::start_error("image cortex/llama-server:b11434 not found"),
    );
    let err = h.sup.start(spec("noimage")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "model noimage failed to start: replica 0 could not be started: cannot start replica 0 of \
         model noimage: image cortex/llama-server:b11434 not found"
    );
    assert!(h.world.live().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_unknown_engine_or_model_is_a_clear_error() {
    let h = Harness::new();
    let mut other = spec("x");
    other.engine = "tgi".into();
    let err = h.sup.start(other).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "model x asks for engine \"tgi\", which this supervisor does not have (known: fake)"
    );
    assert!(h.sup.status(&id("x")).is_none());
    let err = h.sup.stop(&id("nope")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "model nope is not managed by this supervisor"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn replicas_register_each_and_one_failure_stops_them_all() {
    let h = Harness::new();
    let ok = id("pair");
    h.sup
        .start(spec("pair").with_replicas(NonZeroU32::new(2).unwrap()))
        .await
        .unwrap();
    let eps = h.sup.registry().resolve("pair").unwrap();
    assert_eq!(eps.len(), 2);
    assert_ne!(eps[0].base_url.port_u16(), eps[1].base_url.port_u16());
    assert_eq!(h.status(&ok).replicas.len(), 2);
    h.sup.stop(&ok).await.unwrap();
    assert!(h.stops().iter().all(|(_, _, registered)| !registered));

    let m = id("trio");
    h.world.script_replica(&m, 0, Script::ready_after(s(1.0)));
    h.world
        .script_replica(&m, 1, Script::never_ready().with_exit_after(s(5.0), 2));
    h.world.script_replica(&m, 2, Script::never_ready());
    let err = h
        .sup
        .start(spec("trio").with_replicas(NonZeroU32::new(3).unwrap()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "model trio failed to start: replica 1 exited while starting, with exit code 2"
    );
    assert_eq!(
        h.elapsed(),
        s(5.0),
        "the others were cancelled, not waited for"
    );
    assert!(
        h.world.live().is_empty(),
        "the ready and the loading replicas were stopped too"
    );
    assert!(h.sup.registry().resolve("trio").is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_replica_down_leaves_the_others_serving() {
    let h = Harness::new();
    let m = id("half");
    h.sup
        .start(spec("half").with_replicas(NonZeroU32::new(2).unwrap()))
        .await
        .unwrap();
    let sick = h.world.live_of(&m)[1].clone();
    h.world
        .set_health(&sick, Some(HealthStatus::down("connection refused")));
    h.at(s(45.1)).await;
    let eps = h.sup.registry().resolve("half").unwrap();
    assert_eq!(eps.len(), 1);
    assert_ne!(eps[0].instance, sick);
    let ModelState::Unhealthy {
        healthy: 1,
        replicas: 2,
        ..
    } = h.status(&m).state
    else {
        panic!()
    };
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failed_stop_is_reported() {
    let h = Harness::new();
    let m = id("stuck");
    h.world
        .script(&m, Script::default().with_stop_error("container is paused"));
    h.sup.start(spec("stuck")).await.unwrap();
    let err = h.sup.stop(&m).await.unwrap_err();
    assert!(matches!(err, SupervisorError::StopFailed { .. }));
    let ModelState::Failed { reason, .. } = h.status(&m).state else {
        panic!()
    };
    assert!(
        reason.starts_with(
            "stop failed: replica 0 (fake-1): stop of instance fake-1 failed: container is paused"
        ),
        "{reason}"
    );
    assert!(
        h.sup.registry().resolve("stuck").is_none(),
        "deregistered all the same"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_model_whose_stop_failed_is_not_started_over_its_instances() {
    let h = Harness::new();
    let m = id("stuck");
    h.world
        .script(&m, Script::default().with_stop_error("container is paused"));
    h.sup.start(spec("stuck")).await.unwrap();
    let first = h.world.live_of(&m);
    assert_eq!(first.len(), 1);
    assert!(matches!(
        h.sup.stop(&m).await,
        Err(SupervisorError::StopFailed { .. })
    ));
    // The instance may still run: a start is refused, saying why, and starts nothing.
    h.world.script(&m, Script::default());
    let err = h.sup.start(spec("stuck")).await.unwrap_err();
    assert!(matches!(err, SupervisorError::NotStopped { .. }), "{err}");
    assert!(err.to_string().contains("container is paused"), "{err}");
    assert_eq!(h.world.live_of(&m), first, "nothing new was started");
    // A stop that fails again keeps the refusal; one that succeeds lifts it.
    assert!(matches!(
        h.sup.stop(&m).await,
        Err(SupervisorError::StopFailed { .. })
    ));
    assert!(matches!(
        h.sup.start(spec("stuck")).await,
        Err(SupervisorError::NotStopped { .. })
    ));
    h.world.set_stop_error(&first[0], None);
    h.sup.stop(&m).await.unwrap();
    assert!(h.world.live_of(&m).is_empty());
    assert_eq!(h.status(&m).state, ModelState::Stopped);
    h.sup.start(spec("stuck")).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn container_targets_use_the_engine_port() {
    let world = FakeWorld::new().with_target(TargetKind::Container);
    let h = Harness::with(world, FakeEngine::new(KIND));
    let m = id("boxed");
    h.sup
        .start(spec("boxed").with_replicas(NonZeroU32::new(2).unwrap()))
        .await
        .unwrap();
    for instance in h.world.live_of(&m) {
        let plan = h.world.plan_of(&instance).unwrap();
        assert_eq!(plan.port, 8080);
        assert!(
            matches!(&plan.target, Target::Container { name, .. } if name == "fake-model-boxed")
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_spec_startup_timeout_overrides_the_engine_default() {
    let h = Harness::new();
    let m = id("t");
    h.world.script(&m, Script::never_ready());
    // The fake engine's default is 60 s.
    let _ = h
        .sup
        .start(spec("t").with_startup_timeout(s(12.0)))
        .await
        .unwrap_err();
    assert_eq!(h.elapsed(), s(12.0));
    h.world.script(&m, Script::never_ready());
    let t = Instant::now();
    let _ = h.sup.start(spec("t")).await.unwrap_err();
    assert_eq!(t.elapsed(), s(60.0));
    sleep(s(0.0)).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_panicking_runtime_fails_the_model_instead_of_hanging() {
    let h = Harness::new();
    let m = id("buggy");
    h.world.script(&m, Script::default().with_start_panic());
    let err = h.sup.start(spec("buggy")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "model buggy failed to start: internal error: the model's task panicked: scripted panic in \
         FakeRuntime::start; its instances may still run"
    );
    // A stop reports that the model could not be cleaned up, rather than claiming success.
    assert!(matches!(
        h.sup.stop(&m).await,
        Err(SupervisorError::StopFailed { .. })
    ));
}

/// An engine whose planning blocks (a GGUF header on a slow disk) does not stall the executor:
/// other tasks on a one-thread runtime keep running while it plans.
#[tokio::test(flavor = "current_thread")]
async fn planning_runs_off_the_async_executor() {
    let h = Harness::with(
        FakeWorld::new(),
        FakeEngine::new(KIND).with_plan_delay(Duration::from_millis(400)),
    );
    let ticks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ticker = tokio::spawn({
        let ticks = Arc::clone(&ticks);
        async move {
            loop {
                ticks.lock().unwrap().push(std::time::Instant::now());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    tokio::task::yield_now().await;
    h.sup.start(spec("slow-plan")).await.unwrap();
    ticker.abort();
    let ticks = ticks.lock().unwrap();
    let longest = ticks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest < Duration::from_millis(200),
        "the executor stalled for {longest:?} while the engine planned"
    );
}

/// An exited instance whose removal is slow (a runtime that takes its grace period to clean up)
/// does not hold the model up: the other replica is still probed meanwhile, and a stop request
/// is acted on at once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slow_cleanup_after_an_exit_stalls_neither_probes_nor_a_stop() {
    let mut h = Harness::new();
    let m = id("slowgone");
    h.world
        .script_replica(&m, 0, Script::default().with_stop_delay(s(120.0)));
    h.sup
        .start(
            spec("slowgone")
                .with_replicas(NonZeroU32::new(2).unwrap())
                .with_restart(RestartPolicy::on_failure(3, s(1.0))),
        )
        .await
        .unwrap();
    let first = h.status(&m).replicas[0].instance.clone().unwrap();
    let second = h.status(&m).replicas[1].instance.clone().unwrap();
    h.drain();
    let killed_at = h.elapsed();
    h.world.kill(&first, 1);

    // While replica 0's instance is being removed (120 s), replica 1 is probed as usual: a change
    // of its health is seen at the next probe.
    h.at(killed_at + s(1.0)).await;
    h.world
        .set_health(&second, Some(HealthStatus::down("overheated")));
    h.at(killed_at + s(40.0)).await;
    let seen = h.drain().iter().any(|e| {
        matches!(&e.kind, EventKind::Health { replica: 1, status: HealthStatus::Down { reason }, .. } if reason == "overheated")
    });
    assert!(
        seen,
        "replica 1 was not probed while replica 0 was being removed"
    );

    // And a stop is acted on at once: the model is Stopping within a second.
    let stop = tokio::spawn({
        let sup = h.sup.clone();
        let m = m.clone();
        async move { sup.stop(&m).await }
    });
    let asked = Instant::now();
    state_where(&h.sup, &m, |st| *st == ModelState::Stopping).await;
    assert!(
        asked.elapsed() < s(1.0),
        "the stop waited {:?} for the slow cleanup",
        asked.elapsed()
    );
    stop.await.unwrap().unwrap();
    assert_eq!(h.status(&m).state, ModelState::Stopped);
    assert!(h.world.live_of(&m).is_empty());
}

/// A plan's aliases (vLLM's LoRA adapters) are registered with the served name when the replica
/// is ready, and deregistered with it when it exits or stops.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aliases_are_registered_and_deregistered_with_the_served_name() {
    let h = Harness::with(
        FakeWorld::new(),
        FakeEngine::new(KIND).with_aliases(["sql", "chat"]),
    );
    let m = id("base");
    h.world.script(&m, Script::ready_after(s(1.0)));
    h.sup.start(spec("base")).await.unwrap();
    let instance = h.world.live()[0].clone();
    for name in ["base", "sql", "chat"] {
        let endpoints = h.sup.registry().resolve(name).expect(name);
        assert_eq!(endpoints.len(), 1, "{name}");
        assert_eq!(endpoints[0].instance, instance, "{name}");
        assert_eq!(&*endpoints[0].served_name, name);
        assert_eq!(endpoints[0].model, m);
    }
    // An exit takes every name away at once.
    h.world.kill(&instance, 1);
    state_where(&h.sup, &m, ModelState::is_terminal).await;
    for name in ["base", "sql", "chat"] {
        assert!(h.sup.registry().resolve(name).is_none(), "{name}");
    }
    // And a stop, after a start again.
    h.sup.stop(&m).await.unwrap();
    h.world.script(&m, Script::ready_after(s(1.0)));
    h.sup.start(spec("base")).await.unwrap();
    assert!(h.sup.registry().resolve("sql").is_some());
    h.sup.stop(&m).await.unwrap();
    for name in ["base", "sql", "chat"] {
        assert!(h.sup.registry().resolve(name).is_none(), "{name}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stop_waits_for_the_drain_between_deregistering_and_stopping() {
    // The drain of each endpoint resolves when the test says so (a request finishing).
    let (release, released) = tokio::sync::watch::channel(false);
    let drains = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&drains);
    let world = FakeWorld::new();
    let mut config = SupervisorConfig::default();
    config.drain_timeout = s(60.0);
    let sup = Supervisor::builder(Arc::new(world.runtime()), Arc::new(world.probe()))
        .engine(Arc::new(FakeEngine::new(KIND)))
        .config(config)
        .drain(Arc::new(move |_: &cortex_core::Endpoint| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut released = released.clone();
            Box::pin(async move {
                let _ = released.wait_for(|r| *r).await;
            }) as cortex_core::supervisor::Drained
        }))
        .build();
    world.observe_registry(sup.registry().clone());
    let m = id("gemma");
    world.script(&m, Script::ready_after(s(1.0)));
    sup.start(spec("gemma")).await.unwrap();
    let instance = world.live()[0].clone();

    let stopping = tokio::spawn({
        let sup = sup.clone();
        let m = m.clone();
        async move { sup.stop(&m).await }
    });
    sleep(s(10.0)).await;
    // Out of the registry at once, but still running: a request holds it.
    assert!(sup.registry().resolve("gemma").is_none());
    assert_eq!(world.live(), std::slice::from_ref(&instance));
    assert_eq!(sup.status(&m).unwrap().state, ModelState::Stopping);
    assert_eq!(drains.load(std::sync::atomic::Ordering::SeqCst), 1);
    let t = Instant::now();
    release.send(true).unwrap();
    stopping.await.unwrap().unwrap();
    assert!(world.live().is_empty());
    assert!(t.elapsed() < s(1.0), "stopped once drained");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_drain_that_never_ends_is_cut_by_the_drain_timeout() {
    let world = FakeWorld::new();
    let mut config = SupervisorConfig::default();
    config.drain_timeout = s(7.0);
    let sup = Supervisor::builder(Arc::new(world.runtime()), Arc::new(world.probe()))
        .engine(Arc::new(FakeEngine::new(KIND)))
        .config(config)
        .drain(Arc::new(|_: &cortex_core::Endpoint| {
            Box::pin(std::future::pending()) as cortex_core::supervisor::Drained
        }))
        .build();
    world.observe_registry(sup.registry().clone());
    let m = id("gemma");
    world.script(&m, Script::ready_after(s(1.0)));
    sup.start(spec("gemma")).await.unwrap();
    let t = Instant::now();
    sup.stop(&m).await.unwrap();
    assert!(world.live().is_empty());
    let took = t.elapsed();
    assert!(took >= s(7.0) && took < s(8.0), "{took:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fingerprints_tell_a_changed_plan_from_an_unchanged_one() {
    let h = Harness::new();
    let base = h.sup.fingerprints(&spec("gemma")).await.unwrap();
    assert_eq!(base.len(), 1);
    // The port is chosen afresh each time; the fingerprint does not see it.
    assert_eq!(h.sup.fingerprints(&spec("gemma")).await.unwrap(), base);
    // The fake engine passes `args` through: a changed argument is a changed plan.
    let mut changed = spec("gemma");
    changed.args.push("--ctx-size=8192".into());
    assert_ne!(h.sup.fingerprints(&changed).await.unwrap(), base);
    let mut two = spec("gemma");
    two.replicas = NonZeroU32::new(2).unwrap();
    assert_eq!(h.sup.fingerprints(&two).await.unwrap().len(), 2);
    // Nothing was started.
    assert!(h.world.live().is_empty());
    assert!(h.starts().is_empty());
}
