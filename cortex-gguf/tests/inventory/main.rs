//! GPU inventories: a static one written in a config file, and NVML on whatever this machine has.

use cortex_gguf::{Gpu, GpuInventory, InventoryError, NvmlInventory, StaticInventory};

#[derive(Debug, serde::Deserialize)]
struct Config {
    gpus: StaticInventory,
}

#[test]
fn a_static_inventory_reads_from_a_config_file() {
    let config: Config = toml::from_str(
        r#"
        gpus = [
            { index = 1, name = "NVIDIA L4", total_bytes = 24_152_899_584 },
            { index = 0, name = "NVIDIA L4", uuid = "GPU-0f1e", total_bytes = 24_152_899_584, free_bytes = 20_000_000_000, compute_capability = [8, 9] },
        ]
        "#,
    )
    .unwrap();
    let gpus = config.gpus.gpus().unwrap();
    assert_eq!(
        gpus,
        vec![
            Gpu::new(0, "NVIDIA L4", 24_152_899_584)
                .with_uuid("GPU-0f1e")
                .with_free_bytes(20_000_000_000)
                .with_compute_capability(8, 9),
            Gpu::new(1, "NVIDIA L4", 24_152_899_584),
        ],
        "ordered by index"
    );
    assert_eq!(gpus[1].free(), 24_152_899_584, "free defaults to the total");
    assert_eq!(
        gpus[0].to_string(),
        "GPU 0 NVIDIA L4: 19073 MiB free of 23034 MiB"
    );

    let err = toml::from_str::<Config>(r#"gpus = [{ index = 0, name = "x", total = 1 }]"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `total`"), "{err}");
}

#[test]
fn a_free_figure_above_the_total_is_capped() {
    let gpu = Gpu::new(0, "x", 100).with_free_bytes(150);
    assert_eq!(gpu.free(), 100);
}

/// NVML on this machine: with no NVIDIA driver (CI) a clear error, never a panic; with one, the
/// real GPUs with sane figures.
#[test]
fn nvml_reports_the_gpus_or_says_clearly_why_not() {
    match NvmlInventory::new() {
        Err(e @ InventoryError::Unavailable { .. }) => {
            let text = e.to_string();
            eprintln!("NVML: {text}");
            assert!(
                text.starts_with("no GPU inventory: ")
                    && (text.contains("libnvidia-ml.so.1") || text.contains("driver")),
                "{text}"
            );
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(nvml) => match nvml.gpus() {
            Ok(gpus) => {
                assert!(!gpus.is_empty());
                for (i, gpu) in gpus.iter().enumerate() {
                    assert_eq!(gpu.index as usize, i);
                    assert!(gpu.total_bytes > 1 << 30, "{gpu}");
                    assert!(gpu.free() <= gpu.total_bytes);
                    assert!(gpu.uuid.starts_with("GPU-"), "{}", gpu.uuid);
                    assert!(gpu.compute_capability.is_some_and(|(major, _)| major >= 3));
                    eprintln!("{gpu} ({}, cc {:?})", gpu.uuid, gpu.compute_capability);
                }
            }
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("no GPU"), "{text}");
            }
        },
    }
}
