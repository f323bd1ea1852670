//! A [`LaunchPlan`] as a Docker Swarm service's spec: pure, so every setting is unit tested.

use std::collections::HashMap;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, GenericResourcesInner, GenericResourcesInnerDiscreteResourceSpec,
    GenericResourcesInnerNamedResourceSpec, Mount, MountTmpfsOptions, MountType,
    NetworkAttachmentConfig, ResourceObject, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecPlacementPreferences,
    TaskSpecPlacementSpread, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use cortex_core::plan::{SECRETS_DIR, labels};
use cortex_core::{GpuRequest, LaunchPlan, Target};

use super::spec::{bind_mounts, container_labels, health_config, nanos, secrets_entrypoint};

/// The generic resource Docker documents for NVIDIA GPUs in a swarm (each node's daemon
/// advertises its GPUs under this kind, `node-generic-resources` in `daemon.json`).
pub(crate) const GPU_RESOURCE: &str = "NVIDIA-GPU";

/// The label naming the service a task's container belongs to.
pub(crate) const SERVICE_LABEL: &str = "io.cortex.swarm-service";

/// The label naming the service a Swarm secret belongs to (removed with it).
pub(crate) const SECRET_OF: &str = "io.cortex.secret-of";

/// Where a service's tasks may run: Swarm's placement constraints (`node.labels.gpu == l4`,
/// `node.role == worker`) and spread preferences (`node.labels.zone`), as `docker service create
/// --constraint` and `--placement-pref spread=` take them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Placement {
    /// Every constraint must hold on the node.
    pub constraints: Vec<String>,
    /// Tasks are spread evenly over the values of these node labels, in order.
    pub spread: Vec<String>,
}

impl Placement {
    /// No constraint, no preference: any node.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `constraint` too.
    #[must_use]
    pub fn constraint(mut self, constraint: impl Into<String>) -> Self {
        self.constraints.push(constraint.into());
        self
    }

    /// Spreading over `descriptor` too (`node.labels.zone`).
    #[must_use]
    pub fn spread(mut self, descriptor: impl Into<String>) -> Self {
        self.spread.push(descriptor.into());
        self
    }
}

/// The name of the Swarm secret holding `plan`'s secret `name` for `service`.
pub(crate) fn secret_name(service: &str, name: &str) -> String {
    format!("{service}-{}", name.to_ascii_lowercase().replace('_', "-"))
}

