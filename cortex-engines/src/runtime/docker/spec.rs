//! A [`LaunchPlan`] as Docker's create-container body: pure, so every setting is unit tested.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HealthConfig, HostConfig, Mount,
    MountType, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use cortex_core::plan::{SECRETS_DIR, labels};
use cortex_core::{GpuRequest, LaunchPlan, Target};

/// How often Docker runs the container's health check once it has started, and how long one run
/// may take; three failures in a row mark it unhealthy.
const CHECK_INTERVAL: Duration = Duration::from_secs(10);
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
const CHECK_RETRIES: i64 = 3;

/// The entrypoint that exports each secret file as its variable, then runs the image's own
/// entrypoint with the plan's arguments: the values are never in the container's configuration,
/// which `docker inspect` shows.
const SECRETS_SCRIPT: &str = r#"for f in /run/cortex/secrets/*; do [ -f "$f" ] && export "${f##*/}=$(cat "$f")"; done; exec "$@""#;

/// The container's name and create body for `plan`, whose target must be a container.
///
/// - the image's entrypoint runs with the plan's arguments as its command;
/// - the plan's port is published on `publish_ip` with an ephemeral host port;
/// - mounts are bind mounts (read-only where the plan says), shared memory and IPC as planned,
///   restart policy `no` (the supervisor decides restarts), labels as planned;
/// - GPUs through a device request for the `nvidia` driver, and
///   `NVIDIA_DRIVER_CAPABILITIES=compute,utility` unless the plan sets it;
/// - the health check runs the plan's [`command`](cortex_core::HealthSpec::command) with the
///   startup timeout as its start period; with no command, the image's own check is disabled.
/// - a plan with secrets its environment does not point at (as files in [`SECRETS_DIR`]) runs
///   through [`SECRETS_SCRIPT`] (the image needs `/bin/sh`), before `image_entrypoint`, the
///   image's own.
pub(crate) fn container_body(
    plan: &LaunchPlan,
    publish_ip: IpAddr,
    image_entrypoint: Option<&[String]>,
) -> Option<(String, ContainerCreateBody)> {
    let Target::Container { image, name } = &plan.target else {
        return None;
    };
    let port = format!("{}/tcp", plan.port);

    // Secrets are not in the environment `docker inspect` shows: they are files the runtime
    // copies in before the start, exported by the entrypoint (see `SECRETS_SCRIPT`).
    let mut env = plan.env.clone();
    let entrypoint = secrets_entrypoint(plan, image_entrypoint);
    if plan.gpus != GpuRequest::None {
        env.entry("NVIDIA_DRIVER_CAPABILITIES".into())
            .or_insert_with(|| "compute,utility".into());
    }
    let mounts = bind_mounts(plan);
    let host_config = HostConfig {
        mounts: Some(mounts),
        port_bindings: Some(HashMap::from([(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some(publish_ip.to_string()),
                host_port: Some(String::new()),
            }]),
        )])),
        shm_size: plan.shm_size.and_then(|s| i64::try_from(s).ok()),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        device_requests: device_requests(&plan.gpus),
        network_mode: plan.network.clone(),
        init: Some(false),
        ..HostConfig::default()
    };
    let healthcheck = health_config(plan);
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        entrypoint,
        cmd: Some(plan.args.clone()),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(container_labels(plan)),
        exposed_ports: Some(vec![port]),
        healthcheck: Some(healthcheck),
        stop_signal: Some("SIGTERM".to_owned()),
        stop_timeout: Some(i64::try_from(plan.stop_grace.as_secs()).unwrap_or(i64::MAX)),
        host_config: Some(host_config),
        networking_config: plan.network.as_ref().map(|net| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net.clone(),
                EndpointSettings {
                    aliases: Some(vec![name.clone()]),
                    ..EndpointSettings::default()
                },
            )])),
        }),
        ..ContainerCreateBody::default()
    };
    Some((name.clone(), body))
}

/// The plan's mounts as bind mounts (read-only where planned): for containers and Swarm services.
pub(crate) fn bind_mounts(plan: &LaunchPlan) -> Vec<Mount> {
    plan.mounts
        .iter()
        .map(|m| Mount {
            source: Some(m.source.to_string_lossy().into_owned()),
            target: Some(m.target.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Mount::default()
        })
        .collect()
}

/// The health check of `plan`: its [`command`](cortex_core::HealthSpec::command) with the startup
/// timeout as the start period; with no command, the image's own check is disabled. Shared by
/// containers and Swarm services.
pub(crate) fn health_config(plan: &LaunchPlan) -> HealthConfig {
    match &plan.health.command {
        Some(command) => HealthConfig {
            test: Some(
                std::iter::once("CMD".to_owned())
                    .chain(command.iter().cloned())
                    .collect(),
            ),
            interval: Some(nanos(CHECK_INTERVAL)),
            timeout: Some(nanos(CHECK_TIMEOUT)),
            retries: Some(CHECK_RETRIES),
            start_period: Some(nanos(plan.health.startup_timeout)),
            // Docker 25+ (API 1.44): how often to check during the start period.
            start_interval: Some(nanos(
                plan.health.max_poll_interval.max(Duration::from_secs(1)),
            )),
        },
        // An image's HEALTHCHECK knows nothing of the port this plan chose: never inherit it.
        None => HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..HealthConfig::default()
        },
    }
}

