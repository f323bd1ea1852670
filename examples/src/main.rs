//! `cortex`: serve models from a TOML file, inspect and estimate GGUF files, preview plans.
//!
//! ```text
//! cortex serve  [--config cortex.toml]
//! cortex models list|status NAME|start NAME|stop NAME|logs NAME [--lines N] [--url URL]
//! cortex plan   NAME [--config cortex.toml] [--json]
//! cortex gguf   inspect [--json] [--full] FILE
//! cortex gguf   estimate [--json] [--gpu NAME:TOTAL_MIB[:FREE_MIB]]... -m FILE [llama-server flags]
//! cortex keys   new --id NAME [--model NAME]... [--admin] [--config cortex.toml]
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use cortex_examples::config::{self, Config};
use cortex_examples::{admin, gguf, keys, plan, serve};
use cortex_gateway::auth::KeyHash;
use http::{Method, StatusCode};
use serde_json::Value;

/// Serve open LLMs on your own GPUs: llama.cpp's llama-server and vLLM behind an OpenAI-compatible
/// gateway.
#[derive(Debug, Parser)]
#[command(name = "cortex", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the models a configuration file declares, until Ctrl-C.
    Serve {
        /// The configuration file; default: `$CORTEX_CONFIG`, else `./cortex.toml`, else
        /// `~/.config/cortex/cortex.toml`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Ask a running `cortex serve` about its models (needs the admin key, `CORTEX_ADMIN_KEY`).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
        /// The admin API's address; default: `server.admin_listen` of the configuration file.
        #[arg(long, global = true)]
        url: Option<String>,
        /// The configuration file, for the address (`server.admin_listen`) when `--url` is not given;
        /// default: `$CORTEX_CONFIG`, else `./cortex.toml`, else `~/.config/cortex/cortex.toml`.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// The admin key.
        #[arg(long, global = true, env = "CORTEX_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
    },
    /// Show what would run for a model: command line or container, diagnostics, memory estimate.
    Plan {
        /// The model's id or served name.
        model: String,
        /// The configuration file; default: `$CORTEX_CONFIG`, else `./cortex.toml`, else
        /// `~/.config/cortex/cortex.toml`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The plans as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read GGUF files.
    Gguf {
        #[command(subcommand)]
        command: GgufCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Every model, its state and endpoints.
    List,
    /// One model in full.
    Status {
        /// Id or served name.
        model: String,
    },
    /// Start a model and wait until it runs (or fails).
    Start {
        /// Id or served name.
        model: String,
        /// Return once the start is accepted.
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop a model.
    Stop {
        /// Id or served name.
        model: String,
    },
    /// The engine's recent log lines.
    Logs {
        /// Id or served name.
        model: String,
        /// How many lines per replica.
        #[arg(long, default_value_t = 100)]
        lines: usize,
    },
    /// Requests and tokens by key and model (all time, or a range).
    Usage {
        /// Only this key id.
        #[arg(long)]
        key: Option<String>,
        /// Only this served name.
        #[arg(long)]
        model: Option<String>,
        /// From this time: RFC 3339 (`2026-12-02T08:00:00Z`) or a duration before now (`24h`).
        #[arg(long)]
        since: Option<String>,
        /// Before this time, in the same forms.
        #[arg(long)]
        until: Option<String>,
    },
}

/// `/admin/usage` with the filters given.
fn usage_path(
    key: Option<&str>,
    model: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
) -> String {
    let query: Vec<String> = [
        ("key", key),
        ("model", model),
        ("since", since),
        ("until", until),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some(format!("{name}={}", query_value(value?))))
    .collect();
    format!("/admin/usage?{}", query.join("&"))
}

/// A query string value, percent-encoded (RFC 3986 unreserved characters kept).
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// `--help` goes to the programs themselves (the gguf-inspect and gguf-estimate examples), whose
// help lists their own options.
#[derive(Debug, Subcommand)]
enum GgufCommand {
    /// Metadata and tensors of a GGUF file.
    #[command(disable_help_flag = true)]
    Inspect {
        /// `[--json] [--full] FILE`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// What llama-server will allocate per GPU and on the host for a command line.
    #[command(disable_help_flag = true)]
    Estimate {
        /// `[--json] [--gpu NAME:TOTAL_MIB[:FREE_MIB]]... [--nvml] -m FILE [llama-server flags]`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key: prints it once, writes only its SHA-256 digest to the configuration.
    New {
        /// A name for the key (in logs and usage; never the key itself).
        #[arg(long, required_unless_present = "admin")]
        id: Option<String>,
        /// A model the key may use (repeat; every model when absent).
        #[arg(long = "model")]
        models: Vec<String>,
        /// Make it the admin key (`server.admin_key`), replacing any earlier one.
        #[arg(long, conflicts_with_all = ["id", "models"])]
        admin: bool,
        /// The configuration file to write to; default: `$CORTEX_CONFIG`, else `./cortex.toml`,
        /// else `~/.config/cortex/cortex.toml`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        exit_quietly_on_closed_pipe();
    }
    match cli.command {
        Command::Serve { config } => match config::locate(config.as_deref()) {
            Ok(path) => serve_command(&path),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Models {
            command,
            url,
            config,
            admin_key,
        } => models_command(command, url, config.as_deref(), admin_key),
        Command::Plan {
            model,
            config,
            json,
        } => match config::locate(config.as_deref()).and_then(|path| Config::load(&path)) {
            Ok(c) => plan::run(&c, &model, json),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Gguf { command } => match command {
            GgufCommand::Inspect { args } => gguf::inspect(args.into_iter()),
            GgufCommand::Estimate { args } => gguf::estimate(args.into_iter()),
        },
        Command::Keys { command } => match command {
            KeysCommand::New {
                id,
                models,
                admin,
                config,
            } => match config::locate(config.as_deref()) {
                Ok(path) => keys_new(id.as_deref(), &models, admin, &path),
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("cortex keys: nothing was written");
                    ExitCode::FAILURE
                }
            },
        },
    }
}

/// Lets a closed stdout (`cortex models logs | head -1`) end the program as it ends `cat`: the
/// default action of SIGPIPE, which Rust's runtime ignores (every `println!` would then panic).
/// Only for the commands that print and exit; `cortex serve` keeps the runtime's choice.
fn exit_quietly_on_closed_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called on the main thread before any other thread exists; SIG_DFL installs no
    // handler, so no code runs in signal context.
    #[allow(unsafe_code)]
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn serve_command(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("cortex: nothing was started");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cortex: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    install_tracing();
    match runtime.block_on(serve::serve(config, path.to_owned())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cortex: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Diagnostics on stderr: the library's warnings and the server's own lines, filtered by
/// `RUST_LOG` (default `info`). Keys never reach them: the library logs key ids only.
fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn models_command(
    command: ModelsCommand,
    url: Option<String>,
    config: Option<&Path>,
    admin_key: Option<String>,
) -> ExitCode {
    let url = match url {
        Some(url) => url,
        None => match config::locate(config).and_then(|path| Config::load(&path)) {
            Ok(c) => format!("http://{}", c.server.admin_listen),
            Err(e) => {
                eprintln!("{e}\ncortex models: pass --url or a readable --config");
                return ExitCode::FAILURE;
            }
        },
    };
    let Some(key) = admin_key else {
        eprintln!(
            "cortex models: the admin key is needed: set CORTEX_ADMIN_KEY or pass --admin-key"
        );
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cortex: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let call = |method: Method, path: String| {
            let (url, key) = (url.clone(), key.clone());
            async move { admin::call(&url, &key, method, &path).await }
        };
        let result = match &command {
            ModelsCommand::List => call(Method::GET, "/admin/models".into()).await,
            ModelsCommand::Status { model } => {
                call(Method::GET, format!("/admin/models/{model}")).await
            }
            ModelsCommand::Start { model, .. } => {
                call(Method::POST, format!("/admin/models/{model}/start")).await
            }
            ModelsCommand::Stop { model } => {
                call(Method::POST, format!("/admin/models/{model}/stop")).await
            }
            ModelsCommand::Logs { model, lines } => {
                call(
                    Method::GET,
                    format!("/admin/models/{model}/logs?lines={lines}"),
                )
                .await
            }
            ModelsCommand::Usage {
                key,
                model,
                since,
                until,
            } => {
                let path = usage_path(
                    key.as_deref(),
                    model.as_deref(),
                    since.as_deref(),
                    until.as_deref(),
                );
                call(Method::GET, path).await
            }
        };
        let (status, body) = match result {
            Ok(answer) => answer,
            Err(e) => {
                eprintln!("cortex models: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("error");
            eprintln!("cortex models: {status}: {message}");
            return ExitCode::FAILURE;
        }
        match command {
            ModelsCommand::List => print_models(&body),
            ModelsCommand::Logs { .. } => {
                for replica in body["replicas"].as_array().into_iter().flatten() {
                    println!("== replica {} ({})", replica["index"], replica["instance"]);
                    for line in replica["lines"].as_array().into_iter().flatten() {
                        println!("{}", line.as_str().unwrap_or_default());
                    }
                }
            }
            ModelsCommand::Start { model, no_wait } => {
                if no_wait {
                    println!("{model}: starting");
                    return ExitCode::SUCCESS;
                }
                return wait_running(&call, &model).await;
            }
            _ => println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            ),
        }
        ExitCode::SUCCESS
    })
}

/// Polls a model's status until it runs or fails.
async fn wait_running<F, Fut>(call: &F, model: &str) -> ExitCode
where
    F: Fn(Method, String) -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, Value), String>>,
{
    let began = Instant::now();
    let mut last = String::new();
    loop {
        match call(Method::GET, format!("/admin/models/{model}")).await {
            Ok((_, body)) => {
                let state = body["state"].as_str().unwrap_or("unknown").to_owned();
                if state != last {
                    println!("{model}: {state}");
                    last.clone_from(&state);
                }
                match state.as_str() {
                    "running" => {
                        println!(
                            "{model}: running after {:.1} s",
                            began.elapsed().as_secs_f64()
                        );
                        return ExitCode::SUCCESS;
                    }
                    "failed" => {
                        eprintln!(
                            "{model}: failed: {}",
                            body["reason"].as_str().unwrap_or("no reason given")
                        );
                        return ExitCode::FAILURE;
                    }
                    _ => {}
                }
            }
            Err(e) => {
                eprintln!("cortex models: {e}");
                return ExitCode::FAILURE;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_models(body: &Value) {
    println!(
        "{:<20} {:<24} {:<10} {:<10} ENDPOINTS",
        "ID", "SERVED NAME", "ENGINE", "STATE"
    );
    for m in body["data"].as_array().into_iter().flatten() {
        let endpoints: Vec<String> = m["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["registered"] == true)
            .filter_map(|r| r["endpoint"]["base_url"].as_str().map(str::to_owned))
            .collect();
        println!(
            "{:<20} {:<24} {:<10} {:<10} {}",
            m["id"].as_str().unwrap_or_default(),
            m["served_name"].as_str().unwrap_or_default(),
            m["engine"].as_str().unwrap_or_default(),
            m["state"].as_str().unwrap_or_default(),
            if endpoints.is_empty() {
                "-".to_owned()
            } else {
                endpoints.join(", ")
            }
        );
        if let Some(reason) = m["reason"].as_str() {
            println!("    {reason}");
        }
    }
}

/// `cortex keys new`: checks the whole configuration first and writes nothing when it (or the
/// result) would be invalid; shows the key before the file holds its digest, then replaces the
/// file in one step, so no digest is ever stored for a key nobody saw.
fn keys_new(id: Option<&str>, models: &[String], admin: bool, path: &Path) -> ExitCode {
    let fail = |message: &str| {
        eprintln!("cortex keys: {message}");
        eprintln!("cortex keys: nothing was written to {}", path.display());
        ExitCode::FAILURE
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return fail(&format!("cannot read {}: {e}", path.display())),
    };
    let config = match Config::parse(path, &text) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return fail("the configuration has errors; fix them first");
        }
    };
    let id = id.unwrap_or("key");
    if !admin {
        if let Some(k) = config.keys.iter().find(|k| k.id.get_ref() == id) {
            let (line, _) = config::line_col(&text, k.id.span().start);
            return fail(&format!(
                "{}:{line}: a key with id `{id}` already exists; choose another --id",
                path.display()
            ));
        }
        let served: Vec<&str> = config
            .specs()
            .map(cortex_core::ModelSpec::served_name)
            .collect();
        if let Some(unknown) = models.iter().find(|m| !served.contains(&m.as_str())) {
            return fail(&format!(
                "`{unknown}` is not the served name of any model in {} (models: {})",
                path.display(),
                served.join(", ")
            ));
        }
    }
    let key = match keys::generate() {
        Ok(key) => key,
        Err(e) => return fail(&e),
    };
    let hash = KeyHash::of(&key);
    let edited = if admin {
        keys::with_admin_key(&text, &hash)
    } else {
        keys::with_client_key(&text, id, &hash, models)
    };
    let new_text = match edited {
        Ok(t) => t,
        Err(e) => return fail(&format!("{}: {e}", path.display())),
    };
    // What is written must load as the original did.
    if let Err(errors) = Config::parse(path, &new_text) {
        eprintln!("{errors}");
        return fail("the edited configuration would not load (a bug: please report it)");
    }
    // The key first: if it cannot be shown, its digest is not stored.
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{key}").and_then(|()| out.flush()) {
        return fail(&format!("cannot print the key: {e}"));
    }
    if let Err(e) = keys::replace_file(path, &new_text) {
        return fail(&format!(
            "{e}; the key printed above was not stored and does not work"
        ));
    }
    eprintln!(
        "cortex keys: {} written to {} as {hash}; the key is shown only this once",
        if admin {
            "admin key".to_owned()
        } else {
            format!("key `{id}`")
        },
        path.display()
    );
    ExitCode::SUCCESS
}
