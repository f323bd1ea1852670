//! Starting engines from one long-lived thread, tied to this process's life.
//!
//! Linux's parent-death signal (`PR_SET_PDEATHSIG`) fires when the *thread* that forked the child
//! exits, not the process. A child forked on a Tokio worker or blocking-pool thread would be killed
//! when that thread retires (the blocking pool retires idle threads after ten seconds). So every
//! engine is forked on one thread that lives as long as the process, and the signal means what it
//! should: the manager is gone.
//!
//! Written by hand: no crate offers a process-lifetime spawner with a parent-death signal.

use std::io;
use std::process::{Child, Command};
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
