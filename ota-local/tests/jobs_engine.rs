//! The jobs engine's transitions on real SQLite, driven message by message with an explicit
//! clock: what devices are offered, what they may report, when the policy aborts, and what
//! a restart finds. The device side of the conversation is written out by hand here; the
//! end-to-end tests run the real device agent against the same engine.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::*;
use ota_core::names::{DeviceType, JobId, NamingConvention, ThingName};
use ota_core::policy::RolloutPolicy;
use ota_core::ports::{DeviceRegistry, RolloutStore};
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
