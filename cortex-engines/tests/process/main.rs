//! The process runtime with real child processes (`sh`): logs, stop with SIGTERM then SIGKILL after
//! the grace period, the whole process group, exit codes, and no child outliving the runtime.

use std::time::{Duration, Instant};

use cortex_core::{
    EngineKind, Exit, HealthSpec, InstanceId, InstanceState, LaunchPlan, LogSource, ModelId,
    Runtime, RuntimeError, Target,
};
use cortex_engines::ProcessRuntime;
use futures_util::StreamExt;

fn plan(script: &str) -> LaunchPlan {
    let mut p = LaunchPlan::new(
        ModelId::new("sh").unwrap(),
        EngineKind::new("shell"),
        Target::Process {
            program: "sh".into(),
        },
        1,
        HealthSpec::new("/health"),
    );
    p.args = vec!["-c".into(), script.into()];
    p.labels.insert("io.cortex.model-id".into(), "sh".into());
    p
}

fn pid(id: &InstanceId) -> i32 {
    id.as_str().rsplit('-').next().unwrap().parse().unwrap()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Polls `f` for up to 5 s.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn logs_stop_and_the_process_group() {
    let rt = ProcessRuntime::new();
    // The grandchild writes its pid, so the test can check it is gone after the stop.
    let dir = std::env::temp_dir().join(format!("cortex-proc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("grandchild");
    let script = format!(
        "echo hello; echo oops >&2; sleep 300 & echo $! > {}; wait",
        pidfile.display()
    );
    let inst = rt.start(&plan(&script)).await.unwrap();
    assert_eq!(inst.base_url.to_string(), "http://127.0.0.1:1/");
    assert!(
        eventually(
            || pidfile.exists() && !std::fs::read_to_string(&pidfile).unwrap().trim().is_empty()
        )
        .await
    );
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // The lines arrive through the runtime's reader task: wait for them.
    let both = || {
        let logs = futures_util::FutureExt::now_or_never(rt.logs(&inst.id, 10))
            .unwrap()
            .unwrap();
        logs.iter()
            .any(|l| l.source == LogSource::Stdout && l.line == "hello")
            && logs
                .iter()
                .any(|l| l.source == LogSource::Stderr && l.line == "oops")
    };
    assert!(eventually(both).await, "{:?}", rt.logs(&inst.id, 10).await);
    assert_eq!(rt.inspect(&inst.id).await.unwrap(), InstanceState::Running);
    let listed = rt.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].labels["io.cortex.model-id"], "sh");

    let t = Instant::now();
    rt.stop(&inst.id, Duration::from_secs(5)).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "sh exits on SIGTERM at once"
    );
    assert!(!alive(pid(&inst.id)), "the child is gone");
    assert!(
        eventually(|| !alive(grandchild)).await,
        "its group is gone too"
    );
    assert!(rt.list().await.unwrap().is_empty());
    assert!(matches!(
        rt.logs(&inst.id, 1).await,
        Err(RuntimeError::NotFound { .. })
    ));
    rt.stop(&inst.id, Duration::from_secs(1)).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sigkill_after_the_grace_period() {
    let rt = ProcessRuntime::new();
    let inst = rt
        .start(&plan(
            "trap '' TERM; echo ready; while true; do sleep 1; done",
        ))
        .await
        .unwrap();
    assert!(
        eventually(
            || futures_util::FutureExt::now_or_never(rt.logs(&inst.id, 1))
                .and_then(Result::ok)
                .is_some_and(|l| !l.is_empty())
        )
        .await
    );
    let waiter = {
        let rt = rt.clone();
        let id = inst.id.clone();
        tokio::spawn(async move { rt.wait(&id).await })
    };
    let t = Instant::now();
    rt.stop(&inst.id, Duration::from_millis(700)).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "it was given its grace period"
    );
    assert_eq!(waiter.await.unwrap().unwrap(), Exit::signal(9));
    assert!(!alive(pid(&inst.id)));
}

