//! The jobs engine's transitions on real SQLite, driven message by message with an explicit
//! clock: what devices are offered, what they may report, when the policy aborts, and what
//! a restart finds. The device side of the conversation is written out by hand here; the
//! end-to-end tests run the real device agent against the same engine.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::*;
use ota_core::audit::{AuditEntry, AuditOutcome};
use ota_core::names::{DeviceType, JobId, NamingConvention, ThingName};
use ota_core::policy::RolloutPolicy;
use ota_core::ports::{AuditLog, DeviceRegistry, RolloutStore};
use ota_core::rollout::{Rollout, RolloutStatus};
use ota_core::targeting::UpdateAction;
use ota_core::version::FirmwareVersion;
use ota_local::{EngineContext, ExecutionStatus, Output, SqliteStore};
use serde_json::{Value, json};

fn ctx() -> EngineContext {
    EngineContext {
        firmware_url: Arc::new(|v: &FirmwareVersion, t: &DeviceType, now: DateTime<Utc>| {
            format!("http://127.0.0.1:8080/firmwares/v{v}/{t}/firmware.bin?X-Ota-Expires={}", now.timestamp() + 3600)
        }),
    }
}

fn things(n: u32) -> Vec<ThingName> {
    (1..=n).map(|i| thing(&format!("pet_feeder-{i:02}"))).collect()
}

async fn store_with(n: u32, policy: RolloutPolicy, action: UpdateAction) -> (SqliteStore, Rollout) {
    let store = SqliteStore::open_in_memory().unwrap();
    store.upsert_many((1..=n).map(|i| device("pet_feeder", i, Some("1.0.0"))).collect()).await.unwrap();
    let mut r = rollout("update-pet_feeder-2_0_0-abc", "pet_feeder", RolloutStatus::InProgress, t0());
    r.things = things(n);
    r.policy = policy;
    r.action = action;
    r.thing_group = NamingConvention::default().thing_group_of(&ty("pet_feeder"));
    store.create(&r).await.unwrap();
    (store, r)
}

fn notified(out: &Output) -> Vec<String> {
    out.publish
        .iter()
        .filter(|(t, p)| t.ends_with("/jobs/notify-next") && json(p).get("execution").is_some())
        .map(|(t, _)| t.trim_start_matches("$aws/things/").trim_end_matches("/jobs/notify-next").to_string())
        .collect()
}

fn json(p: &[u8]) -> Value {
    serde_json::from_slice(p).unwrap()
}

fn reply<'a>(out: &'a Output, suffix: &str) -> &'a (String, Vec<u8>) {
    out.publish.iter().find(|(t, _)| t.ends_with(suffix)).unwrap_or_else(|| panic!("no reply on {suffix}: {out:?}"))
}

async fn send(store: &SqliteStore, who: &str, rest: &str, body: Value, now: DateTime<Utc>) -> Output {
    store
        .handle_device_message(
            ctx(),
            thing(who),
            format!("$aws/things/{who}/{rest}"),
            body.to_string().into_bytes(),
            now,
        )
        .await
        .unwrap()
}

async fn status(store: &SqliteStore, who: &str, id: &JobId, s: &str, now: DateTime<Utc>) -> Output {
    send(store, who, &format!("jobs/{id}/update"), json!({"status": s, "statusDetails": {"reason": "test"}}), now).await
}

