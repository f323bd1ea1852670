//! [`ProcessRuntime`]: plans run as local child processes.

mod spawn;
mod state;

pub use state::StateDirError;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cortex_core::{
    Exit, Instance, InstanceId, InstanceInfo, InstanceState, LaunchPlan, LogLine, LogSource,
    LogStream, Runtime, RuntimeError, Target, TargetKind,
};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use super::logs::{Lines, LogRing, line};
use state::{Record, StateDir};

/// How often an engine this process did not start (found in the state directory) is checked for
/// life, and an engine's log files for new lines.
const POLL: Duration = Duration::from_millis(200);

/// A log file an engine that outlives its manager writes to is emptied past this size, once read.
const LOG_FILE_LIMIT: u64 = 64 << 20;

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
///
/// # When the manager dies
///
/// - By default an engine dies with the process that runs this runtime, however that process
///   ends: a clean shutdown stops it, dropping the runtime (a panic unwinding) kills its group, and
///   a crash or `SIGKILL` sends its leader `SIGKILL` through Linux's parent-death signal
///   (`PR_SET_PDEATHSIG`, armed for every engine from one thread that lives as long as the process;
///   see the `spawn` module). What the leader started itself (vLLM's engine core, workers and
///   resource tracker) is outside that signal's reach and lives on when the leader dies — seen
///   with the real vLLM 0.32.0 — so a watchdog process holds every engine's process group and
///   kills it the moment this process dies (it reads end-of-file on a pipe only this process
///   writes; see the `spawn` module). The state directory is the second line: what a watchdog
///   could not kill (one started with `setsid`, say) is found there by the next runtime.
/// - With a [`state_dir`](ProcessRuntimeBuilder::state_dir), each engine is recorded on disk (pid,
///   process group, start time, boot, labels, address) until it is stopped. The next runtime on
///   that directory [`list`](Runtime::list)s what the last one left, running or not, and can stop
///   it: the group's leftovers are found by their process group and start time, never by pid alone.
///   [`Supervisor::reconcile`](cortex_core::Supervisor::reconcile) adopts a healthy one whose plan is
///   unchanged and removes the rest.
/// - With [`outlive_manager`](ProcessRuntimeBuilder::outlive_manager) (and a state directory), no
///   parent-death signal is armed and an engine's output goes to files in the state directory
///   instead of pipes (a pipe with no reader would kill it at its next log line), so an engine
///   keeps serving through a crash of the manager and a restarted one adopts it without reloading
///   the model. Dropping the runtime then leaves the engines running.
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
    state: Option<StateDir>,
    outlive: bool,
    boot_id: String,
    /// Set once the records an earlier runtime left were read.
    leftovers: tokio::sync::OnceCell<()>,
}

struct Child {
    pid: i32,
    start_ticks: u64,
    base_url: http::Uri,
    /// Started by this runtime (a child, reaped here), or found in the state directory (polled).
    own: bool,
    /// Whether the leader is known gone (reaped, or seen dead); while it is not, the group's id is
    /// the engine's and the group is signalled as a whole (checked and set under this lock).
    gone: Mutex<bool>,
    labels: BTreeMap<String, String>,
    /// Closed when the process's output ends, which ends every follower's stream.
    logs: LogRing,
    exit: watch::Receiver<Option<Exit>>,
}

/// Builds a [`ProcessRuntime`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ProcessRuntimeBuilder {
    log_lines: usize,
    state_dir: Option<PathBuf>,
    outlive: bool,
}

// === impl ProcessRuntimeBuilder ===

impl ProcessRuntimeBuilder {
    /// How many recent log lines each instance keeps (default 1,000).
    pub fn log_lines(mut self, n: usize) -> Self {
        self.log_lines = n.max(1);
        self
    }

    /// Records every engine in `dir` (created with mode 0700 if missing) until it is stopped, and
    /// finds what an earlier runtime on the same directory left. One runtime holds a directory at a
    /// time (an exclusive lock on `dir/lock`).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Whether engines keep running when this process dies without stopping them (default
    /// `false`: they die with it). Needs a [`state_dir`](Self::state_dir).
    pub fn outlive_manager(mut self, outlive: bool) -> Self {
        self.outlive = outlive;
        self
    }

