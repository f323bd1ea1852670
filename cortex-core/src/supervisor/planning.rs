//! Plans for every replica of a model, and the ports they listen on.

use std::net::{Ipv4Addr, TcpListener};

use super::SupervisorError;
use crate::plan::labels;
use crate::{Engine, LaunchPlan, ModelSpec, PlanContext, TargetKind};

/// The ports for a model's replicas: the engine's own port inside containers (each has its own
/// network namespace), distinct free loopback ports for local processes.
pub(crate) fn choose_ports(
    target: TargetKind,
    default_port: u16,
    replicas: u32,
) -> std::io::Result<Vec<u16>> {
    if target != TargetKind::Process {
        return Ok(vec![default_port; replicas as usize]);
    }
    // Hold every listener until all are bound, so the replicas get distinct ports.
    let listeners = (0..replicas)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Plans every replica of `spec` with `engine`, labelled for `owner`.
pub(super) fn plan_all(
    target: TargetKind,
    owner: &str,
    spec: &ModelSpec,
    engine: &dyn Engine,
) -> Result<Vec<(LaunchPlan, crate::Diagnostics)>, SupervisorError> {
    let ports =
        choose_ports(target, engine.default_port(), spec.replicas.get()).map_err(|source| {
            SupervisorError::Port {
                model: spec.id.clone(),
                source,
            }
        })?;
    let mut plans = Vec::with_capacity(ports.len());
    for (replica, port) in (0..).zip(ports) {
        let cx = PlanContext::new(target, replica, port);
        let planned = engine
            .plan(spec, &cx)
            .map_err(|source| SupervisorError::Plan {
                model: spec.id.clone(),
                source,
            })?;
        let mut plan = planned.plan;
        plan.replica = replica;
        if let Some(timeout) = spec.startup_timeout {
            plan.health.startup_timeout = timeout;
        }
        let fingerprint = plan.fingerprint();
        for (key, value) in [
            (labels::MANAGED_BY, owner.to_owned()),
            (labels::MODEL_ID, spec.id.to_string()),
            (labels::REPLICA, replica.to_string()),
            (labels::ENGINE, spec.engine.to_string()),
            (labels::PLAN, fingerprint),
        ] {
            plan.labels.insert(key.to_owned(), value);
        }
        plans.push((plan, planned.warnings));
    }
    Ok(plans)
}
