//! GPU inventory: what GPUs a machine has, with their memory, for the memory estimator.
//!
//! [`GpuInventory`] is the trait; [`StaticInventory`] holds GPUs a user wrote down (in a config
//! file, with the `serde` feature, or in code); `NvmlInventory` (feature `nvml`) asks the NVIDIA
//! driver through NVML (the `nvml-wrapper` crate, which loads `libnvidia-ml.so` at run time, so a
//! machine without the driver gets an error, never a failure to link or a panic).

use std::error::Error as StdError;
use std::fmt;

/// One GPU as an inventory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct Gpu {
    /// The index CUDA and llama.cpp use (`CUDA0` is index 0).
    pub index: u32,
    /// The product name, such as `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// The UUID, such as `GPU-5f3e…`; what Docker device requests accept.
    #[cfg_attr(feature = "serde", serde(default))]
    pub uuid: String,
    /// Total memory in bytes.
    pub total_bytes: u64,
    /// Free memory in bytes when the inventory was read (for a static inventory: as written,
    /// the total when not written).
    #[cfg_attr(feature = "serde", serde(default))]
    pub free_bytes: Option<u64>,
    /// The CUDA compute capability, `(major, minor)`, such as `(9, 0)`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub compute_capability: Option<(u32, u32)>,
    /// The ggml backend that drives it (CUDA unless said otherwise): it names the device's
    /// buffers and decides how tensors are laid out in its memory.
    #[cfg_attr(feature = "serde", serde(default))]
    pub backend: GpuBackend,
}

/// The ggml backend behind a device llama.cpp offloads to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum GpuBackend {
    /// An NVIDIA GPU through ggml's CUDA backend (buffers `CUDA0`, `CUDA1`, …; pinned host
    /// buffers `CUDA_Host`).
    #[default]
    Cuda,
    /// The device of a `ggml-rpc-server` at this `host:port` (`llama-server --rpc`), whose own
    /// backend is the CPU's (buffer `RPC0[host:port]`). llama.cpp puts RPC devices before its
    /// local GPUs.
    Rpc(String),
}

// === impl Gpu ===

impl Gpu {
    /// A GPU with `total_bytes` of memory, all free, and no UUID or compute capability.
    pub fn new(index: u32, name: impl Into<String>, total_bytes: u64) -> Self {
        Self {
            index,
            name: name.into(),
            uuid: String::new(),
            total_bytes,
            free_bytes: None,
            compute_capability: None,
            backend: GpuBackend::Cuda,
        }
    }

    /// The device of the `ggml-rpc-server` at `endpoint` (`host:port`), with `total_bytes` of
    /// memory (what the server reports: the remote machine's memory for a CPU backend).
    pub fn rpc(endpoint: impl Into<String>, total_bytes: u64) -> Self {
        let endpoint = endpoint.into();
        Self {
            name: format!("RPC0[{endpoint}]"),
            backend: GpuBackend::Rpc(endpoint),
            ..Self::new(0, String::new(), total_bytes)
        }
    }

    /// Sets the free memory.
    pub fn with_free_bytes(mut self, free: u64) -> Self {
        self.free_bytes = Some(free);
        self
    }

    /// Sets the UUID.
    pub fn with_uuid(mut self, uuid: impl Into<String>) -> Self {
        self.uuid = uuid.into();
        self
    }

    /// Sets the compute capability.
    pub fn with_compute_capability(mut self, major: u32, minor: u32) -> Self {
        self.compute_capability = Some((major, minor));
        self
    }

    /// Free memory: as read, or the total when unknown.
    pub fn free(&self) -> u64 {
        self.free_bytes
            .unwrap_or(self.total_bytes)
            .min(self.total_bytes)
    }
}

/// Lists a machine's GPUs.
pub trait GpuInventory: Send + Sync {
    /// The GPUs now, ordered by index.
    ///
    /// # Errors
    ///
    /// [`InventoryError`] when the GPUs cannot be read.
    fn gpus(&self) -> Result<Vec<Gpu>, InventoryError>;
}

