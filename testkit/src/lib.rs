//! What the tests of the Cortex crates share, so that no test file carries its own copy: where
//! `scripts/setup` installed the real parts (llama-server, the model, the Python environment)
//! and the repository's captured facts, and checks on processes.
//!
//! A dev-dependency of the workspace's crates only (`publish = false`); it depends on none of
//! them, so any of them can use it.

pub mod postgres;
pub mod swarm;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `$CORTEX_CACHE`, default `~/.cache/cortex`: where `scripts/setup` installs the real parts.
///
/// # Panics
///
/// When neither `CORTEX_CACHE` nor `HOME` is set.
pub fn cache() -> PathBuf {
    std::env::var_os("CORTEX_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/cortex")))
        .expect("neither CORTEX_CACHE nor HOME is set")
}

/// `path`, which `scripts/setup` installs.
///
/// # Panics
///
/// When it is missing, saying which command installs it.
pub fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (the README's test command does) to install the test parts",
        path.display()
    );
    path
}

/// The real Gemma 3 270M `Q4_K_M` model.
pub fn gemma() -> PathBuf {
    require(cache().join("models/gemma-3-270m-q4_k_m.gguf"))
}

/// The pinned llama-server build.
pub fn llama_server() -> PathBuf {
    require(cache().join("bin/llama-server-b11434"))
}

/// The RPC server of the same llama.cpp build (`ggml-rpc-server`): a second ggml backend over
/// loopback, the one offload target a machine without a GPU has.
pub fn rpc_server() -> PathBuf {
    require(cache().join("bin/rpc-server-b11434"))
}

/// The Python of the test environment (the OpenAI SDK, the reference GGUF reader).
pub fn python() -> PathBuf {
    require(cache().join("venv/bin/python"))
}

/// The repository's `testdata/`: the engines' captures and tables (origin in testdata/README.md).
pub fn testdata() -> PathBuf {
    require(Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata"))
}

/// `/proc/PID/stat`'s state letter and process group of `pid`, if it exists.
fn stat(pid: u32) -> Option<(String, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = s.get(s.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.to_owned();
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether process `pid` runs: it exists and is not a zombie (a child nobody reaped, such as an
/// orphan of a container's init that does not reap, still shows in `/proc`).
pub fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != "Z" && state != "X")
}

/// The running members of process group `pgid` (an engine's helpers join its leader's group).
///
/// # Panics
///
/// When `/proc` cannot be read.
pub fn process_group(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(_, pgrp)| pgrp == pgid) && running(*pid))
        .collect()
}

/// What a process runtime's state directory records besides its lock and the usage database: the
/// names of its files.
///
/// # Panics
///
/// When the directory cannot be read.
pub fn recorded(state_dir: &Path) -> Vec<String> {
    std::fs::read_dir(state_dir)
        .expect("a state directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        // Its lock, and `cortex serve`'s usage database (with SQLite's journal files), which
        // live there too and outlive the engines by design.
        .filter(|n| n != "lock" && !n.starts_with("usage.sqlite3"))
        .collect()
}

/// Whether `f` holds within `limit`, checking every 20 ms (blocking the thread).
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port free now (bound, then released).
///
/// # Panics
///
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Copies `from` line by line into a shared string as it comes (and, prefixed, to the test's
/// stderr): a child's output, readable while it runs.
pub fn collect(
    from: impl std::io::Read + Send + 'static,
    prefix: &'static str,
) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let copy = Arc::clone(&text);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            eprintln!("{prefix}| {line}");
            let mut text = copy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_reaped_one_does_not() {
        assert!(running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        assert!(
            within(Duration::from_secs(5), || !running(pid)),
            "a zombie is not running"
        );
        child.wait().unwrap();
        assert!(!running(pid));
    }
}
