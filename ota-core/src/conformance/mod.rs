//! The one behaviour suite every backend runs (the object_store `integration.rs` shape): a
//! `pub async fn` per behaviour, each given a fresh, empty backend, and [`run_all`].
//!
//! Backends call it from a test:
//! ```no_run
//! # async fn example() {
//! ota_core::conformance::run_all(|| async { ota_core::memory::backend() }).await;
//! # }
//! ```

use std::future::Future;

mod commands;
mod devices;
mod lifecycle;
pub use lifecycle::lifecycle_model;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;

use crate::audit::{AuditEntry, AuditOutcome};
use crate::auth::{Caller, Role};
use crate::catalog::{ArtifactRef, FirmwareMetadata, sha256_file_content};
use crate::config::TypeConfig;
use crate::device::{Device, DeviceQuery};
use crate::error::Error;
use crate::integrity::Sha256Verifier;
use crate::names::{DeviceType, JobId, NamingConvention, ThingName};
use crate::policy::RolloutPolicy;
use crate::ports::Backend;
use crate::rollout::{Rollout, RolloutQuery, RolloutStatus};
use crate::service::{FleetManager, PublishRequest, Settings};
use crate::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use crate::version::{FirmwareVersion, VersionFilter, VersionRequest};

/// Runs every behaviour, each on a backend from `fresh`.
pub async fn run_all<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Backend>,
{
    macro_rules! run {
        ($($f:ident),* $(,)?) => { $( $f(&fresh().await).await; )* };
    }
    run!(
        catalog_publish_then_read_back,
        catalog_published_versions_are_immutable,
        catalog_missing_files_are_not_found,
        catalog_versions_are_per_type_highest_first,
        catalog_streams_large_images_in_chunks,
        registry_upserts_gets_and_lists_sorted,
        registry_queries_filter_by_type_version_and_connectivity,
        config_absent_then_put_replaces,
        rollouts_create_get_and_list_newest_first,
        rollouts_ids_are_unique,
        rollouts_allow_one_active_per_type,
        rollouts_racing_creates_admit_exactly_one_per_type,
        rollouts_finish_only_once,
        audit_is_append_only_and_newest_first,
        service_refuses_artifacts_whose_files_disagree,
        service_plans_starts_repeats_and_cancels,
    );
}

/// The device management behaviours (attributes, health, state, telemetry, configuration,
/// and the telemetry history), each on a backend from `fresh`. Separate from [`run_all`]
/// while a backend (AWS) does not implement them all.
pub async fn run_device_management<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Backend>,
{
    macro_rules! run {
        ($($f:ident),* $(,)?) => { $( devices::$f(&fresh().await).await; )* };
    }
    run!(
        registry_keeps_attributes_health_state_telemetry_and_config,
        registry_queries_filter_by_location_health_and_state,
        registry_sets_a_state_and_keeps_every_other_field,
        telemetry_is_queried_by_device_metric_and_time_oldest_first,
        telemetry_keeps_the_retention_and_prunes,
        telemetry_refuses_oversized_points_and_stores_none_of_the_batch,
    );
}

/// The command run behaviours (create, get, list, advance, respond, cancel, and the service's
/// start over them), each on a backend from `fresh`. Separate from [`run_all`] while a backend
/// (AWS) does not implement them all.
pub async fn run_commands<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Backend>,
{
    macro_rules! run {
        ($($f:ident),* $(,)?) => { $( commands::$f(&fresh().await).await; )* };
    }
    run!(
        commands_create_get_and_list_newest_first,
        commands_advance_paces_by_the_in_flight_limit_and_completes,
        commands_respond_records_answers_of_the_device_only,
        commands_time_out_and_a_late_answer_changes_nothing,
        commands_abort_past_the_thresholds_and_cancel_what_was_not_sent,
        commands_cancel_keeps_what_was_sent,
        commands_runs_advance_together_in_id_order,
        commands_service_starts_repeats_and_runs_again,
    );
}

fn ty(s: &str) -> DeviceType {
    DeviceType::parse(s).expect("valid type")
}
fn ver(s: &str) -> FirmwareVersion {
    FirmwareVersion::parse(s).expect("valid version")
}
fn thing(s: &str) -> ThingName {
    ThingName::parse(s).expect("valid thing")
}
fn t0() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + Duration::days(20_000)
}

