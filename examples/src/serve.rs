//! `cortex serve`: the gateway with every layer, the supervisor and the chosen runtime, serving
//! what a [`Config`] declares, until Ctrl-C.
//!
//! One listener answers:
//!
//! - `GET /health`: 200 and every model's state (the process is up; `ready` says whether every
//!   declared model is running);
//! - `GET /metrics`: the gateway's Prometheus metrics (the `metrics` facade, rendered by
//!   `metrics-exporter-prometheus`);
//! - `/admin/…`: the [admin API](crate::admin), with the admin key;
//! - everything else: the gateway (auth → route → meter → balance → breaker → queue → proxy).
//!
//! While models load, their state changes and their engines' own log lines are printed to stderr
//! (an engine's log stops being copied once it is running, so request logs do not flood the
//! terminal; `cortex models logs` shows them). The first Ctrl-C (or SIGTERM) deregisters and stops
//! every engine this process started, each with its plan's grace period, then exits; a second one
//! kills what is still running and exits at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cortex_core::{
    DynHealthProbe, DynRuntime, EngineKind, Event, EventKind, InstanceId, ModelId, ModelState,
    Supervisor,
};
use cortex_engines::{
    DockerRuntime, HttpProbe, LlamaCppEngine, ProcessRuntime, VllmEngine, VllmSettings,
};
use cortex_gateway::balance::Policy;
use cortex_gateway::breaker::CircuitBreakerLayer;
use cortex_gateway::error::Refusal;
use cortex_gateway::meter::InMemoryUsage;
use cortex_gateway::proxy::Proxy;
use cortex_gateway::{Gateway, GatewayBody, GatewayBuilder};
use futures_util::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceExt as _;

use crate::admin::{self, Admin};
use crate::config::{BalancePolicy, Config, RuntimeKind};

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
}

/// The parts of a running server the admin API and the shutdown share.
#[derive(Debug)]
pub struct Shared {
    /// The configuration served.
    pub config: Config,
    /// The configuration's file.
    pub config_path: PathBuf,
    /// The supervisor.
    pub supervisor: Supervisor,
    /// The runtime, for logs and forced stops.
    pub runtime: Arc<dyn DynRuntime>,
    /// Usage by key and model.
    pub usage: Arc<InMemoryUsage>,
    /// The Prometheus recorder's handle.
    pub metrics: Option<PrometheusHandle>,
}

/// The response body of the server: the gateway's, or one written here.
pub type Body = Either<GatewayBody, Full<Bytes>>;

/// The top-level service: health, metrics, admin, else the gateway.
#[derive(Debug, Clone)]
pub struct App {
    gateway: Gateway,
    shared: Arc<Shared>,
    admin: Admin,
}