/// Why an inventory could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// The inventory's source is not there: no NVIDIA driver library, no GPU, a driver that does
    /// not answer.
    #[error("no GPU inventory: {reason}")]
    Unavailable {
        /// What is missing and what to do.
        reason: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// One device could not be read.
    #[error("GPU {index}: cannot read its {what}")]
    Device {
        /// The device index.
        index: u32,
        /// What was read: `name`, `memory`, `uuid`.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

/// GPUs written down rather than detected: from a config file (feature `serde`) or built in code.
///
/// ```
/// use cortex_gguf::{Gpu, GpuInventory, StaticInventory};
///
/// let inventory = StaticInventory::new([
///     Gpu::new(0, "NVIDIA L4", 24 << 30).with_free_bytes(22 << 30),
///     Gpu::new(1, "NVIDIA L4", 24 << 30),
/// ]);
/// let gpus = inventory.gpus().unwrap();
/// assert_eq!(gpus[0].free(), 22 << 30);
/// assert_eq!(gpus[1].free(), 24 << 30, "free defaults to the total");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "Vec<Gpu>", into = "Vec<Gpu>"))]
pub struct StaticInventory {
    gpus: Vec<Gpu>,
}

// === impl StaticInventory ===

impl StaticInventory {
    /// An inventory of `gpus`, ordered by index.
    pub fn new(gpus: impl IntoIterator<Item = Gpu>) -> Self {
        let mut gpus: Vec<Gpu> = gpus.into_iter().collect();
        gpus.sort_by_key(|g| g.index);
        Self { gpus }
    }
}

impl From<Vec<Gpu>> for StaticInventory {
    fn from(gpus: Vec<Gpu>) -> Self {
        Self::new(gpus)
    }
}

impl From<StaticInventory> for Vec<Gpu> {
    fn from(inventory: StaticInventory) -> Self {
        inventory.gpus
    }
}

impl GpuInventory for StaticInventory {
    fn gpus(&self) -> Result<Vec<Gpu>, InventoryError> {
        Ok(self.gpus.clone())
    }
}

#[cfg(feature = "nvml")]
pub use nvml::NvmlInventory;

#[cfg(feature = "nvml")]
mod nvml {
    use nvml_wrapper::Nvml;
    use nvml_wrapper::error::NvmlError;

    use super::{Gpu, GpuInventory, InventoryError};

    /// The GPUs the NVIDIA driver reports, read through NVML at each call (free memory changes).
    ///
    /// ```no_run
    /// use cortex_gguf::{GpuInventory, NvmlInventory};
    ///
    /// match NvmlInventory::new() {
    ///     Ok(nvml) => {
    ///         for gpu in nvml.gpus()? {
    ///             println!("{} {}: {} of {} bytes free", gpu.index, gpu.name, gpu.free(), gpu.total_bytes);
    ///         }
    ///     }
    ///     Err(e) => eprintln!("{e}"), // no driver, no GPU: a clear message
    /// }
    /// # Ok::<(), cortex_gguf::InventoryError>(())
    /// ```
    pub struct NvmlInventory {
        nvml: Nvml,
    }

    impl std::fmt::Debug for NvmlInventory {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("NvmlInventory")
                .field("driver", &self.nvml.sys_driver_version().ok())
                .finish()
        }
    }

    impl NvmlInventory {
        /// Loads `libnvidia-ml.so` and initializes NVML.
        ///
        /// # Errors
        ///
        /// [`InventoryError::Unavailable`] when the library is missing (no NVIDIA driver), or the
        /// driver finds no GPU or does not answer.
        pub fn new() -> Result<Self, InventoryError> {
            let nvml = Nvml::init().map_err(|e| InventoryError::Unavailable {
                reason: match &e {
                    NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
                        "the NVIDIA driver's NVML library (libnvidia-ml.so.1) cannot be loaded; is \
                         an NVIDIA driver installed? Without one, write the GPUs down \
                         (StaticInventory)"
                            .to_owned()
                    }
                    NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".to_owned(),
                    NvmlError::NoPermission => "no permission to use NVML".to_owned(),
                    other => format!("NVML did not initialize: {other}"),
                },
                source: Some(Box::new(e)),
            })?;
            Ok(Self { nvml })
        }
    }

    impl GpuInventory for NvmlInventory {
        fn gpus(&self) -> Result<Vec<Gpu>, InventoryError> {
            let count = self
                .nvml
                .device_count()
                .map_err(|e| InventoryError::Unavailable {
                    reason: "NVML cannot count the GPUs".to_owned(),
                    source: Some(Box::new(e)),
                })?;
            if count == 0 {
                return Err(InventoryError::Unavailable {
                    reason: "the NVIDIA driver reports no GPU".to_owned(),
                    source: None,
                });
            }
            (0..count)
                .map(|index| {
                    let err = |what: &'static str| {
                        move |e: NvmlError| InventoryError::Device {
                            index,
                            what,
                            source: Box::new(e),
                        }
                    };
                    let device = self.nvml.device_by_index(index).map_err(err("handle"))?;
                    let memory = device.memory_info().map_err(err("memory"))?;
                    let cc = device.cuda_compute_capability().ok();
                    Ok(Gpu {
                        index,
                        name: device.name().map_err(err("name"))?,
                        uuid: device.uuid().map_err(err("uuid"))?,
                        total_bytes: memory.total,
                        free_bytes: Some(memory.free),
                        compute_capability: cc.map(|c| {
                            (
                                u32::try_from(c.major).unwrap_or(0),
                                u32::try_from(c.minor).unwrap_or(0),
                            )
                        }),
                        backend: super::GpuBackend::Cuda,
                    })
                })
                .collect()
        }
    }
}

impl fmt::Display for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[allow(clippy::cast_precision_loss, reason = "MiB for display")]
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        write!(
            f,
            "GPU {} {}: {:.0} MiB free of {:.0} MiB",
            self.index,
            self.name,
            mib(self.free()),
            mib(self.total_bytes)
        )
    }
}
