//! `cortex serve`: the gateway with every layer, the supervisor and the chosen runtime, serving
//! what a [`Config`] declares, until Ctrl-C.
//!
//! The client listener answers `GET /health` (200 and every model's state: the process is up;
//! `ready` says whether every declared model is running, on-demand models excepted), `GET
//! /metrics` with `server.metrics_on_listen`, and sends
//! everything else to the gateway (auth → route → meter → failover → balance → breaker → queue →
//! proxy). The admin listener answers:
//!
//! - `GET /health`, as above;
//! - `GET /metrics`: the gateway's Prometheus metrics (the `metrics` facade, rendered by
//!   `metrics-exporter-prometheus`);
//! - `/admin/…`: the [admin API](crate::admin), with the admin key;
//! - `/` and `/ui/…`: the [admin page](crate::ui), with a session the admin key opens.
//!
//! While models load, their state changes and their engines' own log lines are printed to stderr
//! (an engine's log stops being copied once it is running, so request logs do not flood the
//! terminal; `cortex models logs` shows them). The first Ctrl-C (or SIGTERM) deregisters and stops
//! every engine this process started, each with its plan's grace period, then exits; a second one
//! kills what is still running and exits at once.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use cortex_core::{
    DynHealthProbe, DynRuntime, EngineKind, Event, EventKind, InMemoryRegistry, InstanceId,
    ModelId, ModelSpec, ModelState, Registry, Supervisor,
};
use cortex_engines::{
    DockerRuntime, HttpProbe, LlamaCppEngine, ProcessRuntime, SwarmRuntime, VllmEngine,
    VllmSettings,
};
use cortex_gateway::auth::{InMemoryKeyStore, KeyHash, KeyStore as _};
use cortex_gateway::balance::Policy;
use cortex_gateway::error::Refusal;
use cortex_gateway::meter::{UsageRecord, UsageSink as _};
use cortex_gateway::replicas::Replicas;
use cortex_gateway::route::Loader as _;

use crate::ondemand::OnDemand;
use cortex_gateway::proxy::Proxy;
use cortex_gateway::{Gateway, GatewayBody, GatewayBuilder};
use futures_util::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

use crate::access::{self, AccessLog, Logged};
use crate::admin::{self, Admin};
use crate::config::{BalancePolicy, Config, ConfigErrors, PlacementConfig, RuntimeKind};

/// Why serving could not start or ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime could not be created (the Docker Engine is not reachable, say).
    #[error("the {kind} runtime is not available: {message}")]
    Runtime {
        /// `process` or `docker`.
        kind: &'static str,
        /// Why.
        message: String,
    },
    /// Models that failed to start (the server went on with the others).
    #[error("{0} model(s) failed to start")]
    Models(usize),
    /// The usage store could not be opened (`[usage]`).
    #[error("{0}")]
    Usage(String),
}

/// The parts of a running server the admin API and the shutdown share.
#[derive(Debug)]
pub struct Shared {
    /// The configuration served: replaced by a reload (SIGHUP, `POST /admin/reload`).
    pub config: ArcSwap<Config>,
    /// The configuration's file.
    pub config_path: PathBuf,
    /// The supervisor.
    pub supervisor: Supervisor,
    /// The runtime, for logs and forced stops.
    pub runtime: Arc<dyn DynRuntime>,
    /// Usage records (`[usage]`).
    pub usage: Arc<crate::usage::UsageStore>,
    /// The Prometheus recorder's handle.
    pub metrics: Option<PrometheusHandle>,
    /// The client keys in force: replaced by a reload (SIGHUP, `POST /admin/keys/reload`).
    pub keys: Arc<ArcSwap<InMemoryKeyStore>>,
    /// The admin key's digest in force, reloaded with the client keys.
    pub admin_key: ArcSwap<Option<KeyHash>>,
    /// The access log.
    pub access: Arc<AccessLog>,
    /// The gateway clients are served by: rebuilt by a reload over the same per-replica state.
    pub gateway: ArcSwap<Gateway>,
    /// The gateway's per-replica state (circuits, slots, in-flight counts), kept across reloads.
    pub replicas: Replicas,
    /// The on-demand models.
    pub on_demand: OnDemand,
    /// Cancelled when serving ends (Ctrl-C, SIGTERM): the admin page's event streams close.
    pub closing: tokio_util::sync::CancellationToken,
    /// Held by a reload, so that two never interleave.
    reloading: tokio::sync::Mutex<()>,
    /// The usage database's keys as last read (kept in force while it cannot be read).
    database_keys_read: std::sync::Mutex<Vec<cortex_gateway::auth::KeyRecord>>,
}

