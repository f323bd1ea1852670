//! [`SwarmRuntime`]: plans run as Docker Swarm services, through bollard's services API.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{LocalNodeState, SecretSpec, Service, Task, TaskState};
use bollard::query_parameters::{
    ListSecretsOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use cortex_core::plan::labels;
use cortex_core::{
    BoxError, Exit, Instance, InstanceId, InstanceInfo, InstanceState, LaunchPlan, LogLine,
    LogStream, ModelId, Runtime, RuntimeError, Target, TargetKind,
};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::error::{CallError, call_message, operation_error, status, within};
use super::follow::{Framer, follow_options, push};
pub use super::swarm_spec::Placement;
use super::swarm_spec::{SECRET_OF, secret_name, service_spec};
use crate::runtime::logs::LogRing;

/// How often a service's task is looked at while it starts and while it runs.
const TASK_POLL: Duration = Duration::from_millis(250);

/// Runs [`LaunchPlan`]s with a [`Target::Container`] as Docker Swarm services, one service per
/// replica.
///
/// - **One service per replica, one task per service.** A replica is what the
///   [`Supervisor`](cortex_core::Supervisor) starts, probes, registers and restarts, so each is a
///   service of its own, named as the plan's container (`llamacpp-model-gemma-1`), with one
///   replicated task and restart condition `none`: when the task ends, the instance has exited,
///   and the supervisor decides what comes next (a restart is a new service, placed anew by the
///   swarm, registered when it is ready). A single service with `replicas: N` would hide which
///   replica is which from the supervisor and let the swarm restart engines behind its back.
/// - **Each task is one endpoint**: the engine's port is published in `host` mode (a port the
///   node's daemon picks, read back from the task) on the node the task runs on, addressed by
///   that node's address in the swarm ([`node_address`](SwarmRuntimeBuilder::node_address) to
///   override it). The routing mesh is not used: the gateway balances, not the swarm.
/// - **Placement** from [`Placement`]: constraints and spread preferences for every service, or
///   per model ([`SwarmRuntimeBuilder::placement_for`]); GPUs as the generic resource
///   `NVIDIA-GPU`; updates and rollbacks one task at a time, stopping the old one first.
/// - **Secrets** are Swarm secrets (created with the service, labelled as its own, removed with
///   it), mounted at the plan's secret paths: never in the service's spec or the engine's argv.
/// - **Logs**: the service's output followed into a ring buffer and a live stream, as for the
///   [`DockerRuntime`](super::DockerRuntime); after an exit the tail stays readable until
///   [`stop`](Runtime::stop) removes the service.
/// - **Stop** scales the service to zero (the task gets the plan's stop signal, then SIGKILL after
///   its grace period), waits for the task to end, then removes the service and its secrets.
/// - **Adoption**: [`list`](Runtime::list) finds services by the ownership label, so a restarted
///   manager's [`Supervisor::reconcile`](cortex_core::Supervisor::reconcile) adopts or removes
///   them as it does containers.
///
/// The Docker Engine it talks to must be a swarm manager (`docker swarm init`). Cortex never
/// pulls: the image must be on every node that may run the task.
///
/// ```no_run
/// # async fn run(plan: cortex_core::LaunchPlan) -> Result<(), cortex_core::RuntimeError> {
/// use cortex_core::Runtime;
/// use cortex_engines::{Placement, SwarmRuntime};
///
/// let runtime = SwarmRuntime::builder()
///     .placement(Placement::new().constraint("node.labels.gpu == l4"))
///     .connect()
///     .await?;
/// let instance = runtime.start(&plan).await?; // plan.target is a Target::Container
/// println!("serving at {}", instance.base_url);
/// runtime.stop(&instance.id, plan.stop_grace).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SwarmRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    host: String,
    call_timeout: Duration,
    start_timeout: Duration,
    log_lines: usize,
    placement: Placement,
    per_model: HashMap<ModelId, Placement>,
    node_address: Option<String>,
    tracked: Mutex<HashMap<InstanceId, Arc<Tracked>>>,
}

/// A service whose output and task are being followed.
struct Tracked {
    logs: Arc<LogRing>,
    exit: watch::Receiver<Option<Exit>>,
    tasks: AbortHandle,
    follower: AbortHandle,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.tasks.abort();
        self.follower.abort();
    }
}

