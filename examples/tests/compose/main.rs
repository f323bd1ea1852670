//! The examples that compose the library, run as a user runs them, against the real llama-server
//! b11434 and Gemma 3 270M that `scripts/setup` installs: `supervisor_only` starts the engine;
//! `hyper_subset` and `axum_gateway` serve it; the unmodified OpenAI Python SDK is the client.
//!
//! `cargo test` builds a package's examples before it runs its tests; this test runs those
//! binaries from `target/<profile>/examples/`.

#![allow(clippy::missing_panics_doc, reason = "tests")]

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../support/mod.rs"]
mod support;
use support::{cache, interrupt, require, sdk_chat};

/// An example's binary, built by `cargo test` beside this test's own (`deps/..`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (`cargo build -p cortex-examples --examples`), or run the package's tests without `--test` (`cargo test -p cortex-examples` builds them)",
        path.display()
    );
    path
}

/// A running example: its stdout lines arrive on a channel (and are copied to the test's stderr).
struct Example {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Example {
    fn start(name: &'static str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(example(name))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("{name}| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { name, child, lines }
    }

    /// The rest of the first line that starts with `prefix`, waiting up to `within`.
    fn wait_for(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(e) => panic!("{}: no line starting {prefix:?}: {e}", self.name),
            }
        }
    }

    /// Every line printed so far.
    fn printed(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    fn interrupt(&mut self) -> ExitStatus {
        interrupt(&mut self.child, self.name)
    }
}

impl Drop for Example {
    /// On a failed test: Ctrl-C (so the supervisor stops its engine), then a kill after 30 s;
    /// never a panic while panicking.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` a URL: status code and body.
fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

fn authority(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

#[test]
fn the_supervisor_the_hyper_subset_and_the_axum_app_serve_gemma() {
    let server = require(cache().join("bin/llama-server-b11434"));
    let model = require(cache().join("models/gemma-3-270m-q4_k_m.gguf"));

    // The supervisor alone starts llama-server and prints where it serves.
    let mut supervisor = Example::start(
        "supervisor_only",
        &[server.to_str().unwrap(), model.to_str().unwrap()],
        &[],
    );
    let upstream = supervisor.wait_for("serving at ", Duration::from_secs(150));
    assert!(upstream.starts_with("http://127.0.0.1:"), "{upstream}");

    hyper_subset_serves(&upstream);
    axum_gateway_serves(&upstream);

    // Ctrl-C stops the supervisor's engine: nothing listens where it served.
    assert!(supervisor.interrupt().success());
    assert!(
        TcpStream::connect(authority(&upstream)).is_err(),
        "llama-server outlived the supervisor"
    );
}

/// hyper with routing, metering and balancing: no keys; one usage line per request.
fn hyper_subset_serves(upstream: &str) {
    let mut hyper = Example::start("hyper_subset", &[upstream, "0"], &[]);
    let base = hyper.wait_for("listening on ", Duration::from_secs(10));
    let chat = sdk_chat(&base, "unused", "local");
    assert!(!chat["content"].as_str().unwrap().is_empty(), "{chat}");
    assert_eq!(chat["usage"][1], 8, "{chat}");
    let (status, body) = curl(
        &format!("{base}/v1/chat/completions"),
        &[
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"model":"gpt-9","messages":[]}"#,
        ],
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "model_not_found"
    );
    // One usage line per routed request (the 404 was never routed), printed when its body ended.
    let mut usage_lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while usage_lines.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match hyper.lines.recv_timeout(left) {
            Ok(line) if line.contains(" local ") => usage_lines.push(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    usage_lines.extend(
        hyper
            .printed()
            .into_iter()
            .filter(|l| l.contains(" local ")),
    );
    assert_eq!(usage_lines.len(), 2, "{usage_lines:?}");
    for line in &usage_lines {
        let tokens: u64 = line
            .split_once("tokens=")
            .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no token count in {line:?}"));
        assert!(line.contains("Some(200)") && tokens > 8, "{line}");
    }
    assert!(hyper.interrupt().success());
}

/// axum: the application's routes beside every gateway layer.
fn axum_gateway_serves(upstream: &str) {
    let mut app = Example::start(
        "axum_gateway",
        &[upstream, "0"],
        &[("CORTEX_API_KEY", "sk-axum-test")],
    );
    let base = app.wait_for("listening on ", Duration::from_secs(10));
    let (status, body) = curl(&format!("{base}/"), &[]);
    assert_eq!(status, 200);
    assert!(body.contains("my application"), "{body}");
    let (status, body) = curl(&format!("{base}/v1/models"), &[]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["type"],
        "invalid_request_error"
    );
    let (status, body) = curl(
        &format!("{base}/v1/models"),
        &["-H", "authorization: Bearer sk-axum-test"],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"][0]["id"],
        "local"
    );
    let chat = sdk_chat(&base, "sk-axum-test", "local");
    assert_eq!(chat["usage"][1], 8, "{chat}");
    // A record is delivered when the body ends, which can be a moment after the client has it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let row = loop {
        let (status, body) = curl(&format!("{base}/app/usage"), &[]);
        assert_eq!(status, 200);
        let usage: Value = serde_json::from_str(&body).unwrap();
        let row = usage
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == "local")
            .cloned();
        if let Some(row) = row.filter(|r| r["requests"] == 2) {
            break row;
        }
        assert!(Instant::now() < deadline, "{usage}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(row["key"], "axum-user");
    assert_eq!(row["completion_tokens"], 16, "{row}");
    let (status, _) = curl(&format!("{base}/elsewhere"), &[]);
    assert_eq!(status, 404);
    assert!(app.interrupt().success());
}