/// What a reload did: the models added, removed, replaced (their plan changed: drained, stopped
/// and started again) and left running, and the settings read only at start that changed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Reloaded {
    /// Client keys in force.
    pub keys: usize,
    /// Models new in the file (started unless loaded on demand).
    pub added: Vec<String>,
    /// Models gone from the file (drained and stopped).
    pub removed: Vec<String>,
    /// Models whose plan changed (drained, stopped and started from the new plan).
    pub replaced: Vec<String>,
    /// Models whose plan is the same: left running, streams and all.
    pub unchanged: Vec<String>,
    /// Settings that changed but are read only when `cortex serve` starts; they take effect at
    /// the next start.
    pub restart_needed: Vec<&'static str>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} key(s); added {:?}, removed {:?}, replaced {:?}, unchanged {:?}",
            self.keys, self.added, self.removed, self.replaced, self.unchanged
        )?;
        if !self.restart_needed.is_empty() {
            write!(
                f,
                "; needs a restart to apply: {}",
                self.restart_needed.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The models a reload acts on.
#[derive(Debug, Default)]
struct Changes {
    /// Plans changed: drained, stopped, started again.
    replaced: Vec<ModelSpec>,
    /// New.
    added: Vec<ModelSpec>,
    /// Unchanged, but now to be loaded always.
    wanted: Vec<ModelSpec>,
    /// Gone.
    removed: Vec<ModelId>,
}

/// The settings a reload cannot apply (listeners, runtime, supervisor, GPUs, usage store) that
/// differ between `old` and `new`.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let (o, n) = (&old.server, &new.server);
    let mut out = Vec::new();
    for (name, changed) in [
        ("server.listen", o.listen != n.listen),
        ("server.admin_listen", o.admin_listen != n.admin_listen),
        (
            "server.max_connections",
            o.max_connections != n.max_connections,
        ),
        (
            "server.header_read_timeout",
            o.header_read_timeout != n.header_read_timeout,
        ),
        ("server.access_log", o.access_log != n.access_log),
        (
            "server.manage_engines",
            o.manage_engines != n.manage_engines,
        ),
        ("runtime", differ(&old.runtime, &new.runtime)),
        ("supervisor", old.supervisor != new.supervisor),
        ("gpu", differ(&old.gpu, &new.gpu)),
        ("usage", differ(&old.usage, &new.usage)),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

// === impl Shared ===

impl Shared {
    /// Reads the configuration file again and puts its keys (client and admin) in force, without
    /// touching the engines. The whole file is checked first: a file with any error changes
    /// nothing.
    ///
    /// # Errors
    ///
    /// The file's errors, with their places.
    pub fn reload_keys(&self) -> Result<usize, ConfigErrors> {
        let config = Config::load(&self.config_path)?;
        let count = self.put_keys_in_force(&config);
        self.admin_key.store(Arc::new(config.admin_key()));
        tracing::info!(
            keys = count,
            "keys reloaded from {}",
            self.config_path.display()
        );
        Ok(count)
    }

    /// Reads the configuration file again and applies it: keys, limits and the gateway's settings
    /// at once; models by reconciling — a model whose plans have the same fingerprints keeps
    /// running (its streams too), a removed one is drained and stopped, a changed one is drained,
    /// stopped and started from its new plan (requests that arrive meanwhile wait for it), a new one
    /// is started (unless loaded on demand). A file with any error changes nothing. `who` is logged.
    ///
    /// Returns once the new configuration is in force; stops and starts go on in the background
    /// (the model states and events tell their progress).
    ///
    /// # Errors
    ///
    /// The file's errors, with their places.
    pub async fn reload(self: &Arc<Self>, who: &str) -> Result<Reloaded, ConfigErrors> {
        let _one = self.reloading.lock().await;
        let new = Config::load(&self.config_path)?;
        let old = self.config.load_full();
        let mut report = Reloaded {
            keys: new.keys.len(),
            restart_needed: restart_needed(&old, &new),
            ..Reloaded::default()
        };
        let Changes {
            replaced,
            added,
            wanted,
            removed,
        } = self.changes(&old, &new, &mut report).await;

        // The new settings, in force for every request from here on.
        let budget = {
            let new = new.clone();
            tokio::task::spawn_blocking(move || crate::ondemand::Budget::of(&new))
                .await
                .unwrap_or(None)
        };
        self.on_demand.reconfigure(new.specs(), budget);
        let start_models = new.server.start_models;
        // A replaced model that loads always: requests wait for its new engine.
        let replacing: Vec<_> = replaced
            .iter()
            .map(|spec| {
                let always = spec.load == cortex_core::Load::Always && start_models;
                let waiting = (always && self.is_active(&spec.id))
                    .then(|| self.on_demand.replacing(spec.served_name()));
                (spec.clone(), always, waiting)
            })
            .collect();
        report.keys = self.put_keys_in_force(&new);
        self.admin_key.store(Arc::new(new.admin_key()));
        self.gateway.store(Arc::new(gateway(
            &new,
            &self.supervisor,
            Arc::clone(&self.usage),
            Arc::clone(&self.keys),
            Arc::clone(&self.access),
            &self.replicas,
            &self.on_demand,
        )));
        self.config.store(Arc::new(new));
        tracing::info!(%who, ?report, "configuration reloaded");
        eprintln!("cortex: configuration reloaded by {who}: {report}");

        // A gateway that does not run the engines follows what their manager does.
        if !self.config.load().server.manage_engines {
            return Ok(report);
        }
        // The engines, in the background: drains can take a while.
        for id in removed {
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = shared.supervisor.stop(&id).await {
                    if !matches!(e, cortex_core::SupervisorError::NotFound { .. }) {
                        eprintln!("cortex: {id}: {}", cortex_core::error_chain(&e));
                    }
                }
            });
        }
        for (spec, always, waiting) in replacing {
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                let id = spec.id.clone();
                let outcome = match shared.supervisor.stop(&id).await {
                    Ok(()) | Err(cortex_core::SupervisorError::NotFound { .. }) if always => {
                        shared.start_one(spec).await
                    }
                    Ok(()) | Err(cortex_core::SupervisorError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(cortex_core::error_chain(&e)),
                };
                if let Err(e) = &outcome {
                    eprintln!("cortex: {id}: not replaced: {e}");
                }
                if let Some(waiting) = waiting {
                    let _ = waiting.send(Some(outcome));
                }
            });
        }
        for spec in added.into_iter().chain(wanted) {
            if spec.load == cortex_core::Load::Always && start_models {
                let shared = Arc::clone(self);
                tokio::spawn(async move {
                    let id = spec.id.clone();
                    if let Err(e) = shared.start_one(spec).await {
                        eprintln!("cortex: {id}: {e}");
                    }
                });
            }
        }
        Ok(report)
    }

    /// What a reload changes about the models, in `report` and as specs and ids to act on.
    async fn changes(&self, old: &Config, new: &Config, report: &mut Reloaded) -> Changes {
        let mut changes = Changes::default();
        for spec in new.specs() {
            let Some(before) = old.specs().find(|o| o.id == spec.id) else {
                report.added.push(spec.id.to_string());
                changes.added.push(spec.clone());
                continue;
            };
            let same = spec.served_name() == before.served_name()
                && match (
                    self.supervisor.fingerprints(before).await,
                    self.supervisor.fingerprints(spec).await,
                ) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                };
            if same {
                report.unchanged.push(spec.id.to_string());
                // Now loaded always, and not running: started like a new one.
                if spec.load == cortex_core::Load::Always && before.load != spec.load {
                    changes.wanted.push(spec.clone());
                }
            } else {
                report.replaced.push(spec.id.to_string());
                changes.replaced.push(spec.clone());
            }
        }
        changes.removed = old
            .specs()
            .filter(|o| new.specs().all(|n| n.id != o.id))
            .map(|o| o.id.clone())
            .collect();
        report.removed = changes.removed.iter().map(ToString::to_string).collect();
        changes
    }

    /// Starts one model; a model already started counts as started.
    async fn start_one(&self, spec: ModelSpec) -> Result<(), String> {
        match self.supervisor.start(spec).await {
            Ok(()) | Err(cortex_core::SupervisorError::AlreadyStarted { .. }) => Ok(()),
            Err(e) => Err(cortex_core::error_chain(&e)),
        }
    }

    /// Whether the supervisor is starting, running or stopping `id`.
    fn is_active(&self, id: &ModelId) -> bool {
        self.supervisor
            .status(id)
            .is_some_and(|s| !s.state.is_terminal())
    }

    /// Puts `config`'s client keys and the usage database's in force, each unchanged key keeping
    /// its rate-limit state; returns how many. When the database cannot be read, its keys in force
    /// stay as they were (a database outage does not lock its keys out).
    pub fn put_keys_in_force(&self, config: &Config) -> usize {
        let old = self.keys.load_full();
        let mut last = self
            .database_keys_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self
            .usage
            .key_database()
            .map(cortex_gateway::auth::KeyDatabase::keys)
            .transpose()
        {
            Ok(keys) => *last = keys.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the keys in the database; keeping those read last");
            }
        }
        let mut store = config.key_store();
        store.extend(last.iter().cloned());
        drop(last);
        let store = store.keeping_state_of(&old);
        let count = store.len();
        self.keys.store(Arc::new(store));
        count
    }

    /// `/health`, and `/metrics` when `metrics`: what both listeners answer themselves.
    fn local(&self, path: &str, metrics: bool) -> Option<Response<Full<Bytes>>> {
        match path {
            "/health" => Some(admin::health(self)),
            "/metrics" if metrics => Some(self.metrics_response()),
            _ => None,
        }
    }

    fn metrics_response(&self) -> Response<Full<Bytes>> {
        let text = self
            .metrics
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default();
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    }
}

