//! Device management behaviours every backend with a full registry runs: what the registry
//! keeps of a device besides firmware and connectivity, and queries by location, health and
//! state. Run by [`super::run_device_management`].

use std::collections::BTreeMap;

use chrono::Duration;
use serde_json::json;

use super::{device, t0, thing};
use crate::device::{Device, DeviceConfig, DeviceQuery, Health, HealthStatus, LOCATION, OperationalState, Telemetry};
use crate::ports::Backend;

fn managed(name: &str, location: &str, health: Option<HealthStatus>, state: OperationalState) -> Device {
    let mut d = device(name, Some("1.0.0"), true);
    d.attributes.insert(LOCATION.into(), location.into());
    d.health = health.map(|status| Health { status, message: format!("{status} on {name}") });
    d.state = state;
    d
}

pub async fn registry_keeps_attributes_health_state_telemetry_and_config(b: &Backend) {
    let mut d = device("co2_monitor-01", Some("1.0.0"), true);
    d.attributes =
        BTreeMap::from([(LOCATION.to_string(), "factory-floor-1/line-7".to_string()), ("rack".into(), "B2".into())]);
    d.health = Some(Health { status: HealthStatus::Warning, message: "PM2.5 sensor drift".into() });
    d.state = OperationalState::Maintenance;
    d.telemetry = Some(Telemetry {
        values: json!({"co2_ppm": 612, "temperature_c": 21.5}).as_object().cloned().unwrap_or_default(),
        at: t0() + Duration::seconds(30),
    });
    d.config = DeviceConfig {
        reported: json!({"sample_rate_seconds": 60}).as_object().cloned().unwrap_or_default(),
        desired: json!({"sample_rate_seconds": 10}).as_object().cloned().unwrap_or_default(),
    };
    b.registry.upsert(d.clone()).await.unwrap();
    assert_eq!(b.registry.get(&thing("co2_monitor-01")).await.unwrap(), Some(d.clone()), "every field reads back");
    let listed = b.registry.list(&DeviceQuery::default()).await.unwrap();
    assert_eq!(listed, [d.clone()]);

    // A plain record (as registration writes) reads back with the defaults.
    let plain = device("co2_monitor-02", None, false);
    b.registry.upsert(plain.clone()).await.unwrap();
    let back = b.registry.get(&thing("co2_monitor-02")).await.unwrap().unwrap();
    assert_eq!(back, plain);
    assert_eq!(back.state, OperationalState::Active);

    // Replacing a record replaces its management fields too.
    d.state = OperationalState::Active;
    d.health = None;
    b.registry.upsert(d.clone()).await.unwrap();
    assert_eq!(b.registry.get(&thing("co2_monitor-01")).await.unwrap(), Some(d));
}

pub async fn registry_queries_filter_by_location_health_and_state(b: &Backend) {
    use HealthStatus::*;
    use OperationalState::*;
    for d in [
        managed("co2_monitor-01", "factory-floor-1/line-7", Some(Ok), Active),
        managed("co2_monitor-02", "factory-floor-1/line-3", Some(Warning), Active),
        managed("co2_monitor-03", "factory-floor-2", Some(Ok), Maintenance),
        managed("co2_monitor-04", "lab", None, Retired),
        managed("smart_plug-01", "factory-floor-10", Some(Error), Active),
    ] {
        b.registry.upsert(d).await.unwrap();
    }
    let names = |ds: Vec<Device>| ds.into_iter().map(|d| d.thing.to_string()).collect::<Vec<_>>();
    let list = |q: DeviceQuery| async move { names(b.registry.list(&q).await.unwrap()) };
    let at = |l: &str| DeviceQuery { location: Some(l.into()), ..Default::default() };
    assert_eq!(list(at("factory-floor-1")).await, ["co2_monitor-01", "co2_monitor-02"], "a prefix stops at `/`");
    assert_eq!(list(at("factory-floor-1/line-7")).await, ["co2_monitor-01"]);
    assert_eq!(list(at("line 7")).await, ["co2_monitor-01"], "as a person writes it");
    assert_eq!(list(at("Factory Floor 2")).await, ["co2_monitor-03"]);
    assert!(list(at("line 9")).await.is_empty());
    let health = |h| DeviceQuery { health: Some(h), ..Default::default() };
    assert_eq!(list(health(Warning)).await, ["co2_monitor-02"]);
    assert_eq!(list(health(Error)).await, ["smart_plug-01"]);
    assert_eq!(list(health(Ok)).await, ["co2_monitor-01", "co2_monitor-03"]);
    let state = |s| DeviceQuery { state: Some(s), ..Default::default() };
    assert_eq!(list(state(Maintenance)).await, ["co2_monitor-03"]);
    assert_eq!(list(state(Retired)).await, ["co2_monitor-04"]);
    assert_eq!(list(state(Active)).await, ["co2_monitor-01", "co2_monitor-02", "smart_plug-01"]);
    let both = DeviceQuery {
        location: Some("factory-floor-1".into()),
        health: Some(Ok),
        connected: Some(true),
        ..Default::default()
    };
    assert_eq!(list(both).await, ["co2_monitor-01"], "filters combine");
}
