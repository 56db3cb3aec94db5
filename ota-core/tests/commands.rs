//! Commands through the service over the in-memory backend and the demo world: what a plan
//! refuses and why, what a start creates, that the pacing and abort thresholds hold, that
//! policy refuses per device, and the second time (a repeat while running, after the run
//! ended, a cancel twice). Devices are driven by hand: the memory store hands out dispatches
//! and the test answers them as a device would.

use std::sync::Arc;

use chrono::Utc;
use ota_core::Error;
use ota_core::audit::AuditOutcome;
use ota_core::auth::{Caller, Role};
use ota_core::authz::Authorizer;
use ota_core::command::{CommandResponse, ExecutionStatus, StatusReason};
use ota_core::commands::{CommandQuery, CommandRunStatus, CommandSpec, ExecutionState};
use ota_core::demo;
use ota_core::device::{DeviceQuery, OperationalState};
use ota_core::names::{DeviceType, ThingName};
use ota_core::policy::{AbortRule, RolloutPolicy};
use ota_core::service::{FleetManager, Settings};
use serde_json::{Map, Value, json};

const SENIOR_REBOOT: &str = include_str!("../../examples/senior_operator_reboot.cedar");

fn admin() -> Caller {
    Caller::new("root", [Role::Admin])
}
fn operator() -> Caller {
    Caller::new("ana", [Role::Operator])
}
fn thing(s: &str) -> ThingName {
    ThingName::parse(s).unwrap()
}
fn ty(s: &str) -> DeviceType {
    DeviceType::parse(s).unwrap()
}
fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}
fn to(command: &str, things: &[&str]) -> CommandSpec {
    CommandSpec::to_things(command, Map::new(), things.iter().map(|t| thing(t)).collect())
}
fn to_type(command: &str, t: &str) -> CommandSpec {
    CommandSpec::to_query(command, Map::new(), DeviceQuery { device_type: Some(ty(t)), ..Default::default() })
}

const TYPES: [&str; 4] = ["smart_plug", "air_quality_monitor", "mailbox_notifier", "pet_feeder"];

async fn world_with(settings: Settings) -> FleetManager {
    let svc = FleetManager::new(ota_core::memory::backend(), settings).expect("valid settings");
    demo::seed(&svc, &admin(), &TYPES, 4, |t, v| format!("image {t} {v}").into_bytes()).await.unwrap();
    // The demo's offline device is offline here too.
    set_connected(&svc, "mailbox_notifier-04", false).await;
    svc
}

async fn world() -> FleetManager {
    world_with(Settings::default()).await
}

async fn set_connected(svc: &FleetManager, name: &str, connected: bool) {
    let mut d = svc.backend().registry.get(&thing(name)).await.unwrap().unwrap();
    d.connected = connected;
    svc.backend().registry.upsert(d).await.unwrap();
}

fn refused(plan: &ota_core::commands::CommandPlan) -> Vec<(String, String)> {
    plan.refusals.iter().map(|r| (r.target.clone(), r.reason.clone())).collect()
}
fn targets(plan: &ota_core::commands::CommandPlan) -> Vec<String> {
    plan.targets.iter().map(|t| t.thing.to_string()).collect()
}

/// Answers every dispatch the store hands out with `status`, until none is left.
async fn drive(svc: &FleetManager, status: impl Fn(&ThingName) -> ExecutionStatus) -> usize {
    let store = svc.backend().commands.clone();
    let mut answered = 0;
    loop {
        let sent = store.advance(Utc::now()).await.unwrap();
        if sent.is_empty() {
            return answered;
        }
        for d in sent {
            let response = CommandResponse { status: status(&d.thing), status_reason: None, result: None };
            assert!(store.respond(&d.thing, &d.execution_id, &response, Utc::now()).await.unwrap());
            answered += 1;
        }
    }
}

