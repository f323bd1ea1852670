//! The admin API of `cortex serve`, and the client `cortex models …` uses.
//!
//! The API is served on its own listener, `server.admin_listen` (loopback by default), never on
//! the clients'. Every route needs `Authorization: Bearer ADMIN_KEY`, the key whose digest is
//! `server.admin_key`; without that setting the API answers 404 `admin_disabled`. Answers are
//! JSON; errors have `OpenAI`'s shape (`{"error": {"message", "type", "code"}}`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /admin/models` | every declared model: state, failure reason, replicas and endpoints |
//! | `GET /admin/models/{name}` | one model (id or served name) |
//! | `POST /admin/models/{name}/start` | 202; the model starts in the background |
//! | `POST /admin/models/{name}/stop` | 200 once the requests on it finished (up to `supervisor.drain_timeout`) and every instance is stopped |
//! | `POST /admin/reload` | reads the configuration file again and applies it, as SIGHUP does ([`Shared::reload`](crate::serve::Shared::reload)): 200 with what was added, removed, replaced, left running and what needs a restart; 422 and nothing changed when the file has errors |
//! | `GET /admin/models/{name}/logs?lines=N` | the last N (default 100) log lines of each replica |
//! | `GET /admin/usage?key=&model=&since=&until=&every=&format=` | requests and tokens by key and model (since the server started, or in a time range; per time bucket with `every`; as CSV with `format=csv`) |
//! | `POST /admin/keys/reload` | reads the configuration file again and puts only its keys in force; 422 and nothing changed when the file has errors |
//! | `GET /admin/keys` | the client keys of the file and of the usage database: id, allowed models, rate limit, `source` (`file` or `database`), who created a database key (never a key or digest) |
//! | `POST /admin/keys` | `{"id", "models"?}`: a new client key, its digest written to the configuration file — or, with `server.new_keys = "database"`, to the usage database — and put in force; 201 with the key, shown this once; 422 when the id is taken in either place |
//! | `DELETE /admin/keys/{id}` | the key's `[[keys]]` table removed from the file, or its database row marked revoked; in force at once; 404 when there is none |
//!
//! Key changes are written to the configuration file (its comments and layout kept) or the usage
//! database, so they survive a restart; keys of both places are in force, the database's read
//! again every 10 s (another gateway sharing a PostgreSQL database may have changed them). Key changes, starts, stops and reloads are logged with who asked (the admin
//! caller's address).

use std::sync::Arc;

use bytes::Bytes;
use cortex_core::{ModelSpec, ModelState, ModelStatus, SupervisorError};
use cortex_gateway::auth::{KeyDatabaseError, KeyHash, KeyRecord};

use crate::config::NewKeys;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};

use crate::serve::{Shared, state_name};