/// Settings of a [`SwarmRuntime`]; made by [`SwarmRuntime::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SwarmRuntimeBuilder {
    docker: super::DockerRuntimeBuilder,
    call_timeout: Duration,
    start_timeout: Duration,
    log_lines: usize,
    placement: Placement,
    per_model: HashMap<ModelId, Placement>,
    node_address: Option<String>,
}

// === impl SwarmRuntimeBuilder ===

impl SwarmRuntimeBuilder {
    /// The Docker Engine's address (a swarm manager), as for
    /// [`DockerRuntimeBuilder::host`](super::DockerRuntimeBuilder::host); default
    /// `$DOCKER_HOST`, else the local socket.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.docker = self.docker.host(host);
        self
    }

    /// How long one Docker call may take (default 30 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self.docker = self.docker.call_timeout(timeout);
        self
    }

    /// How long a new service's task may take to be running (scheduled, its container created
    /// and started; not the engine's own loading): default 120 s. A task still pending then (no
    /// node meets its constraints, say) fails the start with the swarm's reason.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Log lines kept per service (default 1,000).
    pub fn log_lines(mut self, n: usize) -> Self {
        self.log_lines = n.max(1);
        self
    }

    /// Where every service may run, unless its model has its own
    /// ([`placement_for`](Self::placement_for)).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Where the services of `model` may run, instead of the default placement.
    pub fn placement_for(mut self, model: ModelId, placement: Placement) -> Self {
        self.per_model.insert(model, placement);
        self
    }

    /// The address endpoints are reached at, whatever node a task runs on (a one-node swarm
    /// whose advertised address is not reachable from here). Default: the node's address in the
    /// swarm.
    pub fn node_address(mut self, address: impl Into<String>) -> Self {
        self.node_address = Some(address.into());
        self
    }

    /// Connects, checks the API version and that the engine is a swarm manager.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] when the engine cannot be used, is not in a swarm, or is
    /// not one of its managers.
    pub async fn connect(self) -> Result<SwarmRuntime, RuntimeError> {
        let docker = self.docker.connect().await?;
        let host = docker.inner.host.clone();
        let docker = docker.inner.docker.clone();
        let unavailable = |what: String| RuntimeError::Unavailable {
            context: format!("cannot use the Docker Engine at {host} as a swarm: {what}"),
            source: what.clone().into(),
        };
        let info = tokio::time::timeout(self.call_timeout, docker.info())
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.call_timeout)))?
            .map_err(|e| unavailable(e.to_string()))?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.local_node_state != Some(LocalNodeState::ACTIVE) {
            return Err(unavailable(format!(
                "it is not in a swarm (state {:?}); `docker swarm init` makes one",
                swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY)
            )));
        }
        if swarm.control_available != Some(true) {
            return Err(unavailable(
                "it is a worker; services are created on a manager node".to_owned(),
            ));
        }
        Ok(SwarmRuntime {
            inner: Arc::new(Inner {
                docker,
                host,
                call_timeout: self.call_timeout,
                start_timeout: self.start_timeout,
                log_lines: self.log_lines,
                placement: self.placement,
                per_model: self.per_model,
                node_address: self.node_address,
                tracked: Mutex::new(HashMap::new()),
            }),
        })
    }
}

// === impl SwarmRuntime ===

impl SwarmRuntime {
    /// Connects to the default Docker Engine with the default settings; see
    /// [`SwarmRuntimeBuilder::connect`].
    ///
    /// # Errors
    ///
    /// As [`SwarmRuntimeBuilder::connect`].
    pub async fn connect() -> Result<Self, RuntimeError> {
        Self::builder().connect().await
    }

    /// A builder.
    pub fn builder() -> SwarmRuntimeBuilder {
        SwarmRuntimeBuilder {
            docker: super::DockerRuntime::builder(),
            call_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(120),
            log_lines: 1000,
            placement: Placement::default(),
            per_model: HashMap::new(),
            node_address: None,
        }
    }

    fn call<T>(
        &self,
        what: &'static str,
        f: impl Future<Output = Result<T, DockerError>>,
    ) -> impl Future<Output = Result<T, CallError>> {
        within(what, self.inner.call_timeout, f)
    }

