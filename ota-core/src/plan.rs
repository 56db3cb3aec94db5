//! Plans: what a request would do, shown before anything runs.
//!
//! Rollout identity: a deployment's content (action, type, version, image digest, devices) has
//! a *lineage* key; its first rollout gets the id `{action}-{type}-{version}-{key}`, each later
//! one `…-{key}-{generation}`. While a rollout of the lineage is active, repeating the request
//! finds it; once it has ended, the same request gets the next generation: a new id, never one
//! that existed (AWS refuses a job id that ever existed). The id depends only on the content and
//! the stored rollouts, so it is the same in every front door and on both backends.
//!
//! A plan id is a digest of everything that will run (per deployment: action, type, version,
//! sha256, size, things, fleet query, rollout id and the effective policy): a confirmation
//! starts exactly that or nothing.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::Sha256Digest;
use crate::names::{DeviceType, JOB_ID_MAX_LEN, JobId, ThingGroupName, ThingName};
use crate::policy::RolloutPolicy;
use crate::targeting::{HeldBack, Refusal, UpdateAction, UpdateRequest};
use crate::version::FirmwareVersion;

/// What a plan is about. The `snake_case` names are part of `ota plan --json`'s contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// A command to devices (`reboot`, `identify`, `recalibrate`, `update_config`,
    /// `set_state`): `commands` lists what each device would be sent, `refusals` each device
    /// left out and why, and `plan_id` the command plan a confirmation starts.
    Command,
    /// A question about devices: `devices` lists exactly the devices it selects.
    DeviceStatus,
    /// A device's telemetry history: `telemetry` holds one series per metric.
    Telemetry,
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

/// A targeted device that is not connected now: its update waits until it connects (as on
/// AWS, where a job execution stays queued for an offline device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OfflineDevice {
    pub thing: ThingName,
    pub last_seen: Option<DateTime<Utc>>,
}

/// One rollout the plan would create: one device type, one verified firmware.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Deployment {
    /// Update (to a newer version) or rollback (at least one device moves to an older one).
    pub action: UpdateAction,
    pub device_type: DeviceType,
    pub thing_group: ThingGroupName,
    pub version: FirmwareVersion,
    /// Sorted; devices already on `version` are not here.
    pub things: Vec<ThingName>,
    /// The rollout (job) id this deployment gets when started (see the module docs), or the
    /// id of the active rollout that already does it (`running_since` is then set).
    pub rollout_id: JobId,
    /// When the active rollout `rollout_id` started, if this deployment is already running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<DateTime<Utc>>,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub fleet_query: String,
    pub policy: RolloutPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<HeldBack>,
    /// Devices of `things` not connected now, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline: Vec<OfflineDevice>,
    /// What each device ran when planned; recorded in the rollout (a revert on abort returns
    /// each device there). Not shown in the plan.
    #[serde(skip)]
    pub from_versions: std::collections::BTreeMap<ThingName, FirmwareVersion>,
    /// The signature verified over `sha256` when this was planned (at start: re-verified),
    /// recorded in the rollout for its job documents. Not shown in the plan.
    #[serde(skip)]
    pub signature: Option<crate::signing::FirmwareSignature>,
    /// The image's security version, recorded in the rollout. Not shown in the plan.
    #[serde(skip)]
    pub security_version: u32,
}

/// Everything a request would do, or why not. `deployments` is filled only for update and
/// rollback plans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Plan {
    pub action: Action,
    pub deployments: Vec<Deployment>,
    pub refusals: Vec<Refusal>,
    pub message: String,
    /// Present for update and rollback plans, and for command plans with a device to send
    /// to (the command plan's `cplan-…` id): a digest of exactly what would run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The typed request behind an update or rollback plan of one change. `None` for a plan
    /// of several changes, whose requests are in `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<UpdateRequest>,
    /// The typed requests of a plan of several changes ("update energy_meter to 2.0.0 and
    /// roll back fish_tank_monitor to 1.0.0"), one per change that names devices, in the
    /// order of the deployments; `plan_id` covers all of them and one confirmation starts
    /// them all. Left out (empty) for a plan of one change, which uses `request`.
    #[serde(default, skip_serializing_if = "at_most_one")]
    pub requests: Vec<UpdateRequest>,
    /// Device types a firmware listing, status or OTA gate request is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_types: Vec<DeviceType>,
    /// Rollouts a status or cancel request is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<JobId>,
    /// Close matches when the request was not understood.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<String>,
    /// Devices held back in types with nothing to change (an update never downgrades a device
    /// the request did not name); those of a deployment are listed in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<HeldBack>,
    /// A command plan: what each device would be sent, sorted by thing (devices refused are
    /// in `refusals`). Only for [`Action::Command`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<PlannedCommand>,
    /// A device question: exactly the devices it selects, sorted by thing. Only for
    /// [`Action::DeviceStatus`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSummary>,
    /// A telemetry request: one series per metric of the one device, oldest point first.
    /// Only for [`Action::Telemetry`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub telemetry: Vec<TelemetrySeries>,
}

