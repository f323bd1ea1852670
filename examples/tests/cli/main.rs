//! The `cortex` binary as a user runs it: every subcommand, against the real llama-server b11434
//! and Gemma 3 270M that `scripts/setup` installs, with the OpenAI Python SDK as the client.

#![allow(clippy::missing_panics_doc, reason = "tests")]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cortex_gateway::auth::KeyHash;
use serde_json::Value;

#[path = "../support/mod.rs"]
mod support;
use cortex_testkit::{collect, free_port, running, within};
use support::{cache, interrupt, require, sdk_chat};

/// Turns between the tests of this binary, which run two at a time: the quickstart compiles a
/// release build of `cortex` from a clean clone, which takes both cores of a small machine for
/// minutes, and llama-server (`-t 2`) generating beside it can slow to a handful of tokens a minute
/// (CI saw a 160-token stream not finish in 60 s). The quickstart runs alone; every test that
/// starts `cortex serve` shares the rest.
static TURNS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_turn() -> std::sync::RwLockReadGuard<'static, ()> {
    TURNS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn alone_turn() -> std::sync::RwLockWriteGuard<'static, ()> {
    TURNS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const ADMIN: &str = "sk-test-admin";
const CLIENT: &str = "sk-test-client";

fn gemma() -> PathBuf {
    require(cache().join("models/gemma-3-270m-q4_k_m.gguf"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn cortex(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A configuration serving Gemma on `port`, with an admin key and one client key.
fn config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("cortex.toml");
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
admin_key = "{admin}"

[runtime]
state_dir = "{state}"

{tables}"#,
            admin = KeyHash::of(ADMIN),
            admin_port = free_port(),
            state = dir.join("state").display(),
            tables = support::gemma_tables(&KeyHash::of(CLIENT).to_string()),
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_config_error_names_file_line_and_field_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // (file text, what the error must say)
        (
            "[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n",
            ":3:1: unknown field `listne`",
        ),
        (
            "[[keys]]\nid = \"a\"\nhash = \"sha256:12\"\n",
            ":3:8: keys[0].hash: key hash has 2 hex digits",
        ),
        (
            "[[models]]\nid = \"m\"\nengine = \"llamacpp\"\nsource = { path = \"/x.gguf\" }\n\n[[models]]\nid = \"m\"\nengine = \"llamacpp\"\nsource = { path = \"/y.gguf\" }\n",
            ":7:1: models[1].id: `m` is already the id of models[0]",
        ),
        (
            "[[keys]]\nid = \"a\"\nhash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n\n[[models]]\nid = \"m\"\nengine = \"llamacpp\"\nsource = { path = \"/x.gguf\" }\n\n[models.settings]\nctx_size = \"big\"\n",
            ":11:1: models[0] (m): error: settings.ctx_size: invalid type",
        ),
        (
            "[[keys]]\nid = \"a\"\nhash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nmodels = [\"nope\"]\n",
            ":4:10: keys[0].models: `nope` is not a name any model in this file serves",
        ),
        (
            "[runtime]\nkind = \"podman\"\n",
            ":2:8: unknown variant `podman`",
        ),
        (
            "[runtime]\nkind = \"swarm\"\n\n[runtime.placement.nope]\nconstraints = [\"node.role == worker\"]\n",
            "runtime.placement.nope: no model has the id `nope`",
        ),
        (
            "[runtime]\nconstraints = [\"node.labels.gpu == l4\"]\n",
            "are for kind = \"swarm\"",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, body).unwrap();
        let out = cortex(&["serve", "--config", path.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "case {i}: {err}");
        assert!(
            err.contains(&format!("{}{expected}", path.display()))
                || (err.contains(&*path.display().to_string()) && err.contains(expected)),
            "case {i}: expected {expected:?} in:\n{err}"
        );
        assert!(err.contains("nothing was started"), "case {i}: {err}");
    }
    let out = cortex(&["serve", "--config", "/nonexistent/cortex.toml"]);
    assert!(text(&out.stderr).contains("/nonexistent/cortex.toml: cannot read the configuration"));
}

#[test]
fn plan_shows_the_command_the_diagnostics_and_the_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), free_port());
    let out = cortex(&["plan", "gemma", "--config", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("# gemma replica 0 (process)"), "{stdout}");
    assert!(stdout.contains("llama-server-b11434 -m "), "{stdout}");
    assert!(stdout.contains("-c 2048"), "{stdout}");
    assert!(stdout.contains("-np 2"), "{stdout}");
    assert!(stdout.contains("diagnostics: none"), "{stdout}");
    assert!(stdout.contains("# memory estimate"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("host ")), "{stdout}");

    let out = cortex(&[
        "plan",
        "gemma",
        "--json",
        "--config",
        path.to_str().unwrap(),
    ]);
    let plans: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plans[0]["model"], "gemma");
    assert!(
        plans[0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--alias")
    );

    let out = cortex(&["plan", "llama", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no model `llama` in the configuration (models: gemma)"));

    // A warning is shown, and the plan still made.
    let warned = std::fs::read_to_string(&path).unwrap().replace(
        "startup_timeout = \"2m\"",
        "startup_timeout = \"2m\"\nargs = [\"--ctx\", \"1024\"]",
    );
    std::fs::write(&path, warned).unwrap();
    let out = cortex(&["plan", "gemma", "--config", path.to_str().unwrap()]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("args[0]"), "{all}");

    // Without a chat template: the real Gemma GGUF has none, and the plan says what to set.
    let bare = std::fs::read_to_string(&path)
        .unwrap()
        .replace("chat_template = \"gemma\"\n", "");
    std::fs::write(&path, bare).unwrap();
    let out = cortex(&["plan", "gemma", "--config", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("warning: settings.chat_template: the model file has no chat template"),
        "{stdout}"
    );
    assert!(stdout.contains("set chat_template = \"gemma\""), "{stdout}");
    assert!(!stdout.contains("diagnostics: none"), "{stdout}");
}

#[test]
fn gguf_inspect_and_estimate() {
    let model = gemma();
    let out = cortex(&["gguf", "inspect", model.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("gemma3"), "{stdout}");

    let out = cortex(&["gguf", "inspect", "--json", model.to_str().unwrap()]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["kv"]["general.architecture"]["value"], "gemma3");

    let estimate = |extra: &[&str], ngl: &str| {
        let mut args = vec!["gguf", "estimate"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--gpu", "NVIDIA L4:23034", "-m", model.to_str().unwrap()]);
        args.extend_from_slice(&["-c", "4096", "-ngl", ngl]);
        cortex(&args)
    };
    let out = estimate(&[], "all");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("CUDA0"), "{stdout}");
    assert!(
        stdout.contains("compute buffers are approximate"),
        "{stdout}"
    );

    // Each buffer says how far it can be trusted.
    let out = estimate(&["--json"], "10");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bases: std::collections::BTreeSet<(String, String, String)> = doc["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap().to_owned();
            (s("device"), s("kind"), s("basis"))
        })
        .collect();
    for b in &bases {
        let expected = match (b.0.as_str(), b.1.as_str()) {
            (_, "compute") => "approximate",
            ("host", _) => "exact",
            _ => "derived",
        };
        assert_eq!(b.2, expected, "{bases:?}");
    }
    assert!(bases.iter().any(|b| b.2 == "derived"), "{bases:?}");

    let out = cortex(&["gguf", "inspect", "/nonexistent.gguf"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent.gguf"));
}

#[test]
fn keys_new_prints_the_key_once_and_writes_only_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), free_port());
    let p = path.to_str().unwrap();

    let out = cortex(&[
        "keys",
        "new",
        "--id",
        "bob",
        "--model",
        "gemma-3-270m",
        "--config",
        p,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_owned();
    assert!(key.starts_with("sk-cortex-"), "{key}");
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(!file.contains(&key), "the key itself was written");
    assert!(file.contains(&KeyHash::of(&key).to_string()));
    assert!(file.contains("id = \"bob\""));

    let out = cortex(&["keys", "new", "--admin", "--config", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let admin = text(&out.stdout).trim().to_owned();
    let file = std::fs::read_to_string(&path).unwrap();
    assert_eq!(file.matches("admin_key").count(), 1, "{file}");
    assert!(file.contains(&KeyHash::of(&admin).to_string()));
    assert!(!file.contains(&KeyHash::of(ADMIN).to_string()));

    // Refusals write nothing: a duplicate id, a model the file does not declare, a broken file
    // (for --admin too).
    let before = std::fs::read_to_string(&path).unwrap();
    let out = cortex(&["keys", "new", "--id", "bob", "--config", p]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("a key with id `bob` already exists"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(out.stdout.is_empty(), "no key shown for a refused request");
    let out = cortex(&[
        "keys", "new", "--id", "eve", "--model", "gpt-9", "--config", p,
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("`gpt-9` is not the served name of any model"));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    std::fs::write(&path, format!("{before}\n[[keys]]\nid = \"broken\"\n")).unwrap();
    let broken = std::fs::read_to_string(&path).unwrap();
    for args in [&["--admin"][..], &["--id", "carol"][..]] {
        let mut all = vec!["keys", "new"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", p]);
        let out = cortex(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("missing field `hash`"), "{err}");
        assert!(err.contains("nothing was written"), "{err}");
        assert!(out.stdout.is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
    }
}

/// The shipped configuration, edited by `cortex keys new` as a user would after the quickstart:
/// found as `./cortex.toml`, comments and layout kept, the demo admin key's comment gone with it.
#[test]
fn keys_new_keeps_the_files_comments_and_finds_it_like_serve() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo().join("examples/cortex.toml")).unwrap();
    std::fs::write(dir.path().join("cortex.toml"), &shipped).unwrap();
    let run = |args: &[&str], cwd: &Path, env: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cortex"));
        c.args(args).current_dir(cwd).env_remove("CORTEX_CONFIG");
        if let Some(p) = env {
            c.env("CORTEX_CONFIG", p);
        }
        c.output().unwrap()
    };
    // From the directory holding cortex.toml, no --config.
    let out = run(&["keys", "new", "--admin"], dir.path(), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let admin = text(&out.stdout).trim().to_owned();
    let file = std::fs::read_to_string(dir.path().join("cortex.toml")).unwrap();
    assert!(file.contains(&KeyHash::of(&admin).to_string()));
    assert!(!file.contains("sk-cortex-quickstart-admin"), "{file}");
    // Every other line of the shipped file is still there, in order.
    let kept: Vec<&str> = shipped
        .lines()
        .filter(|l| !l.contains("sk-cortex-quickstart-admin") && !l.starts_with("admin_key"))
        .collect();
    let now: Vec<&str> = file
        .lines()
        .filter(|l| !l.starts_with("admin_key"))
        .collect();
    assert_eq!(now, kept);

    // Elsewhere, through $CORTEX_CONFIG.
    let before = std::fs::read_to_string(dir.path().join("cortex.toml")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run(
        &["keys", "new", "--id", "alice"],
        elsewhere.path(),
        Some(&dir.path().join("cortex.toml")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = std::fs::read_to_string(dir.path().join("cortex.toml")).unwrap();
    // Every line that was there is still there, in order; only the new table is added.
    let mut after = file.lines();
    for line in before.lines() {
        assert!(after.any(|l| l == line), "{line:?} lost or moved:\n{file}");
    }
    assert!(
        file.contains("# Client key: sk-cortex-quickstart"),
        "{file}"
    );
    assert!(file.contains("id = \"alice\""), "{file}");
    // Nowhere: the places looked are named.
    let out = run(&["keys", "new", "--id", "x"], elsewhere.path(), None);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no configuration found (looked in: cortex.toml"),
        "{err}"
    );
    let out = run(&["plan", "gemma"], dir.path(), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Small things a user meets: output into a closed pipe, `cortex gguf`'s own help and error
/// prefix, the port `cortex plan` shows for a process replica.
#[test]
fn pipes_help_and_ports() {
    // `| head -1`: exits quietly, no panic.
    let gguf = gemma();
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "'{}' gguf inspect --full '{}' | head -1",
                env!("CARGO_BIN_EXE_cortex"),
                gguf.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with("file:"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );

    let out = cortex(&["gguf", "inspect", "--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("usage: cortex gguf inspect [--json] [--full] FILE"));
    let out = cortex(&["gguf", "estimate", "--help"]);
    assert!(text(&out.stdout).contains("usage: cortex gguf estimate [--json]"));
    let out = cortex(&["gguf", "inspect", "/nonexistent.gguf"]);
    assert!(
        text(&out.stderr).starts_with("cortex gguf inspect: "),
        "{}",
        text(&out.stderr)
    );
    let out = cortex(&["gguf", "estimate", "-m", "/nonexistent.gguf"]);
    assert!(
        text(&out.stderr).starts_with("cortex gguf estimate: "),
        "{}",
        text(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), 8080);
    let out = cortex(&["plan", "gemma", "--config", path.to_str().unwrap()]);
    let plan = text(&out.stdout);
    assert!(plan.contains("--port PORT "), "{plan}");
    assert!(plan.contains("PORT: a free port on 127.0.0.1, chosen when the replica starts"));
    assert!(!plan.contains("--port 8080"), "{plan}");
}

/// A vLLM model sized against the configured GPUs: one that will not fit is refused when the
/// configuration is read, with the changes that would fit; on a larger GPU it is planned.
#[test]
fn a_vllm_model_is_sized_against_the_configured_gpus() {
    let dir = tempfile::tempdir().unwrap();
    // An 8B Llama's shapes: config.json and one safetensors header (no tensor data) holding
    // 8.03 billion bf16 parameters.
    let model = dir.path().join("llama-8b");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("config.json"),
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
            "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
            "vocab_size": 128_256, "max_position_embeddings": 8192, "torch_dtype": "bfloat16"
        })
        .to_string(),
    )
    .unwrap();
    let params: u64 = 8_030_261_248;
    let header = serde_json::json!({
        "model.weight": {"dtype": "BF16", "shape": [params / 4096, 4096], "data_offsets": [0, params * 2]}
    })
    .to_string();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header.as_bytes());
    std::fs::write(model.join("model.safetensors"), file).unwrap();
    let write = |gib: u64| {
        let path = dir.path().join(format!("cortex-{gib}.toml"));
        std::fs::write(
            &path,
            format!(
                "[[gpu]]\nindex = 0\nname = \"GPU\"\ntotal_bytes = {}\n\n[[models]]\nid = \"llama\"\nengine = \"vllm\"\nsource = {{ path = \"{}\" }}\n\n[models.settings]\nmax_model_len = 8192\n",
                gib << 30,
                model.display()
            ),
        )
        .unwrap();
        path
    };
    let out = cortex(&["plan", "llama", "--config", write(16).to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "models[0] (llama): error: settings: the model does not fit the 1 GPU it is given"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("quantization = \"fp8\" (fits:"), "{stderr}");
    let out = cortex(&["plan", "llama", "--config", write(80).to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("--max-model-len 8192"));
}

/// `cortex serve` as a child, its stderr copied to the test's.
struct Server {
    child: Child,
    base: String,
    config: PathBuf,
    began: Instant,
    /// Everything it wrote to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    /// Everything it wrote to stdout (the access log) so far.
    out: std::sync::Arc<std::sync::Mutex<String>>,
    /// Held while it runs (dropped after `Drop::drop` stopped it).
    _turn: std::sync::RwLockReadGuard<'static, ()>,
}

impl Server {
    fn start(config: PathBuf, port: u16) -> Self {
        let turn = shared_turn();
        let began = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cortex"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = collect(child.stderr.take().unwrap(), "serve");
        let out = collect(child.stdout.take().unwrap(), "access");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            config,
            began,
            log,
            out,
            _turn: turn,
        }
    }

    fn models(&self, args: &[&str]) -> Output {
        let mut all = vec!["models"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", self.config.to_str().unwrap()]);
        Command::new(env!("CARGO_BIN_EXE_cortex"))
            .args(&all)
            .env("CORTEX_ADMIN_KEY", ADMIN)
            .output()
            .unwrap()
    }

    /// The admin listener's base URL, from the configuration.
    fn admin_base(&self) -> String {
        let file = std::fs::read_to_string(&self.config).unwrap();
        let addr = file
            .lines()
            .find_map(|l| l.strip_prefix("admin_listen = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap();
        format!("http://{addr}")
    }

    fn health(&self) -> Option<Value> {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/health", self.base)])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(150);
        while Instant::now() < deadline {
            if self.health().is_some_and(|h| h["ready"] == true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cortex serve never became ready");
    }

    fn interrupt(&mut self) -> std::process::ExitStatus {
        interrupt(&mut self.child, "cortex serve")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.interrupt();
        }
    }
}

/// The process ids of the instances `status` shows (`proc-N-PID`).
fn instance_pids(status: &Value) -> Vec<u32> {
    status["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["instance"].as_str())
        .filter_map(|i| i.rsplit('-').next()?.parse().ok())
        .collect()
}

/// `cortex models logs … | head -1`: one line, then a quiet exit.
fn assert_logs_into_a_closed_pipe_are_quiet(server: &Server) {
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "'{}' models logs gemma --lines 200 --config '{}' | head -1",
                env!("CARGO_BIN_EXE_cortex"),
                server.config.display()
            ),
        ])
        .env("CORTEX_ADMIN_KEY", ADMIN)
        .output()
        .unwrap();
    let first = text(&out.stdout);
    assert!(
        first.starts_with("== replica 0 (") && first.lines().count() == 1,
        "{first}"
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// A chat request through `server` is refused with 503, the OpenAI-shaped `code`, and a message
/// containing `says`.
fn assert_refused_503(server: &Server, code: &str, says: &str) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            &format!("{}/v1/chat/completions", server.base),
            "-H",
            &format!("Authorization: Bearer {CLIENT}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"model":"gemma-3-270m","messages":[{"role":"user","content":"hi"}]}"#,
        ])
        .output()
        .unwrap();
    let answer = text(&out.stdout);
    let (body, status) = answer.rsplit_once('\n').unwrap();
    assert_eq!(status, "503", "{answer}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(says),
        "{body}"
    );
}

/// After `cortex models stop`: the replica is not shown as ready, and a client is told the model
/// is stopped (503 `model_stopped`), not that it does not exist.
fn assert_the_model_is_said_to_be_stopped(server: &Server) {
    let out = server.models(&["status", "gemma"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "stopped", "{status}");
    for replica in status["replicas"].as_array().unwrap() {
        assert_eq!(replica["registered"], false, "{status}");
        assert_ne!(replica["health"], "ready", "{status}");
        assert!(
            replica["health"].to_string().contains("stopped"),
            "{status}"
        );
    }
    assert_refused_503(server, "model_stopped", "`gemma-3-270m` is stopped");
}

#[test]
#[allow(clippy::too_many_lines, reason = "one session, read top to bottom")]
fn serve_answers_the_sdk_and_the_models_commands_then_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(config(dir.path(), port), port);
    server.wait_ready();
    let ready = server.began.elapsed();

    let chat = sdk_chat(&server.base, CLIENT, "gemma-3-270m");
    let first_token = chat["first_token_s"].as_f64().unwrap();
    eprintln!(
        "time to first token: ready {:.2} s after `cortex serve` began; first token {:.2} s after that (total {:.2} s); OpenAI SDK {}",
        ready.as_secs_f64(),
        first_token,
        ready.as_secs_f64() + first_token,
        chat["sdk_version"]
    );
    assert!(!chat["content"].as_str().unwrap().is_empty(), "{chat}");
    assert_eq!(chat["usage"][1], 8, "{chat}");

    // models list / status / logs / usage
    let out = server.models(&["list"]);
    let list = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(list.contains("gemma") && list.contains("running"), "{list}");
    assert!(list.contains("http://127.0.0.1:"), "{list}");

    let out = server.models(&["status", "gemma-3-270m"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "running");
    let pids = instance_pids(&status);
    assert_eq!(pids.len(), 1, "{status}");

    let out = server.models(&["logs", "gemma", "--lines", "20"]);
    let logs = text(&out.stdout);
    assert!(out.status.success());
    assert!(logs.contains("== replica 0"), "{logs}");
    assert!(logs.lines().count() > 5, "{logs}");
    assert_logs_into_a_closed_pipe_are_quiet(&server);

    // llama-server's own metrics, through the admin listener, labelled with model and replica.
    let out = Command::new("curl")
        .args(["-sf", "-H", &format!("authorization: Bearer {ADMIN}")])
        .arg(format!(
            "{}/admin/models/gemma/metrics",
            server.admin_base()
        ))
        .output()
        .unwrap();
    let metrics = text(&out.stdout);
    assert!(
        metrics.contains(r#"llamacpp:prompt_tokens_total{model="gemma",replica="0"} "#),
        "{metrics}"
    );

    let out = server.models(&["usage"]);
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &usage["data"][0];
    assert_eq!(entry["key"], "tester");
    assert_eq!(entry["requests"], 2);
    assert_eq!(entry["completion_tokens"], 16);
    // By key, model and time range (records are kept in SQLite by default).
    let out = server.models(&[
        "usage",
        "--key",
        "tester",
        "--model",
        "gemma-3-270m",
        "--since",
        "1h",
    ]);
    let ranged: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ranged["data"], usage["data"], "{ranged}");
    let out = server.models(&["usage", "--since", "2999-01-01T00:00:00Z"]);
    let future: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(future["data"], serde_json::json!([]), "{future}");
    let out = server.models(&["usage", "--until", "yesterday-ish"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("until"), "{}", text(&out.stderr));

    // Metrics and the admin API are on the admin listener only; admin needs the key.
    let admin_base = server.admin_base();
    let get = |url: String| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &url])
            .output()
            .unwrap();
        let all = text(&out.stdout);
        let (body, code) = all.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    let (code, metrics) = get(format!("{admin_base}/metrics"));
    assert_eq!(code, "200");
    assert!(metrics.contains("cortex_gateway_requests_total"));
    // On the client listener they do not exist: without a key, 401 as for any path; with one,
    // an OpenAI-shaped 404.
    for path in ["/metrics", "/admin/models"] {
        assert_eq!(get(format!("{}{path}", server.base)).0, "401", "{path}");
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("authorization: Bearer {CLIENT}"))
            .arg(format!("{}{path}", server.base))
            .output()
            .unwrap();
        assert_eq!(text(&out.stdout), "404", "{path}");
    }
    assert_eq!(get(format!("{admin_base}/health")).0, "200");
    let out = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args([
            "models",
            "list",
            "--url",
            &admin_base,
            "--admin-key",
            "wrong",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));

    // stop, then start again (waits until running)
    let out = server.models(&["stop", "gemma"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = server.models(&["list"]);
    assert!(text(&out.stdout).contains("stopped"));
    assert_the_model_is_said_to_be_stopped(&server);
    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "llama-server {pid} still runs"
        );
    }
    let out = server.models(&["start", "gemma"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("running after"));
    let out = server.models(&["status", "gemma"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pids = instance_pids(&status);
    let out = server.models(&["start", "gemma"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("already running"));

    // Ctrl-C: every engine stopped, exit 0.
    let exit = server.interrupt();
    assert!(exit.success(), "{exit:?}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "llama-server {pid} outlived cortex"
        );
    }
    // The usage records outlive the server: the next one (or anyone) reads them from the file.
    let store =
        cortex_gateway::meter::SqliteUsage::open(dir.path().join("state/usage.sqlite3")).unwrap();
    let kept = store
        .query(&cortex_gateway::meter::UsageQuery::default().key("tester"))
        .unwrap();
    assert_eq!(kept[0].totals.requests, 2, "{kept:?}");
}

/// `config` with its model loaded on demand (`extra` lines added to the model's table): the
/// file's path and its text.
fn on_demand_config(dir: &Path, port: u16, extra: &str) -> (PathBuf, String) {
    let path = config(dir, port);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "startup_timeout = \"2m\"",
        &format!("startup_timeout = \"2m\"\nload = \"on-demand\"{extra}"),
    );
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

/// `load = "on-demand"` with the real llama-server: nothing runs until the first requests, which
/// start the model once and are answered from it; `/v1/models` says its state; a client that
/// hangs up while waiting does not cancel the start; after `idle_unload` without requests the
/// model is stopped (its process gone), and the next request starts it again.
#[test]
#[allow(clippy::too_many_lines, reason = "one session, read top to bottom")]
fn an_on_demand_model_starts_once_with_its_first_requests_and_unloads_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (path, _) = on_demand_config(dir.path(), port, "\nidle_unload = \"4s\"");
    let server = Server::start(path, port);
    server.wait_ready();
    let models = |server: &Server| -> Value {
        let out = Command::new("curl")
            .args(["-s", &format!("{}/v1/models", server.base), "-H"])
            .arg(format!("Authorization: Bearer {CLIENT}"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let listed = models(&server);
    assert_eq!(listed["data"][0]["id"], "gemma-3-270m", "{listed}");
    assert_eq!(listed["data"][0]["state"], "unloaded", "{listed}");
    let out = server.models(&["status", "gemma"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "stopped", "{status}");

    // A client that gives up after half a second while the model loads, then two at once.
    let hang_up = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "0.5",
            &format!("{}/v1/chat/completions", server.base),
            "-H",
            &format!("Authorization: Bearer {CLIENT}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"model":"gemma-3-270m","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#,
        ])
        .status()
        .unwrap();
    assert!(!hang_up.success(), "curl should have timed out waiting");
    let base = server.base.clone();
    let first = std::thread::spawn(move || sdk_chat(&base, CLIENT, "gemma-3-270m"));
    let base = server.base.clone();
    let second = std::thread::spawn(move || sdk_chat(&base, CLIENT, "gemma-3-270m"));
    let (first, second) = (first.join().unwrap(), second.join().unwrap());
    eprintln!(
        "on demand: first request to first token {} s and {} s for two concurrent first requests (the start included; the model began loading 0.5 s earlier with the request that hung up)",
        first["first_token_s"], second["first_token_s"]
    );
    assert!(first["content"].is_string(), "{first}");
    assert!(second["content"].is_string(), "{second}");
    let log = server.log.lock().unwrap().clone();
    assert_eq!(
        log.matches("gemma: loaded on demand").count(),
        1,
        "one start for the three requests:\n{log}"
    );
    let out = server.models(&["status", "gemma"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    let pids = instance_pids(&status);
    assert_eq!(pids.len(), 1, "{status}");
    assert_eq!(models(&server)["data"][0]["state"], "loaded");

    // Idle for 4 s: stopped, its process gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = server.models(&["status", "gemma"]);
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        if status["state"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "never unloaded: {status}");
        std::thread::sleep(Duration::from_millis(250));
    }
    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "llama-server {pid} still runs after the unload"
        );
    }
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .contains("gemma: unloading after 4s without requests")
    );
    // And the next request loads it again.
    let again = sdk_chat(&server.base, CLIENT, "gemma-3-270m");
    assert!(again["content"].is_string(), "{again}");
    eprintln!(
        "on demand, cold: first request to first token {} s (the model's start included)",
        again["first_token_s"]
    );
    assert_eq!(
        server
            .log
            .lock()
            .unwrap()
            .matches("gemma: loaded on demand")
            .count(),
        2
    );
}

/// A memory budget over on-demand models (`[budget] host_mib`, by the llama.cpp estimator): a
/// model whose start would overflow it stops the least recently used idle one first; a model that
/// cannot fit even alone is refused with its estimate, and nothing is stopped for it. Real
/// llama-server, two copies of Gemma and a third with a 32k context.
#[test]
fn on_demand_models_share_a_memory_budget_evicting_the_idle_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (path, text) = on_demand_config(dir.path(), port, "");
    let base = text.replace(
        "models = [\"gemma-3-270m\"]",
        "models = [\"gemma-3-270m\", \"gemma-b\", \"gemma-big\"]",
    );
    let (model_line, settings) = {
        let start = base.find("source = ").unwrap();
        let model_line = base[start..].lines().next().unwrap().to_owned();
        let settings = base[base.find("[models.settings]").unwrap()..].to_owned();
        (model_line, settings)
    };
    let extra = |id: &str, ctx: u32| {
        format!(
            "\n[[models]]\nid = \"{id}\"\nengine = \"llamacpp\"\n{model_line}\nload = \"on-demand\"\n{}",
            settings
                .replace("ctx_size = 2048", &format!("ctx_size = {ctx}"))
                .replace("parallel = 2", "parallel = 1")
        )
    };
    let all = format!(
        "{base}{}{}",
        extra("gemma-b", 2048),
        extra("gemma-big", 32768)
    );
    // The estimates, as the server will compute them, decide the budget: room for one Gemma and a
    // half, never for the 32k one.
    let probe = cortex_examples::config::Config::parse(
        &path,
        &format!("{all}\n[budget]\nhost_mib = 1000000\n"),
    )
    .unwrap();
    let needs = cortex_examples::ondemand::Budget::of(&probe).unwrap().needs;
    let mib = |id: &str| needs[&cortex_core::ModelId::new(id).unwrap()].0 >> 20;
    let (a, b, big) = (mib("gemma"), mib("gemma-b"), mib("gemma-big"));
    // Between the larger Gemma and the 32k one: one Gemma fits, two do not, the 32k never.
    let budget = u64::midpoint(a.max(b), big);
    assert!(
        a.max(b) < budget && a + b > budget && big > budget,
        "{a} {b} {big}"
    );
    eprintln!(
        "budget: {budget} MiB; estimates: gemma {a} MiB, gemma-b {b} MiB, gemma-big {big} MiB"
    );
    std::fs::write(&path, format!("{all}\n[budget]\nhost_mib = {budget}\n")).unwrap();

    let server = Server::start(path, port);
    server.wait_ready();
    let state = |id: &str| -> Value {
        let out = server.models(&["status", id]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["state"].clone()
    };
    assert!(sdk_chat(&server.base, CLIENT, "gemma-3-270m")["content"].is_string());
    assert_eq!(state("gemma"), "running");
    // gemma-b does not fit beside gemma: the idle gemma is unloaded first.
    assert!(sdk_chat(&server.base, CLIENT, "gemma-b")["content"].is_string());
    assert_eq!(state("gemma-b"), "running");
    assert_eq!(state("gemma"), "stopped");
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .contains("gemma: unloading to make room for gemma-b")
    );
    // gemma-big cannot fit even alone: refused with its estimate; gemma-b keeps running.
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("{}/v1/chat/completions", server.base),
            "-H",
            &format!("Authorization: Bearer {CLIENT}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"model":"gemma-big","messages":[{"role":"user","content":"hi"}]}"#,
        ])
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["error"]["code"], "model_start_failed", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("needs an estimated {big} MiB of host memory")),
        "{message}"
    );
    assert_eq!(
        state("gemma-b"),
        "running",
        "nothing is stopped for a model that cannot fit"
    );
}

/// Client keys created and revoked through the admin API: the key is shown once, only its digest
/// is written to the configuration file (which keeps its comments), it works at once and stops
/// working once revoked; a change the configuration would refuse is refused whole; the server
/// logs who asked. (The model loads on demand, so nothing starts.)
#[test]
fn the_admin_api_creates_and_revokes_keys_in_the_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (path, written) = on_demand_config(dir.path(), port, "");
    std::fs::write(&path, format!("# kept\n{written}")).unwrap();
    let server = Server::start(path.clone(), port);
    server.wait_ready();
    let admin =
        |method: &str, route: &str, body: Option<&str>| admin_call(&server, method, route, body);
    let models_with = |key: &str| models_status_with(&server, key);

    let (code, created) = admin(
        "POST",
        "/admin/keys",
        Some(r#"{"id":"ci","models":["gemma-3-270m"]}"#),
    );
    assert_eq!(code, "201", "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-cortex-"), "{created}");
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.starts_with("# kept\n"), "{file}");
    assert!(file.contains("id = \"ci\""), "{file}");
    assert!(!file.contains(&key), "the key itself must never be written");
    assert!(file.contains(&KeyHash::of(&key).to_string()), "{file}");
    assert_eq!(models_with(&key), "200");
    let (code, listed) = admin("GET", "/admin/keys", None);
    assert_eq!(code, "200");
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == "ci"),
        "{listed}"
    );
    assert!(!listed.to_string().contains("sha256:"), "{listed}");

    // Refused whole: a duplicate id, a model nobody serves.
    let (code, refused) = admin("POST", "/admin/keys", Some(r#"{"id":"ci"}"#));
    assert_eq!(code, "422", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    let (code, refused) = admin(
        "POST",
        "/admin/keys",
        Some(r#"{"id":"other","models":["nope"]}"#),
    );
    assert_eq!(code, "422", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`nope`"),
        "{refused}"
    );
    assert!(!std::fs::read_to_string(&path).unwrap().contains("other"));

    let (code, revoked) = admin("DELETE", "/admin/keys/ci", None);
    assert_eq!(code, "200", "{revoked}");
    assert_eq!(models_with(&key), "401");
    assert!(
        !std::fs::read_to_string(&path)
            .unwrap()
            .contains("id = \"ci\"")
    );
    let (code, _) = admin("DELETE", "/admin/keys/ci", None);
    assert_eq!(code, "404");
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("key `ci` created by 127.0.0.1:"), "{log}");
    assert!(log.contains("key `ci` revoked by 127.0.0.1:"), "{log}");
}

/// An on-demand model that cannot start: every waiting request gets a 503 naming why.
#[test]
fn an_on_demand_model_that_cannot_start_answers_503_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (path, text) = on_demand_config(dir.path(), port, "");
    let text_of = text.replace(
        &require(cache().join("bin/llama-server-b11434"))
            .display()
            .to_string(),
        "/bin/false",
    );
    std::fs::write(&path, text_of).unwrap();
    let server = Server::start(path, port);
    server.wait_ready();
    assert_refused_503(
        &server,
        "model_start_failed",
        "`gemma-3-270m` could not be started",
    );
}

/// The README's quickstart, verbatim, from a clean clone of this repository's committed state.
#[test]
fn readme_quickstart_from_a_clean_clone() {
    let _alone = alone_turn();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = |name: &str| -> String {
        let start = readme
            .find(&format!("<!-- {name} -->"))
            .unwrap_or_else(|| panic!("README has no {name} block"));
        let rest = &readme[start..];
        let code = &rest[rest.find("```").unwrap()..];
        let code = &code[code.find('\n').unwrap() + 1..];
        code[..code.find("```").unwrap()].trim().to_owned()
    };
    let serve_command = block("quickstart-serve");
    let call_command = block("quickstart-call");
    let sdk_snippet = block("quickstart-sdk");

    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path().join("cortex");
    let status = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(repo())
        .arg(&clone)
        .status()
        .unwrap();
    assert!(status.success());
    // A build directory of its own (this `cargo test` holds the workspace's lock while tests
    // run), kept under the workspace's target directory so that a re-run builds incrementally.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo().join("target"), PathBuf::from)
        .join("quickstart");
    let mut child = Command::new("bash")
        .args(["-c", &format!("exec {serve_command}")])
        .current_dir(&clone)
        .env("CARGO_TARGET_DIR", &target)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("quickstart| {line}");
        }
    });
    let server = QuickstartGuard(child);
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        let out = Command::new("curl")
            .args(["-sf", "http://127.0.0.1:8080/health"])
            .output()
            .unwrap();
        let health: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if health.is_some_and(|h| h["ready"] == true) {
            break;
        }
        assert!(Instant::now() < deadline, "the quickstart never served");
        std::thread::sleep(Duration::from_millis(500));
    }
    readme_requests_get_answers_that_end(&clone, &call_command, &sdk_snippet);
    let chat = sdk_chat(
        "http://127.0.0.1:8080",
        "sk-cortex-quickstart",
        "gemma-3-270m",
    );
    assert!(!chat["content"].as_str().unwrap().is_empty(), "{chat}");

    // The README's CLI, from the clone's root: it finds ./cortex.toml (made by the quickstart).
    assert!(clone.join("cortex.toml").is_file());
    let out = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args(["models", "status", "gemma-3-270m"])
        .current_dir(&clone)
        .env_remove("CORTEX_CONFIG")
        .env("CORTEX_ADMIN_KEY", "sk-cortex-quickstart-admin")
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    let out = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args(["plan", "gemma"])
        .current_dir(&clone)
        .env_remove("CORTEX_CONFIG")
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("diagnostics: none"),
        "{}",
        text(&out.stdout)
    );

    // Ctrl-C, as the README says: cortex exits and its engine with it.
    let pids = instance_pids(&status);
    assert_eq!(pids.len(), 1, "{status}");
    let mut server = server;
    let exit = server.interrupt();
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "llama-server {pid} outlived the quickstart"
        );
    }
}

/// The README's curl and Python snippet, as written, against the running quickstart: answers in
/// Gemma's format (no template control tokens) that end with `stop` or `length`.
fn readme_requests_get_answers_that_end(clone: &Path, call_command: &str, sdk_snippet: &str) {
    // The README's curl, as written: a Gemma-formatted answer that ends.
    let out = Command::new("bash")
        .args(["-c", call_command])
        .current_dir(clone)
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    eprintln!("the README's curl got: {answer}");
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_no_template_tokens(content);
    let finish = answer["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(matches!(finish, "stop" | "length"), "{answer}");
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap() <= 32,
        "{answer}"
    );

    // The README's Python snippet, as written, with the SDK setup installed.
    let sdk = Command::new(require(cache().join("venv/bin/python")))
        .args(["-c", sdk_snippet])
        .current_dir(clone)
        .output()
        .unwrap();
    let printed = text(&sdk.stdout);
    eprintln!("the README's Python snippet printed: {printed:?}");
    assert!(sdk.status.success(), "{printed}{}", text(&sdk.stderr));
    assert_no_template_tokens(&printed);
    assert!(
        printed.trim_end().ends_with("(finish_reason: length)")
            || printed.trim_end().ends_with("(finish_reason: stop)"),
        "{printed}"
    );
}

/// Chat-template control tokens of the common formats (ChatML, Gemma, Llama 3, Mistral).
fn assert_no_template_tokens(text: &str) {
    for token in [
        "<|im_start|>",
        "<|im_end|>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<|start_header_id|>",
        "<|eot_id|>",
        "[INST]",
    ] {
        assert!(!text.contains(token), "{token} in the answer: {text:?}");
    }
}

/// The quickstart's process group (bash, then cortex, which the script `exec`s).
struct QuickstartGuard(Child);

impl QuickstartGuard {
    /// Sends `signal` to the whole process group. procps' `kill` needs `--` before a negative
    /// id (without it, `kill -INT -1234` signals group 3 and says nothing).
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args(["-s", signal, "--", &format!("-{}", self.0.id())])
            .status();
    }

    /// Ctrl-C to the group; its exit status, or `None` if it has not exited in 60 s.
    fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        self.signal("INT");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().ok().flatten() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for QuickstartGuard {
    /// On a failed test: Ctrl-C, then a kill of the whole group.
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() && self.interrupt().is_none() {
            self.signal("KILL");
            let _ = self.0.wait();
        }
    }
}

use std::os::unix::process::CommandExt as _;

/// An engine key: llama-server gets it in its environment (not in `ps`, not in `cortex plan`, not
/// in the server's log), requires it (a request without it is refused), and the gateway sends it,
/// so clients are served.
#[test]
fn an_engine_key_reaches_llama_server_in_its_environment_and_the_gateway_sends_it() {
    const ENGINE_KEY: &str = "sk-engine-only-9f3b2c";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config(dir.path(), port);
    let text_of = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text_of.replace(
            "chat_template = \"gemma\"\n",
            &format!("chat_template = \"gemma\"\napi_key = \"{ENGINE_KEY}\"\n"),
        ),
    )
    .unwrap();

    let out = cortex(&["plan", "gemma", "--config", path.to_str().unwrap()]);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!plan.contains(ENGINE_KEY), "{plan}");
    assert!(plan.contains("LLAMA_API_KEY=***"), "{plan}");

    let server = Server::start(path, port);
    server.wait_ready();
    let chat = sdk_chat(&server.base, CLIENT, "gemma-3-270m");
    assert!(!chat["content"].as_str().unwrap().is_empty(), "{chat}");

    let out = server.models(&["status", "gemma-3-270m"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pids = instance_pids(&status);
    assert_eq!(pids.len(), 1, "{status}");
    let argv = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
    assert!(
        !text(&argv).contains(ENGINE_KEY),
        "the key is on llama-server's command line"
    );
    let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).unwrap();
    assert!(text(&environ).contains(&format!("LLAMA_API_KEY={ENGINE_KEY}")));

    // llama-server itself refuses a request without the key.
    let endpoint = status["replicas"][0]["endpoint"]["base_url"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{endpoint}/v1/models"),
        ])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "401");

    let log = std::sync::Arc::clone(&server.log);
    drop(server); // stops it: its log is complete
    let log = log.lock().unwrap();
    assert!(
        log.contains("LLAMA_API_KEY=***") || !log.contains("LLAMA_API_KEY"),
        "{log}"
    );
    assert!(!log.contains(ENGINE_KEY), "the key is in the server's log");
}

/// `config`, with `server_extra` lines added to `[server]`.
fn config_with(dir: &Path, port: u16, server_extra: &str) -> PathBuf {
    let path = config(dir, port);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("[server]\n", &format!("[server]\n{server_extra}\n"), 1),
    )
    .unwrap();
    path
}

