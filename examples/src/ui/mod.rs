//! The admin page of `cortex serve`: models, live logs, usage charts, GPU memory, the memory
//! calculator and the client keys, on the admin listener (`server.admin_listen`) only, at `/ui/`.
//!
//! It is a thin layer over the [admin API](crate::admin): every state it shows and every change
//! it makes goes through [`Admin::route`], as `cortex models …` goes through the API's HTTP
//! routes, so the page and the API cannot disagree. Pages are HTML rendered here (maud
//! templates, escaped by default), styled by one embedded stylesheet; they read without
//! JavaScript. A small embedded script (`app.js`, no framework) makes them live: the models'
//! states come pushed over Server-Sent Events (`/ui/events`, the models section rendered here
//! and replaced whole), a model's log lines too (`/ui/models/ID/logs/events`), and the buttons
//! post without leaving the page. Charts and memory bars are SVG drawn here (module `chart`).
//! Everything is compiled into the binary: one file to deploy.
//!
//! Login is with the admin key; it gives a session cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` behind a TLS proxy that says `X-Forwarded-Proto: https`) that lasts 12 hours, until
//! logout, or until the admin key in force changes (module `session`). Every change is a POST that
//! carries the session's CSRF token and, when the browser says where it comes from (`Origin`,
//! `Sec-Fetch-Site`), comes from this page. A new client key is shown once, in the answer to the
//! POST that made it, and never again. Answers are `no-store`, framed by nothing, and run no
//! inline script (`Content-Security-Policy`).

mod chart;
mod pages;
mod session;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cortex_core::{InstanceId, ModelId};
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use maud::Markup;
use serde_json::{Value, json};

use crate::admin::Admin;
use crate::serve::Shared;
use session::Sessions;

/// The body of the page's answers: a whole page, or a stream of events.
pub type UiBody = UnsyncBoxBody<Bytes, Infallible>;

/// The largest form the page posts (a key's id and models).
const FORM_LIMIT: usize = 16 << 10;

/// How often an event stream with nothing to say sends a comment, so that a browser that went
/// away is noticed and a proxy does not time the stream out.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The admin page's handler.
#[derive(Debug, Clone)]
pub struct Ui {
    shared: Arc<Shared>,
    admin: Admin,
    sessions: Arc<Sessions>,
}

/// What one request to the page is, once parsed.
struct Asked {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    /// Who asked, for the admin API's log.
    who: String,
}

/// A logged-in request.
struct LoggedIn {
    token: String,
    found: session::Found,
}

fn with_headers(mut response: Response<UiBody>, content_type: &'static str) -> Response<UiBody> {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: with the latter a browser sends `Origin: null` on the
    // page's own posts, which the cross-site check would refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn full(bytes: impl Into<Bytes>) -> UiBody {
    Full::new(bytes.into()).boxed_unsync()
}

fn page(status: StatusCode, markup: Markup) -> Response<UiBody> {
    let mut response = Response::new(full(markup.into_string()));
    *response.status_mut() = status;
    with_headers(response, "text/html; charset=utf-8")
}

fn json_answer(status: StatusCode, value: &Value) -> Response<UiBody> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    with_headers(response, "application/json")
}

fn see_other(location: &'static str) -> Response<UiBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    with_headers(response, "text/plain; charset=utf-8")
}

fn asset(content_type: &'static str, text: &'static str) -> Response<UiBody> {
    let mut response = with_headers(Response::new(full(text)), content_type);
    // Assets change only with the binary; a browser may keep them for a short while.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    response
}