/// The admin API's handler.
#[derive(Debug, Clone)]
pub struct Admin {
    shared: Arc<Shared>,
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Full<Bytes>> {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json_response(
        status,
        &json!({"error": {"message": message.into(), "type": kind, "param": null, "code": code}}),
    )
}

/// A model's status as JSON: the supervisor's, or `stopped` for a declared model it never ran;
/// with whether it loads on demand, how many replicas it wants, and for a failed model the
/// last lines its instance wrote (up to 20).
fn model_json(spec: &ModelSpec, status: Option<ModelStatus>) -> Value {
    let on_demand = spec.load == cortex_core::Load::OnDemand;
    let wanted = spec.replicas.get();
    let Some(status) = status else {
        return json!({
            "id": spec.id, "served_name": spec.served_name(), "engine": spec.engine,
            "state": "stopped", "on_demand": on_demand, "replicas_wanted": wanted, "replicas": [],
        });
    };
    let (reason, log_tail) = match &status.state {
        ModelState::Failed { reason, log_tail } => {
            let from = log_tail.len().saturating_sub(20);
            let tail: Vec<&str> = log_tail[from..].iter().map(|l| l.line.as_str()).collect();
            (Some(reason.clone()), Some(tail))
        }
        ModelState::Unhealthy { reason, .. } => (Some(reason.clone()), None),
        _ => (None, None),
    };
    json!({
        "id": status.id, "served_name": status.served_name, "engine": status.engine,
        "state": state_name(&status.state), "reason": reason, "log_tail": log_tail,
        "on_demand": on_demand, "replicas_wanted": wanted,
        "replicas": status.replicas,
    })
}

/// `GET /health`.
pub fn health(shared: &Shared) -> Response<Full<Bytes>> {
    let models: Vec<Value> = shared
        .config
        .load()
        .specs()
        .map(|spec| {
            let state = if shared.config.load().server.manage_engines {
                shared
                    .supervisor
                    .status(&spec.id)
                    .map_or("stopped", |s| state_name(&s.state))
            } else if shared.supervisor.registry().resolve(spec.served_name()).is_some() {
                // Run by another gateway; served here.
                "running"
            } else {
                "stopped"
            };
            let on_demand = spec.load == cortex_core::Load::OnDemand;
            json!({"id": spec.id, "served_name": spec.served_name(), "state": state, "on_demand": on_demand})
        })
        .collect();
    // On-demand models are ready to be loaded whatever their state.
    let ready = models
        .iter()
        .all(|m| m["state"] == "running" || m["on_demand"] == true);
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "ready": ready, "models": models}),
    )
}

