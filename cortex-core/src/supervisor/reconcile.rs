//! [`Supervisor::reconcile`]: a manager takes stock of what an earlier one left, adopting what
//! it would start itself and removing the rest.

use std::collections::HashMap;
use std::time::Duration;

use super::{Supervisor, SupervisorError};
use crate::plan::labels;
use crate::{
    EventKind, Instance, InstanceId, InstanceInfo, InstanceState, LaunchPlan, ModelId, ModelSpec,
};

/// What [`Supervisor::reconcile`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Reconciliation {
    /// Instances taken over, ordered by model and replica; their models run.
    pub adopted: Vec<Adoption>,
    /// Instances stopped and removed, with why.
    pub removed: Vec<Removal>,
    /// What went wrong: a model whose adopted instances did not become ready (they were stopped),
    /// a model refused by its engine, an instance that could not be removed.
    pub failed: Vec<SupervisorError>,
}

/// An instance [`Supervisor::reconcile`] adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Adoption {
    /// The model.
    pub model: ModelId,
    /// The replica it serves.
    pub replica: u32,
    /// The instance.
    pub instance: InstanceId,
}

/// An instance [`Supervisor::reconcile`] stopped and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removal {
    /// The instance.
    pub instance: InstanceId,
    /// The model its labels name, when they name a valid one.
    pub model: Option<ModelId>,
    /// Why it was not adopted.
    pub reason: String,
}

impl Supervisor {
    /// Takes stock of the instances an earlier manager left (the runtime's
    /// [`list`](crate::Runtime::list) of what carries the ownership label with this supervisor's
    /// [`owner`](crate::SupervisorConfig::owner)) against the models configured now, `specs`:
    ///
    /// - a **running** instance of a configured model, for a replica the spec still has, started
    ///   from the same plan (its [`PLAN`](labels::PLAN) label equals the fingerprint of the plan
    ///   made now) is **adopted**: the model is started with that instance as the replica, probed
    ///   until ready, then registered. Replicas with nothing to adopt are started as usual;
    /// - every other instance (exited or created, of a model not configured, of a replica beyond
    ///   the spec, from a changed plan, a duplicate, of a model refused by its engine) is stopped
    ///   and **removed**.
    ///
    /// Configured models with nothing to adopt are left for the caller to [`start`](Self::start).
    /// Models this supervisor already runs, and their instances, are left alone. Each adoption and
    /// removal is also sent as an [`Event`](crate::Event) ([`EventKind::Adopted`], [`EventKind::Removed`]).
    /// Call it once when a manager starts, before starting models.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::Runtime`] when the runtime cannot list its instances; nothing was done.
    /// Failures of single adoptions and removals are reported in [`Reconciliation::failed`].
    pub async fn reconcile(&self, specs: &[ModelSpec]) -> Result<Reconciliation, SupervisorError> {
        let instances = self
            .shared
            .runtime
            .list()
            .await
            .map_err(|source| SupervisorError::Runtime { source })?;
        let mut report = Reconciliation::default();

        // What each configured model would run now; a model that cannot be planned adopts nothing.
        let mut wanted: HashMap<&ModelId, (&ModelSpec, Vec<LaunchPlan>)> = HashMap::new();
        for spec in specs {
            if self.is_active(&spec.id) {
                continue;
            }
            let planned = match self.engine_for(spec) {
                Ok(engine) => self.plan_all(spec, engine).await,
                Err(e) => Err(e),
            };
            match planned {
                Ok(plans) => {
                    let plans = plans.into_iter().map(|(plan, _)| plan).collect();
                    wanted.insert(&spec.id, (spec, plans));
                }
                Err(e) => report.failed.push(e),
            }
        }

        let mut adopt: HashMap<ModelId, Vec<Option<Instance>>> = HashMap::new();
        let mut removals = Vec::new();
        let owner = &self.shared.config.owner;
        for info in instances {
            if info.labels.get(labels::MANAGED_BY) != Some(owner) {
                continue; // another manager's
            }
            let model = info
                .labels
                .get(labels::MODEL_ID)
                .and_then(|m| m.parse::<ModelId>().ok());
            if model.as_ref().is_some_and(|m| self.is_active(m)) {
                continue;
            }
            let verdict = Self::judge(&info, model.as_ref(), &wanted, &adopt);
            match verdict {
                Ok((model, replica, base_url)) => {
                    let slots = adopt
                        .entry(model.clone())
                        .or_insert_with(|| vec![None; wanted[&model].1.len()]);
                    slots[replica] = Some(Instance::new(info.id.clone(), base_url));
                }
                Err(reason) => {
                    let grace = model
                        .as_ref()
                        .and_then(|m| wanted.get(m))
                        .and_then(|(_, plans)| plans.first())
                        .map_or(Duration::from_secs(10), |p| p.stop_grace);
                    removals.push((info.id, model, reason, grace));
                }
            }
        }

        self.remove_all(removals, &mut report).await;

        let starts = adopt.into_iter().map(|(model, slots)| {
            let spec = wanted[&model].0.clone();
            let adopted: Vec<(u32, InstanceId)> = (0..)
                .zip(&slots)
                .filter_map(|(replica, slot)| slot.as_ref().map(|i| (replica, i.id.clone())))
                .collect();
            async move {
                let result = self.start_adopting(spec, slots).await;
                (model, adopted, result)
            }
        });
        for (model, adopted, result) in futures_util::future::join_all(starts).await {
            match result {
                Ok(()) => report
                    .adopted
                    .extend(adopted.into_iter().map(|(replica, instance)| Adoption {
                        model: model.clone(),
                        replica,
                        instance,
                    })),
                Err(e) => report.failed.push(e),
            }
        }
        report
            .adopted
            .sort_by(|a, b| (&a.model, a.replica).cmp(&(&b.model, b.replica)));
        Ok(report)
    }

