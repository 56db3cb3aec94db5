//! Service-level rules over the in-memory backend: bad input gets a clear error and changes
//! nothing; roles hold; integrity is checked again when a rollout starts.

use std::sync::Arc;

use ota_core::Error;
use ota_core::auth::{Caller, Role};
use ota_core::catalog::{ArtifactRef, CatalogFile};
use ota_core::demo;
use ota_core::device::{Device, DeviceQuery};
use ota_core::memory::{MemoryAudit, MemoryCatalog, MemoryConfig, MemoryRegistry, MemoryRollouts};
use ota_core::names::{DeviceType, NamingConvention, ThingName};
use ota_core::plan::Action;
use ota_core::policy::RolloutPolicy;
use ota_core::ports::Backend;
use ota_core::rollout::RolloutQuery;
use ota_core::service::{FleetManager, PublishRequest, Settings};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{FirmwareVersion, VersionRequest};

struct World {
    svc: FleetManager,
    catalog: Arc<MemoryCatalog>,
}

fn admin() -> Caller {
    Caller::new("root", [Role::Admin])
}
fn operator() -> Caller {
    Caller::new("ana", [Role::Operator])
}
fn viewer() -> Caller {
    Caller::new("vic", [Role::Viewer])
}
fn ty(s: &str) -> DeviceType {
    DeviceType::parse(s).unwrap()
}
fn ver(s: &str) -> FirmwareVersion {
    FirmwareVersion::parse(s).unwrap()
}

/// The demo world with small images (the catalog's shape matters here, not the size).
async fn world_with(settings: Settings) -> World {
    let catalog = Arc::new(MemoryCatalog::default());
    let registry = Arc::new(MemoryRegistry::default());
    let backend = Backend {
        catalog: catalog.clone(),
        registry: registry.clone(),
        config: Arc::new(MemoryConfig::default()),
        rollouts: Arc::new(MemoryRollouts::default()),
        audit: Arc::new(MemoryAudit::default()),
        telemetry: Arc::new(ota_core::memory::MemoryTelemetry::default()),
        commands: Arc::new(ota_core::memory::MemoryCommands::default()),
    };
    let svc = FleetManager::new(backend, settings).expect("valid settings");
    let naming = NamingConvention::default();
    for t in demo::device_types() {
        for v in demo::versions(&t) {
            let image = format!("image {t} {v}").into_bytes();
            svc.publish_firmware(
                &admin(),
                PublishRequest {
                    device_type: t.clone(),
                    version: v,
                    image,
                    release_notes: String::new(),
                    built_at: None,
                    extra: Default::default(),
                },
            )
            .await
            .unwrap();
        }
        for (thing, v) in demo::devices(&t, 4) {
            registry.extend([Device {
                firmware_version: Some(v),
                connected: true,
                last_seen: None,
                ..Device::new(thing, t.clone(), naming.thing_group_of(&t))
            }]);
        }
        if t.as_str() != demo::DISABLED_TYPE {
            svc.set_ota_enabled(&admin(), &t, true).await.unwrap();
        }
    }
    World { svc, catalog }
}

async fn world() -> World {
    world_with(Settings::default()).await
}

fn update(t: &str, v: &str) -> UpdateRequest {
    UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::parse(v).unwrap(),
        target: Target { device_types: [ty(t)].into(), ..Default::default() },
        filters: Filters::default(),
        revert_on_abort: false,
    }
}

async fn rollout_count(w: &World) -> usize {
    w.svc.backend().rollouts.list(&RolloutQuery::default()).await.unwrap().len()
}

#[tokio::test]
async fn a_missing_or_corrupt_sha256_file_refuses_the_type() {
    let w = world().await;
    let a = ArtifactRef::new(ty("pet_feeder"), ver("3.0.0"));
    w.catalog.put_raw(&a, CatalogFile::Sha256, None);
    let plan = w.svc.plan_update(&operator(), &update("pet_feeder", "3.0.0")).await.unwrap();
    assert!(plan.deployments.is_empty());
    assert!(plan.refusals[0].reason.contains("firmware.sha256 is missing"), "{:?}", plan.refusals);

    w.catalog.put_raw(&a, CatalogFile::Sha256, Some(b"0123 not a digest\n".to_vec()));
    let plan = w.svc.plan_update(&operator(), &update("pet_feeder", "3.0.0")).await.unwrap();
    assert!(plan.refusals[0].reason.contains("firmware.sha256 is malformed"), "{:?}", plan.refusals);
    assert!(matches!(w.svc.start(&operator(), &update("pet_feeder", "3.0.0"), None).await, Err(Error::Refused(_))));
    assert_eq!(rollout_count(&w).await, 0);
}