#[tokio::test]
async fn a_rollout_offers_its_job_only_as_fast_as_the_policy_admits() {
    let (store, r) = store_with(25, RolloutPolicy::default(), UpdateAction::Update).await;
    let p = store.rollout_progress(&r.id).await.unwrap();
    assert_eq!((p.counts.total, p.counts.waiting), (25, 25), "every device has an execution, none offered yet");

    let out = store.engine_tick(ctx(), at(0)).await.unwrap();
    let offered = notified(&out);
    assert_eq!(offered.len(), 10, "the default policy allows 10 in flight: {offered:?}");
    assert_eq!(offered[0], "pet_feeder-01", "devices start in the rollout's order");
    let (_, payload) = &out.publish[0];
    let doc = &json(payload)["execution"]["jobDocument"];
    assert_eq!(doc["operation"], "ota_update");
    assert_eq!(doc["version"], "2.0.0");
    assert_eq!(doc["rollback"], false);
    assert!(doc["firmware"]["url"].as_str().unwrap().contains("/firmwares/v2.0.0/pet_feeder/firmware.bin"));

    let again = store.engine_tick(ctx(), at(0)).await.unwrap();
    assert!(notified(&again).is_empty(), "a second tick offers nothing while 10 are in flight");

    // A device not offered the job cannot see or touch it.
    let out = send(&store, "pet_feeder-20", "jobs/$next/get", json!({}), at(0)).await;
    assert!(json(&reply(&out, "$next/get/accepted").1).get("execution").is_none());
    let out = status(&store, "pet_feeder-20", &r.id, "IN_PROGRESS", at(0)).await;
    assert_eq!(json(&reply(&out, "/update/rejected").1)["code"], "ResourceNotFound");

    // One success frees one slot: exactly one more device is offered the job.
    let out = status(&store, "pet_feeder-01", &r.id, "IN_PROGRESS", at(1)).await;
    assert_eq!(json(&reply(&out, "/update/accepted").1)["executionState"]["versionNumber"], 2);
    let out = status(&store, "pet_feeder-01", &r.id, "SUCCEEDED", at(2)).await;
    assert_eq!(notified(&out), ["pet_feeder-11"]);
    let own = out.publish.iter().find(|(t, _)| t == "$aws/things/pet_feeder-01/jobs/notify-next").unwrap();
    assert!(json(&own.1).get("execution").is_none(), "the device is told it has no next job");
}

#[tokio::test]
async fn the_jobs_api_answers_like_aws_iot() {
    let (store, r) = store_with(2, RolloutPolicy::default(), UpdateAction::Rollback).await;
    store.engine_tick(ctx(), at(0)).await.unwrap();
    let d = "pet_feeder-01";

    let out = send(&store, d, "jobs/$next/get", json!({"clientToken": "t1"}), at(0)).await;
    let body = json(&reply(&out, "$next/get/accepted").1);
    assert_eq!(body["clientToken"], "t1");
    assert_eq!(body["execution"]["status"], "QUEUED");
    assert_eq!(body["execution"]["versionNumber"], 1);
    assert_eq!(body["execution"]["jobDocument"]["rollback"], true, "a rollback rollout says so to the device");

    let out = send(&store, d, &format!("jobs/{}/get", r.id), json!({}), at(0)).await;
    assert_eq!(json(&reply(&out, "/get/accepted").1)["execution"]["jobId"], r.id.as_str());
    let out = send(&store, d, "jobs/no-such-job/get", json!({}), at(0)).await;
    assert_eq!(json(&reply(&out, "/get/rejected").1)["code"], "ResourceNotFound");

    let topic = format!("jobs/{}/update", r.id);
    let out = send(&store, d, &topic, json!({"status": "IN_PROGRESS", "expectedVersion": 7}), at(0)).await;
    let body = json(&reply(&out, "/update/rejected").1);
    assert_eq!(body["code"], "VersionMismatch");
    assert_eq!(body["executionState"]["versionNumber"], 1);
    let out = send(&store, d, &topic, json!({"status": "IN_PROGRESS", "expectedVersion": "1"}), at(0)).await;
    reply(&out, "/update/accepted");
    let out = send(&store, d, &topic, json!({"status": "CANCELED"}), at(0)).await;
    assert_eq!(json(&reply(&out, "/update/rejected").1)["code"], "InvalidRequest", "devices cannot cancel");
    let out = send(&store, d, &topic, json!({"status": "SUCCEEDED"}), at(1)).await;
    reply(&out, "/update/accepted");
    let out = send(&store, d, &topic, json!({"status": "FAILED"}), at(1)).await;
    assert_eq!(json(&reply(&out, "/update/rejected").1)["code"], "InvalidStateTransition");
    let out = send(&store, d, "jobs/x/update", Value::String("not an object".into()), at(1)).await;
    assert!(out.publish[0].0.ends_with("/update/rejected"));
}