/// Reads from `stream` until it closes; how long that took.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> Option<Duration> {
    use std::io::Read as _;
    let began = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) if began.elapsed() < limit => return Some(began.elapsed()),
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// `GET /health` on an open keep-alive connection: whether it was answered 200 (the rest of the
/// answer is read too, so the connection can be used again).
fn health_round_trip(stream: &mut std::net::TcpStream) -> bool {
    use std::io::{Read as _, Write as _};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 12];
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .is_err()
        || stream.read_exact(&mut buf).is_err()
        || &buf != b"HTTP/1.1 200"
    {
        return false;
    }
    let mut rest = [0u8; 4096];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = stream.read(&mut rest);
    true
}

/// A client that sends its headers one byte a second is cut off at the header timeout; a body
/// that stalls is cut off at the body timeout; connections past the cap get a 503 and are closed
/// while the open ones keep working.
#[test]
fn serve_cuts_off_slow_clients_and_refuses_connections_past_its_cap() {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config_with(
        dir.path(),
        port,
        "header_read_timeout = \"2s\"\nbody_read_timeout = \"2s\"\nmax_connections = 3\nstart_models = false",
    );
    let server = Server::start(path, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.health().is_none() {
        assert!(Instant::now() < deadline, "cortex serve never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr = format!("127.0.0.1:{port}");

    // Headers at one byte a second: cut off after about 2 s, long before they end.
    let mut slow = TcpStream::connect(&addr).unwrap();
    let request = b"GET /health HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let began = Instant::now();
    let mut cut_after = None;
    for byte in request {
        if slow.write_all(&[*byte]).is_err() {
            cut_after = Some(began.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        if began.elapsed() > Duration::from_secs(12) {
            break;
        }
    }
    let cut_after = cut_after
        .or_else(|| closed_within(&mut slow, Duration::from_secs(1)).map(|_| began.elapsed()));
    let cut_after = cut_after.expect("a one-byte-a-second client was never cut off");
    assert!(
        cut_after < Duration::from_secs(6),
        "cut off only after {cut_after:?}"
    );

    // A body that stops after 10 of its 100 bytes: answered and closed after about 2 s.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model\":"
    )
    .unwrap();
    let waited = closed_within(&mut stalled, Duration::from_secs(8))
        .expect("a stalled body was never cut off");
    assert!(
        waited >= Duration::from_millis(1500),
        "cut off too soon: {waited:?}"
    );

    // Three connections open (the cap); the fourth gets 503 and is closed; the three still work.
    // Each of the three answers first (the connections cut off above release their places when
    // the server has closed them, which a loaded machine may take a moment to do).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut open: Vec<TcpStream> = loop {
        let mut three: Vec<TcpStream> =
            (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        if three.iter_mut().all(health_round_trip) {
            break three;
        }
        assert!(
            Instant::now() < deadline,
            "three connections never all served"
        );
        drop(three);
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut fourth = TcpStream::connect(&addr).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut refusal = String::new();
    let _ = fourth.read_to_string(&mut refusal);
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(
        refusal.contains("too_many_connections") && refusal.contains("retry-after"),
        "{refusal}"
    );
    for stream in &mut open {
        assert!(
            health_round_trip(stream),
            "a connection within the cap stopped working"
        );
    }
    drop(open);
    assert!(server.log.lock().unwrap().contains("listening on"));
}

/// A streamed chat completion of `max_tokens` through `server` (curl), once its first event
/// arrived; with the engine's pids.
fn stream_in_flight(
    server: &Server,
    max_tokens: u32,
) -> (Child, std::process::ChildStdout, Vec<u32>) {
    use std::io::Read as _;
    let body = serde_json::json!({
        "model": "gemma-3-270m", "stream": true, "max_tokens": max_tokens, "ignore_eos": true,
        "messages": [{"role": "user", "content": "Count to one thousand."}],
    });
    let mut stream = Command::new("curl")
        .args(["-sN", "-H", "content-type: application/json", "-H"])
        .arg(format!("authorization: Bearer {CLIENT}"))
        .args(["-d", &body.to_string()])
        .arg(format!("{}/v1/chat/completions", server.base))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = stream.stdout.take().unwrap();
    let mut first = [0u8; 6];
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"data: ");
    let status = server.models(&["status", "gemma-3-270m"]);
    let pids = instance_pids(&serde_json::from_slice(&status.stdout).unwrap());
    assert!(!pids.is_empty(), "no instance in {status:?}");
    (stream, out, pids)
}

/// SIGTERM while a stream runs: the server stops accepting at once, lets the stream finish (up to
/// its grace period), meters it, then stops the engine and exits 0.
#[test]
fn sigterm_lets_a_stream_in_flight_finish_and_meters_it() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config_with(dir.path(), port, "shutdown_grace = \"60s\"");
    let mut server = Server::start(path, port);
    server.wait_ready();
    let (mut stream, mut out, pids) = stream_in_flight(&server, 160);
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    // New connections are refused while the stream goes on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
    assert!(stream.wait().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "cortex serve did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "llama-server {pid} outlived cortex"
        );
    }
    // Metered: its access-log line has the key's id, the tokens and a clean outcome.
    std::thread::sleep(Duration::from_millis(200));
    let log = server.out.lock().unwrap().clone();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["path"] == "/v1/chat/completions")
        .unwrap_or_else(|| panic!("no access-log line for the stream:\n{log}"));
    assert_eq!(line["status"], 200.0, "{line}");
    assert_eq!(line["outcome"], "ok", "{line}");
    assert_eq!(line["key"], "tester", "{line}");
    assert_eq!(line["completion_tokens"], 160.0, "{line}");
    assert!(!log.contains(CLIENT), "a key in the access log");
}

/// A second signal during the drain does not wait out the grace period: the stream still open is
/// cut, every engine is killed, and `cortex serve` exits at once.
#[test]
fn a_second_signal_during_the_drain_stops_everything_at_once() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config_with(dir.path(), port, "shutdown_grace = \"120s\"");
    let mut server = Server::start(path, port);
    server.wait_ready();
    // Long enough to outlast the test by far: 4,000 tokens at tens per second.
    let (mut stream, mut out, pids) = stream_in_flight(&server, 4000);
    let term = || {
        Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .unwrap()
    };
    term();
    // Draining: no new connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = Instant::now();
    term();
    let deadline = second + Duration::from_secs(15);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "cortex serve still running 15 s after the second signal:\n{}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = second.elapsed();
    // The stream was cut, not finished.
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        !rest.contains("data: [DONE]"),
        "the stream finished: {rest}"
    );
    stream.wait().unwrap();
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "llama-server {pid} outlived cortex"
        );
    }
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("killing every engine"), "{log}");
    eprintln!("second signal to exit: {took:?}");
}

