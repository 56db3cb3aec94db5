//! The world every test here starts from: the local backend (SQLite and a firmware folder in
//! a temp dir) with the demo's versions and four devices per type for three types;
//! beehive_scale's OTA gate is closed, the others are open.

use std::sync::Arc;

use ota_core::auth::{Caller, Role};
use ota_core::demo;
use ota_core::device::Device;
use ota_core::names::DeviceType;
use ota_core::service::{FleetManager, PublishRequest, Settings};
use ota_local::SqliteStore;

pub const TYPES: [&str; 3] = ["pet_feeder", "smart_plug", "beehive_scale"];

pub async fn world() -> (Arc<FleetManager>, Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = ota_local::open_local(dir.path()).unwrap();
    let svc = FleetManager::new(backend, Settings::default());
    let admin = Caller::new("root", [Role::Admin]);
    for name in TYPES {
        let t = DeviceType::parse(name).unwrap();
        for v in demo::versions(&t) {
            let request = PublishRequest {
                image: format!("image {t} {v}").into_bytes(),
                release_notes: demo::release_notes(&t, &v),
                device_type: t.clone(),
                version: v,
                built_at: None,
                extra: Default::default(),
            };
            svc.publish_firmware(&admin, request).await.unwrap();
        }
        let devices = demo::devices(&t, 4).into_iter().map(|(thing, v)| Device {
            thing,
            thing_group: svc.settings().naming.thing_group_of(&t),
            device_type: t.clone(),
            firmware_version: Some(v),
            connected: true,
            last_seen: None,
        });
        svc.backend().registry.upsert_many(devices.collect()).await.unwrap();
        svc.set_ota_enabled(&admin, &t, name != demo::DISABLED_TYPE).await.unwrap();
    }
    (Arc::new(svc), store, dir)
}