impl hyper::service::Service<Request<Incoming>> for App {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let path = req.uri().path();
        if path == "/health" {
            let response = admin::health(&self.shared);
            return Box::pin(async move { Ok(response.map(Either::Right)) });
        }
        if path == "/metrics" {
            let text = self
                .shared
                .metrics
                .as_ref()
                .map(PrometheusHandle::render)
                .unwrap_or_default();
            let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return Box::pin(async move { Ok(response) });
        }
        if path.starts_with("/admin/") || path == "/admin" {
            let admin = self.admin.clone();
            return Box::pin(async move { Ok(admin.handle(req).await.map(Either::Right)) });
        }
        // No `async` block here: rustc cannot prove such a block `Send` over the gateway's
        // future ("higher-ranked lifetime error"); the combinator's type can.
        Box::pin(futures_util::FutureExt::map(
            self.gateway.clone().oneshot(req),
            |result| match result {
                Ok(response) => Ok(response.map(Either::Left)),
                Err(never) => match never {},
            },
        ))
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
async fn runtime(kind: RuntimeKind) -> Result<Arc<dyn DynRuntime>, ServeError> {
    Ok(match kind {
        RuntimeKind::Process => Arc::new(ProcessRuntime::new()),
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

/// Builds the gateway of `config` over `supervisor`'s registry.
pub fn gateway(config: &Config, supervisor: &Supervisor, usage: Arc<InMemoryUsage>) -> Gateway {
    let g = &config.gateway;
    // Slots per replica: what the engine runs at once. llama-server: its `parallel` (-np), else
    // the gateway's default (4, llama-server's -np auto); vLLM: its `max_num_seqs` (256 unless
    // set), since it batches that many sequences.
    let slots: HashMap<ModelId, usize> = config
        .specs()
        .filter_map(|s| {
            let n = if s.engine == EngineKind::VLLM {
                u64::from(s.settings.decode::<VllmSettings>().ok()?.max_num_seqs)
            } else {
                s.settings.get("parallel")?.as_u64()?
            };
            Some((s.id.clone(), usize::try_from(n).ok()?))
        })
        .collect();
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
    let mut builder = GatewayBuilder::new(Arc::clone(supervisor.registry()))
        .usage_sink(usage)
        .body_limit(g.body_limit)
        .body_budget(cortex_gateway::route::BodyBudget::new(g.body_budget))
        .surface(config.surface())
        .balance(match g.balance {
            BalancePolicy::LeastInFlight => Policy::LeastInFlight,
            BalancePolicy::RoundRobin => Policy::RoundRobin,
        })
        .breaker(
            CircuitBreakerLayer::new()
                .failures(g.breaker_failures)
                .cooldown(g.breaker_cooldown),
        )
        .slots_per_replica(move |e| slots.get(&e.model).copied().unwrap_or(default_slots))
        .queue_limits(g.max_waiting, g.queue_timeout)
        .proxy(
            Proxy::new()
                .first_byte_timeout(g.first_byte_timeout)
                .idle_timeout(g.idle_timeout)
                .upstream_key(move |e| upstream_keys.get(&e.model).cloned()),
        );
    if config.server.auth {
        builder = builder.keys(config.key_store());
    }
    builder.unrouted(unrouted(config, supervisor)).build()
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
    move |model: &str| {
        let id = ids.get(model)?;
        let unavailable = |message: String, code: &'static str| {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message).code(code)
        };
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

/// Serves `config` until Ctrl-C or SIGTERM.
///
/// # Errors
///
/// [`ServeError`]: the listener or the runtime could not be set up (nothing was started), or
/// models failed to start (reported when serving ends).
pub async fn serve(config: Config, config_path: PathBuf) -> Result<(), ServeError> {
    let started_at = Instant::now();
    let addr = config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let runtime = runtime(config.runtime.kind).await?;
    let probe: Arc<dyn DynHealthProbe> = Arc::new(HttpProbe::default());
    let supervisor = Supervisor::builder(Arc::clone(&runtime), probe)
        .engine(Arc::new(LlamaCppEngine::new()))
        .engine(Arc::new(VllmEngine::new()))
        .config(config.supervisor.clone())
        .build();
    let usage = Arc::new(InMemoryUsage::new());
    let gateway = gateway(&config, &supervisor, Arc::clone(&usage));
    let shared = Arc::new(Shared {
        config,
        config_path,
        supervisor,
        runtime,
        usage,
        metrics: install_metrics(),
    });
    let app = App {
        gateway,
        admin: Admin::new(Arc::clone(&shared)),
        shared: Arc::clone(&shared),
    };
    eprintln!(
        "cortex: listening on http://{} (OpenAI API under /v1, health /health, metrics /metrics{})",
        listener.local_addr().unwrap_or(addr),
        if shared.config.admin_key().is_some() {
            ", admin /admin"
        } else {
            "; no admin key: admin API off"
        }
    );
    report_progress(&shared);
    print_estimates(&shared.config);

    let failures = Arc::new(AtomicUsize::new(0));
    if shared.config.server.start_models {
        for spec in shared.config.specs().cloned() {
            let shared = Arc::clone(&shared);
            let failures = Arc::clone(&failures);
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
    }

    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            spawn_connection(TokioIo::new(stream), app.clone());
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown_signal() => {}
    }
    eprintln!("cortex: stopping every engine (Ctrl-C again to kill them now)");
    tokio::select! {
        errors = shared.supervisor.shutdown() => {
            for e in errors {
                eprintln!("cortex: {}", cortex_core::error_chain(&e));
            }
        }
        () = shutdown_signal() => {
            eprintln!("cortex: killing every engine");
            kill_all(&shared).await;
        }
    }
    eprintln!("cortex: stopped");
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(ServeError::Models(failed));
    }
    Ok(())
}

/// Serves one connection on its own task.
fn spawn_connection<I, S>(io: I, service: S)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::spawn(async move {
        let _ = connection.await;
    });
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
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