/// A key added to the file works after SIGHUP or the admin call, without restarting anything; a
/// broken file changes nothing.
#[test]
fn keys_reload_on_sighup_and_on_the_admin_call() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config_with(dir.path(), port, "start_models = false");
    let server = Server::start(path.clone(), port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.health().is_none() {
        assert!(Instant::now() < deadline, "cortex serve never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    let models_with = |key: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("authorization: Bearer {key}"))
            .arg(format!("{}/v1/models", server.base))
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let added = |id: &str| {
        let out = cortex(&[
            "keys",
            "new",
            "--id",
            id,
            "--config",
            path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };

    let first = added("first");
    assert_eq!(models_with(&first), "401");
    hang_up(&server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while models_with(&first) != "200" {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not put the new key in force"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(models_with(CLIENT), "200");

    let second = added("second");
    let reload = |expect: &str| {
        let (code, answer) = admin_post(&server, "keys/reload");
        assert_eq!(code, expect, "{answer}");
    };
    reload("200");
    assert_eq!(models_with(&second), "200");

    // A broken file: 422, and the keys in force stay.
    let text_now = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text_now}\n[[keys]]\nid = \"broken\"\n")).unwrap();
    reload("422");
    assert_eq!(models_with(&second), "200");
    assert_eq!(models_with(CLIENT), "200");
    assert!(
        !server.log.lock().unwrap().contains(&second),
        "a key in the log"
    );
}

/// Out of file descriptors, `accept` fails at once for as long as connections wait: the server
/// backs off instead of spinning a core, and serves again once descriptors are free.
#[test]
fn accept_errors_back_off_instead_of_spinning() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config_with(
        dir.path(),
        port,
        "start_models = false\naccess_log = \"off\"",
    );
    let mut child = Command::new("bash")
        .args(["-c", "ulimit -n 64 && exec \"$0\" serve --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_cortex"))
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect(child.stderr.take().unwrap(), "serve");
    let health = || {
        Command::new("curl")
            .args(["-sf", "-m", "2", &format!("http://127.0.0.1:{port}/health")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !health() {
        assert!(Instant::now() < deadline, "cortex serve never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    // CPU time (user + system) of the server, in clock ticks.
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    // More connections than descriptors: the backlog holds the rest, and accept fails.
    let held: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu() - before;
    assert!(
        log.lock()
            .unwrap()
            .contains("accepting a connection failed"),
        "accept never failed: the descriptor limit was not reached"
    );
    // 100 ticks a second: a spinning loop would use about 200 here.
    assert!(
        used < 30,
        "the server used {used} ticks of CPU in 2 s while accept failed"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !health() {
        assert!(Instant::now() < deadline, "the server did not serve again");
        std::thread::sleep(Duration::from_millis(100));
    }
    interrupt(&mut child, "cortex serve");
}

/// Whether anything listens on loopback `port`.
fn taken(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

impl Server {
    /// The pid and port of replica 0 once its engine was started (from the log).
    fn engine(&self) -> (u32, u16) {
        let found = || {
            let log = self.log.lock().unwrap();
            let pid = log
                .lines()
                .rev()
                .find_map(|l| l.split("gemma/0: started proc-").nth(1))?
                .rsplit('-')
                .next()?
                .trim()
                .parse()
                .ok()?;
            let port = log
                .lines()
                .rev()
                .find_map(|l| l.split("gemma/0: plan: ").nth(1))?
                .split(" --port ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((pid, port))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = found() {
                return found;
            }
            assert!(Instant::now() < deadline, "no engine was started");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `SIGKILL`: nothing of `cortex serve` runs its shutdown.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Chaos: `cortex serve` killed with SIGKILL while a model loads and while it serves. Its engine
/// dies with it (the parent-death signal) and frees its port; the next `cortex serve` on the same
/// state directory removes what the last one recorded, starts afresh and serves; at the end
/// nothing is left running or recorded.
#[test]
fn a_manager_killed_while_starting_or_serving_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config(dir.path(), port);
    let state = dir.path().join("state");

    // Killed while the model loads.
    let mut server = Server::start(path.clone(), port);
    let (first, first_port) = server.engine();
    server.kill();
    assert!(
        within(Duration::from_secs(10), || !running(first)),
        "llama-server {first} outlived a killed cortex serve"
    );
    assert!(within(Duration::from_secs(10), || !taken(first_port)));
    drop(server);

    // The next one clears the record, starts afresh, serves; then is killed while serving.
    let mut server = Server::start(path.clone(), port);
    server.wait_ready();
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.contains(&format!(
            "removed proc-1-{first} left by an earlier manager"
        )),
        "{log}"
    );
    let chat = sdk_chat(&server.base, CLIENT, "gemma-3-270m");
    assert!(!chat["content"].as_str().unwrap().is_empty(), "{chat}");
    let (second, second_port) = server.engine();
    assert_ne!(second, first);
    server.kill();
    assert!(
        within(Duration::from_secs(10), || !running(second)),
        "llama-server {second} outlived a killed cortex serve"
    );
    assert!(within(Duration::from_secs(10), || !taken(second_port)));
    drop(server);

    // A third serves, and a clean stop leaves nothing running and nothing recorded.
    let mut server = Server::start(path, port);
    server.wait_ready();
    let chat = sdk_chat(&server.base, CLIENT, "gemma-3-270m");
    assert!(!chat["content"].as_str().unwrap().is_empty(), "{chat}");
    let (third, _) = server.engine();
    assert!(server.interrupt().success());
    assert!(!running(third));
    let records = cortex_testkit::recorded(&state);
    assert!(
        records.is_empty(),
        "left in the state directory: {records:?}"
    );
}

/// With `outlive_manager`, an engine keeps serving through a SIGKILL of `cortex serve`, and the
/// next one adopts it, the same process on the same port, without loading the model again.
#[test]
fn an_engine_that_outlives_a_killed_manager_is_adopted_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config(dir.path(), port);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("[runtime]\n", "[runtime]\noutlive_manager = true\n", 1),
    )
    .unwrap();

    let mut server = Server::start(path.clone(), port);
    server.wait_ready();
    let (engine, engine_port) = server.engine();
    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert!(running(engine), "the engine died with its manager");
    drop(server);

    let mut server = Server::start(path, port);
    server.wait_ready();
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("gemma/0: adopted proc-1-"), "{log}");
    assert!(
        !log.contains("gemma/0: plan:"),
        "a new engine was planned: {log}"
    );
    let chat = sdk_chat(&server.base, CLIENT, "gemma-3-270m");
    assert!(!chat["content"].as_str().unwrap().is_empty(), "{chat}");
    let status: Value =
        serde_json::from_slice(&server.models(&["status", "gemma-3-270m"]).stdout).unwrap();
    assert_eq!(instance_pids(&status), vec![engine], "{status}");
    assert!(server.interrupt().success());
    assert!(!running(engine));
    assert!(!taken(engine_port));
}

/// SIGHUP to `cortex serve`.
fn hang_up(server: &Server) {
    Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
}

/// `POST /admin/reload` with the admin key; the status code and the JSON answer.
fn admin_reload(server: &Server) -> (String, Value) {
    admin_post(server, "reload")
}

/// `POST /admin/PATH` with the admin key; the status code and the JSON answer.
fn admin_post(server: &Server, path: &str) -> (String, Value) {
    admin_call(server, "POST", &format!("/admin/{path}"), None)
}

/// `METHOD ROUTE` on the admin listener with the admin key (and a JSON body); the status code and
/// the JSON answer.
fn admin_call(server: &Server, method: &str, route: &str, body: Option<&str>) -> (String, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "-X", method])
        .arg(format!("{}{route}", server.admin_base()))
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")]);
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", body]);
    }
    let all = text(&cmd.output().unwrap().stdout);
    let (body, code) = all.rsplit_once('\n').unwrap();
    (
        code.to_owned(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// The status of `GET /v1/models` with `key`.
fn models_status_with(server: &Server, key: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/v1/models", server.base))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .output()
        .unwrap();
    text(&out.stdout)
}

/// The rest of a stream started by [`stream_in_flight`], which must end with `[DONE]`.
fn finish_stream(mut stream: Child, mut out: std::process::ChildStdout) {
    use std::io::Read as _;
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.trim_end().ends_with("data: [DONE]"), "cut: {rest}");
    assert!(stream.wait().unwrap().success());
}

/// Live reloads with the real llama-server. SIGHUP with a new limit and a new model: the limit is
/// in force at once, the new model is known, and the running engine — and a stream on it — are
/// untouched (same process). `POST /admin/reload` with a changed context size: the model is
/// replaced — a stream in flight on the old engine finishes, a request sent during the swap waits
/// and is answered by the new engine, the old process is gone. A broken file is refused whole
/// (422, with the place of the error) and nothing changes.
#[test]
#[allow(clippy::too_many_lines, reason = "one session, read top to bottom")]
fn a_reload_applies_limits_and_models_without_cutting_streams() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config(dir.path(), port);
    // The drain must outlast the stream it waits for: 200 tokens on a loaded 2-core machine can
    // take longer than the default 30 s (the fresh-clone CI cut one at that limit).
    let text_now = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text_now.replacen(
            "[[keys]]",
            "[supervisor]\ndrain_timeout = \"10m\"\n\n[[keys]]",
            1,
        ),
    )
    .unwrap();
    let server = Server::start(path.clone(), port);
    server.wait_ready();
    let original = std::fs::read_to_string(&path).unwrap();
    let chat = |body: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("authorization: Bearer {CLIENT}"))
            .args(["-H", "content-type: application/json", "-d", body])
            .arg(format!("{}/v1/chat/completions", server.base))
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let small =
        r#"{"model":"gemma-3-270m","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#;
    let padded = format!(
        r#"{{"model":"gemma-3-270m","messages":[{{"role":"user","content":"hi {}"}}],"max_tokens":4}}"#,
        "x".repeat(4000)
    );
    assert_eq!(chat(&padded), "200");

    // 1. SIGHUP: a 2 KiB body limit and a second (on-demand) model.
    let (stream, out, pids) = stream_in_flight(&server, 200);
    let models_block = &original[original.find("[[models]]").unwrap()..];
    let extra = models_block
        .replace("id = \"gemma\"", "id = \"extra\"\nload = \"on-demand\"")
        .replace(
            "served_name = \"gemma-3-270m\"",
            "served_name = \"extra-270m\"",
        );
    std::fs::write(
        &path,
        format!("{original}\n{extra}\n[gateway]\nbody_limit = 2048\n"),
    )
    .unwrap();
    hang_up(&server);
    assert!(
        within(Duration::from_secs(10), || chat(&padded) == "413"),
        "the new body limit is not in force"
    );
    assert_eq!(chat(small), "200");
    let listed = server.models(&["list"]);
    assert!(
        text(&listed.stdout).contains("extra"),
        "{}",
        text(&listed.stdout)
    );
    let status: Value =
        serde_json::from_slice(&server.models(&["status", "gemma"]).stdout).unwrap();
    assert_eq!(
        instance_pids(&status),
        pids,
        "the unchanged model was restarted"
    );
    finish_stream(stream, out);
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.contains("configuration reloaded by SIGHUP") && log.contains("unchanged [\"gemma\"]"),
        "{log}"
    );

    // 2. The admin call, with gemma's context size changed: replaced without cutting anything.
    let (stream, out, _) = stream_in_flight(&server, 200);
    let changed =
        std::fs::read_to_string(&path)
            .unwrap()
            .replacen("ctx_size = 2048", "ctx_size = 1024", 1);
    std::fs::write(&path, &changed).unwrap();
    let began = Instant::now();
    let (code, report) = admin_reload(&server);
    assert_eq!(code, "200", "{report}");
    assert_eq!(report["replaced"], serde_json::json!(["gemma"]), "{report}");
    assert_eq!(
        report["unchanged"],
        serde_json::json!(["extra"]),
        "{report}"
    );
    assert_eq!(report["restart_needed"], serde_json::json!([]), "{report}");
    // Sent while the old engine drains: waits for the new one and is answered.
    let base = server.base.clone();
    let during = std::thread::spawn(move || sdk_chat(&base, CLIENT, "gemma-3-270m"));
    finish_stream(stream, out);
    let answered = during.join().unwrap();
    assert!(answered["content"].is_string(), "{answered}");
    let status: Value =
        serde_json::from_slice(&server.models(&["status", "gemma"]).stdout).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    let new_pids = instance_pids(&status);
    assert_eq!(new_pids.len(), 1);
    for pid in &pids {
        assert!(!new_pids.contains(pid), "not replaced: {status}");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the old llama-server {pid} still runs"
        );
    }
    eprintln!(
        "reload: a changed model replaced and answering {:.1} s after the reload (its stream drained first)",
        began.elapsed().as_secs_f64()
    );

    // 3. A broken file: refused whole, with its place; nothing changes. (`cortex models` reads
    // the file too, so the model's status is asked of the admin API directly.)
    std::fs::write(&path, format!("{changed}\n[[models]]\nid = \"broken\"\n")).unwrap();
    let (code, report) = admin_reload(&server);
    assert_eq!(code, "422", "{report}");
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.contains("cortex.toml:"), "{message}");
    let out = Command::new("curl")
        .args(["-s", "-H", &format!("authorization: Bearer {ADMIN}")])
        .arg(format!("{}/admin/models/gemma", server.admin_base()))
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(instance_pids(&status), new_pids, "{status}");
    assert_eq!(chat(small), "200");
    assert_eq!(chat(&padded), "413");
}

