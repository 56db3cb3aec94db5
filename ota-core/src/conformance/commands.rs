//! Command run behaviours every backend with a [`crate::ports::CommandStore`] runs: what a
//! store keeps of a run and finds again, and that its `advance`, `respond` and `cancel` do
//! exactly what the pure transitions of [`CommandRun`] do (the memory store applies them to
//! its record; another store must reach the same run, field for field). Run by
//! [`super::run_commands`].

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, json};

use super::{admin, device, t0, thing, ty};
use crate::auth::{Caller, Role};
use crate::command::{CommandResponse, ExecutionStatus, StatusReason};
use crate::commands::{
    CommandExecution, CommandQuery, CommandRun, CommandRunStatus, CommandSpec, ExecutionState, run_id,
};
use crate::error::Error;
use crate::policy::{AbortRule, RolloutPolicy};
use crate::ports::Backend;
use crate::service::{FleetManager, PublishRequest, Settings};
use crate::targeting::Refusal;

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(seconds)
}

/// A run of `command` to `n` smart plugs (`smart_plug-01` ...), created at `created`.
fn run(id: &str, command: &str, n: usize, policy: RolloutPolicy, created: DateTime<Utc>) -> CommandRun {
    CommandRun {
        id: id.to_string(),
        plan_id: format!("cplan-{id}"),
        command: command.to_string(),
        parameters: Map::new(),
        created_by: "operator".into(),
        created_at: created,
        status: CommandRunStatus::InProgress,
        reason: None,
        ended_at: None,
        policy,
        timeout_seconds: 60,
        executions: (0..n)
            .map(|i| {
                let t = thing(&format!("smart_plug-{:02}", i + 1));
                CommandExecution::queued(format!("{id}-{i}"), t, ty("smart_plug"), created)
            })
            .collect(),
        refusals: Vec::new(),
    }
}

fn answer(status: ExecutionStatus) -> CommandResponse {
    CommandResponse { status, status_reason: None, result: None }
}

fn limited(max_in_flight: u32) -> RolloutPolicy {
    RolloutPolicy { max_in_flight, ..Default::default() }
}

/// Advances the store and the model at `now`: the same executions are due, and the store's
/// run is the model's afterwards.
async fn advance_both(b: &Backend, model: &mut CommandRun, now: DateTime<Utc>) -> Vec<String> {
    let sent = b.commands.advance(now).await.unwrap();
    assert_eq!(sent, model.advance(now), "the same executions are due at {now}");
    assert_eq!(&b.commands.get(&model.id).await.unwrap(), model, "the stored run after an advance at {now}");
    sent.into_iter().map(|d| d.execution_id).collect()
}

/// Answers in the store and the model: the same outcome, the same run afterwards.
async fn respond_both(b: &Backend, model: &mut CommandRun, id: &str, r: &CommandResponse, now: DateTime<Utc>) -> bool {
    let e = model.execution(id).expect("an execution of the run").clone();
    let changed = b.commands.respond(&e.thing, id, r, now).await.unwrap();
    assert_eq!(changed, model.respond(id, r, now).unwrap(), "the same outcome for {id}");
    assert_eq!(&b.commands.get(&model.id).await.unwrap(), model, "the stored run after an answer to {id}");
    changed
}

