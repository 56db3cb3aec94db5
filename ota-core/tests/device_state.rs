//! Device state over the in-memory backend: devices in maintenance or retired are left out of
//! rollouts unless named one by one, and the plan says so.

use ota_core::auth::{Caller, Role};
use ota_core::demo;
use ota_core::device::OperationalState;
use ota_core::names::{DeviceType, ThingName};
use ota_core::service::{FleetManager, Settings};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::VersionRequest;

fn admin() -> Caller {
    Caller::new("root", [Role::Admin])
}
fn operator() -> Caller {
    Caller::new("ana", [Role::Operator])
}
fn thing(s: &str) -> ThingName {
    ThingName::parse(s).unwrap()
}

async fn world() -> FleetManager {
    let svc = FleetManager::new(ota_core::memory::backend(), Settings::default()).expect("valid settings");
    demo::seed(&svc, &admin(), &["smart_plug", "pet_feeder"], 4, |t, v| format!("image {t} {v}").into_bytes())
        .await
        .unwrap();
    svc
}

fn update_type(t: &str, v: &str) -> UpdateRequest {
    UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::parse(v).unwrap(),
        target: Target { device_types: [DeviceType::parse(t).unwrap()].into(), ..Default::default() },
        filters: Filters::default(),
        revert_on_abort: false,
    }
}

async fn put_state(svc: &FleetManager, name: &str, state: OperationalState) {
    let mut d = svc.backend().registry.get(&thing(name)).await.unwrap().unwrap();
    d.state = state;
    svc.backend().registry.upsert(d).await.unwrap();
}

fn planned(plan: &ota_core::plan::Plan) -> Vec<String> {
    plan.deployments.iter().flat_map(|d| d.things.iter().map(|t| t.to_string())).collect()
}

#[tokio::test]
async fn a_device_in_maintenance_is_held_back_unless_named_and_comes_back_when_active() {
    let svc = world().await;
    // smart_plug 3.0.0: -01, -02 (1.0.0) and -03 (2.0.0) move; -04 runs it already.
    let before = svc.plan_update(&operator(), &update_type("smart_plug", "3.0.0")).await.unwrap();
    assert_eq!(planned(&before), ["smart_plug-01", "smart_plug-02", "smart_plug-03"]);

    put_state(&svc, "smart_plug-02", OperationalState::Maintenance).await;
    put_state(&svc, "smart_plug-03", OperationalState::Retired).await;
    let plan = svc.plan_update(&operator(), &update_type("smart_plug", "3.0.0")).await.unwrap();
    assert_eq!(planned(&plan), ["smart_plug-01"]);
    assert!(
        plan.message.contains("held back smart_plug-02: in maintenance; name it to include it"),
        "{}",
        plan.message
    );
    assert!(plan.message.contains("held back smart_plug-03: retired; name it to include it"), "{}", plan.message);
    let held: Vec<(&str, &str)> = plan.held_back.iter().map(|h| (h.thing.as_str(), h.reason.as_str())).collect();
    assert_eq!(
        held,
        [
            ("smart_plug-02", "in maintenance; name it to include it"),
            ("smart_plug-03", "retired; name it to include it")
        ]
    );
    let q = &plan.deployments[0].fleet_query;
    assert!(q.contains("AND NOT thingName:smart_plug-02") && q.contains("AND NOT thingName:smart_plug-03"), "{q}");
    assert_ne!(plan.plan_id, before.plan_id, "a different set of devices is a different plan");

    // Named one by one, a device in maintenance takes part.
    let mut named = update_type("smart_plug", "3.0.0");
    named.target = Target { things: [thing("smart_plug-02")].into(), ..Default::default() };
    let plan = svc.plan_update(&operator(), &named).await.unwrap();
    assert_eq!(planned(&plan), ["smart_plug-02"]);
    assert!(plan.held_back.is_empty(), "{:?}", plan.held_back);

    // The whole fleet leaves it out too.
    let mut fleet = update_type("smart_plug", "latest");
    fleet.target = Target { whole_fleet: true, ..Default::default() };
    let plan = svc.plan_update(&operator(), &fleet).await.unwrap();
    assert!(!planned(&plan).contains(&"smart_plug-02".to_string()), "{:?}", planned(&plan));
    assert!(planned(&plan).contains(&"pet_feeder-01".to_string()));

    // Back to active: the same request includes it again, and plans what it planned at first.
    put_state(&svc, "smart_plug-02", OperationalState::Active).await;
    put_state(&svc, "smart_plug-03", OperationalState::Active).await;
    let again = svc.plan_update(&operator(), &update_type("smart_plug", "3.0.0")).await.unwrap();
    assert_eq!(planned(&again), ["smart_plug-01", "smart_plug-02", "smart_plug-03"]);
    assert!(again.held_back.is_empty() && !again.message.contains("held back smart_plug"), "{}", again.message);
    assert_eq!(again.plan_id, before.plan_id);
}

#[tokio::test]
async fn a_type_whose_only_movers_are_in_maintenance_plans_nothing_and_says_why() {
    let svc = world().await;
    for n in ["smart_plug-01", "smart_plug-02", "smart_plug-03"] {
        put_state(&svc, n, OperationalState::Maintenance).await;
    }
    let plan = svc.plan_update(&operator(), &update_type("smart_plug", "3.0.0")).await.unwrap();
    assert!(plan.deployments.is_empty() && plan.plan_id.is_none(), "{plan:?}");
    assert_eq!(plan.held_back.len(), 3);
    assert!(plan.message.contains("held back smart_plug-01: in maintenance"), "{}", plan.message);
}

