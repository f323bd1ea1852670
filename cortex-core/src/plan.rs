//! [`LaunchPlan`]: exactly what a [`Runtime`](crate::Runtime) starts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{EngineKind, HealthSpec, ModelId};

/// Label keys the supervisor puts on every plan, so a runtime can find what it owns after a restart
/// of the manager (Docker labels, process environment, pod labels).
pub mod labels {
    /// Marks an instance as started by Cortex; the value names the manager
    /// ([`SupervisorConfig::owner`](crate::SupervisorConfig::owner), [`MANAGED_BY_VALUE`] by
    /// default), so managers sharing one Docker Engine leave each other's instances alone.
    pub const MANAGED_BY: &str = "io.cortex.managed-by";
    /// The default value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "cortex";
    /// The [`ModelId`](crate::ModelId) the instance serves.
    pub const MODEL_ID: &str = "io.cortex.model-id";
    /// The replica index, from 0.
    pub const REPLICA: &str = "io.cortex.replica";
    /// The [`EngineKind`](crate::EngineKind).
    pub const ENGINE: &str = "io.cortex.engine";
    /// A fingerprint of the plan the instance was started from
    /// ([`LaunchPlan::fingerprint`](crate::LaunchPlan::fingerprint)): an instance left by an earlier
    /// manager is adopted only when the plan made now is the same.
    pub const PLAN: &str = "io.cortex.plan";
}

/// Where a container finds its plan's [`secrets`](LaunchPlan::secrets): the file
/// `SECRETS_DIR/NAME` for each variable `NAME`, copied in by the runtime before the start, never
/// in the container's configuration. An engine that reads a key from a file points at it (an
/// environment variable holding the path); for the others the runtime exports each file as its
/// variable before the image's entrypoint runs (the image needs `/bin/sh`).
pub const SECRETS_DIR: &str = "/run/cortex/secrets";

/// A secret value, such as an engine's API key: `Debug` and `Display` print `<secret>`, so it
/// cannot reach a log or an event by accident; [`expose`](Self::expose) gives the value to the
/// one place that needs it.
///
/// ```
/// use cortex_core::plan::Secret;
/// let key = Secret::new("sk-engine");
/// assert_eq!(format!("{key:?} {key}"), "<secret> <secret>");
/// assert_eq!(key.expose(), "sk-engine");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(std::sync::Arc<str>);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<std::sync::Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Everything needed to start one instance of one model, exact and validated.
///
/// Built by an [`Engine`](crate::Engine) from a [`ModelSpec`](crate::ModelSpec); started by a
/// [`Runtime`](crate::Runtime). Nothing in a plan is left for the runtime to decide except the host
/// port a container's [`port`](Self::port) is published on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LaunchPlan {
    /// The model this plan serves.
    pub model: ModelId,
    /// Which replica of the model, from 0.
    pub replica: u32,
    /// The engine that made the plan.
    pub engine: EngineKind,
    /// What to run: a local program or a container image.
    pub target: Target,
    /// Arguments after the program (or the image's entrypoint), in order.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secret (an engine's API key): given to the engine,
    /// never on its command line, and shown nowhere — [`Secret`]'s `Debug` masks them, and they
    /// are left out of the plan's serialized form and [`fingerprint`](Self::fingerprint).
    #[serde(skip)]
    pub secrets: BTreeMap<String, Secret>,
    /// Paths made visible to the engine.
    pub mounts: Vec<Mount>,
    /// The TCP port the engine listens on (inside the container for a container target).
    pub port: u16,
    /// Shared memory size in bytes (`/dev/shm` of a container): the engine's need, which each
    /// runtime meets in its own terms (Docker's `--shm-size`, a tmpfs mount of a Swarm service, a
    /// memory-backed `emptyDir` in Kubernetes).
    pub shm_size: Option<u64>,
    /// A network the instance joins besides being reachable on its port, by the runtime's name for
    /// it (a Docker network, a Swarm overlay network), where other containers reach it by its
    /// container name. A runtime without networks of its own (local processes) ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Which GPUs the engine gets.
    pub gpus: GpuRequest,
    /// Labels identifying the instance; the supervisor adds those in [`labels`].
    pub labels: BTreeMap<String, String>,
    /// How to probe the engine's health.
    pub health: HealthSpec,
    /// How long the engine gets to exit after a polite stop before it is killed.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    /// Other names the engine answers to besides the spec's served name (vLLM's LoRA adapters):
    /// the supervisor registers each ready instance under every one of them, so the gateway
    /// routes a request for an adapter to the engine that serves it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