/// `[usage] store = "postgres"` with a real PostgreSQL server (started by the test on a free port):
/// the records of one `cortex serve` are found by the next through `cortex models usage`.
#[test]
fn usage_kept_in_postgres_outlives_the_server() {
    let pg = cortex_testkit::postgres::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config(dir.path(), port);
    let text_now = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "{text_now}\n[usage]\nstore = \"postgres\"\npostgres = \"{}\"\n",
            pg.params()
        ),
    )
    .unwrap();
    let mut server = Server::start(path.clone(), port);
    server.wait_ready();
    for _ in 0..2 {
        let chat = sdk_chat(&server.base, CLIENT, "gemma-3-270m");
        assert!(chat["content"].is_string(), "{chat}");
    }
    assert!(interrupt(&mut server.child, "cortex serve").success());
    drop(server);
    assert!(
        !dir.path().join("state/usage.sqlite3").exists(),
        "records went to SQLite"
    );

    let server = Server::start(path, port);
    assert!(
        within(Duration::from_secs(30), || server.health().is_some()),
        "cortex serve never listened"
    );
    let out = server.models(&["usage", "--key", "tester", "--since", "1h"]);
    let usage: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    let entry = &usage["data"][0];
    // Each `sdk_chat` is two requests (streamed, then not).
    assert_eq!(entry["requests"], 4, "{usage}");
    assert_eq!(entry["model"], "gemma-3-270m", "{usage}");
}