fn viewer() -> Caller {
    Caller::new("vic", [Role::Viewer])
}

#[tokio::test]
async fn an_operator_sets_the_state_audited_and_the_plan_follows_it_both_ways() {
    let svc = world().await;
    let plug = thing("smart_plug-02");
    let d =
        svc.set_device_state(&operator(), &plug, OperationalState::Maintenance, "replacing the relay").await.unwrap();
    assert_eq!(d.state, OperationalState::Maintenance);
    assert_eq!(d.firmware_version.map(|v| v.to_string()).as_deref(), Some("1.0.0"), "nothing else changes");
    let plan = svc.plan_update(&operator(), &update_type("smart_plug", "3.0.0")).await.unwrap();
    assert_eq!(planned(&plan), ["smart_plug-01", "smart_plug-03"]);
    assert!(
        plan.message.contains("held back smart_plug-02: in maintenance; name it to include it"),
        "{}",
        plan.message
    );

    let status = svc.device_status(&viewer(), &plug).await.unwrap();
    assert_eq!(status.state, OperationalState::Maintenance);
    assert!(status.summary.contains("maintenance"), "{}", status.summary);

    svc.set_device_state(&operator(), &plug, OperationalState::Active, "").await.unwrap();
    let plan = svc.plan_update(&operator(), &update_type("smart_plug", "3.0.0")).await.unwrap();
    assert_eq!(
        planned(&plan),
        ["smart_plug-01", "smart_plug-02", "smart_plug-03"],
        "the same request includes it again"
    );

    let trail = svc.backend().audit.recent(10).await.unwrap();
    let sets: Vec<&str> = trail
        .iter()
        .filter(|e| e.operation == "set a device's state")
        .map(|e| match &e.outcome {
            ota_core::audit::AuditOutcome::Ok(s) => s.as_str(),
            _ => "not ok",
        })
        .collect();
    assert_eq!(
        sets,
        [
            "smart_plug-02: maintenance -> active; set by ana",
            "smart_plug-02: active -> maintenance; replacing the relay"
        ]
    );
}

#[tokio::test]
async fn a_viewer_cannot_set_a_state_and_an_unknown_device_changes_nothing() {
    let svc = world().await;
    let plug = thing("smart_plug-02");
    let err = svc.set_device_state(&viewer(), &plug, OperationalState::Retired, "").await.unwrap_err();
    assert!(matches!(err, ota_core::Error::Forbidden { .. }), "{err}");
    assert_eq!(svc.device_status(&viewer(), &plug).await.unwrap().state, OperationalState::Active, "unchanged");
    let err =
        svc.set_device_state(&operator(), &thing("smart_plug-99"), OperationalState::Retired, "").await.unwrap_err();
    assert!(matches!(err, ota_core::Error::NotFound { .. }), "{err}");
    assert!(svc.backend().registry.get(&thing("smart_plug-99")).await.unwrap().is_none(), "no record made");
    let refused = svc
        .backend()
        .audit
        .recent(10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.outcome, ota_core::audit::AuditOutcome::Refused(_)))
        .count();
    assert_eq!(refused, 2, "both refusals are audited");
    assert!(matches!(
        svc.device_status(&viewer(), &thing("smart_plug-99")).await.unwrap_err(),
        ota_core::Error::NotFound { .. }
    ));
}

#[tokio::test]
async fn the_status_of_a_device_says_everything_in_one_answer() {
    use ota_core::device::{Health, HealthStatus, LOCATION, Telemetry};
    let svc = world().await;
    let name = thing("pet_feeder-03");
    let mut d = svc.backend().registry.get(&name).await.unwrap().unwrap();
    d.attributes.insert(LOCATION.into(), "factory-floor-2".into());
    d.health = Some(Health { status: HealthStatus::Warning, message: "hopper low".into() });
    d.connected = false;
    d.last_seen = Some(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000));
    let values = serde_json::json!({"food_level_pct": 12}).as_object().cloned().unwrap();
    d.telemetry = Some(Telemetry { values: values.clone(), at: d.last_seen.unwrap() });
    svc.backend().registry.upsert(d.clone()).await.unwrap();
    svc.backend()
        .telemetry
        .append(vec![ota_core::ports::TelemetryPoint { thing: name.clone(), at: d.last_seen.unwrap(), values }])
        .await
        .unwrap();

    let s = svc.device_status(&viewer(), &name).await.unwrap();
    assert_eq!(s.device, d);
    assert_eq!(
        (s.connectivity.as_str(), s.connected, s.location.as_deref()),
        ("offline", false, Some("factory-floor-2"))
    );
    assert_eq!(s.health.as_ref().map(|h| h.status), Some(HealthStatus::Warning));
    assert_eq!(
        s.summary,
        "pet_feeder-03 at factory-floor-2: offline (last seen 2024-10-04T00:00:00Z), health warning (hopper low), active, runs 2.0.0"
    );
    let history = svc.telemetry(&viewer(), &ota_core::ports::TelemetryQuery::of(name.clone())).await.unwrap();
    assert_eq!(history.len(), 1);
}