// === impl LaunchPlan ===

impl LaunchPlan {
    /// A plan with no arguments, environment, mounts, shared memory, GPUs or labels, and a 10 s stop
    /// grace period.
    pub fn new(
        model: ModelId,
        engine: EngineKind,
        target: Target,
        port: u16,
        health: HealthSpec,
    ) -> Self {
        Self {
            model,
            replica: 0,
            engine,
            target,
            args: Vec::new(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            mounts: Vec::new(),
            port,
            shm_size: None,
            network: None,
            gpus: GpuRequest::None,
            labels: BTreeMap::new(),
            health,
            stop_grace: Duration::from_secs(10),
            aliases: Vec::new(),
        }
    }

    /// A stable fingerprint of everything in the plan but its [`labels`](Self::labels): 16 hex
    /// digits of the 64-bit FNV-1a hash of its JSON form. Two plans that would start the same
    /// instance have the same fingerprint; any change (an argument, a mount, the image) changes it.
    ///
    /// The port is masked (the field, and every argument or environment value equal to it), so an
    /// engine that a later manager finds on another port than it would choose now still matches;
    /// secrets count through a SHA-256 digest of them, never in the clear.
    ///
    /// Written by hand: a few lines of FNV-1a; no cryptographic strength is needed, only stability
    /// across processes and versions (which `std`'s `DefaultHasher` does not promise).
    ///
    /// ```
    /// # use cortex_core::{LaunchPlan, Target, HealthSpec};
    /// let plan = LaunchPlan::new(
    ///     "m".parse().unwrap(),
    ///     "llamacpp".into(),
    ///     Target::Process { program: "llama-server".into() },
    ///     8080,
    ///     HealthSpec::new("/health"),
    /// );
    /// let mut labelled = plan.clone();
    /// labelled.labels.insert("team".into(), "a".into());
    /// assert_eq!(plan.fingerprint(), labelled.fingerprint());
    /// let mut changed = plan.clone();
    /// changed.args.push("-c".into());
    /// assert_ne!(plan.fingerprint(), changed.fingerprint());
    /// // The port is the manager's choice, not part of what runs; a secret is.
    /// let mut moved = plan.clone();
    /// moved.port = 9090;
    /// assert_eq!(plan.fingerprint(), moved.fingerprint());
    /// let mut keyed = plan.clone();
    /// keyed.secrets.insert("LLAMA_API_KEY".into(), cortex_core::plan::Secret::new("sk-1"));
    /// let mut rekeyed = plan.clone();
    /// rekeyed.secrets.insert("LLAMA_API_KEY".into(), cortex_core::plan::Secret::new("sk-2"));
    /// assert_ne!(keyed.fingerprint(), rekeyed.fingerprint());
    /// assert!(!keyed.fingerprint().contains("sk-1"));
    /// ```
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let mut unlabelled = self.clone();
        unlabelled.labels.clear();
        // Each manager chooses a local process's port afresh: where it listens is not what runs.
        unlabelled.replace_port("{port}");
        unlabelled.port = 0;
        // Serializing plain data with string keys cannot fail.
        let mut json = serde_json::to_vec(&unlabelled).unwrap_or_default();
        // Secrets are left out of the serialized plan; a changed key is a changed plan, and
        // only a digest of them goes into the (public) fingerprint.
        if !self.secrets.is_empty() {
            let mut digest = sha2::Sha256::new();
            for (name, secret) in &self.secrets {
                digest.update(name.as_bytes());
                digest.update([0]);
                digest.update(secret.expose().as_bytes());
                digest.update([0]);
            }
            json.extend_from_slice(&digest.finalize());
        }
        let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    /// The same plan listening on `port`: the [`port`](Self::port) field and every argument or
    /// environment value equal to the old port (`--port 8080`, `PORT=8080`) — what
    /// [`fingerprint`](Self::fingerprint) masks, so the fingerprint stays the same.
    ///
    /// ```
    /// # use cortex_core::{LaunchPlan, Target, HealthSpec};
    /// let mut plan = LaunchPlan::new(
    ///     "m".parse().unwrap(),
    ///     "llamacpp".into(),
    ///     Target::Process { program: "llama-server".into() },
    ///     41000,
    ///     HealthSpec::new("/health"),
    /// );
    /// plan.args = vec!["--port".into(), "41000".into(), "-c".into(), "4096".into()];
    /// let moved = plan.with_port(41001);
    /// assert_eq!(moved.args, ["--port", "41001", "-c", "4096"]);
    /// assert_eq!(moved.port, 41001);
    /// assert_eq!(moved.fingerprint(), plan.fingerprint());
    /// ```
    #[must_use]
    pub fn with_port(&self, port: u16) -> Self {
        let mut moved = self.clone();
        moved.replace_port(&port.to_string());
        moved.port = port;
        moved
    }

    /// Replaces every argument and environment value equal to the port by `with`.
    fn replace_port(&mut self, with: &str) {
        let port = self.port.to_string();
        for value in self.args.iter_mut().chain(self.env.values_mut()) {
            if *value == port {
                with.clone_into(value);
            }
        }
    }

    /// The command line as a person would type it in a POSIX shell: the program (or, for a
    /// container, the image) and the arguments, each quoted where the shell needs it.
    ///
    /// ```
    /// # use cortex_core::{LaunchPlan, Target, HealthSpec};
    /// let mut plan = LaunchPlan::new(
    ///     "m".parse().unwrap(),
    ///     "llamacpp".into(),
    ///     Target::Process { program: "llama-server".into() },
    ///     8080,
    ///     HealthSpec::new("/health"),
    /// );
    /// plan.args = vec!["-m".into(), "/models/my model.gguf".into(), "--alias".into(), "it's".into()];
    /// assert_eq!(plan.command_line(), r#"llama-server -m '/models/my model.gguf' --alias "it's""#);
    /// ```
    pub fn command_line(&self) -> String {
        let head = match &self.target {
            Target::Process { program } => program.to_string_lossy(),
            Target::Container { image, .. } => image.as_str().into(),
        };
        let mut line = shell_quote(&head);
        for arg in &self.args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        line
    }
}

/// `s` as one word for a POSIX shell: as it is when it needs no quoting, else quoted (the
/// `shlex` crate's rules). A word with a NUL byte, which no command line can hold, is shown as a
/// Rust string literal.
///
/// ```
/// use cortex_core::plan::shell_quote;
/// assert_eq!(shell_quote("-c"), "-c");
/// assert_eq!(shell_quote("/models/my model.gguf"), "'/models/my model.gguf'");
/// assert_eq!(shell_quote(""), "''");
/// ```
pub fn shell_quote(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| format!("{s:?}"), std::borrow::Cow::into_owned)
}