#[tokio::test]
async fn exits_are_detected_and_the_log_survives_them() {
    let rt = ProcessRuntime::builder().log_lines(10).build().unwrap();
    let inst = rt
        .start(&plan(
            "for i in $(seq 1 100); do echo line $i; done; exit 3",
        ))
        .await
        .unwrap();
    let mut follow = rt.follow(&inst.id).await.unwrap();
    assert_eq!(rt.wait(&inst.id).await.unwrap(), Exit::code(3));
    assert_eq!(
        rt.inspect(&inst.id).await.unwrap(),
        InstanceState::Exited(Exit::code(3))
    );
    let tail = rt.logs(&inst.id, 1000).await.unwrap();
    assert_eq!(tail.len(), 10, "the ring keeps the last 10");
    assert_eq!(tail[9].line, "line 100");
    assert_eq!(tail[0].line, "line 91");
    // The live stream ends with the process.
    tokio::time::timeout(Duration::from_secs(5), async {
        while follow.next().await.is_some() {}
    })
    .await
    .expect("the follow stream ends when the process exits");
    rt.stop(&inst.id, Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_missing_program_is_a_clear_start_error() {
    let rt = ProcessRuntime::new();
    let mut p = plan("");
    p.target = Target::Process {
        program: "/nonexistent/llama-server".into(),
    };
    let err = rt.start(&p).await.unwrap_err();
    let RuntimeError::Start { source, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        source.to_string(),
        "cannot run /nonexistent/llama-server: No such file or directory (os error 2)"
    );

    let mut p = plan("");
    p.target = Target::Container {
        image: "x".into(),
        name: "y".into(),
    };
    let err = rt.start(&p).await.unwrap_err();
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("process targets only")
    );
}

#[tokio::test]
async fn dropping_the_runtime_kills_its_children() {
    let rt = ProcessRuntime::new();
    let inst = rt.start(&plan("sleep 300")).await.unwrap();
    let pid = pid(&inst.id);
    assert!(alive(pid));
    drop(rt);
    assert!(
        eventually(|| !alive(pid)).await,
        "no child outlives the runtime"
    );
}

/// The leader exits while a child it put in the background keeps its output pipes open (as vLLM's
/// `EngineCore` can): the exit is seen at once, with its code, and the child goes with the group.
#[tokio::test]
async fn an_exit_is_seen_when_the_leader_exits_not_when_its_pipes_close() {
    let dir = std::env::temp_dir().join(format!("cortex-pipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("child.pid");
    let rt = ProcessRuntime::new();
    let script = format!(
        "sleep 300 & echo $! > {}; echo leader going; exit 3",
        pid_file.display()
    );
    let instance = rt.start(&plan(&script)).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), rt.wait(&instance.id))
        .await
        .expect("the exit was not seen while the background child held the pipes")
        .unwrap();
    assert_eq!(exit, Exit::code(3));
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        eventually(|| !alive(child)).await,
        "the background child {child} outlived its leader"
    );
    // The log survives the exit, and stopping an exited instance signals nothing.
    let logs = rt.logs(&instance.id, 10).await.unwrap();
    assert!(logs.iter().any(|l| l.line == "leader going"), "{logs:?}");
    rt.stop(&instance.id, Duration::from_secs(1)).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `pid` runs (a zombie nobody reaped does not).
fn running(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(cortex_testkit::running)
}

/// The manager the manager-death tests run as a separate process (so that they can kill it):
/// a runtime on `CORTEX_TEST_STATE` starts `CORTEX_TEST_SCRIPT`, says which instance, and waits to
/// be killed.
#[tokio::test]
#[ignore = "not a test on its own: the manager-death tests run it in a process they SIGKILL"]
async fn manager_for_the_death_tests() {
    let state = std::env::var("CORTEX_TEST_STATE").expect("run by the manager-death tests");
    let script = std::env::var("CORTEX_TEST_SCRIPT").unwrap();
    let rt = ProcessRuntime::builder()
        .state_dir(state)
        .outlive_manager(std::env::var_os("CORTEX_TEST_OUTLIVE").is_some())
        .build()
        .unwrap();
    let mut spec = plan(&script);
    spec.labels
        .insert("io.cortex.managed-by".into(), "death-test".into());
    let instance = rt.start(&spec).await.unwrap();
    println!("started {}", instance.id);
    std::future::pending::<()>().await;
}

/// Runs [`manager_for_the_death_tests`] with `script`, waits for its start (and for `ready` to
/// exist, when given), then `SIGKILL`s it. Returns the instance it started.
fn start_and_kill_a_manager(
    state: &std::path::Path,
    script: &str,
    outlive: bool,
    ready: Option<&std::path::Path>,
) -> InstanceId {
    use std::io::BufRead as _;
    let mut manager = std::process::Command::new(std::env::current_exe().unwrap());
    manager
        .args([
            "--exact",
            "manager_for_the_death_tests",
            "--ignored",
            "--nocapture",
        ])
        .env("CORTEX_TEST_STATE", state)
        .env("CORTEX_TEST_SCRIPT", script)
        .stdout(std::process::Stdio::piped());
    if outlive {
        manager.env("CORTEX_TEST_OUTLIVE", "1");
    }
    let mut manager = manager.spawn().unwrap();
    let stdout = std::io::BufReader::new(manager.stdout.take().unwrap());
    let id = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("started ").map(str::to_owned))
        .expect("the manager started nothing");
    if let Some(ready) = ready {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never appeared",
                ready.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    manager.kill().unwrap();
    manager.wait().unwrap();
    InstanceId::new(id)
}

/// A manager killed with SIGKILL takes its engine with it (the parent-death signal) and what the
/// engine started in the background (the watchdog kills its group); the next runtime on the state
/// directory reports the instance as exited and removes its record when stopped.
#[tokio::test]
async fn an_engine_dies_with_its_manager_and_the_next_one_clears_what_is_left() {
    let state = tempfile::tempdir().unwrap();
    let remnant_file = state.path().join("remnant.pid");
    let script = format!(
        "sleep 300 & echo $! > {}; exec sleep 301",
        remnant_file.display()
    );
    let id = start_and_kill_a_manager(state.path(), &script, false, Some(&remnant_file));
    let leader = pid(&id);
    assert!(
        eventually(|| !running(leader)).await,
        "the engine {leader} outlived its manager"
    );
    let remnant: i32 = std::fs::read_to_string(&remnant_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Outside the parent-death signal (which reaches the leader only), but in the engine's
    // group: the watchdog kills it when the manager dies (what vLLM's EngineCore and workers are).
    assert!(
        eventually(|| !running(remnant)).await,
        "the engine's background child {remnant} outlived its manager"
    );

    let rt = ProcessRuntime::builder()
        .state_dir(state.path())
        .build()
        .unwrap();
    let found = rt.list().await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id, id);
    assert_eq!(found[0].state, InstanceState::Exited(Exit::unknown()));
    assert_eq!(found[0].labels["io.cortex.managed-by"], "death-test");
    assert_eq!(
        found[0].base_url.as_ref().unwrap().to_string(),
        "http://127.0.0.1:1/"
    );
    rt.stop(&id, Duration::from_secs(1)).await.unwrap();
    assert!(rt.list().await.unwrap().is_empty());
    assert!(!state.path().join(format!("{id}.json")).exists());
    // New instances never take a recorded id.
    let next = rt.start(&plan("sleep 300")).await.unwrap();
    assert_ne!(next.id, id);
    rt.stop(&next.id, Duration::from_secs(1)).await.unwrap();
}

/// With `outlive_manager`, an engine keeps running through its manager's SIGKILL, its output in
/// files; the next runtime on the state directory finds it running, with its address and its
/// logs, and can stop it.
#[tokio::test]
async fn an_engine_that_outlives_its_manager_is_found_running_with_its_logs() {
    let state = tempfile::tempdir().unwrap();
    let id = start_and_kill_a_manager(
        state.path(),
        "echo ready; echo warm >&2; exec sleep 300",
        true,
        None,
    );
    let leader = pid(&id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(running(leader), "the engine died with its manager");

    let rt = ProcessRuntime::builder()
        .state_dir(state.path())
        .outlive_manager(true)
        .build()
        .unwrap();
    let found = rt.list().await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].state, InstanceState::Running);
    assert_eq!(rt.inspect(&id).await.unwrap(), InstanceState::Running);
    let logs_arrived = eventually(|| {
        let logs = futures_util::FutureExt::now_or_never(rt.logs(&id, 10))
            .unwrap()
            .unwrap();
        logs.iter()
            .any(|l| l.source == LogSource::Stdout && l.line == "ready")
            && logs
                .iter()
                .any(|l| l.source == LogSource::Stderr && l.line == "warm")
    })
    .await;
    assert!(logs_arrived, "{:?}", rt.logs(&id, 10).await.unwrap());

    rt.stop(&id, Duration::from_secs(5)).await.unwrap();
    assert!(eventually(|| !running(leader)).await);
    let left = cortex_testkit::recorded(state.path());
    assert!(left.is_empty(), "{left:?}");
}

/// One runtime per state directory; engines that outlive the manager need one.
#[test]
fn a_state_directory_has_one_runtime_and_outliving_needs_one() {
    let state = tempfile::tempdir().unwrap();
    let held = ProcessRuntime::builder()
        .state_dir(state.path())
        .build()
        .unwrap();
    let err = ProcessRuntime::builder()
        .state_dir(state.path())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("in use by another manager"),
        "{err}"
    );
    drop(held);
    let err = ProcessRuntime::builder()
        .outlive_manager(true)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("need a state directory"), "{err}");
}
