//! `Supervisor::reconcile`: a second manager takes stock of what the first one left.

use std::num::NonZeroU32;
use std::sync::Arc;

use cortex_core::test_util::{FakeEngine, FakeWorld};
use cortex_core::{
    Event, EventKind, InstanceId, ModelSpec, ModelState, Supervisor, SupervisorError, TargetKind,
};

use super::{KIND, id, spec};

/// Starts `specs` with a supervisor on its own tokio runtime, then drops that runtime: the
/// manager dies mid-run, and its instances stay in the world, running.
fn first_manager(world: &FakeWorld, specs: Vec<ModelSpec>) {
    manager_of(world, cortex_core::SupervisorConfig::default().owner, specs);
}

/// [`first_manager`] with its own owner label.
fn manager_of(world: &FakeWorld, owner: String, specs: Vec<ModelSpec>) {
    let world = world.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut config = cortex_core::SupervisorConfig::default();
            config.owner = owner;
            let sup = Supervisor::builder(Arc::new(world.runtime()), Arc::new(world.probe()))
                .engine(Arc::new(FakeEngine::new(KIND)))
                .config(config)
                .build();
            for spec in specs {
                sup.start(spec).await.unwrap();
            }
        });
        drop(rt);
    })
    .join()
    .unwrap();
}

fn manager(world: &FakeWorld) -> Supervisor {
    Supervisor::builder(Arc::new(world.runtime()), Arc::new(world.probe()))
        .engine(Arc::new(FakeEngine::new(KIND)))
        .build()
}

fn two(spec: ModelSpec) -> ModelSpec {
    spec.with_replicas(NonZeroU32::new(2).unwrap())
}