impl Admin {
    /// The admin API of `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Answers one admin request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(admin) = **self.shared.admin_key.load() else {
            return error(
                StatusCode::NOT_FOUND,
                "admin_disabled",
                "The admin API is off: set server.admin_key in the configuration (cortex keys new --admin).",
            );
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "missing_api_key",
                    "The admin API needs the admin key as `Authorization: Bearer KEY`.",
                );
            }
            Some(key) if !KeyHash::of(key).matches(&admin) => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_api_key",
                    "That is not the admin key.",
                );
            }
            Some(_) => {}
        }
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let who = req
            .extensions()
            .get::<std::net::SocketAddr>()
            .map_or_else(|| "an admin caller".to_owned(), ToString::to_string);
        // Small JSON bodies (key creation); read whole so the connection can be reused.
        let body = http_body_util::Limited::new(req.into_body(), 64 << 10)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        self.route(&method, &path, &query, &body, &who).await
    }

    /// Answers one admin request whose caller was found to hold the admin key (by
    /// [`handle`](Self::handle), or by the admin page's session): `path` is `/admin/…`, `who`
    /// says who asked, for the log.
    pub async fn route(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: &Bytes,
        who: &str,
    ) -> Response<Full<Bytes>> {
        let path = path.trim_end_matches('/');
        let parts: Vec<&str> = path.split('/').skip(2).collect();
        match (method, parts.as_slice()) {
            (&Method::GET, ["models"]) => self.list(),
            (&Method::GET, ["models", name]) => self.with_model(name, |spec, status| {
                json_response(StatusCode::OK, &model_json(spec, status))
            }),
            (&Method::POST, ["models", name, "start"]) => self.start(name, who),
            (&Method::POST, ["models", name, "stop"]) => self.stop(name, who).await,
            (&Method::POST, ["reload"]) => match self.shared.reload(who).await {
                Ok(report) => json_response(
                    StatusCode::OK,
                    &serde_json::to_value(report).unwrap_or_default(),
                ),
                Err(errors) => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_config",
                    format!("The configuration was not reloaded; the file has errors:\n{errors}"),
                ),
            },
            (&Method::GET, ["models", name, "logs"]) => {
                let lines = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("lines="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(100);
                self.logs(name, lines).await
            }
            (&Method::GET, ["models", name, "metrics"]) => self.engine_metrics(name).await,
            (&Method::GET, ["usage"]) => self.usage(query).await,
            (&Method::GET, ["keys"]) => self.list_keys(),
            (&Method::POST, ["keys"]) => self.create_key(body, who),
            (&Method::DELETE, ["keys", id]) => self.revoke_key(id, who),
            (&Method::POST, ["keys", "reload"]) => match self.shared.reload_keys() {
                Ok(n) => json_response(StatusCode::OK, &json!({"reloaded": true, "keys": n})),
                Err(errors) => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_config",
                    format!("The keys were not reloaded; the file has errors:\n{errors}"),
                ),
            },
            _ => error(
                StatusCode::NOT_FOUND,
                "unknown_route",
                format!("No admin route {method} {path}."),
            ),
        }
    }

    fn list_keys(&self) -> Response<Full<Bytes>> {
        let config = match crate::config::Config::load(&self.shared.config_path) {
            Ok(config) => config,
            Err(errors) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_config",
                    format!("The configuration file has errors:\n{errors}"),
                );
            }
        };
        let mut data: Vec<Value> = config
            .keys
            .iter()
            .map(|k| {
                json!({
                    "id": k.id.get_ref(),
                    "models": k.models.as_ref().map(|m| m.get_ref().clone()),
                    "requests_per_minute": k.requests_per_minute,
                    "source": "file",
                })
            })
            .collect();
        if let Some(db) = self.shared.usage.key_database() {
            match db.keys() {
                Ok(keys) => data.extend(keys.into_iter().map(|k| {
                    json!({
                        "id": k.id,
                        "models": k.models,
                        "requests_per_minute": k.requests_per_minute,
                        "source": "database",
                        "created_by": k.created_by,
                    })
                })),
                Err(e) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "database_unavailable",
                        e.to_string(),
                    );
                }
            }
        }
        json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
    }

    /// Whether `id` names a client key in the file or the usage database.
    fn key_exists(&self, text: &str, id: &str) -> Result<bool, String> {
        let config = crate::config::Config::parse(&self.shared.config_path, text)
            .map_err(|e| e.to_string())?;
        if config.keys.iter().any(|k| k.id.get_ref() == id) {
            return Ok(true);
        }
        match self.shared.usage.key_database() {
            Some(db) => db
                .keys()
                .map(|keys| keys.iter().any(|k| k.id == id))
                .map_err(|e| e.to_string()),
            None => Ok(false),
        }
    }

    /// Rewrites the configuration file with `edit` applied, checked as a whole first (the same
    /// checks as at start), then puts its keys in force; `Ok(None)` when `edit` had nothing to
    /// change, `Err` the reason nothing was written. One edit at a time.
    fn edit_keys(
        &self,
        edit: impl FnOnce(&str) -> Result<Option<String>, String>,
    ) -> Result<Option<usize>, String> {
        static EDITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = EDITING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = &self.shared.config_path;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(new) = edit(&text)? else {
            return Ok(None);
        };
        crate::config::Config::parse(path, &new).map_err(|errors| {
            format!("Nothing was written; the change would leave errors:\n{errors}")
        })?;
        crate::keys::replace_file(path, &new)?;
        self.shared
            .reload_keys()
            .map(Some)
            .map_err(|errors| errors.to_string())
    }

    fn create_key(&self, body: &Bytes, who: &str) -> Response<Full<Bytes>> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct New {
            id: String,
            #[serde(default)]
            models: Vec<String>,
        }
        let new: New = match serde_json::from_slice(body) {
            Ok(new) => new,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("Expected {{\"id\": \"…\", \"models\": [\"…\"]}}: {e}"),
                );
            }
        };
        let key = match crate::keys::generate() {
            Ok(key) => key,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "no_randomness", e),
        };
        let hash = KeyHash::of(&key);
        let id = new.id.clone();
        let in_database = self.shared.config.load().server.new_keys == NewKeys::Database;
        let created = if in_database {
            self.create_in_database(&id, hash, &new.models, who)
        } else {
            self.edit_keys(|text| {
                if self.key_exists(text, &id)? {
                    return Err(format!("A key with id `{id}` already exists."));
                }
                crate::keys::with_client_key(text, &id, &hash, &new.models).map(Some)
            })
            .map(drop)
        };
        match created {
            Ok(()) => {
                tracing::info!(id = %new.id, by = %who, "client key created through the admin API");
                eprintln!("cortex: key `{}` created by {who}", new.id);
                json_response(
                    StatusCode::CREATED,
                    &json!({"id": new.id, "key": key, "models": new.models}),
                )
            }
            Err(message) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", message),
        }
    }

    /// A new key in the usage database, checked against the file's ids, then in force.
    fn create_in_database(
        &self,
        id: &str,
        hash: KeyHash,
        models: &[String],
        who: &str,
    ) -> Result<(), String> {
        let path = &self.shared.config_path;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config = crate::config::Config::parse(path, &text).map_err(|e| e.to_string())?;
        if config.keys.iter().any(|k| k.id.get_ref() == id) {
            return Err(format!(
                "A key with id `{id}` already exists in the configuration file."
            ));
        }
        if let Some(unknown) = models.iter().find(|m| config.model(m).is_none()) {
            return Err(format!("No model `{unknown}` is served here."));
        }
        let Some(db) = self.shared.usage.key_database() else {
            return Err("Keys in the database need a usage database ([usage] store).".to_owned());
        };
        let mut record = KeyRecord::new(id, hash);
        record.models = (!models.is_empty()).then(|| models.to_vec());
        record.created_by = Some(who.to_owned());
        db.add_key(&record).map_err(|e| match e {
            KeyDatabaseError::Duplicate { id } => format!("A key with id `{id}` already exists."),
            other => other.to_string(),
        })?;
        self.shared.put_keys_in_force(&self.shared.config.load());
        Ok(())
    }

    fn revoke_key(&self, id: &str, who: &str) -> Response<Full<Bytes>> {
        let mut edited = self.edit_keys(|text| crate::keys::without_client_key(text, id));
        if let (Ok(None), Some(db)) = (&edited, self.shared.usage.key_database()) {
            edited = match db.revoke_key(id) {
                Ok(true) => Ok(Some(
                    self.shared.put_keys_in_force(&self.shared.config.load()),
                )),
                Ok(false) => Ok(None),
                Err(e) => Err(e.to_string()),
            };
        }
        match edited {
            Ok(Some(_)) => {
                tracing::info!(id = %id, by = %who, "client key revoked through the admin API");
                eprintln!("cortex: key `{id}` revoked by {who}");
                json_response(StatusCode::OK, &json!({"revoked": id}))
            }
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("No client key `{id}` in the configuration file or the database."),
            ),
            Err(message) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", message),
        }
    }

    fn spec(&self, name: &str) -> Option<ModelSpec> {
        self.shared.config.load().model(name).cloned()
    }

    fn with_model(
        &self,
        name: &str,
        f: impl FnOnce(&ModelSpec, Option<ModelStatus>) -> Response<Full<Bytes>>,
    ) -> Response<Full<Bytes>> {
        match self.spec(name) {
            Some(spec) => f(&spec, self.shared.supervisor.status(&spec.id)),
            None => self.not_found(name),
        }
    }

    fn not_found(&self, name: &str) -> Response<Full<Bytes>> {
        error(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "No model `{name}` in {}.",
                self.shared.config_path.display()
            ),
        )
    }

    fn list(&self) -> Response<Full<Bytes>> {
        let data: Vec<Value> = self
            .shared
            .config
            .load()
            .specs()
            .map(|spec| model_json(spec, self.shared.supervisor.status(&spec.id)))
            .collect();
        json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
    }

    /// The refusal of a start or stop on a gateway that does not run the engines.
    fn managed_elsewhere(&self) -> Option<Response<Full<Bytes>>> {
        (!self.shared.config.load().server.manage_engines).then(|| {
            error(
                StatusCode::CONFLICT,
                "engines_managed_elsewhere",
                "This gateway does not run the engines (server.manage_engines = false): start \
                 and stop them through the gateway that does."
                    .to_owned(),
            )
        })
    }

    fn start(&self, name: &str, who: &str) -> Response<Full<Bytes>> {
        if let Some(refused) = self.managed_elsewhere() {
            return refused;
        }
        let Some(spec) = self.spec(name) else {
            return self.not_found(name);
        };
        if let Some(status) = self.shared.supervisor.status(&spec.id) {
            if matches!(
                status.state,
                ModelState::Starting | ModelState::Running | ModelState::Unhealthy { .. }
            ) {
                return error(
                    StatusCode::CONFLICT,
                    "already_started",
                    format!("`{}` is already {}.", spec.id, state_name(&status.state)),
                );
            }
        }
        let shared = Arc::clone(&self.shared);
        let id = spec.id.clone();
        let spec_id = id.clone();
        eprintln!("cortex: {id}: start asked by {who}");
        tokio::spawn(async move {
            if let Err(e) = shared.supervisor.start(spec).await {
                if !matches!(e, SupervisorError::AlreadyStarted { .. }) {
                    eprintln!("cortex: {id}: {}", cortex_core::error_chain(&e));
                }
            }
        });
        json_response(
            StatusCode::ACCEPTED,
            &json!({"id": spec_id, "state": "starting"}),
        )
    }

    async fn stop(&self, name: &str, who: &str) -> Response<Full<Bytes>> {
        if let Some(refused) = self.managed_elsewhere() {
            return refused;
        }
        let Some(spec) = self.spec(name) else {
            return self.not_found(name);
        };
        eprintln!("cortex: {}: stop asked by {who}", spec.id);
        match self.shared.supervisor.stop(&spec.id).await {
            // A model that never started is already stopped.
            Ok(()) | Err(SupervisorError::NotFound { .. }) => json_response(
                StatusCode::OK,
                &model_json(&spec, self.shared.supervisor.status(&spec.id)),
            ),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "stop_failed",
                cortex_core::error_chain(&e),
            ),
        }
    }

    async fn logs(&self, name: &str, lines: usize) -> Response<Full<Bytes>> {
        let Some(spec) = self.spec(name) else {
            return self.not_found(name);
        };
        let status = self.shared.supervisor.status(&spec.id);
        let mut replicas = Vec::new();
        if let Some(status) = &status {
            for replica in &status.replicas {
                let Some(instance) = &replica.instance else {
                    continue;
                };
                let text: Vec<String> = match self.shared.runtime.logs(instance, lines).await {
                    Ok(lines) => lines.into_iter().map(|l| l.line).collect(),
                    Err(e) => vec![format!("(logs unavailable: {e})")],
                };
                replicas.push(json!({"index": replica.index, "instance": instance, "lines": text}));
            }
            if let ModelState::Failed { log_tail, .. } = &status.state {
                if replicas.is_empty() {
                    let start = log_tail.len().saturating_sub(lines);
                    let text: Vec<&str> =
                        log_tail[start..].iter().map(|l| l.line.as_str()).collect();
                    replicas.push(json!({"index": 0, "instance": null, "lines": text}));
                }
            }
        }
        json_response(
            StatusCode::OK,
            &json!({"id": spec.id, "replicas": replicas}),
        )
    }

    /// The engines' own metrics of every replica with an address, labelled `model` and `replica`
    /// (Prometheus text; see [`engine_metrics`](crate::engine_metrics)).
    async fn engine_metrics(&self, name: &str) -> Response<Full<Bytes>> {
        let Some(spec) = self.spec(name) else {
            return self.not_found(name);
        };
        let replicas: Vec<(u32, http::Uri)> = self
            .shared
            .supervisor
            .status(&spec.id)
            .map(|status| {
                status
                    .replicas
                    .iter()
                    .filter_map(|r| Some((r.index, r.endpoint.as_ref()?.base_url.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let text = crate::engine_metrics::gather(spec.id.as_str(), &replicas).await;
        Response::builder()
            .header(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .body(Full::new(Bytes::from(text)))
            .unwrap_or_default()
    }

    /// `GET /admin/usage?key=&model=&since=&until=&every=&format=`: totals by key and model
    /// (`since`/`until`: RFC 3339 or a duration before now, such as `1h`; `every`: a duration,
    /// totals per time bucket of that length, each row with its bucket's start `from`;
    /// `format=csv`: the rows as CSV).
    async fn usage(&self, query: &str) -> Response<Full<Bytes>> {
        let mut q = cortex_gateway::meter::UsageQuery::default();
        let (mut since, mut until, mut csv) = (None, None, false);
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let time = |v: &str| crate::usage::parse_time(v);
            match &*name {
                "key" => q = q.key(value),
                "model" => q = q.model(value),
                "since" | "until" => match time(&value) {
                    Ok(t) if name == "since" => since = Some(t),
                    Ok(t) => until = Some(t),
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_parameter",
                            format!("{name}: {e}"),
                        );
                    }
                },
                "every" => match humantime::parse_duration(&value) {
                    Ok(every) if every >= std::time::Duration::from_secs(1) => q = q.every(every),
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_parameter",
                            format!(
                                "every: `{value}`: expected a duration of at least 1s, such as 5m"
                            ),
                        );
                    }
                },
                "format" => match &*value {
                    "csv" => csv = true,
                    "json" => csv = false,
                    other => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_parameter",
                            format!("format: `{other}`: expected json or csv"),
                        );
                    }
                },
                _ => {}
            }
        }
        let q = q.between(since, until);
        let usage = std::sync::Arc::clone(&self.shared.usage);
        // What was recorded before this call is in the answer.
        let rows = tokio::task::spawn_blocking(move || {
            usage.flush();
            usage.query(&q)
        })
        .await;
        let rows = match rows {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, "invalid_parameter", e),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    e.to_string(),
                );
            }
        };
        let data: Vec<Value> = rows.into_iter().map(|e| usage_json(&e)).collect();
        if csv {
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
                .header(
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"cortex-usage.csv\"",
                )
                .body(Full::new(Bytes::from(usage_csv(&data))))
                .unwrap_or_default();
        }
        json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
    }
}

