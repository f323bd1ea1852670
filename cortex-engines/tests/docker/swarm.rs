//! The Swarm runtime on a real one-node swarm (made by the test with `docker swarm init` when the
//! engine is in none, and left again afterwards), with the real llama-server image and Gemma 3
//! 270M: two replicas as two services, both serving; a task's container killed → the supervisor
//! sees the exit, deregisters it while the other replica serves on, and restarts it as a new
//! service; stop removes every service and secret; a new manager adopts what a dead one left.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    KillContainerOptions, ListSecretsOptionsBuilder, ListServicesOptionsBuilder,
    ListTasksOptionsBuilder,
};
use cortex_core::{
    Engine as _, EventKind, ModelId, ModelState, PlanContext, RestartPolicy, Runtime, RuntimeError,
    TargetKind, plan::labels,
};
use cortex_engines::{Placement, SwarmRuntime};
use cortex_testkit::gemma;
use cortex_testkit::swarm::Swarm;

use super::{SERIAL, chat, docker, spec, supervisor};

async fn swarm_runtime() -> SwarmRuntime {
    match SwarmRuntime::connect().await {
        Ok(r) => r,
        Err(e) => panic!(
            "the Swarm tests need a swarm manager: {}",
            cortex_core::error_chain(&e)
        ),
    }
}

/// Names of the services labelled with model `id`.
async fn services_of(docker: &Docker, id: &str) -> Vec<String> {
    let filter = format!("{}={id}", labels::MODEL_ID);
    let options = ListServicesOptionsBuilder::new()
        .filters(&HashMap::from([("label", vec![filter.as_str()])]))
        .build();
    let mut names: Vec<String> = docker
        .list_services(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|s| s.spec?.name)
        .collect();
    names.sort();
    names
}

/// Secrets Cortex made that are still there.
async fn secrets_left(docker: &Docker) -> Vec<String> {
    let options = ListSecretsOptionsBuilder::new()
        .filters(&HashMap::from([("label", vec![labels::MANAGED_BY])]))
        .build();
    docker
        .list_secrets(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|s| s.spec?.name)
        .collect()
}

/// The container of service `id`'s running task.
async fn container_of(docker: &Docker, service: &str) -> String {
    let options = ListTasksOptionsBuilder::new()
        .filters(&HashMap::from([("service", vec![service])]))
        .build();
    docker
        .list_tasks(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.desired_state == Some(bollard::models::TaskState::RUNNING))
        .find_map(|t| t.status?.container_status?.container_id)
        .expect("a running task with a container")
}