    /// Stops and removes what [`reconcile`](Self::reconcile) does not adopt, concurrently.
    async fn remove_all(
        &self,
        removals: Vec<(InstanceId, Option<ModelId>, String, Duration)>,
        report: &mut Reconciliation,
    ) {
        let removed = futures_util::future::join_all(removals.into_iter().map(
            |(instance, model, reason, grace)| async move {
                let result = self.shared.runtime.stop(&instance, grace).await;
                (instance, model, reason, result)
            },
        ))
        .await;
        for (instance, model, reason, result) in removed {
            match result {
                Ok(()) => {
                    tracing::info!(%instance, %reason, "removed an instance left by an earlier manager");
                    if let Some(model) = &model {
                        self.emit(
                            model,
                            EventKind::Removed {
                                instance: instance.clone(),
                                reason: reason.clone(),
                            },
                        );
                    }
                    report.removed.push(Removal {
                        instance,
                        model,
                        reason,
                    });
                }
                Err(source) => report.failed.push(SupervisorError::RemoveFailed {
                    instance,
                    reason,
                    source,
                }),
            }
        }
    }

    /// Whether `info` can be adopted, and as what; else why not.
    fn judge(
        info: &InstanceInfo,
        model: Option<&ModelId>,
        wanted: &HashMap<&ModelId, (&ModelSpec, Vec<LaunchPlan>)>,
        adopt: &HashMap<ModelId, Vec<Option<Instance>>>,
    ) -> Result<(ModelId, usize, http::Uri), String> {
        let Some(model) = model else {
            return Err(format!(
                "its {} label is missing or invalid",
                labels::MODEL_ID
            ));
        };
        let Some((_, plans)) = wanted.get(model) else {
            return Err(format!("model {model} is not configured"));
        };
        if info.state != InstanceState::Running {
            return Err(match info.state {
                InstanceState::Exited(exit) => format!("it is not running (exited with {exit})"),
                _ => "it is not running".to_owned(),
            });
        }
        let replica = info
            .labels
            .get(labels::REPLICA)
            .and_then(|r| r.parse::<usize>().ok())
            .ok_or_else(|| format!("its {} label is missing or invalid", labels::REPLICA))?;
        let Some(plan) = plans.get(replica) else {
            return Err(format!(
                "replica {replica} is beyond the {} configured",
                plans.len()
            ));
        };
        if info.labels.get(labels::PLAN) != plan.labels.get(labels::PLAN) {
            return Err("it was started from a different plan (the configuration changed)".into());
        }
        if adopt
            .get(model)
            .is_some_and(|slots| slots[replica].is_some())
        {
            return Err(format!(
                "replica {replica} is already adopted from another instance"
            ));
        }
        let base_url = info
            .base_url
            .clone()
            .ok_or_else(|| "the runtime does not know its address".to_owned())?;
        Ok((model.clone(), replica, base_url))
    }
}