#[tokio::test(flavor = "current_thread")]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: every verdict of one reconcile, then its events"
)]
async fn adopts_what_still_matches_and_removes_the_rest() {
    let world = FakeWorld::new().with_target(TargetKind::Container);
    first_manager(
        &world,
        vec![
            two(spec("kept")),
            two(spec("shrunk")),
            spec("crashed"),
            spec("changed"),
            spec("dropped"),
        ],
    );
    assert_eq!(world.live().len(), 7);
    let crashed = world.live_of(&id("crashed"))[0].clone();
    world.kill(&crashed, 139);
    let kept = world.live_of(&id("kept"));
    let shrunk = world.live_of(&id("shrunk"));
    let changed = world.live_of(&id("changed"))[0].clone();
    let dropped = world.live_of(&id("dropped"))[0].clone();

    let sup = manager(&world);
    let mut events = sup.subscribe();
    let configured = vec![
        two(spec("kept")),
        spec("shrunk"),
        spec("crashed"),
        spec("changed").with_args(["--extra"]),
        spec("new"),
    ];
    let report = sup.reconcile(&configured).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let adopted: Vec<(String, u32, InstanceId)> = report
        .adopted
        .iter()
        .map(|a| (a.model.to_string(), a.replica, a.instance.clone()))
        .collect();
    assert_eq!(
        adopted,
        vec![
            ("kept".into(), 0, kept[0].clone()),
            ("kept".into(), 1, kept[1].clone()),
            ("shrunk".into(), 0, shrunk[0].clone()),
        ]
    );
    let mut removed: Vec<(InstanceId, String)> = report
        .removed
        .iter()
        .map(|r| (r.instance.clone(), r.reason.clone()))
        .collect();
    removed.sort();
    let mut expected = vec![
        (
            shrunk[1].clone(),
            "replica 1 is beyond the 1 configured".to_owned(),
        ),
        (
            crashed.clone(),
            "it is not running (exited with exit code 139)".to_owned(),
        ),
        (
            changed.clone(),
            "it was started from a different plan (the configuration changed)".to_owned(),
        ),
        (
            dropped.clone(),
            "model dropped is not configured".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(removed, expected);

    // Adopted models run from the instances they had: nothing new was started for them.
    for m in ["kept", "shrunk"] {
        assert_eq!(sup.status(&id(m)).unwrap().state, ModelState::Running);
    }
    let endpoints = sup.registry().resolve("kept").unwrap();
    assert_eq!(
        endpoints
            .iter()
            .map(|e| e.instance.clone())
            .collect::<Vec<_>>(),
        kept
    );
    assert_eq!(world.live_of(&id("kept")), kept);
    assert_eq!(world.live_of(&id("shrunk")), vec![shrunk[0].clone()]);
    // Left to the caller: the changed model (its old instance went) and the new one.
    for m in ["changed", "new", "crashed", "dropped"] {
        assert!(sup.status(&id(m)).is_none(), "{m} was not started");
        assert!(world.live_of(&id(m)).is_empty(), "{m} has nothing left");
    }
    sup.start(configured[3].clone()).await.unwrap();

    // Events: one per adoption and removal (the dropped model included, by its label).
    let mut adoptions = 0;
    let mut removals = Vec::new();
    while let Ok(Event { model, kind, .. }) = events.try_recv() {
        match kind {
            EventKind::Adopted { .. } => adoptions += 1,
            EventKind::Removed { .. } => removals.push(model.to_string()),
            EventKind::InstanceStarted { .. } => {
                assert_eq!(
                    model.as_str(),
                    "changed",
                    "only the changed model started anew"
                );
            }
            _ => {}
        }
    }
    removals.sort();
    assert_eq!(adoptions, 3);
    assert_eq!(removals, ["changed", "crashed", "dropped", "shrunk"]);

    // A second reconcile finds nothing to do: what runs belongs to this supervisor.
    let again = sup.reconcile(&configured).await.unwrap();
    assert!(again.adopted.is_empty() && again.removed.is_empty() && again.failed.is_empty());
    assert!(sup.shutdown().await.is_empty());
    assert!(world.live().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_replica_is_started_beside_the_adopted_one() {
    let world = FakeWorld::new().with_target(TargetKind::Container);
    first_manager(&world, vec![spec("grow")]);
    let old = world.live_of(&id("grow"));
    let sup = manager(&world);
    let report = sup.reconcile(&[two(spec("grow"))]).await.unwrap();
    assert_eq!(report.adopted.len(), 1);
    let now = world.live_of(&id("grow"));
    assert_eq!(now.len(), 2);
    assert!(now.contains(&old[0]));
    assert_eq!(sup.registry().resolve("grow").unwrap().len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn an_adopted_instance_that_never_gets_ready_is_stopped() {
    let world = FakeWorld::new().with_target(TargetKind::Container);
    first_manager(&world, vec![spec("sick")]);
    let old = world.live_of(&id("sick"))[0].clone();
    world.set_health(&old, Some(cortex_core::HealthStatus::down("wedged")));
    let sup = Supervisor::builder(Arc::new(world.runtime()), Arc::new(world.probe()))
        .engine(Arc::new(
            FakeEngine::new(KIND).with_health(
                cortex_core::HealthSpec::new("/health")
                    .with_startup_timeout(std::time::Duration::from_millis(300))
                    .with_poll_interval(
                        std::time::Duration::from_millis(10),
                        std::time::Duration::from_millis(50),
                    ),
            ),
        ))
        .build();
    let report = sup.reconcile(&[spec("sick")]).await;
    // The first manager's plan had another health spec, so the fingerprints differ: removed.
    let report = report.unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(world.live().is_empty());

    // Same plan, wedged instance: adopted, probed, never ready -> failed and stopped.
    let world = FakeWorld::new().with_target(TargetKind::Container);
    first_manager(&world, vec![spec("sick")]);
    let old = world.live_of(&id("sick"))[0].clone();
    world.set_health(&old, Some(cortex_core::HealthStatus::down("wedged")));
    let sup = manager(&world);
    tokio::time::pause();
    let report = sup.reconcile(&[spec("sick")]).await.unwrap();
    assert!(report.adopted.is_empty());
    let [SupervisorError::Failed { reason, .. }] = &report.failed[..] else {
        panic!("{report:?}")
    };
    assert!(
        reason.starts_with("replica 0 was not ready after 1m"),
        "{reason}"
    );
    assert!(world.live().is_empty(), "the wedged instance was stopped");
    assert!(sup.registry().resolve("sick").is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn nothing_left_means_nothing_done() {
    let world = FakeWorld::new().with_target(TargetKind::Container);
    let sup = manager(&world);
    let report = sup.reconcile(&[spec("a")]).await.unwrap();
    assert!(report.adopted.is_empty() && report.removed.is_empty() && report.failed.is_empty());
    assert!(sup.status(&id("a")).is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn another_owners_instances_are_left_alone() {
    let world = FakeWorld::new().with_target(TargetKind::Container);
    manager_of(&world, "team-b".into(), vec![spec("theirs")]);
    let theirs = world.live_of(&id("theirs"));
    let sup = manager(&world);
    // Not configured here, and not ours: neither adopted nor removed.
    let report = sup.reconcile(&[spec("mine")]).await.unwrap();
    assert!(
        report.adopted.is_empty() && report.removed.is_empty(),
        "{report:?}"
    );
    assert_eq!(world.live_of(&id("theirs")), theirs);
    // Configured here under the same name: still theirs, so not adopted either.
    let report = sup.reconcile(&[spec("theirs")]).await.unwrap();
    assert!(
        report.adopted.is_empty() && report.removed.is_empty(),
        "{report:?}"
    );
}