#[tokio::test]
async fn failures_past_the_threshold_abort_and_cancel_every_queued_device() {
    let (store, r) = store_with(100, RolloutPolicy::default(), UpdateAction::Update).await;
    let out = store.engine_tick(ctx(), at(0)).await.unwrap();
    let mut in_flight = notified(&out);
    // One device is busy updating when the abort comes.
    let busy = in_flight.remove(0);
    status(&store, &busy, &r.id, "IN_PROGRESS", at(0)).await;
    let mut executed = 0;
    let mut aborted = None;
    // Every fifth device fails: 20 %, far above the default 5 %.
    while aborted.is_none() {
        let d = in_flight.remove(0);
        executed += 1;
        let s = if executed % 5 == 0 { "FAILED" } else { "SUCCEEDED" };
        let out = status(&store, &d, &r.id, s, at(1)).await;
        in_flight.extend(notified(&out));
        aborted = out.aborted.first().cloned();
    }
    let (id, _, reason) = aborted.unwrap();
    assert_eq!(id, r.id);
    assert!(reason.contains("more than 5 %"), "{reason}");
    let p = store.rollout_progress(&r.id).await.unwrap();
    assert_eq!(p.rollout.status, RolloutStatus::Aborted);
    assert_eq!(p.counts.waiting + p.counts.queued, 0, "nothing is left queued: {:?}", p.counts);
    let started = store.executions(&r.id).await.unwrap().iter().filter(|e| e.started_at.is_some()).count();
    assert!(started < 30, "{started} devices were started");
    assert_eq!(p.counts.canceled, 100 - executed - 1, "every device but the executed and the busy one");
    let kinds: Vec<String> = store.rollout_events(&r.id, 0).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"aborted".to_string()), "{kinds:?}");
    // Offered devices that had not started are canceled; the busy one finishes and reports.
    for d in in_flight {
        let out = status(&store, &d, &r.id, "IN_PROGRESS", at(2)).await;
        assert_eq!(json(&reply(&out, "/update/rejected").1)["code"], "InvalidStateTransition");
    }
    let out = status(&store, &busy, &r.id, "SUCCEEDED", at(2)).await;
    reply(&out, "/update/accepted");
    let p = store.rollout_progress(&r.id).await.unwrap();
    assert_eq!((p.rollout.status, p.counts.in_progress), (RolloutStatus::Aborted, 0));
}

#[tokio::test]
async fn a_rollout_completes_when_every_device_has_finished() {
    let (store, r) = store_with(3, RolloutPolicy::default(), UpdateAction::Update).await;
    store.engine_tick(ctx(), at(0)).await.unwrap();
    for d in ["pet_feeder-01", "pet_feeder-02", "pet_feeder-03"] {
        status(&store, d, &r.id, "IN_PROGRESS", at(1)).await;
        status(&store, d, &r.id, "SUCCEEDED", at(2)).await;
    }
    let p = store.rollout_progress(&r.id).await.unwrap();
    assert_eq!(p.rollout.status, RolloutStatus::Completed);
    assert_eq!(p.counts.succeeded, 3);
    assert!(p.rollout.status_reason.unwrap().contains("3 succeeded"));
}

#[tokio::test]
async fn devices_in_progress_past_the_timeout_time_out_and_retries_requeue_them() {
    let policy = RolloutPolicy { in_progress_timeout_minutes: 5, ..Default::default() };
    let (store, r) = store_with(2, policy, UpdateAction::Update).await;
    store.engine_tick(ctx(), at(0)).await.unwrap();
    status(&store, "pet_feeder-01", &r.id, "IN_PROGRESS", at(0)).await;
    store.engine_tick(ctx(), at(4)).await.unwrap();
    assert_eq!(store.executions(&r.id).await.unwrap()[0].status, ExecutionStatus::InProgress);
    store.engine_tick(ctx(), at(6)).await.unwrap();
    assert_eq!(store.executions(&r.id).await.unwrap()[0].status, ExecutionStatus::TimedOut);
    let out = status(&store, "pet_feeder-01", &r.id, "SUCCEEDED", at(7)).await;
    assert_eq!(json(&reply(&out, "/update/rejected").1)["code"], "InvalidStateTransition", "too late");

    let mut policy = RolloutPolicy::default();
    policy.retries.failed = 1;
    let (store, r) = store_with(1, policy, UpdateAction::Update).await;
    store.engine_tick(ctx(), at(0)).await.unwrap();
    let out = status(&store, "pet_feeder-01", &r.id, "FAILED", at(1)).await;
    assert_eq!(notified(&out), ["pet_feeder-01"], "offered again at once");
    let e = &store.executions(&r.id).await.unwrap()[0];
    assert_eq!((e.status, e.execution_number, e.released), (ExecutionStatus::Queued, 2, true), "one retry");
    status(&store, "pet_feeder-01", &r.id, "FAILED", at(3)).await;
    let p = store.rollout_progress(&r.id).await.unwrap();
    assert_eq!((p.counts.failed, p.rollout.status), (1, RolloutStatus::Completed), "no second retry");
}

