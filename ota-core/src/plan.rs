//! Plans: what a request would do, shown before anything runs. Plans and rollout ids are
//! deterministic, so the same request yields the same ids and repeating a command never
//! starts a second rollout.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::Sha256Digest;
use crate::names::{DeviceType, JOB_ID_MAX_LEN, JobId, ThingGroupName, ThingName};
use crate::policy::RolloutPolicy;
use crate::targeting::{HeldBack, Refusal, UpdateAction, UpdateRequest};
use crate::version::FirmwareVersion;

/// What a plan is about. The `snake_case` names are part of `ota plan --json`'s contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Update,
    Rollback,
    ListFirmware,
    FleetStatus,
    RolloutStatus,
    Cancel,
    EnableOta,
    DisableOta,
    Unknown,
}

impl From<UpdateAction> for Action {
    fn from(a: UpdateAction) -> Self {
        match a {
            UpdateAction::Update => Action::Update,
            UpdateAction::Rollback => Action::Rollback,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        f.write_str(&s)
    }
}

/// One rollout the plan would create: one device type, one verified firmware.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub device_type: DeviceType,
    pub thing_group: ThingGroupName,
    pub version: FirmwareVersion,
    /// Sorted; devices already on `version` are not here.
    pub things: Vec<ThingName>,
    /// The rollout (job) id this deployment gets when started; deterministic.
    pub rollout_id: JobId,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub fleet_query: String,
    pub policy: RolloutPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<HeldBack>,
}

/// Everything a request would do, or why not. `deployments` is filled only for update and
/// rollback plans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub action: Action,
    pub deployments: Vec<Deployment>,
    pub refusals: Vec<Refusal>,
    pub message: String,
    /// Present for update and rollback plans: a digest of exactly what would run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The typed request behind an update or rollback plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<UpdateRequest>,
    /// Device types a firmware listing, status or OTA gate request is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_types: Vec<DeviceType>,
    /// Rollouts a status or cancel request is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<JobId>,
    /// Close matches when the request was not understood.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<String>,
}

impl Plan {
    /// A plan for a request that changes nothing (listing, status, unknown, ...).
    pub fn informational(action: Action, message: impl Into<String>) -> Self {
        Plan {
            action,
            deployments: Vec::new(),
            refusals: Vec::new(),
            message: message.into(),
            plan_id: None,
            request: None,
            device_types: Vec::new(),
            rollouts: Vec::new(),
            suggestions: Vec::new(),
        }
    }

    /// Devices the plan would change.
    pub fn device_count(&self) -> usize {
        self.deployments.iter().map(|d| d.things.len()).sum()
    }
}

/// The deterministic rollout id of a deployment: `{action}-{type}-{version}-{digest}` where the
/// digest covers the action, type, version, artifact digest and the sorted things, cut to
/// AWS's 64-character job id limit.
pub fn rollout_id(
    action: UpdateAction,
    device_type: &DeviceType,
    version: &FirmwareVersion,
    sha256: &Sha256Digest,
    things: &[ThingName],
) -> JobId {
    let mut h = Sha256::new();
    h.update(action.as_str());
    h.update([0]);
    h.update(device_type.as_str());
    h.update([0]);
    h.update(version.to_string());
    h.update([0]);
    h.update(sha256.0);
    for t in things {
        h.update([0]);
        h.update(t.as_str());
    }
    let digest = hex::encode(&h.finalize()[..5]);
    let readable: String = format!("{}-{}-{}", action.as_str(), device_type, version)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    let keep = JOB_ID_MAX_LEN - digest.len() - 1;
    let readable: String = readable.chars().take(keep).collect();
    // Every character was mapped into the job-id alphabet and the length is bounded.
    JobId::parse(&format!("{readable}-{digest}")).unwrap_or_else(|_| unreachable_job_id())
}

fn unreachable_job_id() -> JobId {
    // Only reachable if the sanitising above were wrong; a fixed valid id keeps this total.
    JobId::parse("rollout").unwrap_or_else(|_| unreachable!("\"rollout\" is a valid job id"))
}

/// The plan id: a digest of every deployment's rollout id, so a plan that would run anything
/// different gets a different id.
pub fn plan_id(deployments: &[Deployment]) -> String {
    let mut h = Sha256::new();
    for d in deployments {
        h.update(d.rollout_id.as_str());
        h.update([0]);
    }
    format!("plan-{}", hex::encode(&h.finalize()[..6]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_ids_are_deterministic_valid_and_distinct() {
        let ty = DeviceType::parse("vision_ai_face_detector").unwrap();
        let v = FirmwareVersion::parse("2.0.0-rc.1").unwrap();
        let d = Sha256Digest([7; 32]);
        let things = vec![ThingName::parse("vision_ai_face_detector-01").unwrap()];
        let a = rollout_id(UpdateAction::Update, &ty, &v, &d, &things);
        assert_eq!(a, rollout_id(UpdateAction::Update, &ty, &v, &d, &things));
        assert!(a.as_str().starts_with("update-vision_ai_face_detector-2_0_0-rc_1-"), "{a}");
        assert_ne!(a, rollout_id(UpdateAction::Rollback, &ty, &v, &d, &things));
        assert_ne!(a, rollout_id(UpdateAction::Update, &ty, &v, &d, &[]));
        let long = DeviceType::parse(&format!("a{}", "_bcdefgh".repeat(7))).unwrap();
        let id = rollout_id(UpdateAction::Rollback, &long, &v, &d, &things);
        assert!(id.as_str().len() <= 64);
    }
}
