//! `cortex.toml`: what `cortex serve` runs, read and checked before anything starts.
//!
//! Every error names the file, the line and column, and the field: a TOML syntax error or an
//! unknown or mistyped field (from the `toml` crate, whose spans point at the value), a key hash
//! that does not parse, a model id declared twice, a key allowed a model that is not declared, and
//! every error the model's engine finds in its settings and custom arguments (the same planning
//! the supervisor does, run once per model with nothing started). See docs/configuration.md for
//! every field.
//!
//! Paths in `source.path`, `settings.program`, `settings.chat_template_file` and
//! `settings.grammar_file` may start with `~/` and use `${NAME}` or `${NAME:-default}` for
//! environment variables; the shipped `examples/cortex.toml` finds the model and the engine
//! `scripts/setup` installs that way.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cortex_core::{
    Engine, EngineKind, ModelSource, ModelSpec, PlanContext, PlanError, Severity, SupervisorConfig,
    TargetKind,
};
use cortex_engines::{LlamaCppEngine, VllmEngine};
use cortex_gateway::auth::{ApiKey, InMemoryKeyStore, KeyHash};
use cortex_gateway::breaker::CircuitBreakerLayer;
use serde::Deserialize;
use toml::Spanned;

/// A problem in the file and where it is written, when it has a place.
type Located = (Option<Range<usize>>, String);

/// A whole `cortex.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: where the gateway listens, the admin key.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[runtime]`: child processes or Docker containers.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// `[supervisor]`: probing and restarts (`cortex_core::SupervisorConfig`).
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    /// `[gateway]`: the layers' settings.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// `[[keys]]`: the API keys clients use, as digests.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// `[[models]]`: the models to serve (`cortex_core::ModelSpec`).
    #[serde(default)]
    pub models: Vec<Spanned<ModelSpec>>,
    /// `[[gpu]]`: the machine's GPUs (`index`, `name`, `total_bytes`, optional `free_bytes` and
    /// `uuid`, as `cortex gguf estimate --gpus` reads them). vLLM plans are sized against them: a
    /// model that will not fit is refused with the changes that would make it fit.
    #[serde(default)]
    pub gpu: Vec<cortex_gguf::Gpu>,
    /// `[usage]`: where usage records are kept.
    #[serde(default)]
    pub usage: UsageConfig,
    /// `[budget]`: the memory models loaded on demand must fit in.
    #[serde(default)]
    pub budget: BudgetConfig,
}

/// `[budget]`: memory the running models may use together, by the llama.cpp estimator. Before an
/// on-demand model starts, idle on-demand models are stopped (least recently used first) until
/// it fits; a model that cannot fit is refused with its estimate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Host memory, in MiB (no limit when not given).
    pub host_mib: Option<u64>,
    /// Memory per GPU, in MiB, by index (default: each `[[gpu]]`'s total).
    pub gpu_mib: Vec<u64>,
}

/// `[usage]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// `sqlite` (default): every record in an embedded SQLite database, kept across restarts;
    /// `postgres`: every record in a PostgreSQL database several gateways may share;
    /// `memory`: totals by key and model since the server started.
    pub store: UsageStoreKind,
    /// The SQLite file. Default: `usage.sqlite3` in the runtime's state directory.
    pub path: Option<PathBuf>,
    /// The PostgreSQL server, for `store = "postgres"`: connection parameters
    /// (`host=db port=5432 user=cortex dbname=cortex`) or a `postgresql://` URL. Error messages
    /// name only its host, port and database.
    pub postgres: Option<String>,
    /// Records waiting for the database at most; beyond, records are dropped and counted
    /// (`cortex_usage_dropped_total`). Default 65,536.
    pub buffer: Option<usize>,
}

/// `usage.store`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageStoreKind {
    /// An embedded SQLite database.
    #[default]
    Sqlite,
    /// A PostgreSQL database (`usage.postgres`).
    Postgres,
    /// In memory, totals only.
    Memory,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "the switches of the file's [server] table, one field each"
)]
pub struct ServerConfig {
    /// The gateway's address: the OpenAI API and `/health`. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The admin API's own address (`/admin/…`, `/metrics`, `/health`), never the clients'.
    /// Default `127.0.0.1:8081`: loopback only.
    pub admin_listen: SocketAddr,
    /// Also serve `/metrics` on the client listener. Default false.
    pub metrics_on_listen: bool,
    /// Connections open at once on the client listener; past it a connection gets 503 and is
    /// closed. Default 4096.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a request body may go without sending anything. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// On Ctrl-C or SIGTERM, how long requests and streams in flight may run before the engines
    /// are stopped anyway. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// One line per request on stdout: `json` (default), `logfmt` or `off`.
    pub access_log: AccessLogFormat,
    /// The digest (`sha256:…`) of the admin API key; the admin API is off without one.
    pub admin_key: Option<Spanned<String>>,
    /// Whether clients need an API key. Default true; false serves anyone who can connect.
    pub auth: bool,
    /// Start every model when serving starts. Default true; false waits for `cortex models start`.
    pub start_models: bool,
    /// Whether this gateway runs the engines. Default true. False: it starts, stops, adopts and
    /// removes nothing, and serves the engines another `cortex serve` of the same models runs, as
    /// the runtime shows them (a Docker Swarm or Docker runtime): every 2 s it registers the
    /// running, ready instances of its configured models and drops those gone. Start, stop and the
    /// models part of a reload belong to the gateway that runs them.
    pub manage_engines: bool,
    /// Where `POST /admin/keys` keeps a new client key: `file` (default: a `[[keys]]` table in
    /// this file) or `database` (the usage database's key table, which several gateways sharing a
    /// PostgreSQL database all read). Keys of both places are in force either way.
    pub new_keys: NewKeys,
    /// Directories whose GGUF files the admin page's memory calculator offers (`${VAR}` and `~`
    /// expanded; not searched below them). Default: the directories of the configured models'
    /// GGUF files.
    pub model_dirs: Vec<String>,
}