    /// Builds the runtime, locking its state directory.
    ///
    /// # Errors
    ///
    /// [`StateDirError`] when the state directory cannot be created or locked (another runtime
    /// holds it), or [`outlive_manager`](Self::outlive_manager) was asked for without one.
    pub fn build(self) -> Result<ProcessRuntime, StateDirError> {
        let state = self.state_dir.as_deref().map(StateDir::open).transpose()?;
        if self.outlive && state.is_none() {
            return Err(StateDirError::NoStateDir);
        }
        Ok(ProcessRuntime {
            inner: Arc::new(Inner {
                children: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
                log_lines: self.log_lines,
                state,
                outlive: self.outlive,
                boot_id: state::boot_id(),
                leftovers: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

// === impl ProcessRuntime ===

impl ProcessRuntime {
    /// A runtime keeping the last 1,000 log lines of each instance, with no state directory.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("no state directory, nothing can fail"))
    }

    /// A builder.
    pub fn builder() -> ProcessRuntimeBuilder {
        ProcessRuntimeBuilder {
            log_lines: 1000,
            state_dir: None,
            outlive: false,
        }
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

    fn insert(&self, id: InstanceId, child: Arc<Child>) {
        self.inner
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, child);
    }

    /// Takes in, once, what an earlier runtime on the state directory left: each recorded engine
    /// becomes an instance of this runtime, running (watched) or exited.
    async fn leftovers(&self) {
        self.inner
            .leftovers
            .get_or_init(|| async {
                let Some(state) = &self.inner.state else {
                    return;
                };
                let records = state.records();
                for record in records {
                    self.take_in(record);
                }
            })
            .await;
    }

    fn take_in(&self, record: Record) {
        let id = InstanceId::new(record.id.clone());
        // New ids never repeat a recorded one.
        if let Some(n) = record
            .id
            .strip_prefix("proc-")
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            self.inner.next.fetch_max(n + 1, Ordering::Relaxed);
        }
        let alive =
            record.boot_id == self.inner.boot_id && state::is_alive(record.pid, record.start_ticks);
        let Ok(base_url) = record.base_url.parse::<http::Uri>() else {
            tracing::warn!(instance = %id, base_url = %record.base_url, "a record with an invalid address is left in place");
            return;
        };
        let (exit_tx, exit) = watch::channel((!alive).then(Exit::unknown));
        let child = Arc::new(Child {
            pid: record.pid,
            start_ticks: record.start_ticks,
            base_url,
            own: false,
            gone: Mutex::new(!alive || record.boot_id != self.inner.boot_id),
            labels: record.labels,
            logs: LogRing::new(self.inner.log_lines),
            exit,
        });
        tracing::info!(instance = %id, pid = record.pid, alive, "found an engine an earlier manager started");
        if let Some(paths) = record.logs {
            tokio::spawn(tail_files(paths, child.clone()));
        } else {
            child.logs.close();
        }
        if alive {
            let watched = child.clone();
            tokio::spawn(async move {
                while state::is_alive(watched.pid, watched.start_ticks) {
                    tokio::time::sleep(POLL).await;
                }
                {
                    let mut gone = watched.gone.lock().unwrap_or_else(PoisonError::into_inner);
                    *gone = true;
                    watched.kill_leftovers(Signal::SIGKILL);
                }
                // Not this process's child: how it ended is not known here.
                let _ = exit_tx.send(Some(Exit::unknown()));
            });
        }
        self.insert(id, child);
    }

    /// Writes an engine's record, moving its log files (if any) to their names by instance;
    /// returns where its logs are. Without a state directory there is nothing to write.
    #[expect(
        clippy::too_many_arguments,
        reason = "one record's fields, in one place"
    )]
    fn record(
        &self,
        id: &InstanceId,
        pid: i32,
        start_ticks: u64,
        program: &Path,
        base_url: &http::Uri,
        plan: &LaunchPlan,
        files: Option<[PathBuf; 2]>,
    ) -> Result<Option<[PathBuf; 2]>, String> {
        let Some(state) = &self.inner.state else {
            return Ok(None);
        };
        let written = files
            .map(|from| {
                let to = state.log_paths(id.as_str());
                std::fs::rename(&from[0], &to[0])?;
                std::fs::rename(&from[1], &to[1])?;
                Ok::<_, std::io::Error>(to)
            })
            .transpose()
            .and_then(|logs| {
                state.write(&Record {
                    id: id.to_string(),
                    pid,
                    start_ticks,
                    boot_id: self.inner.boot_id.clone(),
                    program: program.to_owned(),
                    base_url: base_url.to_string(),
                    labels: plan.labels.clone(),
                    logs: logs.clone(),
                    started_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                })?;
                Ok(logs)
            });
        written.map_err(|e| {
            let _ = state.remove(id.as_str());
            format!("cannot record the engine in {}: {e}", state.path.display())
        })
    }

    /// Starts `plan`'s program: its output to pipes, or to files when it may outlive this process.
    async fn spawn(
        &self,
        plan: &LaunchPlan,
        program: &Path,
        n: u64,
    ) -> std::io::Result<(std::process::Child, Option<[PathBuf; 2]>)> {
        let mut command = std::process::Command::new(program);
        command
            .args(&plan.args)
            .envs(&plan.env)
            .envs(plan.secrets.iter().map(|(k, v)| (k, v.expose())))
            .stdin(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let files = if let (Some(state), true) = (&self.inner.state, self.inner.outlive) {
            let paths = state.log_paths(&format!("starting-{n}"));
            let open = |p: &Path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
            };
            command.stdout(open(&paths[0])?).stderr(open(&paths[1])?);
            Some(paths)
        } else {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        };
        let child = spawn::spawn(command, !self.inner.outlive).await?;
        if !self.inner.outlive {
            // What the engine starts dies with this process too, not only the engine.
            spawn::guard(i32::try_from(child.id()).unwrap_or(0));
        }
        Ok((child, files))
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
            .field("state_dir", &self.inner.state.as_ref().map(|s| &s.path))
            .field("outlive_manager", &self.inner.outlive)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.outlive {
            // They are meant to: the next runtime on the state directory finds them.
            return;
        }
        let children = self
            .children
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, child) in children.iter() {
            // Nothing started here outlives the runtime.
            let _ = child.signal(Signal::SIGKILL);
            spawn::release(child.pid);
            if let Some(state) = &self.state {
                let _ = state.remove(id.as_str());
            }
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
        self.leftovers().await;
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (mut child, files) = self
            .spawn(plan, program, n)
            .await
            .map_err(|e| start_error(format!("cannot run {}: {e}", program.display()).into()))?;
        let pid = i32::try_from(child.id())
            .map_err(|_| start_error("the child's pid is out of range".into()))?;
        let id = InstanceId::new(format!("proc-{n}-{pid}"));
        // The leader is at least a zombie until reaped below, so its start time is readable.
        let start_ticks = state::stat(pid).map_or(0, |s| s.start_ticks);
        let base_url: http::Uri = format!("http://127.0.0.1:{}", plan.port)
            .parse()
            .map_err(|e: http::uri::InvalidUri| start_error(e.into()))?;

        let (exit_tx, exit) = watch::channel(None);
        let record = Arc::new(Child {
            pid,
            start_ticks,
            base_url: base_url.clone(),
            own: true,
            gone: Mutex::new(false),
            labels: plan.labels.clone(),
            logs: LogRing::new(self.inner.log_lines),
            exit,
        });

        let logs = match self.record(&id, pid, start_ticks, program, &base_url, plan, files) {
            Ok(logs) => logs,
            Err(e) => {
                // Unrecorded, it could not be found again: it does not run.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = child.wait();
                spawn::release(pid);
                return Err(start_error(e.into()));
            }
        };

        if let Some(paths) = logs {
            tokio::spawn(tail_files(paths, record.clone()));
        } else {
            let stdout = child
                .stdout
                .take()
                .and_then(|o| tokio::process::ChildStdout::from_std(o).ok());
            let stderr = child
                .stderr
                .take()
                .and_then(|e| tokio::process::ChildStderr::from_std(e).ok());
            let pumped = record.clone();
            tokio::spawn(async move {
                let out = pump(stdout, LogSource::Stdout, &pumped);
                let err = pump(stderr, LogSource::Stderr, &pumped);
                tokio::join!(out, err);
                pumped.logs.close();
            });
        }
        tokio::spawn(watch_child(child, record.clone(), exit_tx));
        self.insert(id.clone(), record);
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
        Ok(self.child(id)?.logs.tail(tail))
    }

    async fn follow(&self, id: &InstanceId) -> Result<LogStream, RuntimeError> {
        Ok(self.child(id)?.logs.follow())
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        self.leftovers().await;
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
        // The whole group goes now (once the leader exits, its watcher kills what is left).
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
        if let Some(state) = &self.inner.state {
            state
                .remove(id.as_str())
                .map_err(|e| RuntimeError::Operation {
                    operation: "stop",
                    instance: id.clone(),
                    source: format!(
                        "it stopped, but its record in {} stays: {e}",
                        state.path.display()
                    )
                    .into(),
                })?;
        }
        self.inner
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        self.leftovers().await;
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
                    .with_base_url(c.base_url.clone())
            })
            .collect())
    }
}

