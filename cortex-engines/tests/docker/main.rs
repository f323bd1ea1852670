//! The Docker runtime against the real Docker Engine of this machine, with the real llama-server
//! (b11434) in the local image `cortex/llama-server:b11434` (built by `scripts/setup` with
//! `scripts/build-llama-image`: `FROM scratch` and the files `ldd` lists) and the real Gemma 3 270M
//! model mounted read-only.
//!
//! Without a reachable Docker Engine every test here fails, saying so: they are never skipped.
//! The tests run one at a time (they share the engine, and reconciliation sees every container
//! Cortex owns).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptionsBuilder,
};
use bytes::Bytes;
use cortex_core::{
    Engine, EngineSettings, EventKind, InstanceId, ModelId, ModelSource, ModelSpec, ModelState,
    PlanContext, Runtime, RuntimeError, Supervisor, SupervisorConfig, SupervisorError, TargetKind,
    plan::labels,
};
use cortex_engines::{DockerRuntime, HttpProbe, LlamaCppEngine};
use cortex_testkit::gemma;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;

mod swarm;

/// One test at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The runtime, or a failure that says what is missing.
async fn runtime() -> DockerRuntime {
    match DockerRuntime::connect().await {
        Ok(r) => r,
        Err(e) => panic!(
            "these tests need the Docker Engine and found none: {}\n\
             start Docker (or point DOCKER_HOST at its socket), then run scripts/setup, which \
             builds the llama-server image",
            cortex_core::error_chain(&e)
        ),
    }
}

/// A plain bollard client, for looking at what the runtime made.
async fn docker() -> Docker {
    Docker::connect_with_unix_defaults()
        .expect("Docker socket")
        .negotiate_version()
        .await
        .expect("Docker answers")
}

fn spec(id: &str, model: &Path, extra: &str) -> ModelSpec {
    // No GPU on CI machines: none is requested unless a test says otherwise.
    let gpus = if extra.contains("gpus") {
        ""
    } else {
        "gpus = \"none\""
    };
    let settings: EngineSettings =
        toml::from_str(&format!("ctx_size = 2048\nthreads = 2\n{gpus}\n{extra}")).unwrap();
    ModelSpec::new(
        ModelId::new(id).unwrap(),
        "llamacpp".into(),
        ModelSource::Path(model.to_owned()),
    )
    .with_settings(settings)
    .with_startup_timeout(Duration::from_secs(120))
}

/// The tests' own owner label: reconciliation here never touches containers of a real manager
/// on the same Docker Engine.
const OWNER: &str = "cortex-tests";

fn supervisor<R: Runtime + Clone>(runtime: &R) -> Supervisor {
    let mut config = SupervisorConfig::default();
    config.owner = OWNER.into();
    Supervisor::builder(Arc::new(runtime.clone()), Arc::new(HttpProbe::default()))
        .engine(Arc::new(LlamaCppEngine::new()))
        .config(config)
        .build()
}

/// Ids of the containers labelled with model `id`, stopped ones included.
async fn containers_of(docker: &Docker, id: &str) -> Vec<String> {
    let filter = format!("{}={id}", labels::MODEL_ID);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![filter.as_str()])]))
        .build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Removes what an earlier, failed run of a test may have left.
async fn clean(docker: &Docker, ids: &[&str]) {
    for id in ids {
        for c in containers_of(docker, id).await {
            let _ = docker
                .remove_container(
                    &c,
                    Some(
                        bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                            .force(true)
                            .build(),
                    ),
                )
                .await;
        }
    }
}

/// A chat completion over plain HTTP; returns the status and the JSON body.
async fn chat(base: &str, model: &str) -> (u16, serde_json::Value) {
    chat_with(base, model, None).await
}

/// [`chat`] with the engine's key.
async fn chat_with_key(base: &str, model: &str, key: &str) -> (u16, serde_json::Value) {
    chat_with(base, model, Some(key)).await
}