#[tokio::test]
async fn a_version_folder_missing_a_file_is_refused() {
    let w = world().await;
    for (file, name) in [(CatalogFile::Metadata, "metadata.json"), (CatalogFile::Image, "firmware.bin")] {
        let a = ArtifactRef::new(ty("smart_plug"), ver("3.0.0"));
        let w2 = world().await;
        w2.catalog.put_raw(&a, file, None);
        let plan = w2.svc.plan_update(&operator(), &update("smart_plug", "3.0.0")).await.unwrap();
        assert!(plan.deployments.is_empty());
        assert!(plan.refusals[0].reason.contains(&format!("{name} is missing")), "{:?}", plan.refusals);
    }
    let reports = w.svc.verify_catalog(&viewer(), None).await.unwrap();
    assert_eq!(reports.len(), 64);
    assert!(reports.iter().all(|r| r.error.is_none()));
}

#[tokio::test]
async fn an_image_changed_after_planning_is_caught_when_starting() {
    let w = world().await;
    let req = update("pet_feeder", "3.0.0");
    let plan = w.svc.plan_update(&operator(), &req).await.unwrap();
    assert_eq!(plan.deployments.len(), 1, "{plan:?}");
    // Someone swaps the image on storage; sha256 and metadata files stay as they were.
    let a = ArtifactRef::new(ty("pet_feeder"), ver("3.0.0"));
    w.catalog.put_raw(&a, CatalogFile::Image, Some(b"tampered".to_vec()));
    let err = w.svc.start(&operator(), &req, plan.plan_id.as_deref()).await.unwrap_err();
    assert!(matches!(err, Error::Refused(_) | Error::Conflict(_)), "{err}");
    assert_eq!(rollout_count(&w).await, 0, "no rollout for an image that fails its check");
    let report = w.svc.verify_firmware(&viewer(), &a).await.unwrap_err().to_string();
    assert!(report.contains("firmware.bin hashes to") && report.contains("firmware.sha256 says"), "{report}");
}

#[tokio::test]
async fn roles_are_enforced_and_refusals_audited() {
    let w = world().await;
    let req = update("pet_feeder", "3.0.0");
    assert!(w.svc.list_firmware(&viewer(), None).await.is_ok());
    assert!(w.svc.fleet_status(&viewer(), &DeviceQuery::default()).await.is_ok());
    for err in [
        w.svc.plan_update(&viewer(), &req).await.map(|_| ()).unwrap_err(),
        w.svc.start(&viewer(), &req, None).await.map(|_| ()).unwrap_err(),
        w.svc.set_ota_enabled(&viewer(), &ty("pet_feeder"), false).await.map(|_| ()).unwrap_err(),
        w.svc.set_ota_enabled(&operator(), &ty("beehive_scale"), true).await.map(|_| ()).unwrap_err(),
        w.svc.set_policy(&operator(), &ty("pet_feeder"), None).await.map(|_| ()).unwrap_err(),
        w.svc
            .publish_firmware(
                &operator(),
                PublishRequest {
                    device_type: ty("pet_feeder"),
                    version: ver("4.0.0"),
                    image: vec![1],
                    release_notes: String::new(),
                    built_at: None,
                    extra: Default::default(),
                },
            )
            .await
            .map(|_| ())
            .unwrap_err(),
        w.svc.audit_trail(&operator(), 10).await.map(|_| ()).unwrap_err(),
        w.svc.plan_update(&Caller::new("nobody", []), &req).await.map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(err, Error::Forbidden { .. }), "{err}");
    }
    assert_eq!(rollout_count(&w).await, 0);
    assert_eq!(w.svc.backend().catalog.versions(&ty("pet_feeder")).await.unwrap()[0], ver("3.0.0"));
    let beehive = w.svc.backend().config.get(&ty("beehive_scale")).await.unwrap();
    assert!(beehive.is_none(), "the operator's enable changed nothing");
    let trail = w.svc.audit_trail(&admin(), 100).await.unwrap();
    let refused = trail.iter().filter(|e| matches!(e.outcome, ota_core::audit::AuditOutcome::Refused(_))).count();
    assert!(refused >= 5, "forbidden attempts are in the audit trail: {refused}");
    // The operator can start what the viewer could not.
    let started = w.svc.start(&operator(), &req, None).await.unwrap();
    assert_eq!(started.rollouts[0].things.len(), 3);
    assert_eq!(started.rollouts[0].created_by, "ana");
}

