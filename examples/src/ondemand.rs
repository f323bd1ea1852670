//! Models loaded on demand (`load = "on-demand"`): the gateway's [`Loader`] for `cortex serve`.
//!
//! The first request for such a model starts it through the supervisor and waits; requests that
//! arrive meanwhile wait for the same start (one start, however many wait). A start that fails
//! answers every waiting request with an OpenAI-shaped 503 `model_start_failed` naming why. A
//! client that hangs up drops only its own wait: the start runs in a task of its own. A model
//! without requests for its `idle_unload` (and none in flight) is stopped by [`OnDemand::unload_idle`],
//! which `cortex serve` runs every second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use cortex_core::{Load, ModelId, ModelSpec, ModelState, Supervisor, SupervisorError};
use cortex_gateway::error::Refusal;
use cortex_gateway::replicas::Replicas;
use cortex_gateway::route::{Loader, Loading};
use http::StatusCode;
use tokio::sync::watch;

/// A start in progress, or its outcome (`None` while starting).
type Outcome = watch::Receiver<Option<Result<(), String>>>;

/// The on-demand models of a configuration. Cheap to clone.
#[derive(Clone)]
pub struct OnDemand {
    inner: Arc<Inner>,
}

struct Inner {
    supervisor: Supervisor,
    replicas: Replicas,
    /// Served name → spec, for the on-demand models; replaced by a reload.
    specs: ArcSwap<HashMap<String, ModelSpec>>,
    /// Models being replaced by a reload, by served name: requests wait for the new engine.
    replacing: Mutex<HashMap<String, Outcome>>,
    starts: Mutex<HashMap<ModelId, Outcome>>,
    last_used: Mutex<HashMap<ModelId, Instant>>,
    /// The memory budget, when one is set, with every model's estimate; replaced by a reload.
    budget: ArcSwap<Option<Budget>>,
    /// Held while a start is decided and made, so that two starts never both count on the same
    /// free memory.
    deciding: tokio::sync::Mutex<()>,
}

/// Memory the running models may use together, by device.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Host bytes (`None`: no limit).
    pub host: Option<u64>,
    /// Bytes per GPU, by position.
    pub gpus: Vec<u64>,
    /// Each model's need (all replicas), by device: `(host, per GPU)` — llama.cpp's by the
    /// estimator, vLLM's its claim (`gpu_memory_utilization` of each GPU it uses; its host memory
    /// is not counted).
    pub needs: HashMap<ModelId, (u64, Vec<u64>)>,
}

/// What each model of `config` needs by the estimate, all its replicas together: host bytes and
/// bytes on each configured GPU (`[[gpu]]`, by index). A model the estimator cannot read is
/// missing, with a warning on stderr.
pub fn needs(config: &crate::config::Config) -> HashMap<cortex_core::ModelId, (u64, Vec<u64>)> {
    let mut needs = HashMap::new();
    let vllm = cortex_engines::VllmEngine::new().with_gpus(config.gpu.iter().cloned());
    for spec in config.specs() {
        let n = u64::from(spec.replicas.get());
        if spec.engine == cortex_core::EngineKind::VLLM {
            // vLLM claims its share of each GPU it uses, whatever the model.
            match vllm.claims(spec) {
                Ok(claims) => {
                    let mut per_gpu = vec![0_u64; config.gpu.len()];
                    for (i, bytes) in claims {
                        if let Some(g) = per_gpu.get_mut(i) {
                            *g = g.saturating_add(bytes.saturating_mul(n));
                        }
                    }
                    needs.insert(spec.id.clone(), (0, per_gpu));
                }
                Err(e) => eprintln!("cortex: {}: no memory claim for the budget: {e}", spec.id),
            }
            continue;
        }
        let Some(args) = crate::plan::estimate_args(spec) else {
            continue;
        };
        match crate::gguf::estimate_for(&args, &config.gpu) {
            Ok(est) => {
                let per_gpu = (0..config.gpu.len())
                    .map(|i| est.device(i).map_or(0, |d| d.total()).saturating_mul(n))
                    .collect();
                needs.insert(
                    spec.id.clone(),
                    (est.host().total().saturating_mul(n), per_gpu),
                );
            }
            Err(e) => eprintln!(
                "cortex: {}: no memory estimate for the budget: {e}",
                spec.id
            ),
        }
    }
    needs
}

