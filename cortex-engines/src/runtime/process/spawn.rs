//! Starting engines from one long-lived thread, tied to this process's life.
//!
//! Linux's parent-death signal (`PR_SET_PDEATHSIG`) fires when the *thread* that forked the child
//! exits, not the process. A child forked on a Tokio worker or blocking-pool thread would be killed
//! when that thread retires (the blocking pool retires idle threads after ten seconds). So every
//! engine is forked on one thread that lives as long as the process, and the signal means what it
//! should: the manager is gone.
//!
//! The signal reaches the engine's main process only: what it started (vLLM's `EngineCore`, its
//! workers and Python's resource tracker, holding gigabytes) is reparented and lives on. So a
//! watchdog holds the process group of every engine started here: a `/bin/sh` loop in a group of
//! its own (no terminal signal reaches it; it ignores `INT`, `TERM` and `HUP`) reading `+ PGID`
//! and `- PGID` lines from a pipe whose write end only this process holds. When this process dies,
//! however it dies, the kernel closes that end; the watchdog reads end-of-file, kills every group
//! still listed and exits. A group is listed from its start until the runtime has killed it and
//! reaped its leader.
//!
//! Written by hand: no crate offers a process-lifetime spawner with a parent-death signal, nor a
//! watchdog that outlives its owner to clean up after it.

use std::io::{self, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};

type Job = Box<dyn FnOnce() + Send>;

/// The spawner thread's queue (started on first use; it never exits).
fn queue() -> &'static Mutex<mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cortex-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("cannot start the engine spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `command` on the spawner thread. With `die_with_manager`, the child gets `SIGKILL` when
/// this process dies, however it dies (a child forked just as the manager died, before the
/// signal was armed, exits at once instead of running unmanaged).
pub(super) async fn spawn(mut command: Command, die_with_manager: bool) -> io::Result<Child> {
    if die_with_manager {
        let manager = nix::unistd::getpid();
        #[expect(
            unsafe_code,
            reason = "pre_exec runs between fork and exec; the closure makes only async-signal-safe \
                      system calls (prctl, getppid) and allocates nothing"
        )]
        // SAFETY: see the reason above; the closure touches no locks and no heap.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(io::Error::from)?;
                if nix::unistd::getppid() != manager {
                    return Err(io::Error::other(
                        "the manager died while starting the engine",
                    ));
                }
                Ok(())
            });
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(command.spawn());
    });
    queue()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(job)
        .map_err(|_| io::Error::other("the engine spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the engine spawner thread dropped the start"))?
}

/// The watchdog's program: groups listed by `+ PGID`, unlisted by `- PGID`; at end of input every
/// listed group is killed. A group id of 0 or 1 is never listed (`kill -- -1` is everything).
const WATCHDOG: &str = r#"trap '' INT TERM HUP
groups=' '
while read -r op pgid; do
  case $pgid in ''|*[!0-9]*|0|1) continue ;; esac
  case $op in
    +) groups="$groups$pgid " ;;
    -) kept=' '; for g in $groups; do [ "$g" = "$pgid" ] || kept="$kept$g "; done; groups=$kept ;;
  esac
done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
"#;

/// The watchdog's input (started on first use); `None` when it could not be started.
fn watchdog() -> &'static Mutex<Option<ChildStdin>> {
    static WATCHDOG_IN: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();
    WATCHDOG_IN.get_or_init(|| {
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", WATCHDOG])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        match command.spawn() {
            // Dropping the handle neither kills nor waits for it: it must outlive this process.
            Ok(mut child) => Mutex::new(child.stdin.take()),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot start the engine watchdog (/bin/sh): what an engine starts may outlive a crash of this process"
                );
                Mutex::new(None)
            }
        }
    })
}

fn tell_watchdog(line: &str) {
    let mut input = watchdog().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pipe) = input.as_mut() {
        if let Err(e) = pipe.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "the engine watchdog is gone");
            *input = None;
        }
    }
}

/// Lists process group `pgid` with the watchdog: killed if this process dies before
/// [`release`].
pub(super) fn guard(pgid: i32) {
    if pgid > 1 {
        tell_watchdog(&format!("+ {pgid}\n"));
    }
}

/// Unlists process group `pgid`: it was killed and its leader reaped.
pub(super) fn release(pgid: i32) {
    if pgid > 1 {
        tell_watchdog(&format!("- {pgid}\n"));
    }
}
