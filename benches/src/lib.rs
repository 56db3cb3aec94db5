//! Shared set-up for ota's benchmarks: the demo catalog in memory and a registry scaled to
//! any number of devices across the demo's 26 device types.

use std::sync::Arc;

use futures::executor::block_on;
use ota_core::auth::{Caller, Role};
use ota_core::demo;
use ota_core::device::Device;
use ota_core::memory::{MemoryAudit, MemoryCatalog, MemoryConfig, MemoryRegistry, MemoryRollouts};
use ota_core::names::{NamingConvention, ThingName};
use ota_core::ports::Backend;
use ota_core::service::{FleetManager, PublishRequest, Settings};

/// A service over an in-memory backend holding the demo catalog and `devices` devices
/// spread evenly over the 26 demo types, running versions in the demo's pattern
/// (half on 1.0.0, a quarter on 2.0.0, a quarter on the type's latest).
pub fn fleet(devices: usize) -> (FleetManager, Arc<MemoryRegistry>) {
    let registry = Arc::new(MemoryRegistry::default());
    let backend = Backend {
        catalog: Arc::new(MemoryCatalog::default()),
        registry: registry.clone(),
        config: Arc::new(MemoryConfig::default()),
        rollouts: Arc::new(MemoryRollouts::default()),
        audit: Arc::new(MemoryAudit::default()),
        telemetry: Arc::new(ota_core::memory::MemoryTelemetry::default()),
        commands: Arc::new(ota_core::memory::MemoryCommands::default()),
    };
    let svc = FleetManager::new(backend, Settings::default()).expect("valid settings");
    let admin = Caller::new("bench", [Role::Admin]);
    let naming = NamingConvention::default();
    let types = demo::device_types();
    for t in &types {
        for v in demo::versions(t) {
            let req = PublishRequest {
                image: demo::firmware_image(t, &v),
                release_notes: demo::release_notes(t, &v),
                device_type: t.clone(),
                version: v,
                built_at: None,
                extra: Default::default(),
            };
            block_on(svc.publish_firmware(&admin, req)).expect("publish demo firmware");
        }
        block_on(svc.set_ota_enabled(&admin, t, t.as_str() != demo::DISABLED_TYPE)).expect("gate");
    }
    let per_type = devices.div_ceil(types.len());
    let mut made = 0;
    for t in &types {
        let versions = demo::versions(t);
        let latest = versions.last().cloned().expect("every type has a version");
        let group = naming.thing_group_of(t);
        let batch: Vec<Device> = (0..per_type.min(devices - made))
            .filter_map(|n| {
                let version = match n % 4 {
                    0 | 1 => versions[0].clone(),
                    2 => ota_core::version::FirmwareVersion::new(2, 0, 0),
                    _ => latest.clone(),
                };
                Some(Device {
                    firmware_version: Some(version),
                    connected: n % 10 != 0,
                    last_seen: None,
                    ..Device::new(ThingName::parse(&format!("{t}-{n:07}")).ok()?, t.clone(), group.clone())
                })
            })
            .collect();
        made += batch.len();
        registry.extend(batch);
    }
    (svc, registry)
}

/// The machine a figure was taken on, printed with every result: CPU count and the load
/// average from `/proc/loadavg` (a figure taken under load is not a result).
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into());
    format!("{cpus} CPUs, load average {load}")
}

/// The 1-minute load average, for JSON reports.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}