async fn chat_with(base: &str, model: &str, key: Option<&str>) -> (u16, serde_json::Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "temperature": 0,
    });
    let mut req = http::Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_start_ready_chat_stop_and_the_container_is_gone_five_times() {
    let _serial = SERIAL.lock().await;
    let rt = runtime().await;
    let docker = docker().await;
    clean(&docker, &["dk-chat"]).await;
    let sup = supervisor(&rt);
    let m = ModelId::new("dk-chat").unwrap();

    let mut registered = Vec::new();
    for round in 0..5 {
        let t = Instant::now();
        sup.start(spec("dk-chat", &gemma(), "")).await.unwrap();
        registered.push(t.elapsed());
        let ep = sup.registry().resolve("dk-chat").unwrap()[0].clone();
        let ids = containers_of(&docker, "dk-chat").await;
        assert_eq!(ids, [ep.instance.as_str()], "one container, the instance");

        if round == 0 {
            // Through the published port on 127.0.0.1.
            let base = ep.base_url.to_string();
            assert!(base.starts_with("http://127.0.0.1:"), "{base}");
            assert_ne!(ep.base_url.port_u16(), Some(8080), "an ephemeral host port");
            let (status, body) = chat(base.trim_end_matches('/'), "dk-chat").await;
            assert_eq!(status, 200, "{body}");
            assert!(
                body["choices"][0]["message"]["content"].is_string(),
                "{body}"
            );
            assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);

            // The engine's own log lines arrive in the ring buffer and the live stream.
            let logs = rt.logs(&ep.instance, 1000).await.unwrap();
            assert!(
                logs.iter()
                    .any(|l| l.line.contains("llama_server: listening on")),
                "{logs:#?}"
            );
            let mut stream = rt.follow(&ep.instance).await.unwrap();
            let _ = chat(base.trim_end_matches('/'), "dk-chat").await;
            let line = tokio::time::timeout(
                Duration::from_secs(10),
                futures_util::StreamExt::next(&mut stream),
            )
            .await
            .expect("a live line after a request")
            .expect("the stream is open while the container runs");
            assert!(!line.line.is_empty());
        }

        sup.stop(&m).await.unwrap();
        assert_eq!(sup.status(&m).unwrap().state, ModelState::Stopped);
        assert!(sup.registry().resolve("dk-chat").is_none());
        assert!(
            containers_of(&docker, "dk-chat").await.is_empty(),
            "removed, not just stopped"
        );
        assert!(matches!(
            rt.inspect(&ep.instance).await,
            Err(RuntimeError::NotFound { .. })
        ));
    }
    registered.sort();
    eprintln!(
        "create to registered, 5 runs: median {:?} (min {:?}, max {:?})",
        registered[2], registered[0], registered[4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_load_fails_with_the_log_tail_and_removes_the_container() {
    let _serial = SERIAL.lock().await;
    let rt = runtime().await;
    let docker = docker().await;
    clean(&docker, &["dk-crash"]).await;
    let dir = std::env::temp_dir().join(format!("cortex-docker-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.gguf");
    // A valid header promising a tensor that is not there: llama-server starts, then fails to load.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    std::fs::write(&bad, &bytes).unwrap();

    let sup = supervisor(&rt);
    let mut events = sup.subscribe();
    let err = sup.start(spec("dk-crash", &bad, "")).await.unwrap_err();
    let SupervisorError::Failed {
        reason, log_tail, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert!(
        reason.starts_with("replica 0 exited while starting, with exit code 1"),
        "{reason}"
    );
    let tail: Vec<&str> = log_tail.iter().map(|l| l.line.as_str()).collect();
    assert!(
        tail.iter().any(|l| l.contains("failed to load model")),
        "{tail:#?}"
    );
    let ModelState::Failed { log_tail: kept, .. } =
        sup.status(&"dk-crash".parse().unwrap()).unwrap().state
    else {
        panic!()
    };
    assert_eq!(&kept, log_tail, "the Failed state keeps the tail");
    assert!(containers_of(&docker, "dk-crash").await.is_empty());
    // The runtime saw the exit and its code.
    let mut exited = None;
    while let Ok(e) = events.try_recv() {
        if let EventKind::InstanceExited { exit, .. } = e.kind {
            exited = exit;
        }
    }
    assert_eq!(exited.and_then(|e| e.code), Some(1));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_timeout_removes_the_container() {
    let _serial = SERIAL.lock().await;
    let rt = runtime().await;
    let docker = docker().await;
    clean(&docker, &["dk-slow"]).await;
    let sup = supervisor(&rt);
    let err = sup
        .start(spec("dk-slow", &gemma(), "").with_startup_timeout(Duration::from_millis(1)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("replica 0 was not ready after 1ms"),
        "{err}"
    );
    assert!(containers_of(&docker, "dk-slow").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_created_container_carries_every_setting_of_the_plan() {
    let _serial = SERIAL.lock().await;
    let rt = runtime().await;
    let docker = docker().await;
    clean(&docker, &["dk-spec"]).await;
    // A network of this test's own, by a name no other test uses (Docker 20.10 allows duplicate
    // names, so it is created once and removed by id).
    let network = "cortex-test-net";
    let leftovers = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap();
    for n in leftovers
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(network))
    {
        let _ = docker.remove_network(&n.id.unwrap_or_default()).await;
    }
    let net_id = docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    // GPUs by UUID: no GPU is needed to create (not start) the container and read the request back.
    let spec = spec(
        "dk-spec",
        &gemma(),
        &format!("gpus = {{ devices = [\"GPU-0f1e2d3c\", \"1\"] }}\nnetwork = \"{network}\""),
    );
    let mut plan = LlamaCppEngine::new()
        .plan(&spec, &PlanContext::new(TargetKind::Container, 0, 8080))
        .unwrap()
        .plan;
    plan.labels.insert(labels::MANAGED_BY.into(), OWNER.into());
    plan.labels
        .insert(labels::MODEL_ID.into(), "dk-spec".into());
    let id = rt.create(&plan).await.unwrap();
    let info = docker
        .inspect_container(id.as_str(), None::<InspectContainerOptions>)
        .await
        .unwrap();
    rt.stop(&id, Duration::from_secs(1)).await.unwrap();
    assert!(containers_of(&docker, "dk-spec").await.is_empty());
    docker.remove_network(&net_id).await.unwrap();

    assert_eq!(info.name.as_deref(), Some("/llamacpp-model-dk-spec"));
    let config = info.config.unwrap();
    assert_eq!(config.image.as_deref(), Some("cortex/llama-server:b11434"));
    assert_eq!(config.cmd.unwrap(), plan.args);
    assert!(
        config
            .env
            .unwrap()
            .contains(&"NVIDIA_DRIVER_CAPABILITIES=compute,utility".to_owned())
    );
    assert_eq!(config.labels.unwrap()[labels::MODEL_ID], "dk-spec");
    let check = config.healthcheck.unwrap();
    assert_eq!(
        check.test.unwrap(),
        [
            "CMD",
            "curl",
            "-fsS",
            "-o",
            "/dev/null",
            "http://127.0.0.1:8080/health"
        ]
    );
    assert_eq!(
        check.start_period,
        Some(300_000_000_000),
        "the start period is the plan's startup timeout (the engine's 300 s)"
    );

    let host = info.host_config.unwrap();
    let gpu = &host.device_requests.unwrap()[0];
    assert_eq!(gpu.driver.as_deref(), Some("nvidia"));
    assert_eq!(
        gpu.device_ids.as_deref(),
        Some(&["GPU-0f1e2d3c".to_owned(), "1".to_owned()][..])
    );
    assert_eq!(gpu.capabilities, Some(vec![vec!["gpu".to_owned()]]));
    assert_eq!(host.shm_size, Some(8 << 30));
    // The plan's shared memory, in the container's own IPC namespace (the daemon's default mode:
    // `private` or `shareable`), never the host's, which would ignore `--shm-size`.
    assert_ne!(host.ipc_mode.as_deref(), Some("host"));
    assert_eq!(
        host.restart_policy.unwrap().name,
        Some(bollard::models::RestartPolicyNameEnum::NO)
    );
    assert_eq!(host.network_mode.as_deref(), Some(network));
    let mounts = host.mounts.unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].target.as_deref(), Some("/models"));
    assert_eq!(
        mounts[0].source.as_deref(),
        gemma().parent().unwrap().to_str()
    );
    assert_eq!(mounts[0].read_only, Some(true));
    let binding = &host.port_bindings.unwrap()["8080/tcp"].clone().unwrap()[0];
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(binding.host_port.as_deref(), Some(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_dropped_mid_run_is_adopted_not_duplicated_and_leftovers_are_removed() {
    let _serial = SERIAL.lock().await;
    let docker = docker().await;
    clean(&docker, &["dk-adopt", "dk-orphan"]).await;

    // The first manager starts two models, then dies with its tokio runtime.
    std::thread::spawn(|| {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        tokio.block_on(async {
            let rt = runtime().await;
            let sup = supervisor(&rt);
            sup.start(spec("dk-adopt", &gemma(), "")).await.unwrap();
            sup.start(spec("dk-orphan", &gemma(), "")).await.unwrap();
        });
        drop(tokio);
    })
    .join()
    .unwrap();
    let adopt_before = containers_of(&docker, "dk-adopt").await;
    assert_eq!(
        adopt_before.len(),
        1,
        "still running after its manager died"
    );
    // One of the leftovers crashes while no manager is there.
    let orphan = containers_of(&docker, "dk-orphan").await;
    docker
        .kill_container(&orphan[0], None::<KillContainerOptions>)
        .await
        .unwrap();

    // The second manager, configured with dk-adopt only.
    let rt = runtime().await;
    let sup = supervisor(&rt);
    let mut events = sup.subscribe();
    let report = sup
        .reconcile(&[spec("dk-adopt", &gemma(), "")])
        .await
        .unwrap();
    eprintln!("reconcile: {report:#?}");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.adopted.len(), 1);
    assert_eq!(report.adopted[0].instance.as_str(), adopt_before[0]);
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed[0].instance.as_str(), orphan[0]);
    assert!(
        report.removed[0]
            .reason
            .starts_with("model dk-orphan is not configured"),
        "{}",
        report.removed[0].reason
    );
    assert!(containers_of(&docker, "dk-orphan").await.is_empty());
    assert_eq!(
        containers_of(&docker, "dk-adopt").await,
        adopt_before,
        "adopted, not duplicated"
    );
    let ep = sup.registry().resolve("dk-adopt").unwrap()[0].clone();
    assert_eq!(ep.instance.as_str(), adopt_before[0]);
    let (status, body) = chat(ep.base_url.to_string().trim_end_matches('/'), "dk-adopt").await;
    assert_eq!(status, 200, "{body}");
    // The adopted container's earlier lines are there too.
    let logs = rt.logs(&ep.instance, 1000).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.line.contains("llama_server: listening on")),
        "{logs:#?}"
    );
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e.kind {
            EventKind::Adopted { .. } => seen.push(format!("adopted {}", e.model)),
            EventKind::Removed { .. } => seen.push(format!("removed {}", e.model)),
            EventKind::InstanceStarted { .. } => seen.push(format!("started {}", e.model)),
            _ => {}
        }
    }
    seen.sort();
    assert_eq!(seen, ["adopted dk-adopt", "removed dk-orphan"]);

    // The adopted instance stops like one of its own.
    sup.stop(&"dk-adopt".parse().unwrap()).await.unwrap();
    assert!(containers_of(&docker, "dk-adopt").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_a_name_conflict_and_a_missing_socket_are_clear_errors() {
    let _serial = SERIAL.lock().await;
    let rt = runtime().await;
    let docker = docker().await;
    clean(&docker, &["dk-errors"]).await;
    let engine = LlamaCppEngine::new();
    let cx = PlanContext::new(TargetKind::Container, 0, 8080);

    let absent = spec("dk-errors", &gemma(), "image = \"cortex/absent:0\"");
    let plan = engine.plan(&absent, &cx).unwrap().plan;
    let err = rt.start(&plan).await.unwrap_err();
    let text = cortex_core::error_chain(&err);
    assert!(
        text.contains("image cortex/absent:0 is not on this Docker Engine, and Cortex never pulls"),
        "{text}"
    );

    let mut plan = engine
        .plan(&spec("dk-errors", &gemma(), ""), &cx)
        .unwrap()
        .plan;
    plan.labels
        .insert(labels::MODEL_ID.into(), "dk-errors".into());
    let first = rt.create(&plan).await.unwrap();
    let err = rt.start(&plan).await.unwrap_err();
    let text = cortex_core::error_chain(&err);
    assert!(
        text.contains("a container named llamacpp-model-dk-errors already exists"),
        "{text}"
    );
    assert!(
        text.contains("docker rm -f llamacpp-model-dk-errors"),
        "{text}"
    );
    rt.stop(&first, Duration::from_secs(1)).await.unwrap();
    // Stopping again, or something never there, succeeds.
    rt.stop(&first, Duration::from_secs(1)).await.unwrap();
    assert!(containers_of(&docker, "dk-errors").await.is_empty());

    let err = DockerRuntime::builder()
        .host("unix:///nonexistent/docker.sock")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        cortex_core::error_chain(&err),
        "runtime unavailable: cannot use the Docker Engine at unix:///nonexistent/docker.sock: \
         the socket does not exist; is Docker installed and its daemon running?: \
         /nonexistent/docker.sock: no such file"
    );
}

/// An engine key in a container: not in the container's configuration (`docker inspect`), not in
/// its command, yet llama-server requires it — it reads it from the file the runtime copied in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_key_is_in_force_in_the_container_and_not_in_docker_inspect() {
    const KEY: &str = "sk-container-secret-5d1e";
    let _serial = SERIAL.lock().await;
    let rt = runtime().await;
    let docker = docker().await;
    clean(&docker, &["dk-key"]).await;
    let sup = supervisor(&rt);
    sup.start(spec("dk-key", &gemma(), &format!("api_key = \"{KEY}\"")))
        .await
        .unwrap();
    let ep = sup.registry().resolve("dk-key").unwrap()[0].clone();
    let inspected = docker
        .inspect_container(
            ep.instance.as_str(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let json = serde_json::to_string(&inspected).unwrap();
    assert!(!json.contains(KEY), "the key is in `docker inspect`");
    assert!(
        json.contains("/run/cortex/secrets"),
        "the secrets' entrypoint is not in use"
    );

    let base = ep.base_url.to_string();
    let base = base.trim_end_matches('/');
    let (status, body) = chat(base, "dk-key").await;
    assert_eq!(status, 401, "llama-server did not require its key: {body}");
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(format!("{base}/v1/models"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.request(request).await.unwrap().status(), 200);
    let logs = rt.logs(&ep.instance, 1000).await.unwrap();
    assert!(
        logs.iter().all(|l| !l.line.contains(KEY)),
        "the key is in the engine's log"
    );
    sup.stop(&ModelId::new("dk-key").unwrap()).await.unwrap();
    assert!(containers_of(&docker, "dk-key").await.is_empty());
}

/// `tcp://` addresses are used as the Docker CLI uses `DOCKER_HOST` (here a TCP relay to the
/// local socket), and a container Cortex did not start is never stopped or removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_docker_host_works_and_foreign_containers_are_left_alone() {
    let _serial = SERIAL.lock().await;
    let docker = docker().await;
    // A TCP relay to the local socket, standing in for a daemon listening on tcp://.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut unix = tokio::net::UnixStream::connect("/var/run/docker.sock")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            });
        }
    });
    let rt = DockerRuntime::builder()
        .host(format!("tcp://127.0.0.1:{port}"))
        .connect()
        .await
        .unwrap();
    rt.list().await.unwrap();

    // A container of someone else's: no Cortex label.
    let name = "cortex-test-foreign";
    let _ = docker
        .remove_container(
            name,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .build(),
            ),
        )
        .await;
    let created = docker
        .create_container(
            Some(
                bollard::query_parameters::CreateContainerOptionsBuilder::new()
                    .name(name)
                    .build(),
            ),
            bollard::models::ContainerCreateBody {
                image: Some("cortex/llama-server:b11434".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = InstanceId::new(created.id.clone());
    let err = rt.stop(&id, Duration::from_secs(1)).await.unwrap_err();
    assert!(
        cortex_core::error_chain(&err).contains("Cortex did not start it and leaves it alone"),
        "{err}"
    );
    assert!(
        docker
            .inspect_container(
                &created.id,
                None::<bollard::query_parameters::InspectContainerOptions>
            )
            .await
            .is_ok(),
        "the foreign container was removed"
    );
    docker
        .remove_container(
            &created.id,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .build(),
            ),
        )
        .await
        .unwrap();
}