/// `server.new_keys`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewKeys {
    /// A `[[keys]]` table in the configuration file.
    #[default]
    File,
    /// The usage database.
    Database,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            metrics_on_listen: false,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            access_log: AccessLogFormat::Json,
            admin_key: None,
            auth: true,
            start_models: true,
            manage_engines: true,
            new_keys: NewKeys::File,
            model_dirs: Vec::new(),
        }
    }
}

/// `server.access_log`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs per line.
    Logfmt,
    /// No access log.
    Off,
}

/// `[runtime]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `process` (default), `docker` or `swarm`.
    pub kind: RuntimeKind,
    /// Swarm runtime: placement constraints every model's services get (`node.labels.gpu ==
    /// l4`), unless the model has its own in `placement`.
    pub constraints: Vec<String>,
    /// Swarm runtime: node labels to spread every model's services over (`node.labels.zone`).
    pub spread: Vec<String>,
    /// Swarm runtime: per model id, its own constraints and spread.
    pub placement: std::collections::BTreeMap<String, PlacementConfig>,
    /// Swarm runtime: the address endpoints are reached at instead of each node's address in
    /// the swarm.
    pub node_address: Option<String>,
    /// Process runtime: where each engine it starts is recorded until stopped, so that a
    /// `cortex serve` started after a crash finds what the last one left (and adopts or removes
    /// it). Default `$XDG_STATE_HOME/cortex/serve-<listen address>` (`~/.local/state/…` without
    /// `XDG_STATE_HOME`): one directory per listen address, since one manager holds it at a time.
    pub state_dir: Option<PathBuf>,
    /// Process runtime: whether engines keep running when `cortex serve` dies without stopping
    /// them (a crash, `SIGKILL`), to be adopted by the next one without reloading their models;
    /// their output goes to files in `state_dir`. Default false: they die with it. A clean
    /// shutdown (Ctrl-C, SIGTERM) stops them either way.
    pub outlive_manager: bool,
}

impl RuntimeConfig {
    /// The process runtime's state directory for a server listening on `listen`.
    pub fn state_dir(&self, listen: SocketAddr) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("cortex").join(format!(
            "serve-{}",
            listen.to_string().replace([':', '[', ']'], "_")
        ))
    }
}

/// `[runtime.placement.MODEL]`: where one model's services may run (Swarm runtime).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    /// Constraints, each of which must hold on the node.
    pub constraints: Vec<String>,
    /// Node labels to spread the model's services over.
    pub spread: Vec<String>,
}

impl PlacementConfig {
    /// As the Swarm runtime takes it.
    pub fn placement(constraints: &[String], spread: &[String]) -> cortex_engines::Placement {
        let mut p = cortex_engines::Placement::new();
        for c in constraints {
            p = p.constraint(c.clone());
        }
        for s in spread {
            p = p.spread(s.clone());
        }
        p
    }
}

/// What runs the engines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Child processes of `cortex serve` (`settings.program` is the engine's binary).
    #[default]
    Process,
    /// Containers on the local Docker Engine (`settings.image`).
    Docker,
    /// Docker Swarm services, one per replica, created through the local Docker Engine (a swarm
    /// manager); `settings.image` as for `docker`.
    Swarm,
}

