//! [`DockerRuntime`]: plans run as containers on a Docker Engine, through bollard.

mod connect;
mod error;
mod follow;
mod spec;
mod swarm;
mod swarm_spec;

pub use connect::DockerRuntimeBuilder;
pub use swarm::{Placement, SwarmRuntime, SwarmRuntimeBuilder};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummaryStateEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use cortex_core::plan::labels;
use cortex_core::{
    BoxError, Exit, Instance, InstanceId, InstanceInfo, InstanceState, LaunchPlan, LogLine,
    LogStream, Runtime, RuntimeError, Target, TargetKind,
};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use self::error::{CallError, call_message, message, operation_error, status};
use self::follow::{Framer, follow_container, push};
use crate::runtime::logs::LogRing;

/// The Docker API version Cortex needs at least: Docker Engine 20.10.
const MIN_API: (usize, usize) = (1, 41);

/// Runs [`LaunchPlan`]s with a [`Target::Container`](cortex_core::Target::Container) as containers on a Docker Engine.
///
/// - **Containers as the engines' documents run them**: the plan's name, image and arguments;
///   models bind-mounted (read-only where planned); shared memory, IPC host and GPUs (a device
///   request for the `nvidia` driver) as planned; restart policy `no`, since the
///   [`Supervisor`](cortex_core::Supervisor) decides restarts; the plan's labels, which mark
///   ownership; the engine's port published on 127.0.0.1 (see
///   [`publish_ip`](DockerRuntimeBuilder::publish_ip)) with an ephemeral host port read back after
///   start; a health check from the plan's [`command`](cortex_core::HealthSpec::command) whose
///   start period is the startup timeout (with none, the image's own check is disabled).
/// - **Every call has its own timeout** ([`call_timeout`](DockerRuntimeBuilder::call_timeout),
///   30 s by default); a stop gets the plan's grace period on top, so a long grace is never cut by
///   a client-wide limit. Starting a started container and stopping a stopped one succeed.
/// - **Logs**: each container's output is followed into a ring buffer of the last
///   [`log_lines`](DockerRuntimeBuilder::log_lines) lines and a live stream, the same as the
///   [`ProcessRuntime`](crate::ProcessRuntime); after an exit the tail stays readable until
///   [`stop`](Runtime::stop) removes the container. A container killed for lack of memory gets a
///   last line saying so.
/// - **Instances are containers**: the instance id is the container id, and every method also
///   works on containers an earlier manager started (what [`list`](Runtime::list) finds by the
///   ownership label), which is what
///   [`Supervisor::reconcile`](cortex_core::Supervisor::reconcile) adopts or removes.
///
/// Cortex never pulls: a missing image is an error naming it (build llama-server's with
/// `scripts/build-llama-image`). Dropping the runtime leaves containers running, by design: they
/// are adopted by the next manager, or stopped with [`Supervisor::shutdown`].
///
/// ```no_run
/// # async fn run(plan: cortex_core::LaunchPlan) -> Result<(), cortex_core::RuntimeError> {
/// use cortex_core::Runtime;
/// use cortex_engines::DockerRuntime;
///
/// let runtime = DockerRuntime::connect().await?;
/// let instance = runtime.start(&plan).await?; // plan.target is a Target::Container
/// println!("serving at {}", instance.base_url);
/// runtime.stop(&instance.id, plan.stop_grace).await?;
/// # Ok(()) }
/// ```
///
/// [`Supervisor::shutdown`]: cortex_core::Supervisor::shutdown
#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    host: String,
    publish_ip: IpAddr,
    call_timeout: Duration,
    log_lines: usize,
    tracked: Mutex<HashMap<InstanceId, Arc<Tracked>>>,
}