#[tokio::test]
async fn bad_gate_and_policy_changes_change_nothing() {
    let w = world().await;
    let err = w.svc.set_ota_enabled(&admin(), &ty("pet_feedr"), true).await.unwrap_err();
    assert!(matches!(&err, Error::NotFound { hint, .. } if hint.contains("pet_feeder")), "{err}");
    assert!(w.svc.backend().config.get(&ty("pet_feedr")).await.unwrap().is_none());
    let bad = RolloutPolicy { max_in_flight: 0, ..Default::default() };
    let err = w.svc.set_policy(&admin(), &ty("pet_feeder"), Some(bad)).await.unwrap_err();
    assert!(err.to_string().contains("max_in_flight"), "{err}");
    let cfg = w.svc.backend().config.get(&ty("pet_feeder")).await.unwrap().unwrap();
    assert!(cfg.policy.is_none() && cfg.ota_enabled);
    let good = RolloutPolicy { max_in_flight: 2, ..Default::default() };
    w.svc.set_policy(&admin(), &ty("pet_feeder"), Some(good.clone())).await.unwrap();
    let plan = w.svc.plan_update(&operator(), &update("pet_feeder", "latest")).await.unwrap();
    assert_eq!(plan.deployments[0].policy, good, "the type's override is the plan's policy");
}

#[tokio::test]
async fn publishing_is_validated_and_immutable() {
    let w = world().await;
    let publish = |v: &str, image: Vec<u8>| PublishRequest {
        device_type: ty("pet_feeder"),
        version: ver(v),
        image,
        release_notes: "x".into(),
        built_at: None,
        extra: Default::default(),
    };
    let err = w.svc.publish_firmware(&admin(), publish("3.0.0", b"other".to_vec())).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let a = ArtifactRef::new(ty("pet_feeder"), ver("3.0.0"));
    assert!(w.svc.verify_firmware(&viewer(), &a).await.is_ok(), "the published build is untouched");
    assert!(matches!(w.svc.publish_firmware(&admin(), publish("4.0.0", vec![])).await, Err(Error::Invalid { .. })));
    assert_eq!(w.svc.backend().catalog.versions(&ty("pet_feeder")).await.unwrap()[0], ver("3.0.0"));
    let new = w.svc.publish_firmware(&admin(), publish("4.0.0", b"new build".to_vec())).await.unwrap();
    assert_eq!(new.size, 9);
    // A new type is a new folder: nothing else changes, and it starts disabled.
    let fresh = PublishRequest { device_type: ty("robot_vacuum"), ..publish("1.0.0", b"v".to_vec()) };
    w.svc.publish_firmware(&admin(), fresh).await.unwrap();
    let types = w.svc.device_types(&viewer()).await.unwrap();
    let rv = types.iter().find(|t| t.device_type == ty("robot_vacuum")).unwrap();
    assert_eq!(rv.thing_group.as_str(), "RobotVacuumAWSDevice");
    assert!(!rv.ota_enabled, "a type with no record is disabled by default");
}

#[tokio::test]
async fn the_gate_default_is_a_setting() {
    let mut settings = Settings::default();
    settings.gate.enabled_without_record = true;
    let w = world_with(settings).await;
    let plan = w.svc.plan_update(&operator(), &update("beehive_scale", "2.0.0")).await.unwrap();
    assert_eq!(plan.deployments.len(), 1, "beehive_scale has no record and the default is open");
    w.svc.set_ota_enabled(&admin(), &ty("beehive_scale"), false).await.unwrap();
    let plan = w.svc.plan_update(&operator(), &update("beehive_scale", "2.0.0")).await.unwrap();
    assert!(plan.deployments.is_empty(), "an explicit record wins over the default");
}