/// `server.new_keys = "database"`: a key created through the admin API goes to the usage database
/// (SQLite here), not the file; it works at once and after a restart; an id the file holds is
/// refused; revoking it locks it out at once.
#[test]
fn keys_created_in_the_database_work_at_once_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config_with(
        dir.path(),
        port,
        "start_models = false\nnew_keys = \"database\"",
    );
    let before = std::fs::read_to_string(&path).unwrap();
    let mut server = Server::start(path.clone(), port);
    let wait_listening = |server: &Server| {
        assert!(
            within(Duration::from_secs(30), || server.health().is_some()),
            "cortex serve never listened"
        );
    };
    wait_listening(&server);
    let (code, created) = admin_call(
        &server,
        "POST",
        "/admin/keys",
        Some(r#"{"id":"in-db","models":["gemma-3-270m"]}"#),
    );
    assert_eq!(code, "201", "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(models_status_with(&server, &key), "200");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "the file was changed"
    );
    let (_, listed) = admin_call(&server, "GET", "/admin/keys", None);
    let entry = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "in-db")
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    assert_eq!(entry["source"], "database", "{entry}");
    assert!(
        entry["created_by"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{entry}"
    );
    assert!(!listed.to_string().contains(&key), "a key in the listing");
    // An id the file holds is taken.
    let (code, refused) = admin_call(&server, "POST", "/admin/keys", Some(r#"{"id":"tester"}"#));
    assert_eq!(code, "422", "{refused}");

    assert!(interrupt(&mut server.child, "cortex serve").success());
    drop(server);
    let server = Server::start(path, port);
    wait_listening(&server);
    assert_eq!(
        models_status_with(&server, &key),
        "200",
        "lost at the restart"
    );
    let (code, revoked) = admin_call(&server, "DELETE", "/admin/keys/in-db", None);
    assert_eq!(code, "200", "{revoked}");
    assert_eq!(models_status_with(&server, &key), "401");
    assert_eq!(models_status_with(&server, CLIENT), "200");
    let log = server.log.lock().unwrap().clone();
    assert!(!log.contains(&key), "a key in the log");
}

/// The ids of Docker objects (`service ls`, `secret ls`) carrying `label`.
fn docker_ids(what: &str, label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([what, "ls", "-q", "--filter", &format!("label={label}")])
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// `[runtime] kind = "swarm"` on a real one-node swarm (made by the test and left as found):
/// `cortex serve` runs a model's two replicas as two services; the gateway sends chat to both;
/// one task's container killed, every request still answered (failover, then the replica's
/// restart as a new service); Ctrl-C removes every service and secret.
#[test]
#[allow(clippy::too_many_lines, reason = "one session, read top to bottom")]
fn serve_runs_replicas_as_swarm_services_behind_the_gateway() {
    let _swarm = cortex_testkit::swarm::Swarm::join();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("cortex.toml");
    let label = "io.cortex.model-id=sw-serve";
    for id in docker_ids("service", label) {
        let _ = Command::new("docker").args(["service", "rm", &id]).output();
    }
    swarm_config(&path, port, dir.path(), "sw-serve", 2, "");
    let mut server = Server::start(path, port);
    let began = Instant::now();
    server.wait_ready();
    let ready = began.elapsed();
    let services = docker_ids("service", label);
    assert_eq!(services.len(), 2, "one service per replica");
    let status: Value =
        serde_json::from_slice(&server.models(&["status", "sw-serve"]).stdout).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["replicas"].as_array().unwrap().len(), 2, "{status}");

    let chat = || small_chat(&server.base);
    for _ in 0..6 {
        assert_eq!(chat(), "200");
    }
    let access = server.out.lock().unwrap().clone();
    for id in &services {
        assert!(
            // `docker service ls -q` shows ids cut to 12 digits.
            access.contains(&format!("\"upstream\":\"{id}")),
            "service {id} never answered through the gateway: {access}"
        );
    }

    // One task's container killed: every request is still answered.
    let victim_name = "llamacpp-model-sw-serve-1";
    let victim = &text(
        &Command::new("docker")
            .args([
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("name={victim_name}"),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_owned();
    assert!(services.contains(victim), "{victim} of {services:?}");
    let container = text(
        &Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                "label=io.cortex.swarm-service",
                "--filter",
                &format!("label=com.docker.swarm.service.name={victim_name}"),
            ])
            .output()
            .unwrap()
            .stdout,
    );
    let container = container.trim();
    assert!(!container.is_empty(), "no container for {victim}");
    let killed = Instant::now();
    assert!(
        Command::new("docker")
            .args(["kill", container])
            .output()
            .unwrap()
            .status
            .success()
    );
    let mut answered = 0;
    while killed.elapsed() < Duration::from_secs(5) {
        assert_eq!(chat(), "200", "a request failed after a task was killed");
        answered += 1;
    }
    assert!(
        within(Duration::from_secs(120), || {
            let status: Value =
                serde_json::from_slice(&server.models(&["status", "sw-serve"]).stdout)
                    .unwrap_or(Value::Null);
            status["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().filter(|r| r["instance"].is_string()).count() == 2)
                && docker_ids("service", label).len() == 2
                && !docker_ids("service", label).contains(victim)
        }),
        "the killed replica was not replaced"
    );
    eprintln!(
        "swarm serve: ready {:.1} s after start; {answered} requests in the 5 s after a task was killed, all answered; replaced after {:.1} s",
        ready.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );

    // Scaled up to three and down to one by a reload (the replica count is part of the plans:
    // the model is drained and started again with the new count; requests wait meanwhile).
    for replicas in [3, 1] {
        let file = std::fs::read_to_string(&server.config).unwrap();
        let now = file
            .lines()
            .find(|l| l.starts_with("replicas = "))
            .unwrap()
            .to_owned();
        std::fs::write(
            &server.config,
            file.replacen(&now, &format!("replicas = {replicas}"), 1),
        )
        .unwrap();
        let scaled = Instant::now();
        let (code, report) = admin_reload(&server);
        assert_eq!(code, "200", "{report}");
        assert_eq!(
            report["replaced"],
            serde_json::json!(["sw-serve"]),
            "{report}"
        );
        assert_eq!(
            chat(),
            "200",
            "a request during the scale waits and is answered"
        );
        assert!(
            within(Duration::from_secs(120), || {
                let status: Value =
                    serde_json::from_slice(&server.models(&["status", "sw-serve"]).stdout)
                        .unwrap_or(Value::Null);
                status["state"] == "running"
                    && status["replicas"]
                        .as_array()
                        .is_some_and(|r| r.len() == replicas)
                    && docker_ids("service", label).len() == replicas
            }),
            "not scaled to {replicas}"
        );
        eprintln!(
            "swarm serve: scaled to {replicas} in {:.1} s",
            scaled.elapsed().as_secs_f64()
        );
    }
    assert_eq!(chat(), "200");

    assert!(server.interrupt().success());
    assert!(
        docker_ids("service", label).is_empty(),
        "services left after Ctrl-C"
    );
    assert!(
        docker_ids("secret", "io.cortex.secret-of").is_empty(),
        "secrets left after Ctrl-C"
    );
}

/// A `cortex serve` configuration at `path` for Gemma as model `id` on the Swarm runtime, with
/// `replicas`; `extra` is added at the end of `[server]`. Each test has its own `id`: the
/// services are named after it, and tests run side by side.
fn swarm_config(path: &Path, port: u16, dir: &Path, id: &str, replicas: u32, extra: &str) {
    std::fs::write(
        path,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
admin_key = "{admin}"
{extra}

[runtime]
kind = "swarm"
state_dir = "{state}"

# One owner per test: a manager removes what its owner left unconfigured, and tests share the swarm.
[supervisor]
owner = "cortex-test-{id}"

[[keys]]
id = "tester"
hash = "{client}"

[[models]]
id = "{id}"
served_name = "gemma-3-270m"
engine = "llamacpp"
source = {{ path = "{model}" }}
startup_timeout = "2m"
replicas = {replicas}
restart = {{ on_failure = {{ max_restarts = 2, backoff = "500ms" }} }}

[models.settings]
ctx_size = 2048
parallel = 2
threads = 1
gpus = "none"
chat_template = "gemma"
api_key = "sk-engine-in-swarm"
"#,
            admin = KeyHash::of(ADMIN),
            admin_port = free_port(),
            state = dir.join("state").display(),
            client = KeyHash::of(CLIENT),
            model = gemma().display(),
        ),
    )
    .unwrap();
}

/// A small chat completion through the gateway at `base`; its status.
fn small_chat(base: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("authorization: Bearer {CLIENT}"))
        .args(["-H", "content-type: application/json", "-d"])
        .arg(r#"{"model":"gemma-3-270m","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#)
        .arg(format!("{base}/v1/chat/completions"))
        .output()
        .unwrap();
    text(&out.stdout)
}

/// Two `cortex serve` gateways in front of one Swarm service: the first runs the engine, the
/// second (`manage_engines = false`) follows what the swarm runs; both write usage to one real
/// PostgreSQL server. Traffic through both is answered by the same task, the usage totals equal
/// the requests sent, the follower refuses to start or stop engines, and its exit leaves the
/// engine running.
#[test]
#[allow(clippy::too_many_lines, reason = "one session, read top to bottom")]
fn two_gateways_front_one_swarm_service_and_count_every_request() {
    let _swarm = cortex_testkit::swarm::Swarm::join();
    let pg = cortex_testkit::postgres::Postgres::start();
    let label = "io.cortex.model-id=sw-two";
    for id in docker_ids("service", label) {
        let _ = Command::new("docker").args(["service", "rm", &id]).output();
    }
    let usage = format!(
        "\n[usage]\nstore = \"postgres\"\npostgres = \"{}\"\n",
        pg.params()
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let (path_a, path_b) = (
        dir_a.path().join("cortex.toml"),
        dir_b.path().join("cortex.toml"),
    );
    swarm_config(&path_a, port_a, dir_a.path(), "sw-two", 1, "");
    swarm_config(
        &path_b,
        port_b,
        dir_b.path(),
        "sw-two",
        1,
        "manage_engines = false",
    );
    for path in [&path_a, &path_b] {
        let text_now = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, format!("{text_now}{usage}")).unwrap();
    }
    let mut leader = Server::start(path_a, port_a);
    let began = Instant::now();
    leader.wait_ready();
    let mut follower = Server::start(path_b, port_b);
    follower.wait_ready();
    eprintln!(
        "two gateways: the follower serves {:.1} s after the leader began",
        began.elapsed().as_secs_f64()
    );
    let services = docker_ids("service", label);
    assert_eq!(services.len(), 1, "one engine for both gateways");

    let (through_a, through_b) = (5, 7);
    for _ in 0..through_a {
        assert_eq!(small_chat(&leader.base), "200");
    }
    for _ in 0..through_b {
        assert_eq!(small_chat(&follower.base), "200");
    }
    let access = follower.out.lock().unwrap().clone();
    assert!(
        access.contains(&format!("\"upstream\":\"{}", services[0])),
        "the follower did not send to the leader's service: {access}"
    );
    // Engines are the leader's to start and stop.
    let refused = follower.models(&["stop", "sw-two"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("does not run the engines")
            || text(&refused.stdout).contains("does not run the engines"),
        "{} {}",
        text(&refused.stdout),
        text(&refused.stderr)
    );
    assert_eq!(docker_ids("service", label).len(), 1);

    // The follower's exit writes out its usage and leaves the engine alone.
    assert!(follower.interrupt().success());
    assert_eq!(
        docker_ids("service", label),
        services,
        "the engine outlives the follower"
    );
    assert_eq!(small_chat(&leader.base), "200");
    let out = leader.models(&["usage", "--key", "tester", "--since", "1h"]);
    let totals: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    let requests: u64 = totals["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requests"].as_u64().unwrap())
        .sum();
    eprintln!(
        "two gateways: {} requests sent ({through_a} + 1 through the leader, {through_b} through the follower), {requests} counted",
        through_a + 1 + through_b
    );
    assert_eq!(requests, through_a + 1 + through_b, "{totals}");
    assert!(leader.interrupt().success());
    assert!(docker_ids("service", label).is_empty());
}