/// The service's name and spec for `plan`, whose target must be a container, with `secrets`
/// (plan variable → Swarm secret id) created beforehand.
///
/// - one replicated task; restart condition `none` (the supervisor decides restarts); updates and
///   rollbacks one task at a time, stopping the old first (two engines would not fit one GPU);
/// - the image's entrypoint runs the plan's arguments; its environment and labels as planned, the
///   ownership label on the service, its container and its secrets;
/// - the engine's port published in `host` mode with a port Docker picks on the node the task
///   runs on (read back from the task), so each task is one endpoint, never behind the routing
///   mesh's load balancing;
/// - bind mounts as planned (the paths must exist on every node that may run it); shared memory
///   as a tmpfs at `/dev/shm` of the planned size;
/// - GPUs as the generic resource [`GPU_RESOURCE`]: a count, or these GPUs by id; "every GPU"
///   has no Swarm form, and is refused;
/// - secrets as Swarm secrets mounted at [`SECRETS_DIR`]`/NAME` (mode 0400), exported by the same
///   entrypoint as the Docker runtime's when the engine reads them from its environment;
/// - the plan's network as an attachment, with the service's name as alias.
///
/// # Errors
///
/// A plan for a process, or one asking for every GPU.
pub(crate) fn service_spec(
    plan: &LaunchPlan,
    placement: &Placement,
    secrets: &HashMap<String, String>,
    image_entrypoint: Option<&[String]>,
) -> Result<(String, ServiceSpec), String> {
    let Target::Container { image, name } = &plan.target else {
        return Err(
            "the Swarm runtime starts container targets only; this plan is for a process".into(),
        );
    };
    let mut env = plan.env.clone();
    let generic = generic_gpus(&plan.gpus, name)?;
    if generic.is_some() {
        env.entry("NVIDIA_DRIVER_CAPABILITIES".into())
            .or_insert_with(|| "compute,utility".into());
    }
    let mounts = mounts(plan);
    let secret_refs = secret_refs(plan, name, secrets)?;
    let labels = container_labels(plan);
    // The task's container is the service's, not an instance of its own: without the ownership
    // label, a Docker runtime's manager on the same engine never takes it for an orphan.
    let mut task_labels = labels.clone();
    task_labels.remove(labels::MANAGED_BY);
    task_labels.insert(SERVICE_LABEL.to_owned(), name.clone());
    let container = TaskSpecContainerSpec {
        image: Some(image.clone()),
        labels: Some(task_labels),
        command: secrets_entrypoint(plan, image_entrypoint),
        args: Some(plan.args.clone()),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        mounts: Some(mounts),
        stop_signal: Some("SIGTERM".to_owned()),
        stop_grace_period: Some(nanos(plan.stop_grace)),
        health_check: Some(health_config(plan)),
        secrets: (!secret_refs.is_empty()).then_some(secret_refs),
        init: Some(false),
        ..TaskSpecContainerSpec::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: generic.map(|g| TaskSpecResources {
            reservations: Some(ResourceObject {
                generic_resources: Some(g),
                ..ResourceObject::default()
            }),
            ..TaskSpecResources::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            ..TaskSpecRestartPolicy::default()
        }),
        placement: Some(placement_of(placement)),
        networks: plan.network.as_ref().map(|net| {
            vec![NetworkAttachmentConfig {
                target: Some(net.clone()),
                aliases: Some(vec![name.clone()]),
                ..NetworkAttachmentConfig::default()
            }]
        }),
        ..TaskSpec::default()
    };
    let spec = ServiceSpec {
        name: Some(name.clone()),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..ServiceSpecMode::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            order: Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
            ..ServiceSpecUpdateConfig::default()
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            order: Some(ServiceSpecRollbackConfigOrderEnum::STOP_FIRST),
            ..ServiceSpecRollbackConfig::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(plan.port)),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..EndpointPortConfig::default()
            }]),
            ..EndpointSpec::default()
        }),
        ..ServiceSpec::default()
    };
    Ok((name.clone(), spec))
}

/// GPUs as Swarm's generic resources: a count, or these GPUs by id.
fn generic_gpus(
    gpus: &GpuRequest,
    name: &str,
) -> Result<Option<Vec<GenericResourcesInner>>, String> {
    Ok(match gpus {
        GpuRequest::None => None,
        GpuRequest::Count(n) => Some(vec![GenericResourcesInner {
            discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                kind: Some(GPU_RESOURCE.to_owned()),
                value: Some(i64::from(*n)),
            }),
            ..GenericResourcesInner::default()
        }]),
        GpuRequest::Devices(ids) => Some(
            ids.iter()
                .map(|id| GenericResourcesInner {
                    named_resource_spec: Some(GenericResourcesInnerNamedResourceSpec {
                        kind: Some(GPU_RESOURCE.to_owned()),
                        value: Some(id.clone()),
                    }),
                    ..GenericResourcesInner::default()
                })
                .collect(),
        ),
        GpuRequest::All => {
            return Err(format!(
                "{name}: a Swarm service reserves GPUs by count or by id ({GPU_RESOURCE}); \
                 \"every GPU\" has no Swarm form: set settings.gpus to a number"
            ));
        }
        other => return Err(format!("{name}: GPU request {other:?} has no Swarm form")),
    })
}

/// Bind mounts as planned, and shared memory as a tmpfs at `/dev/shm`.
fn mounts(plan: &LaunchPlan) -> Vec<Mount> {
    let mut mounts = bind_mounts(plan);
    if let Some(size) = plan.shm_size {
        mounts.push(Mount {
            target: Some("/dev/shm".to_owned()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: i64::try_from(size).ok(),
                ..MountTmpfsOptions::default()
            }),
            ..Mount::default()
        });
    }
    mounts
}

