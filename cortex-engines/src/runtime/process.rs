//! [`ProcessRuntime`]: plans run as local child processes.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cortex_core::{
    Exit, Instance, InstanceId, InstanceInfo, InstanceState, LaunchPlan, LogLine, LogSource,
    LogStream, Runtime, RuntimeError, Target, TargetKind,
};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{broadcast, watch};

/// Runs [`LaunchPlan`]s with a [`Target::Process`] as child processes of this one.
///
/// - Each child leads its own process group, so a stop reaches everything it started: `SIGTERM` to
///   the group, then `SIGKILL` after the plan's grace period.
/// - An exit is seen when the leader exits, not when its output pipes close (a child it left in the
///   background, such as vLLM's `EngineCore`, may hold them open): the leader is waited for without
///   being reaped (`waitid` with `WNOWAIT`), what is left of its group is killed while the leader's
///   zombie still holds the group's id, and only then is it reaped. So the group is never signalled
///   after its leader was reaped, when its id could belong to someone else. An exit status that is
///   neither a code nor a signal is reported as unknown.
/// - Standard output and error are read line by line into a bounded ring buffer (the last
///   [`log_lines`](ProcessRuntimeBuilder::log_lines) lines, 1,000 by default) and a live stream.
///   After an exit the lines stay available until the instance is stopped.
/// - Children never outlive the runtime: dropping it kills every process group it started.
///
/// ```no_run
/// # async fn run(plan: cortex_core::LaunchPlan) -> Result<(), cortex_core::RuntimeError> {
/// use cortex_core::Runtime;
/// use cortex_engines::ProcessRuntime;
///
/// let runtime = ProcessRuntime::new();
/// let instance = runtime.start(&plan).await?;
/// let tail = runtime.logs(&instance.id, 20).await?;
/// runtime.stop(&instance.id, plan.stop_grace).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    children: Mutex<HashMap<InstanceId, Arc<Child>>>,
    next: AtomicU64,
    log_lines: usize,
}

struct Child {
    pgid: Pid,
    /// Whether the leader was reaped; the group is signalled only while it was not (checked and
    /// set under this lock).
    reaped: Mutex<bool>,
    labels: std::collections::BTreeMap<String, String>,
    logs: Mutex<VecDeque<LogLine>>,
    /// Dropped when the process exits, which ends every follower's stream.
    live: Mutex<Option<broadcast::Sender<LogLine>>>,
    exit: watch::Receiver<Option<Exit>>,
}

/// Builds a [`ProcessRuntime`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ProcessRuntimeBuilder {
    log_lines: usize,
}

// === impl ProcessRuntimeBuilder ===

impl ProcessRuntimeBuilder {
    /// How many recent log lines each instance keeps (default 1,000).
    pub fn log_lines(mut self, n: usize) -> Self {
        self.log_lines = n.max(1);
        self
    }

    /// Builds the runtime.
    pub fn build(self) -> ProcessRuntime {
        ProcessRuntime {
            inner: Arc::new(Inner {
                children: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
                log_lines: self.log_lines,
            }),
        }
    }
}

// === impl ProcessRuntime ===

impl ProcessRuntime {
    /// A runtime keeping the last 1,000 log lines of each instance.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder.
    pub fn builder() -> ProcessRuntimeBuilder {
        ProcessRuntimeBuilder { log_lines: 1000 }
    }

    fn child(&self, id: &InstanceId) -> Result<Arc<Child>, RuntimeError> {
        self.inner
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound {
                instance: id.clone(),
            })
    }
}

impl Default for ProcessRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let children = self
            .inner
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("ProcessRuntime")
            .field("instances", &children.keys().collect::<Vec<_>>())
            .field("log_lines", &self.inner.log_lines)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let children = self
            .children
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for child in children.values() {
            // Nothing started here outlives the runtime.
            let _ = child.signal(Signal::SIGKILL);
        }
    }
}

impl Runtime for ProcessRuntime {
    fn target(&self) -> TargetKind {
        TargetKind::Process
    }