#[tokio::test]
async fn one_active_rollout_per_type_and_starts_are_all_or_nothing() {
    let w = world().await;
    let first = w.svc.start(&operator(), &update("pet_feeder", "2.0.0"), None).await.unwrap();
    let err = w.svc.start(&operator(), &update("pet_feeder", "3.0.0"), None).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains(first.rollouts[0].id.as_str())), "{err}");
    let fleet = UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::Latest,
        target: Target { whole_fleet: true, ..Default::default() },
        filters: Filters::default(),
        revert_on_abort: false,
    };
    assert!(matches!(w.svc.start(&operator(), &fleet, None).await, Err(Error::Conflict(_))));
    assert_eq!(rollout_count(&w).await, 1, "the conflicting fleet start created nothing for other types");
    w.svc.cancel(&operator(), &first.rollouts[0].id, "").await.unwrap();
    let started = w.svc.start(&operator(), &fleet, None).await.unwrap();
    assert_eq!(started.rollouts.len(), 25);
    assert_eq!(started.plan.refusals.len(), 1);
}

#[tokio::test]
async fn a_plan_id_pins_what_runs() {
    let w = world().await;
    let req = update("pet_feeder", "latest");
    let plan = w.svc.plan_update(&operator(), &req).await.unwrap();
    // The fleet moves on: pet_feeder-01 reports 3.0.0 before the operator confirms.
    let mut d = w.svc.device(&viewer(), &ThingName::parse("pet_feeder-01").unwrap()).await.unwrap();
    d.firmware_version = Some(ver("3.0.0"));
    w.svc.backend().registry.upsert(d).await.unwrap();
    let err = w.svc.start(&operator(), &req, plan.plan_id.as_deref()).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("plan again")), "{err}");
    assert_eq!(rollout_count(&w).await, 0);
}

#[tokio::test]
async fn unknown_things_and_types_name_close_matches() {
    let w = world().await;
    let err = w.svc.device(&viewer(), &ThingName::parse("pet_feeder-3").unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("pet_feeder-03"), "{err}");
    let err = w.svc.list_firmware(&viewer(), Some(&ty("pet_feedr"))).await.unwrap_err();
    assert!(err.to_string().contains("pet_feeder"), "{err}");
    let plan = w.svc.plan_prompt(&viewer(), "List firmware").await.unwrap();
    assert_eq!(plan.action, Action::ListFirmware);
}

#[tokio::test]
async fn words_that_select_by_version_move_exactly_those_devices_even_backwards() {
    let w = world().await;
    // mailbox_notifier-03 runs 2.0.0; -04 runs the latest, 2.0.0 as well (no 3.0.0 for it).
    let plan = w.svc.plan_prompt(&operator(), "Update mailbox_notifier devices running 2.0.0 to 1.0.0").await.unwrap();
    assert_eq!(plan.action, Action::Rollback, "{}", plan.message);
    let things: Vec<&str> = plan.deployments[0].things.iter().map(|t| t.as_str()).collect();
    assert_eq!(things, ["mailbox_notifier-03", "mailbox_notifier-04"], "{}", plan.message);
    assert!(!plan.message.contains("Nothing to"), "{}", plan.message);
}

#[tokio::test]
async fn a_typed_request_with_an_unknown_exclusion_plans_nothing() {
    let w = world().await;
    let mut req = update("pet_feeder", "latest");
    req.filters.exclude_things.insert(ThingName::parse("pet_feeder-77").unwrap());
    let plan = w.svc.plan_update(&operator(), &req).await.unwrap();
    assert!(plan.deployments.is_empty());
    assert!(plan.refusals.iter().any(|r| r.target == "pet_feeder-77" && r.reason.contains("exclusion")), "{plan:?}");
    assert!(matches!(w.svc.start(&operator(), &req, None).await, Err(Error::Refused(_))));
    assert_eq!(rollout_count(&w).await, 0, "nothing changed");
}