#[tokio::test]
async fn a_plan_lists_each_target_and_each_refusal_with_its_reason() {
    let svc = world().await;
    let mut spec = to("reboot", &["mailbox_notifier-04", "smart_plug-01", "smart_plug-99"]);
    spec.things.push(thing("pet_feeder-02"));
    let plan = svc.plan_command(&operator(), &spec).await.unwrap();
    assert_eq!(targets(&plan), ["pet_feeder-02", "smart_plug-01"]);
    let r = refused(&plan);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0].0, "mailbox_notifier-04");
    assert!(r[0].1.starts_with("offline ("), "{}", r[0].1);
    assert!(r[0].1.contains("never sent to offline devices"), "{}", r[0].1);
    assert_eq!(r[1], ("smart_plug-99".into(), "unknown device".into()));
    assert!(plan.plan_id.as_deref().unwrap().starts_with("cplan-"));
    assert!(plan.message.contains("reboot to 2 devices"), "{}", plan.message);

    // `recalibrate` is declared by air quality monitors, not by smart plugs.
    let plan =
        svc.plan_command(&operator(), &to("recalibrate", &["smart_plug-01", "air_quality_monitor-02"])).await.unwrap();
    assert_eq!(targets(&plan), ["air_quality_monitor-02"]);
    let r = refused(&plan);
    assert_eq!(r[0].0, "smart_plug-01");
    assert!(r[0].1.contains("recalibrate is not declared by its firmware"), "{}", r[0].1);
    assert!(r[0].1.contains("it declares: reboot, identify"), "{}", r[0].1);
}

#[tokio::test]
async fn bad_requests_are_clear_errors_and_change_nothing() {
    let svc = world().await;
    let audit_before = svc.audit_trail(&admin(), 1000).await.unwrap().len();
    let cases: Vec<(CommandSpec, &str)> = vec![
        (to("selfdestruct", &["smart_plug-01"]), "not a command ota knows"),
        (to("Reboot!", &["smart_plug-01"]), "lower-case name"),
        (
            CommandSpec::to_things("set_state", params(json!({"state": "asleep"})), vec![thing("smart_plug-01")]),
            "asleep",
        ),
        (CommandSpec::to_things("set_state", Map::new(), vec![thing("smart_plug-01")]), "give state"),
        (CommandSpec { timeout_seconds: Some(0), ..to("reboot", &["smart_plug-01"]) }, "1 to 86400 seconds"),
        (CommandSpec::to_things("reboot", Map::new(), vec![]), "name devices"),
        (to_type("reboot", "smart_plugg"), "did you mean smart_plug"),
    ];
    for (spec, words) in cases {
        let e = svc.plan_command(&operator(), &spec).await.unwrap_err().to_string();
        assert!(e.contains(words), "{spec:?}: {e}");
        let e = svc.start_command(&operator(), &spec, None).await.unwrap_err().to_string();
        assert!(e.contains(words), "{spec:?}: {e}");
    }
    // Settings the firmware does not declare, or out of its bounds, refuse the device naming the key.
    let bad = [
        (json!({"sample_rate_seconds": 0}), "\"sample_rate_seconds\" = 0 is out of bounds: 1 to 3600"),
        (json!({"log_level": "loud"}), "one of: error, warn, info, debug"),
        (json!({"brightness": 3}), "unknown setting \"brightness\""),
    ];
    for (p, words) in bad {
        let spec = CommandSpec::to_things("update_config", params(p), vec![thing("smart_plug-01")]);
        let plan = svc.plan_command(&operator(), &spec).await.unwrap();
        assert!(plan.targets.is_empty() && plan.plan_id.is_none());
        assert!(plan.refusals[0].reason.contains(words), "{}", plan.refusals[0].reason);
        let e = svc.start_command(&operator(), &spec, None).await.unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(e.to_string().contains(words), "{e}");
    }
    // An offline device alone: nothing to send, the operator is told why.
    let e = svc.start_command(&operator(), &to("identify", &["mailbox_notifier-04"]), None).await.unwrap_err();
    assert!(e.to_string().contains("offline"), "{e}");
    assert!(svc.list_commands(&admin(), &CommandQuery::default()).await.unwrap().is_empty(), "no run was created");
    let trail = svc.audit_trail(&admin(), 1000).await.unwrap();
    let refusals = trail.len() - audit_before;
    assert_eq!(refusals, 7 + 3 + 1, "every refused start is audited");
    assert!(trail.iter().take(refusals).all(|e| matches!(e.outcome, AuditOutcome::Refused(_))));
}

