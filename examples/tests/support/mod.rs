//! What the `cli` and `compose` tests share: where `scripts/setup` put the real parts, the OpenAI
//! SDK client, and Ctrl-C for a child process.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) use cortex_testkit::{cache, require};

/// The `[[keys]]` table of the client key whose digest is `client_hash` (id `tester`, Gemma only)
/// and the `[[models]]` table of Gemma 3 270M on the real llama-server (`gemma`, served as
/// `gemma-3-270m`, 2,048 tokens of context, 2 slots, 2 threads): what the tests' configurations
/// share.
#[allow(dead_code, reason = "the compose tests write their own configuration")]
pub(crate) fn gemma_tables(client_hash: &str) -> String {
    format!(
        r#"[[keys]]
id = "tester"
hash = "{client_hash}"
models = ["gemma-3-270m"]

[[models]]
id = "gemma"
served_name = "gemma-3-270m"
engine = "llamacpp"
source = {{ path = "{model}" }}
startup_timeout = "2m"

[models.settings]
program = "{server}"
ctx_size = 2048
parallel = 2
threads = 2
chat_template = "gemma"
"#,
        model = require(cache().join("models/gemma-3-270m-q4_k_m.gguf")).display(),
        server = require(cache().join("bin/llama-server-b11434")).display(),
    )
}

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
