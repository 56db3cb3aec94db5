//! The world every test here starts from: the local backend (SQLite and a firmware folder in
//! a temp dir) with the demo's versions and four devices per type for three types;
//! beehive_scale's OTA gate is closed, the others are open.

use std::sync::Arc;

use ota_core::auth::{Caller, Role};
use ota_core::demo;
use ota_core::service::{FleetManager, Settings};
use ota_local::SqliteStore;

pub const TYPES: [&str; 3] = ["pet_feeder", "smart_plug", "beehive_scale"];

pub async fn world() -> (Arc<FleetManager>, Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = ota_local::open_local(dir.path()).unwrap();
    let svc = FleetManager::new(backend, Settings::default()).expect("valid settings");
    let admin = Caller::new("root", [Role::Admin]);
    demo::seed(&svc, &admin, &TYPES, 4, |t, v| format!("image {t} {v}").into_bytes()).await.unwrap();
    (Arc::new(svc), store, dir)
}