/// The response body of the server: the gateway's, or one written here (whole, or the admin
/// page's event streams); logged when done.
pub type Body = Logged<Either<GatewayBody, Local>>;

/// A body written by the server itself.
pub type Local = Either<Full<Bytes>, crate::ui::UiBody>;

/// The client listener's service: `/health`, `/metrics` when `server.metrics_on_listen`, else
/// the gateway. Request bodies time out after `server.body_read_timeout` without a byte.
#[derive(Debug, Clone)]
pub struct App {
    shared: Arc<Shared>,
}

/// The admin listener's service: `/admin/…`, `/metrics`, `/health`, and the admin page (`/ui/…`).
#[derive(Debug, Clone)]
pub struct AdminApp {
    shared: Arc<Shared>,
    admin: Admin,
    ui: crate::ui::Ui,
    /// The connection's peer, for the admin API's "by whom".
    peer: Option<SocketAddr>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// The access log's view of a request, with its `x-request-id` made sure of.
fn logged_request<B>(req: &mut Request<B>) -> access::Request {
    let id = cortex_gateway::request_id::ensure(req.headers_mut());
    access::Request {
        id: String::from_utf8_lossy(id.as_bytes()).into_owned(),
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        started: Instant::now(),
    }
}

fn answered(shared: &Shared, request: access::Request, response: Response<Full<Bytes>>) -> Answer {
    let status = response.status().as_u16();
    let response = response.map(|b| {
        Logged::new(
            Either::Right(Either::Left(b)),
            &shared.access,
            request,
            status,
        )
    });
    Box::pin(async move { Ok(response) })
}

impl hyper::service::Service<Request<Incoming>> for App {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let request = logged_request(&mut req);
        let config = self.shared.config.load();
        let metrics = config.server.metrics_on_listen;
        if let Some(response) = self.shared.local(req.uri().path(), metrics) {
            return answered(&self.shared, request, response);
        }
        let timeout = config.server.body_read_timeout;
        let req = req.map(|body| TimeoutBody::new(timeout, body));
        let access = Arc::clone(&self.shared.access);
        // No `async` block here: rustc cannot prove such a block `Send` over the gateway's
        // future ("higher-ranked lifetime error"); the combinator's type can.
        Box::pin(futures_util::FutureExt::map(
            Gateway::clone(&self.shared.gateway.load()).oneshot(req),
            move |result| match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    Ok(response.map(|b| Logged::new(Either::Left(b), &access, request, status)))
                }
                Err(never) => match never {},
            },
        ))
    }
}