impl RuntimeKind {
    /// What this runtime starts, for planning.
    pub fn target(self) -> TargetKind {
        match self {
            Self::Process => TargetKind::Process,
            Self::Docker | Self::Swarm => TargetKind::Container,
        }
    }
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The largest request body, in bytes. Default 32 MiB.
    pub body_limit: usize,
    /// Bytes of request bodies held at once, over every request being routed or queued; beyond
    /// it requests are refused with 503 and `Retry-After`. Default 256 MiB.
    pub body_budget: usize,
    /// `[[gateway.allow]]`: paths beyond the OpenAI surface that requests for a model may reach.
    pub allow: Vec<AllowConfig>,
    /// `least-in-flight` (default) or `round-robin`.
    pub balance: BalancePolicy,
    /// Requests in flight per replica when the model's settings do not say (`parallel`). Default 4.
    pub slots: usize,
    /// Requests that may wait per replica. Default 256.
    pub max_waiting: usize,
    /// How long a request may wait for a slot. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Failures in a row that open a replica's circuit. Default 5.
    pub breaker_failures: NonZeroU32,
    /// How long an open circuit waits before one probe request. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// How long the first byte of an answer may take. Default 300 s.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// How long a stream may stay silent between chunks. Default 120 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            body_limit: 32 << 20,
            body_budget: cortex_gateway::route::DEFAULT_BODY_BUDGET,
            allow: Vec::new(),
            balance: BalancePolicy::LeastInFlight,
            slots: 4,
            max_waiting: 256,
            queue_timeout: Duration::from_secs(30),
            breaker_failures: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            breaker_cooldown: Duration::from_secs(30),
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// One `[[gateway.allow]]` entry: more of an engine's paths, for one model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    /// The model's served name.
    pub model: Spanned<String>,
    /// `"METHOD /path"` each, such as `"POST /tokenize"`; exact paths, without a query.
    pub paths: Spanned<Vec<String>>,
}

/// Methods an allowed path may name.
const ALLOW_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Reads `"METHOD /path"`.
fn allowed_path(entry: &str) -> Result<(http::Method, &str), String> {
    let Some((method, path)) = entry.split_once(' ') else {
        return Err(format!(
            "`{entry}` is not `METHOD /path` (such as `POST /tokenize`)"
        ));
    };
    if !ALLOW_METHODS.contains(&method) {
        return Err(format!(
            "`{entry}`: the method must be one of {}",
            ALLOW_METHODS.join(", ")
        ));
    }
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(format!(
            "`{entry}`: the path must start with `/` and hold no query, fragment or space"
        ));
    }
    if path == "/v1/models" || path.starts_with("/v1/models/") {
        return Err(format!("`{entry}`: the gateway answers `{path}` itself"));
    }
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    Ok((method, path))
}

impl GatewayConfig {
    /// The circuit breaker these settings make (the maximum cooldown is 5 minutes, or the
    /// cooldown when longer).
    ///
    /// # Errors
    ///
    /// Settings that cannot work (a zero cooldown), as [`CircuitBreakerLayer::try_new`] says.
    pub fn breaker(&self) -> Result<CircuitBreakerLayer, cortex_gateway::breaker::InvalidBreaker> {
        CircuitBreakerLayer::try_new(
            self.breaker_failures.get(),
            self.breaker_cooldown,
            self.breaker_cooldown.max(Duration::from_secs(300)),
        )
    }
}

/// `gateway.balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalancePolicy {
    /// The less busy of two replicas picked at random.
    LeastInFlight,
    /// Each replica in turn.
    RoundRobin,
}

/// One `[[keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A name for the key, in logs and usage records (never the key).
    pub id: Spanned<String>,
    /// `sha256:` and the 64 hex digits of the key's digest (`cortex keys new` writes it).
    pub hash: Spanned<String>,
    /// The models (served names) the key may use; every model when absent.
    #[serde(default)]
    pub models: Option<Spanned<Vec<String>>>,
    /// Requests per minute allowed to the key; no limit when absent.
    #[serde(default)]
    pub requests_per_minute: Option<NonZeroU32>,
}