#[tokio::test]
async fn held_back_devices_are_left_out_of_a_selection_but_not_when_named() {
    let svc = world().await;
    svc.set_device_state(&operator(), &thing("smart_plug-02"), OperationalState::Maintenance, "relay swap")
        .await
        .unwrap();
    let plan = svc.plan_command(&operator(), &to_type("identify", "smart_plug")).await.unwrap();
    assert_eq!(targets(&plan), ["smart_plug-01", "smart_plug-03", "smart_plug-04"]);
    assert_eq!(plan.refusals[0].target, "smart_plug-02");
    assert!(plan.refusals[0].reason.contains("maintenance") && plan.refusals[0].reason.contains("name it"));
    let named = svc.plan_command(&operator(), &to("identify", &["smart_plug-02"])).await.unwrap();
    assert_eq!(targets(&named), ["smart_plug-02"]);
    assert_eq!(named.targets[0].state, "maintenance");
}

#[tokio::test]
async fn a_start_runs_the_plan_shown_paced_and_a_repeat_while_running_starts_nothing() {
    let mut settings = Settings::default();
    settings.gate.default_policy = RolloutPolicy { max_in_flight: 2, ..Default::default() };
    let svc = world_with(settings).await;
    let spec = to_type("reboot", "pet_feeder");
    let plan = svc.plan_command(&operator(), &spec).await.unwrap();
    assert_eq!(plan.targets.len(), 4);
    let id = plan.plan_id.clone().unwrap();

    // Something changed between the plan and its confirmation: the start is refused.
    set_connected(&svc, "pet_feeder-04", false).await;
    let e = svc.start_command(&operator(), &spec, Some(&id)).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(_)) && e.to_string().contains(&id), "{e}");
    set_connected(&svc, "pet_feeder-04", true).await;

    let started = svc.start_command(&operator(), &spec, Some(&id)).await.unwrap();
    assert!(started.created);
    let run = started.run;
    assert_eq!(run.id, format!("cmd-{}-1", id.trim_start_matches("cplan-")));
    assert!(run.executions.iter().all(|e| e.state == ExecutionState::Queued));
    let again = svc.start_command(&operator(), &spec, Some(&id)).await.unwrap();
    assert!(!again.created && again.run.id == run.id, "{}", again.message);
    assert_eq!(svc.plan_command(&operator(), &spec).await.unwrap().running.as_deref(), Some(run.id.as_str()));

    // The in-flight limit: two at a time.
    let store = svc.backend().commands.clone();
    let first = store.advance(Utc::now()).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].payload(), r#"{"command":"reboot","parameters":{}}"#);
    assert!(store.advance(Utc::now()).await.unwrap().is_empty());
    // A device answers only its own execution.
    let ok = CommandResponse { status: ExecutionStatus::Succeeded, status_reason: None, result: None };
    let e = store.respond(&thing("pet_feeder-04"), &first[0].execution_id, &ok, Utc::now()).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    for d in &first {
        store.respond(&d.thing, &d.execution_id, &ok, Utc::now()).await.unwrap();
    }
    assert_eq!(drive(&svc, |_| ExecutionStatus::Succeeded).await, 2, "the two still queued");
    let done = svc.command_run(&operator(), &run.id).await.unwrap();
    assert_eq!(done.status, CommandRunStatus::Completed, "{}", done.summary());
    assert!(done.executions.iter().all(|e| e.state == ExecutionState::Succeeded));

    // After it ended, the same plan confirmed again reboots again: a new generation.
    let second = svc.start_command(&operator(), &spec, Some(&id)).await.unwrap();
    assert!(second.created);
    assert!(second.run.id.ends_with("-2"), "{}", second.run.id);
    assert_eq!(svc.list_commands(&operator(), &CommandQuery::default()).await.unwrap().len(), 2);
    let for_one = CommandQuery { thing: Some(thing("pet_feeder-03")), ..Default::default() };
    assert_eq!(svc.list_commands(&operator(), &for_one).await.unwrap().len(), 2);
}