impl hyper::service::Service<Request<Incoming>> for AdminApp {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let request = logged_request(&mut req);
        if let Some(response) = self.shared.local(req.uri().path(), true) {
            return answered(&self.shared, request, response);
        }
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(peer);
        }
        let admin = self.admin.clone();
        let ui = self.ui.clone();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let response = if crate::ui::Ui::serves(req.uri().path()) {
                ui.handle(req).await.map(Either::Right)
            } else {
                admin.handle(req).await.map(Either::Left)
            };
            let status = response.status().as_u16();
            Ok(response.map(|b| Logged::new(Either::Right(b), &shared.access, request, status)))
        })
    }
}

/// Installs the Prometheus recorder (once per process).
fn install_metrics() -> Option<PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| eprintln!("cortex: metrics are off: {e}"))
        .ok()
}

/// Creates the runtime the configuration asks for.
async fn runtime(config: &Config) -> Result<Arc<dyn DynRuntime>, ServeError> {
    Ok(match config.runtime.kind {
        RuntimeKind::Process => Arc::new(
            ProcessRuntime::builder()
                .state_dir(config.runtime.state_dir(config.server.listen))
                .outlive_manager(config.runtime.outlive_manager)
                .build()
                .map_err(|e| ServeError::Runtime {
                    kind: "process",
                    message: cortex_core::error_chain(&e),
                })?,
        ),
        RuntimeKind::Swarm => {
            let r = &config.runtime;
            let mut builder = SwarmRuntime::builder()
                .placement(PlacementConfig::placement(&r.constraints, &r.spread));
            for (id, p) in &r.placement {
                if let Ok(id) = ModelId::new(id) {
                    builder = builder
                        .placement_for(id, PlacementConfig::placement(&p.constraints, &p.spread));
                }
            }
            if let Some(address) = &r.node_address {
                builder = builder.node_address(address.clone());
            }
            Arc::new(builder.connect().await.map_err(|e| ServeError::Runtime {
                kind: "swarm",
                message: cortex_core::error_chain(&e),
            })?)
        }
        RuntimeKind::Docker => {
            Arc::new(
                DockerRuntime::connect()
                    .await
                    .map_err(|e| ServeError::Runtime {
                        kind: "docker",
                        message: cortex_core::error_chain(&e),
                    })?,
            )
        }
    })
}

/// Builds the gateway of `config` over `supervisor`'s registry, sharing the per-replica state
/// `replicas`, with the loader of its on-demand models.
pub fn gateway(
    config: &Config,
    supervisor: &Supervisor,
    usage: Arc<crate::usage::UsageStore>,
    keys: Arc<ArcSwap<InMemoryKeyStore>>,
    access: Arc<AccessLog>,
    replicas: &Replicas,
    on_demand: &OnDemand,
) -> Gateway {
    let g = &config.gateway;
    let slots = slots_of(config.specs());
    // The engines' own keys, sent upstream in place of the client's; never logged.
    let upstream_keys: HashMap<ModelId, http::HeaderValue> = config
        .specs()
        .filter_map(|s| {
            let key = s.settings.get("api_key")?.as_str()?;
            let mut value = http::HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
            value.set_sensitive(true);
            Some((s.id.clone(), value))
        })
        .collect();
    let default_slots = g.slots;
    let mut builder =
        GatewayBuilder::new(Arc::clone(supervisor.registry())).with_replicas(replicas.clone());
    let touched = on_demand.clone();
    builder = builder
        .usage_sink(move |record: UsageRecord| {
            // A request's end counts as use too (a long stream keeps its model loaded).
            if let Some(model) = &record.model {
                touched.touch(model);
            }
            access.stash(record.clone());
            usage.record(record);
        })
        .body_limit(g.body_limit)
        .body_budget(cortex_gateway::route::BodyBudget::new(g.body_budget))
        .surface(config.surface())
        .balance(match g.balance {
            BalancePolicy::LeastInFlight => Policy::LeastInFlight,
            BalancePolicy::RoundRobin => Policy::RoundRobin,
        })
        // Checked when the configuration was read.
        .breaker(g.breaker().unwrap_or_default())
        .slots_per_replica(move |e| slots.get(&e.model).copied().unwrap_or(default_slots))
        .queue_limits(g.max_waiting, g.queue_timeout)
        .proxy(
            Proxy::new()
                .first_byte_timeout(g.first_byte_timeout)
                .idle_timeout(g.idle_timeout)
                .upstream_key(move |e| upstream_keys.get(&e.model).cloned()),
        );
    if config.server.auth {
        builder = builder.keys(move |presented: &str| keys.load().lookup(presented));
    }
    builder = builder.names(config.names());
    // A gateway that does not run the engines never starts one for a request.
    if config.server.manage_engines {
        builder = builder.loader(on_demand.clone());
    }
    builder.unrouted(unrouted(config, supervisor)).build()
}

/// Slots per replica: what the engine runs at once. llama-server: its `parallel` (-np), else the
/// gateway's default (4, llama-server's -np auto); vLLM: its `max_num_seqs` (256 unless set),
/// since it batches that many sequences.
pub fn slots_of<'a>(specs: impl Iterator<Item = &'a ModelSpec>) -> HashMap<ModelId, usize> {
    specs
        .filter_map(|s| {
            let n = if s.engine == EngineKind::VLLM {
                u64::from(s.settings.decode::<VllmSettings>().ok()?.max_num_seqs)
            } else {
                s.settings.get("parallel")?.as_u64()?
            };
            Some((s.id.clone(), usize::try_from(n).ok()?))
        })
        .collect()
}

