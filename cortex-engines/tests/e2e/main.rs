//! End to end with the real llama-server (b11434, built by `scripts/setup`) and the real Gemma 3
//! 270M model, through the Supervisor with the llama.cpp engine, the process runtime and the HTTP
//! probe.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cortex_core::{
    EngineSettings, InMemoryRegistry, ModelId, ModelSource, ModelSpec, ModelState, Registry,
    Runtime, Supervisor, SupervisorError,
};
use cortex_engines::{HttpProbe, LlamaCppEngine, ProcessRuntime};
use cortex_testkit::{gemma, llama_server};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn spec(id: &str, model: &Path, extra: &str) -> ModelSpec {
    let settings: EngineSettings = toml::from_str(&format!(
        "program = {:?}\nctx_size = 2048\nthreads = 2\n{extra}",
        llama_server().display().to_string()
    ))
    .unwrap();
    ModelSpec::new(
        ModelId::new(id).unwrap(),
        "llamacpp".into(),
        ModelSource::Path(model.to_owned()),
    )
    .with_settings(settings)
    .with_startup_timeout(Duration::from_secs(120))
}

struct Stack {
    sup: Supervisor,
    runtime: ProcessRuntime,
    registry: Arc<InMemoryRegistry>,
}

fn stack() -> Stack {
    let runtime = ProcessRuntime::new();
    let registry = Arc::new(InMemoryRegistry::new());
    let sup = Supervisor::builder(Arc::new(runtime.clone()), Arc::new(HttpProbe::default()))
        .engine(Arc::new(LlamaCppEngine::new()))
        .registry(registry.clone())
        .build();
    Stack {
        sup,
        runtime,
        registry,
    }
}

