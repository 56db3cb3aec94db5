//! Automatic revert on abort through the real engine shell: a rollout with
//! `revert_on_abort` aborts after some devices updated; the engine asks the service for the
//! revert, which returns each moved device to the version it ran before, and a device that was
//! still updating at the abort and succeeds afterwards is reverted too. Devices speak the
//! AWS IoT Jobs and shadow topics, written out by hand.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ota_core::auth::{Caller, Role};
use ota_core::names::{DeviceType, JobId, ThingName};
use ota_core::ports::{AuditLog, DeviceRegistry};
use ota_core::rollout::{Rollout, RolloutQuery, RolloutStatus};
use ota_core::service::{FleetManager, Settings};
use ota_core::version::FirmwareVersion;
use ota_local::jobs::{DeviceInput, DevicePublisher, EngineOptions, JobsEngine};
use ota_local::{EngineContext, SqliteStore};
use serde_json::json;
use tokio::sync::{mpsc, watch};

struct Quiet;

#[async_trait]
impl DevicePublisher for Quiet {
    async fn publish(&self, _topic: String, _payload: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

fn thing(n: u32) -> ThingName {
    ThingName::parse(&format!("pet_feeder-{n:02}")).unwrap()
}

async fn say(input: &mpsc::Sender<DeviceInput>, who: &ThingName, rest: &str, body: serde_json::Value) {
    let message = DeviceInput::Message {
        thing: who.clone(),
        topic: format!("$aws/things/{who}/{rest}"),
        payload: body.to_string().into_bytes(),
    };
    input.send(message).await.unwrap();
}

/// Waits until the engine offered `job` to `who`, as a device waits for its notify-next.
async fn offered(store: &SqliteStore, who: &ThingName, job: &JobId) {
    eventually("the offer", async || {
        let executions = store.executions(job).await.unwrap();
        executions.iter().any(|e| &e.thing == who && e.released).then_some(())
    })
    .await;
}

/// The device updates (or fails) as a real one reports it: IN_PROGRESS, then the end state,
/// and on success the new version in its shadow.
async fn finish(
    store: &SqliteStore,
    input: &mpsc::Sender<DeviceInput>,
    who: &ThingName,
    job: &JobId,
    version: &str,
    ok: bool,
) {
    offered(store, who, job).await;
    say(input, who, &format!("jobs/{job}/update"), json!({"status": "IN_PROGRESS"})).await;
    if ok {
        say(input, who, "shadow/update", json!({"state": {"reported": {"firmwareVersion": version}}})).await;
        say(input, who, &format!("jobs/{job}/update"), json!({"status": "SUCCEEDED"})).await;
    } else {
        let details = json!({"status": "FAILED", "statusDetails": {"reason": "sha256_mismatch"}});
        say(input, who, &format!("jobs/{job}/update"), details).await;
    }
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn version_of(store: &SqliteStore, n: u32) -> Option<FirmwareVersion> {
    store.get(&thing(n)).await.unwrap().unwrap().firmware_version
}

async fn reverts_of(store: &SqliteStore, id: &JobId) -> Vec<Rollout> {
    let all = ota_core::ports::RolloutStore::list(store, &RolloutQuery::default()).await.unwrap();
    all.into_iter().filter(|r| r.revert_of.as_ref() == Some(id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_rollout_returns_every_device_it_moved_to_the_version_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = ota_local::open_local(dir.path()).unwrap();
    let svc = Arc::new(FleetManager::new(backend, Settings::default()).unwrap());
    let admin = Caller::new("admin", [Role::Admin]);
    // pet_feeder-01, -02 on 1.0.0, -03 on 2.0.0, -04 .. -08 on 3.0.0 (the latest).
    ota_core::demo::seed(&svc, &admin, &["pet_feeder"], 3, |t, v| format!("{t}/{v}").repeat(100).into_bytes())
        .await
        .unwrap();
    let pet_feeder = DeviceType::parse("pet_feeder").unwrap();
    let mut policy = ota_core::policy::RolloutPolicy { max_in_flight: 3, ..Default::default() };
    policy.abort.min_executed = 1;
    policy.abort.failure_percent = 40.0;
    svc.set_policy(&admin, &pet_feeder, Some(policy)).await.unwrap();

    let (input, rx) = mpsc::channel(64);
    let (stop, shutdown) = watch::channel(false);
    let ctx = EngineContext {
        firmware_url: Arc::new(|v, t, _| format!("http://127.0.0.1:1/firmwares/v{v}/{t}/firmware.bin")),
    };
    let options = EngineOptions { tick: Duration::from_millis(20), service: Some(svc.clone()), ..Default::default() };
    let engine = JobsEngine::new(store.clone(), ctx, options);
    let running = tokio::spawn(engine.run(rx, Arc::new(Quiet), shutdown));

    let operator = Caller::new("operator", [Role::Operator]);
    let outcome = svc
        .ask(
            &operator,
            "Update all pet_feeder devices to 3.0.0 and roll back the updated ones if it aborts",
            true,
            None,
        )
        .await
        .unwrap();
    let started = outcome.started.expect("started");
    let update = started.rollouts[0].clone();
    assert!(update.policy.revert_on_abort, "the request's words set the policy: {:?}", update.policy);
    assert_eq!(update.things, [thing(1), thing(2), thing(3)]);

    // -01 updates, -03 fails: 1 of 2 executed is 50 % > 40 %: abort while -02 is still updating.
    offered(&store, &thing(2), &update.id).await;
    say(&input, &thing(2), &format!("jobs/{}/update", update.id), json!({"status": "IN_PROGRESS"})).await;
    finish(&store, &input, &thing(1), &update.id, "3.0.0", true).await;
    finish(&store, &input, &thing(3), &update.id, "3.0.0", false).await;
    let aborted = eventually("the abort", async || {
        let r = ota_core::ports::RolloutStore::get(store.as_ref(), &update.id).await.unwrap();
        (r.status == RolloutStatus::Aborted).then_some(r)
    })
    .await;
    assert!(aborted.status_reason.is_some());

    // The engine starts the revert of -01 back to 1.0.0.
    let first = eventually("the first revert", async || reverts_of(&store, &update.id).await.into_iter().next()).await;
    assert_eq!(first.things, [thing(1)]);
    assert_eq!(first.version.to_string(), "1.0.0");
    assert!(!first.policy.revert_on_abort, "a revert never reverts itself");
    // -02 was still updating and succeeds after the abort: it is reverted next.
    finish(&store, &input, &thing(2), &update.id, "3.0.0", true).await;
    finish(&store, &input, &thing(1), &first.id, "1.0.0", true).await;
    let second = eventually("the second revert", async || {
        reverts_of(&store, &update.id).await.into_iter().find(|r| r.id != first.id)
    })
    .await;
    assert_eq!(second.things, [thing(2)]);
    finish(&store, &input, &thing(2), &second.id, "1.0.0", true).await;
    eventually("every moved device back", async || {
        let back = version_of(&store, 1).await.is_some_and(|v| v.to_string() == "1.0.0")
            && version_of(&store, 2).await.is_some_and(|v| v.to_string() == "1.0.0");
        back.then_some(())
    })
    .await;
    assert_eq!(version_of(&store, 3).await.unwrap().to_string(), "2.0.0", "the failed device kept its image");
    // Nothing more to revert, and the audit trail says what happened, by whom.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(reverts_of(&store, &update.id).await.len(), 2, "each device is reverted once");
    let audit = store.recent(50).await.unwrap();
    let reverts: Vec<_> = audit.iter().filter(|e| e.operation == "revert").collect();
    assert_eq!(reverts.len(), 2, "{reverts:?}");
    assert!(reverts.iter().all(|e| e.subject == ota_core::service::REVERT_SUBJECT));
    assert!(audit.iter().any(|e| e.operation == "abort" && e.subject == SqliteStore::ENGINE_SUBJECT));

    stop.send(true).unwrap();
    running.await.unwrap();
}