/// The refusal for a configured model with no ready endpoint: what is true of it (stopped,
/// starting, failed) rather than "does not exist". Failure reasons stay in the server's log and
/// the admin API: they name paths and log lines that are not the client's business.
fn unrouted(
    config: &Config,
    supervisor: &Supervisor,
) -> impl Fn(&str) -> Option<Refusal> + Send + Sync + 'static {
    let ids: HashMap<String, ModelId> = config
        .specs()
        .map(|s| (s.served_name().to_owned(), s.id.clone()))
        .collect();
    let supervisor = supervisor.clone();
    let follows = !config.server.manage_engines;
    move |model: &str| {
        let id = ids.get(model)?;
        let unavailable = |message: String, code: &'static str| {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message).code(code)
        };
        if follows {
            return Some(unavailable(
                format!("The model `{model}` has no ready replica now; try again shortly."),
                "model_unavailable",
            ));
        }
        let state = supervisor.status(id).map(|s| s.state);
        Some(match state {
            None | Some(ModelState::Stopped | ModelState::Stopping) => unavailable(
                format!(
                    "The model `{model}` is stopped; an operator can start it with `cortex models start {id}`."
                ),
                "model_stopped",
            ),
            Some(ModelState::Starting) => unavailable(
                format!("The model `{model}` is starting; try again shortly."),
                "model_starting",
            )
            .retry_after(Duration::from_secs(5)),
            Some(ModelState::Failed { .. }) => unavailable(
                format!(
                    "The model `{model}` failed and is not serving; the server's log and `cortex models status {id}` say why."
                ),
                "model_failed",
            ),
            // Running or unhealthy, with no replica in the registry at this instant.
            Some(_) => unavailable(
                format!("The model `{model}` has no ready replica now; try again shortly."),
                "model_unavailable",
            )
            .retry_after(Duration::from_secs(1)),
        })
    }
}

/// Prints the supervisor's events, and copies each starting engine's log lines, to stderr.
fn report_progress(shared: &Arc<Shared>) {
    let mut events = shared.supervisor.subscribe();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut followers: HashMap<InstanceId, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("cortex: {n} events not shown (the terminal is slow)");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            eprintln!("{}", describe(&event));
            match &event.kind {
                EventKind::InstanceStarted { replica, instance } => {
                    let runtime = Arc::clone(&shared.runtime);
                    let id = instance.clone();
                    let prefix = format!("[{}/{replica}]", event.model);
                    followers.insert(
                        instance.clone(),
                        tokio::spawn(async move {
                            if let Ok(mut lines) = runtime.follow(&id).await {
                                while let Some(line) = lines.next().await {
                                    eprintln!("{prefix} {}", line.line);
                                }
                            }
                        }),
                    );
                }
                EventKind::Registered { endpoint } => {
                    if let Some(task) = followers.remove(&endpoint.instance) {
                        task.abort();
                    }
                }
                EventKind::InstanceExited { instance, .. }
                | EventKind::InstanceStopped { instance, .. } => {
                    if let Some(task) = followers.remove(instance) {
                        task.abort();
                    }
                }
                _ => {}
            }
        }
    });
}

/// One line for an event.
fn describe(event: &Event) -> String {
    let model = &event.model;
    match &event.kind {
        EventKind::StateChanged { to, .. } => match to {
            ModelState::Failed { reason, log_tail } => {
                let mut s = format!("cortex: {model}: failed: {reason}");
                for line in log_tail.iter().rev().take(10).rev() {
                    s.push_str("\n    ");
                    s.push_str(&line.line);
                }
                s
            }
            other => format!("cortex: {model}: {}", state_name(other)),
        },
        EventKind::Planned {
            replica,
            command,
            warnings,
        } => {
            let mut s = format!("cortex: {model}/{replica}: plan: {command}");
            for w in warnings {
                s.push_str("\n    ");
                s.push_str(w);
            }
            s
        }
        EventKind::InstanceStarted { replica, instance } => {
            format!("cortex: {model}/{replica}: started {instance}")
        }
        EventKind::Adopted { replica, instance } => {
            format!(
                "cortex: {model}/{replica}: adopted {instance} left running by an earlier manager"
            )
        }
        EventKind::Removed { instance, reason } => {
            format!("cortex: {model}: removed {instance} left by an earlier manager: {reason}")
        }
        EventKind::Health {
            replica, status, ..
        } => {
            format!("cortex: {model}/{replica}: health: {status:?}")
        }
        EventKind::Registered { endpoint } => format!(
            "cortex: {model}/{}: serving `{}` at {}",
            endpoint.replica, endpoint.served_name, endpoint.base_url
        ),
        EventKind::Deregistered { endpoint, reason } => format!(
            "cortex: {model}/{}: out of the registry: {reason}",
            endpoint.replica
        ),
        EventKind::InstanceExited {
            replica,
            instance,
            exit,
        } => format!("cortex: {model}/{replica}: {instance} exited ({exit:?})"),
        EventKind::InstanceStopped { replica, instance } => {
            format!("cortex: {model}/{replica}: stopped {instance}")
        }
        other => format!("cortex: {model}: {other:?}"),
    }
}

/// A state's name, as `cortex models list` shows it.
pub fn state_name(state: &ModelState) -> &'static str {
    match state {
        ModelState::Stopped => "stopped",
        ModelState::Starting => "starting",
        ModelState::Running => "running",
        ModelState::Unhealthy { .. } => "unhealthy",
        ModelState::Stopping => "stopping",
        ModelState::Failed { .. } => "failed",
        _ => "unknown",
    }
}