/// The references to the Swarm secrets made for `plan`, mounted at their paths.
fn secret_refs(
    plan: &LaunchPlan,
    name: &str,
    secrets: &HashMap<String, String>,
) -> Result<Vec<TaskSpecContainerSpecSecrets>, String> {
    plan.secrets
        .keys()
        .map(|var| {
            let id = secrets
                .get(var)
                .ok_or_else(|| format!("{name}: the Swarm secret for {var} was not created"))?;
            Ok(TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(format!("{SECRETS_DIR}/{var}")),
                    uid: Some("0".to_owned()),
                    gid: Some("0".to_owned()),
                    mode: Some(0o400),
                }),
                secret_id: Some(id.clone()),
                secret_name: Some(secret_name(name, var)),
            })
        })
        .collect()
}

/// Swarm's placement of `placement`.
fn placement_of(placement: &Placement) -> TaskSpecPlacement {
    TaskSpecPlacement {
        constraints: (!placement.constraints.is_empty()).then(|| placement.constraints.clone()),
        preferences: (!placement.spread.is_empty()).then(|| {
            placement
                .spread
                .iter()
                .map(|d| TaskSpecPlacementPreferences {
                    spread: Some(TaskSpecPlacementSpread {
                        spread_descriptor: Some(d.clone()),
                    }),
                })
                .collect()
        }),
        ..TaskSpecPlacement::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cortex_core::plan::Secret;

    use super::*;

    /// The Docker spec's plan, with a stop grace of its own.
    fn plan(gpus: GpuRequest) -> LaunchPlan {
        let mut plan = super::super::spec::tests::plan(gpus);
        plan.stop_grace = Duration::from_secs(7);
        plan
    }

    #[test]
    fn a_plan_becomes_one_task_published_on_its_node_restarted_by_nobody() {
        let placement = Placement::new()
            .constraint("node.labels.gpu == l4")
            .spread("node.labels.zone");
        let (name, spec) = service_spec(
            &plan(GpuRequest::Count(2)),
            &placement,
            &HashMap::new(),
            None,
        )
        .unwrap();
        assert_eq!(name, "llamacpp-model-gemma");
        assert_eq!(spec.name.as_deref(), Some("llamacpp-model-gemma"));
        let labels = spec.labels.as_ref().unwrap();
        assert_eq!(labels[labels::MANAGED_BY], labels::MANAGED_BY_VALUE);
        assert_eq!(labels["io.cortex.model-id"], "gemma");
        assert_eq!(
            spec.mode.unwrap().replicated.unwrap().replicas,
            Some(1),
            "one task per service"
        );
        let task = spec.task_template.unwrap();
        assert_eq!(
            task.restart_policy.unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        let place = task.placement.unwrap();
        assert_eq!(
            place.constraints,
            Some(vec!["node.labels.gpu == l4".to_owned()])
        );
        assert_eq!(
            place.preferences.unwrap()[0]
                .spread
                .as_ref()
                .unwrap()
                .spread_descriptor
                .as_deref(),
            Some("node.labels.zone")
        );
        let gpus = task.resources.unwrap().reservations.unwrap();
        let gpu = gpus.generic_resources.unwrap()[0]
            .discrete_resource_spec
            .clone()
            .unwrap();
        assert_eq!(gpu.kind.as_deref(), Some(GPU_RESOURCE));
        assert_eq!(gpu.value, Some(2));
        let c = task.container_spec.unwrap();
        assert_eq!(c.image.as_deref(), Some("cortex/llama-server:b11434"));
        let container_labels = c.labels.as_ref().unwrap();
        assert!(
            !container_labels.contains_key(labels::MANAGED_BY),
            "a Docker runtime would take the task's container for its own"
        );
        assert_eq!(container_labels[SERVICE_LABEL], "llamacpp-model-gemma");
        assert_eq!(c.command, None, "the image's own entrypoint");
        assert_eq!(
            c.args,
            Some(vec!["-m".to_owned(), "/models/g.gguf".to_owned()])
        );
        assert!(
            c.env
                .unwrap()
                .contains(&"NVIDIA_DRIVER_CAPABILITIES=compute,utility".to_owned())
        );
        assert_eq!(c.stop_grace_period, Some(7_000_000_000));
        assert_eq!(
            c.health_check.unwrap().test.unwrap()[..2],
            ["CMD".to_owned(), "curl".to_owned()],
            "the plan's health command"
        );
        let mounts = c.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].target.as_deref(), Some("/dev/shm"));
        assert_eq!(mounts[1].typ, Some(MountType::TMPFS));
        assert_eq!(
            mounts[1].tmpfs_options.as_ref().unwrap().size_bytes,
            Some(8 << 30)
        );
        let port = &spec.endpoint_spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.target_port, Some(8080));
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        assert_eq!(port.published_port, None, "Docker picks the node's port");
        let net = &task.networks.unwrap()[0];
        assert_eq!(net.target.as_deref(), Some("models"));
        assert_eq!(net.aliases, Some(vec!["llamacpp-model-gemma".to_owned()]));
        let update = spec.update_config.unwrap();
        assert_eq!(update.parallelism, Some(1));
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
        );
    }

    #[test]
    fn gpus_by_id_are_named_resources_and_every_gpu_is_refused() {
        let (_, spec) = service_spec(
            &plan(GpuRequest::Devices(vec!["GPU-1234".into()])),
            &Placement::new(),
            &HashMap::new(),
            None,
        )
        .unwrap();
        let named = spec
            .task_template
            .unwrap()
            .resources
            .unwrap()
            .reservations
            .unwrap()
            .generic_resources
            .unwrap()[0]
            .named_resource_spec
            .clone()
            .unwrap();
        assert_eq!(named.value.as_deref(), Some("GPU-1234"));
        let err = service_spec(
            &plan(GpuRequest::All),
            &Placement::new(),
            &HashMap::new(),
            None,
        )
        .unwrap_err();
        assert!(err.contains("set settings.gpus to a number"), "{err}");
        let (_, cpu) = service_spec(
            &plan(GpuRequest::None),
            &Placement::new(),
            &HashMap::new(),
            None,
        )
        .unwrap();
        assert!(cpu.task_template.unwrap().resources.is_none());
    }

    #[test]
    fn secrets_are_swarm_secrets_at_the_plans_path_never_in_the_spec() {
        let mut p = plan(GpuRequest::None);
        p.secrets
            .insert("LLAMA_API_KEY".into(), Secret::new("hunter2"));
        let missing = service_spec(&p, &Placement::new(), &HashMap::new(), None).unwrap_err();
        assert!(missing.contains("LLAMA_API_KEY"), "{missing}");
        let ids = HashMap::from([("LLAMA_API_KEY".to_owned(), "sec-id".to_owned())]);
        let (_, spec) = service_spec(
            &p,
            &Placement::new(),
            &ids,
            Some(&["/usr/local/bin/llama-server".to_owned()]),
        )
        .unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        let c = spec.task_template.unwrap().container_spec.unwrap();
        let s = &c.secrets.unwrap()[0];
        assert_eq!(s.secret_id.as_deref(), Some("sec-id"));
        assert_eq!(
            s.secret_name.as_deref(),
            Some("llamacpp-model-gemma-llama-api-key")
        );
        let file = s.file.as_ref().unwrap();
        assert_eq!(
            file.name.as_deref(),
            Some("/run/cortex/secrets/LLAMA_API_KEY")
        );
        assert_eq!(file.mode, Some(0o400));
        // Read from the environment: exported first, then the image's entrypoint.
        let command = c.command.unwrap();
        assert_eq!(command[0], "/bin/sh");
        assert_eq!(command.last().unwrap(), "/usr/local/bin/llama-server");
    }

    #[test]
    fn a_process_plan_is_refused() {
        let mut p = plan(GpuRequest::None);
        p.target = Target::Process {
            program: "/bin/true".into(),
        };
        let err = service_spec(&p, &Placement::new(), &HashMap::new(), None).unwrap_err();
        assert!(err.contains("container targets only"), "{err}");
    }
}
