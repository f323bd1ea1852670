//! The supervisor embedded without the gateway: start a GGUF model with llama-server as a child
//! process, print its lifecycle events and endpoint, stop it on Ctrl-C.
//!
//! ```text
//! cargo run -p cortex-examples --example supervisor_only -- LLAMA_SERVER MODEL.gguf
//! ```

use std::sync::Arc;
use std::time::Duration;

use cortex_core::{EngineSettings, ModelId, ModelSource, ModelSpec, Supervisor};
use cortex_engines::{HttpProbe, LlamaCppEngine, ProcessRuntime};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(program), Some(model)) = (args.next(), args.next()) else {
        return Err("usage: supervisor_only LLAMA_SERVER MODEL.gguf".into());
    };
    let supervisor = Supervisor::builder(
        Arc::new(ProcessRuntime::new()),
        Arc::new(HttpProbe::default()),
    )
    .engine(Arc::new(LlamaCppEngine::new()))
    .build();

    let mut events = supervisor.subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            println!("{}: {:?}", event.model, event.kind);
        }
    });

    let mut settings = EngineSettings::new();
    settings.insert("program", program);
    settings.insert("ctx_size", 2048);
    let spec = ModelSpec::new(
        ModelId::new("local")?,
        "llamacpp".into(),
        ModelSource::Path(model.into()),
    )
    .with_settings(settings)
    .with_startup_timeout(Duration::from_secs(120));
    supervisor.start(spec).await?;
    if let Some(endpoints) = supervisor.registry().resolve("local") {
        for endpoint in endpoints.iter() {
            println!("serving at {}", endpoint.base_url);
        }
    }

    tokio::signal::ctrl_c().await?;
    for e in supervisor.shutdown().await {
        eprintln!("{e}");
    }
    Ok(())
}