/// What a plan runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Target {
    /// A program on the local machine.
    Process {
        /// The executable's path, or a name looked up on `PATH`.
        program: PathBuf,
    },
    /// A container from a local image.
    Container {
        /// The image reference, such as `cortex/llama-server:b11434`.
        image: String,
        /// The container's name, such as `llamacpp-model-gemma`.
        name: String,
    },
}

// === impl Target ===

impl Target {
    /// Which kind of target this is.
    pub fn kind(&self) -> TargetKind {
        match self {
            Self::Process { .. } => TargetKind::Process,
            Self::Container { .. } => TargetKind::Container,
        }
    }
}

/// The kinds of [`Target`], which a [`Runtime`](crate::Runtime) names to say what it can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TargetKind {
    /// Local processes.
    Process,
    /// Containers.
    Container,
}

/// A path made visible to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Mount {
    /// Path on the host.
    pub source: PathBuf,
    /// Path the engine sees (for a process target, the same as `source`).
    pub target: PathBuf,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

// === impl Mount ===

impl Mount {
    /// A read-only mount of `source` at `target`.
    pub fn read_only(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            read_only: true,
        }
    }

    /// A writable mount of `source` at `target`.
    pub fn read_write(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }
}

/// Which GPUs an engine gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GpuRequest {
    /// None: CPU only.
    #[default]
    None,
    /// Every GPU the host has.
    All,
    /// Any `n` GPUs.
    Count(u32),
    /// These GPUs, by index or UUID.
    Devices(Vec<String>),
}
