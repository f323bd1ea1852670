//! Everything a user writes in a config file survives TOML and JSON round trips, and bad input is
//! refused with an error that names the field.

use std::num::NonZeroU32;
use std::time::Duration;

use cortex_core::{
    Diagnostic, EngineKind, EngineSettings, GpuRequest, HealthSpec, HealthStatus, HubRepo,
    LaunchPlan, ModelId, ModelSource, ModelSpec, ModelState, Mount, Refused, RestartPolicy,
    SupervisorConfig, Target, Task,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A document holding one value, because TOML's top level must be a table.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Doc<T> {
    value: T,
}

fn round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
{
    let json = serde_json::to_string(value).unwrap();
    assert_eq!(
        &serde_json::from_str::<T>(&json).unwrap(),
        value,
        "json: {json}"
    );

    let doc = Doc {
        value: value.clone(),
    };
    let text = toml::to_string(&doc).unwrap();
    assert_eq!(
        &toml::from_str::<Doc<T>>(&text).unwrap().value,
        value,
        "toml:\n{text}"
    );
}

fn full_spec() -> ModelSpec {
    let mut settings = EngineSettings::new();
    settings.insert("ctx_size", 8192);
    settings.insert("flash_attn", "on");
    settings.insert("tensor_split", serde_json::json!([3.0, 1.0]));
    ModelSpec::new(
        ModelId::new("qwen3-8b").unwrap(),
        EngineKind::VLLM,
        ModelSource::Hub(
            HubRepo::new("Qwen/Qwen3-8B")
                .unwrap()
                .with_revision("main")
                .with_file("model.safetensors"),
        ),
    )
    .with_served_name("qwen3")
    .with_task(Task::Embed)
    .with_settings(settings)
    .with_args(["--max-num-seqs", "64"])
    .with_env("HF_HUB_OFFLINE", "1")
    .with_startup_timeout(Duration::from_secs(600))
    .with_replicas(NonZeroU32::new(2).unwrap())
    .with_restart(RestartPolicy::on_failure(3, Duration::from_secs(10)))
}

#[test]
fn model_spec_round_trips() {
    round_trip(&full_spec());
    round_trip(&ModelSpec::new(
        ModelId::new("g").unwrap(),
        EngineKind::LLAMA_CPP,
        ModelSource::Path("/models/g.gguf".into()),
    ));
}

/// A number beyond `i64` in the settings is a float; it survives a JSON round trip exactly (the
/// fuzz target found one that came back one unit in the last place off before `serde_json`'s
/// correctly rounded parsing, `float_roundtrip`, was on). The same input is a fuzz seed
/// (`fuzz/seeds/spec_parse/float-beyond-i64.json`).
#[test]
fn a_float_beyond_i64_in_the_settings_round_trips() {
    let text = r#"{"id":"g","engine":"llamacpp","source":{"path":"/<<<.gguf"},"settings":{"n_gpu_layers":-99999999989999999992}}"#;
    let spec: ModelSpec = serde_json::from_str(text).unwrap();
    let again: ModelSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(again, spec);
}

#[test]
fn model_spec_reads_what_a_person_writes() {
    let spec: ModelSpec = toml::from_str(
        r#"
        id = "qwen3-8b"
        served_name = "qwen3"
        engine = "vllm"
        task = "embed"
        source = { hub = "Qwen/Qwen3-8B", revision = "main", file = "model.safetensors" }
        args = ["--max-num-seqs", "64"]
        env = { HF_HUB_OFFLINE = "1" }
        startup_timeout = "10m"
        replicas = 2
        restart = { on_failure = { max_restarts = 3, backoff = "10s" } }

        [settings]
        ctx_size = 8192
        flash_attn = "on"
        tensor_split = [3.0, 1.0]
        "#,
    )
    .unwrap();
    assert_eq!(spec, full_spec());

    let json: ModelSpec = serde_json::from_str(
        r#"{"id":"g","engine":"llamacpp","source":{"path":"/models/g.gguf"}}"#,
    )
    .unwrap();
    assert_eq!(json.served_name(), "g");
    assert_eq!(json.task, Task::Generate);
    assert_eq!(json.replicas.get(), 1);
    assert_eq!(json.restart, RestartPolicy::No);
    assert!(json.settings.is_empty());
}