fn image(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The digest and a `metadata.json` that agree with `img`.
fn describe(a: &ArtifactRef, img: &[u8], notes: String) -> (crate::catalog::Sha256Digest, FirmwareMetadata) {
    let mut h = Sha256Verifier::new();
    h.update(img);
    let (sha, size) = h.finish();
    let meta = FirmwareMetadata {
        version: a.version.clone(),
        device_type: a.device_type.clone(),
        size,
        sha256: sha,
        built_at: t0(),
        release_notes: notes,
        signature: None,
        security_version: 0,
        commands: Vec::new(),
        settings: Default::default(),
        extra: Default::default(),
    };
    (sha, meta)
}

/// Publishes a consistent artifact straight through the port.
async fn put_artifact(b: &Backend, t: &str, v: &str, img: Vec<u8>) -> ArtifactRef {
    let a = ArtifactRef::new(ty(t), ver(v));
    let (sha, meta) = describe(&a, &img, format!("{t} {v}"));
    b.catalog.publish(&a, img, sha256_file_content(&sha), meta.to_json()).await.expect("publish");
    a
}

fn device(name: &str, version: Option<&str>, connected: bool) -> Device {
    let t = thing(name);
    let (d_ty, _) = t.conventional_parts().expect("conventional name");
    Device {
        firmware_version: version.map(ver),
        connected,
        last_seen: Some(t0()),
        ..Device::new(t, d_ty.clone(), NamingConvention::default().thing_group_of(&d_ty))
    }
}

fn rollout(id: &str, t: &str, created: DateTime<Utc>) -> Rollout {
    Rollout {
        id: JobId::parse(id).expect("valid id"),
        plan_id: "plan-test".into(),
        action: UpdateAction::Update,
        device_type: ty(t),
        thing_group: NamingConvention::default().thing_group_of(&ty(t)),
        version: ver("2.0.0"),
        sha256: crate::catalog::Sha256Digest([1; 32]),
        size: 10,
        things: vec![thing(&format!("{t}-01"))],
        fleet_query: format!("thingName:{t}-01"),
        policy: RolloutPolicy::default(),
        status: RolloutStatus::InProgress,
        status_reason: None,
        created_by: "tester".into(),
        created_at: created,
        updated_at: created,
        from_versions: Default::default(),
        revert_of: None,
        signature: None,
        security_version: 0,
    }
}

async fn read_all(b: &Backend, a: &ArtifactRef) -> (Vec<u8>, usize) {
    let mut s = b.catalog.open(a).await.expect("open");
    let mut out = Vec::new();
    let mut chunks = 0;
    while let Some(c) = s.next().await {
        out.extend(c.expect("chunk"));
        chunks += 1;
    }
    (out, chunks)
}

pub async fn catalog_publish_then_read_back(b: &Backend) {
    assert!(b.catalog.artifacts().await.unwrap().is_empty(), "a fresh catalog is empty");
    let img = image(1, 1000);
    let a = put_artifact(b, "pet_feeder", "1.0.0", img.clone()).await;
    assert_eq!(b.catalog.artifacts().await.unwrap(), vec![a.clone()]);
    assert_eq!(read_all(b, &a).await.0, img);
    let sha = crate::catalog::parse_sha256_file(&b.catalog.read_sha256(&a).await.unwrap()).unwrap();
    let meta = FirmwareMetadata::parse(&a, &b.catalog.read_metadata(&a).await.unwrap()).unwrap();
    assert_eq!(meta.sha256, sha);
    assert_eq!(meta.size, 1000);
    assert_eq!(meta.release_notes, "pet_feeder 1.0.0");
}

pub async fn catalog_published_versions_are_immutable(b: &Backend) {
    let a = put_artifact(b, "pet_feeder", "1.0.0", image(1, 100)).await;
    let err = b.catalog.publish(&a, image(2, 100), "x".into(), b"{}".to_vec()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(read_all(b, &a).await.0, image(1, 100), "the first image is untouched");
}

pub async fn catalog_missing_files_are_not_found(b: &Backend) {
    let a = ArtifactRef::new(ty("pet_feeder"), ver("9.9.9"));
    assert!(matches!(b.catalog.read_sha256(&a).await, Err(Error::NotFound { .. })));
    assert!(matches!(b.catalog.read_metadata(&a).await, Err(Error::NotFound { .. })));
    assert!(matches!(b.catalog.open(&a).await.map(|_| ()), Err(Error::NotFound { .. })));
}

pub async fn catalog_versions_are_per_type_highest_first(b: &Backend) {
    for (t, v) in [
        ("pet_feeder", "1.0.0"),
        ("pet_feeder", "2.1.0"),
        ("pet_feeder", "2.0.0"),
        ("smart_plug", "3.0.0"),
        ("pet_feeder", "10.0.0"),
    ] {
        put_artifact(b, t, v, image(3, 10)).await;
    }
    let v = b.catalog.versions(&ty("pet_feeder")).await.unwrap();
    assert_eq!(v, vec![ver("10.0.0"), ver("2.1.0"), ver("2.0.0"), ver("1.0.0")], "semver order, not string order");
    assert_eq!(b.catalog.versions(&ty("smart_plug")).await.unwrap(), vec![ver("3.0.0")]);
    assert!(b.catalog.versions(&ty("motion_sensor")).await.unwrap().is_empty());
    // "latest" for a type ignores versions that lack its folder.
    let latest = VersionRequest::Latest.resolve(&b.catalog.versions(&ty("smart_plug")).await.unwrap());
    assert_eq!(latest, Some(ver("3.0.0")));
}

pub async fn catalog_streams_large_images_in_chunks(b: &Backend) {
    let img = image(4, 3 * 1024 * 1024 + 17);
    let a = put_artifact(b, "pet_feeder", "1.0.0", img.clone()).await;
    let (back, chunks) = read_all(b, &a).await;
    assert!(back == img, "streamed bytes equal the published image");
    assert!(chunks > 1, "a 3 MiB image arrives in more than one chunk");
}

pub async fn registry_upserts_gets_and_lists_sorted(b: &Backend) {
    for n in ["pet_feeder-02", "smart_plug-01", "pet_feeder-01"] {
        b.registry.upsert(device(n, Some("1.0.0"), true)).await.unwrap();
    }
    let all = b.registry.list(&DeviceQuery::default()).await.unwrap();
    let names: Vec<&str> = all.iter().map(|d| d.thing.as_str()).collect();
    assert_eq!(names, ["pet_feeder-01", "pet_feeder-02", "smart_plug-01"]);
    let mut d = device("pet_feeder-02", Some("2.0.0"), false);
    d.last_seen = Some(t0() + Duration::seconds(5));
    b.registry.upsert(d.clone()).await.unwrap();
    assert_eq!(b.registry.get(&thing("pet_feeder-02")).await.unwrap(), Some(d), "upsert replaces");
    assert_eq!(b.registry.get(&thing("pet_feeder-09")).await.unwrap(), None);
    assert_eq!(b.registry.device_types().await.unwrap(), vec![ty("pet_feeder"), ty("smart_plug")]);
    assert_eq!(b.registry.list(&DeviceQuery::default()).await.unwrap().len(), 3);
}

pub async fn registry_queries_filter_by_type_version_and_connectivity(b: &Backend) {
    for (n, v, c) in [
        ("pet_feeder-01", Some("1.0.0"), true),
        ("pet_feeder-02", Some("1.1.0"), false),
        ("pet_feeder-03", Some("2.0.0"), true),
        ("pet_feeder-04", None, true),
        ("smart_plug-01", Some("1.0.0"), true),
    ] {
        b.registry.upsert(device(n, v, c)).await.unwrap();
    }
    let q = |t: Option<&str>, v: Option<&str>, c: Option<bool>| DeviceQuery {
        device_type: t.map(ty),
        version: v.map(|v| VersionFilter::parse(v).unwrap()),
        connected: c,
        ..Default::default()
    };
    let names = |ds: Vec<Device>| ds.into_iter().map(|d| d.thing.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(b.registry.list(&q(Some("pet_feeder"), Some("1.x"), None)).await.unwrap()),
        ["pet_feeder-01", "pet_feeder-02"]
    );
    assert_eq!(
        names(b.registry.list(&q(None, Some("1.0.0"), None)).await.unwrap()),
        ["pet_feeder-01", "smart_plug-01"]
    );
    assert_eq!(names(b.registry.list(&q(Some("pet_feeder"), None, Some(false))).await.unwrap()), ["pet_feeder-02"]);
    assert_eq!(b.registry.list(&q(Some("motion_sensor"), None, None)).await.unwrap().len(), 0);
}

pub async fn config_absent_then_put_replaces(b: &Backend) {
    assert_eq!(b.config.get(&ty("pet_feeder")).await.unwrap(), None);
    let mut c = TypeConfig {
        device_type: ty("pet_feeder"),
        ota_enabled: true,
        policy: None,
        updated_by: "admin".into(),
        updated_at: t0(),
    };
    b.config.put(c.clone()).await.unwrap();
    assert_eq!(b.config.get(&ty("pet_feeder")).await.unwrap(), Some(c.clone()));
    c.ota_enabled = false;
    c.policy = Some(RolloutPolicy { max_in_flight: 3, max_per_minute: Some(20), ..Default::default() });
    b.config.put(c.clone()).await.unwrap();
    b.config
        .put(TypeConfig {
            device_type: ty("beehive_scale"),
            ota_enabled: false,
            policy: None,
            updated_by: "a".into(),
            updated_at: t0(),
        })
        .await
        .unwrap();
    assert_eq!(b.config.get(&ty("pet_feeder")).await.unwrap(), Some(c), "put replaces, policy round-trips");
    let list: Vec<String> = b.config.list().await.unwrap().into_iter().map(|c| c.device_type.to_string()).collect();
    assert_eq!(list, ["beehive_scale", "pet_feeder"]);
}

pub async fn rollouts_create_get_and_list_newest_first(b: &Backend) {
    let r1 = rollout("update-a-1", "pet_feeder", t0());
    let r2 = rollout("update-b-1", "smart_plug", t0() + Duration::seconds(10));
    b.rollouts.create(&r1).await.unwrap();
    b.rollouts.create(&r2).await.unwrap();
    assert_eq!(b.rollouts.get(&r1.id).await.unwrap(), r1, "a rollout round-trips exactly");
    let ids = |rs: Vec<Rollout>| rs.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(b.rollouts.list(&RolloutQuery::default()).await.unwrap()), ["update-b-1", "update-a-1"]);
    let q = RolloutQuery { device_type: Some(ty("pet_feeder")), ..Default::default() };
    assert_eq!(ids(b.rollouts.list(&q).await.unwrap()), ["update-a-1"]);
    let q = RolloutQuery { limit: Some(1), ..Default::default() };
    assert_eq!(ids(b.rollouts.list(&q).await.unwrap()), ["update-b-1"]);
    assert!(matches!(b.rollouts.get(&JobId::parse("nope").unwrap()).await, Err(Error::NotFound { .. })));
}

pub async fn rollouts_ids_are_unique(b: &Backend) {
    let r = rollout("update-a-1", "pet_feeder", t0());
    b.rollouts.create(&r).await.unwrap();
    b.rollouts.finish(&r.id, RolloutStatus::Completed, "done", t0()).await.unwrap();
    let mut again = rollout("update-a-1", "smart_plug", t0());
    again.things = vec![];
    assert!(matches!(b.rollouts.create(&again).await, Err(Error::AlreadyExists { .. })));
    assert_eq!(b.rollouts.get(&r.id).await.unwrap().device_type, ty("pet_feeder"), "nothing replaced");
}

pub async fn rollouts_allow_one_active_per_type(b: &Backend) {
    let r1 = rollout("update-a-1", "pet_feeder", t0());
    b.rollouts.create(&r1).await.unwrap();
    let err = b.rollouts.create(&rollout("update-a-2", "pet_feeder", t0())).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("update-a-1")), "names the active one: {err}");
    assert!(matches!(b.rollouts.get(&JobId::parse("update-a-2").unwrap()).await, Err(Error::NotFound { .. })));
    b.rollouts.create(&rollout("update-b-1", "smart_plug", t0())).await.expect("other types are free");
    b.rollouts.finish(&r1.id, RolloutStatus::Canceled, "stop", t0()).await.unwrap();
    b.rollouts.create(&rollout("update-a-2", "pet_feeder", t0())).await.expect("free again once the first ended");
    let q = RolloutQuery { active_only: true, ..Default::default() };
    assert_eq!(b.rollouts.list(&q).await.unwrap().len(), 2);
}

