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

fn point(name: &str, minutes: i64, values: serde_json::Value) -> crate::ports::TelemetryPoint {
    crate::ports::TelemetryPoint {
        thing: thing(name),
        at: t0() + Duration::minutes(minutes),
        values: values.as_object().cloned().unwrap_or_default(),
    }
}

pub async fn telemetry_is_queried_by_device_metric_and_time_oldest_first(b: &Backend) {
    use crate::ports::TelemetryQuery;
    b.telemetry
        .append(vec![
            point("co2_monitor-01", 0, json!({"co2_ppm": 600, "temperature_c": 21.0})),
            point("co2_monitor-01", 60, json!({"co2_ppm": 640})),
            point("co2_monitor-02", 30, json!({"co2_ppm": 900})),
            point("co2_monitor-01", 120, json!({"temperature_c": 22.5})),
        ])
        .await
        .unwrap();
    let all = b.telemetry.query(&TelemetryQuery::of(thing("co2_monitor-01"))).await.unwrap();
    let minutes =
        |ps: &[crate::ports::TelemetryPoint]| ps.iter().map(|p| (p.at - t0()).num_minutes()).collect::<Vec<_>>();
    assert_eq!(minutes(&all), [0, 60, 120], "one device, oldest first");
    assert_eq!(all[0].values, *json!({"co2_ppm": 600, "temperature_c": 21.0}).as_object().unwrap());

    let co2 = TelemetryQuery { metric: Some("co2_ppm".into()), ..TelemetryQuery::of(thing("co2_monitor-01")) };
    let got = b.telemetry.query(&co2).await.unwrap();
    assert_eq!(minutes(&got), [0, 60], "only the points with the metric");
    assert_eq!(got[0].values, *json!({"co2_ppm": 600}).as_object().unwrap(), "and only the metric");

    let range = TelemetryQuery {
        since: Some(t0() + Duration::minutes(60)),
        until: Some(t0() + Duration::minutes(120)),
        ..TelemetryQuery::of(thing("co2_monitor-01"))
    };
    assert_eq!(minutes(&b.telemetry.query(&range).await.unwrap()), [60], "since inclusive, until exclusive");
    let newest = TelemetryQuery { limit: Some(2), ..TelemetryQuery::of(thing("co2_monitor-01")) };
    assert_eq!(minutes(&b.telemetry.query(&newest).await.unwrap()), [60, 120], "a limit keeps the newest");
    assert!(b.telemetry.query(&TelemetryQuery::of(thing("co2_monitor-09"))).await.unwrap().is_empty());
    let none = TelemetryQuery { metric: Some("humidity".into()), ..TelemetryQuery::of(thing("co2_monitor-01")) };
    assert!(b.telemetry.query(&none).await.unwrap().is_empty());
}

pub async fn telemetry_keeps_the_retention_and_prunes(b: &Backend) {
    use crate::ports::TelemetryQuery;
    let days = b.telemetry.retention().num_days();
    assert_eq!(days, crate::ports::TELEMETRY_RETENTION_DAYS, "7 days unless configured");
    let day = 24 * 60;
    b.telemetry.append(vec![point("energy_meter-01", 0, json!({"power_w": 40}))]).await.unwrap();
    b.telemetry.append(vec![point("energy_meter-01", day, json!({"power_w": 41}))]).await.unwrap();
    b.telemetry.append(vec![point("energy_meter-02", 0, json!({"power_w": 7}))]).await.unwrap();
    // A report 7 days and a minute after the first drops it (that device's only).
    b.telemetry.append(vec![point("energy_meter-01", days * day + 1, json!({"power_w": 42}))]).await.unwrap();
    let kept = b.telemetry.query(&TelemetryQuery::of(thing("energy_meter-01"))).await.unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(b.telemetry.query(&TelemetryQuery::of(thing("energy_meter-02"))).await.unwrap().len(), 1);
    let dropped = b.telemetry.prune(t0() + Duration::minutes(day + 1)).await.unwrap();
    assert_eq!(dropped, 2, "energy_meter-01's second day and energy_meter-02's point");
    assert_eq!(b.telemetry.query(&TelemetryQuery::of(thing("energy_meter-01"))).await.unwrap().len(), 1);
}

pub async fn telemetry_refuses_oversized_points_and_stores_none_of_the_batch(b: &Backend) {
    use crate::ports::{MAX_TELEMETRY_BYTES, TelemetryPoint, TelemetryQuery};
    let big = "x".repeat(MAX_TELEMETRY_BYTES);
    let err = b
        .telemetry
        .append(vec![
            point("co2_monitor-01", 0, json!({"co2_ppm": 1})),
            point("co2_monitor-01", 1, json!({"blob": big})),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, crate::Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("at most 8192 bytes"), "{err}");
    assert!(
        b.telemetry.query(&TelemetryQuery::of(thing("co2_monitor-01"))).await.unwrap().is_empty(),
        "nothing stored"
    );
    // What a device sends is checked before it is a point.
    let t = thing("co2_monitor-01");
    assert!(TelemetryPoint::parse(&t, big.as_bytes(), t0()).is_err());
    assert!(TelemetryPoint::parse(&t, b"[1, 2]", t0()).is_err(), "not an object");
    assert!(TelemetryPoint::parse(&t, b"{not json", t0()).is_err());
    let p = TelemetryPoint::parse(&t, br#"{"values": {"co2_ppm": 5}, "at": "2026-01-01T00:00:00Z"}"#, t0()).unwrap();
    assert_eq!(p.at.to_rfc3339(), "2026-01-01T00:00:00+00:00");
}

pub async fn registry_sets_a_state_and_keeps_every_other_field(b: &Backend) {
    let d = managed("co2_monitor-01", "lab", Some(HealthStatus::Ok), OperationalState::Active);
    b.registry.upsert(d.clone()).await.unwrap();
    let set = b.registry.set_state(&thing("co2_monitor-01"), OperationalState::Maintenance).await.unwrap();
    assert_eq!(set, Device { state: OperationalState::Maintenance, ..d.clone() });
    assert_eq!(b.registry.get(&thing("co2_monitor-01")).await.unwrap(), Some(set));
    let err = b.registry.set_state(&thing("co2_monitor-09"), OperationalState::Retired).await.unwrap_err();
    assert!(matches!(err, crate::Error::NotFound { .. }), "{err}");
    assert_eq!(b.registry.get(&thing("co2_monitor-09")).await.unwrap(), None, "no record made");
}
