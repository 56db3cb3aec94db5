//! `ota init --demo`: writes the demo world of `ota_core::demo` through the service, so
//! publishing, the gate and the audit trail work exactly as for real firmware. Idempotent:
//! what exists is kept, only what is missing is created.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use ota_core::Result;
use ota_core::auth::Caller;
use ota_core::catalog::ArtifactRef;
use ota_core::demo;
use ota_core::service::{FleetManager, PublishOptions, PublishRequest};
use ota_core::version::FirmwareVersion;
use serde::Serialize;

/// What `init --demo` found and made.
#[derive(Debug, Default, Serialize)]
pub struct DemoSummary {
    pub device_types: usize,
    pub firmware: usize,
    pub firmware_created: usize,
    pub devices: usize,
    pub devices_created: usize,
    pub types_configured: usize,
}

fn built_at(v: &FirmwareVersion) -> DateTime<Utc> {
    let s = v.semver();
    let month = u32::try_from(1 + s.minor * 2).unwrap_or(1).min(12);
    let year = 2023 + i32::try_from(s.major).unwrap_or(0).min(3);
    Utc.with_ymd_and_hms(year, month, 15, 12, 0, 0).single().unwrap_or(DateTime::UNIX_EPOCH)
}

/// Writes what is missing of the demo world; with `signer`, its images are signed (as a new
/// data dir requires).
pub async fn init_demo(
    svc: &FleetManager,
    me: &Caller,
    signer: Option<&ota_core::signing::LocalSigningKey>,
) -> Result<DemoSummary> {
    let backend = svc.backend();
    let existing: BTreeSet<ArtifactRef> = backend.catalog.artifacts().await?.into_iter().collect();
    let mut s = DemoSummary::default();
    for t in demo::device_types() {
        s.device_types += 1;
        for v in demo::versions(&t) {
            s.firmware += 1;
            if existing.contains(&ArtifactRef::new(t.clone(), v.clone())) {
                continue;
            }
            let mut extra = std::collections::BTreeMap::new();
            extra.insert("board".to_string(), serde_json::json!("seeed_xiao_esp32s3"));
            extra.insert("idf_version".to_string(), serde_json::json!("v5.4.1"));
            // What the firmware supports: commands and settings.
            extra.extend(demo::declarations(&t));
            let request = PublishRequest {
                image: demo::firmware_image(&t, &v),
                release_notes: demo::release_notes(&t, &v),
                built_at: Some(built_at(&v)),
                device_type: t.clone(),
                version: v,
                extra,
            };
            let signer = signer.map(|k| k as &dyn ota_core::signing::FirmwareSigner);
            svc.publish_firmware_signed(me, request, PublishOptions { signer, security_version: 0 }).await?;
            s.firmware_created += 1;
        }
        let mut new_devices = Vec::new();
        let now = svc.now();
        for (thing, version) in demo::devices(&t, 4) {
            s.devices += 1;
            if backend.registry.get(&thing).await?.is_some() {
                continue;
            }
            // Location, health and the last telemetry; not connected until a device connects.
            new_devices.push(demo::device_record(&t, thing, version, svc.settings().naming.thing_group_of(&t), now));
        }
        s.devices_created += new_devices.len();
        // A week of hourly history for each new device, up to when it was last seen.
        let history: Vec<_> = new_devices
            .iter()
            .flat_map(|d| demo::telemetry_history(&t, &d.thing, d.last_seen.unwrap_or(now)))
            .collect();
        backend.registry.upsert_many(new_devices).await?;
        match backend.telemetry.append(history).await {
            // A backend without telemetry history (AWS, until its topic rule exists) keeps
            // each device's last telemetry in the registry; the demo needs no more there.
            Ok(()) | Err(ota_core::Error::Refused(_)) => {}
            Err(e) => return Err(e),
        }
        if backend.config.get(&t).await?.is_none() {
            svc.set_ota_enabled(me, &t, t.as_str() != demo::DISABLED_TYPE).await?;
            s.types_configured += 1;
        }
    }
    Ok(s)
}
