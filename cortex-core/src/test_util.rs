//! Scripted fakes of an [`Engine`], a [`Runtime`] and a [`HealthProbe`], for tests of code built on
//! the [`Supervisor`](crate::Supervisor).
//!
//! A [`FakeWorld`] holds the instances; its [`runtime`](FakeWorld::runtime) and
//! [`probe`](FakeWorld::probe) share them. Each start of a model takes the next [`Script`] queued for
//! it (or a default one: ready at once, never exits), which says when the instance becomes ready,
//! whether and when it exits, and what it logs. Tests then drive faults by hand
//! ([`kill`](FakeWorld::kill), [`set_health`](FakeWorld::set_health)) and read back what the runtime
//! was asked to do ([`calls`](FakeWorld::calls), [`live`](FakeWorld::live)).
//!
//! Time is tokio's, so tests run under `start_paused = true` and step the clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::{
    Diagnostic, Diagnostics, Engine, EngineKind, Exit, HealthProbe, HealthSpec, HealthStatus,
    Instance, InstanceId, InstanceInfo, InstanceState, LaunchPlan, LogLine, LogSource, LogStream,
    ModelId, ModelSpec, PlanContext, PlanError, Planned, Registry, Runtime, RuntimeError, Target,
    TargetKind,
};

/// How one fake instance behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Script {
    /// `Runtime::start` fails with this message instead of starting anything.
    pub start_error: Option<String>,
    /// How long `Runtime::start` takes.
    pub start_delay: Duration,
    /// When probes start answering ready; `None`: never (loading forever).
    pub ready_after: Option<Duration>,
    /// When the instance exits by itself, and with which code.
    pub exit_after: Option<(Duration, i32)>,
    /// The lines it writes at start.
    pub logs: Vec<String>,
    /// How long `Runtime::stop` takes.
    pub stop_delay: Duration,
    /// `Runtime::stop` fails with this message.
    pub stop_error: Option<String>,
    /// `Runtime::start` panics, as a buggy runtime implementation would.
    pub start_panic: bool,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            start_error: None,
            start_delay: Duration::ZERO,
            ready_after: Some(Duration::ZERO),
            exit_after: None,
            logs: Vec::new(),
            stop_delay: Duration::ZERO,
            stop_error: None,
            start_panic: false,
        }
    }
}

// === impl Script ===

impl Script {
    /// Ready after `d`.
    pub fn ready_after(d: Duration) -> Self {
        Self {
            ready_after: Some(d),
            ..Self::default()
        }
    }

    /// Loading forever.
    pub fn never_ready() -> Self {
        Self {
            ready_after: None,
            ..Self::default()
        }
    }

    /// `Runtime::start` fails with `message`.
    pub fn start_error(message: impl Into<String>) -> Self {
        Self {
            start_error: Some(message.into()),
            ..Self::default()
        }
    }

    /// Sets when it becomes ready (`None`: never).
    pub fn with_ready_after(mut self, d: Option<Duration>) -> Self {
        self.ready_after = d;
        self
    }

    /// Exits with `code` after `d`.
    pub fn with_exit_after(mut self, d: Duration, code: i32) -> Self {
        self.exit_after = Some((d, code));
        self
    }

    /// Writes these lines.
    pub fn with_logs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, lines: I) -> Self {
        self.logs = lines.into_iter().map(Into::into).collect();
        self
    }

    /// `Runtime::start` takes `d`.
    pub fn with_start_delay(mut self, d: Duration) -> Self {
        self.start_delay = d;
        self
    }

    /// `Runtime::stop` takes `d`.
    pub fn with_stop_delay(mut self, d: Duration) -> Self {
        self.stop_delay = d;
        self
    }

    /// `Runtime::start` panics.
    pub fn with_start_panic(mut self) -> Self {
        self.start_panic = true;
        self
    }

    /// `Runtime::stop` fails with `message`.
    pub fn with_stop_error(mut self, message: impl Into<String>) -> Self {
        self.stop_error = Some(message.into());
        self
    }
}

/// One thing the fake runtime was asked to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `start` of a plan; `instance` is `None` when the script made it fail.
    Start {
        /// The model.
        model: ModelId,
        /// The replica.
        replica: u32,
        /// The instance started.
        instance: Option<InstanceId>,
    },
    /// `stop` of an instance.
    Stop {
        /// The instance.
        instance: InstanceId,
        /// The grace period asked for.
        grace: Duration,
        /// Whether its endpoint was still in the observed registry when the stop began.
        was_registered: bool,
    },
}

/// The shared state of fake instances; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct FakeWorld {
    inner: Arc<Mutex<World>>,
}