impl Shared {
    /// The supervisor over `runtime`, the usage store, the gateway and the rest `config` asks for.
    fn new(
        config: Config,
        config_path: PathBuf,
        runtime: Arc<dyn DynRuntime>,
    ) -> Result<Self, ServeError> {
        let probe: Arc<dyn DynHealthProbe> = Arc::new(HttpProbe::default());
        let registry: Arc<dyn Registry> = Arc::new(InMemoryRegistry::new());
        // The gateway's per-replica state: a stop waits until no request holds a replica.
        let replicas = Replicas::pruned_to(Arc::clone(&registry));
        let supervisor = Supervisor::builder(Arc::clone(&runtime), probe)
            .registry(registry)
            .drain(Arc::new(replicas.clone()))
            .engine(Arc::new(LlamaCppEngine::new()))
            .engine(Arc::new(
                VllmEngine::new().with_gpus(config.gpu.iter().cloned()),
            ))
            .config(config.supervisor.clone())
            .build();
        let usage = crate::usage::UsageStore::open(&config).map_err(ServeError::Usage)?;
        let keys = Arc::new(ArcSwap::from_pointee(InMemoryKeyStore::new()));
        let access = AccessLog::stdout(config.server.access_log);
        let on_demand = OnDemand::new(
            config.specs(),
            supervisor.clone(),
            replicas.clone(),
            crate::ondemand::Budget::of(&config),
        );
        let gateway = gateway(
            &config,
            &supervisor,
            Arc::clone(&usage),
            Arc::clone(&keys),
            Arc::clone(&access),
            &replicas,
            &on_demand,
        );
        let shared = Self {
            admin_key: ArcSwap::from_pointee(config.admin_key()),
            config: ArcSwap::from_pointee(config),
            config_path,
            supervisor,
            runtime,
            usage,
            metrics: install_metrics(),
            keys,
            access,
            gateway: ArcSwap::from_pointee(gateway),
            replicas,
            on_demand,
            closing: tokio_util::sync::CancellationToken::new(),
            reloading: tokio::sync::Mutex::new(()),
            database_keys_read: std::sync::Mutex::new(Vec::new()),
        };
        let config = shared.config.load_full();
        shared.put_keys_in_force(&config);
        Ok(shared)
    }
}

/// Serves `config` until Ctrl-C or SIGTERM.
///
/// # Errors
///
/// [`ServeError`]: the listener or the runtime could not be set up (nothing was started), or
/// models failed to start (reported when serving ends).
pub async fn serve(config: Config, config_path: PathBuf) -> Result<(), ServeError> {
    let started_at = Instant::now();
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })
    };
    let listener = bind(config.server.listen).await?;
    let admin_listener = bind(config.server.admin_listen).await?;
    let runtime = runtime(&config).await?;
    let shared = Arc::new(Shared::new(config, config_path, runtime)?);
    // Idle on-demand models are stopped (a reload may add some); the task ends with the server.
    let unloader = tokio::spawn(
        shared
            .on_demand
            .clone()
            .run_unloader(Duration::from_secs(1)),
    );
    let app = App {
        shared: Arc::clone(&shared),
    };
    let admin = Admin::new(Arc::clone(&shared));
    let admin_app = AdminApp {
        ui: crate::ui::Ui::new(Arc::clone(&shared), admin.clone()),
        admin,
        shared: Arc::clone(&shared),
        peer: None,
    };
    let config = shared.config.load_full();
    let server = &config.server;
    eprintln!(
        "cortex: listening on http://{} (OpenAI API under /v1, health /health{}); admin on http://{} ({}/metrics, /health)",
        listener.local_addr().unwrap_or(server.listen),
        if server.metrics_on_listen {
            ", metrics /metrics"
        } else {
            ""
        },
        admin_listener.local_addr().unwrap_or(server.admin_listen),
        if shared.admin_key.load().is_some() {
            "/admin, "
        } else {
            "no admin key: /admin off; "
        }
    );
    report_progress(&shared);
    print_estimates(&config);
    reload_on_hangup(&shared);
    refresh_database_keys(&shared);

    let failures = if server.manage_engines {
        start_models(&shared, started_at)
    } else {
        follow_engines(&shared);
        Arc::new(AtomicUsize::new(0))
    };

    // Listened for from here to the end: a second signal that comes as the accept loop ends is
    // the drain's, not lost between the two.
    let mut signals = Signals::new();
    let graceful = GracefulShutdown::new();
    let limits = Limits {
        connections: Arc::new(Semaphore::new(server.max_connections.max(1))),
        header_read_timeout: server.header_read_timeout,
        close: tokio_util::sync::CancellationToken::new(),
    };
    accept_until_signal(
        &listener,
        &admin_listener,
        &app,
        &admin_app,
        &limits,
        &graceful,
        &mut signals,
    )
    .await;
    // Stop accepting: the listeners close; requests and streams in flight go on, but for the
    // admin page's event streams, which would otherwise hold the drain for its whole grace.
    drop((listener, admin_listener));
    shared.closing.cancel();
    unloader.abort();
    drain_and_stop(&shared, graceful, &limits.close, &mut signals).await;
    flush_usage(&shared).await;
    eprintln!("cortex: stopped");
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(ServeError::Models(failed));
    }
    Ok(())
}