#[tokio::test]
async fn canceling_cancels_queued_devices_and_lets_updating_ones_finish() {
    let policy = RolloutPolicy { max_in_flight: 2, ..Default::default() };
    let (store, r) = store_with(5, policy, UpdateAction::Update).await;
    store.engine_tick(ctx(), at(0)).await.unwrap();
    status(&store, "pet_feeder-01", &r.id, "IN_PROGRESS", at(0)).await;
    store.finish(&r.id, RolloutStatus::Canceled, "operator", at(1)).await.unwrap();
    let p = store.rollout_progress(&r.id).await.unwrap();
    assert_eq!((p.counts.canceled, p.counts.in_progress), (4, 1));
    let out = status(&store, "pet_feeder-02", &r.id, "IN_PROGRESS", at(1)).await;
    assert_eq!(json(&reply(&out, "/update/rejected").1)["code"], "InvalidStateTransition");
    let out = status(&store, "pet_feeder-01", &r.id, "SUCCEEDED", at(2)).await;
    reply(&out, "/update/accepted");
    let out = store.engine_tick(ctx(), at(3)).await.unwrap();
    assert!(notified(&out).is_empty());
    assert_eq!(store.rollout_progress(&r.id).await.unwrap().rollout.status, RolloutStatus::Canceled);
}

#[tokio::test]
async fn reported_shadows_update_the_registry() {
    let (store, _) = store_with(1, RolloutPolicy::default(), UpdateAction::Update).await;
    let d = "pet_feeder-01";
    let out = send(&store, d, "shadow/get", json!({}), at(0)).await;
    assert_eq!(json(&reply(&out, "shadow/get/rejected").1)["code"], "404");
    let report = json!({"state": {"reported": {"firmwareVersion": "2.0.0", "slot": "ota_1"}}, "clientToken": "c"});
    let out = send(&store, d, "shadow/update", report, at(0)).await;
    let body = json(&reply(&out, "shadow/update/accepted").1);
    assert_eq!((body["version"].as_i64(), body["clientToken"].as_str()), (Some(1), Some("c")));
    let device = DeviceRegistry::get(&store, &thing(d)).await.unwrap().unwrap();
    assert_eq!(device.firmware_version, Some(version("2.0.0")));
    assert!(device.connected);
    let out = send(&store, d, "shadow/update", json!({"state": {"reported": {"x": 1}}, "version": 5}), at(0)).await;
    assert_eq!(json(&reply(&out, "shadow/update/rejected").1)["code"], "409");
    let out =
        send(&store, d, "shadow/update", json!({"state": {"desired": {"firmwareVersion": "3.0.0"}}}), at(0)).await;
    assert_eq!(json(&reply(&out, "shadow/update/delta").1)["state"]["firmwareVersion"], "3.0.0");
    let out = send(&store, d, "shadow/get", json!({}), at(0)).await;
    let body = json(&reply(&out, "shadow/get/accepted").1);
    assert_eq!((body["state"]["reported"]["slot"].as_str(), body["version"].as_i64()), (Some("ota_1"), Some(2)));
}