/// A configuration that cannot be used, with where it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// Line and column, from 1, when the error has a place in the file.
    pub at: Option<(usize, usize)>,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error of a configuration (a file is reported whole, not one error at a time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Line and column (from 1) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Config {
    /// Reads and checks `path`.
    ///
    /// # Errors
    ///
    /// Every problem found, each with the file, line, column and field.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: path.to_owned(),
                at: None,
                message: format!("cannot read the configuration: {e}"),
            }])
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks `text`, read from `path` (named in errors).
    ///
    /// # Errors
    ///
    /// Every problem found, each with the file, line, column and field.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        let error = |span: Option<Range<usize>>, message: String| ConfigError {
            path: path.to_owned(),
            at: span.map(|s| line_col(text, s.start)),
            message,
        };
        let mut config: Self = toml::from_str(text)
            .map_err(|e| ConfigErrors(vec![error(e.span(), e.message().trim_end().to_owned())]))?;
        let mut errors = Vec::new();

        if let Some(admin) = &config.server.admin_key {
            if let Err(e) = KeyHash::parse(admin.get_ref()) {
                errors.push(error(Some(admin.span()), format!("server.admin_key: {e}")));
            }
        }
        for (i, model) in config.models.iter_mut().enumerate() {
            let span = model.span();
            let spec = model.get_mut();
            if let Err(e) = expand_paths(spec) {
                errors.push(error(Some(span), format!("models[{i}] ({}): {e}", spec.id)));
            }
        }
        let (model_errors, names) = config.model_errors(text);
        for (span, message) in model_errors {
            errors.push(error(span, message));
        }
        for (i, model) in config.models.iter().enumerate() {
            let spec = model.get_ref();
            if spec.idle_unload.is_some() && spec.load == cortex_core::Load::Always {
                errors.push(error(
                    Some(field_span(text, model.span(), "idle_unload")),
                    format!(
                        "models[{i}].idle_unload: only an on-demand model is unloaded (add load = \"on-demand\")"
                    ),
                ));
            }
        }
        // A fallback is a name another model serves (not an alias: the registry knows served
        // names only); one hop, so cycles are harmless.
        let aliases: Vec<&str> = config
            .specs()
            .flat_map(|s| s.aliases.iter().map(String::as_str))
            .collect();
        for (i, model) in config.models.iter().enumerate() {
            for name in &model.get_ref().fallback {
                let owner = names.iter().find(|(n, _)| n == name).map(|(_, o)| *o);
                let problem = match owner {
                    _ if aliases.contains(&name.as_str()) => {
                        Some("is an alias; name the model's served name")
                    }
                    Some(o) if o == i => Some("is this model itself"),
                    Some(_) => None,
                    None => Some("is not a name any model in this file serves"),
                };
                if let Some(problem) = problem {
                    errors.push(error(
                        Some(field_span(text, model.span(), "fallback")),
                        format!("models[{i}].fallback: `{name}` {problem}"),
                    ));
                }
            }
        }
        for (i, key) in config.keys.iter().enumerate() {
            if let Err(e) = KeyHash::parse(key.hash.get_ref()) {
                errors.push(error(Some(key.hash.span()), format!("keys[{i}].hash: {e}")));
            }
            if let Some(models) = &key.models {
                for name in models.get_ref() {
                    if !names.iter().any(|(n, _)| n == name) {
                        errors.push(error(
                            Some(models.span()),
                            format!(
                                "keys[{i}].models: `{name}` is not a name any model in this file serves"
                            ),
                        ));
                    }
                }
            }
            if config.keys[..i]
                .iter()
                .any(|k| k.id.get_ref() == key.id.get_ref())
            {
                errors.push(error(
                    Some(key.id.span()),
                    format!(
                        "keys[{i}].id: `{}` is used by another key",
                        key.id.get_ref()
                    ),
                ));
            }
        }
        for (span, message) in config.setting_errors() {
            errors.push(error(span, message));
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The model specs, in file order.
    pub fn specs(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.iter().map(Spanned::get_ref)
    }

    /// The model with id or served name `name`.
    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.specs()
            .find(|s| s.id.as_str() == name || s.served_name() == name)
    }

    /// The client keys, for the gateway.
    pub fn key_store(&self) -> InMemoryKeyStore {
        let mut store = InMemoryKeyStore::new();
        for key in &self.keys {
            let Ok(hash) = KeyHash::parse(key.hash.get_ref()) else {
                continue; // refused by `parse`
            };
            let mut api = ApiKey::new(key.id.get_ref().as_str());
            if let Some(models) = &key.models {
                api = api.allow_models(models.get_ref().iter().cloned());
            }
            if let Some(rpm) = key.requests_per_minute {
                api = api.requests_per_minute(rpm);
            }
            store.insert(hash, api);
        }
        store
    }

    /// The models' aliases and fallbacks, for the gateway's route.
    pub fn names(&self) -> cortex_gateway::route::Names {
        let mut names = cortex_gateway::route::Names::new();
        for spec in self.specs() {
            for alias in &spec.aliases {
                names = names.alias(alias.as_str(), spec.served_name());
            }
            if !spec.fallback.is_empty() {
                names = names.fallback(spec.served_name(), spec.fallback.iter().cloned());
            }
        }
        names
    }

    /// What is wrong with the models (ids, served names, plans), with where; and every name a
    /// model serves (its served name and the names its plan adds: vLLM's LoRA adapters) with the
    /// model that serves it.
    fn model_errors(&self, text: &str) -> (Vec<Located>, Vec<(String, usize)>) {
        let mut errors = Vec::new();
        let target = self.runtime.kind.target();
        // Every name a model serves: its served name and the names its plan adds (vLLM's LoRA
        // adapters), with the model that serves it.
        let mut names: Vec<(String, usize)> = Vec::new();
        for (i, model) in self.models.iter().enumerate() {
            let spec = model.get_ref();
            let (plan_errors, aliases) = plan_check(spec, target, &self.gpu);
            if let Some(first) = self.models[..i]
                .iter()
                .position(|m| m.get_ref().id == spec.id)
            {
                errors.push((
                    Some(field_span(text, model.span(), "id")),
                    format!(
                        "models[{i}].id: `{}` is already the id of models[{first}]",
                        spec.id
                    ),
                ));
            }
            if let Some(first) = self.models[..i]
                .iter()
                .position(|m| m.get_ref().served_name() == spec.served_name())
            {
                errors.push((
                    Some(field_span(text, model.span(), "served_name")),
                    format!(
                        "models[{i}].served_name: `{}` is already served by models[{first}]",
                        spec.served_name()
                    ),
                ));
            }
            for (field, message) in plan_errors {
                errors.push((
                    Some(field_span(text, model.span(), &field)),
                    format!("models[{i}] ({}): {message}", spec.id),
                ));
            }
            // A served name an earlier model's adapter already takes (an earlier model's served
            // name is the duplicate reported above).
            let served = spec.served_name();
            if let Some((_, owner)) = names
                .iter()
                .find(|(n, owner)| n == served && self.models[*owner].get_ref().served_name() != n)
            {
                errors.push((
                    Some(field_span(text, model.span(), "served_name")),
                    format!("models[{i}].served_name: `{served}` is already served by models[{owner}] (an alias or a LoRA adapter)"),
                ));
            }
            names.push((served.to_owned(), i));
            for alias in &spec.aliases {
                let taken = names.iter().find(|(n, _)| n == alias);
                let problem = if alias.trim().is_empty() || alias.chars().any(char::is_control) {
                    Some("is not a name (empty, or with control characters)".to_owned())
                } else {
                    taken.map(|(_, first)| format!("is already served by models[{first}]"))
                };
                if let Some(problem) = problem {
                    errors.push((
                        Some(field_span(text, model.span(), "aliases")),
                        format!("models[{i}].aliases: `{alias}` {problem}"),
                    ));
                }
                names.push((alias.clone(), i));
            }
            for alias in aliases {
                if let Some((_, first)) = names.iter().find(|(n, _)| *n == alias) {
                    errors.push((
                        Some(field_span(text, model.span(), "lora_adapters")),
                        format!(
                            "models[{i}] ({}): `{alias}` is already served by models[{first}]",
                            spec.id
                        ),
                    ));
                }
                names.push((alias, i));
            }
        }
        (errors, names)
    }

    /// What is wrong in `[server]` and `[[gateway.allow]]`, with where.
    fn setting_errors(&self) -> Vec<Located> {
        let mut errors = Vec::new();
        if let Err(e) = self.gateway.breaker() {
            errors.push((None, format!("gateway.breaker_cooldown: {e}")));
        }
        if self.server.max_connections == 0 {
            errors.push((
                None,
                "server.max_connections: must be at least 1".to_owned(),
            ));
        }
        if self.server.new_keys == NewKeys::Database && self.usage.store == UsageStoreKind::Memory {
            errors.push((
                None,
                "server.new_keys: \"database\" needs a usage database ([usage] store = \"sqlite\" or \"postgres\")".to_owned(),
            ));
        }
        if self.usage.store == UsageStoreKind::Postgres && self.usage.postgres.is_none() {
            errors.push((
                None,
                "usage.postgres: store = \"postgres\" needs the server's connection parameters (postgres = \"host=… user=… dbname=…\")".to_owned(),
            ));
        }
        for id in self.runtime.placement.keys() {
            if self.specs().all(|m| m.id.as_str() != id) {
                errors.push((
                    None,
                    format!("runtime.placement.{id}: no model has the id `{id}`"),
                ));
            }
        }
        let placed = !self.runtime.constraints.is_empty()
            || !self.runtime.spread.is_empty()
            || !self.runtime.placement.is_empty()
            || self.runtime.node_address.is_some();
        if placed && self.runtime.kind != RuntimeKind::Swarm {
            errors.push((
                None,
                "runtime: constraints, spread, placement and node_address are for kind = \"swarm\""
                    .to_owned(),
            ));
        }
        if self.server.admin_listen == self.server.listen {
            errors.push((
                None,
                format!(
                    "server.admin_listen: {} is also server.listen; the admin API needs an address of its own",
                    self.server.admin_listen
                ),
            ));
        }
        for (i, allow) in self.gateway.allow.iter().enumerate() {
            let model = allow.model.get_ref();
            if !self.specs().any(|m| m.served_name() == model) {
                errors.push((
                    Some(allow.model.span()),
                    format!(
                        "gateway.allow[{i}].model: `{model}` is not the served name of any model in this file"
                    ),
                ));
            }
            for entry in allow.paths.get_ref() {
                if let Err(e) = allowed_path(entry) {
                    errors.push((
                        Some(allow.paths.span()),
                        format!("gateway.allow[{i}].paths: {e}"),
                    ));
                }
            }
        }
        errors
    }

    /// The paths clients may reach: the engines' OpenAI surface and `[[gateway.allow]]`.
    pub fn surface(&self) -> cortex_gateway::route::Surface {
        let mut surface = cortex_gateway::route::Surface::new();
        for allow in &self.gateway.allow {
            for entry in allow.paths.get_ref() {
                if let Ok((method, path)) = allowed_path(entry) {
                    surface = surface.allow(allow.model.get_ref(), method, path);
                }
            }
        }
        surface
    }

    /// The admin key's digest.
    pub fn admin_key(&self) -> Option<KeyHash> {
        self.server
            .admin_key
            .as_ref()
            .and_then(|k| KeyHash::parse(k.get_ref()).ok())
    }
}

