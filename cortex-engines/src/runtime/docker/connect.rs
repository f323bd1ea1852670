//! Connecting to the Docker Engine: [`DockerRuntimeBuilder`], the address as the Docker CLI finds
//! it, and the API version check.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use cortex_core::{BoxError, RuntimeError};

use super::{DockerRuntime, Inner, MIN_API};

/// bollard's own timeout covers every call of the client, long stops included; ours are per call,
/// so its is set out of the way.
const NO_TIMEOUT: u64 = 365 * 24 * 3600;

/// The Docker Engine's address as the Docker CLI finds it: `DOCKER_HOST` when set (a `unix://`
/// socket or a `tcp://` address), else the default socket.
pub(super) fn docker_host(env: Option<String>) -> String {
    env.filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

/// Builds a [`DockerRuntime`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DockerRuntimeBuilder {
    host: Option<String>,
    publish_ip: IpAddr,
    call_timeout: Duration,
    log_lines: usize,
}

// === impl DockerRuntimeBuilder ===

impl DockerRuntimeBuilder {
    pub(super) fn new() -> Self {
        Self {
            host: None,
            publish_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            call_timeout: Duration::from_secs(30),
            log_lines: 1000,
        }
    }

    /// The Docker Engine to use, as `unix:///path/to/docker.sock` or `tcp://host:port` (without
    /// TLS); default: `DOCKER_HOST` as the Docker CLI reads it, else
    /// `unix:///var/run/docker.sock`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The host address engine ports are published on (default 127.0.0.1: only this machine can
    /// reach the engines, and the gateway in front of them).
    pub fn publish_ip(mut self, ip: IpAddr) -> Self {
        self.publish_ip = ip;
        self
    }

    /// The limit of each Docker call but the waits for an exit (default 30 s). A stop is given the
    /// plan's grace period on top of it.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// How many recent log lines each instance keeps (default 1,000).
    pub fn log_lines(mut self, n: usize) -> Self {
        self.log_lines = n.max(1);
        self
    }

    /// Connects: checks the socket, agrees on an API version, and refuses engines older than
    /// Docker 20.10 (API 1.41).
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] when the socket is missing, the engine does not answer, or
    /// it is too old; the message says which and at what address.
    pub async fn connect(self) -> Result<DockerRuntime, RuntimeError> {
        let host = self
            .host
            .unwrap_or_else(|| docker_host(std::env::var("DOCKER_HOST").ok()));
        let unavailable = |what: String, source: BoxError| RuntimeError::Unavailable {
            context: format!("cannot use the Docker Engine at {host}: {what}"),
            source,
        };
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            if !std::path::Path::new(path).exists() {
                return Err(unavailable(
                    "the socket does not exist; is Docker installed and its daemon running?".into(),
                    format!("{path}: no such file").into(),
                ));
            }
            Docker::connect_with_unix(&host, NO_TIMEOUT, bollard::API_DEFAULT_VERSION)
                .map_err(|e| unavailable("cannot open the socket".into(), e.into()))?
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            if std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty()) {
                return Err(unavailable(
                    "DOCKER_TLS_VERIFY asks for TLS, which this runtime does not speak; use a \
                     unix socket, or a tcp:// address reached without TLS (an SSH tunnel)"
                        .into(),
                    "TLS not supported".into(),
                ));
            }
            Docker::connect_with_http(&host, NO_TIMEOUT, bollard::API_DEFAULT_VERSION)
                .map_err(|e| unavailable("cannot use the address".into(), e.into()))?
        } else {
            return Err(unavailable(
                "only unix:// sockets and tcp:// addresses are supported".into(),
                "unsupported address".into(),
            ));
        };
        let docker = tokio::time::timeout(self.call_timeout, docker.negotiate_version())
            .await
            .map_err(|_| {
                unavailable(
                    format!("no answer within {:?}", self.call_timeout),
                    "timed out".into(),
                )
            })?
            .map_err(|e| {
                unavailable(
                    "it did not answer (is this user allowed to use the socket?)".into(),
                    e.into(),
                )
            })?;
        let version = docker.client_version();
        if (version.major_version, version.minor_version) < MIN_API {
            return Err(unavailable(
                format!(
                    "it speaks Docker API {}.{}; Cortex needs {}.{} (Docker 20.10) or newer",
                    version.major_version, version.minor_version, MIN_API.0, MIN_API.1
                ),
                "too old".into(),
            ));
        }
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                docker,
                host,
                publish_ip: self.publish_ip,
                call_timeout: self.call_timeout,
                log_lines: self.log_lines,
                tracked: Mutex::new(HashMap::new()),
            }),
        })
    }
}