/// A chat completion over plain HTTP; returns the status and the JSON body.
async fn chat(base: &str, model: &str) -> (u16, serde_json::Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 8,
    });
    let req = http::Request::post(format!("{base}v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn pid_of(id: &cortex_core::InstanceId) -> i32 {
    id.as_str().rsplit('-').next().unwrap().parse().unwrap()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_serve_stop() {
    let s = stack();
    let m = ModelId::new("gemma").unwrap();
    s.sup
        .start(spec("gemma", &gemma(), "").with_served_name("gemma-3"))
        .await
        .unwrap();
    assert_eq!(s.sup.status(&m).unwrap().state, ModelState::Running);
    let endpoint = s.registry.resolve("gemma-3").expect("registered")[0].clone();
    let (status, body) = chat(&endpoint.base_url.to_string(), "gemma-3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let pid = pid_of(&endpoint.instance);
    let port = endpoint.base_url.port_u16().unwrap();
    s.sup.stop(&m).await.unwrap();
    assert_eq!(s.sup.status(&m).unwrap().state, ModelState::Stopped);
    assert!(s.registry.resolve("gemma-3").is_none());
    assert!(!alive(pid), "the process is gone");
    assert!(port_is_free(port), "the port is free");
    assert!(s.runtime.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_model_fails_fast_with_llama_servers_own_error() {
    let s = stack();
    let missing = std::env::temp_dir().join("cortex-no-such-model.gguf");
    let t = Instant::now();
    let err = s.sup.start(spec("ghost", &missing, "")).await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "failed within seconds: {:?}",
        t.elapsed()
    );
    let SupervisorError::Failed {
        reason, log_tail, ..
    } = err
    else {
        panic!("{err}")
    };
    assert!(
        reason.starts_with("replica 0 exited while starting, with exit code"),
        "{reason}"
    );
    let tail: Vec<&str> = log_tail.iter().map(|l| l.line.as_str()).collect();
    assert!(
        tail.iter().any(|l| l.contains("cortex-no-such-model.gguf")),
        "llama-server's own error names the file:\n{}",
        tail.join("\n")
    );
    assert!(
        s.runtime.list().await.unwrap().is_empty(),
        "nothing left running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_llama_server_would_reject_is_refused_before_starting() {
    let s = stack();
    let err = s
        .sup
        .start(spec(
            "qv",
            &gemma(),
            "cache_type_v = \"q8_0\"\nflash_attn = \"off\"",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, SupervisorError::Plan { .. }), "{err}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        source.contains("quantized V cache requires flash_attn to be enabled"),
        "{source}"
    );
    assert!(
        s.runtime.list().await.unwrap().is_empty(),
        "nothing was started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_running_deregisters_and_fails() {
    let s = stack();
    let m = ModelId::new("victim").unwrap();
    s.sup.start(spec("victim", &gemma(), "")).await.unwrap();
    let endpoint = s.registry.resolve("victim").unwrap()[0].clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_of(&endpoint.instance)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut watch = s.sup.watch(&m).unwrap();
    let state = tokio::time::timeout(
        Duration::from_secs(30),
        watch.wait_for(|st| st.state.is_terminal()),
    )
    .await
    .expect("noticed within seconds")
    .unwrap()
    .state
    .clone();
    let ModelState::Failed { reason, log_tail } = state else {
        panic!("{state:?}")
    };
    assert_eq!(reason, "replica 0 exited with signal 9");
    assert!(
        !log_tail.is_empty(),
        "the log tail of the killed engine is kept"
    );
    assert!(s.registry.resolve("victim").is_none(), "deregistered");
    assert!(s.runtime.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_on_two_ports_at_once() {
    let s = stack();
    let (a, b) = tokio::join!(
        s.sup.start(spec("one", &gemma(), "")),
        s.sup.start(spec("two", &gemma(), ""))
    );
    a.unwrap();
    b.unwrap();
    let one = s.registry.resolve("one").unwrap()[0].clone();
    let two = s.registry.resolve("two").unwrap()[0].clone();
    assert_ne!(one.base_url.port_u16(), two.base_url.port_u16());
    for (e, name) in [(&one, "one"), (&two, "two")] {
        let (status, body) = chat(&e.base_url.to_string(), name).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(s.sup.shutdown().await.is_empty());
    assert!(s.runtime.list().await.unwrap().is_empty());
}

/// Time from process start to registered, median of 5 (printed for the records; not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_registered() {
    let s = stack();
    let m = ModelId::new("timed").unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        s.sup.start(spec("timed", &gemma(), "")).await.unwrap();
        times.push(t.elapsed());
        s.sup.stop(&m).await.unwrap();
    }
    times.sort();
    eprintln!(
        "time from start to registered, Gemma 3 270M: median {:?} of {times:?}",
        times[2]
    );
    assert!(s.runtime.list().await.unwrap().is_empty());
}

/// A runtime that, once, binds the port of the plan it is asked to start just before starting it:
/// what happens when another program takes the port between the supervisor's choice and the
/// engine's bind.
#[derive(Debug, Clone)]
struct PortThief {
    inner: ProcessRuntime,
    /// One per start: the listener holding the plan's port (none if someone else had it).
    stolen: Arc<std::sync::Mutex<Vec<Option<std::net::TcpListener>>>>,
    times: usize,
}

impl Runtime for PortThief {
    fn target(&self) -> cortex_core::TargetKind {
        self.inner.target()
    }
    async fn start(
        &self,
        plan: &cortex_core::LaunchPlan,
    ) -> Result<cortex_core::Instance, cortex_core::RuntimeError> {
        {
            let mut stolen = self.stolen.lock().unwrap();
            if stolen.len() < self.times {
                // Taken by someone else already (another test's engine) is as good.
                stolen.push(std::net::TcpListener::bind(("127.0.0.1", plan.port)).ok());
            }
        }
        self.inner.start(plan).await
    }
    async fn wait(
        &self,
        id: &cortex_core::InstanceId,
    ) -> Result<cortex_core::Exit, cortex_core::RuntimeError> {
        self.inner.wait(id).await
    }
    async fn inspect(
        &self,
        id: &cortex_core::InstanceId,
    ) -> Result<cortex_core::InstanceState, cortex_core::RuntimeError> {
        self.inner.inspect(id).await
    }
    async fn logs(
        &self,
        id: &cortex_core::InstanceId,
        tail: usize,
    ) -> Result<Vec<cortex_core::LogLine>, cortex_core::RuntimeError> {
        self.inner.logs(id, tail).await
    }
    async fn follow(
        &self,
        id: &cortex_core::InstanceId,
    ) -> Result<cortex_core::LogStream, cortex_core::RuntimeError> {
        self.inner.follow(id).await
    }
    async fn stop(
        &self,
        id: &cortex_core::InstanceId,
        grace: Duration,
    ) -> Result<(), cortex_core::RuntimeError> {
        self.inner.stop(id, grace).await
    }
    async fn list(&self) -> Result<Vec<cortex_core::InstanceInfo>, cortex_core::RuntimeError> {
        self.inner.list().await
    }
}

fn thief_stack(times: usize) -> (Supervisor, Arc<InMemoryRegistry>, PortThief) {
    let thief = PortThief {
        inner: ProcessRuntime::new(),
        stolen: Arc::default(),
        times,
    };
    let registry = Arc::new(InMemoryRegistry::new());
    let sup = Supervisor::builder(Arc::new(thief.clone()), Arc::new(HttpProbe::default()))
        .engine(Arc::new(LlamaCppEngine::new()))
        .registry(registry.clone())
        .build();
    (sup, registry, thief)
}

/// The chosen port is taken just before llama-server starts: it exits saying so, and the
/// supervisor starts it again on another port, which serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_taken_before_the_start_is_retried_on_another() {
    let (sup, registry, thief) = thief_stack(1);
    sup.start(spec("moved", &gemma(), "").with_served_name("moved"))
        .await
        .unwrap();
    let endpoint = registry.resolve("moved").expect("registered")[0].clone();
    let taken = thief.stolen.lock().unwrap()[0]
        .as_ref()
        .map(|l| l.local_addr().unwrap().port());
    assert_ne!(endpoint.base_url.port_u16(), taken);
    let (status, body) = chat(&endpoint.base_url.to_string(), "moved").await;
    assert_eq!(status, 200, "{body}");
    sup.stop(&ModelId::new("moved").unwrap()).await.unwrap();
}

/// A port taken at every start: after three starts the model fails, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_taken_at_every_start_fails_after_three() {
    let (sup, registry, thief) = thief_stack(usize::MAX);
    let err = sup.start(spec("unlucky", &gemma(), "")).await.unwrap_err();
    let SupervisorError::Failed {
        reason, log_tail, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert!(
        reason.contains("its port was taken, 3 starts in all"),
        "{reason}"
    );
    assert!(
        log_tail
            .iter()
            .any(|l| l.line.contains("couldn't bind HTTP server socket")),
        "{log_tail:?}"
    );
    assert_eq!(thief.stolen.lock().unwrap().len(), 3);
    assert!(registry.resolve("unlucky").is_none());
}