/// Where every command looks for its configuration, in order, when `--config` is not given: the
/// file `$CORTEX_CONFIG` names, then `./cortex.toml`, then `$XDG_CONFIG_HOME/cortex/cortex.toml`
/// (`~/.config/cortex/cortex.toml`).
pub fn search_path() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("CORTEX_CONFIG").filter(|p| !p.is_empty()) {
        paths.push(PathBuf::from(p));
    }
    paths.push(PathBuf::from("cortex.toml"));
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(home) = config_home {
        paths.push(home.join("cortex/cortex.toml"));
    }
    paths
}

/// The configuration file to use: `explicit` (`--config`) when given, else the first file of
/// [`search_path`] that exists.
///
/// # Errors
///
/// No file was given and none of the search path exists; the message lists where it looked.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigErrors> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let paths = search_path();
    if let Some(found) = paths.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(ConfigErrors(vec![ConfigError {
        path: PathBuf::from("cortex.toml"),
        at: None,
        message: format!(
            "no configuration found (looked in: {}); pass --config FILE or set CORTEX_CONFIG (scripts/quickstart makes ./cortex.toml from examples/cortex.toml)",
            looked.join(", ")
        ),
    }]))
}

/// The engine of `spec`, for planning on a machine with `gpus` (the configured inventory).
pub fn engine_for(spec: &ModelSpec, gpus: &[cortex_gguf::Gpu]) -> Option<Box<dyn Engine>> {
    if spec.engine == EngineKind::LLAMA_CPP {
        Some(Box::new(LlamaCppEngine::new()))
    } else if spec.engine == EngineKind::VLLM {
        Some(Box::new(VllmEngine::new().with_gpus(gpus.iter().cloned())))
    } else {
        None
    }
}

