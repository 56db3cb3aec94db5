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