/// The columns of a usage row, in the order of its CSV.
const USAGE_COLUMNS: [&str; 10] = [
    "from",
    "key",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "usage_missing",
    "failed",
    "client_disconnected",
];

/// One usage row as JSON (`from`: RFC 3339, for a query by time bucket).
fn usage_json(e: &cortex_gateway::meter::UsageEntry) -> Value {
    let t = e.totals;
    json!({
        "from": e.from.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        "key": e.key_id.as_deref(), "model": e.model.as_deref(),
        "requests": t.requests, "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens, "total_tokens": t.total_tokens,
        "usage_missing": t.usage_missing, "failed": t.failed,
        "client_disconnected": t.client_disconnected,
    })
}

/// Usage rows as CSV (RFC 4180: a header line, fields quoted where they hold a comma, a quote
/// or a line break; a cell that a spreadsheet would run as a formula is prefixed with `'`).
fn usage_csv(rows: &[Value]) -> String {
    fn cell(v: &Value) -> String {
        let text = match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{text}")
        } else {
            text
        };
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    }
    let mut out = USAGE_COLUMNS.join(",");
    out.push_str("\r\n");
    for row in rows {
        let cells: Vec<String> = USAGE_COLUMNS.iter().map(|c| cell(&row[*c])).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// The client side: one admin call, with the JSON answer.
///
/// # Errors
///
/// A message for an unreachable server or an answer that is not JSON; an error answer is
/// returned as `Ok` with its status.
pub async fn call(
    base: &str,
    key: &str,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Value), String> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("bad server address {base:?}: {e}"))?;
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = client.request(req).await.map_err(|e| {
        format!(
            "cannot reach cortex at {base}: {}",
            cortex_core::error_chain(&e)
        )
    })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "the answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    Ok((status, value))
}