/// In the background: takes stock of what an earlier `cortex serve` left (adopting a healthy
/// engine of a configured model whose plan is unchanged, removing the rest), then starts every
/// declared model not adopted (unless `server.start_models` is off: then nothing is adopted
/// either). Counts the models that fail.
fn start_models(shared: &Arc<Shared>, started_at: Instant) -> Arc<AtomicUsize> {
    let failures = Arc::new(AtomicUsize::new(0));
    let shared = Arc::clone(shared);
    let counted = Arc::clone(&failures);
    tokio::spawn(async move {
        // On-demand models start with their first request.
        let config = shared.config.load_full();
        let wanted: Vec<ModelSpec> = if config.server.start_models {
            config
                .specs()
                .filter(|s| s.load == cortex_core::Load::Always)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let adopted = reconcile(&shared, &wanted).await;
        for spec in wanted {
            if adopted.contains(&spec.id) {
                continue;
            }
            let shared = Arc::clone(&shared);
            let failures = Arc::clone(&counted);
            tokio::spawn(async move {
                let id = spec.id.clone();
                match shared.supervisor.start(spec).await {
                    Ok(()) => eprintln!(
                        "cortex: {id}: ready, {:.1} s after `cortex serve` began",
                        started_at.elapsed().as_secs_f64()
                    ),
                    Err(e) => {
                        eprintln!("cortex: {id}: {}", cortex_core::error_chain(&e));
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    failures
}

/// How often a gateway that does not run the engines looks at what the runtime runs.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// In the background, for a gateway with `server.manage_engines = false`: every
/// [`FOLLOW_EVERY`], the running and ready instances of the configured models, as the runtime
/// shows them, are registered, and those gone are dropped (`Supervisor::follow`).
fn follow_engines(shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        let mut failing = false;
        loop {
            tick.tick().await;
            let config = shared.config.load_full();
            let specs: Vec<ModelSpec> = config.specs().cloned().collect();
            match shared.supervisor.follow(&specs).await {
                Ok(report) => {
                    failing = false;
                    for ep in &report.registered {
                        eprintln!(
                            "cortex: {}/{}: following `{}` at {} (run by another manager)",
                            ep.model, ep.replica, ep.served_name, ep.base_url
                        );
                    }
                    for ep in &report.deregistered {
                        eprintln!(
                            "cortex: {}/{}: `{}` at {} is gone or not ready: out of the registry",
                            ep.model, ep.replica, ep.served_name, ep.base_url
                        );
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    eprintln!(
                        "cortex: cannot follow the engines (keeping those found last): {}",
                        cortex_core::error_chain(&e)
                    );
                }
                Err(_) => {}
            }
        }
    });
}

/// Writes every usage record of the requests served before the process exits — unless the
/// database stays unreachable for 10 s more.
async fn flush_usage(shared: &Shared) {
    let usage = Arc::clone(&shared.usage);
    let flushed = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || usage.flush()),
    )
    .await;
    if flushed.is_err() {
        eprintln!(
            "cortex: the usage database did not take the last records within 10 s; those still buffered are lost"
        );
    }
}

/// Adopts or removes what an earlier manager left; returns the models adopted (started) or
/// tried, which are not started again.
async fn reconcile(shared: &Shared, wanted: &[ModelSpec]) -> HashSet<ModelId> {
    let report = match shared.supervisor.reconcile(wanted).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!(
                "cortex: cannot take stock of engines left running: {}",
                cortex_core::error_chain(&e)
            );
            return HashSet::new();
        }
    };
    // Those of a model were announced by their events.
    for removal in report.removed.iter().filter(|r| r.model.is_none()) {
        eprintln!(
            "cortex: removed {} left by an earlier manager: {}",
            removal.instance, removal.reason
        );
    }
    for failure in &report.failed {
        eprintln!("cortex: {}", cortex_core::error_chain(failure));
    }
    report.adopted.iter().map(|a| a.model.clone()).collect()
}

/// Accepts connections on both listeners until Ctrl-C or SIGTERM.
async fn accept_until_signal(
    listener: &tokio::net::TcpListener,
    admin_listener: &tokio::net::TcpListener,
    app: &App,
    admin_app: &AdminApp,
    limits: &Limits,
    graceful: &GracefulShutdown,
    signals: &mut Signals,
) {
    let mut client_backoff = Backoff::default();
    let mut admin_backoff = Backoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    client_backoff.reset();
                    limits.serve(stream, app.clone(), graceful, true);
                }
                Err(e) => client_backoff.wait(&e).await,
            },
            accepted = admin_listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    admin_backoff.reset();
                    let app = AdminApp {
                        peer: Some(peer),
                        ..admin_app.clone()
                    };
                    limits.serve(stream, app, graceful, false);
                }
                Err(e) => admin_backoff.wait(&e).await,
            },
            () = signals.next() => return,
        }
    }
}

/// Lets requests in flight finish (up to `server.shutdown_grace`), then stops every engine; a
/// second signal kills them at once.
async fn drain_and_stop(
    shared: &Shared,
    graceful: GracefulShutdown,
    close: &tokio_util::sync::CancellationToken,
    signals: &mut Signals,
) {
    let grace = shared.config.load().server.shutdown_grace;
    let shown = humantime::format_duration(grace);
    eprintln!("cortex: draining requests in flight (up to {shown}; Ctrl-C again to stop now)");
    let forced = tokio::select! {
        () = graceful.shutdown() => false,
        () = tokio::time::sleep(grace) => {
            eprintln!("cortex: requests still in flight after {shown}: closing them and stopping anyway");
            false
        }
        () = signals.next() => true,
    };
    // What is still open is cut now, so that no engine waits on a client that is not coming.
    close.cancel();
    if forced {
        eprintln!("cortex: killing every engine");
        kill_all(shared).await;
        return;
    }
    eprintln!("cortex: stopping every engine (Ctrl-C again to kill them now)");
    tokio::select! {
        errors = shared.supervisor.shutdown() => {
            for e in errors {
                eprintln!("cortex: {}", cortex_core::error_chain(&e));
            }
        }
        () = signals.next() => {
            eprintln!("cortex: killing every engine");
            kill_all(shared).await;
        }
    }
}

