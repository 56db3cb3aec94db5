//! Fixtures shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use ota_core::audit::{AuditEntry, AuditOutcome};
use ota_core::auth::Role;
use ota_core::catalog::{ArtifactRef, Sha256Digest};
use ota_core::config::TypeConfig;
use ota_core::device::Device;
use ota_core::names::{DeviceType, JobId, NamingConvention, ThingName};
use ota_core::policy::RolloutPolicy;
use ota_core::rollout::{Rollout, RolloutStatus};
use ota_core::targeting::UpdateAction;
use ota_core::version::FirmwareVersion;

/// A fixed instant with nanoseconds, so round trips that drop precision are caught.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_323_045, 123_456_789).expect("valid instant")
}

pub fn at(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

pub fn ty(s: &str) -> DeviceType {
    DeviceType::parse(s).unwrap()
}

pub fn thing(s: &str) -> ThingName {
    ThingName::parse(s).unwrap()
}

pub fn job(s: &str) -> JobId {
    JobId::parse(s).unwrap()
}

pub fn version(s: &str) -> FirmwareVersion {
    FirmwareVersion::parse(s).unwrap()
}

pub fn artifact(device_type: &str, v: &str) -> ArtifactRef {
    ArtifactRef::new(ty(device_type), version(v))
}

/// `{device_type}-{nn}` running `firmware`, connected when `n` is even.
pub fn device(device_type: &str, n: u32, firmware: Option<&str>) -> Device {
    let t = ty(device_type);
    Device {
        firmware_version: firmware.map(version),
        connected: n.is_multiple_of(2),
        last_seen: Some(at(i64::from(n))),
        ..Device::new(
            thing(&format!("{device_type}-{n:02}")),
            t.clone(),
            NamingConvention::default().thing_group_of(&t),
        )
    }
}

/// A policy with non-default values everywhere JSON could lose them.
pub fn policy() -> RolloutPolicy {
    let mut p = RolloutPolicy { max_in_flight: 3, max_per_minute: Some(20), ..Default::default() };
    p.abort.failure_percent = 12.5;
    p.abort.max_failures = Some(4);
    p
}

pub fn config(device_type: &str, enabled: bool) -> TypeConfig {
    TypeConfig {
        device_type: ty(device_type),
        ota_enabled: enabled,
        policy: enabled.then(policy),
        updated_by: "admin@example.com".into(),
        updated_at: at(1),
    }
}

pub fn rollout(id: &str, device_type: &str, status: RolloutStatus, created_at: DateTime<Utc>) -> Rollout {
    let t = ty(device_type);
    let group = NamingConvention::default().thing_group_of(&t);
    Rollout {
        id: job(id),
        plan_id: format!("plan-{id}"),
        action: UpdateAction::Update,
        fleet_query: format!("thingGroupNames:{group}"),
        thing_group: group,
        device_type: t,
        version: version("2.0.0"),
        sha256: Sha256Digest([0xab; 32]),
        size: 1_234_567,
        things: vec![thing(&format!("{device_type}-01")), thing(&format!("{device_type}-02"))],
        policy: policy(),
        status,
        status_reason: None,
        created_by: "operator@example.com".into(),
        created_at,
        updated_at: created_at,
        from_versions: Default::default(),
        revert_of: None,
        signature: None,
        security_version: 0,
    }
}

pub fn audit_entry(operation: &str, outcome: AuditOutcome) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: at(2),
        subject: "operator@example.com".into(),
        roles: vec![Role::Viewer, Role::Operator],
        operation: operation.into(),
        request: serde_json::json!({ "prompt": "update pet_feeder to 2.0.0", "dry_run": false }),
        plan: Some(serde_json::json!({ "devices": 12, "version": "2.0.0" })),
        outcome,
    }
}

/// Every entry under `root`, relative, with `/` separators and a trailing `/` on folders.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            if path.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