/// The errors planning `spec` finds, each with the field it is about (warnings are left to
/// `cortex plan` and the serve log), and the other names its plan serves.
fn plan_check(
    spec: &ModelSpec,
    target: TargetKind,
    gpus: &[cortex_gguf::Gpu],
) -> (Vec<(String, String)>, Vec<String>) {
    let Some(engine) = engine_for(spec, gpus) else {
        return (
            vec![(
                "engine".to_owned(),
                format!(
                    "engine: `{}` is not an engine this binary has (llamacpp, vllm)",
                    spec.engine
                ),
            )],
            Vec::new(),
        );
    };
    match engine.plan(spec, &PlanContext::new(target, 0, engine.default_port())) {
        Ok(planned) => (Vec::new(), planned.plan.aliases),
        Err(PlanError::Invalid { diagnostics, .. }) => (
            diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| (d.field.clone(), d.to_string()))
                .collect(),
            Vec::new(),
        ),
        Err(e) => (
            vec![(String::new(), cortex_core::error_chain(&e))],
            Vec::new(),
        ),
    }
}

/// Where `field` (`id`, `settings.cache_type_v`, `args[3]`) is written in the `[[models]]` entry
/// whose span is `table`: the key of the line `name = …` for its last path segment, searched from
/// the entry's header through its `[models.…]` sub-tables; the entry itself when the field is not
/// written there (a default, say).
fn field_span(text: &str, table: Range<usize>, field: &str) -> Range<usize> {
    let name = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .split('[')
        .next()
        .unwrap_or_default();
    let Some(body) = text.get(table.start..) else {
        return table;
    };
    let mut offset = table.start;
    for (n, line) in body.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        // The next table that is not this entry's own ends the search.
        if n > 0 && trimmed.starts_with('[') && !trimmed.starts_with("[models.") {
            break;
        }
        if !name.is_empty()
            && trimmed
                .strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            let at = offset + (line.len() - trimmed.len());
            return at..at + name.len();
        }
        offset += line.len();
    }
    table
}

/// Expands `~/` and `${NAME}` / `${NAME:-default}` in the spec's path fields.
fn expand_paths(spec: &mut ModelSpec) -> Result<(), String> {
    if let ModelSource::Path(path) = &mut spec.source {
        let text = path.to_string_lossy().into_owned();
        *path = PathBuf::from(expand(&text).map_err(|e| format!("source.path: {e}"))?);
    }
    for field in [
        "program",
        "chat_template_file",
        "grammar_file",
        "chat_template",
        "generation_config",
        "hf_cache",
    ] {
        if let Some(serde_json::Value::String(text)) = spec.settings.get(field) {
            // vLLM's `chat_template` may be the template itself: only a path is expanded.
            if field == "chat_template" && text.contains(['{', '}', '\n']) {
                continue;
            }
            let expanded = expand(text).map_err(|e| format!("settings.{field}: {e}"))?;
            spec.settings.insert(field, expanded);
        }
    }
    // vLLM's LoRA adapters' directories.
    if let Some(serde_json::Value::Array(adapters)) = spec.settings.get("lora_adapters") {
        let mut adapters = adapters.clone();
        for (i, adapter) in adapters.iter_mut().enumerate() {
            if let Some(serde_json::Value::String(path)) = adapter.get_mut("path") {
                *path =
                    expand(path).map_err(|e| format!("settings.lora_adapters[{i}].path: {e}"))?;
            }
        }
        spec.settings.insert("lora_adapters", adapters);
    }
    Ok(())
}

