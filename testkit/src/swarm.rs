//! A one-node Docker Swarm for a test: the local Docker Engine made a swarm manager
//! (`docker swarm init --advertise-addr 127.0.0.1`) if it is not in a swarm yet, and left again
//! (`docker swarm leave --force`) when the last [`Swarm`] is dropped — the engine is left as it was
//! found. An engine that already was in a swarm is used as it is and never left.

use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// How many [`Swarm`]s are alive, and whether the first one made the swarm.
static USERS: Mutex<(usize, bool)> = Mutex::new((0, false));

/// The local Docker Engine as a swarm manager while this lives. See the [module docs](self).
#[derive(Debug)]
pub struct Swarm(());

fn state() -> String {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .output()
        .expect("the docker CLI runs (Docker Engine installed by scripts/setup)");
    assert!(
        out.status.success(),
        "the Docker Engine does not answer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Swarm {
    /// Makes the local engine a one-node swarm unless it is in one.
    ///
    /// # Panics
    ///
    /// When Docker does not answer or the swarm cannot be made.
    pub fn join() -> Self {
        let mut users = USERS.lock().unwrap_or_else(PoisonError::into_inner);
        if users.0 == 0 {
            let now = state();
            if now == "active" {
                users.1 = false;
            } else {
                let out = Command::new("docker")
                    .args(["swarm", "init", "--advertise-addr", "127.0.0.1"])
                    .output()
                    .expect("docker swarm init runs");
                assert!(
                    out.status.success(),
                    "docker swarm init failed (state was {now}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                users.1 = true;
            }
        }
        users.0 += 1;
        Self(())
    }

    /// Whether this test run made the swarm (and will leave it).
    pub fn made_here() -> bool {
        USERS.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap_or_else(PoisonError::into_inner);
        users.0 -= 1;
        if users.0 == 0 && users.1 {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
            users.1 = false;
        }
    }
}