/// One Server-Sent Event (each line of `data` its own `data:` field, as the format wants).
fn sse_event(event: &str, data: &str) -> Bytes {
    let mut out = format!("event: {event}\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// An event stream fed through `rx`.
fn sse_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<UiBody> {
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    with_headers(
        Response::new(StreamBody::new(frames).boxed_unsync()),
        "text/event-stream",
    )
}

/// The pairs of a query string or a form body.
fn pairs(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text).into_owned().collect()
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A path segment of the page's own URLs, percent-encoded.
pub(crate) fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Ui {
    /// The admin page of `shared`, over `admin`.
    pub fn new(shared: Arc<Shared>, admin: Admin) -> Self {
        Self {
            shared,
            admin,
            sessions: Arc::default(),
        }
    }

    /// Whether `path` is the page's (`/` and `/ui/…`).
    pub fn serves(path: &str) -> bool {
        path == "/" || path == "/ui" || path.starts_with("/ui/")
    }

    /// Answers one request to the page.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<UiBody>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let who = parts.extensions.get::<SocketAddr>().map_or_else(
            || "an admin page caller".to_owned(),
            |peer| format!("{peer} (admin page)"),
        );
        let asked = Asked {
            method: parts.method,
            path: parts.uri.path().trim_end_matches('/').to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers: parts.headers,
            who,
        };
        match (&asked.method, asked.path.as_str()) {
            (&Method::GET, "" | "/ui") => return see_other("/ui/models"),
            (&Method::GET, "/ui/static/app.js") => {
                return asset("text/javascript; charset=utf-8", include_str!("app.js"));
            }
            (&Method::GET, "/ui/static/app.css") => {
                return asset("text/css; charset=utf-8", include_str!("app.css"));
            }
            _ => {}
        }
        let Some(admin_key) = **self.shared.admin_key.load() else {
            return page(StatusCode::NOT_FOUND, pages::admin_off());
        };
        let form = if asked.method == Method::POST {
            if let Some(refused) = cross_site(&asked.headers) {
                return refused;
            }
            match http_body_util::Limited::new(body, FORM_LIMIT)
                .collect()
                .await
            {
                Ok(collected) => pairs(&collected.to_bytes()),
                Err(_) => {
                    return page(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        pages::message("Too large", "That form is larger than the page sends."),
                    );
                }
            }
        } else {
            Vec::new()
        };
        let secure = asked
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        if asked.path == "/ui/login" {
            return match asked.method {
                Method::POST => self.login(&form, admin_key, secure, &asked.who),
                _ => page(StatusCode::OK, pages::login(None)),
            };
        }
        let logged_in = session::token(&asked.headers).and_then(|token| {
            let found = self.sessions.find(&token, &admin_key)?;
            Some(LoggedIn { token, found })
        });
        let Some(session) = logged_in else {
            return if asked.method == Method::GET && !wants_stream(&asked.headers) {
                see_other("/ui/login")
            } else {
                json_answer(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": {"message": "Log in to the admin page first.", "type": "invalid_request_error", "param": null, "code": "not_logged_in"}}),
                )
            };
        };
        if asked.method == Method::POST
            && !field(&form, "csrf").is_some_and(|t| session.found.csrf_matches(t))
        {
            return page(
                StatusCode::FORBIDDEN,
                pages::message(
                    "Refused",
                    "That form did not come from this page (its CSRF token is missing or stale): reload the page and try again.",
                ),
            );
        }
        self.route(&asked, &session, &form, secure).await
    }

    async fn route(
        &self,
        asked: &Asked,
        session: &LoggedIn,
        form: &[(String, String)],
        secure: bool,
    ) -> Response<UiBody> {
        let csrf = session.found.csrf.as_str();
        let parts: Vec<String> = asked
            .path
            .split('/')
            .skip(2)
            .map(cortex_gateway::route::percent_decode)
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let query = pairs(asked.query.as_bytes());
        match (&asked.method, parts.as_slice()) {
            (&Method::GET, ["models"]) => {
                let (_, models) = self.admin_json(Method::GET, "/admin/models", "", "").await;
                page(StatusCode::OK, pages::models_page(&models, csrf))
            }
            (&Method::GET, ["models", id]) => self.model_page(id, csrf).await,
            (&Method::POST, ["models", id, action @ ("start" | "stop")]) => {
                let path = format!("/admin/models/{}/{action}", segment(id));
                let (status, answer) = self.admin_json(Method::POST, &path, "", &asked.who).await;
                acted(asked, status, &answer, &format!("{action} {id}"))
            }
            (&Method::POST, ["reload"]) => {
                let (status, answer) = self
                    .admin_json(Method::POST, "/admin/reload", "", &asked.who)
                    .await;
                acted(asked, status, &answer, "reload the configuration")
            }
            (&Method::GET, ["events"]) => self.model_events(field(&query, "model"), csrf),
            (&Method::GET, ["models", id, "logs", "events"]) => self.log_events(id),
            (&Method::GET, ["usage"]) => self.usage_page(&query, csrf).await,
            (&Method::GET, ["usage.csv"]) => self.usage_csv(&query).await,
            (&Method::GET, ["gpus"]) => self.gpus_page(csrf).await,
            (&Method::GET, ["calculator"]) => self.calculator_page(&query, csrf),
            (&Method::GET, ["keys"]) => self.keys_page(csrf, None).await,
            (&Method::POST, ["keys"]) => self.create_key(form, csrf, &asked.who).await,
            (&Method::POST, ["keys", id, "revoke"]) => {
                let path = format!("/admin/keys/{}", segment(id));
                let (status, answer) = self.admin_json(Method::DELETE, &path, "", &asked.who).await;
                let said = if status.is_success() {
                    format!("Key `{id}` revoked: it is refused from now on.")
                } else {
                    error_message(&answer)
                };
                self.keys_page(csrf, Some((status.is_success(), said)))
                    .await
            }
            (&Method::POST, ["logout"]) => {
                self.sessions.end(&session.token);
                let mut response = see_other("/ui/login");
                if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(secure)) {
                    response.headers_mut().insert(header::SET_COOKIE, v);
                }
                response
            }
            _ => page(
                StatusCode::NOT_FOUND,
                pages::message("Not found", "No such page."),
            ),
        }
    }

    /// The admin API's JSON answer to `method path?query` (with `body`, for a POST).
    async fn admin_json(
        &self,
        method: Method,
        path: &str,
        query: &str,
        who: &str,
    ) -> (StatusCode, Value) {
        self.admin_json_with(method, path, query, Bytes::new(), who)
            .await
    }

    async fn admin_json_with(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
        who: &str,
    ) -> (StatusCode, Value) {
        let response = self.admin.route(&method, path, query, &body, who).await;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn login(
        &self,
        form: &[(String, String)],
        admin: cortex_gateway::auth::KeyHash,
        secure: bool,
        who: &str,
    ) -> Response<UiBody> {
        let presented = field(form, "key").unwrap_or("").trim();
        if !cortex_gateway::auth::KeyHash::of(presented).matches(&admin) {
            eprintln!("cortex: a login to the admin page with a wrong key by {who}");
            return page(
                StatusCode::UNAUTHORIZED,
                pages::login(Some("That is not the admin key.")),
            );
        }
        let token = match self.sessions.begin(admin) {
            Ok(token) => token,
            Err(e) => {
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    pages::message("No session", &e),
                );
            }
        };
        eprintln!("cortex: a login to the admin page by {who}");
        let mut response = see_other("/ui/models");
        if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&token, secure)) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
        response
    }

    async fn model_page(&self, id: &str, csrf: &str) -> Response<UiBody> {
        let path = format!("/admin/models/{}", segment(id));
        let (status, model) = self.admin_json(Method::GET, &path, "", "").await;
        if !status.is_success() {
            return page(status, pages::message("Not found", &error_message(&model)));
        }
        let (_, logs) = self
            .admin_json(Method::GET, &format!("{path}/logs"), "lines=200", "")
            .await;
        page(StatusCode::OK, pages::model_page(&model, &logs, csrf))
    }

    /// `/ui/events[?model=ID]`: the models section (or one model's) each time it changes.
    fn model_events(&self, model: Option<&str>, csrf: &str) -> Response<UiBody> {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let ui = self.clone();
        let model = model.map(str::to_owned);
        let csrf = csrf.to_owned();
        tokio::spawn(async move {
            let mut events = ui.shared.supervisor.subscribe();
            let mut last = String::new();
            let mut quiet = tokio::time::Instant::now();
            loop {
                let html = if let Some(id) = &model {
                    let path = format!("/admin/models/{}", segment(id));
                    let (_, m) = ui.admin_json(Method::GET, &path, "", "").await;
                    pages::model_section(&m, &csrf).into_string()
                } else {
                    let (_, all) = ui.admin_json(Method::GET, "/admin/models", "", "").await;
                    pages::models_list(&all, &csrf).into_string()
                };
                if html != last {
                    if tx.send(sse_event("models", &html)).await.is_err() {
                        return;
                    }
                    last = html;
                    quiet = tokio::time::Instant::now();
                } else if quiet.elapsed() >= KEEPALIVE {
                    if tx
                        .send(Bytes::from_static(b": keepalive\n\n"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    quiet = tokio::time::Instant::now();
                }
                // A supervisor event says when; the second's tick catches what no event says
                // (a reload's new model, a replica's health detail).
                tokio::select! {
                    _ = events.recv() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = tx.closed() => return,
                    () = ui.shared.closing.cancelled() => return,
                }
            }
        });
        sse_response(rx)
    }

    /// The running instances of model `id`: replica index and instance.
    fn instances(&self, id: &ModelId) -> Vec<(u32, InstanceId)> {
        self.shared
            .supervisor
            .status(id)
            .map(|s| {
                s.replicas
                    .into_iter()
                    .filter_map(|r| Some((r.index, r.instance?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `/ui/models/ID/logs/events`: the last lines of each replica (`tail`), then every line as
    /// it is written (`line`); followed again when the model's instances change.
    fn log_events(&self, name: &str) -> Response<UiBody> {
        let Some(spec) = self.shared.config.load().model(name).cloned() else {
            return json_answer(
                StatusCode::NOT_FOUND,
                &json!({"error": {"message": format!("No model `{name}`."), "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
            );
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let ui = self.clone();
        tokio::spawn(async move {
            let mut events = ui.shared.supervisor.subscribe();
            loop {
                let instances = ui.instances(&spec.id);
                let several = instances.len() > 1;
                let mut tail = Vec::new();
                let mut streams = Vec::new();
                for (index, instance) in &instances {
                    // Followed first, then the tail read: a line written in between may show
                    // twice, none is missed.
                    match ui.shared.runtime.follow(instance).await {
                        Ok(stream) => {
                            let index = *index;
                            streams.push(stream.map(move |l| (index, l.line)).boxed());
                        }
                        Err(e) => tail.push(format!("[{index}] (logs unavailable: {e})")),
                    }
                    if let Ok(lines) = ui.shared.runtime.logs(instance, 200).await {
                        tail.extend(lines.into_iter().map(|l| {
                            if several {
                                format!("[{index}] {}", l.line)
                            } else {
                                l.line
                            }
                        }));
                    }
                }
                if instances.is_empty() {
                    tail.push("(no engine is running for this model)".to_owned());
                }
                if tx.send(sse_event("tail", &tail.join("\n"))).await.is_err() {
                    return;
                }
                let mut merged = futures_util::stream::select_all(streams);
                loop {
                    tokio::select! {
                        line = merged.next(), if !merged.is_empty() => match line {
                            Some((index, line)) => {
                                let line = if several { format!("[{index}] {line}") } else { line };
                                if tx.send(sse_event("line", &line)).await.is_err() {
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = events.recv() => {
                            if ui.instances(&spec.id) != instances { break; }
                        }
                        () = tokio::time::sleep(KEEPALIVE) => {
                            if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                                return;
                            }
                            if ui.instances(&spec.id) != instances { break; }
                        }
                        () = tx.closed() => return,
                        () = ui.shared.closing.cancelled() => return,
                    }
                }
            }
        });
        sse_response(rx)
    }

    async fn usage_page(&self, query: &[(String, String)], csrf: &str) -> Response<UiBody> {
        let range = Range::of(field(query, "range"));
        let filters = filters(query);
        let bucketed = format!(
            "since={}&every={}{filters}",
            range.name,
            humantime::format_duration(range.every)
        );
        let (status, rows) = self
            .admin_json(Method::GET, "/admin/usage", &bucketed, "")
            .await;
        let (_, totals) = self
            .admin_json(
                Method::GET,
                "/admin/usage",
                &format!("since={}{filters}", range.name),
                "",
            )
            .await;
        let (rows, note) = if status.is_success() {
            (rows, None)
        } else {
            // The memory store keeps totals since the start only.
            let (_, since_start) = self
                .admin_json(
                    Method::GET,
                    "/admin/usage",
                    filters.trim_start_matches('&'),
                    "",
                )
                .await;
            (since_start, Some(error_message(&rows)))
        };
        let view = pages::UsageView {
            range: range.name,
            model: field(query, "model"),
            key: field(query, "key"),
            labels: range.labels(SystemTime::now()),
            rows: &rows,
            totals: if note.is_some() { &rows } else { &totals },
            note: note.as_deref(),
            csrf,
        };
        page(StatusCode::OK, pages::usage_page(&view))
    }

    async fn usage_csv(&self, query: &[(String, String)]) -> Response<UiBody> {
        let range = Range::of(field(query, "range"));
        let q = format!(
            "since={}&every={}&format=csv{}",
            range.name,
            humantime::format_duration(range.every),
            filters(query)
        );
        let response = self
            .admin
            .route(&Method::GET, "/admin/usage", &q, &Bytes::new(), "")
            .await;
        let (parts, body) = response.into_parts();
        let mut response = Response::from_parts(parts, body.boxed_unsync());
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    async fn gpus_page(&self, csrf: &str) -> Response<UiBody> {
        let config = self.shared.config.load_full();
        let (gpus, source) = gpus(&config);
        let (_, models) = self.admin_json(Method::GET, "/admin/models", "", "").await;
        // The estimator reads every model's file: off the async threads.
        let needs = tokio::task::spawn_blocking({
            let config = Arc::clone(&config);
            move || crate::ondemand::needs(&config)
        })
        .await
        .unwrap_or_default();
        page(
            StatusCode::OK,
            pages::gpus_page(&gpus, &source, &needs, &models, csrf),
        )
    }

    fn calculator_page(&self, query: &[(String, String)], csrf: &str) -> Response<UiBody> {
        let config = self.shared.config.load();
        let (files, dir_errors) = model_files(&config);
        let (gpus, _) = gpus(&config);
        let chosen = field(query, "file").filter(|f| !f.is_empty());
        let settings = pages::CalculatorSettings::from_query(query);
        let result = chosen.map(|file| {
            if !files.iter().any(|f| f == file) {
                return Err(format!(
                    "`{file}` is not a GGUF file of the model directories (server.model_dirs)."
                ));
            }
            let args = settings.args(file)?;
            crate::gguf::estimate_document(&args, &gpus).map(|doc| (args, doc))
        });
        page(
            StatusCode::OK,
            pages::calculator_page(&files, &dir_errors, chosen, &settings, &gpus, result, csrf),
        )
    }

    /// The names clients use for the configured models: what a new key may be limited to.
    fn served_names(&self) -> Vec<String> {
        self.shared
            .config
            .load()
            .specs()
            .map(|s| s.served_name().to_owned())
            .collect()
    }

    async fn keys_page(&self, csrf: &str, said: Option<(bool, String)>) -> Response<UiBody> {
        let (status, keys) = self.admin_json(Method::GET, "/admin/keys", "", "").await;
        let models = self.served_names();
        let said = said.or_else(|| (!status.is_success()).then(|| (false, error_message(&keys))));
        page(
            StatusCode::OK,
            pages::keys_page(&keys, &models, csrf, said.as_ref(), None),
        )
    }

    async fn create_key(
        &self,
        form: &[(String, String)],
        csrf: &str,
        who: &str,
    ) -> Response<UiBody> {
        let id = field(form, "id").unwrap_or("").trim().to_owned();
        let models: Vec<&str> = form
            .iter()
            .filter(|(n, v)| n == "models" && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect();
        let body = Bytes::from(json!({"id": id, "models": models}).to_string());
        let (status, answer) = self
            .admin_json_with(Method::POST, "/admin/keys", "", body, who)
            .await;
        let (_, keys) = self.admin_json(Method::GET, "/admin/keys", "", "").await;
        let served = self.served_names();
        if status == StatusCode::CREATED {
            let key = answer["key"].as_str().unwrap_or_default();
            let said = (true, format!("Key `{id}` created and in force."));
            return page(
                StatusCode::CREATED,
                pages::keys_page(&keys, &served, csrf, Some(&said), Some((&id, key))),
            );
        }
        let said = (false, error_message(&answer));
        page(
            status,
            pages::keys_page(&keys, &served, csrf, Some(&said), None),
        )
    }
}

/// The answer to a button: JSON for the page's script, a page without it.
fn acted(asked: &Asked, status: StatusCode, answer: &Value, what: &str) -> Response<UiBody> {
    if wants_json(&asked.headers) {
        return json_answer(status, answer);
    }
    let said = if status.is_success() {
        format!("Done: {what}.")
    } else {
        error_message(answer)
    };
    page(status, pages::acted(what, status.is_success(), &said))
}

/// The refusal of a POST the browser says comes from another site.
fn cross_site(headers: &HeaderMap) -> Option<Response<UiBody>> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_ok = match headers.get(header::ORIGIN).map(HeaderValue::to_str) {
        None => true,
        Some(Ok(origin)) => host.is_some_and(|host| {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }),
        Some(Err(_)) => false,
    };
    let site_ok = headers
        .get("sec-fetch-site")
        .is_none_or(|v| matches!(v.as_bytes(), b"same-origin" | b"none"));
    (!(origin_ok && site_ok)).then(|| {
        let shown = |name: &str| {
            headers
                .get(name)
                .map_or("none".into(), |v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        page(
            StatusCode::FORBIDDEN,
            pages::message(
                "Refused",
                &format!(
                    "That request came from another site (Origin: {}, Sec-Fetch-Site: {}, Host: {}); the admin page takes changes from itself only.",
                    shown("origin"),
                    shown("sec-fetch-site"),
                    shown("host"),
                ),
            ),
        )
    })
}

/// Whether the caller is the page's script, asking for JSON.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// The message of an admin API error answer.
fn error_message(answer: &Value) -> String {
    answer["error"]["message"]
        .as_str()
        .map_or_else(|| answer.to_string(), str::to_owned)
}

/// `&model=…&key=…` of the usage page's filters, for the admin API.
fn filters(query: &[(String, String)]) -> String {
    let mut out = String::new();
    for name in ["model", "key"] {
        if let Some(v) = field(query, name).filter(|v| !v.is_empty()) {
            out.push('&');
            out.push_str(name);
            out.push('=');
            out.push_str(&segment(v));
        }
    }
    out
}

/// A time range of the usage page: how far back, and the bucket length of its charts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    pub(crate) name: &'static str,
    pub(crate) span: Duration,
    pub(crate) every: Duration,
}

impl Range {
    /// The ranges offered, shortest first.
    pub(crate) const ALL: [Self; 5] = [
        Self::new("15m", 15 * 60, 60),
        Self::new("1h", 3600, 5 * 60),
        Self::new("6h", 6 * 3600, 30 * 60),
        Self::new("24h", 24 * 3600, 3600),
        Self::new("7d", 7 * 24 * 3600, 6 * 3600),
    ];

    const fn new(name: &'static str, span: u64, every: u64) -> Self {
        Self {
            name,
            span: Duration::from_secs(span),
            every: Duration::from_secs(every),
        }
    }

    /// The range named `name`, or the hour.
    fn of(name: Option<&str>) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| Some(r.name) == name)
            .unwrap_or(Self::ALL[1])
    }

    /// Every bucket start from `now - span` to `now`, as the admin API writes them (RFC 3339,
    /// seconds): the charts' x axis.
    fn labels(self, now: SystemTime) -> Vec<String> {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let every = self.every.as_secs().max(1);
        let first = secs(now).saturating_sub(self.span.as_secs()) / every * every;
        let last = secs(now) / every * every;
        (first..=last)
            .step_by(usize::try_from(every).unwrap_or(usize::MAX))
            .map(|s| {
                humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                    .to_string()
            })
            .collect()
    }
}

/// The GPUs to show and where they come from: NVML when built with it and a driver answers,
/// the configured `[[gpu]]` inventory otherwise.
fn gpus(config: &crate::config::Config) -> (Vec<cortex_gguf::Gpu>, String) {
    #[cfg(feature = "nvml")]
    {
        use cortex_gguf::GpuInventory as _;
        match cortex_gguf::NvmlInventory::new().and_then(|n| n.gpus()) {
            Ok(gpus) if !gpus.is_empty() => {
                return (gpus, "NVML (the NVIDIA driver), now".to_owned());
            }
            Ok(_) => {}
            Err(e) => {
                return (
                    config.gpu.clone(),
                    format!("the configured [[gpu]] inventory (NVML: {e})"),
                );
            }
        }
    }
    (
        config.gpu.clone(),
        "the configured [[gpu]] inventory".to_owned(),
    )
}

/// The GGUF files of the model directories (the first part of a split set only), sorted, and
/// what could not be read.
fn model_files(config: &crate::config::Config) -> (Vec<String>, Vec<String>) {
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    let mut errors = Vec::new();
    if config.server.model_dirs.is_empty() {
        for spec in config.specs() {
            if let cortex_core::ModelSource::Path(path) = &spec.source {
                if let Some(dir) = path.parent() {
                    if !dirs.iter().any(|d| d == dir) {
                        dirs.push(dir.to_owned());
                    }
                }
            }
        }
    } else {
        for dir in &config.server.model_dirs {
            match crate::config::expand(dir) {
                Ok(d) => dirs.push(d.into()),
                Err(e) => errors.push(format!("server.model_dirs: {dir}: {e}")),
            }
        }
    }
    let mut files = Vec::new();
    for dir in dirs {
        match std::fs::read_dir(&dir) {
            Ok(entries) => files.extend(entries.filter_map(Result::ok).filter_map(|e| {
                let path = e.path();
                let name = path.file_name()?.to_str()?;
                let gguf = std::path::Path::new(name)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                    && (!name.contains("-of-") || name.contains("-00001-of-"));
                (gguf && path.is_file()).then(|| path.display().to_string())
            })),
            Err(e) => errors.push(format!("{}: {e}", dir.display())),
        }
    }
    files.sort();
    files.dedup();
    (files, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_put_each_line_in_its_own_data_field() {
        assert_eq!(
            &sse_event("models", "a\nb\r\nc")[..],
            b"event: models\ndata: a\ndata: b\ndata: c\n\n"
        );
    }

    #[test]
    fn a_post_from_another_site_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8081"));
        assert!(cross_site(&h).is_none());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8081"),
        );
        assert!(cross_site(&h).is_none());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(cross_site(&h).is_none());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert_eq!(cross_site(&h).unwrap().status(), StatusCode::FORBIDDEN);
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8081"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h).is_some());
    }

    #[test]
    fn a_range_labels_every_bucket_it_asks_for() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_123);
        let labels = Range::of(Some("1h")).labels(now);
        assert_eq!(labels.len(), 13);
        assert_eq!(labels.last().unwrap(), "2027-01-15T08:00:00Z");
        assert_eq!(Range::of(Some("nonsense")).name, "1h");
    }
}