/// `~/` and `${NAME}` / `${NAME:-default}` expanded from the environment.
///
/// # Errors
///
/// A variable that is unset and has no default, or a `${` without its `}`.
pub fn expand(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without its `}}` in {text:?}"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "the environment variable {name} is not set (write ${{{name}:-DEFAULT}} for a default)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if let Some(tail) = out.strip_prefix("~/") {
        let home = std::env::var("HOME").map_err(|_| "`~/` needs HOME to be set".to_owned())?;
        out = format!("{home}/{tail}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_defaults_and_home() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(expand("~/m.gguf").unwrap(), format!("{home}/m.gguf"));
        assert_eq!(
            expand("${CORTEX_TEST_UNSET_VAR:-/opt}/m").unwrap(),
            "/opt/m"
        );
        assert_eq!(
            expand("${CORTEX_TEST_UNSET_VAR:-~/c}/m").unwrap(),
            format!("{home}/c/m")
        );
        assert!(
            expand("${CORTEX_TEST_UNSET_VAR}/m")
                .unwrap_err()
                .contains("CORTEX_TEST_UNSET_VAR is not set")
        );
        assert!(expand("${HOME").unwrap_err().contains("without its"));
        assert_eq!(expand("/plain").unwrap(), "/plain");
    }

    /// vLLM's paths are expanded like llama.cpp's: a chat template file, a generation config
    /// directory, the LoRA adapters; a template written inline is left as it is.
    #[test]
    fn vllm_paths_are_expanded_and_inline_templates_left_alone() {
        let home = std::env::var("HOME").unwrap();
        let spec = |settings: &str| {
            let mut spec: ModelSpec = toml::from_str(&format!(
                "id = \"v\"\nengine = \"vllm\"\nsource = {{ path = \"~/m\" }}\n[settings]\n{settings}"
            ))
            .unwrap();
            expand_paths(&mut spec).unwrap();
            spec
        };
        let s = spec(
            "chat_template = \"~/t.jinja\"\ngeneration_config = \"${CORTEX_TEST_UNSET_VAR:-~/g}\"\nlora_adapters = [{ name = \"a\", path = \"~/lora\" }]",
        );
        assert_eq!(
            s.settings.get("chat_template").unwrap(),
            &format!("{home}/t.jinja")
        );
        assert_eq!(
            s.settings.get("generation_config").unwrap(),
            &format!("{home}/g")
        );
        assert_eq!(
            s.settings.get("lora_adapters").unwrap()[0]["path"],
            format!("{home}/lora")
        );
        let inline = "{% for m in messages %}${x}{% endfor %}";
        let s = spec(&format!("chat_template = \"{inline}\""));
        assert_eq!(s.settings.get("chat_template").unwrap(), inline);
    }

    /// A LoRA adapter's name is a name the model serves: another model may not take it, in
    /// either order, and keys may name it.
    #[test]
    fn adapter_names_are_served_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("adapter_config.json"), "{}").unwrap();
        let base = format!(
            "[[models]]\nid = \"base\"\nengine = \"vllm\"\nsource = {{ path = \"/m\" }}\n[models.settings]\nlora_adapters = [{{ name = \"sql\", path = \"{}\" }}]\n",
            dir.path().display()
        );
        let other = "[[models]]\nid = \"other\"\nserved_name = \"sql\"\nengine = \"vllm\"\nsource = { path = \"/o\" }\n";
        for text in [format!("{base}{other}"), format!("{other}{base}")] {
            let errors = Config::parse(Path::new("c.toml"), &text).unwrap_err().0;
            assert!(
                errors
                    .iter()
                    .any(|e| e.message.contains("`sql` is already served by models[0]")),
                "{errors:?}"
            );
        }
        let key = "[[keys]]\nid = \"k\"\nhash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nmodels = [\"sql\"]\n";
        Config::parse(Path::new("c.toml"), &format!("{base}{key}")).unwrap();
    }

    #[test]
    fn aliases_and_fallbacks_are_names_checked_like_served_names() {
        let model = |id: &str, extra: &str| {
            format!(
                "[[models]]\nid = \"{id}\"\nengine = \"vllm\"\nsource = {{ path = \"/m/{id}\" }}\n{extra}"
            )
        };
        let good = format!(
            "{}{}",
            model(
                "big",
                "aliases = [\"gpt-4o\", \"chat\"]\nfallback = [\"small\"]\n"
            ),
            model("small", "")
        );
        let key = "[[keys]]\nid = \"k\"\nhash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nmodels = [\"chat\"]\n";
        let config = Config::parse(Path::new("c.toml"), &format!("{good}{key}")).unwrap();
        let names = config.names();
        assert_eq!(names.target("gpt-4o"), Some("big"));
        assert_eq!(names.target("chat"), Some("big"));
        assert_eq!(names.fallbacks("big"), ["small"]);

        for (text, needle) in [
            (
                format!(
                    "{}{}",
                    model("big", "aliases = [\"small\"]\n"),
                    model("small", "")
                ),
                "models[1].served_name: `small` is already served by models[0]",
            ),
            (
                format!(
                    "{}{}",
                    model("big", ""),
                    model("small", "aliases = [\"big\"]\n")
                ),
                "models[1].aliases: `big` is already served by models[0]",
            ),
            (
                format!(
                    "{}{}",
                    model("big", "aliases = [\" \"]\n"),
                    model("small", "")
                ),
                "models[0].aliases: ` ` is not a name",
            ),
            (
                format!(
                    "{}{}",
                    model("big", "idle_unload = \"5m\"\n"),
                    model("small", "")
                ),
                "models[0].idle_unload: only an on-demand model is unloaded",
            ),
            (
                format!(
                    "{}{}",
                    model("big", "fallback = [\"nope\"]\n"),
                    model("small", "")
                ),
                "models[0].fallback: `nope` is not a name any model in this file serves",
            ),
            (
                format!(
                    "{}{}",
                    model("big", "fallback = [\"big\"]\n"),
                    model("small", "")
                ),
                "models[0].fallback: `big` is this model itself",
            ),
            (
                format!(
                    "{}{}",
                    model("big", "fallback = [\"tiny\"]\n"),
                    model("small", "aliases = [\"tiny\"]\n")
                ),
                "models[0].fallback: `tiny` is an alias",
            ),
        ] {
            let errors = Config::parse(Path::new("c.toml"), &text).unwrap_err().0;
            assert!(
                errors
                    .iter()
                    .any(|e| e.message.contains(needle) && e.at.is_some()),
                "{needle}: {errors:?}"
            );
        }
    }

    #[test]
    fn errors_point_at_the_offending_field() {
        let text = "[[models]]\nid = \"a\"\nengine = \"llamacpp\"\nsource = { path = \"/nope/a.gguf\" }\n\n[models.settings]\nctx_size = 4096\ncache_type_v = \"q8_0\"\nflash_attn = \"off\"\n\n[[models]]\nid = \"a\"\nserved_name = \"b\"\nengine = \"llamacpp\"\nsource = { path = \"/nope/b.gguf\" }\n\n[[keys]]\nid = \"k\"\nhash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n[[keys]]\nid = \"k\"\nhash = \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"\n";
        let errors = Config::parse(Path::new("c.toml"), text).unwrap_err().0;
        let at = |needle: &str| {
            errors
                .iter()
                .find(|e| e.message.contains(needle))
                .unwrap_or_else(|| panic!("no error about {needle}: {errors:?}"))
                .at
        };
        assert_eq!(at("quantized V cache"), Some((8, 1)));
        assert_eq!(at("is already the id"), Some((12, 1)));
        assert_eq!(at("is used by another key"), Some((21, 6)));
    }

    #[test]
    fn allowed_paths_are_checked_and_reach_the_surface() {
        let model =
            "[[models]]\nid = \"a\"\nengine = \"llamacpp\"\nsource = { path = \"/nope/a.gguf\" }\n";
        let text = format!(
            "[[gateway.allow]]\nmodel = \"a\"\npaths = [\"POST /tokenize\", \"GET /props\"]\n\n{model}"
        );
        // The model file does not exist: only that error, none about the allow list.
        let errors = Config::parse(Path::new("c.toml"), &text)
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(
            errors.iter().all(|e| !e.message.contains("gateway.allow")),
            "{errors:?}"
        );
        let bad = format!(
            "[[gateway.allow]]\nmodel = \"zz\"\npaths = [\"tokenize\", \"TRACE /x\", \"GET /x?y=1\", \"GET /v1/models/a\"]\n\n{model}"
        );
        let errors = Config::parse(Path::new("c.toml"), &bad).unwrap_err().0;
        for needle in [
            "gateway.allow[0].model: `zz` is not the served name",
            "`tokenize` is not `METHOD /path`",
            "`TRACE /x`: the method must be one of",
            "`GET /x?y=1`: the path must start with `/` and hold no query",
            "the gateway answers `/v1/models/a` itself",
        ] {
            assert!(
                errors
                    .iter()
                    .any(|e| e.message.contains(needle) && e.at.is_some()),
                "{needle}: {errors:?}"
            );
        }
        let (method, path) = allowed_path("POST /tokenize").unwrap();
        let surface = cortex_gateway::route::Surface::new().allow("a", method, path);
        assert!(surface.is_known(&http::Method::POST, "/tokenize"));
    }

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 8), (2, 3));
    }
}