pub async fn commands_create_get_and_list_newest_first(b: &Backend) {
    let mut first = run("cmd-aaa-1", "reboot", 3, limited(2), at(0));
    first.parameters = json!({"note": "a", "n": 1.5}).as_object().cloned().unwrap_or_default();
    first.refusals = vec![Refusal { target: "smart_plug-09".into(), reason: "offline (never seen)".into() }];
    let second = run("cmd-bbb-1", "identify", 1, RolloutPolicy::default(), at(10));
    b.commands.create(&first).await.unwrap();
    b.commands.create(&second).await.unwrap();
    assert_eq!(b.commands.get("cmd-aaa-1").await.unwrap(), first, "a run round-trips exactly");
    assert!(matches!(b.commands.get("cmd-zzz-1").await, Err(Error::NotFound { .. })));

    let ids = |runs: Vec<CommandRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let list = async |q: CommandQuery| ids(b.commands.list(&q).await.unwrap());
    assert_eq!(list(CommandQuery::default()).await, ["cmd-bbb-1", "cmd-aaa-1"], "newest first");
    assert_eq!(list(CommandQuery { limit: Some(1), ..Default::default() }).await, ["cmd-bbb-1"]);
    let by_plan = CommandQuery { plan_id: Some("cplan-cmd-aaa-1".into()), ..Default::default() };
    assert_eq!(list(by_plan).await, ["cmd-aaa-1"]);
    let by_thing = CommandQuery { thing: Some(thing("smart_plug-03")), ..Default::default() };
    assert_eq!(list(by_thing).await, ["cmd-aaa-1"], "only the run with an execution on it");
    let nobody = CommandQuery { thing: Some(thing("smart_plug-77")), ..Default::default() };
    assert!(list(nobody).await.is_empty());
    let active = CommandQuery { status: Some(CommandRunStatus::InProgress), ..Default::default() };
    assert_eq!(list(active.clone()).await.len(), 2);

    // The same id again is refused and replaces nothing.
    let again = run("cmd-aaa-1", "identify", 1, RolloutPolicy::default(), at(20));
    assert!(matches!(b.commands.create(&again).await, Err(Error::AlreadyExists { .. })));
    assert_eq!(b.commands.get("cmd-aaa-1").await.unwrap(), first);

    b.commands.cancel("cmd-bbb-1", "not needed", at(30)).await.unwrap();
    assert_eq!(list(active).await, ["cmd-aaa-1"]);
    let canceled = CommandQuery { status: Some(CommandRunStatus::Canceled), ..Default::default() };
    assert_eq!(list(canceled).await, ["cmd-bbb-1"]);
}

