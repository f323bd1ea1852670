//! `Supervisor::follow`: a second gateway's registry fed from what the runtime shows, while
//! another supervisor runs the engines.

use std::num::NonZeroU32;
use std::sync::Arc;

use cortex_core::test_util::{FakeEngine, FakeWorld};
use cortex_core::{HealthStatus, Supervisor, SupervisorConfig};

use super::{KIND, id, spec};

fn supervisor(world: &FakeWorld) -> Supervisor {
    Supervisor::builder(Arc::new(world.runtime()), Arc::new(world.probe()))
        .engine(Arc::new(FakeEngine::new(KIND)))
        .config(SupervisorConfig::default())
        .build()
}

fn instances(sup: &Supervisor, name: &str) -> Vec<String> {
    let mut out: Vec<String> = sup
        .registry()
        .resolve(name)
        .map(|eps| eps.iter().map(|e| e.instance.to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(start_paused = true)]
async fn a_follower_registers_what_runs_and_ready_and_drops_what_ends() {
    let world = FakeWorld::new();
    let leader = supervisor(&world);
    let follower = supervisor(&world);
    let m = spec("m").with_replicas(NonZeroU32::new(2).unwrap());
    leader.start(m.clone()).await.unwrap();
    let running = instances(&leader, "m");
    assert_eq!(running.len(), 2);

    // Both replicas, ready: registered once, however often it follows.
    let first = follower.follow(std::slice::from_ref(&m)).await.unwrap();
    assert_eq!(first.registered.len(), 2);
    assert_eq!(first.serving, 2);
    assert_eq!(instances(&follower, "m"), running);
    let again = follower.follow(std::slice::from_ref(&m)).await.unwrap();
    assert!(again.registered.is_empty() && again.deregistered.is_empty());
    assert!(
        follower.status(&id("m")).is_none(),
        "the follower runs nothing"
    );

    // One replica no longer ready, then the other exited: each leaves the follower's registry.
    let ids = world.live_of(&id("m"));
    world.set_health(&ids[0], Some(HealthStatus::Loading { detail: None }));
    let loading = follower.follow(std::slice::from_ref(&m)).await.unwrap();
    assert_eq!(loading.deregistered.len(), 1);
    assert_eq!(instances(&follower, "m"), [ids[1].to_string()]);
    world.set_health(&ids[0], None);
    let back = follower.follow(std::slice::from_ref(&m)).await.unwrap();
    assert_eq!(back.registered.len(), 1, "ready again, registered again");
    assert_eq!(instances(&follower, "m"), running);
    world.kill(&ids[1], 1);
    let after = follower.follow(std::slice::from_ref(&m)).await.unwrap();
    assert!(
        after.deregistered.iter().any(|e| e.instance == ids[1]),
        "the dead one is gone: {after:?}"
    );
    assert!(!instances(&follower, "m").contains(&ids[1].to_string()));

    // A model the follower does not serve is not followed; another owner's instances neither.
    let other = follower.follow(&[spec("n")]).await.unwrap();
    assert_eq!(other.serving, 0);
    let mut foreign = SupervisorConfig::default();
    foreign.owner = "someone-else".into();
    let stranger = Supervisor::builder(Arc::new(world.runtime()), Arc::new(world.probe()))
        .engine(Arc::new(FakeEngine::new(KIND)))
        .config(foreign)
        .build();
    assert_eq!(
        stranger
            .follow(std::slice::from_ref(&m))
            .await
            .unwrap()
            .serving,
        0
    );
}