/// Creates racing for one device type (different ids, all in flight at once, as two starts
/// from two front doors would be): exactly one is stored and active, every other gets
/// `Conflict` naming it and leaves nothing stored. Racers for another type do not interfere.
pub async fn rollouts_racing_creates_admit_exactly_one_per_type(b: &Backend) {
    let types = ["pet_feeder", "smart_plug"];
    let racers: Vec<Rollout> = (1..=4)
        .flat_map(|n| types.map(|t| rollout(&format!("update-{t}-race-{n}"), t, t0() + Duration::seconds(n))))
        .collect();
    let results = futures::future::join_all(racers.iter().map(|r| b.rollouts.create(r))).await;
    let q = RolloutQuery { active_only: true, ..Default::default() };
    let active = b.rollouts.list(&q).await.unwrap();
    for t in types {
        let entered: Vec<(&Rollout, &crate::Result<()>)> =
            racers.iter().zip(&results).filter(|(r, _)| r.device_type == ty(t)).collect();
        let winners: Vec<&JobId> = entered.iter().filter(|(_, res)| res.is_ok()).map(|(r, _)| &r.id).collect();
        assert_eq!(winners.len(), 1, "exactly one racing create for {t} wins: {results:?}");
        let winner = winners[0].to_string();
        for (r, res) in &entered {
            if let Err(e) = res {
                assert!(matches!(e, Error::Conflict(m) if m.contains(&winner)), "{} lost to {winner}: {e}", r.id);
                assert!(
                    matches!(b.rollouts.get(&r.id).await, Err(Error::NotFound { .. })),
                    "a losing create stored nothing: {}",
                    r.id
                );
            }
        }
        let stored: Vec<String> = active.iter().filter(|r| r.device_type == ty(t)).map(|r| r.id.to_string()).collect();
        assert_eq!(stored, [winner], "one active rollout for {t}");
    }
    assert_eq!(active.len(), types.len());
}

