//! What the `cli` and `compose` tests share: where `scripts/setup` put the real parts, the OpenAI
//! SDK client, and Ctrl-C for a child process.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) use cortex_testkit::{cache, require};

/// A chat completion through `base` (no `/v1`) with the unmodified OpenAI Python SDK
/// (`tests/cli/chat.py`): its JSON report.
pub(crate) fn sdk_chat(base: &str, key: &str, model: &str) -> Value {
    let python = require(cache().join("venv/bin/python"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/chat.py");
    let out = Command::new(python)
        .arg(script)
        .args([&format!("{base}/v1"), key, model])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Ctrl-C (SIGINT) to `child`, then its exit status; panics if it has not exited in 60 s.
pub(crate) fn interrupt(child: &mut Child, name: &str) -> ExitStatus {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{name} did not exit on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}
