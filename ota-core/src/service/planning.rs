//! Planning an update or rollback: target resolution, the config gate, version existence,
//! integrity and policy, all before anything runs.

use std::collections::BTreeSet;

use super::FleetManager;
use crate::auth::{Caller, Role};
use crate::catalog::ArtifactRef;
use crate::device::{Device, DeviceQuery};
use crate::error::{Error, Result};
use crate::plan::{Action, Deployment, Plan, plan_id, rollout_id};
use crate::targeting::{PlanningContext, Refusal, UpdateAction, UpdateRequest, resolve};

impl FleetManager {
    /// Plans an update or rollback (operator). Nothing changes.
    pub async fn plan_update(&self, caller: &Caller, req: &UpdateRequest) -> Result<Plan> {
        caller.require(Role::Operator, "plan an update")?;
        self.build_plan(req, Verification::Cached).await
    }

    pub(crate) async fn build_plan(&self, req: &UpdateRequest, verification: Verification) -> Result<Plan> {
        if req.target.is_empty() {
            return Err(Error::invalid("request", "no target", "name device types, things, or the whole fleet"));
        }
        let versions = self.catalog_versions().await?;
        let known = self.known_types().await?;
        let enabled = self.enabled_types(known.iter().cloned()).await?;
        let devices = self.snapshot_for(req, &known).await?;
        let resolution = resolve(
            req,
            &devices,
            PlanningContext { versions: &versions, enabled: &enabled, naming: &self.settings.naming },
        );

        let mut refusals = resolution.refusals;
        let mut deployments = Vec::new();
        for t in resolution.targets {
            let artifact = ArtifactRef::new(t.device_type.clone(), t.version.clone());
            let verified = match verification {
                Verification::Cached => self.verify_for_plan(&artifact).await,
                Verification::Full => self.verify_uncached(&artifact).await,
            };
            let verified = match verified {
                Ok(v) => v,
                Err(e @ Error::Integrity { .. }) => {
                    refusals.push(Refusal { target: t.device_type.to_string(), reason: e.to_string() });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let action = if req.action == UpdateAction::Rollback || t.downgrades {
                UpdateAction::Rollback
            } else {
                UpdateAction::Update
            };
            let policy = self.policy_for(&t.device_type).await?;
            deployments.push(Deployment {
                rollout_id: rollout_id(action, &t.device_type, &t.version, &verified.sha256, &t.things),
                device_type: t.device_type,
                thing_group: t.thing_group,
                version: t.version,
                things: t.things,
                sha256: verified.sha256,
                size: verified.size,
                fleet_query: t.fleet_query,
                policy,
                held_back: t.held_back,
            });
        }
        refusals.sort();
        let rollback = req.action == UpdateAction::Rollback
            || deployments.iter().any(|d| d.rollout_id.as_str().starts_with("rollback-"));
        let action = if rollback { Action::Rollback } else { Action::Update };
        let already: usize = resolution.already_current.values().sum();
        let mut plan = Plan::informational(action, String::new());
        plan.message = describe(action, &deployments, &refusals, already);
        plan.plan_id = (!deployments.is_empty()).then(|| plan_id(&deployments));
        plan.deployments = deployments;
        plan.refusals = refusals;
        plan.request = Some(req.clone());
        Ok(plan)
    }

    /// The devices a request can reach: every device for the whole fleet, else the devices of
    /// the named types plus the named things.
    async fn snapshot_for(
        &self,
        req: &UpdateRequest,
        known: &BTreeSet<crate::names::DeviceType>,
    ) -> Result<Vec<Device>> {
        let registry = &self.backend.registry;
        if req.target.whole_fleet {
            return registry.list(&DeviceQuery::default()).await;
        }
        let mut devices = Vec::new();
        for t in &req.target.device_types {
            if known.contains(t) {
                devices
                    .extend(registry.list(&DeviceQuery { device_type: Some(t.clone()), ..Default::default() }).await?);
            }
        }
        for thing in &req.target.things {
            if let Some(d) = registry.get(thing).await?
                && !req.target.device_types.contains(&d.device_type)
            {
                devices.push(d);
            }
        }
        Ok(devices)
    }
}

/// Whether planning may reuse an earlier hash of an unchanged artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verification {
    Cached,
    Full,
}

/// A one-paragraph summary a person can read before confirming.
fn describe(action: Action, deployments: &[Deployment], refusals: &[Refusal], already: usize) -> String {
    let verb = if action == Action::Rollback { "Roll back" } else { "Update" };
    let devices: usize = deployments.iter().map(|d| d.things.len()).sum();
    let mut parts = Vec::new();
    if deployments.is_empty() {
        parts.push(format!("Nothing to {}.", if action == Action::Rollback { "roll back" } else { "update" }));
    } else {
        let per_type: Vec<String> = deployments
            .iter()
            .map(|d| {
                format!("{} to {} ({} device{})", d.device_type, d.version, d.things.len(), plural(d.things.len()))
            })
            .collect();
        parts.push(format!(
            "{verb} {devices} device{} of {} type{}: {}.",
            plural(devices),
            deployments.len(),
            plural(deployments.len()),
            per_type.join(", ")
        ));
        let held: usize = deployments.iter().map(|d| d.held_back.len()).sum();
        if held > 0 {
            parts.push(format!("{held} device{} on another version held back.", plural(held)));
        }
    }
    if already > 0 {
        parts.push(format!("{already} device{} already on the target version.", plural(already)));
    }
    if !refusals.is_empty() {
        let list: Vec<String> = refusals.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
        parts.push(format!("Refused: {}.", list.join("; ")));
    }
    parts.join(" ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