#[tokio::test]
async fn invalid_settings_and_invalid_stored_policies_never_reach_a_rollout() {
    let mut bad = Settings::default();
    bad.gate.default_policy.max_in_flight = 0;
    let err = FleetManager::new(ota_core::memory::backend(), bad).unwrap_err();
    assert!(err.to_string().contains("max_in_flight"), "{err}");
    let json = br#"{"naming":{"acronyms":[],"suffix":"AWSDevice"},"gate":{"enabled_without_record":false,"default_policy":{"in_progress_timeout_minutes":0}}}"#;
    let err = Settings::from_json(json, "settings.json").unwrap_err();
    assert!(err.to_string().contains("settings.json") && err.to_string().contains("in_progress_timeout"), "{err}");

    // A policy record written around the service (an older build, another tool) is refused
    // where it would be used.
    let w = world().await;
    let broken = RolloutPolicy { max_in_flight: 5000, ..Default::default() };
    let config = w.svc.backend().config.get(&ty("pet_feeder")).await.unwrap().unwrap();
    w.svc.backend().config.put(ota_core::config::TypeConfig { policy: Some(broken), ..config }).await.unwrap();
    let plan = w.svc.plan_update(&operator(), &update("pet_feeder", "latest")).await.unwrap();
    assert!(plan.deployments.is_empty());
    assert!(plan.refusals[0].reason.contains("policy of pet_feeder is invalid"), "{:?}", plan.refusals);
}

#[tokio::test]
async fn the_same_request_after_its_rollout_ended_starts_a_new_one_and_says_which_happened() {
    let w = world().await;
    let req = update("pet_feeder", "3.0.0");
    let first = w.svc.start(&operator(), &req, None).await.unwrap();
    let id = first.rollouts[0].id.clone();
    assert!(first.summary().starts_with(&format!("started {id}")), "{}", first.summary());
    let again = w.svc.start(&operator(), &req, None).await.unwrap();
    assert_eq!(again.existing, std::slice::from_ref(&id));
    assert!(
        again.summary().starts_with(&format!("already running {id} (pet_feeder), started at ")),
        "{}",
        again.summary()
    );
    w.svc.cancel(&operator(), &id, "changed my mind").await.unwrap();
    let third = w.svc.start(&operator(), &req, None).await.unwrap();
    let new_id = third.rollouts[0].id.clone();
    assert_ne!(new_id, id, "a canceled rollout is never the answer to a new request");
    assert_eq!(new_id.as_str(), format!("{id}-2"));
    assert!(third.existing.is_empty());
    assert!(third.rollouts[0].status.is_active());
}

#[tokio::test]
async fn a_plan_says_when_an_abort_would_roll_the_moved_devices_back() {
    let w = world().await;
    let plan = w
        .svc
        .plan_prompt(&operator(), "Update all pet_feeder devices to 3.0.0 and roll back the updated ones if it aborts")
        .await
        .unwrap();
    assert!(plan.deployments[0].policy.revert_on_abort);
    assert!(
        plan.message.contains("If a rollout of pet_feeder aborts, the devices it moved are rolled back"),
        "{}",
        plan.message
    );
    let plain = w.svc.plan_prompt(&operator(), "Update all pet_feeder devices to 3.0.0").await.unwrap();
    assert!(!plain.message.contains("rolled back"), "{}", plain.message);
    assert_ne!(plain.plan_id, plan.plan_id);
}

#[tokio::test]
async fn a_plan_with_nothing_to_move_still_says_what_it_held_back() {
    let w = world().await;
    // smart_plug: -01 and -02 run 1.0.0, -03 2.0.0, -04 3.0.0.
    let plan = w.svc.plan_prompt(&operator(), "Update all smart_plug devices to 1.0.0").await.unwrap();
    assert!(plan.deployments.is_empty());
    assert!(plan.message.contains("2 devices held back: they run a newer version"), "{}", plan.message);
    let held: Vec<&str> = plan.held_back.iter().map(|h| h.thing.as_str()).collect();
    assert_eq!(held, ["smart_plug-03", "smart_plug-04"]);
}