pub async fn rollouts_finish_only_once(b: &Backend) {
    let r = rollout("update-a-1", "pet_feeder", t0());
    b.rollouts.create(&r).await.unwrap();
    let later = t0() + Duration::minutes(3);
    let done = b.rollouts.finish(&r.id, RolloutStatus::Aborted, "3 of 16 failed", later).await.unwrap();
    assert_eq!(
        (done.status, done.status_reason.as_deref(), done.updated_at),
        (RolloutStatus::Aborted, Some("3 of 16 failed"), later)
    );
    assert_eq!(b.rollouts.get(&r.id).await.unwrap(), done);
    let err = b.rollouts.finish(&r.id, RolloutStatus::Canceled, "again", later).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("ABORTED")), "{err}");
    assert!(matches!(
        b.rollouts.finish(&JobId::parse("nope").unwrap(), RolloutStatus::Canceled, "x", later).await,
        Err(Error::NotFound { .. })
    ));
}

pub async fn audit_is_append_only_and_newest_first(b: &Backend) {
    let mut seqs = Vec::new();
    for i in 0..5 {
        let e = AuditEntry {
            seq: 0,
            at: t0() + Duration::seconds(i),
            subject: format!("user{i}"),
            roles: vec![Role::Operator],
            operation: "start".into(),
            request: serde_json::json!({ "i": i }),
            plan: (i % 2 == 0).then(|| serde_json::json!({ "plan": i })),
            outcome: AuditOutcome::Ok("fine".into()),
        };
        seqs.push(b.audit.append(e).await.unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence numbers increase: {seqs:?}");
    let recent = b.audit.recent(3).await.unwrap();
    let subjects: Vec<&str> = recent.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["user4", "user3", "user2"]);
    assert_eq!(recent[0].seq, seqs[4]);
    assert_eq!(recent[0].request, serde_json::json!({ "i": 4 }));
    assert_eq!(recent[2].plan, Some(serde_json::json!({ "plan": 2 })));
}

fn admin() -> Caller {
    Caller::new("admin", [Role::Admin])
}

async fn enable(svc: &FleetManager, t: &str) {
    svc.set_ota_enabled(&admin(), &ty(t), true).await.expect("enable");
}

fn update(types: &[&str], version: &str) -> UpdateRequest {
    UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::parse(version).unwrap(),
        target: Target { device_types: types.iter().map(|t| ty(t)).collect(), ..Default::default() },
        filters: Filters::default(),
        revert_on_abort: false,
    }
}

