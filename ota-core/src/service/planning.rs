//! Planning an update or rollback: target resolution, the config gate, version existence,
//! integrity and policy, all before anything runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::FleetManager;
use crate::auth::Caller;
use crate::authz::{Action as Op, Resource};
use crate::catalog::ArtifactRef;
use crate::device::{Device, DeviceQuery};
use crate::error::{Error, Result};
use crate::names::ThingName;
use crate::plan::{Action, Deployment, Plan, lineage, next_rollout_id, plan_id};
use crate::rollout::{Rollout, RolloutQuery};
use crate::targeting::{PlanningContext, Refusal, UpdateAction, UpdateRequest, resolve};

impl FleetManager {
    /// Plans an update or rollback (operator). Nothing changes.
    pub async fn plan_update(&self, caller: &Caller, req: &UpdateRequest) -> Result<Plan> {
        self.allow(caller, Op::PlanUpdate, "plan an update", Resource::Fleet)?;
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
            devices.iter().map(|d| &**d),
            PlanningContext { versions: &versions, enabled: &enabled, known: &known, naming: &self.settings.naming },
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
            if let Some(reason) = self.security_floor_refusal(&t.things, &verified).await? {
                refusals.push(Refusal { target: t.device_type.to_string(), reason });
                continue;
            }
            let action = if req.action == UpdateAction::Rollback || t.downgrades {
                UpdateAction::Rollback
            } else {
                UpdateAction::Update
            };
            let mut policy = self.policy_for(&t.device_type).await?;
            policy.revert_on_abort |= req.revert_on_abort;
            // The effective policy is checked where it is used: a record written before a
            // bound existed, or by another tool, never reaches a rollout.
            if let Err(e) = policy.validate() {
                refusals.push(Refusal {
                    target: t.device_type.to_string(),
                    reason: format!("the rollout policy of {} is invalid: {e}; an admin must fix it", t.device_type),
                });
                continue;
            }
            let key = lineage(action, &t.device_type, &t.version, &verified.sha256, &t.things);
            let stored = self
                .backend
                .rollouts
                .list(&RolloutQuery { device_type: Some(t.device_type.clone()), ..Default::default() })
                .await?;
            let running = stored
                .iter()
                .find(|r| r.status.is_active() && covers(r, action, &t.version, &verified.sha256, &t.things));
            let (rollout_id, running_since) = match running {
                Some(r) => (r.id.clone(), Some(r.created_at)),
                None => (next_rollout_id(&key, stored.iter().map(|r| &r.id)), None),
            };
            deployments.push(Deployment {
                action,
                rollout_id,
                running_since,
                offline: t.offline,
                // Only a rollout that may revert needs them: a whole-fleet plan of a million
                // devices does not pay for the map otherwise.
                from_versions: if policy.revert_on_abort {
                    from_versions(&devices, &t.things)
                } else {
                    Default::default()
                },
                device_type: t.device_type,
                thing_group: t.thing_group,
                version: t.version,
                things: t.things,
                sha256: verified.sha256,
                size: verified.size,
                signature: verified.signature,
                security_version: verified.security_version,
                fleet_query: t.fleet_query,
                policy,
                held_back: t.held_back,
            });
        }
        refusals.sort();
        let rollback =
            req.action == UpdateAction::Rollback || deployments.iter().any(|d| d.action == UpdateAction::Rollback);
        let action = if rollback { Action::Rollback } else { Action::Update };
        let already: usize = resolution.already_current.values().sum();
        let offline_left_out: usize = resolution.offline_left_out.values().sum();
        let mut plan = Plan::informational(action, String::new());
        plan.message = describe(action, &deployments, &refusals, already, offline_left_out);
        if !resolution.held_back.is_empty() {
            let n = resolution.held_back.len();
            let (newer, verb) = if action == Action::Rollback {
                ("an older", "a rollback never upgrades")
            } else {
                ("a newer", "an update never downgrades")
            };
            plan.message.push_str(&format!(
                " {n} device{} held back: {} {newer} version ({verb}; name {} or ask to {}).",
                plural(n),
                if n == 1 { "it runs" } else { "they run" },
                if n == 1 { "it" } else { "them" },
                if action == Action::Rollback { "update" } else { "roll back" },
            ));
            plan.held_back = resolution.held_back;
        }
        if !resolution.out_of_service.is_empty() {
            let shown: Vec<String> = resolution
                .out_of_service
                .iter()
                .take(10)
                .map(|h| format!("held back {}: {}", h.thing, h.reason))
                .collect();
            let more = resolution.out_of_service.len() - shown.len();
            plan.message.push_str(&format!(
                " {}{}.",
                shown.join("; "),
                if more > 0 { format!("; and {more} more not active") } else { String::new() }
            ));
            plan.held_back.extend(resolution.out_of_service);
        }
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
    ) -> Result<Vec<Arc<Device>>> {
        // Shared records, not copies: a whole-fleet plan reads each device once.
        let registry = &self.backend.registry;
        if req.target.whole_fleet {
            return registry.snapshot(&DeviceQuery::default()).await;
        }
        let mut devices = Vec::new();
        for t in &req.target.device_types {
            if known.contains(t) {
                devices.extend(
                    registry.snapshot(&DeviceQuery { device_type: Some(t.clone()), ..Default::default() }).await?,
                );
            }
        }
        for thing in req.target.things.iter().chain(&req.filters.exclude_things) {
            if let Some(d) = registry.get(thing).await?
                && !req.target.device_types.contains(&d.device_type)
                && !devices.iter().any(|k| k.thing == d.thing)
            {
                devices.push(Arc::new(d));
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

/// What each of `things` (sorted) runs in the snapshot, for those that reported a version.
fn from_versions(
    devices: &[Arc<Device>],
    things: &[ThingName],
) -> std::collections::BTreeMap<ThingName, crate::version::FirmwareVersion> {
    devices
        .iter()
        .filter(|d| things.binary_search(&d.thing).is_ok())
        .filter_map(|d| d.firmware_version.clone().map(|v| (d.thing.clone(), v)))
        .collect()
}

/// Whether the active rollout `r` already does everything a deployment would: the same action,
/// version and image, for at least its devices (the others may have finished meanwhile).
fn covers(
    r: &Rollout,
    action: UpdateAction,
    version: &crate::version::FirmwareVersion,
    sha256: &crate::catalog::Sha256Digest,
    things: &[ThingName],
) -> bool {
    r.action == action
        && r.version == *version
        && r.sha256 == *sha256
        && things.iter().all(|t| r.things.binary_search(t).is_ok())
}

/// A one-paragraph summary a person can read before confirming.
fn describe(
    action: Action,
    deployments: &[Deployment],
    refusals: &[Refusal],
    already: usize,
    offline_left_out: usize,
) -> String {
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
        let offline: Vec<&str> = deployments.iter().flat_map(|d| d.offline.iter().map(|o| o.thing.as_str())).collect();
        if !offline.is_empty() {
            let shown: Vec<&str> = offline.iter().take(10).copied().collect();
            let more = offline.len() - shown.len();
            parts.push(format!(
                "{} device{} offline ({}{}): {} update{} wait{} until {} connect{}.",
                offline.len(),
                plural(offline.len()),
                shown.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() },
                if offline.len() == 1 { "its" } else { "their" },
                plural(offline.len()),
                if offline.len() == 1 { "s" } else { "" },
                if offline.len() == 1 { "it" } else { "they" },
                if offline.len() == 1 { "s" } else { "" },
            ));
        }
        let reverting: Vec<&str> =
            deployments.iter().filter(|d| d.policy.revert_on_abort).map(|d| d.device_type.as_str()).collect();
        if !reverting.is_empty() {
            parts.push(format!(
                "If a rollout of {} aborts, the devices it moved are rolled back to the version each ran before.",
                reverting.join(", ")
            ));
        }
        for d in deployments {
            if let Some(since) = d.running_since {
                parts.push(format!(
                    "{} is already running {} (started {}).",
                    d.device_type,
                    d.rollout_id,
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
        }
    }
    if offline_left_out > 0 {
        parts.push(format!(
            "{offline_left_out} offline device{} left out (only online devices).",
            plural(offline_left_out)
        ));
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