#[derive(Debug, Default)]
struct World {
    next_id: u64,
    scripts: HashMap<(ModelId, Option<u32>), VecDeque<Script>>,
    instances: HashMap<InstanceId, FakeInstance>,
    calls: Vec<Call>,
    target: Option<TargetKind>,
    observed: Option<Arc<dyn Registry>>,
}

#[derive(Debug)]
struct FakeInstance {
    plan: LaunchPlan,
    script: Script,
    started: Instant,
    exit: watch::Sender<Option<Exit>>,
    health: Option<HealthStatus>,
    hang_probes: bool,
    removed: bool,
}

// === impl FakeWorld ===

impl FakeWorld {
    /// An empty world whose runtime starts processes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the runtime say it starts containers.
    pub fn with_target(self, target: TargetKind) -> Self {
        self.lock().target = Some(target);
        self
    }

    /// Records, at each stop, whether the instance's endpoint was still registered in `registry`.
    pub fn observe_registry(&self, registry: Arc<dyn Registry>) {
        self.lock().observed = Some(registry);
    }

    /// The runtime of this world.
    pub fn runtime(&self) -> FakeRuntime {
        FakeRuntime {
            world: self.clone(),
        }
    }

    /// The probe of this world.
    pub fn probe(&self) -> FakeProbe {
        FakeProbe {
            world: self.clone(),
        }
    }

    /// Queues the script for the next start of any replica of `model`.
    pub fn script(&self, model: &ModelId, script: Script) {
        self.lock()
            .scripts
            .entry((model.clone(), None))
            .or_default()
            .push_back(script);
    }

    /// Queues the script for the next start of one replica of `model`; it takes precedence over
    /// scripts queued with [`script`](Self::script).
    pub fn script_replica(&self, model: &ModelId, replica: u32, script: Script) {
        self.lock()
            .scripts
            .entry((model.clone(), Some(replica)))
            .or_default()
            .push_back(script);
    }