    async fn start(&self, plan: &LaunchPlan) -> Result<Instance, RuntimeError> {
        let start_error = |source: cortex_core::BoxError| RuntimeError::Start {
            model: plan.model.clone(),
            replica: plan.replica,
            source,
        };
        let Target::Process { program } = &plan.target else {
            return Err(start_error(
                "the process runtime starts process targets only; this plan is for a container"
                    .into(),
            ));
        };
        let mut child = Command::new(program)
            .args(&plan.args)
            .envs(&plan.env)
            .envs(plan.secrets.iter().map(|(k, v)| (k, v.expose())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| start_error(format!("cannot run {}: {e}", program.display()).into()))?;
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| start_error("the child exited before it could be tracked".into()))?;
        let id = InstanceId::new(format!(
            "proc-{}-{pid}",
            self.inner.next.fetch_add(1, Ordering::Relaxed)
        ));
        let base_url = format!("http://127.0.0.1:{}", plan.port)
            .parse()
            .map_err(|e: http::uri::InvalidUri| start_error(e.into()))?;

        let (live, _) = broadcast::channel(1024);
        let (exit_tx, exit) = watch::channel(None);
        let record = Arc::new(Child {
            pgid: Pid::from_raw(pid),
            reaped: Mutex::new(false),
            labels: plan.labels.clone(),
            logs: Mutex::new(VecDeque::new()),
            live: Mutex::new(Some(live.clone())),
            exit,
        });
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let capacity = self.inner.log_lines;
        let pumped = record.clone();
        tokio::spawn(async move {
            let out = pump(stdout, LogSource::Stdout, &pumped, &live, capacity);
            let err = pump(stderr, LogSource::Stderr, &pumped, &live, capacity);
            tokio::join!(out, err);
            drop(live);
            *pumped.live.lock().unwrap_or_else(PoisonError::into_inner) = None;
        });
        let watcher = record.clone();
        tokio::spawn(async move {
            let leader = Pid::from_raw(pid);
            // Blocks until the leader exits, leaving it a zombie (not reaped).
            let waited = tokio::task::spawn_blocking(move || {
                waitid(Id::Pid(leader), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
            })
            .await;
            if let Ok(Err(e)) = &waited {
                tracing::warn!(pid, error = %e, "waiting for the engine failed; reaping it");
            }
            let status = {
                let mut reaped = watcher
                    .reaped
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                // The leader's zombie keeps the group's id ours: whatever it left behind goes.
                let _ = killpg(watcher.pgid, Signal::SIGKILL);
                let status = child.try_wait();
                *reaped = true;
                status
            };
            let status = match status {
                Ok(Some(status)) => Some(status),
                // Not reapable at once (only if waitid failed): wait for it.
                _ => child.wait().await.ok(),
            };
            let _ = exit_tx.send(Some(status.map_or_else(Exit::unknown, exit_of)));
        });
        self.inner
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), record);
        tracing::info!(instance = %id, pid, program = %program.display(), "started");
        Ok(Instance::new(id, base_url))
    }

    async fn wait(&self, id: &InstanceId) -> Result<Exit, RuntimeError> {
        super::wait_exit(self.child(id)?.exit.clone(), id).await
    }

    async fn inspect(&self, id: &InstanceId) -> Result<InstanceState, RuntimeError> {
        let child = self.child(id)?;
        let state = *child.exit.borrow();
        Ok(match state {
            Some(exit) => InstanceState::Exited(exit),
            None => InstanceState::Running,
        })
    }

    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<Vec<LogLine>, RuntimeError> {
        let child = self.child(id)?;
        let logs = child.logs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(super::tail(&logs, tail))
    }

    async fn follow(&self, id: &InstanceId) -> Result<LogStream, RuntimeError> {
        let rx = self
            .child(id)?
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(broadcast::Sender::subscribe);
        Ok(super::live_stream(rx))
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        let Ok(child) = self.child(id) else {
            // Already stopped and removed.
            return Ok(());
        };
        let mut exit = child.exit.clone();
        if exit.borrow().is_none() {
            let _ = child.signal(Signal::SIGTERM);
            let polite = tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await;
            if polite.is_err() {
                tracing::warn!(instance = %id, grace = ?grace, "did not exit after SIGTERM; killing");
            }
        }
        // The whole group goes now (once the leader exits, the watcher kills what is left).
        match child.signal(Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(RuntimeError::Operation {
                    operation: "stop",
                    instance: id.clone(),
                    source: e.into(),
                });
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            return Err(RuntimeError::Operation {
                operation: "stop",
                instance: id.clone(),
                source: "the process did not exit 10 s after SIGKILL".into(),
            });
        }
        self.inner
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let children = self
            .inner
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(children
            .iter()
            .map(|(id, c)| {
                let state = match *c.exit.borrow() {
                    Some(exit) => InstanceState::Exited(exit),
                    None => InstanceState::Running,
                };
                InstanceInfo::new(id.clone(), c.labels.clone(), state)
            })
            .collect())
    }
}

impl Child {
    /// Signals the process group, unless its leader was reaped (its id may be reused then).
    fn signal(&self, signal: Signal) -> nix::Result<()> {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if *reaped {
            return Ok(());
        }
        killpg(self.pgid, signal)
    }
}

/// How a process ended: its code, else the signal that ended it, else unknown.
fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::code(code),
        (None, Some(signal)) => Exit::signal(signal),
        (None, None) => Exit::unknown(),
    }
}

/// Reads `stream` line by line (lossy UTF-8) into the child's ring buffer and live stream.
async fn pump(
    stream: Option<impl AsyncRead + Unpin>,
    source: LogSource,
    child: &Child,
    live: &broadcast::Sender<LogLine>,
    capacity: usize,
) {
    let Some(stream) = stream else { return };
    let mut lines = BufReader::new(stream).split(b'\n');
    while let Ok(Some(bytes)) = lines.next_segment().await {
        let text =
            String::from_utf8_lossy(bytes.strip_suffix(b"\r").unwrap_or(&bytes)).into_owned();
        let entry = LogLine::new(source, text);
        {
            let mut logs = child.logs.lock().unwrap_or_else(PoisonError::into_inner);
            if logs.len() == capacity {
                logs.pop_front();
            }
            logs.push_back(entry.clone());
        }
        let _ = live.send(entry);
    }
}