impl Budget {
    /// The budget of `config` (`[budget]`, `[[gpu]]`) with each model's need, or
    /// `None` when nothing limits memory. A model the estimator cannot read counts as nothing,
    /// with a warning.
    pub fn of(config: &crate::config::Config) -> Option<Self> {
        let gpus: Vec<u64> = config
            .gpu
            .iter()
            .enumerate()
            .map(|(i, g)| {
                config
                    .budget
                    .gpu_mib
                    .get(i)
                    .map_or(g.total_bytes, |mib| mib << 20)
            })
            .collect();
        let host = config.budget.host_mib.map(|mib| mib << 20);
        if host.is_none() && gpus.is_empty() {
            return None;
        }
        let needs = needs(config);
        Some(Self { host, gpus, needs })
    }

    /// What is short when `need` comes on top of `used`, in words; `None` when it fits.
    fn short(&self, used: &(u64, Vec<u64>), need: &(u64, Vec<u64>)) -> Option<String> {
        let mib = |b: u64| b >> 20;
        if let Some(host) = self.host {
            let total = used.0.saturating_add(need.0);
            if total > host {
                return Some(format!(
                    "it needs an estimated {} MiB of host memory and {} MiB of the budget's {} MiB are in use",
                    mib(need.0),
                    mib(used.0),
                    mib(host)
                ));
            }
        }
        for (i, budget) in self.gpus.iter().enumerate() {
            let u = used.1.get(i).copied().unwrap_or(0);
            let n = need.1.get(i).copied().unwrap_or(0);
            if u.saturating_add(n) > *budget {
                return Some(format!(
                    "it needs an estimated {} MiB on GPU {i} and {} MiB of its {} MiB budget are in use",
                    mib(n),
                    mib(u),
                    mib(*budget)
                ));
            }
        }
        None
    }
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand")
            .field(
                "models",
                &self.inner.specs.load().keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Waits until `id` runs (`Ok`) or stops or fails (`Err`, with why).
async fn running(supervisor: &Supervisor, id: &ModelId) -> Result<(), String> {
    let Some(mut status) = supervisor.watch(id) else {
        return Err("it is not known to the supervisor".to_owned());
    };
    let state = status
        .wait_for(|s| !matches!(s.state, ModelState::Starting | ModelState::Stopping))
        .await
        .map_err(|_| "the supervisor went away".to_owned())?
        .state
        .clone();
    match state {
        ModelState::Running | ModelState::Unhealthy { .. } => Ok(()),
        ModelState::Failed { reason, .. } => Err(reason),
        other => Err(format!("it is {other:?}")),
    }
}

/// The on-demand models among `specs`, by served name.
fn on_demand<'a>(specs: impl Iterator<Item = &'a ModelSpec>) -> HashMap<String, ModelSpec> {
    specs
        .filter(|s| s.load == Load::OnDemand)
        .map(|s| (s.served_name().to_owned(), s.clone()))
        .collect()
}

impl OnDemand {
    /// The on-demand models among `specs`, started through `supervisor`; `replicas` (the
    /// gateway's table) says what is in flight.
    pub fn new<'a>(
        specs: impl Iterator<Item = &'a ModelSpec>,
        supervisor: Supervisor,
        replicas: Replicas,
        budget: Option<Budget>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                supervisor,
                replicas,
                specs: ArcSwap::from_pointee(on_demand(specs)),
                replacing: Mutex::new(HashMap::new()),
                starts: Mutex::new(HashMap::new()),
                last_used: Mutex::new(HashMap::new()),
                budget: ArcSwap::from_pointee(budget),
                deciding: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Whether any model is loaded on demand.
    pub fn is_empty(&self) -> bool {
        self.inner.specs.load().is_empty()
    }

    /// Takes the on-demand models among `specs`, and `budget`, from a reloaded configuration.
    /// Starts in progress and the times of last use are kept.
    pub fn reconfigure<'a>(
        &self,
        specs: impl Iterator<Item = &'a ModelSpec>,
        budget: Option<Budget>,
    ) {
        self.inner.specs.store(Arc::new(on_demand(specs)));
        self.inner.budget.store(Arc::new(budget));
    }

    /// Marks the model served as `served_name` as being replaced: until the sender sends its
    /// outcome (or is dropped), requests for it wait for the new engine instead of being refused
    /// as "starting".
    pub fn replacing(&self, served_name: &str) -> watch::Sender<Option<Result<(), String>>> {
        let (tx, rx) = watch::channel(None);
        self.inner
            .replacing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(served_name.to_owned(), rx);
        tx
    }