#[tokio::test]
async fn a_restart_finds_every_execution_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let r = {
        let store = SqliteStore::open(&path).unwrap();
        store.upsert_many((1..=12).map(|i| device("pet_feeder", i, Some("1.0.0"))).collect()).await.unwrap();
        let mut r = rollout("update-pet_feeder-2_0_0-abc", "pet_feeder", RolloutStatus::InProgress, t0());
        r.things = things(12);
        r.policy = RolloutPolicy::default();
        store.create(&r).await.unwrap();
        store.engine_tick(ctx(), at(0)).await.unwrap();
        status(&store, "pet_feeder-01", &r.id, "IN_PROGRESS", at(0)).await;
        r
    };
    let store = SqliteStore::open(&path).unwrap();
    let out = store.pending_offers(ctx(), at(1)).await.unwrap();
    assert_eq!(notified(&out).len(), 9, "the 9 offered but not started devices are offered again, no other");
    let out = store.engine_tick(ctx(), at(1)).await.unwrap();
    assert!(notified(&out).is_empty(), "no device is started twice");
    let out = status(&store, "pet_feeder-01", &r.id, "SUCCEEDED", at(2)).await;
    assert_eq!(notified(&out), ["pet_feeder-11"]);
}

/// `n` devices on 1.0.0 and one rollout to 2.0.0 over them, in the database file at `path`.
async fn file_store_with(path: &std::path::Path, n: u32, policy: RolloutPolicy) -> (SqliteStore, Rollout) {
    let store = SqliteStore::open(path).unwrap();
    store.upsert_many((1..=n).map(|i| device("pet_feeder", i, Some("1.0.0"))).collect()).await.unwrap();
    let mut r = rollout("update-pet_feeder-2_0_0-abc", "pet_feeder", RolloutStatus::InProgress, t0());
    r.things = things(n);
    r.policy = policy;
    store.create(&r).await.unwrap();
    (store, r)
}

/// Every notify-next in `out`: (thing, the job it names, `None` for "no next job").
fn notices(out: &Output) -> Vec<(String, Option<String>)> {
    out.publish
        .iter()
        .filter(|(t, _)| t.ends_with("/jobs/notify-next"))
        .map(|(t, p)| {
            let who = t.trim_start_matches("$aws/things/").trim_end_matches("/jobs/notify-next").to_string();
            (who, json(p)["execution"]["jobId"].as_str().map(str::to_string))
        })
        .collect()
}

async fn engine_audit(store: &SqliteStore, operation: &str) -> Vec<AuditEntry> {
    AuditLog::recent(store, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == SqliteStore::ENGINE_SUBJECT && e.operation == operation)
        .collect()
}

#[tokio::test]
async fn a_cancel_from_another_process_reaches_the_devices_it_had_offered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let policy = RolloutPolicy { max_in_flight: 3, ..Default::default() };
    let (engine, r) = file_store_with(&path, 5, policy).await;
    assert_eq!(notified(&engine.engine_tick(ctx(), at(0)).await.unwrap()).len(), 3);
    status(&engine, "pet_feeder-01", &r.id, "IN_PROGRESS", at(0)).await;

    // `ota rollouts cancel` in another process: its own store on the same file.
    {
        let cli = SqliteStore::open(&path).unwrap();
        cli.finish(&r.id, RolloutStatus::Canceled, "operator", at(1)).await.unwrap();
    }
    assert_eq!(engine.outbox_len().await.unwrap(), 2, "one notice per offered device not yet updating");

    let out = engine.engine_tick(ctx(), at(2)).await.unwrap();
    let mut got = notices(&out);
    got.sort();
    assert_eq!(
        got,
        [("pet_feeder-02".to_string(), None), ("pet_feeder-03".to_string(), None)],
        "the offered devices hear they have no next job; the updating one and the never offered ones hear nothing"
    );
    assert_eq!(engine.outbox_len().await.unwrap(), 0);
    assert!(notices(&engine.engine_tick(ctx(), at(3)).await.unwrap()).is_empty(), "each notice is sent once");
    // The device that was updating keeps its job (CancelJob without force) and finishes.
    let out = status(&engine, "pet_feeder-01", &r.id, "SUCCEEDED", at(4)).await;
    reply(&out, "/update/accepted");
}

