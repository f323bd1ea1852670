//! [`Supervisor::follow`]: a registry fed from the runtime's view, for a gateway that serves
//! engines another manager runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{Supervisor, SupervisorError};
use crate::plan::labels;
use crate::{
    Endpoint, HealthSpec, HealthStatus, InstanceId, InstanceState, LaunchPlan, ModelId, ModelSpec,
};

/// What one [`Supervisor::follow`] pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Following {
    /// Endpoints registered by this pass: instances found running and ready.
    pub registered: Vec<Endpoint>,
    /// Endpoints deregistered by this pass: their instance is gone, exited or not ready.
    pub deregistered: Vec<Endpoint>,
    /// Instances of the followed models serving after this pass.
    pub serving: usize,
}

impl Supervisor {
    /// One pass of following the engines another manager runs: the runtime's
    /// [`list`](crate::Runtime::list) of the instances owned by this supervisor's
    /// [`owner`](crate::SupervisorConfig::owner) is the truth. A **running** instance of one of
    /// `specs` (by its [`MODEL_ID`](labels::MODEL_ID) label, for a replica the spec has) whose
    /// probe, with the health check of the spec's plan, says ready is registered under the spec's
    /// served name and the plan's aliases; a registered endpoint of those models whose instance is
    /// gone, exited or no longer ready is deregistered. Nothing is started, stopped or adopted:
    /// the manager that runs them does that.
    ///
    /// This is how several gateways front the same engines — one runs them (its supervisor
    /// starts, restarts and stops), the others call `follow` every few seconds — and it works
    /// with any runtime whose `list` sees another manager's instances (Docker, Docker Swarm; not
    /// local processes of another machine). Call it on a supervisor that manages none of
    /// `specs` itself: their endpoints would be followed twice.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::Runtime`] when the runtime cannot list its instances (nothing was
    /// changed: the registry keeps what the last pass found), or the planning errors of
    /// [`start`](Self::start) for a spec.
    pub async fn follow(&self, specs: &[ModelSpec]) -> Result<Following, SupervisorError> {
        let instances = self
            .shared
            .runtime
            .list()
            .await
            .map_err(|source| SupervisorError::Runtime { source })?;
        let mut followed: HashMap<&ModelId, (&ModelSpec, Vec<LaunchPlan>)> = HashMap::new();
        for spec in specs {
            let engine = self.engine_for(spec)?;
            let plans = self.plan_all(spec, engine).await?;
            followed.insert(
                &spec.id,
                (spec, plans.into_iter().map(|(p, _)| p).collect()),
            );
        }
        let owner = &self.shared.config.owner;
        let mut ready: HashSet<(Arc<str>, InstanceId)> = HashSet::new();
        let mut report = Following::default();
        let snapshot = self.shared.registry.snapshot();
        for info in instances {
            if info.labels.get(labels::MANAGED_BY) != Some(owner)
                || info.state != InstanceState::Running
            {
                continue;
            }
            let Some(base_url) = info.base_url.clone() else {
                continue;
            };
            let Some((model, (spec, plans))) = info
                .labels
                .get(labels::MODEL_ID)
                .and_then(|m| m.parse::<ModelId>().ok())
                .and_then(|m| followed.get_key_value(&m))
            else {
                continue;
            };
            let replica: u32 = info
                .labels
                .get(labels::REPLICA)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let Some(plan) = plans.get(replica as usize) else {
                continue;
            };
            let names = served_names(spec, plan);
            let endpoint = |name: &Arc<str>| {
                Endpoint::new(
                    (*model).clone(),
                    Arc::clone(name),
                    replica,
                    info.id.clone(),
                    plan.engine.clone(),
                    base_url.clone(),
                )
            };
            let Some(first) = names.first() else {
                continue;
            };
            if !self.ready(&endpoint(first), &plan.health).await {
                continue;
            }
            report.serving += 1;
            for name in &names {
                ready.insert((Arc::clone(name), info.id.clone()));
                let known = snapshot
                    .get(name)
                    .is_some_and(|eps| eps.iter().any(|e| e.instance == info.id));
                if !known && self.shared.registry.register(endpoint(name)) {
                    report.registered.push(endpoint(name));
                }
            }
        }
        // What the runtime no longer shows running and ready.
        let names: HashSet<Arc<str>> = followed
            .values()
            .flat_map(|(spec, plans)| plans.iter().flat_map(|p| served_names(spec, p)))
            .collect();
        for name in names {
            let Some(eps) = self.shared.registry.resolve(&name) else {
                continue;
            };
            for ep in eps.iter() {
                if !ready.contains(&(Arc::clone(&name), ep.instance.clone())) {
                    if let Some(gone) = self.shared.registry.deregister(&name, &ep.instance) {
                        report.deregistered.push(gone);
                    }
                }
            }
        }
        Ok(report)
    }

    /// Whether `endpoint` answers ready within the probe timeout.
    async fn ready(&self, endpoint: &Endpoint, health: &HealthSpec) -> bool {
        let probed = tokio::time::timeout(
            self.shared.config.probe_timeout,
            self.shared.probe.probe(endpoint, health),
        )
        .await;
        matches!(probed, Ok(HealthStatus::Ready))
    }
}

/// The names an instance of `spec` planned as `plan` serves: the spec's, then the plan's aliases.
fn served_names(spec: &ModelSpec, plan: &LaunchPlan) -> Vec<Arc<str>> {
    std::iter::once(spec.served_name())
        .chain(plan.aliases.iter().map(String::as_str))
        .map(Arc::from)
        .collect()
}
