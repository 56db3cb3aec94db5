//! Commands and the `config` shadow through the jobs engine's transitions on real SQLite,
//! message by message with an explicit clock: the requests a tick publishes, what a device's
//! answer gets back (and the next request it frees), what is refused, the config shadow's
//! documents and deltas, and a restart that reopens the file mid-run.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::{device, t0, thing};
use ota_core::commands::{CommandExecution, CommandRun, CommandRunStatus, ExecutionState};
use ota_core::device::Device;
use ota_core::policy::RolloutPolicy;
use ota_core::ports::{CommandStore, DeviceRegistry};
use ota_local::{EngineContext, Output, SqliteStore};
use serde_json::{Map, Value, json};

fn ctx() -> EngineContext {
    EngineContext { firmware_url: Arc::new(|v, t, _| format!("http://127.0.0.1:1/firmwares/v{v}/{t}/firmware.bin")) }
}

fn s(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(seconds)
}

fn plug(n: u32) -> String {
    format!("smart_plug-{n:02}")
}

/// Connected smart plugs 1..=n.
async fn store_with_plugs(store: &SqliteStore, n: u32) {
    let devices: Vec<Device> =
        (1..=n).map(|i| Device { connected: true, ..device("smart_plug", i, Some("1.0.0")) }).collect();
    store.upsert_many(devices).await.unwrap();
}

fn run(id: &str, command: &str, parameters: Value, n: u32, max_in_flight: u32) -> CommandRun {
    CommandRun {
        id: id.into(),
        plan_id: format!("cplan-{id}"),
        command: command.into(),
        parameters: parameters.as_object().cloned().unwrap_or_default(),
        created_by: "operator".into(),
        created_at: s(0),
        status: CommandRunStatus::InProgress,
        reason: None,
        ended_at: None,
        policy: RolloutPolicy { max_in_flight, ..Default::default() },
        timeout_seconds: 30,
        executions: (1..=n)
            .map(|i| {
                CommandExecution::queued(format!("{id}-{}", i - 1), thing(&plug(i)), common::ty("smart_plug"), s(0))
            })
            .collect(),
        refusals: Vec::new(),
    }
}

fn json_of(p: &[u8]) -> Value {
    serde_json::from_slice(p).unwrap()
}

/// The requests in `out`: (thing, execution id, payload).
fn requests(out: &Output) -> Vec<(String, String, Value)> {
    out.publish
        .iter()
        .filter_map(|(topic, p)| {
            let (thing, id, kind) = ota_core::topics::parse_command(topic)?;
            (kind == ota_core::topics::CommandTopic::Request).then(|| (thing.to_string(), id.to_string(), json_of(p)))
        })
        .collect()
}

fn on(out: &Output, topic: &str) -> Option<Value> {
    out.publish.iter().find(|(t, _)| t == topic).map(|(_, p)| json_of(p))
}

fn response_topic(thing: &str, id: &str, tail: &str) -> String {
    format!("$aws/commands/things/{thing}/executions/{id}/{tail}")
}