    /// Instances started and not yet stopped, exited ones included, by id.
    pub fn live(&self) -> Vec<InstanceId> {
        let mut ids: Vec<_> = self
            .lock()
            .instances
            .iter()
            .filter(|(_, i)| !i.removed)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Instances of `model` started and not yet stopped.
    pub fn live_of(&self, model: &ModelId) -> Vec<InstanceId> {
        let world = self.lock();
        let mut ids: Vec<_> = world
            .instances
            .iter()
            .filter(|(_, i)| !i.removed && &i.plan.model == model)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Everything the runtime was asked, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The plan an instance was started from.
    pub fn plan_of(&self, id: &InstanceId) -> Option<LaunchPlan> {
        self.lock().instances.get(id).map(|i| i.plan.clone())
    }

    /// Makes the instance exit with `code` now, as a crash would.
    pub fn kill(&self, id: &InstanceId, code: i32) {
        if let Some(i) = self.lock().instances.get(id) {
            i.exit
                .send_if_modified(|e| e.is_none().then(|| *e = Some(Exit::code(code))).is_some());
        }
    }

    /// Makes later stops of the instance fail with `error`, or succeed (`None`).
    pub fn set_stop_error(&self, id: &InstanceId, error: Option<String>) {
        if let Some(i) = self.lock().instances.get_mut(id) {
            i.script.stop_error = error;
        }
    }

    /// Overrides what probes of the instance answer; `None` returns to the script.
    pub fn set_health(&self, id: &InstanceId, health: Option<HealthStatus>) {
        if let Some(i) = self.lock().instances.get_mut(id) {
            i.health = health;
        }
    }

    /// Makes probes of the instance hang (never answer) until called again with `false`.
    pub fn hang_probes(&self, id: &InstanceId, hang: bool) {
        if let Some(i) = self.lock().instances.get_mut(id) {
            i.hang_probes = hang;
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The [`Runtime`] of a [`FakeWorld`].
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    world: FakeWorld,
}

impl Runtime for FakeRuntime {
    fn target(&self) -> TargetKind {
        self.world.lock().target.unwrap_or(TargetKind::Process)
    }

    async fn start(&self, plan: &LaunchPlan) -> Result<Instance, RuntimeError> {
        let script = {
            let mut world = self.world.lock();
            [Some(plan.replica), None]
                .into_iter()
                .find_map(|replica| {
                    world
                        .scripts
                        .get_mut(&(plan.model.clone(), replica))
                        .and_then(VecDeque::pop_front)
                })
                .unwrap_or_default()
        };
        tokio::time::sleep(script.start_delay).await;
        assert!(!script.start_panic, "scripted panic in FakeRuntime::start");
        let mut world = self.world.lock();
        if let Some(message) = script.start_error {
            world.calls.push(Call::Start {
                model: plan.model.clone(),
                replica: plan.replica,
                instance: None,
            });
            return Err(RuntimeError::Start {
                model: plan.model.clone(),
                replica: plan.replica,
                source: message.into(),
            });
        }
        world.next_id += 1;
        let id = InstanceId::new(format!("fake-{}", world.next_id));
        let (exit, _) = watch::channel(None);
        if let Some((after, code)) = script.exit_after {
            let exit = exit.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                exit.send_if_modified(|e| {
                    e.is_none().then(|| *e = Some(Exit::code(code))).is_some()
                });
            });
        }
        world.calls.push(Call::Start {
            model: plan.model.clone(),
            replica: plan.replica,
            instance: Some(id.clone()),
        });
        world.instances.insert(
            id.clone(),
            FakeInstance {
                plan: plan.clone(),
                script,
                started: Instant::now(),
                exit,
                health: None,
                hang_probes: false,
                removed: false,
            },
        );
        let base_url = format!("http://127.0.0.1:{}", plan.port).parse().map_err(
            |e: http::uri::InvalidUri| RuntimeError::Start {
                model: plan.model.clone(),
                replica: plan.replica,
                source: e.into(),
            },
        )?;
        Ok(Instance::new(id, base_url))
    }

    async fn wait(&self, id: &InstanceId) -> Result<Exit, RuntimeError> {
        let mut rx = self
            .world
            .lock()
            .instances
            .get(id)
            .map(|i| i.exit.subscribe())
            .ok_or_else(|| RuntimeError::NotFound {
                instance: id.clone(),
            })?;
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| RuntimeError::NotFound {
                instance: id.clone(),
            })?;
        Ok(exit.unwrap_or(Exit::signal(9)))
    }

    async fn inspect(&self, id: &InstanceId) -> Result<InstanceState, RuntimeError> {
        let world = self.world.lock();
        let i = world
            .instances
            .get(id)
            .filter(|i| !i.removed)
            .ok_or_else(|| RuntimeError::NotFound {
                instance: id.clone(),
            })?;
        Ok(match *i.exit.borrow() {
            Some(exit) => InstanceState::Exited(exit),
            None => InstanceState::Running,
        })
    }

    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<Vec<LogLine>, RuntimeError> {
        let world = self.world.lock();
        let i = world
            .instances
            .get(id)
            .filter(|i| !i.removed)
            .ok_or_else(|| RuntimeError::NotFound {
                instance: id.clone(),
            })?;
        let skip = i.script.logs.len().saturating_sub(tail);
        Ok(i.script.logs[skip..]
            .iter()
            .map(|l| LogLine::new(LogSource::Stderr, l.clone()))
            .collect())
    }

    async fn follow(&self, id: &InstanceId) -> Result<LogStream, RuntimeError> {
        let lines = self.logs(id, usize::MAX).await?;
        Ok(Box::pin(futures_util::stream::iter(lines)))
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        let (delay, error) = {
            let mut world = self.world.lock();
            let observed = world.observed.clone();
            let i = world
                .instances
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound {
                    instance: id.clone(),
                })?;
            let was_registered = observed.is_some_and(|r| {
                r.snapshot()
                    .models
                    .values()
                    .any(|eps| eps.iter().any(|e| &e.instance == id))
            });
            let (delay, error) = (i.script.stop_delay, i.script.stop_error.clone());
            world.calls.push(Call::Stop {
                instance: id.clone(),
                grace,
                was_registered,
            });
            (delay, error)
        };
        tokio::time::sleep(delay).await;
        if let Some(message) = error {
            return Err(RuntimeError::Operation {
                operation: "stop",
                instance: id.clone(),
                source: message.into(),
            });
        }
        let mut world = self.world.lock();
        if let Some(i) = world.instances.get_mut(id) {
            i.removed = true;
            i.exit
                .send_if_modified(|e| e.is_none().then(|| *e = Some(Exit::signal(15))).is_some());
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let world = self.world.lock();
        Ok(world
            .instances
            .iter()
            .filter(|(_, i)| !i.removed)
            .map(|(id, i)| {
                let state = match *i.exit.borrow() {
                    Some(exit) => InstanceState::Exited(exit),
                    None => InstanceState::Running,
                };
                let info = InstanceInfo::new(id.clone(), i.plan.labels.clone(), state);
                match format!("http://127.0.0.1:{}", i.plan.port).parse() {
                    Ok(url) if state == InstanceState::Running => info.with_base_url(url),
                    _ => info,
                }
            })
            .collect())
    }
}

/// The [`HealthProbe`] of a [`FakeWorld`]: answers what the instance's script or override says;
/// `down: connection refused` for an instance that exited or is unknown.
#[derive(Debug, Clone)]
pub struct FakeProbe {
    world: FakeWorld,
}

impl HealthProbe for FakeProbe {
    async fn probe(&self, endpoint: &crate::Endpoint, _spec: &HealthSpec) -> HealthStatus {
        let answer = {
            let world = self.world.lock();
            match world.instances.get(&endpoint.instance) {
                None => Some(HealthStatus::down("connection refused")),
                Some(i) if i.removed || i.exit.borrow().is_some() => {
                    Some(HealthStatus::down("connection refused"))
                }
                Some(i) if i.hang_probes => None,
                Some(i) => Some(match (&i.health, i.script.ready_after) {
                    (Some(health), _) => health.clone(),
                    (None, Some(after)) if i.started.elapsed() >= after => HealthStatus::Ready,
                    (None, _) => HealthStatus::Loading {
                        detail: Some("Loading model".into()),
                    },
                }),
            }
        };
        match answer {
            Some(status) => status,
            None => std::future::pending().await,
        }
    }
}

/// An [`Engine`] that plans a fake program (or image), optionally refusing with diagnostics.
#[derive(Debug, Clone)]
pub struct FakeEngine {
    kind: EngineKind,
    health: HealthSpec,
    stop_grace: Duration,
    refuse: Option<Diagnostics>,
    plan_delay: Duration,
    aliases: Vec<String>,
}

// === impl FakeEngine ===

impl FakeEngine {
    /// An engine of `kind` whose plans probe `/health`, time out after 60 s, and stop with a 5 s
    /// grace period.
    pub fn new(kind: impl Into<EngineKind>) -> Self {
        Self {
            kind: kind.into(),
            health: HealthSpec::new("/health")
                .with_loading_statuses([503])
                .with_startup_timeout(Duration::from_secs(60))
                .with_poll_interval(Duration::from_millis(250), Duration::from_secs(2)),
            stop_grace: Duration::from_secs(5),
            refuse: None,
            plan_delay: Duration::ZERO,
            aliases: Vec::new(),
        }
    }