    fn start(&self, spec: &ModelSpec) -> Outcome {
        let mut starts = self
            .inner
            .starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(outcome) = starts.get(&spec.id) {
            if outcome.borrow().is_none() {
                return outcome.clone();
            }
        }
        let (tx, rx) = watch::channel(None);
        starts.insert(spec.id.clone(), rx.clone());
        self.touch_id(&spec.id);
        let supervisor = self.inner.supervisor.clone();
        let spec = spec.clone();
        let this = self.clone();
        tokio::spawn(async move {
            let id = spec.id.clone();
            let begun = Instant::now();
            // Starts are decided one at a time only under a budget.
            let deciding = if this.inner.budget.load().is_some() {
                Some(this.inner.deciding.lock().await)
            } else {
                None
            };
            let result = match this.make_room(&id).await {
                Err(e) => Err(e),
                Ok(()) => match supervisor.start(spec).await {
                    Ok(()) => Ok(()),
                    // Started by someone else (an operator, an earlier request): wait for it.
                    Err(SupervisorError::AlreadyStarted { .. }) => running(&supervisor, &id).await,
                    Err(e) => Err(cortex_core::error_chain(&e)),
                },
            };
            drop(deciding);
            match &result {
                Ok(()) => eprintln!(
                    "cortex: {id}: loaded on demand in {:.1} s",
                    begun.elapsed().as_secs_f64()
                ),
                Err(e) => eprintln!("cortex: {id}: could not be loaded on demand: {e}"),
            }
            let _ = tx.send(Some(result));
        });
        rx
    }

    fn touch_id(&self, id: &ModelId) {
        self.inner
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Instant::now());
    }

    /// Whether a model runs (or is starting): it holds its memory.
    fn holds_memory(&self, id: &ModelId) -> bool {
        self.inner.supervisor.status(id).is_some_and(|s| {
            matches!(
                s.state,
                ModelState::Running | ModelState::Starting | ModelState::Unhealthy { .. }
            )
        })
    }

    /// Whether requests are in flight on `spec`'s replicas.
    fn busy(&self, spec: &ModelSpec) -> bool {
        self.inner
            .supervisor
            .registry()
            .resolve(spec.served_name())
            .is_some_and(|eps| {
                eps.iter()
                    .any(|e| self.inner.replicas.in_flight(&e.instance) > 0)
            })
    }

    /// Under a budget, stops idle on-demand models, least recently used first, until `id` fits;
    /// `Err` (the refusal's reason, with the estimate) when it cannot.
    async fn make_room(&self, id: &ModelId) -> Result<(), String> {
        let budget = self.inner.budget.load_full();
        let Some(budget) = budget.as_ref() else {
            return Ok(());
        };
        let specs = self.inner.specs.load_full();
        let Some(need) = budget.needs.get(id) else {
            return Ok(());
        };
        // What the models that hold memory use, all of them or only those that cannot be
        // stopped for this one (always loaded, or busy).
        let used = |evictable_too: bool| {
            let mut used = (0_u64, vec![0_u64; budget.gpus.len()]);
            for (other, (host, gpus)) in &budget.needs {
                let evictable = specs.values().any(|s| &s.id == other && !self.busy(s));
                if other != id && self.holds_memory(other) && (evictable_too || !evictable) {
                    used.0 = used.0.saturating_add(*host);
                    for (u, g) in used.1.iter_mut().zip(gpus) {
                        *u = u.saturating_add(*g);
                    }
                }
            }
            used
        };
        if let Some(short) = budget.short(&used(false), need) {
            return Err(format!(
                "{short} by models that cannot be stopped for it ([budget] in the configuration)"
            ));
        }
        loop {
            let Some(short) = budget.short(&used(true), need) else {
                return Ok(());
            };
            let last_used = |id: &ModelId| {
                self.inner
                    .last_used
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(id)
                    .copied()
            };
            let victim = specs
                .values()
                .filter(|s| &s.id != id && self.holds_memory(&s.id) && !self.busy(s))
                .min_by_key(|s| last_used(&s.id));
            let Some(victim) = victim else {
                return Err(format!(
                    "{short}, and no idle on-demand model can be stopped to make room ([budget] in the configuration)"
                ));
            };
            eprintln!(
                "cortex: {}: unloading to make room for {id} ({short})",
                victim.id
            );
            self.inner
                .supervisor
                .stop(&victim.id)
                .await
                .map_err(|e| cortex_core::error_chain(&e))?;
        }
    }

    /// Stops the on-demand models that ran without requests for their `idle_unload` and have
    /// none in flight; returns those stopped.
    pub async fn unload_idle(&self) -> Vec<ModelId> {
        let mut stopped = Vec::new();
        let specs = self.inner.specs.load_full();
        for spec in specs.values() {
            let Some(idle) = spec.idle_unload else {
                continue;
            };
            let running = self.inner.supervisor.status(&spec.id).is_some_and(|s| {
                matches!(s.state, ModelState::Running | ModelState::Unhealthy { .. })
            });
            if !running {
                continue;
            }
            let quiet = self
                .inner
                .last_used
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&spec.id)
                .is_none_or(|t| t.elapsed() >= idle);
            if quiet && !self.busy(spec) {
                eprintln!(
                    "cortex: {}: unloading after {} without requests",
                    spec.id,
                    humantime::format_duration(idle)
                );
                if self.inner.supervisor.stop(&spec.id).await.is_ok() {
                    stopped.push(spec.id.clone());
                }
            }
        }
        stopped
    }

    /// Runs [`unload_idle`](Self::unload_idle) every `period` until the task is dropped.
    pub async fn run_unloader(self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            self.unload_idle().await;
        }
    }
}