/// Removes services an earlier, failed run may have left for `ids`.
async fn clean(docker: &Docker, ids: &[&str]) {
    for id in ids {
        for name in services_of(docker, id).await {
            let _ = docker.delete_service(&name).await;
        }
    }
    for _ in 0..50 {
        let mut left = 0;
        for id in ids {
            left += services_of(docker, id).await.len();
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn two_replicas_as_services_serve_survive_a_killed_task_stop_and_are_adopted() {
    let _serial = SERIAL.lock().await;
    let _swarm = Swarm::join();
    let docker = docker().await;
    clean(&docker, &["sw-chat"]).await;
    let model = || {
        spec("sw-chat", &gemma(), "api_key = \"sk-engine-swarm\"")
            .with_replicas(NonZeroU32::new(2).unwrap())
            .with_restart(RestartPolicy::OnFailure {
                max_restarts: 2,
                backoff: Duration::from_millis(500),
            })
    };

    // 1. Two replicas: two services, both tasks serving.
    let rt = swarm_runtime().await;
    let sup = supervisor(&rt);
    let began = Instant::now();
    sup.start(model()).await.unwrap();
    let both = began.elapsed();
    let eps = sup.registry().resolve("sw-chat").unwrap();
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert_eq!(
        services_of(&docker, "sw-chat").await,
        ["llamacpp-model-sw-chat", "llamacpp-model-sw-chat-1"],
        "one service per replica"
    );
    let keyed = |base: &str| base.trim_end_matches('/').to_owned();
    for ep in eps.iter() {
        let base = ep.base_url.to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        // The engine key is a Swarm secret: without it, refused.
        let (status, _) = chat(&keyed(&base), "sw-chat").await;
        assert_eq!(status, 401, "the engine key is in force");
        let (status, body) =
            super::chat_with_key(&keyed(&base), "sw-chat", "sk-engine-swarm").await;
        assert_eq!(status, 200, "{body}");
    }
    let spec_text = serde_json::to_string(
        &docker
            .inspect_service(
                "llamacpp-model-sw-chat",
                None::<bollard::query_parameters::InspectServiceOptions>,
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        !spec_text.contains("sk-engine-swarm"),
        "the key is in the spec"
    );
    assert_eq!(
        secrets_left(&docker).await.len(),
        2,
        "one secret per service"
    );
    let logs = rt.logs(&eps[0].instance, 1000).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.line.contains("llama_server: listening on")),
        "{logs:#?}"
    );
    eprintln!(
        "swarm: start to both replicas registered: {:.1} s",
        both.as_secs_f64()
    );

    // 2. One task's container killed: deregistered at once, the other serves on, then the
    // replica comes back as a new service.
    let mut events = sup.subscribe();
    let victim = eps.iter().find(|e| e.replica == 1).unwrap().clone();
    let survivor = eps.iter().find(|e| e.replica == 0).unwrap().clone();
    let container = container_of(&docker, victim.instance.as_str()).await;
    let mut live = rt.follow(&victim.instance).await.unwrap();
    let killed = Instant::now();
    docker
        .kill_container(&container, None::<KillContainerOptions>)
        .await
        .unwrap();
    let mut moved = None;
    while killed.elapsed() < Duration::from_secs(30) {
        let now = sup.registry().resolve("sw-chat").unwrap_or_default();
        if now.iter().all(|e| e.instance != victim.instance) {
            moved = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved = moved.expect("the killed task's endpoint was never deregistered");
    let (status, body) = super::chat_with_key(
        &keyed(&survivor.base_url.to_string()),
        "sw-chat",
        "sk-engine-swarm",
    )
    .await;
    assert_eq!(status, 200, "the other replica serves on: {body}");
    // Its live log ends with it.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while futures_util::StreamExt::next(&mut live).await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the live log of a dead task never ended");
    eprintln!(
        "swarm: a killed task out of the registry after {} ms",
        moved.as_millis()
    );
    let back = Instant::now();
    loop {
        let now = sup.registry().resolve("sw-chat").unwrap_or_default();
        if now.len() == 2 && now.iter().all(|e| e.instance != victim.instance) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(120),
            "the replica was not restarted: {:?}",
            sup.status(&"sw-chat".parse().unwrap())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut saw = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e.kind {
            EventKind::InstanceExited { .. } => saw.push("exited"),
            EventKind::Restarting { .. } => saw.push("restarting"),
            EventKind::Registered { .. } => saw.push("registered"),
            _ => {}
        }
    }
    assert_eq!(saw, ["exited", "restarting", "registered"], "{saw:?}");
    assert!(
        matches!(
            rt.inspect(&victim.instance).await,
            Err(RuntimeError::NotFound { .. })
        ),
        "the dead replica's service is removed"
    );
    assert_eq!(services_of(&docker, "sw-chat").await.len(), 2);

    // 3. The manager dies (its tokio runtime and all, no stop): the next one adopts both
    // services, not duplicating them.
    let before: Vec<String> = sup
        .registry()
        .resolve("sw-chat")
        .unwrap()
        .iter()
        .map(|e| e.instance.to_string())
        .collect();
    drop(sup);
    drop(rt);
    let rt = swarm_runtime().await;
    let sup = supervisor(&rt);
    let report = sup.reconcile(&[model()]).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let mut adopted: Vec<String> = report
        .adopted
        .iter()
        .map(|a| a.instance.to_string())
        .collect();
    adopted.sort();
    let mut before = before;
    before.sort();
    assert_eq!(adopted, before, "adopted, not duplicated");
    assert_eq!(services_of(&docker, "sw-chat").await.len(), 2);
    for ep in sup.registry().resolve("sw-chat").unwrap().iter() {
        let (status, body) = super::chat_with_key(
            &keyed(&ep.base_url.to_string()),
            "sw-chat",
            "sk-engine-swarm",
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    // 4. Stop: nothing left, services and secrets.
    let m = ModelId::new("sw-chat").unwrap();
    sup.stop(&m).await.unwrap();
    assert_eq!(sup.status(&m).unwrap().state, ModelState::Stopped);
    assert!(services_of(&docker, "sw-chat").await.is_empty());
    assert!(
        secrets_left(&docker).await.is_empty(),
        "{:?}",
        secrets_left(&docker).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_an_unmet_constraint_and_no_swarm_are_clear_errors() {
    let _serial = SERIAL.lock().await;
    let swarm = Swarm::join();
    let docker = docker().await;
    clean(&docker, &["sw-errors"]).await;
    let rt = swarm_runtime().await;
    let plan = |extra: &str| {
        let spec = spec("sw-errors", &gemma(), extra);
        let mut plan = cortex_engines::LlamaCppEngine::new()
            .plan(&spec, &PlanContext::new(TargetKind::Container, 0, 8080))
            .unwrap()
            .plan;
        plan.labels
            .insert(labels::MANAGED_BY.into(), super::OWNER.into());
        plan.labels
            .insert(labels::MODEL_ID.into(), "sw-errors".into());
        plan
    };

    let err = rt
        .start(&plan("image = \"cortex/absent:0\""))
        .await
        .unwrap_err();
    let text = cortex_core::error_chain(&err);
    assert!(text.contains("could not run"), "{text}");
    assert!(text.contains("must be on every node"), "{text}");
    assert!(
        services_of(&docker, "sw-errors").await.is_empty(),
        "nothing left"
    );

    let placed = SwarmRuntime::builder()
        .placement(Placement::new().constraint("node.labels.gpu == h100"))
        .start_timeout(Duration::from_secs(3))
        .connect()
        .await
        .unwrap();
    let err = placed.start(&plan("")).await.unwrap_err();
    let text = cortex_core::error_chain(&err);
    assert!(text.contains("not running after 3s"), "{text}");
    assert!(text.contains("no suitable node"), "{text}");
    assert!(
        services_of(&docker, "sw-errors").await.is_empty(),
        "nothing left"
    );

    let mut every_gpu = plan("");
    every_gpu.gpus = cortex_core::GpuRequest::All;
    let text = cortex_core::error_chain(&rt.start(&every_gpu).await.unwrap_err());
    assert!(text.contains("set settings.gpus to a number"), "{text}");

    // Out of the swarm (only when this run made it: never leave someone's swarm).
    drop(rt);
    drop(placed);
    if Swarm::made_here() {
        drop(swarm);
        let err = SwarmRuntime::connect().await.unwrap_err();
        let text = cortex_core::error_chain(&err);
        assert!(text.contains("docker swarm init"), "{text}");
    }
}