    /// Plans that serve these names too ([`LaunchPlan::aliases`], as vLLM's LoRA adapters).
    pub fn with_aliases<I, S>(mut self, aliases: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.aliases = aliases.into_iter().map(Into::into).collect();
        self
    }

    /// Blocks the calling thread for `delay` in every `plan`, as an engine reading a large file
    /// from a slow disk would.
    pub fn with_plan_delay(mut self, delay: Duration) -> Self {
        self.plan_delay = delay;
        self
    }

    /// Uses `health` in its plans.
    pub fn with_health(mut self, health: HealthSpec) -> Self {
        self.health = health;
        self
    }

    /// Uses `grace` as the stop grace period.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Refuses every spec with `diagnostics`.
    pub fn refusing(mut self, diagnostics: impl IntoIterator<Item = Diagnostic>) -> Self {
        self.refuse = Some(diagnostics.into_iter().collect());
        self
    }
}

impl Engine for FakeEngine {
    fn kind(&self) -> EngineKind {
        self.kind.clone()
    }

    fn default_port(&self) -> u16 {
        8080
    }

    fn plan(&self, spec: &ModelSpec, cx: &PlanContext) -> Result<Planned, PlanError> {
        if !self.plan_delay.is_zero() {
            std::thread::sleep(self.plan_delay);
        }
        if let Some(diagnostics) = &self.refuse {
            return Err(PlanError::Invalid {
                model: spec.id.clone(),
                diagnostics: diagnostics.clone(),
            });
        }
        let target = match cx.target {
            TargetKind::Container => Target::Container {
                image: format!("{}:test", self.kind),
                name: format!("{}-model-{}", self.kind, spec.id),
            },
            _ => Target::Process {
                program: format!("fake-{}", self.kind).into(),
            },
        };
        let mut plan = LaunchPlan::new(
            spec.id.clone(),
            self.kind.clone(),
            target,
            cx.port,
            self.health.clone(),
        );
        plan.args = vec!["--port".into(), cx.port.to_string()];
        plan.args.extend(spec.args.iter().cloned());
        plan.env = spec.env.clone().into_iter().collect::<BTreeMap<_, _>>();
        plan.stop_grace = self.stop_grace;
        plan.aliases.clone_from(&self.aliases);
        Ok(Planned::new(plan, Diagnostics::new()))
    }
}