#[tokio::test]
async fn failures_past_the_abort_threshold_stop_the_run_and_cancel_twice_is_a_conflict() {
    let mut settings = Settings::default();
    settings.gate.default_policy = RolloutPolicy {
        max_in_flight: 1,
        abort: AbortRule { failure_percent: 10.0, min_executed: 1, max_failures: None },
        ..Default::default()
    };
    let svc = world_with(settings).await;
    let run = svc.start_command(&operator(), &to_type("identify", "smart_plug"), None).await.unwrap().run;
    let store = svc.backend().commands.clone();
    let sent = store.advance(Utc::now()).await.unwrap();
    let failed = CommandResponse {
        status: ExecutionStatus::Failed,
        status_reason: Some(StatusReason { reason_code: "LED_FAULT".into(), reason_description: "no LED".into() }),
        result: None,
    };
    store.respond(&sent[0].thing, &sent[0].execution_id, &failed, Utc::now()).await.unwrap();
    assert!(store.advance(Utc::now()).await.unwrap().is_empty());
    let aborted = svc.command_run(&operator(), &run.id).await.unwrap();
    assert_eq!(aborted.status, CommandRunStatus::Aborted);
    assert_eq!(aborted.counts().canceled, 3);
    assert_eq!(aborted.executions[0].reason_code.as_deref(), Some("LED_FAULT"));
    let e = svc.cancel_command(&operator(), &run.id, "too late").await.unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");

    // Cancel an active one: what was not sent is never sent; twice is a conflict.
    let run = svc.start_command(&operator(), &to_type("identify", "pet_feeder"), None).await.unwrap().run;
    store.advance(Utc::now()).await.unwrap();
    let canceled = svc.cancel_command(&operator(), &run.id, "wrong devices").await.unwrap();
    assert_eq!(canceled.status, CommandRunStatus::Canceled);
    assert_eq!(canceled.counts().canceled, 3);
    assert!(svc.cancel_command(&operator(), &run.id, "again").await.is_err());
    assert!(store.advance(Utc::now()).await.unwrap().is_empty(), "nothing more is sent");
    let e = svc.cancel_command(&operator(), "cmd-nope-1", "").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
}

#[tokio::test]
async fn set_state_needs_no_round_trip_and_update_config_records_the_desired_settings() {
    let svc = world().await;
    let spec = CommandSpec::to_things(
        "set_state",
        params(json!({"state": "maintenance"})),
        vec![thing("smart_plug-04"), thing("mailbox_notifier-04")],
    );
    let plan = svc.plan_command(&operator(), &spec).await.unwrap();
    assert_eq!(targets(&plan), ["mailbox_notifier-04", "smart_plug-04"], "set_state reaches offline devices too");
    let run = svc.start_command(&operator(), &spec, plan.plan_id.as_deref()).await.unwrap().run;
    assert_eq!(run.status, CommandRunStatus::Completed);
    assert!(run.executions.iter().all(|e| e.state == ExecutionState::Succeeded), "{}", run.summary());
    let d = svc.backend().registry.get(&thing("smart_plug-04")).await.unwrap().unwrap();
    assert_eq!(d.state, OperationalState::Maintenance);
    assert!(svc.backend().commands.advance(Utc::now()).await.unwrap().is_empty());

    let spec = CommandSpec::to_things(
        "update_config",
        params(json!({"sample_rate_seconds": 10})),
        vec![thing("smart_plug-01")],
    );
    svc.start_command(&operator(), &spec, None).await.unwrap();
    let d = svc.backend().registry.get(&thing("smart_plug-01")).await.unwrap().unwrap();
    assert_eq!(d.config.desired.get("sample_rate_seconds"), Some(&json!(10)));
    let sent = svc.backend().commands.advance(Utc::now()).await.unwrap();
    assert_eq!(sent[0].payload(), r#"{"command":"update_config","parameters":{"sample_rate_seconds":10}}"#);
}

#[tokio::test]
async fn policy_decides_per_device_and_a_viewer_may_not_send() {
    let svc = world().await;
    let e =
        svc.plan_command(&Caller::new("vic", [Role::Viewer]), &to("identify", &["smart_plug-01"])).await.unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
    assert!(svc.list_commands(&Caller::new("vic", [Role::Viewer]), &CommandQuery::default()).await.is_ok());

    let senior = Arc::new(Authorizer::from_text(SENIOR_REBOOT, "senior_operator_reboot.cedar").unwrap());
    let svc = world().await.with_authorizer(senior);
    let e = svc.plan_command(&operator(), &to("reboot", &["smart_plug-01"])).await.unwrap_err();
    assert!(e.to_string().contains("only a senior_operator may reboot"), "{e}");
    let e = svc.start_command(&operator(), &to("reboot", &["smart_plug-01"]), None).await.unwrap_err();
    assert!(e.to_string().contains("only a senior_operator may reboot"), "{e}");
    let senior_op = operator().with_groups(["senior_operator"]);
    assert!(svc.start_command(&senior_op, &to("reboot", &["smart_plug-01"]), None).await.unwrap().created);
    assert!(svc.start_command(&operator(), &to("identify", &["smart_plug-01"]), None).await.unwrap().created);
}