/// The device request for `gpus`: all of them, a count, or specific indices or UUIDs.
fn device_requests(gpus: &GpuRequest) -> Option<Vec<DeviceRequest>> {
    let request = |count: Option<i64>, device_ids: Option<Vec<String>>| DeviceRequest {
        driver: Some("nvidia".to_owned()),
        count,
        device_ids,
        capabilities: Some(vec![vec!["gpu".to_owned()]]),
        options: None,
    };
    match gpus {
        GpuRequest::All => Some(vec![request(Some(-1), None)]),
        GpuRequest::Count(n) => Some(vec![request(Some(i64::from(*n)), None)]),
        GpuRequest::Devices(ids) => Some(vec![request(None, Some(ids.clone()))]),
        // A future variant: no request rather than a guess.
        _ => None,
    }
}

pub(crate) fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The plan's labels; every container made here is marked as Cortex's (the supervisor names its
/// owner), so stop and remove, which check the mark, can always clean it up.
pub(crate) fn container_labels(plan: &LaunchPlan) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = plan
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.entry(labels::MANAGED_BY.to_owned())
        .or_insert_with(|| labels::MANAGED_BY_VALUE.to_owned());
    out
}

/// The entrypoint exporting `plan`'s secrets, when it needs one.
pub(crate) fn secrets_entrypoint(
    plan: &LaunchPlan,
    image_entrypoint: Option<&[String]>,
) -> Option<Vec<String>> {
    needs_exporter(plan).then(|| {
        ["/bin/sh", "-c", SECRETS_SCRIPT, "cortex-secrets"]
            .into_iter()
            .map(str::to_owned)
            .chain(image_entrypoint.unwrap_or_default().iter().cloned())
            .collect()
    })
}

/// Whether some secret of `plan` is read from the environment (the engine does not read its file).
pub(crate) fn needs_exporter(plan: &LaunchPlan) -> bool {
    plan.secrets.keys().any(|name| {
        let file = format!("{SECRETS_DIR}/{name}");
        !plan.env.values().any(|v| *v == file)
    })
}