pub async fn service_refuses_artifacts_whose_files_disagree(b: &Backend) {
    let svc = FleetManager::new(b.clone(), Settings::default()).expect("valid settings");
    put_artifact(b, "pet_feeder", "1.0.0", image(5, 100)).await;
    // 2.0.0: metadata.json claims another digest than firmware.sha256 and the image.
    let a = ArtifactRef::new(ty("pet_feeder"), ver("2.0.0"));
    let img = image(6, 100);
    let (sha, mut meta) = describe(&a, &img, String::new());
    meta.sha256 = crate::catalog::Sha256Digest([9; 32]);
    b.catalog.publish(&a, img, sha256_file_content(&sha), meta.to_json()).await.unwrap();
    b.registry.upsert(device("pet_feeder-01", Some("1.0.0"), true)).await.unwrap();
    enable(&svc, "pet_feeder").await;
    let op = Caller::new("op", [Role::Operator]);
    let plan = svc.plan_update(&op, &update(&["pet_feeder"], "2.0.0")).await.unwrap();
    assert!(plan.deployments.is_empty());
    assert_eq!(plan.refusals.len(), 1);
    assert!(plan.refusals[0].reason.contains(&sha.to_hex()), "names both digests: {}", plan.refusals[0].reason);
    let err = svc.start(&op, &update(&["pet_feeder"], "2.0.0"), None).await.unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(b.rollouts.list(&RolloutQuery::default()).await.unwrap().is_empty(), "no rollout for a bad artifact");
    let report = svc.verify_catalog(&op, None).await.unwrap();
    assert_eq!(report.iter().filter(|r| r.error.is_some()).count(), 1);
}