#[tokio::test]
async fn a_notice_names_the_next_job_when_the_device_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let (engine, r) = file_store_with(&path, 2, RolloutPolicy::default()).await;
    engine.engine_tick(ctx(), at(0)).await.unwrap();
    let cli = SqliteStore::open(&path).unwrap();
    cli.finish(&r.id, RolloutStatus::Canceled, "operator", at(1)).await.unwrap();
    // A new rollout for the same devices, created before the engine drained the notices.
    let mut again = rollout("update-pet_feeder-2_0_0-def", "pet_feeder", RolloutStatus::InProgress, at(1));
    again.things = things(2);
    cli.create(&again).await.unwrap();

    let out = engine.engine_tick(ctx(), at(2)).await.unwrap();
    let mut got = notices(&out);
    got.sort();
    let next = Some(again.id.to_string());
    assert_eq!(
        got,
        [("pet_feeder-01".to_string(), next.clone()), ("pet_feeder-02".to_string(), next)],
        "one notify-next per device, naming the job it has now"
    );
    assert_eq!(engine.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_cancel_notice_survives_a_crash_before_the_engine_drains_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let r = {
        let (engine, r) = file_store_with(&path, 4, RolloutPolicy { max_in_flight: 2, ..Default::default() }).await;
        engine.engine_tick(ctx(), at(0)).await.unwrap();
        let cli = SqliteStore::open(&path).unwrap();
        cli.finish(&r.id, RolloutStatus::Canceled, "operator", at(1)).await.unwrap();
        // The engine dies here, before its next tick.
        r
    };
    let engine = SqliteStore::open(&path).unwrap();
    assert_eq!(engine.outbox_len().await.unwrap(), 2, "the notices were committed with the cancel");
    let out = engine.pending_offers(ctx(), at(2)).await.unwrap();
    let mut got = notices(&out);
    got.sort();
    assert_eq!(got, [("pet_feeder-01".to_string(), None), ("pet_feeder-02".to_string(), None)]);
    assert_eq!(engine.outbox_len().await.unwrap(), 0);
    assert!(notices(&engine.engine_tick(ctx(), at(3)).await.unwrap()).is_empty());
    let p = engine.rollout_progress(&r.id).await.unwrap();
    assert_eq!((p.rollout.status, p.counts.canceled), (RolloutStatus::Canceled, 4));
}

#[tokio::test]
async fn an_abort_tells_the_offered_devices_and_is_audited_with_its_reason() {
    let mut policy = RolloutPolicy { max_in_flight: 3, ..Default::default() };
    policy.abort.max_failures = Some(0);
    let (store, r) = store_with(6, policy, UpdateAction::Update).await;
    store.engine_tick(ctx(), at(0)).await.unwrap();
    status(&store, "pet_feeder-01", &r.id, "IN_PROGRESS", at(0)).await;
    let out = status(&store, "pet_feeder-02", &r.id, "FAILED", at(1)).await;
    assert_eq!(out.aborted.len(), 1, "{out:?}");
    let mut got = notices(&out);
    got.sort();
    assert_eq!(
        got,
        [("pet_feeder-02".to_string(), None), ("pet_feeder-03".to_string(), None)],
        "the failed device and the offered one hear it at once; the updating one keeps its job"
    );
    assert_eq!(store.outbox_len().await.unwrap(), 0, "the abort's own transition drained its notices");
    assert!(notices(&store.engine_tick(ctx(), at(2)).await.unwrap()).is_empty(), "and they are not sent twice");

    let aborts = engine_audit(&store, "abort").await;
    assert_eq!(aborts.len(), 1, "{aborts:?}");
    let AuditOutcome::Ok(detail) = &aborts[0].outcome else { panic!("{aborts:?}") };
    assert!(detail.contains(r.id.as_str()) && detail.contains("more than the limit of 0"), "{detail}");
    assert_eq!(aborts[0].request["rollout"], r.id.as_str());
    assert_eq!(aborts[0].request["counts"]["failed"], 1);
    assert!(aborts[0].roles.is_empty());
    assert_eq!(aborts[0].at, at(1));
    assert!(engine_audit(&store, "complete").await.is_empty(), "an aborted rollout is not also completed");
}