async fn answer(
    store: &SqliteStore,
    who: &str,
    on_topic_of: &str,
    id: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Output {
    store
        .handle_device_message(ctx(), thing(who), response_topic(on_topic_of, id, "response/json"), body.to_vec(), now)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tick_sends_the_admitted_requests_and_an_answer_frees_the_next_at_once() {
    let store = SqliteStore::open_in_memory().unwrap();
    store_with_plugs(&store, 3).await;
    let params = json!({"sample_rate_seconds": 10});
    store.create(&run("cmd-a-1", "update_config", params.clone(), 3, 2)).await.unwrap();

    let out = store.engine_tick(ctx(), s(1)).await.unwrap();
    let sent = requests(&out);
    assert_eq!(
        sent,
        [
            (plug(1), "cmd-a-1-0".to_string(), json!({"command": "update_config", "parameters": params})),
            (plug(2), "cmd-a-1-1".to_string(), json!({"command": "update_config", "parameters": params})),
        ],
        "the in-flight limit, in the run's order, with the Commands API's request topic"
    );
    assert!(requests(&store.engine_tick(ctx(), s(2)).await.unwrap()).is_empty(), "no slot is free");

    // IN_PROGRESS is accepted and holds the slot; SUCCEEDED frees it in the same transition.
    let out = answer(&store, &plug(1), &plug(1), "cmd-a-1-0", br#"{"status":"IN_PROGRESS"}"#, s(3)).await;
    let accepted = on(&out, &response_topic(&plug(1), "cmd-a-1-0", "response/accepted/json")).expect("accepted");
    assert_eq!(
        (accepted["executionId"].as_str(), accepted["status"].as_str()),
        (Some("cmd-a-1-0"), Some("IN_PROGRESS"))
    );
    assert!(requests(&out).is_empty());
    let body = br#"{"status":"SUCCEEDED","statusReason":{"reasonCode":"CONFIG_APPLIED","reasonDescription":"stored and reported"}}"#;
    let out = answer(&store, &plug(1), &plug(1), "cmd-a-1-0", body, s(4)).await;
    assert!(on(&out, &response_topic(&plug(1), "cmd-a-1-0", "response/accepted/json")).is_some(), "{out:?}");
    assert_eq!(requests(&out).iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["cmd-a-1-2"], "the freed slot");

    let r = CommandStore::get(&store, "cmd-a-1").await.unwrap();
    let e = &r.executions[0];
    assert_eq!(
        (e.state, e.reason_code.as_deref(), e.reason.as_deref()),
        (ExecutionState::Succeeded, Some("CONFIG_APPLIED"), Some("stored and reported"))
    );
    assert_eq!(r.executions[2].state, ExecutionState::Created);

    for (n, id) in [(2, "cmd-a-1-1"), (3, "cmd-a-1-2")] {
        answer(&store, &plug(n), &plug(n), id, br#"{"status":"SUCCEEDED"}"#, s(5)).await;
    }
    let r = CommandStore::get(&store, "cmd-a-1").await.unwrap();
    assert_eq!(r.status, CommandRunStatus::Completed, "the last answer completes the run: {}", r.summary());
}

#[tokio::test]
async fn bad_foreign_unknown_and_late_answers_are_rejected_and_change_nothing() {
    let store = SqliteStore::open_in_memory().unwrap();
    store_with_plugs(&store, 2).await;
    store.create(&run("cmd-b-1", "reboot", json!({}), 2, 2)).await.unwrap();
    store.engine_tick(ctx(), s(0)).await.unwrap();
    let before = CommandStore::get(&store, "cmd-b-1").await.unwrap();

    let rejected = |out: &Output, who: &str, id: &str| {
        on(out, &response_topic(who, id, "response/rejected/json")).unwrap_or_else(|| panic!("not rejected: {out:?}"))
    };
    // Not a CommandResponse.
    for bad in [&b"{not json"[..], br#"{"status":"DONE"}"#, br#"[1]"#] {
        let out = answer(&store, &plug(1), &plug(1), "cmd-b-1-0", bad, s(1)).await;
        let body = rejected(&out, &plug(1), "cmd-b-1-0");
        assert_eq!(body["error"], "InvalidRequest", "{body}");
        assert_eq!(body["executionId"], "cmd-b-1-0");
    }
    // smart_plug-02 answers smart_plug-01's execution on its own topic: not its execution.
    let out = answer(&store, &plug(2), &plug(2), "cmd-b-1-0", br#"{"status":"SUCCEEDED"}"#, s(1)).await;
    let body = rejected(&out, &plug(2), "cmd-b-1-0");
    assert_eq!(body["error"], "ResourceNotFound", "{body}");
    assert!(body["errorMessage"].as_str().unwrap().contains("smart_plug-02"), "{body}");
    // On another thing's topic (only possible through a broker that lets it): ignored.
    let out = answer(&store, &plug(2), &plug(1), "cmd-b-1-0", br#"{"status":"SUCCEEDED"}"#, s(1)).await;
    assert!(out.publish.is_empty(), "{out:?}");
    // Unknown.
    let out = answer(&store, &plug(1), &plug(1), "cmd-b-1-77", br#"{"status":"SUCCEEDED"}"#, s(1)).await;
    assert_eq!(rejected(&out, &plug(1), "cmd-b-1-77")["error"], "ResourceNotFound");
    assert_eq!(CommandStore::get(&store, "cmd-b-1").await.unwrap(), before, "nothing changed");

    // Past the timeout (30 s): TIMED_OUT at the tick; a late answer is refused.
    store.engine_tick(ctx(), s(30)).await.unwrap();
    let out = answer(&store, &plug(1), &plug(1), "cmd-b-1-0", br#"{"status":"SUCCEEDED"}"#, s(31)).await;
    let body = rejected(&out, &plug(1), "cmd-b-1-0");
    assert_eq!(body["error"], "TerminalStateReached", "{body}");
    assert!(body["errorMessage"].as_str().unwrap().contains("TIMED_OUT"), "{body}");
    let r = CommandStore::get(&store, "cmd-b-1").await.unwrap();
    assert!(r.executions.iter().all(|e| e.state == ExecutionState::TimedOut), "{}", r.summary());
    assert_eq!(r.status, CommandRunStatus::Completed);
}

/// A restart: the run was created and partly sent by one store, the file is opened again;
/// the request not answered is sent again at start, the device's answer is recorded and the
/// run goes on where it was.
#[tokio::test]
async fn a_reopened_database_resends_what_was_not_answered_and_the_run_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store_with_plugs(&store, 3).await;
        store.create(&run("cmd-r-1", "identify", json!({}), 3, 1)).await.unwrap();
        let out = store.engine_tick(ctx(), s(1)).await.unwrap();
        assert_eq!(requests(&out).len(), 1);
    }
    let store = SqliteStore::open(&path).unwrap();
    let out = store.pending_offers(ctx(), s(2)).await.unwrap();
    let again = requests(&out);
    assert_eq!(again, [(plug(1), "cmd-r-1-0".to_string(), json!({"command": "identify", "parameters": {}}))]);
    let out = answer(&store, &plug(1), &plug(1), "cmd-r-1-0", br#"{"status":"SUCCEEDED"}"#, s(3)).await;
    assert_eq!(requests(&out).iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["cmd-r-1-1"]);
    // The timeout counts from the send recorded before the restart.
    store.engine_tick(ctx(), s(33)).await.unwrap();
    let r = CommandStore::get(&store, "cmd-r-1").await.unwrap();
    assert_eq!(r.executions[1].state, ExecutionState::TimedOut, "{}", r.summary());
    assert_eq!(r.executions[2].state, ExecutionState::Created, "the next one went out at the timeout");
}

async fn config(store: &SqliteStore, who: &str, op: &str, body: Value, now: DateTime<Utc>) -> Output {
    let topic = format!("$aws/things/{who}/shadow/name/config/{op}");
    store.handle_device_message(ctx(), thing(who), topic, body.to_string().into_bytes(), now).await.unwrap()
}

fn shadow_topic(who: &str, rest: &str) -> String {
    format!("$aws/things/{who}/shadow/name/config/{rest}")
}

fn map(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[tokio::test]
async fn the_config_shadow_keeps_the_reported_configuration_and_sends_deltas_of_what_is_desired() {
    let store = SqliteStore::open_in_memory().unwrap();
    store_with_plugs(&store, 1).await;
    let d = plug(1);

    // No configuration on record yet.
    let out = config(&store, &d, "get", json!({"clientToken": "g0"}), s(0)).await;
    let body = on(&out, &shadow_topic(&d, "get/rejected")).expect("rejected");
    // The codes are written as the classic shadow's are.
    assert_eq!((body["code"].as_str(), body["clientToken"].as_str()), (Some("404"), Some("g0")), "{body}");

    // The device reports: kept in the registry, accepted, no delta (nothing desired).
    let reported = json!({"sample_rate_seconds": 60, "log_level": "info"});
    let out = config(&store, &d, "update", json!({"state": {"reported": reported}, "clientToken": "u1"}), s(1)).await;
    let accepted = on(&out, &shadow_topic(&d, "update/accepted")).expect("accepted");
    assert_eq!((accepted["version"].as_i64(), accepted["clientToken"].as_str()), (Some(1), Some("u1")));
    assert_eq!(accepted["state"]["reported"], reported);
    assert!(on(&out, &shadow_topic(&d, "update/delta")).is_none());
    let record = DeviceRegistry::get(&store, &thing(&d)).await.unwrap().unwrap();
    assert_eq!(record.config.reported, map(reported.clone()));

    // The service desires a change through the registry: the next tick sends the delta.
    let mut wanted = record.clone();
    wanted.config.desired = map(json!({"sample_rate_seconds": 10, "log_level": "info"}));
    store.upsert(wanted).await.unwrap();
    let out = store.engine_tick(ctx(), s(2)).await.unwrap();
    let delta = on(&out, &shadow_topic(&d, "update/delta")).expect("a delta");
    assert_eq!(delta["state"], json!({"sample_rate_seconds": 10}), "only what differs");
    assert_eq!(delta["version"], 2);
    assert!(on(&store.engine_tick(ctx(), s(3)).await.unwrap(), &shadow_topic(&d, "update/delta")).is_none(), "once");

    // A get (what a device does on connect) carries the delta in the document.
    let out = config(&store, &d, "get", json!({}), s(4)).await;
    let doc = on(&out, &shadow_topic(&d, "get/accepted")).expect("the document");
    assert_eq!(doc["state"]["delta"], json!({"sample_rate_seconds": 10}));
    assert_eq!(doc["state"]["desired"]["sample_rate_seconds"], 10);
    assert_eq!(doc["state"]["reported"]["sample_rate_seconds"], 60);

    // A device that reports unchanged (it cannot take the value) gets no new delta; one that
    // takes it reports it, and the delta is gone.
    let out = config(&store, &d, "update", json!({"state": {"reported": reported}}), s(5)).await;
    assert!(on(&out, &shadow_topic(&d, "update/accepted")).is_some());
    assert!(on(&out, &shadow_topic(&d, "update/delta")).is_none(), "an unchanged report is not answered with a delta");
    let out = config(&store, &d, "update", json!({"state": {"reported": {"sample_rate_seconds": 10}}}), s(6)).await;
    assert!(on(&out, &shadow_topic(&d, "update/delta")).is_none());
    let shadow = store.config_shadow(&thing(&d)).await.unwrap().unwrap();
    assert!(shadow["state"].get("delta").is_none(), "{shadow}");
    assert_eq!(shadow["version"], 3);
    let record = DeviceRegistry::get(&store, &thing(&d)).await.unwrap().unwrap();
    assert_eq!(record.config.reported, map(json!({"sample_rate_seconds": 10, "log_level": "info"})));
    assert_eq!(record.config.desired["sample_rate_seconds"], 10, "the report keeps what is desired");

    // A report that changes something while desired still differs is followed by a delta.
    let out = config(&store, &d, "update", json!({"state": {"reported": {"sample_rate_seconds": 20}}}), s(7)).await;
    assert_eq!(
        on(&out, &shadow_topic(&d, "update/delta")).expect("a delta")["state"],
        json!({"sample_rate_seconds": 10})
    );
}

#[tokio::test]
async fn bad_config_shadow_requests_are_rejected_and_change_nothing() {
    let store = SqliteStore::open_in_memory().unwrap();
    store_with_plugs(&store, 1).await;
    let d = plug(1);
    config(&store, &d, "update", json!({"state": {"reported": {"log_level": "info"}}}), s(0)).await;
    let before = DeviceRegistry::get(&store, &thing(&d)).await.unwrap();

    let raw = |payload: &'static [u8]| {
        let store = &store;
        let d = d.clone();
        async move {
            store
                .handle_device_message(ctx(), thing(&d), shadow_topic(&d, "update"), payload.to_vec(), s(1))
                .await
                .unwrap()
        }
    };
    for (payload, code) in [
        (&b"{not json"[..], "400"),
        (br#"{"reported": {"log_level": "debug"}}"#, "400"),
        (br#"{"state": {"reported": {"log_level": "debug"}}, "version": 99}"#, "409"),
    ] {
        let out = raw(payload).await;
        let body = on(&out, &shadow_topic(&d, "update/rejected")).unwrap_or_else(|| panic!("not rejected: {out:?}"));
        assert_eq!(body["code"].as_str(), Some(code), "{body}");
    }
    assert_eq!(DeviceRegistry::get(&store, &thing(&d)).await.unwrap(), before, "nothing changed");

    // A device the registry does not know has no config shadow to write.
    let out = config(&store, "smart_plug-09", "update", json!({"state": {"reported": {"a": 1}}}), s(2)).await;
    assert_eq!(on(&out, &shadow_topic("smart_plug-09", "update/rejected")).unwrap()["code"], "404");
    assert!(DeviceRegistry::get(&store, &thing("smart_plug-09")).await.unwrap().is_none());
}