pub async fn service_plans_starts_repeats_and_cancels(b: &Backend) {
    let svc = FleetManager::new(b.clone(), Settings::default()).expect("valid settings");
    let admin = admin();
    for v in ["1.0.0", "2.0.0"] {
        svc.publish_firmware(
            &admin,
            PublishRequest {
                device_type: ty("pet_feeder"),
                version: ver(v),
                image: image(7, 5000),
                release_notes: String::new(),
                built_at: Some(t0()),
                extra: Default::default(),
            },
        )
        .await
        .unwrap();
    }
    for (n, v) in [("pet_feeder-01", "1.0.0"), ("pet_feeder-02", "1.0.0"), ("pet_feeder-03", "2.0.0")] {
        b.registry.upsert(device(n, Some(v), true)).await.unwrap();
    }
    let op = Caller::new("op", [Role::Operator]);
    let viewer = Caller::new("v", [Role::Viewer]);
    let req = update(&["pet_feeder"], "latest");

    // Disabled by default (no config record): the plan succeeds but refuses the type.
    let plan = svc.plan_update(&op, &req).await.unwrap();
    assert!(plan.deployments.is_empty() && plan.refusals[0].reason.contains("disabled"), "{plan:?}");
    enable(&svc, "pet_feeder").await;

    let plan = svc.plan_update(&op, &req).await.unwrap();
    let things: Vec<&str> = plan.deployments[0].things.iter().map(|t| t.as_str()).collect();
    assert_eq!(things, ["pet_feeder-01", "pet_feeder-02"]);
    assert!(matches!(svc.start(&viewer, &req, None).await, Err(Error::Forbidden { .. })));
    assert!(b.rollouts.list(&RolloutQuery::default()).await.unwrap().is_empty(), "a viewer changed nothing");

    let started = svc.start(&op, &req, plan.plan_id.as_deref()).await.unwrap();
    assert_eq!(started.rollouts.len(), 1);
    assert!(started.existing.is_empty());
    let again = svc.start(&op, &req, plan.plan_id.as_deref()).await.unwrap();
    assert_eq!(again.existing, vec![started.rollouts[0].id.clone()], "repeating finds the same rollout");
    assert_eq!(b.rollouts.list(&RolloutQuery::default()).await.unwrap().len(), 1);

    let err = svc.start(&op, &req, Some("plan-000000000000")).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "a stale plan id is refused: {err}");

    let canceled = svc.cancel(&op, &started.rollouts[0].id, "operator stop").await.unwrap();
    assert_eq!(canceled.status, RolloutStatus::Canceled);
    assert!(matches!(svc.cancel(&op, &started.rollouts[0].id, "again").await, Err(Error::Conflict(_))));
    let trail = svc.audit_trail(&admin, 50).await.unwrap();
    let ops: Vec<&str> = trail.iter().map(|e| e.operation.as_str()).collect();
    assert!(
        ops.contains(&"start")
            && ops.contains(&"cancel")
            && ops.contains(&"publish")
            && ops.contains(&"start a rollout"),
        "{ops:?}"
    );
}