/// A tar archive of `plan`'s secrets under `run/cortex/secrets/` (to unpack at `/`): one file per
/// variable, readable by its owner only. Written by hand: a few ustar headers; no tar crate is a
/// dependency, and nothing else here needs one.
pub(crate) fn secrets_tar(plan: &LaunchPlan) -> Vec<u8> {
    let mut out = Vec::new();
    for dir in ["run/", "run/cortex/", "run/cortex/secrets/"] {
        let mode = if dir == "run/" { 0o755 } else { 0o700 };
        out.extend_from_slice(&tar_header(dir, mode, 0, b'5'));
    }
    for (name, value) in &plan.secrets {
        let data = value.expose().as_bytes();
        let path = format!("{}/{name}", SECRETS_DIR.trim_start_matches('/'));
        out.extend_from_slice(&tar_header(&path, 0o400, data.len(), b'0'));
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn tar_header(path: &str, mode: u32, size: usize, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put =
        |h: &mut [u8; 512], at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut h, 0, &path.as_bytes()[..path.len().min(100)]);
    put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, b"00000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = kind;
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::Ipv4Addr;

    use cortex_core::{HealthSpec, Mount as PlanMount};

    use super::*;

    /// A plan with every setting a container translates (also the Swarm spec's tests').
    pub(crate) fn plan(gpus: GpuRequest) -> LaunchPlan {
        let mut plan = LaunchPlan::new(
            "gemma".parse().unwrap(),
            "llamacpp".into(),
            Target::Container {
                image: "cortex/llama-server:b11434".into(),
                name: "llamacpp-model-gemma".into(),
            },
            8080,
            HealthSpec::new("/health")
                .with_startup_timeout(Duration::from_secs(300))
                .with_command(["curl", "-f", "http://127.0.0.1:8080/health"]),
        );
        plan.args = vec!["-m".into(), "/models/g.gguf".into()];
        plan.mounts = vec![PlanMount::read_only("/srv/models", "/models")];
        plan.shm_size = Some(8 << 30);
        plan.network = Some("models".into());
        plan.gpus = gpus;
        plan.labels
            .insert("io.cortex.model-id".into(), "gemma".into());
        plan
    }

    #[test]
    fn every_setting_of_the_plan_is_in_the_body() {
        let (name, body) =
            container_body(&plan(GpuRequest::All), Ipv4Addr::LOCALHOST.into(), None).unwrap();
        assert_eq!(name, "llamacpp-model-gemma");
        assert_eq!(body.image.as_deref(), Some("cortex/llama-server:b11434"));
        assert_eq!(body.cmd.unwrap(), ["-m", "/models/g.gguf"]);
        assert_eq!(
            body.env.unwrap(),
            ["NVIDIA_DRIVER_CAPABILITIES=compute,utility"]
        );
        assert_eq!(body.labels.unwrap()["io.cortex.model-id"], "gemma");
        assert_eq!(body.exposed_ports.unwrap(), ["8080/tcp"]);
        let check = body.healthcheck.unwrap();
        assert_eq!(
            check.test.unwrap(),
            ["CMD", "curl", "-f", "http://127.0.0.1:8080/health"]
        );
        assert_eq!(check.start_period, Some(300_000_000_000));
        let host = body.host_config.unwrap();
        // Private IPC with the plan's shared memory: `--ipc host` would ignore `--shm-size`.
        assert_eq!(host.ipc_mode, None);
        assert_eq!(host.shm_size, Some(8 << 30));
        assert_eq!(host.network_mode.as_deref(), Some("models"));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        let mount = &host.mounts.unwrap()[0];
        assert_eq!(
            (
                mount.source.as_deref(),
                mount.target.as_deref(),
                mount.read_only
            ),
            (Some("/srv/models"), Some("/models"), Some(true))
        );
        let binding = &host.port_bindings.unwrap()["8080/tcp"].clone().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some(""));
        let gpu = &host.device_requests.unwrap()[0];
        assert_eq!(gpu.driver.as_deref(), Some("nvidia"));
        assert_eq!(gpu.count, Some(-1));
        assert_eq!(gpu.capabilities, Some(vec![vec!["gpu".to_owned()]]));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["models"].aliases.as_deref(),
            Some(&["llamacpp-model-gemma".to_owned()][..])
        );
    }

    #[test]
    fn gpu_requests_by_count_and_by_id_and_none() {
        let ip = Ipv4Addr::LOCALHOST.into();
        let body = |g| {
            container_body(&plan(g), ip, None)
                .unwrap()
                .1
                .host_config
                .unwrap()
        };
        let two = body(GpuRequest::Count(2)).device_requests.unwrap();
        assert_eq!((two[0].count, two[0].device_ids.clone()), (Some(2), None));
        let ids = body(GpuRequest::Devices(vec!["GPU-1234".into(), "1".into()]))
            .device_requests
            .unwrap();
        assert_eq!(
            (ids[0].count, ids[0].device_ids.clone()),
            (None, Some(vec!["GPU-1234".to_owned(), "1".to_owned()]))
        );
        let none = container_body(&plan(GpuRequest::None), ip, None).unwrap().1;
        assert_eq!(none.host_config.unwrap().device_requests, None);
        assert_eq!(none.env.unwrap(), Vec::<String>::new());
    }

    #[test]
    fn no_check_command_disables_the_image_check_and_processes_have_no_body() {
        let mut p = plan(GpuRequest::None);
        p.health.command = None;
        let body = container_body(&p, Ipv4Addr::LOCALHOST.into(), None)
            .unwrap()
            .1;
        assert_eq!(body.healthcheck.unwrap().test.unwrap(), ["NONE"]);
        p.target = Target::Process {
            program: "llama-server".into(),
        };
        assert!(container_body(&p, Ipv4Addr::LOCALHOST.into(), None).is_none());
    }

    #[test]
    fn secrets_are_files_exported_by_the_entrypoint_unless_the_engine_reads_the_file() {
        let mut p = plan(GpuRequest::None);
        p.secrets.insert(
            "VLLM_API_KEY".into(),
            cortex_core::plan::Secret::new("sk-in-a-file"),
        );
        let entry = vec!["vllm".to_owned(), "serve".to_owned()];
        let body = container_body(&p, Ipv4Addr::LOCALHOST.into(), Some(&entry))
            .unwrap()
            .1;
        assert!(
            !serde_json::to_string(&body)
                .unwrap()
                .contains("sk-in-a-file")
        );
        let entrypoint = body.entrypoint.unwrap();
        assert_eq!(&entrypoint[..2], ["/bin/sh", "-c"]);
        assert_eq!(&entrypoint[4..], ["vllm", "serve"]);
        assert_eq!(body.cmd.unwrap(), p.args);

        // The archive unpacks (GNU tar) to the one file, owner-readable only.
        let dir = std::env::temp_dir().join(format!("cortex-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("s.tar");
        std::fs::write(&archive, secrets_tar(&p)).unwrap();
        let listed = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&archive)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(
            listed.contains("-r-------- 0/0              12")
                && listed.contains("run/cortex/secrets/VLLM_API_KEY"),
            "{listed}"
        );
        let value = std::process::Command::new("tar")
            .arg("-xOf")
            .arg(&archive)
            .arg("run/cortex/secrets/VLLM_API_KEY")
            .output()
            .unwrap();
        assert_eq!(value.stdout, b"sk-in-a-file");
        let _ = std::fs::remove_dir_all(&dir);

        // llama-server reads its key file: no shell, the image's entrypoint as it is.
        p.env.insert(
            "LLAMA_ARG_API_KEY_FILE".into(),
            format!("{SECRETS_DIR}/VLLM_API_KEY"),
        );
        let body = container_body(&p, Ipv4Addr::LOCALHOST.into(), None)
            .unwrap()
            .1;
        assert!(body.entrypoint.is_none());
    }
}
