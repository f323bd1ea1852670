//! A model restarted a thousand times: the per-replica state (circuits, queues, in-flight
//! counts) and the metric series stay the size of the replicas that run now.

#[path = "../support/mod.rs"]
mod support;

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::Bytes;
use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry as _};
use cortex_gateway::GatewayBuilder;
use cortex_gateway::breaker::CircuitBreakerLayer;
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::DebuggingRecorder;
use support::upstream::{Action, Upstream, vllm_error};
use tower::ServiceExt;

#[test]
fn restarting_a_model_a_thousand_times_grows_neither_state_nor_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let series = || {
        let snapshot = snapshotter.snapshot().into_vec();
        let per_replica = snapshot
            .iter()
            .filter(|(key, ..)| key.key().labels().any(|l| l.key() == "replica"))
            .count();
        (snapshot.len(), per_replica)
    };
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Every answer fails, so each new instance's circuit opens (a gauge per replica).
            let upstream = Upstream::start(|_, _, _| Action::Json {
                status: 500,
                body: vllm_error(500, "Internal Server Error", "EngineCore died."),
                headers: vec![],
            })
            .await;
            let registry = Arc::new(InMemoryRegistry::new());
            let builder = GatewayBuilder::new(Arc::clone(&registry) as _)
                .breaker(CircuitBreakerLayer::new().failures(NonZeroU32::MIN));
            let replicas = builder.replicas().clone();
            let gateway = builder.build();
            let restart = |i: usize| {
                let registry = Arc::clone(&registry);
                let gateway = gateway.clone();
                let base = format!("http://{}", upstream.addr);
                async move {
                    let instance = InstanceId::new(format!("vllm-{i}"));
                    registry.register(Endpoint::new(
                        ModelId::new("m").unwrap(),
                        "m",
                        0,
                        instance.clone(),
                        EngineKind::VLLM,
                        base.parse().unwrap(),
                    ));
                    let request = http::Request::post("/v1/completions")
                        .body(Full::new(Bytes::from_static(br#"{"model":"m","prompt":"x"}"#)))
                        .unwrap();
                    let response = gateway.oneshot(request).await.unwrap();
                    assert_eq!(response.status(), 500);
                    response.into_body().collect().await.unwrap();
                    registry.deregister("m", &instance);
                }
            };
            for i in 0..100 {
                restart(i).await;
            }
            let warm = (support::resident(), series(), replicas.len());
            for i in 100..1100 {
                restart(i).await;
            }
            let after = (support::resident(), series(), replicas.len());
            eprintln!(
                "after 100 restarts: {} KiB resident, {:?} series, {} replicas; after 1,100: {} KiB, {:?}, {}",
                warm.0 >> 10,
                warm.1,
                warm.2,
                after.0 >> 10,
                after.1,
                after.2
            );
            // At most the replica of the last restart (pruned at the next one).
            assert!(after.2 <= 1, "{} replicas kept", after.2);
            assert_eq!(after.1, warm.1, "metric series grew");
            assert!(after.1.1 > 0, "no per-replica series to check");
            assert!(
                after.0.saturating_sub(warm.0) < 4 << 20,
                "resident memory grew by {} KiB",
                (after.0 - warm.0) >> 10
            );
        });
    });
}
