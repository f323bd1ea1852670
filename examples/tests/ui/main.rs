//! The admin page of `cortex serve`, in a real browser: headless Chromium from Debian's packages,
//! driven through its `chromedriver` (`WebDriver`, with `fantoccini`), against `cortex serve` running
//! the real llama-server with Gemma 3 270M, and the unmodified OpenAI Python SDK as the client.
//!
//! Screenshots of each page are written to `target/tmp/ui-screenshots/` (not committed) so a
//! reviewer can look at them; the test prints where.

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cortex_gateway::auth::KeyHash;
use cortex_testkit::{collect, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::{cache, interrupt, require, sdk_chat};

const ADMIN: &str = "sk-test-admin";
const CLIENT: &str = "sk-test-client";
const GPU_MIB: u64 = 8192;

fn gemma() -> PathBuf {
    require(cache().join("models/gemma-3-270m-q4_k_m.gguf"))
}

/// `cortex serve` as a child (its stderr collected), on free ports, with one model, one client
/// key, SQLite usage and one configured 8 GiB GPU for the memory pages.
struct Server {
    child: Child,
    base: String,
    admin: String,
    config: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let config = dir.join("cortex.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
admin_key = "{admin}"

[runtime]
state_dir = "{state}"

[[gpu]]
index = 0
name = "Test GPU"
total_bytes = {gpu}

{tables}"#,
                admin = KeyHash::of(ADMIN),
                state = dir.join("state").display(),
                gpu = GPU_MIB << 20,
                tables = support::gemma_tables(&KeyHash::of(CLIENT).to_string()),
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cortex"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = collect(child.stderr.take().unwrap(), "serve");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            config,
            log,
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(150);
        while Instant::now() < deadline {
            let out = curl(&["-sf", &format!("{}/health", self.base)]);
            if serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|h| h["ready"] == true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cortex serve never became ready");
    }

    /// An admin API call with the admin key: the JSON answer.
    fn admin_api(&self, method: &str, route: &str) -> Value {
        let out = curl(&[
            "-s",
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {ADMIN}"),
            &format!("{}{route}", self.admin),
        ]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = interrupt(&mut self.child, "cortex serve");
        }
    }
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(args).output().unwrap()
}

/// chromedriver on a free port (its own process group, killed whole on drop with the Chromium it
/// started) and a `WebDriver` session of headless Chromium through it.
struct Browser {
    driver: Child,
    client: Option<Client>,
    shots: PathBuf,
}

impl Browser {
    async fn start() -> Self {
        use std::os::unix::process::CommandExt as _;
        let chromedriver = require(PathBuf::from("/usr/bin/chromedriver"));
        let chromium = require(PathBuf::from("/usr/bin/chromium"));
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--hide-scrollbars"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        };
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            driver,
            client: Some(client),
            shots,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Saves what the browser shows as `NAME.png`.
    async fn shot(&self, name: &str) {
        let png = self.c().screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    /// The text of the first element `css` finds (re-found each time: the live sections are
    /// replaced whole), or "" when there is none.
    async fn text(&self, css: &str) -> String {
        match self.c().find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.c()
            .find(Locator::Css(css))
            .await
            .ok()?
            .attr(name)
            .await
            .ok()?
    }

    /// Waits up to `limit` for `css`'s text to satisfy `ok`: how long it took.
    async fn wait_text(&self, css: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> Duration {
        let began = Instant::now();
        loop {
            let text = self.text(css).await;
            if ok(&text) {
                return began.elapsed();
            }
            if began.elapsed() >= limit {
                let url = self.c().current_url().await.map(|u| u.to_string());
                let source = self.c().source().await.unwrap_or_default();
                panic!("`{css}` still says {text:?} after {limit:?}, at {url:?}:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.element(css).await.click().await.unwrap();
    }

    /// The element `css` finds, or a panic naming it.
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
    }

    /// Types `text` into the field `css` finds.
    async fn type_into(&self, css: &str, text: &str) {
        self.element(css).await.send_keys(text).await.unwrap();
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.unwrap();
    }

    async fn path(&self) -> String {
        self.c().current_url().await.unwrap().path().to_owned()
    }

    /// Waits up to 10 s for the browser to be at `path` (a click's navigation may still run).
    async fn wait_path(&self, path: &str) {
        let began = Instant::now();
        while self.path().await != path {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "the browser is at {} instead of {path}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session's Chromium is chromedriver's child, in its process group.
        if let Ok(pgid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.wait();
    }
}

/// The session cookie a login gives, by plain HTTP: the `Cookie` header to send.
fn login_cookie(admin: &str) -> (String, String) {
    let out = curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--data-urlencode",
        &format!("key={ADMIN}"),
        &format!("{admin}/ui/login"),
    ]);
    let headers = String::from_utf8_lossy(&out.stdout).into_owned();
    let set = headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no session cookie: {headers}"))
        .trim()
        .to_owned();
    let pair = set.split(';').next().unwrap().to_owned();
    (pair, set)
}

/// `curl` with the session cookie: status and body.
fn with_cookie(cookie: &str, extra: &[&str], url: &str) -> (u16, String) {
    let mut args = vec!["-s", "-w", "\n%{http_code}", "-H"];
    let header = format!("Cookie: {cookie}");
    args.push(&header);
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

/// What `cortex gguf estimate --json` says for the llama-server flags `args` on the test's GPU.
fn estimate_cli(args: &[&str]) -> Value {
    let gpu = format!("Test GPU:{GPU_MIB}");
    let mut all = vec!["gguf", "estimate", "--json", "--gpu", &gpu];
    all.extend_from_slice(args);
    let out = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args(&all)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// What the server says about the page (its stderr), for the assertion messages.
fn log_of(server: &Server) -> String {
    server.log.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    server.wait_ready();
    let mut browser = Browser::start().await;
    log_in(&browser, &server).await;
    watch_state_changes(&browser, &server).await;
    let cookie = read_without_javascript(&server);
    live_logs(&browser, &server).await;
    usage_charts(&browser, &server, &cookie).await;
    keys(&browser, &server).await;
    calculator(&browser, &server).await;
    gpu_bars(&browser, &server).await;
    phone(&browser, &server).await;
    csrf_and_origin(&server, &cookie);
    log_out(&browser, &server).await;
    if let Some(client) = browser.client.take() {
        let _ = client.close().await;
    }
}

/// Nothing of the page on the client listener; a wrong key is refused, the admin key opens
/// the models page with an `HttpOnly`, `SameSite=Strict` cookie, and the model is running.
async fn log_in(browser: &Browser, server: &Server) {
    let admin = &server.admin;
    // Nothing of the page on the client listener.
    let (code, _) = with_cookie("", &[], &format!("{}/ui/models", server.base));
    assert_ne!(
        code, 200,
        "the page must not be reachable on the client listener"
    );

    // Log in: a wrong key is refused, the admin key opens the models page.
    browser.goto(&format!("{admin}/ui/")).await;
    assert_eq!(browser.path().await, "/ui/login");
    browser.shot("01-login").await;
    let login = |key: &'static str| {
        let b = &browser;
        async move {
            b.c()
                .form(Locator::Css("form.login"))
                .await
                .unwrap()
                .set_by_name("key", key)
                .await
                .unwrap()
                .submit()
                .await
                .unwrap();
        }
    };
    login("sk-not-the-admin-key").await;
    browser
        .wait_text("p.said.bad", Duration::from_secs(10), |t| {
            t == "That is not the admin key."
        })
        .await;
    login(ADMIN).await;
    browser.wait_path("/ui/models").await;
    let cookies = browser.c().get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "cortex_session")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(
        session.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );

    // The model is running.
    let state = "#model-gemma [data-role=state]";
    browser
        .wait_text(state, Duration::from_secs(5), |t| t == "running")
        .await;
    browser.shot("02-models-running").await;
}

/// The model's buttons, and changes made through the admin API: the page shows each state by
/// itself (pushed), and the test prints how long it took.
async fn watch_state_changes(browser: &Browser, server: &Server) {
    let admin = &server.admin;
    let state = "#model-gemma [data-role=state]";
    // Stop it with its button, then start it: the state changes on the page by itself.
    browser
        .click("#model-gemma form[action$='/stop'] button")
        .await;
    let stopped = browser
        .wait_text(state, Duration::from_secs(60), |t| t == "stopped")
        .await;
    browser.shot("03-models-stopped").await;
    assert!(server.admin_api("GET", "/admin/models/gemma")["state"] == "stopped");
    browser
        .click("#model-gemma form[action$='/start'] button")
        .await;
    let starting = browser
        .wait_text(state, Duration::from_secs(10), |t| {
            t.starts_with("starting") || t == "running"
        })
        .await;
    let running = browser
        .wait_text(state, Duration::from_secs(150), |t| t == "running")
        .await;
    browser.shot("04-models-running-again").await;
    // A change made elsewhere (the admin API) shows too: how long until the page says so.
    let asked = Instant::now();
    let stop_api = {
        let admin = admin.clone();
        std::thread::spawn(move || {
            curl(&[
                "-s",
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {ADMIN}"),
                &format!("{admin}/admin/models/gemma/stop"),
            ])
        })
    };
    browser
        .wait_text(state, Duration::from_secs(60), |t| {
            t == "stopping" || t == "stopped"
        })
        .await;
    let reflected = asked.elapsed();
    stop_api.join().unwrap();
    let asked = Instant::now();
    server.admin_api("POST", "/admin/models/gemma/start");
    browser
        .wait_text(state, Duration::from_secs(10), |t| {
            t.starts_with("starting") || t == "running"
        })
        .await;
    let reflected_start = asked.elapsed();
    browser
        .wait_text(state, Duration::from_secs(150), |t| t == "running")
        .await;
    eprintln!(
        "state changes: stop button to `stopped` {stopped:?}; start button to `starting` {starting:?}, to `running` {running:?}; \
         an admin API stop to the page saying so {reflected:?}, an admin API start {reflected_start:?}"
    );
}

/// The same state with no script, by plain HTTP: the session cookie, for the later checks.
fn read_without_javascript(server: &Server) -> String {
    let admin = &server.admin;
    // Without JavaScript the page reads the same state.
    let (cookie, set_cookie) = login_cookie(admin);
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let (code, html) = with_cookie(&cookie, &[], &format!("{admin}/ui/models"));
    assert_eq!(code, 200);
    assert!(html.contains(r#"data-state="running""#), "{html}");
    cookie
}

/// A request made after the model's page opened shows up in its live logs.
async fn live_logs(browser: &Browser, server: &Server) {
    let admin = &server.admin;
    // Live logs: a request made after the page opened shows up in it.
    browser.goto(&format!("{admin}/ui/models/gemma")).await;
    browser
        .wait_text("#logs-state", Duration::from_secs(10), |t| {
            t.starts_with("Live")
        })
        .await;
    let before = browser.text("#logs").await;
    let before_slots = before.matches("launch_slot_").count();
    let reply = tokio::task::spawn_blocking({
        let base = server.base.clone();
        move || sdk_chat(&base, CLIENT, "gemma-3-270m")
    })
    .await
    .unwrap();
    assert!(
        !reply["content"].as_str().unwrap_or("").is_empty(),
        "{reply}"
    );
    let answered = Instant::now();
    browser
        .wait_text("#logs", Duration::from_secs(10), |t| {
            t.matches("launch_slot_").count() > before_slots
        })
        .await;
    eprintln!(
        "a log line of the SDK's request on the page {:?} after its answer (at most)",
        answered.elapsed()
    );
    browser.shot("05-model-logs").await;
}

/// The SDK's two requests (a stream and a plain one) in the usage chart and totals, the same
/// numbers as the admin API's, and in the CSV export.
async fn usage_charts(browser: &Browser, server: &Server, cookie: &str) {
    let admin = &server.admin;
    // Usage: the SDK's two requests (a stream and a plain one) in the chart and the totals,
    // the same numbers as the admin API's.
    browser.goto(&format!("{admin}/ui/usage?range=15m")).await;
    let api = server.admin_api("GET", "/admin/usage?since=15m");
    let api_requests: u64 = api["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert!(api_requests >= 2, "{api}");
    let charted: u64 = browser
        .attr("#requests-chart", "data-total")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        charted, api_requests,
        "requests in the chart vs the admin API"
    );
    let tester: u64 = browser
        .attr("#usage-totals tr[data-key='tester']", "data-requests")
        .await
        .expect("a totals row for the key")
        .parse()
        .unwrap();
    assert_eq!(tester, 2);
    browser.shot("06-usage").await;
    let (code, csv) = with_cookie(cookie, &[], &format!("{admin}/ui/usage.csv?range=15m"));
    assert_eq!(code, 200);
    assert!(csv.starts_with("from,key,model,requests,"), "{csv}");
    // One row per minute bucket: the two requests may fall in two.
    let in_csv: u64 = csv
        .lines()
        .skip(1)
        .filter(|l| l.contains(",tester,gemma-3-270m,"))
        .map(|l| l.split(',').nth(3).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(in_csv, 2, "{csv}");
}

/// A key created on the page is shown once, works with the SDK, and is refused once revoked.
async fn keys(browser: &Browser, server: &Server) {
    let admin = &server.admin;
    // Keys: create one (shown once), use it, revoke it.
    browser.goto(&format!("{admin}/ui/keys")).await;
    browser
        .type_into("form.newkey input[name=id]", "browser")
        .await;
    browser
        .click("form.newkey input[value='gemma-3-270m']")
        .await;
    browser.click("form.newkey button").await;
    browser
        .wait_text("#new-key", Duration::from_secs(10), |t| {
            t.starts_with("sk-cortex-")
        })
        .await;
    let key = browser.text("#new-key").await;
    browser.shot("07-key-created").await;
    let reply = tokio::task::spawn_blocking({
        let (base, key) = (server.base.clone(), key.clone());
        move || sdk_chat(&base, &key, "gemma-3-270m")
    })
    .await
    .unwrap();
    assert!(
        !reply["content"].as_str().unwrap_or("").is_empty(),
        "{reply}"
    );
    browser.goto(&format!("{admin}/ui/keys")).await;
    let source = browser.c().source().await.unwrap();
    assert!(
        source.contains("browser") && !source.contains(&key),
        "a key is shown once only"
    );
    browser.click("#keys tr[data-key='browser'] button").await;
    browser.c().accept_alert().await.unwrap();
    browser
        .wait_text("p.said", Duration::from_secs(10), |t| t.contains("revoked"))
        .await;
    let refused = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {key}"),
        &format!("{}/v1/models", server.base),
    ]);
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");
}

/// The calculator shows the same numbers as `cortex gguf estimate`.
async fn calculator(browser: &Browser, server: &Server) {
    let admin = &server.admin;
    // The calculator: the same numbers as `cortex gguf estimate`.
    browser.goto(&format!("{admin}/ui/calculator")).await;
    let model = gemma().display().to_string();
    browser
        .element("select[name=file]")
        .await
        .select_by_value(&model)
        .await
        .unwrap();
    browser.type_into("input[name=ctx_size]", "8192").await;
    browser.click("form.calculator button").await;
    browser
        .c()
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#estimate"))
        .await
        .unwrap();
    let page_total = browser.attr("#estimate", "data-total").await.unwrap();
    let cli = estimate_cli(&["-m", &model, "-c", "8192"]);
    assert_eq!(
        page_total,
        cli["total"].to_string(),
        "page vs cortex gguf estimate"
    );
    for d in cli["devices"].as_array().unwrap() {
        let css = format!(
            "#devices tr[data-device='{}']",
            d["device"].as_str().unwrap()
        );
        assert_eq!(
            browser.attr(&css, "data-total").await,
            Some(d["total"].to_string()),
            "{css}"
        );
    }
    browser.shot("08-calculator").await;
}

/// The running model's estimate on the configured GPU, and on the host: the numbers of
/// `cortex gguf estimate` for the command `cortex plan` shows.
async fn gpu_bars(browser: &Browser, server: &Server) {
    let admin = &server.admin;
    // GPUs: the running model's estimate on the configured GPU.
    browser.goto(&format!("{admin}/ui/gpus")).await;
    let used: u64 = browser
        .attr("#gpu-0", "data-used")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let on_gpu: u64 = browser
        .attr("#gpu-0 rect[data-model='gemma']", "data-bytes")
        .await
        .expect("the running model's part of the bar")
        .parse()
        .unwrap();
    assert_eq!(used, on_gpu);
    // The same numbers as `cortex gguf estimate` of the command `cortex plan` shows.
    let plan = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args(["plan", "gemma", "--config", server.config.to_str().unwrap()])
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    let command = plan
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {plan}"))
        .replace("PORT", "0");
    let args = shlex::split(&command).unwrap();
    let args: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let cli = estimate_cli(&args);
    let device = |name: &str| {
        cli["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device"] == name)
            .map(|d| d["total"].as_u64().unwrap())
    };
    assert_eq!(Some(on_gpu), device("CUDA0"), "GPU page vs {cli}");
    let host: u64 = browser
        .attr(
            "#estimates tr[data-model='gemma'] td[data-bytes]",
            "data-bytes",
        )
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        Some(host),
        device("host"),
        "GPU page's host estimate vs {cli}"
    );
    browser.shot("09-gpus").await;
}

/// At a phone's width, nothing is wider than the screen.
async fn phone(browser: &Browser, server: &Server) {
    let admin = &server.admin;
    // A phone's width: nothing wider than the screen.
    browser.c().set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("{admin}/ui/models")).await;
    let fits = browser
        .c()
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    browser.shot("10-models-phone").await;
    assert_eq!(fits, json!(true), "the models page is wider than a phone");
}

/// Changes need the session's CSRF token and this page as their origin, and a session.
fn csrf_and_origin(server: &Server, cookie: &str) {
    let admin = &server.admin;
    // Changes need the session's CSRF token and this page as their origin.
    let stop = format!("{admin}/ui/models/gemma/stop");
    let (code, _) = with_cookie(cookie, &["-X", "POST", "-d", "csrf=forged"], &stop);
    assert_eq!(code, 403, "a stop without the CSRF token");
    let (code, models) = with_cookie(cookie, &[], &format!("{admin}/ui/models"));
    let csrf = models
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(code, 200);
    let body = format!("csrf={csrf}");
    let (code, _) = with_cookie(
        cookie,
        &[
            "-X",
            "POST",
            "-d",
            &body,
            "-H",
            "Origin: http://evil.example",
        ],
        &stop,
    );
    assert_eq!(code, 403, "a stop from another site");
    let (code, _) = with_cookie("", &["-X", "POST", "-d", &body], &stop);
    assert_eq!(code, 401, "a stop without a session");
    assert_eq!(
        server.admin_api("GET", "/admin/models/gemma")["state"],
        "running",
        "{}",
        log_of(server)
    );
}

/// Logging out ends the session.
async fn log_out(browser: &Browser, server: &Server) {
    let admin = &server.admin;
    // Logging out ends the session.
    browser.c().set_window_size(1280, 900).await.unwrap();
    browser.click("form.logout button").await;
    browser.wait_path("/ui/login").await;
    browser.goto(&format!("{admin}/ui/models")).await;
    assert_eq!(browser.path().await, "/ui/login");
}