/// What one device would be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlannedCommand {
    pub thing: ThingName,
    /// `reboot`, `identify`, `recalibrate`, `update_config`, `set_state` or a declared command.
    pub command: String,
    /// `update_config`: the settings; `set_state`: `{"state": ...}`; otherwise `{}`.
    pub parameters: serde_json::Map<String, serde_json::Value>,
}

/// One device as a device question shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceSummary {
    pub thing: ThingName,
    pub connected: bool,
    /// The last health the device reported (`ok`, `warning`, `error`); `null` until it reports.
    pub health: Option<crate::device::HealthStatus>,
    /// `active`, `maintenance` or `retired`.
    pub state: crate::device::OperationalState,
    /// The `location` attribute; `null` when it has none.
    pub location: Option<String>,
    /// What its shadow reports; `null` until it does.
    pub firmware_version: Option<FirmwareVersion>,
    /// The health report's words ("PM2.5 sensor drift"), when it has some.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_message: String,
    /// When it was last connected or heard from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
}

impl DeviceSummary {
    /// The summary of a registry record.
    pub fn of(d: &crate::device::Device) -> Self {
        DeviceSummary {
            thing: d.thing.clone(),
            connected: d.connected,
            health: d.health.as_ref().map(|h| h.status),
            state: d.state,
            location: d.location().map(str::to_string),
            firmware_version: d.firmware_version.clone(),
            health_message: d.health.as_ref().map(|h| h.message.clone()).unwrap_or_default(),
            last_seen: d.last_seen,
        }
    }
}

/// One metric of one device over a time window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TelemetrySeries {
    pub thing: ThingName,
    /// The metric as the device reports it (`co2_ppm`).
    pub metric: String,
    /// The window asked for: from `since` (inclusive) to `until`.
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Numeric readings, oldest first; a long window is thinned evenly to at most
    /// [`MAX_SERIES_POINTS`] (the newest reading is always kept).
    pub points: Vec<TelemetryReading>,
}

/// The most points a plan's series carries.
pub const MAX_SERIES_POINTS: usize = 500;

/// One reading of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TelemetryReading {
    pub at: DateTime<Utc>,
    pub value: f64,
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
            requests: Vec::new(),
            device_types: Vec::new(),
            rollouts: Vec::new(),
            suggestions: Vec::new(),
            held_back: Vec::new(),
            commands: Vec::new(),
            devices: Vec::new(),
            telemetry: Vec::new(),
        }
    }

    /// Devices the plan would change.
    pub fn device_count(&self) -> usize {
        self.deployments.iter().map(|d| d.things.len()).sum()
    }

    /// The typed requests a start of this plan re-plans: every change of a plan of several
    /// (`requests`), else its one `request`; empty for a plan with nothing to start.
    pub fn update_requests(&self) -> Vec<UpdateRequest> {
        if self.requests.is_empty() { self.request.iter().cloned().collect() } else { self.requests.clone() }
    }
}

fn at_most_one(requests: &[UpdateRequest]) -> bool {
    requests.len() <= 1
}

/// Room kept after the lineage key for `-{generation}`.
const GENERATION_ROOM: usize = 7;

/// The lineage of a deployment's content: `{action}-{type}-{version}-{key}`, where the key is a
/// digest of the action, type, version, artifact digest and the sorted things, and the readable
/// part is cut so that any generation suffix still fits AWS's 64-character job id limit.
pub fn lineage(
    action: UpdateAction,
    device_type: &DeviceType,
    version: &FirmwareVersion,
    sha256: &Sha256Digest,
    things: &[ThingName],
) -> String {
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
    let keep = JOB_ID_MAX_LEN - digest.len() - 1 - GENERATION_ROOM;
    let readable: String = readable.chars().take(keep).collect();
    format!("{readable}-{digest}")
}

/// The rollout id of generation `generation` (1 for the first) of `lineage`.
pub fn rollout_id(lineage: &str, generation: u32) -> JobId {
    let id = if generation <= 1 { lineage.to_string() } else { format!("{lineage}-{generation}") };
    // The lineage is in the job-id alphabet and leaves room for any u32 suffix.
    JobId::parse(&id).unwrap_or_else(|_| unreachable_job_id())
}

/// The generation of `id` within `lineage`, or `None` when `id` is not of that lineage.
pub fn generation_of(lineage: &str, id: &JobId) -> Option<u32> {
    let rest = id.as_str().strip_prefix(lineage)?;
    if rest.is_empty() {
        return Some(1);
    }
    let n: u32 = rest.strip_prefix('-')?.parse().ok()?;
    (n >= 2 && rest[1..] == n.to_string()).then_some(n)
}

/// The id the next rollout of `lineage` gets, given the ids already stored (any status).
pub fn next_rollout_id<'a>(lineage: &str, stored: impl IntoIterator<Item = &'a JobId>) -> JobId {
    let last = stored.into_iter().filter_map(|id| generation_of(lineage, id)).max().unwrap_or(0);
    rollout_id(lineage, last.saturating_add(1))
}