#[tokio::test]
async fn a_completion_is_audited_with_its_counts() {
    let (store, r) = store_with(3, RolloutPolicy::default(), UpdateAction::Update).await;
    store.engine_tick(ctx(), at(0)).await.unwrap();
    status(&store, "pet_feeder-01", &r.id, "SUCCEEDED", at(1)).await;
    status(&store, "pet_feeder-02", &r.id, "SUCCEEDED", at(1)).await;
    assert!(engine_audit(&store, "complete").await.is_empty(), "not before every device finished");
    status(&store, "pet_feeder-03", &r.id, "REJECTED", at(2)).await;
    store.engine_tick(ctx(), at(3)).await.unwrap();
    let done = engine_audit(&store, "complete").await;
    assert_eq!(done.len(), 1, "{done:?}");
    let counts = &done[0].request["counts"];
    assert_eq!((counts["succeeded"].as_u64(), counts["rejected"].as_u64()), (Some(2), Some(1)), "{counts}");
    let AuditOutcome::Ok(detail) = &done[0].outcome else { panic!("{done:?}") };
    assert!(
        detail.contains("COMPLETED") && detail.contains("2 succeeded") && detail.contains("1 rejected"),
        "{detail}"
    );
    assert_eq!(done[0].at, at(2));
}

#[tokio::test]
async fn timeouts_are_audited_once_per_tick_naming_the_rollout_and_devices() {
    let policy = RolloutPolicy { in_progress_timeout_minutes: 5, ..Default::default() };
    let (store, r) = store_with(3, policy, UpdateAction::Update).await;
    store.engine_tick(ctx(), at(0)).await.unwrap();
    for d in ["pet_feeder-01", "pet_feeder-03"] {
        status(&store, d, &r.id, "IN_PROGRESS", at(0)).await;
    }
    store.engine_tick(ctx(), at(4)).await.unwrap();
    assert!(engine_audit(&store, "timeout").await.is_empty());
    store.engine_tick(ctx(), at(6)).await.unwrap();
    store.engine_tick(ctx(), at(7)).await.unwrap();
    let timeouts = engine_audit(&store, "timeout").await;
    assert_eq!(timeouts.len(), 1, "one entry for the tick that timed out two executions: {timeouts:?}");
    assert_eq!(
        timeouts[0].request["timed_out"],
        json!([{"rollout": r.id.as_str(), "things": ["pet_feeder-01", "pet_feeder-03"]}])
    );
    let AuditOutcome::Ok(detail) = &timeouts[0].outcome else { panic!("{timeouts:?}") };
    assert!(detail.contains("pet_feeder-01") && detail.contains("pet_feeder-03") && detail.contains(r.id.as_str()));
}

#[tokio::test]
async fn executions_record_the_version_each_device_ran_and_the_reason_it_gave() {
    let store = SqliteStore::open_in_memory().unwrap();
    let unknown = device("pet_feeder", 2, None);
    store.upsert_many(vec![device("pet_feeder", 1, Some("1.0.0")), unknown]).await.unwrap();
    // Not in the registry, but its shadow says what it runs.
    let report = json!({"state": {"reported": {"firmwareVersion": "1.5.0"}}});
    send(&store, "pet_feeder-03", "shadow/update", report, at(0)).await;
    let mut r = rollout("update-pet_feeder-2_0_0-abc", "pet_feeder", RolloutStatus::InProgress, t0());
    r.things = things(3);
    store.create(&r).await.unwrap();
    // What the devices run later does not change what they ran when the rollout began.
    send(&store, "pet_feeder-01", "shadow/update", json!({"state": {"reported": {"firmwareVersion": "1.1.0"}}}), at(0))
        .await;

    store.engine_tick(ctx(), at(0)).await.unwrap();
    let topic = format!("jobs/{}/update", r.id);
    let failed = json!({"status": "FAILED", "statusDetails": {"reason": "sha256_mismatch", "expected": "ab"}});
    send(&store, "pet_feeder-01", &topic, failed, at(1)).await;

    let e = store.executions(&r.id).await.unwrap();
    let from: Vec<Option<String>> = e.iter().map(|e| e.from_version.as_ref().map(ToString::to_string)).collect();
    assert_eq!(from, [Some("1.0.0".to_string()), None, Some("1.5.0".to_string())]);
    let reasons: Vec<Option<&str>> = e.iter().map(|e| e.reason.as_deref()).collect();
    assert_eq!(reasons, [Some("sha256_mismatch"), None, None]);
    // Serialized as a front door lists them: {thing, status, reason, from_version}.
    let v = serde_json::to_value(&e[0]).unwrap();
    assert_eq!((v["reason"].as_str(), v["from_version"].as_str()), (Some("sha256_mismatch"), Some("1.0.0")));
}