#[test]
fn restart_policy_forms() {
    round_trip(&RestartPolicy::No);
    round_trip(&RestartPolicy::on_failure(2, Duration::from_millis(1500)));
    let doc: Doc<RestartPolicy> = toml::from_str(r#"value = "no""#).unwrap();
    assert_eq!(doc.value, RestartPolicy::No);
    let doc: Doc<RestartPolicy> =
        toml::from_str(r"value = { on_failure = { max_restarts = 1 } }").unwrap();
    assert_eq!(
        doc.value,
        RestartPolicy::on_failure(1, Duration::from_secs(5)),
        "backoff defaults to 5s"
    );
}

/// The error of parsing `text` as a spec, as a user sees it.
fn spec_error(text: &str) -> String {
    toml::from_str::<ModelSpec>(text).unwrap_err().to_string()
}

#[test]
fn bad_specs_name_what_is_wrong() {
    let base = "engine = \"llamacpp\"\nsource = { path = \"/m.gguf\" }\n";

    let e = spec_error(&format!("id = \"../etc\"\n{base}"));
    assert!(
        e.contains(r#"invalid model id "../etc": must start with an ASCII letter or digit"#),
        "{e}"
    );
    assert!(e.contains("line 1"), "names the line: {e}");

    let e = spec_error(&format!("id = \"a\"\n{base}ctx_size = 4096\n"));
    assert!(e.contains("unknown field `ctx_size`"), "{e}");

    let e =
        spec_error("id = \"a\"\nengine = \"vllm\"\nsource = { path = \"/m\", hub = \"a/b\" }\n");
    assert!(
        e.contains("invalid model source: give either `path` or `hub`, not both"),
        "{e}"
    );

    let e = spec_error("id = \"a\"\nengine = \"vllm\"\nsource = {}\n");
    assert!(e.contains("give one of `path`"), "{e}");

    let e = spec_error("id = \"a\"\nengine = \"vllm\"\nsource = { hub = \"just-a-name\" }\n");
    assert!(
        e.contains(r#"hub repository "just-a-name" is not of the form owner/name"#),
        "{e}"
    );

    let e =
        spec_error("id = \"a\"\nengine = \"vllm\"\nsource = { path = \"/m\", revision = \"x\" }\n");
    assert!(
        e.contains("`revision` and `file` apply to `hub` sources only"),
        "{e}"
    );

    let e = spec_error(&format!("id = \"a\"\n{base}replicas = 0\n"));
    assert!(
        e.contains("replicas") || e.contains("nonzero") || e.contains("zero"),
        "{e}"
    );

    let e = spec_error(&format!("id = \"a\"\n{base}startup_timeout = \"soon\"\n"));
    assert!(e.contains("startup_timeout") || e.contains("line 4"), "{e}");

    let e = spec_error(&format!("id = \"a\"\n{base}task = \"chat\"\n"));
    assert!(e.contains("unknown variant `chat`"), "{e}");

    let e = spec_error("id = \"a\"\nsource = { path = \"/m\" }\n");
    assert!(e.contains("missing field `engine`"), "{e}");
}

#[test]
fn supervisor_config_defaults_and_round_trip() {
    let config: SupervisorConfig = toml::from_str("").unwrap();
    assert_eq!(config, SupervisorConfig::default());
    assert_eq!(config.probe_interval, Duration::from_secs(15));
    assert_eq!(config.failure_threshold, 3);
    assert_eq!(config.log_tail_lines, 50);
    let config: SupervisorConfig =
        toml::from_str("probe_interval = \"30s\"\nfailure_threshold = 5").unwrap();
    assert_eq!(config.probe_interval, Duration::from_secs(30));
    assert_eq!(config.failure_threshold, 5);
    round_trip(&config);
    let e = toml::from_str::<SupervisorConfig>("probe_intervall = \"1s\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `probe_intervall`"), "{e}");
}

#[test]
fn launch_plan_and_parts_round_trip() {
    let mut plan = LaunchPlan::new(
        ModelId::new("gemma").unwrap(),
        EngineKind::LLAMA_CPP,
        Target::Container {
            image: "cortex/llama-server:b11434".into(),
            name: "llamacpp-model-gemma".into(),
        },
        8080,
        HealthSpec::new("/health")
            .with_loading_statuses([503])
            .with_refused(Refused::Down)
            .with_startup_timeout(Duration::from_secs(300))
            .with_poll_interval(Duration::from_millis(500), Duration::from_secs(5)),
    );
    plan.args = vec!["-m".into(), "/models/gemma.gguf".into()];
    plan.env.insert(
        "NVIDIA_DRIVER_CAPABILITIES".into(),
        "compute,utility".into(),
    );
    plan.mounts.push(Mount::read_only("/srv/models", "/models"));
    plan.shm_size = Some(8 << 30);
    plan.network = Some("cortex".into());
    plan.gpus = GpuRequest::Devices(vec!["GPU-1234".into()]);
    plan.labels
        .insert("io.cortex.model-id".into(), "gemma".into());
    round_trip(&plan);

    for gpus in [GpuRequest::None, GpuRequest::All, GpuRequest::Count(2)] {
        round_trip(&gpus);
    }
    round_trip(&Target::Process {
        program: "/usr/local/bin/llama-server".into(),
    });
}

#[test]
fn status_types_round_trip() {
    round_trip(
        &Diagnostic::error("settings.cache_type_v", "needs flash attention")
            .with_suggestion("set flash_attn"),
    );
    round_trip(&Diagnostic::warning("args[2]", "deprecated"));
    for status in [
        HealthStatus::Ready,
        HealthStatus::loading(),
        HealthStatus::Loading {
            detail: Some("Loading model".into()),
        },
        HealthStatus::down("connection refused"),
    ] {
        round_trip(&status);
    }
    for state in [
        ModelState::Stopped,
        ModelState::Starting,
        ModelState::Running,
        ModelState::Stopping,
        ModelState::Unhealthy {
            healthy: 1,
            replicas: 2,
            reason: "replica 1 down".into(),
        },
        ModelState::Failed {
            reason: "exited with exit code 1".into(),
            log_tail: vec![],
        },
    ] {
        round_trip(&state);
    }
    assert_eq!(
        serde_json::to_value(ModelState::Running).unwrap(),
        serde_json::json!({"state": "running"})
    );
}

fn arb_id() -> impl Strategy<Value = ModelId> {
    "[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}".prop_map(|s| ModelId::new(s).unwrap())
}

fn arb_source() -> impl Strategy<Value = ModelSource> {
    prop_oneof![
        "/[a-z0-9/._ -]{1,40}".prop_map(|p| ModelSource::Path(p.into())),
        (
            "[a-zA-Z0-9][a-zA-Z0-9_-]{0,20}",
            "[a-zA-Z0-9][a-zA-Z0-9._-]{0,20}",
            proptest::option::of("[a-z0-9]{1,10}"),
            proptest::option::of("[a-z0-9.]{1,10}"),
        )
            .prop_map(|(owner, name, rev, file)| {
                let mut repo = HubRepo::new(format!("{owner}/{name}")).unwrap();
                repo.revision = rev;
                repo.file = file;
                ModelSource::Hub(repo)
            }),
    ]
}

proptest! {
    #[test]
    fn any_spec_round_trips(
        id in arb_id(),
        source in arb_source(),
        served in proptest::option::of("[ -~]{1,20}"),
        args in proptest::collection::vec("[ -~]{0,12}", 0..4),
        env in proptest::collection::btree_map("[A-Z_]{1,8}", "[ -~]{0,8}", 0..3),
        timeout_ms in proptest::option::of(1u64..10_000_000),
        replicas in 1u32..8,
        settings in proptest::collection::btree_map("[a-z_]{1,8}", any::<i64>(), 0..4),
        restart in proptest::option::of((0u32..10, 0u64..100_000)),
    ) {
        let mut s = EngineSettings::new();
        for (k, v) in settings {
            s.insert(k, v);
        }
        let mut spec = ModelSpec::new(id, EngineKind::LLAMA_CPP, source)
            .with_args(args)
            .with_settings(s)
            .with_replicas(NonZeroU32::new(replicas).unwrap());
        spec.served_name = served;
        spec.env = env;
        spec.startup_timeout = timeout_ms.map(Duration::from_millis);
        if let Some((max, ms)) = restart {
            spec.restart = RestartPolicy::on_failure(max, Duration::from_millis(ms));
        }
        round_trip(&spec);
    }

    #[test]
    fn model_id_accepts_exactly_the_rule(s in "\\PC{0,70}") {
        let valid = !s.is_empty()
            && s.len() <= 63
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        prop_assert_eq!(ModelId::new(s.clone()).is_ok(), valid, "{:?}", s);
    }
}