    async fn inspect_service(&self, id: &InstanceId) -> Result<Service, RuntimeError> {
        self.call(
            "inspect service",
            self.inner.docker.inspect_service(
                id.as_str(),
                None::<bollard::query_parameters::InspectServiceOptions>,
            ),
        )
        .await
        .map_err(|e| operation_error("inspect", id, e))
    }

    /// The service's tasks, newest first.
    async fn tasks(&self, id: &InstanceId) -> Result<Vec<Task>, CallError> {
        tasks_of(&self.inner.docker, id.as_str(), self.inner.call_timeout).await
    }

    /// Whether the service carries the ownership label; one that is gone is `Ok(false)`.
    async fn check_owned(
        &self,
        operation: &'static str,
        id: &InstanceId,
    ) -> Result<bool, RuntimeError> {
        match self.inspect_service(id).await {
            Ok(service) if owned(&service) => Ok(true),
            Ok(_) => Err(RuntimeError::Operation {
                operation,
                instance: id.clone(),
                source: format!(
                    "the service has no `{}` label: Cortex did not create it and leaves it alone",
                    labels::MANAGED_BY
                )
                .into(),
            }),
            Err(RuntimeError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates one Swarm secret per secret of `plan`, labelled as `service`'s; returns their ids
    /// by variable. On failure, those made are removed.
    async fn create_secrets(
        &self,
        plan: &LaunchPlan,
        service: &str,
    ) -> Result<HashMap<String, String>, String> {
        let mut made = HashMap::new();
        for (var, value) in &plan.secrets {
            let spec = SecretSpec {
                name: Some(secret_name(service, var)),
                labels: Some(HashMap::from([
                    (
                        labels::MANAGED_BY.to_owned(),
                        labels::MANAGED_BY_VALUE.to_owned(),
                    ),
                    (SECRET_OF.to_owned(), service.to_owned()),
                ])),
                data: Some(base64::engine::general_purpose::STANDARD.encode(value.expose())),
                ..SecretSpec::default()
            };
            match self
                .call("create secret", self.inner.docker.create_secret(spec))
                .await
            {
                Ok(created) => {
                    made.insert(var.clone(), created.id);
                }
                Err(e) => {
                    self.remove_secrets(service).await;
                    return Err(if status(&e) == Some(409) {
                        format!(
                            "a Swarm secret named {} already exists: remove it with `docker \
                             secret rm`, or let Cortex reconcile at startup",
                            secret_name(service, var)
                        )
                    } else {
                        format!(
                            "could not create the secret for {var}: {}",
                            call_message(&e)
                        )
                    });
                }
            }
        }
        Ok(made)
    }

    /// Removes the secrets labelled as `service`'s (best effort: logged).
    async fn remove_secrets(&self, service: &str) {
        let filter = format!("{SECRET_OF}={service}");
        let options = ListSecretsOptionsBuilder::new()
            .filters(&HashMap::from([("label", vec![filter.as_str()])]))
            .build();
        let Ok(secrets) = self
            .call(
                "list secrets",
                self.inner.docker.list_secrets(Some(options)),
            )
            .await
        else {
            return;
        };
        for id in secrets.into_iter().filter_map(|s| s.id) {
            if let Err(e) = self
                .call("remove secret", self.inner.docker.delete_secret(&id))
                .await
            {
                if status(&e) != Some(404) {
                    tracing::warn!(secret = %id, error = %e, "could not remove a Swarm secret");
                }
            }
        }
    }

    /// Removes a service and its secrets; one already gone is fine.
    async fn remove(&self, id: &InstanceId, name: Option<&str>) -> Result<(), RuntimeError> {
        match self
            .call(
                "remove service",
                self.inner.docker.delete_service(id.as_str()),
            )
            .await
        {
            Ok(()) => {}
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(operation_error("remove", id, e)),
        }
        if let Some(name) = name {
            // A task's container holds its secrets until it is gone: wait for that first.
            for _ in 0..50 {
                match self.tasks(id).await {
                    Ok(tasks) if tasks.iter().all(|t| !holds_container(t)) => break,
                    Err(_) => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            self.remove_secrets(name).await;
        }
        Ok(())
    }

    /// Waits until the service's newest task runs: its endpoint, or why it could not run.
    async fn running(&self, id: &InstanceId, port: u16) -> Result<Option<String>, String> {
        let deadline = tokio::time::Instant::now() + self.inner.start_timeout;
        let mut last = String::from("no task yet");
        loop {
            match self.tasks(id).await {
                Ok(tasks) => {
                    if let Some(task) = tasks.first() {
                        let state = task.status.as_ref().and_then(|s| s.state);
                        match state {
                            Some(TaskState::RUNNING) => {
                                return Ok(self.endpoint(task, port).await);
                            }
                            // It ran and ended already: the supervisor reads the exit.
                            Some(TaskState::COMPLETE | TaskState::FAILED)
                                if started_container(task) =>
                            {
                                return Ok(None);
                            }
                            Some(s) if is_terminal(s) => return Err(task_reason(task)),
                            _ => last = task_reason(task),
                        }
                    }
                }
                Err(e) => last = call_message(&e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "its task was not running after {:?}: {last}",
                    self.inner.start_timeout
                ));
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }

    /// `http://NODE:PORT` of a running task.
    async fn endpoint(&self, task: &Task, port: u16) -> Option<String> {
        let published = published_port(task, port)?;
        let host = if let Some(address) = &self.inner.node_address {
            address.clone()
        } else {
            let node = task.node_id.as_deref()?;
            self.call("inspect node", self.inner.docker.inspect_node(node))
                .await
                .ok()
                .and_then(|n| n.status?.addr)
                .filter(|a| !a.is_empty() && a != "0.0.0.0")
                .unwrap_or_else(|| "127.0.0.1".to_owned())
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Some(format!("http://{host}:{published}"))
    }

    /// The follower of `id`, started now for a service an earlier manager created.
    async fn tracked(&self, id: &InstanceId) -> Result<Arc<Tracked>, RuntimeError> {
        if let Some(t) = self.lock().get(id) {
            return Ok(t.clone());
        }
        let service = self.inspect_service(id).await?;
        if !owned(&service) {
            return Err(RuntimeError::NotFound {
                instance: id.clone(),
            });
        }
        Ok(self.track(id))
    }

    /// Starts following `id`'s output and its task's end.
    fn track(&self, id: &InstanceId) -> Arc<Tracked> {
        if let Some(t) = self.lock().get(id) {
            return t.clone();
        }
        let logs = Arc::new(LogRing::new(self.inner.log_lines));
        let (exit_tx, exit) = watch::channel(None);
        let tasks = tokio::spawn(watch_task(
            self.inner.docker.clone(),
            id.clone(),
            self.inner.call_timeout,
            exit_tx,
        ))
        .abort_handle();
        let follower = tokio::spawn(follow_service(
            self.inner.docker.clone(),
            id.clone(),
            logs.clone(),
            exit.clone(),
        ))
        .abort_handle();
        let tracked = Arc::new(Tracked {
            logs,
            exit,
            tasks,
            follower,
        });
        self.lock().entry(id.clone()).or_insert(tracked).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, Arc<Tracked>>> {
        self.inner
            .tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The tasks of service `id`, newest first.
async fn tasks_of(docker: &Docker, id: &str, limit: Duration) -> Result<Vec<Task>, CallError> {
    let options = ListTasksOptionsBuilder::new()
        .filters(&HashMap::from([("service", vec![id])]))
        .build();
    let mut tasks = within("list tasks", limit, docker.list_tasks(Some(options))).await?;
    // Listing by service id also matches services whose id starts with it: keep this one's.
    tasks.retain(|t| t.service_id.as_deref() == Some(id));
    tasks.sort_by_key(|t| std::cmp::Reverse(t.version.as_ref().and_then(|v| v.index).unwrap_or(0)));
    Ok(tasks)
}

/// Records the exit of service `id`'s task once it ends (or the service is removed by someone
/// else).
async fn watch_task(
    docker: Docker,
    id: InstanceId,
    limit: Duration,
    exit_tx: watch::Sender<Option<Exit>>,
) {
    let mut seen_task = false;
    loop {
        match tasks_of(&docker, id.as_str(), limit).await {
            Ok(tasks) => {
                if let Some(task) = tasks.first() {
                    seen_task = true;
                    let state = task.status.as_ref().and_then(|s| s.state);
                    if state.is_some_and(is_terminal) {
                        let _ = exit_tx.send(Some(task_exit(task)));
                        return;
                    }
                } else if seen_task {
                    // The service and its tasks are gone.
                    let _ = exit_tx.send(Some(Exit::unknown()));
                    return;
                }
            }
            Err(e) if status(&e) == Some(404) => {
                let _ = exit_tx.send(Some(Exit::unknown()));
                return;
            }
            Err(_) => {}
        }
        tokio::time::sleep(TASK_POLL).await;
    }
}

/// Follows service `id`'s output into `logs` until its task ended (then closes it, so live
/// streams end with the instance) or the service is gone.
async fn follow_service(
    docker: Docker,
    id: InstanceId,
    logs: Arc<LogRing>,
    mut exit: watch::Receiver<Option<Exit>>,
) {
    let mut last: Option<String> = None;
    // A service's log stream can end while its task still starts (no container yet): follow
    // again, skipping the lines already read by their timestamps.
    'follow: loop {
        let seen = last.clone();
        let mut stream = docker.service_logs(id.as_str(), Some(follow_options(logs.capacity())));
        let mut framer = Framer::default();
        let keep = |line: (String, LogLine), last: &mut Option<String>| {
            if seen.as_ref().is_none_or(|s| line.0 > *s) {
                push(&logs, line, last);
            }
        };
        let mut ended = false;
        let mut gone = false;
        loop {
            let item = if ended {
                // The task ended: what it wrote last, for a moment more.
                tokio::time::timeout(Duration::from_millis(500), stream.next())
                    .await
                    .ok()
                    .flatten()
            } else {
                tokio::select! {
                    item = stream.next() => item,
                    _ = exit.wait_for(Option::is_some) => {
                        ended = true;
                        continue;
                    }
                }
            };
            match item {
                Some(Ok(output)) => framer.feed(output, |line| keep(line, &mut last)),
                Some(Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                })) => {
                    gone = true;
                    break;
                }
                Some(Err(_)) | None => break,
            }
        }
        framer.finish(|line| keep(line, &mut last));
        if ended || gone || exit.borrow().is_some() {
            break 'follow;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    logs.close();
}

fn owned(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.labels.as_ref())
        .is_some_and(|l| l.contains_key(labels::MANAGED_BY))
}

fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::COMPLETE
            | TaskState::SHUTDOWN
            | TaskState::FAILED
            | TaskState::REJECTED
            | TaskState::REMOVE
            | TaskState::ORPHANED
    )
}

/// Whether the task's container was started (it ran, however briefly).
fn started_container(task: &Task) -> bool {
    task.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.as_ref())
        .is_some_and(|c| !c.is_empty())
        && task
            .status
            .as_ref()
            .and_then(|s| s.err.as_deref())
            .is_none_or(|e| !e.starts_with("starting container failed"))
}

/// Whether the task may still have a container on its node (it has not ended).
fn holds_container(task: &Task) -> bool {
    !task
        .status
        .as_ref()
        .and_then(|s| s.state)
        .is_some_and(is_terminal)
}

fn task_exit(task: &Task) -> Exit {
    task.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.exit_code)
        .and_then(|c| i32::try_from(c).ok())
        .map_or_else(Exit::unknown, Exit::code)
}

/// The swarm's word on a task: its state, message and error.
fn task_reason(task: &Task) -> String {
    let Some(status) = &task.status else {
        return "the task has no status".to_owned();
    };
    let state = status
        .state
        .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
    match (&status.err, &status.message) {
        (Some(err), _) if !err.is_empty() => format!("task {state}: {err}"),
        (_, Some(message)) if !message.is_empty() => format!("task {state}: {message}"),
        _ => format!("task {state}"),
    }
}

/// The node port Docker published for the task's `port`.
fn published_port(task: &Task, port: u16) -> Option<u16> {
    task.status
        .as_ref()?
        .port_status
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.target_port == Some(i64::from(port)))
        .and_then(|p| p.published_port)
        .and_then(|p| u16::try_from(p).ok())
}

impl fmt::Debug for SwarmRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmRuntime")
            .field("host", &self.inner.host)
            .field("call_timeout", &self.inner.call_timeout)
            .field("start_timeout", &self.inner.start_timeout)
            .field("placement", &self.inner.placement)
            .field("per_model", &self.inner.per_model)
            .field("node_address", &self.inner.node_address)
            .field("followed", &self.lock().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Runtime for SwarmRuntime {
    fn target(&self) -> TargetKind {
        TargetKind::Container
    }

    async fn start(&self, plan: &LaunchPlan) -> Result<Instance, RuntimeError> {
        let start_error = |source: BoxError| RuntimeError::Start {
            model: plan.model.clone(),
            replica: plan.replica,
            source,
        };
        let Target::Container { image, name } = &plan.target else {
            return Err(start_error(
                "the Swarm runtime starts container targets only; this plan is for a process"
                    .into(),
            ));
        };
        let image_entrypoint = if super::spec::needs_exporter(plan) {
            self.call(
                "inspect image",
                self.inner.docker.inspect_image(image.as_str()),
            )
            .await
            .ok()
            .and_then(|i| i.config?.entrypoint)
        } else {
            None
        };
        let placement = self
            .inner
            .per_model
            .get(&plan.model)
            .unwrap_or(&self.inner.placement);
        // Checked before anything is created.
        let placeholders: HashMap<String, String> = plan
            .secrets
            .keys()
            .map(|k| (k.clone(), String::new()))
            .collect();
        service_spec(plan, placement, &placeholders, image_entrypoint.as_deref())
            .map_err(|e| start_error(e.into()))?;
        let secrets = self
            .create_secrets(plan, name)
            .await
            .map_err(|e| start_error(e.into()))?;
        let (_, spec) = service_spec(plan, placement, &secrets, image_entrypoint.as_deref())
            .map_err(|e| start_error(e.into()))?;
        let created = self
            .call(
                "create service",
                self.inner.docker.create_service(spec, None),
            )
            .await;
        let id = match created {
            Ok(created) => InstanceId::new(created.id.unwrap_or_default()),
            Err(e) => {
                self.remove_secrets(name).await;
                return Err(start_error(match status(&e) {
                    Some(409) => format!(
                        "a service named {name} already exists ({}); remove it with `docker \
                         service rm {name}`, or let Cortex reconcile it at startup",
                        call_message(&e)
                    )
                    .into(),
                    Some(503) => format!(
                        "this Docker Engine is not a swarm manager: {}",
                        call_message(&e)
                    )
                    .into(),
                    _ => format!(
                        "Docker refused to create service {name}: {}",
                        call_message(&e)
                    )
                    .into(),
                }));
            }
        };
        self.track(&id);
        let url = match self.running(&id, plan.port).await {
            Ok(url) => url,
            Err(why) => {
                self.lock().remove(&id);
                if let Err(e) = self.remove(&id, Some(name)).await {
                    tracing::error!(instance = %id, error = %cortex_core::error_chain(&e), "could not remove a service that failed to start");
                }
                let hint = if why.contains("No such image") {
                    format!(
                        "; image {image} must be on every node that may run it (Cortex never \
                         pulls; llama-server's: scripts/build-llama-image)"
                    )
                } else {
                    String::new()
                };
                return Err(start_error(
                    format!("service {name} could not run: {why}{hint}").into(),
                ));
            }
        };
        // It ended before its port could be read: the instance is still returned, so the
        // supervisor sees the exit and reads the log tail.
        let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{}", plan.port));
        let base_url = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| start_error(e.into()))?;
        tracing::info!(instance = %id, service = %name, model = %plan.model, replica = plan.replica, %base_url, "service started");
        Ok(Instance::new(id, base_url))
    }

    async fn wait(&self, id: &InstanceId) -> Result<Exit, RuntimeError> {
        crate::runtime::wait_exit(self.tracked(id).await?.exit.clone(), id).await
    }

    async fn inspect(&self, id: &InstanceId) -> Result<InstanceState, RuntimeError> {
        self.inspect_service(id).await?;
        let tasks = self
            .tasks(id)
            .await
            .map_err(|e| operation_error("inspect", id, e))?;
        Ok(tasks.first().map_or(InstanceState::Created, task_state))
    }

    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<Vec<LogLine>, RuntimeError> {
        Ok(self.tracked(id).await?.logs.tail(tail))
    }

    async fn follow(&self, id: &InstanceId) -> Result<LogStream, RuntimeError> {
        Ok(self.tracked(id).await?.logs.follow())
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        if !self.check_owned("stop", id).await? {
            self.lock().remove(id);
            return Ok(());
        }
        let service = self.inspect_service(id).await?;
        let name = service.spec.as_ref().and_then(|s| s.name.clone());
        // Scaled to zero: the task gets its stop signal, and SIGKILL after its grace period.
        if let (Some(mut spec), Some(version)) =
            (service.spec, service.version.and_then(|v| v.index))
        {
            if let Some(mode) = spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
                mode.replicas = Some(0);
            }
            let options = UpdateServiceOptionsBuilder::new()
                .version(i32::try_from(version).unwrap_or(i32::MAX))
                .build();
            match self
                .call(
                    "scale service",
                    self.inner
                        .docker
                        .update_service(id.as_str(), spec, options, None),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if status(&e) == Some(404) => {
                    self.lock().remove(id);
                    return Ok(());
                }
                Err(e) => return Err(operation_error("stop", id, e)),
            }
            let deadline = tokio::time::Instant::now() + grace + self.inner.call_timeout;
            loop {
                match self.tasks(id).await {
                    Ok(tasks)
                        if tasks.iter().all(|t| {
                            t.status
                                .as_ref()
                                .and_then(|s| s.state)
                                .is_none_or(is_terminal)
                        }) =>
                    {
                        break;
                    }
                    Err(e) if status(&e) == Some(404) => break,
                    _ if tokio::time::Instant::now() >= deadline => {
                        tracing::warn!(instance = %id, "its task had not ended {grace:?} after the stop; removing the service");
                        break;
                    }
                    _ => tokio::time::sleep(TASK_POLL).await,
                }
            }
        }
        // Let the watcher record the exit for anyone waiting, then let it go.
        let tracked = self.lock().get(id).cloned();
        if let Some(t) = tracked {
            let mut exit = t.exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), exit.wait_for(Option::is_some)).await;
        }
        self.remove(id, name.as_deref()).await?;
        self.lock().remove(id);
        tracing::info!(instance = %id, "service stopped and removed");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let options = ListServicesOptionsBuilder::new()
            .filters(&HashMap::from([("label", vec![labels::MANAGED_BY])]))
            .build();
        let services = self
            .call(
                "list services",
                self.inner.docker.list_services(Some(options)),
            )
            .await
            .map_err(|e| RuntimeError::Unavailable {
                context: format!("cannot list services at {}", self.inner.host),
                source: Box::new(e),
            })?;
        let mut out = Vec::with_capacity(services.len());
        for service in services {
            let Some(id) = service.id.clone().map(InstanceId::new) else {
                continue;
            };
            let labels: BTreeMap<String, String> = service
                .spec
                .as_ref()
                .and_then(|s| s.labels.clone())
                .unwrap_or_default()
                .into_iter()
                .collect();
            let tasks = self.tasks(&id).await.unwrap_or_default();
            let state = tasks.first().map_or(InstanceState::Created, task_state);
            let mut info = InstanceInfo::new(id, labels, state);
            if let (InstanceState::Running, Some(task), Some(port)) =
                (state, tasks.first(), target_port(&service))
            {
                if let Some(url) = self.endpoint(task, port).await {
                    if let Ok(url) = url.parse() {
                        info = info.with_base_url(url);
                    }
                }
            }
            out.push(info);
        }
        Ok(out)
    }
}

/// The engine's port inside the container, from the service's published ports.
fn target_port(service: &Service) -> Option<u16> {
    service
        .spec
        .as_ref()?
        .endpoint_spec
        .as_ref()?
        .ports
        .as_ref()?
        .first()?
        .target_port
        .and_then(|p| u16::try_from(p).ok())
}

fn task_state(task: &Task) -> InstanceState {
    match task.status.as_ref().and_then(|s| s.state) {
        Some(TaskState::RUNNING) => InstanceState::Running,
        Some(s) if is_terminal(s) => InstanceState::Exited(task_exit(task)),
        _ => InstanceState::Created,
    }
}