impl Loader for OnDemand {
    fn load(&self, model: &str) -> Option<Loading> {
        let specs = self.inner.specs.load();
        let mut outcome = match specs.get(model) {
            Some(spec) => self.start(spec),
            None => self
                .inner
                .replacing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(model)
                .filter(|o| o.borrow().is_none())?
                .clone(),
        };
        let model = model.to_owned();
        Some(Box::pin(async move {
            let result = match outcome.wait_for(Option::is_some).await {
                Ok(done) => done.clone().unwrap_or(Ok(())),
                Err(_) => Err("the start was abandoned".to_owned()),
            };
            result.map_err(|why| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("The model `{model}` could not be started: {why}"),
                )
                .code("model_start_failed")
            })
        }))
    }

    fn catalog(&self) -> Vec<(String, &'static str)> {
        let starting = |id: &ModelId| {
            self.inner
                .starts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(id)
                .is_some_and(|o| o.borrow().is_none())
        };
        self.inner
            .specs
            .load()
            .iter()
            .map(|(name, spec)| {
                let state = match self.inner.supervisor.status(&spec.id).map(|s| s.state) {
                    Some(ModelState::Running | ModelState::Unhealthy { .. }) => "loaded",
                    Some(ModelState::Starting) => "loading",
                    _ if starting(&spec.id) => "loading",
                    Some(ModelState::Failed { .. }) => "failed",
                    _ => "unloaded",
                };
                (name.clone(), state)
            })
            .collect()
    }

    fn touch(&self, model: &str) {
        if let Some(spec) = self.inner.specs.load().get(model) {
            self.touch_id(&spec.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vLLM model counts in the budget by what it claims of each GPU it uses
    /// (`gpu_memory_utilization × total`), whatever the model's size.
    #[test]
    fn a_vllm_model_counts_its_claim_on_the_gpus_it_uses() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[budget]
gpu_mib = [20000, 20000]

[[gpu]]
index = 0
name = "NVIDIA L4"
total_bytes = 24000000000

[[gpu]]
index = 1
name = "NVIDIA L4"
total_bytes = 24000000000

[[models]]
id = "qwen"
engine = "vllm"
load = "on-demand"
replicas = 1
source = { hub = "Qwen/Qwen2.5-0.5B-Instruct" }

[models.settings]
gpu_memory_utilization = 0.5
gpus = { devices = ["1"] }
"#;
        let config = crate::config::Config::parse(&dir.path().join("cortex.toml"), text)
            .unwrap_or_else(|e| panic!("{e}"));
        let budget = Budget::of(&config).expect("a budget");
        assert_eq!(budget.gpus, [20_000 << 20, 20_000 << 20]);
        let need = &budget.needs[&ModelId::new("qwen").unwrap()];
        assert_eq!(need, &(0, vec![0, 12_000_000_000]));
    }
}