pub async fn commands_advance_paces_by_the_in_flight_limit_and_completes(b: &Backend) {
    let mut model = run("cmd-pace-1", "reboot", 5, limited(2), at(0));
    b.commands.create(&model).await.unwrap();
    let sent = b.commands.advance(at(1)).await.unwrap();
    assert_eq!(sent, model.clone().advance(at(1)));
    // What is sent carries the request.
    assert_eq!(sent.len(), 2, "the in-flight limit");
    assert_eq!((sent[0].thing.as_str(), sent[0].command.as_str()), ("smart_plug-01", "reboot"));
    assert_eq!(sent[0].timeout_seconds, 60);
    assert_eq!(sent[0].payload(), r#"{"command":"reboot","parameters":{}}"#);
    model.advance(at(1));
    assert_eq!(b.commands.get(&model.id).await.unwrap(), model);

    assert!(advance_both(b, &mut model, at(2)).await.is_empty(), "no slot is free");
    respond_both(b, &mut model, "cmd-pace-1-0", &answer(ExecutionStatus::InProgress), at(3)).await;
    assert!(advance_both(b, &mut model, at(4)).await.is_empty(), "IN_PROGRESS still holds its slot");
    respond_both(b, &mut model, "cmd-pace-1-0", &answer(ExecutionStatus::Succeeded), at(5)).await;
    assert_eq!(advance_both(b, &mut model, at(6)).await, ["cmd-pace-1-2"], "one answer frees one slot");
    for (i, id) in ["cmd-pace-1-1", "cmd-pace-1-2"].into_iter().enumerate() {
        respond_both(b, &mut model, id, &answer(ExecutionStatus::Succeeded), at(7 + i as i64)).await;
    }
    assert_eq!(advance_both(b, &mut model, at(10)).await, ["cmd-pace-1-3", "cmd-pace-1-4"]);
    for id in ["cmd-pace-1-3", "cmd-pace-1-4"] {
        respond_both(b, &mut model, id, &answer(ExecutionStatus::Succeeded), at(11)).await;
    }
    advance_both(b, &mut model, at(12)).await;
    let done = b.commands.get(&model.id).await.unwrap();
    assert_eq!((done.status, done.ended_at), (CommandRunStatus::Completed, Some(at(12))), "{}", done.summary());
    assert!(advance_both(b, &mut model, at(13)).await.is_empty(), "a completed run sends nothing");
}

pub async fn commands_respond_records_answers_of_the_device_only(b: &Backend) {
    let mut model = run("cmd-resp-1", "recalibrate", 3, limited(2), at(0));
    b.commands.create(&model).await.unwrap();
    advance_both(b, &mut model, at(1)).await;
    let before = b.commands.get(&model.id).await.unwrap();

    // Another device answering this device's execution, or an unknown id: refused, and
    // nothing changes.
    let ok = answer(ExecutionStatus::Succeeded);
    let err = b.commands.respond(&thing("smart_plug-02"), "cmd-resp-1-0", &ok, at(2)).await;
    assert!(matches!(err, Err(Error::NotFound { .. })), "a device answers only its own executions");
    let err = b.commands.respond(&thing("smart_plug-01"), "cmd-resp-1-99", &ok, at(2)).await;
    assert!(matches!(err, Err(Error::NotFound { .. })));
    assert_eq!(b.commands.get(&model.id).await.unwrap(), before, "a refused answer changes nothing");

    // A rejection with its reason, a success with a result.
    let rejected = CommandResponse {
        status: ExecutionStatus::Rejected,
        status_reason: Some(StatusReason {
            reason_code: "UPDATE_IN_PROGRESS".into(),
            reason_description: "an update is in progress".into(),
        }),
        result: None,
    };
    assert!(respond_both(b, &mut model, "cmd-resp-1-0", &rejected, at(3)).await);
    let succeeded = CommandResponse {
        status: ExecutionStatus::Succeeded,
        status_reason: Some(StatusReason { reason_code: "DONE".into(), reason_description: String::new() }),
        result: json!({"offset": {"S": "0.5"}}).as_object().cloned(),
    };
    assert!(respond_both(b, &mut model, "cmd-resp-1-1", &succeeded, at(4)).await);
    let stored = b.commands.get(&model.id).await.unwrap();
    let e0 = &stored.executions[0];
    assert_eq!(
        (e0.state, e0.reason_code.as_deref(), e0.reason.as_deref()),
        (ExecutionState::Rejected, Some("UPDATE_IN_PROGRESS"), Some("an update is in progress"))
    );
    let e1 = &stored.executions[1];
    assert_eq!((e1.state, e1.reason.as_deref()), (ExecutionState::Succeeded, None));
    assert_eq!(e1.result, succeeded.result);

    // A repeated answer, another answer to an ended execution, an answer to one never sent:
    // nothing changes.
    assert!(!respond_both(b, &mut model, "cmd-resp-1-1", &succeeded, at(5)).await);
    assert!(!respond_both(b, &mut model, "cmd-resp-1-0", &answer(ExecutionStatus::Succeeded), at(5)).await);
    assert!(!respond_both(b, &mut model, "cmd-resp-1-2", &answer(ExecutionStatus::Succeeded), at(5)).await);
}

pub async fn commands_time_out_and_a_late_answer_changes_nothing(b: &Backend) {
    let mut model = run("cmd-late-1", "identify", 2, limited(1), at(0));
    b.commands.create(&model).await.unwrap();
    assert_eq!(advance_both(b, &mut model, at(0)).await, ["cmd-late-1-0"]);
    advance_both(b, &mut model, at(59)).await;
    assert_eq!(b.commands.get(&model.id).await.unwrap().executions[0].state, ExecutionState::Created);
    // At the timeout: TIMED_OUT, which frees the slot for the next in the same step.
    assert_eq!(advance_both(b, &mut model, at(60)).await, ["cmd-late-1-1"]);
    let stored = b.commands.get(&model.id).await.unwrap();
    let e = &stored.executions[0];
    assert_eq!(
        (e.state, e.reason_code.as_deref(), e.reason.as_deref()),
        (ExecutionState::TimedOut, Some("TIMED_OUT"), Some("no answer within 60 s"))
    );
    assert!(!respond_both(b, &mut model, "cmd-late-1-0", &answer(ExecutionStatus::Succeeded), at(61)).await);
    assert_eq!(b.commands.get(&model.id).await.unwrap().executions[0].state, ExecutionState::TimedOut);
    respond_both(b, &mut model, "cmd-late-1-1", &answer(ExecutionStatus::Succeeded), at(62)).await;
    advance_both(b, &mut model, at(63)).await;
    assert_eq!(b.commands.get(&model.id).await.unwrap().status, CommandRunStatus::Completed);
}

pub async fn commands_abort_past_the_thresholds_and_cancel_what_was_not_sent(b: &Backend) {
    let policy = RolloutPolicy {
        max_in_flight: 3,
        abort: AbortRule { failure_percent: 50.0, min_executed: 2, max_failures: None },
        ..Default::default()
    };
    let mut model = run("cmd-abort-1", "recalibrate", 10, policy, at(0));
    b.commands.create(&model).await.unwrap();
    let sent = advance_both(b, &mut model, at(0)).await;
    let failed = CommandResponse::new(ExecutionStatus::Failed, "ACTION_FAILED", "sensor missing");
    respond_both(b, &mut model, &sent[0], &failed, at(1)).await;
    respond_both(b, &mut model, &sent[1], &failed, at(1)).await;
    assert!(advance_both(b, &mut model, at(2)).await.is_empty());
    let stored = b.commands.get(&model.id).await.unwrap();
    assert_eq!(stored.status, CommandRunStatus::Aborted);
    assert!(stored.reason.as_deref().is_some_and(|r| r.contains("2 of 2")), "{:?}", stored.reason);
    let last = stored.executions.last().unwrap();
    assert_eq!(
        (last.state, last.reason_code.as_deref(), last.reason.as_deref()),
        (ExecutionState::Canceled, Some("CANCELED"), Some("the command run aborted before this device was sent it"))
    );
    // The one still out may answer after the abort: recorded, and nothing more is sent.
    assert!(respond_both(b, &mut model, &sent[2], &answer(ExecutionStatus::Succeeded), at(3)).await);
    assert!(advance_both(b, &mut model, at(4)).await.is_empty());
    assert!(matches!(b.commands.cancel(&model.id, "late", at(5)).await, Err(Error::Conflict(_))));
    assert_eq!(b.commands.get(&model.id).await.unwrap(), model, "a refused cancel changes nothing");
}

pub async fn commands_cancel_keeps_what_was_sent(b: &Backend) {
    let mut model = run("cmd-cancel-1", "reboot", 4, limited(1), at(0));
    b.commands.create(&model).await.unwrap();
    let sent = advance_both(b, &mut model, at(0)).await;
    let canceled = b.commands.cancel(&model.id, "operator changed their mind", at(1)).await.unwrap();
    model.cancel("operator changed their mind", at(1)).unwrap();
    assert_eq!(canceled, model, "cancel returns the updated run");
    assert_eq!(
        (canceled.status, canceled.reason.as_deref(), canceled.ended_at),
        (CommandRunStatus::Canceled, Some("operator changed their mind"), Some(at(1)))
    );
    let last = &canceled.executions[3];
    assert_eq!(
        (last.state, last.reason.as_deref()),
        (ExecutionState::Canceled, Some("the command run was canceled before this device was sent it"))
    );
    // What was sent may still answer; nothing else is sent.
    assert!(respond_both(b, &mut model, &sent[0], &answer(ExecutionStatus::Succeeded), at(2)).await);
    assert!(advance_both(b, &mut model, at(3)).await.is_empty());
    assert!(matches!(b.commands.cancel(&model.id, "again", at(4)).await, Err(Error::Conflict(_))));
    assert!(matches!(b.commands.cancel("cmd-none-1", "x", at(4)).await, Err(Error::NotFound { .. })));
}

pub async fn commands_runs_advance_together_in_id_order(b: &Backend) {
    let mut one = run("cmd-two-1", "identify", 2, limited(5), at(0));
    let mut two = run("cmd-one-1", "identify", 2, limited(5), at(1));
    b.commands.create(&one).await.unwrap();
    b.commands.create(&two).await.unwrap();
    let sent: Vec<String> = b.commands.advance(at(2)).await.unwrap().into_iter().map(|d| d.execution_id).collect();
    assert_eq!(sent, ["cmd-one-1-0", "cmd-one-1-1", "cmd-two-1-0", "cmd-two-1-1"]);
    two.advance(at(2));
    one.advance(at(2));
    assert_eq!(b.commands.get("cmd-one-1").await.unwrap(), two);
    assert_eq!(b.commands.get("cmd-two-1").await.unwrap(), one);
}

/// The service over the store: a command planned, started (its run stored and found again
/// by plan), repeated while active (the same run), canceled, then confirmed again (a new
/// generation, which runs again).
pub async fn commands_service_starts_repeats_and_runs_again(b: &Backend) {
    let svc = FleetManager::new(b.clone(), Settings::default()).expect("valid settings");
    let admin = admin();
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("commands".to_string(), json!(["reboot", "identify"]));
    svc.publish_firmware(
        &admin,
        PublishRequest {
            device_type: ty("smart_plug"),
            version: super::ver("1.0.0"),
            image: super::image(9, 3000),
            release_notes: String::new(),
            built_at: Some(t0()),
            extra,
        },
    )
    .await
    .unwrap();
    for n in ["smart_plug-01", "smart_plug-02"] {
        b.registry.upsert(device(n, Some("1.0.0"), true)).await.unwrap();
    }
    b.registry.upsert(device("smart_plug-03", Some("1.0.0"), false)).await.unwrap();
    let op = Caller::new("op", [Role::Operator]);
    let things = ["smart_plug-01", "smart_plug-02", "smart_plug-03"].map(thing).to_vec();
    let spec = CommandSpec::to_things("identify", Map::new(), things);
    let plan = svc.plan_command(&op, &spec).await.unwrap();
    assert_eq!(plan.targets.len(), 2, "{plan:?}");
    assert_eq!(plan.refusals.len(), 1, "the offline device is refused: {plan:?}");
    let plan_id = plan.plan_id.clone().expect("something to start");

    let started = svc.start_command(&op, &spec, Some(&plan_id)).await.unwrap();
    assert!(started.created);
    assert_eq!(started.run.id, run_id(&plan_id, 1));
    assert_eq!(b.commands.get(&started.run.id).await.unwrap(), started.run);
    assert_eq!(started.run.refusals, plan.refusals, "the refusals are kept with the run");
    let again = svc.start_command(&op, &spec, Some(&plan_id)).await.unwrap();
    assert!(!again.created, "a repeat while active starts nothing");
    assert_eq!(again.run.id, started.run.id);

    svc.cancel_command(&op, &started.run.id, "wrong plugs").await.unwrap();
    let third = svc.start_command(&op, &spec, Some(&plan_id)).await.unwrap();
    assert!(third.created);
    assert_eq!(third.run.id, run_id(&plan_id, 2), "a new generation");
    let listed = svc.list_commands(&op, &CommandQuery::default()).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&third.run.id.as_str()) && ids.contains(&started.run.id.as_str()), "{ids:?}");
    assert_eq!(svc.command_run(&op, &third.run.id).await.unwrap().status, CommandRunStatus::InProgress);
}