impl Child {
    /// Signals the engine: its whole group while its leader is known to be the recorded process
    /// (not reaped, and for one found on disk, the same start time), else only what is left of its
    /// group, member by member (a group id whose leader is gone may belong to someone else).
    fn signal(&self, signal: Signal) -> nix::Result<()> {
        let gone = self.gone.lock().unwrap_or_else(PoisonError::into_inner);
        if !*gone && (self.own || state::is_alive(self.pid, self.start_ticks)) {
            return killpg(Pid::from_raw(self.pid), signal);
        }
        self.kill_leftovers(signal);
        Ok(())
    }

    /// Signals each live member of the engine's group that started after its leader did.
    fn kill_leftovers(&self, signal: Signal) {
        for member in state::members(self.pid, self.start_ticks) {
            let _ = kill(member, signal);
        }
    }
}

/// Waits for a child's leader to exit without reaping it, kills what is left of its group while
/// the zombie keeps the group's id, then reaps it and records how it ended.
async fn watch_child(
    mut child: std::process::Child,
    record: Arc<Child>,
    exit_tx: watch::Sender<Option<Exit>>,
) {
    let leader = Pid::from_raw(record.pid);
    let waited = tokio::task::spawn_blocking(move || {
        waitid(Id::Pid(leader), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
    })
    .await;
    if let Ok(Err(e)) = &waited {
        tracing::warn!(pid = record.pid, error = %e, "waiting for the engine failed; reaping it");
    }
    let status = {
        let mut gone = record.gone.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = killpg(leader, Signal::SIGKILL);
        let status = child.try_wait();
        *gone = true;
        status
    };
    let status = match status {
        Ok(Some(status)) => Some(status),
        // Not reapable at once (only if waitid failed): wait for it.
        _ => tokio::task::spawn_blocking(move || child.wait())
            .await
            .ok()
            .and_then(Result::ok),
    };
    spawn::release(record.pid);
    // The group is gone, so its pipes reach their end: let the log pump take the last lines
    // before the exit is told (a failure's last lines are its reason), bounded in case a
    // process that left the group still holds them.
    let drained = std::time::Instant::now();
    while !record.logs.is_closed() && drained.elapsed() < Duration::from_millis(250) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = exit_tx.send(Some(status.map_or_else(Exit::unknown, exit_of)));
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

/// Reads `stream` line by line (lossy UTF-8) into the child's log.
async fn pump(stream: Option<impl AsyncRead + Unpin>, source: LogSource, child: &Child) {
    let Some(stream) = stream else { return };
    let mut lines = BufReader::new(stream).split(b'\n');
    while let Ok(Some(bytes)) = lines.next_segment().await {
        child.logs.push(line(source, &bytes));
    }
}

/// Follows the log files of an engine that may outlive its manager, until it exits: new lines
/// every [`POLL`], a file read past [`LOG_FILE_LIMIT`] emptied (the engine appends, so it goes on
/// writing at the new end).
async fn tail_files(paths: [PathBuf; 2], child: Arc<Child>) {
    let mut exit = child.exit.clone();
    let mut files = [
        (&paths[0], LogSource::Stdout, 0_u64, Lines::default(), None),
        (&paths[1], LogSource::Stderr, 0_u64, Lines::default(), None),
    ];
    loop {
        let done = exit.borrow().is_some();
        for (path, source, offset, lines, file) in &mut files {
            // Opened once (the engine keeps appending to the same file) and read from where the
            // last read stopped.
            if file.is_none() {
                *file = tokio::fs::File::open(&**path).await.ok();
            }
            let Some(open) = file.as_mut() else {
                continue;
            };
            let Ok(bytes) = read_from(open, offset).await else {
                continue;
            };
            lines.feed(&bytes, |l| child.logs.push(line(*source, l)));
            if *offset > LOG_FILE_LIMIT
                && std::fs::OpenOptions::new()
                    .write(true)
                    .open(&**path)
                    .and_then(|f| f.set_len(0))
                    .is_ok()
            {
                *offset = 0;
            }
        }
        if done {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = exit.changed() => {}
        }
    }
    for (_, source, _, lines, _) in &mut files {
        lines.finish(|l| child.logs.push(line(*source, l)));
    }
    child.logs.close();
}

/// What was appended to `file` since `offset` (from the start if the file was emptied), moving
/// `offset` past it.
async fn read_from(file: &mut tokio::fs::File, offset: &mut u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let len = file.metadata().await?.len();
    if len < *offset {
        *offset = 0;
    }
    file.seek(std::io::SeekFrom::Start(*offset)).await?;
    let mut bytes = Vec::new();
    file.take(len - *offset).read_to_end(&mut bytes).await?;
    *offset += bytes.len() as u64;
    Ok(bytes)
}