/// The accept loop's wait after an error (out of file descriptors, say): 10 ms, doubling up to
/// 1 s, so a persistent error does not spin a core.
#[derive(Debug, Default)]
struct Backoff(Duration);

impl Backoff {
    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }

    async fn wait(&mut self, error: &std::io::Error) {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tracing::warn!(%error, wait = ?self.0, "accepting a connection failed");
        tokio::time::sleep(self.0).await;
    }
}

/// What every connection is held to.
#[derive(Debug)]
struct Limits {
    connections: Arc<Semaphore>,
    header_read_timeout: Duration,
    /// Cancelled when the drain is over: connections still open are closed before the engines
    /// are stopped (vLLM does not exit on SIGTERM while a client of a stream stays connected).
    close: tokio_util::sync::CancellationToken,
}

/// The answer to a connection over `server.max_connections`: whole, then the connection closes.
fn over_capacity() -> Bytes {
    let body = Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server has as many connections open as it may; try again shortly.",
    )
    .code("too_many_connections")
    .to_bytes();
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

impl Limits {
    /// Serves one connection on its own task, watched by `graceful`; a client connection over the
    /// cap is refused (the admin listener is not capped: an operator can always get in).
    fn serve<S>(
        &self,
        stream: tokio::net::TcpStream,
        service: S,
        graceful: &GracefulShutdown,
        capped: bool,
    ) where
        S: hyper::service::Service<
                Request<Incoming>,
                Response = Response<Body>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let permit = if capped {
            let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
                metrics::counter!("cortex_connections_refused_total").increment(1);
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt as _;
                    let mut stream = stream;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        stream.write_all(&over_capacity()),
                    )
                    .await;
                    let _ = stream.shutdown().await;
                });
                return;
            };
            Some(permit)
        } else {
            None
        };
        let _ = stream.set_nodelay(true);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let close = self.close.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                () = close.cancelled() => {}
            }
            drop(permit);
        });
    }
}

/// Reloads the configuration on SIGHUP ([`Shared::reload`]).
fn reload_on_hangup(shared: &Arc<Shared>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Err(errors) = shared.reload("SIGHUP").await {
                eprintln!(
                    "cortex: SIGHUP: the configuration was not reloaded; the file has errors:\n{errors}"
                );
            }
        }
    });
}

/// How often the keys in the usage database are read again (another gateway sharing it may have
/// added or revoked one).
const KEY_REFRESH: Duration = Duration::from_secs(10);

/// Reads the keys in the usage database again every [`KEY_REFRESH`], off the request path.
fn refresh_database_keys(shared: &Arc<Shared>) {
    if shared.usage.key_database().is_none() {
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEY_REFRESH);
        tick.tick().await;
        loop {
            tick.tick().await;
            let shared = Arc::clone(&shared);
            let _ = tokio::task::spawn_blocking(move || {
                let config = shared.config.load_full();
                shared.put_keys_in_force(&config);
            })
            .await;
        }
    });
}

/// Ctrl-C or SIGTERM.
/// Ctrl-C (SIGINT) and SIGTERM, listened for from the moment this is made: a signal that comes
/// while the server moves from one stage of its shutdown to the next (between the end of the
/// accept loop and the drain's wait, say) is kept for the next [`Signals::next`], not lost — as
/// it would be with a new listener made at each stage.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next Ctrl-C or SIGTERM (one that came since the last call included).
    async fn next(&mut self) {
        async fn one(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = one(self.interrupt.as_mut()) => {}
            () = one(self.terminate.as_mut()) => {}
        }
    }
}

/// Stops every instance at once, without grace.
async fn kill_all(shared: &Shared) {
    let instances: Vec<InstanceId> = shared
        .supervisor
        .list()
        .into_iter()
        .flat_map(|m| m.replicas)
        .filter_map(|r| r.instance)
        .collect();
    for id in instances {
        let _ = shared.runtime.stop(&id, Duration::ZERO).await;
    }
}

/// Prints the memory estimate of every llama.cpp model against the GPUs found.
fn print_estimates(config: &Config) {
    for spec in config.specs() {
        if let Some(args) = crate::plan::estimate_args(spec) {
            eprintln!("cortex: {}: memory estimate:", spec.id);
            let _ = crate::gguf::estimate(args.into_iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_core::ModelSource;

    #[test]
    fn vllm_replicas_get_max_num_seqs_slots_and_llama_cpp_its_parallel() {
        let spec = |id: &str, engine: EngineKind, setting: Option<(&str, u64)>| {
            let mut spec = ModelSpec::new(
                ModelId::new(id).unwrap(),
                engine,
                ModelSource::Path("/m".into()),
            );
            if let Some((k, v)) = setting {
                spec.settings.insert(k, v);
            }
            spec
        };
        let specs = [
            spec("llama", EngineKind::LLAMA_CPP, Some(("parallel", 2))),
            spec("llama-auto", EngineKind::LLAMA_CPP, None),
            spec("vllm", EngineKind::VLLM, Some(("max_num_seqs", 64))),
            spec("vllm-default", EngineKind::VLLM, None),
        ];
        let slots = slots_of(specs.iter());
        let of = |id: &str| slots.get(&ModelId::new(id).unwrap()).copied();
        assert_eq!(of("llama"), Some(2));
        assert_eq!(of("llama-auto"), None); // the gateway's default, 4
        assert_eq!(of("vllm"), Some(64));
        assert_eq!(of("vllm-default"), Some(256));
    }
}