/// A container whose output is being followed.
struct Tracked {
    logs: Arc<LogRing>,
    exit: watch::Receiver<Option<Exit>>,
    follower: AbortHandle,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

// === impl DockerRuntime ===

impl DockerRuntime {
    /// Connects to the default Docker Engine with the default settings; see
    /// [`DockerRuntimeBuilder::connect`].
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] when the engine cannot be used.
    pub async fn connect() -> Result<Self, RuntimeError> {
        Self::builder().connect().await
    }

    /// A builder.
    pub fn builder() -> DockerRuntimeBuilder {
        DockerRuntimeBuilder::new()
    }

    /// Creates the container of `plan` without starting it, and returns its id: for looking at
    /// what [`start`](Runtime::start) would run (`docker inspect`), or starting it by other means.
    /// The caller removes it ([`stop`](Runtime::stop) does).
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Start`] as for [`start`](Runtime::start).
    pub async fn create(&self, plan: &LaunchPlan) -> Result<InstanceId, RuntimeError> {
        let start_error = |source: BoxError| RuntimeError::Start {
            model: plan.model.clone(),
            replica: plan.replica,
            source,
        };
        let image_entrypoint = match &plan.target {
            Target::Container { image, .. } if spec::needs_exporter(plan) => {
                self.image_entrypoint(image).await
            }
            _ => None,
        };
        let Some((name, body)) =
            spec::container_body(plan, self.inner.publish_ip, image_entrypoint.as_deref())
        else {
            return Err(start_error(
                "the Docker runtime starts container targets only; this plan is for a process"
                    .into(),
            ));
        };
        let image = body.image.clone().unwrap_or_default();
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .call(
                "create",
                self.inner.docker.create_container(Some(options), body),
            )
            .await
            .map_err(|e| {
                start_error(match status(&e) {
                    Some(404) if message(&e).contains("image") => format!(
                        "image {image} is not on this Docker Engine, and Cortex never pulls; build \
                         it (llama-server: scripts/build-llama-image) or `docker load` it"
                    )
                    .into(),
                    Some(409) => format!(
                        "a container named {name} already exists ({}); remove it with \
                         `docker rm -f {name}`, or let Cortex reconcile it at startup",
                        message(&e)
                    )
                    .into(),
                    _ => format!("Docker refused to create {name}: {}", call_message(&e)).into(),
                })
            })?;
        let id = InstanceId::new(created.id);
        if !plan.secrets.is_empty() {
            let options = UploadToContainerOptionsBuilder::new().path("/").build();
            let tar = Bytes::from(spec::secrets_tar(plan));
            let uploaded = self
                .call(
                    "upload",
                    self.inner.docker.upload_to_container(
                        id.as_str(),
                        Some(options),
                        bollard::body_full(tar),
                    ),
                )
                .await;
            if let Err(e) = uploaded {
                let _ = self.remove(&id).await;
                return Err(start_error(
                    format!(
                        "could not copy the plan's secrets into {name}: {}",
                        call_message(&e)
                    )
                    .into(),
                ));
            }
        }
        Ok(id)
    }

    /// The image's own entrypoint, which the secrets' entrypoint runs after exporting them.
    async fn image_entrypoint(&self, image: &str) -> Option<Vec<String>> {
        let inspected = self
            .call("inspect image", self.inner.docker.inspect_image(image))
            .await
            .ok()?;
        inspected.config?.entrypoint
    }

    /// Runs one Docker call under the call timeout.
    fn call<T>(
        &self,
        what: &'static str,
        f: impl Future<Output = Result<T, DockerError>>,
    ) -> impl Future<Output = Result<T, CallError>> {
        error::within(what, self.inner.call_timeout, f)
    }

    /// Refuses to touch a container that no Cortex manager started (it has no
    /// [`labels::MANAGED_BY`]); one that is gone already is fine (`Ok(false)`).
    async fn check_owned(
        &self,
        operation: &'static str,
        id: &InstanceId,
    ) -> Result<bool, RuntimeError> {
        match self.inspect_container(id).await {
            Ok(info) => {
                let owned = info
                    .config
                    .and_then(|c| c.labels)
                    .is_some_and(|l| l.contains_key(labels::MANAGED_BY));
                if owned {
                    Ok(true)
                } else {
                    Err(RuntimeError::Operation {
                        operation,
                        instance: id.clone(),
                        source: format!(
                            "the container has no `{}` label: Cortex did not start it and leaves it alone",
                            labels::MANAGED_BY
                        )
                        .into(),
                    })
                }
            }
            Err(RuntimeError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn inspect_container(
        &self,
        id: &InstanceId,
    ) -> Result<ContainerInspectResponse, RuntimeError> {
        self.call(
            "inspect",
            self.inner.docker.inspect_container(
                id.as_str(),
                None::<bollard::query_parameters::InspectContainerOptions>,
            ),
        )
        .await
        .map_err(|e| operation_error("inspect", id, e))
    }

    /// The follower of `id`, started now if this runtime did not start the container itself (an
    /// earlier manager did): the last lines Docker kept are loaded before this returns.
    async fn tracked(&self, id: &InstanceId) -> Result<Arc<Tracked>, RuntimeError> {
        if let Some(t) = self.lock().get(id) {
            return Ok(t.clone());
        }
        let info = self.inspect_container(id).await?;
        let ours = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .is_some_and(|l| l.contains_key(labels::MANAGED_BY));
        if !ours {
            return Err(RuntimeError::NotFound {
                instance: id.clone(),
            });
        }
        Ok(self.track(id).await)
    }

    /// Starts following `id`'s output and exit.
    async fn track(&self, id: &InstanceId) -> Arc<Tracked> {
        let logs = Arc::new(LogRing::new(self.inner.log_lines));
        // What Docker kept so far, then everything after it.
        let backlog = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&self.inner.log_lines.to_string())
            .build();
        let mut last = None;
        let mut lines = self.inner.docker.logs(id.as_str(), Some(backlog));
        let mut framer = Framer::default();
        let deadline = tokio::time::sleep(self.inner.call_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                item = lines.next() => match item {
                    Some(Ok(output)) => framer.feed(output, |l| push(&logs, l, &mut last)),
                    _ => break,
                },
                () = &mut deadline => break,
            }
        }
        framer.finish(|l| push(&logs, l, &mut last));

        let (exit_tx, exit) = watch::channel(None);
        let follower = tokio::spawn(follow_container(
            self.inner.docker.clone(),
            id.clone(),
            logs.clone(),
            last,
            exit_tx,
        ))
        .abort_handle();
        let tracked = Arc::new(Tracked {
            logs,
            exit,
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

    /// Removes a container (forcefully: it is stopped or never ran); one already gone is fine.
    async fn remove(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        if !self.check_owned("remove", id).await? {
            return Ok(());
        }
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self
            .call(
                "remove",
                self.inner
                    .docker
                    .remove_container(id.as_str(), Some(options)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            // "removal already in progress": someone else is removing it.
            Err(e) if status(&e) == Some(409) => {
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Err(RuntimeError::NotFound { .. }) = self.inspect_container(id).await {
                        return Ok(());
                    }
                }
                Err(operation_error("remove", id, e))
            }
            Err(e) => Err(operation_error("remove", id, e)),
        }
    }
}

impl fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("host", &self.inner.host)
            .field("publish_ip", &self.inner.publish_ip)
            .field("call_timeout", &self.inner.call_timeout)
            .field("log_lines", &self.inner.log_lines)
            .field("followed", &self.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Runtime for DockerRuntime {
    fn target(&self) -> TargetKind {
        TargetKind::Container
    }

    async fn start(&self, plan: &LaunchPlan) -> Result<Instance, RuntimeError> {
        let start_error = |source: BoxError| RuntimeError::Start {
            model: plan.model.clone(),
            replica: plan.replica,
            source,
        };
        let id = self.create(plan).await?;
        let started = self
            .call(
                "start",
                self.inner.docker.start_container(
                    id.as_str(),
                    None::<bollard::query_parameters::StartContainerOptions>,
                ),
            )
            .await;
        if let Err(e) = started {
            // Nothing is left behind.
            if let Err(removal) = self.remove(&id).await {
                tracing::error!(instance = %id, error = %cortex_core::error_chain(&removal), "could not remove a container that failed to start");
            }
            let text = call_message(&e);
            return Err(start_error(
                if text.contains("port is already allocated")
                    || text.contains("address already in use")
                {
                    format!("the host port for {}/tcp is taken: {text}", plan.port).into()
                } else if text.contains("could not select device driver") {
                    format!(
                        "GPUs were requested ({:?}) but this Docker Engine has no NVIDIA runtime \
                         (install the NVIDIA Container Toolkit), or set settings.gpus = \"none\": {text}",
                        plan.gpus
                    )
                    .into()
                } else {
                    format!("Docker could not start the container: {text}").into()
                },
            ));
        }
        // Follow from the first line on, so a crash right after start keeps its tail.
        self.track(&id).await;
        let info = self.inspect_container(&id).await;
        let port = info.as_ref().ok().and_then(|i| host_port(i, plan.port));
        let base_url = match port {
            Some(port) => format!("http://{}:{port}", url_host(self.inner.publish_ip)),
            // It exited before its port could be read (a crash at once): the instance is still
            // returned, so the supervisor sees the exit and reads the log tail, as for a process.
            None => format!("http://{}:{}", url_host(self.inner.publish_ip), plan.port),
        };
        let base_url = base_url
            .parse()
            .map_err(|e: http::uri::InvalidUri| start_error(e.into()))?;
        tracing::info!(instance = %id, model = %plan.model, replica = plan.replica, %base_url, "started");
        Ok(Instance::new(id, base_url))
    }

    async fn wait(&self, id: &InstanceId) -> Result<Exit, RuntimeError> {
        super::wait_exit(self.tracked(id).await?.exit.clone(), id).await
    }

    async fn inspect(&self, id: &InstanceId) -> Result<InstanceState, RuntimeError> {
        let info = self.inspect_container(id).await?;
        Ok(container_state(&info))
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
        let secs = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(secs).build();
        let stopped = error::within(
            "stop",
            grace + self.inner.call_timeout,
            self.inner.docker.stop_container(id.as_str(), Some(options)),
        )
        .await;
        match stopped {
            // 304 (already stopped) is a success to bollard.
            Ok(()) => {}
            Err(e) if status(&e) == Some(404) => {
                self.lock().remove(id);
                return Ok(());
            }
            Err(e) => return Err(operation_error("stop", id, e)),
        }
        // Let the follower record the exit for anyone waiting, then let it go.
        let tracked = self.lock().get(id).cloned();
        if let Some(t) = tracked {
            let mut exit = t.exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), exit.wait_for(Option::is_some)).await;
        }
        self.remove(id).await?;
        self.lock().remove(id);
        tracing::info!(instance = %id, "stopped and removed");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        // Every owner's: the supervisor keeps its own.
        let filter = labels::MANAGED_BY;
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&HashMap::from([("label", vec![filter])]))
            .build();
        let containers = self
            .call("list", self.inner.docker.list_containers(Some(options)))
            .await
            .map_err(|e| RuntimeError::Unavailable {
                context: format!("cannot list containers at {}", self.inner.host),
                source: Box::new(e),
            })?;
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            let Some(id) = c.id else { continue };
            let state = match c.state {
                Some(ContainerSummaryStateEnum::CREATED) => InstanceState::Created,
                Some(
                    ContainerSummaryStateEnum::RUNNING
                    | ContainerSummaryStateEnum::PAUSED
                    | ContainerSummaryStateEnum::RESTARTING,
                ) => InstanceState::Running,
                // Exited or dead: the code needs an inspect.
                _ => match self.inspect_container(&InstanceId::new(id.clone())).await {
                    Ok(info) => container_state(&info),
                    Err(_) => InstanceState::Exited(Exit::unknown()),
                },
            };
            let labels: BTreeMap<String, String> =
                c.labels.unwrap_or_default().into_iter().collect();
            let mut info = InstanceInfo::new(InstanceId::new(id), labels, state);
            let published = c
                .ports
                .unwrap_or_default()
                .into_iter()
                .find_map(|p| p.public_port);
            if let (InstanceState::Running, Some(port)) = (state, published) {
                if let Ok(url) =
                    format!("http://{}:{port}", url_host(self.inner.publish_ip)).parse()
                {
                    info = info.with_base_url(url);
                }
            }
            out.push(info);
        }
        Ok(out)
    }
}

/// The host port Docker published for the container's `port`.
fn host_port(info: &ContainerInspectResponse, port: u16) -> Option<u16> {
    info.network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&format!("{port}/tcp"))?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

fn container_state(info: &ContainerInspectResponse) -> InstanceState {
    let Some(state) = &info.state else {
        return InstanceState::Exited(Exit::unknown());
    };
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => InstanceState::Created,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
            InstanceState::Exited(
                state
                    .exit_code
                    .and_then(|c| i32::try_from(c).ok())
                    .map_or_else(Exit::unknown, Exit::code),
            )
        }
        _ => InstanceState::Running,
    }
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_owned(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use bollard::container::LogOutput;
    use cortex_core::LogSource;

    use self::connect::docker_host;

    #[test]
    fn docker_host_is_read_as_the_docker_cli_reads_it() {
        assert_eq!(docker_host(None), "unix:///var/run/docker.sock");
        assert_eq!(
            docker_host(Some(String::new())),
            "unix:///var/run/docker.sock"
        );
        assert_eq!(
            docker_host(Some("unix:///run/user/1000/docker.sock".into())),
            "unix:///run/user/1000/docker.sock"
        );
        assert_eq!(
            docker_host(Some("tcp://10.0.0.5:2375".into())),
            "tcp://10.0.0.5:2375"
        );
    }

    fn frames(chunks: &[(&str, bool)]) -> Vec<(String, LogSource, String)> {
        let mut framer = Framer::default();
        let mut out = Vec::new();
        for (chunk, err) in chunks {
            let message = bytes::Bytes::copy_from_slice(chunk.as_bytes());
            let output = if *err {
                LogOutput::StdErr { message }
            } else {
                LogOutput::StdOut { message }
            };
            framer.feed(output, |(s, l)| out.push((s, l.source, l.line)));
        }
        framer.finish(|(s, l)| out.push((s, l.source, l.line)));
        out
    }

    #[test]
    fn frames_become_lines_with_their_timestamps() {
        let t1 = "2026-11-21T22:07:33.000000001Z";
        let t2 = "2026-11-21T22:07:33.000000002Z";
        let got = frames(&[
            (&format!("{t1} main: loading model\r\n"), true),
            (&format!("{t2} half a "), false),
            ("line\n", false),
            (&format!("{t2} no newline at the end"), true),
        ]);
        assert_eq!(
            got,
            vec![
                (t1.into(), LogSource::Stderr, "main: loading model".into()),
                (t2.into(), LogSource::Stdout, "half a line".into()),
                (t2.into(), LogSource::Stderr, "no newline at the end".into()),
            ]
        );
        assert!(t1 < t2, "fixed-width stamps order as strings");
        assert_eq!(
            frames(&[("not stamped\n", false)]),
            vec![(String::new(), LogSource::Stdout, "not stamped".into())]
        );
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host(Ipv4Addr::LOCALHOST.into()), "127.0.0.1");
        assert_eq!(url_host(Ipv4Addr::UNSPECIFIED.into()), "127.0.0.1");
        assert_eq!(url_host("::1".parse().unwrap()), "[::1]");
    }
}