fn unreachable_job_id() -> JobId {
    // Only reachable if the sanitising above were wrong; a fixed valid id keeps this total.
    JobId::parse("rollout").unwrap_or_else(|_| unreachable!("\"rollout\" is a valid job id"))
}

/// The plan id: a digest of everything each deployment would run (action, type, version,
/// sha256, size, things, fleet query, rollout id and the effective policy), so a plan that
/// would run anything different gets a different id.
pub fn plan_id(deployments: &[Deployment]) -> String {
    // Fields are fed one by one, each closed by a NUL (no name or query holds one), so a
    // million-device plan is hashed without building its JSON.
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update(bytes);
        h.update([0]);
    };
    for d in deployments {
        field(d.action.as_str().as_bytes());
        field(d.device_type.as_str().as_bytes());
        field(d.version.to_string().as_bytes());
        field(&d.sha256.0);
        field(&d.size.to_le_bytes());
        field(&(d.things.len() as u64).to_le_bytes());
        for t in &d.things {
            field(t.as_str().as_bytes());
        }
        field(d.fleet_query.as_bytes());
        field(d.rollout_id.as_str().as_bytes());
        field(serde_json::to_string(&d.policy).unwrap_or_default().as_bytes());
        field(b"end of deployment");
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
        let a = lineage(UpdateAction::Update, &ty, &v, &d, &things);
        assert_eq!(a, lineage(UpdateAction::Update, &ty, &v, &d, &things));
        assert!(a.starts_with("update-vision_ai_face_detector-2_0_0-rc_1-"), "{a}");
        assert_ne!(a, lineage(UpdateAction::Rollback, &ty, &v, &d, &things));
        assert_ne!(a, lineage(UpdateAction::Update, &ty, &v, &d, &[]));
        let long = DeviceType::parse(&format!("a{}", "_bcdefgh".repeat(7))).unwrap();
        let l = lineage(UpdateAction::Rollback, &long, &v, &d, &things);
        assert!(rollout_id(&l, u32::MAX).as_str().len() <= 64);
    }

    #[test]
    fn generations_follow_each_other_and_never_repeat_an_id() {
        let l = "update-pet_feeder-3_0_0-0123456789";
        assert_eq!(rollout_id(l, 1).as_str(), l);
        assert_eq!(rollout_id(l, 2).as_str(), format!("{l}-2"));
        let other = JobId::parse("update-pet_feeder-3_0_0-0123456789ab").unwrap();
        let padded = JobId::parse(&format!("{l}-02")).unwrap();
        assert_eq!(generation_of(l, &other), None, "another lineage that shares a prefix");
        assert_eq!(generation_of(l, &padded), None);
        assert_eq!(next_rollout_id(l, []), rollout_id(l, 1));
        let stored = [rollout_id(l, 1), rollout_id(l, 2), other];
        assert_eq!(next_rollout_id(l, &stored), rollout_id(l, 3));
        assert_eq!(next_rollout_id(l, &stored[..1]), rollout_id(l, 2));
    }

    #[test]
    fn the_plan_id_changes_with_anything_that_would_run() {
        let ty = DeviceType::parse("pet_feeder").unwrap();
        let v = FirmwareVersion::parse("3.0.0").unwrap();
        let base = Deployment {
            action: UpdateAction::Update,
            device_type: ty.clone(),
            thing_group: ThingGroupName::parse("PetFeederAWSDevice").unwrap(),
            version: v.clone(),
            things: vec![ThingName::parse("pet_feeder-01").unwrap()],
            rollout_id: rollout_id("update-pet_feeder-3_0_0-0123456789", 1),
            running_since: None,
            sha256: Sha256Digest([1; 32]),
            size: 10,
            fleet_query: "thingName:pet_feeder-01".into(),
            policy: RolloutPolicy::default(),
            held_back: Vec::new(),
            offline: Vec::new(),
            from_versions: Default::default(),
            signature: None,
            security_version: 0,
        };
        let id = plan_id(std::slice::from_ref(&base));
        let variants: [fn(&mut Deployment); 9] = [
            |d| d.action = UpdateAction::Rollback,
            |d| d.version = FirmwareVersion::parse("3.0.1").unwrap(),
            |d| d.sha256 = Sha256Digest([2; 32]),
            |d| d.size = 11,
            |d| d.things.push(ThingName::parse("pet_feeder-02").unwrap()),
            |d| d.fleet_query.push_str(" AND x"),
            |d| d.rollout_id = rollout_id("update-pet_feeder-3_0_0-0123456789", 2),
            |d| d.policy.max_in_flight = 3,
            |d| d.policy.revert_on_abort = true,
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut d = base.clone();
            change(&mut d);
            assert_ne!(plan_id(&[d]), id, "variant {i} must change the plan id");
        }
        assert_eq!(plan_id(&[base]), id);
    }
}
