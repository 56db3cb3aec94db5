//! The AWS command store: its records in DynamoDB on moto (which has no IoT Commands), with
//! IoT Commands answered by request-shape mocks (aws-smithy-mocks): CreateCommand once per
//! payload, StartCommandExecution per admitted execution with its target, timeout and client
//! token, GetCommandExecution for what devices told AWS.

mod moto;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_iot::Client as Iot;
use aws_sdk_iot::operation::create_command::CreateCommandOutput;
use aws_sdk_iot::operation::get_command_execution::{GetCommandExecutionError, GetCommandExecutionOutput};
use aws_sdk_iot::types::{CommandExecutionStatus, StatusReason};
use aws_sdk_iotjobsdataplane::Client as JobsData;
use aws_sdk_iotjobsdataplane::operation::start_command_execution::{
    StartCommandExecutionError, StartCommandExecutionOutput,
};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use chrono::{DateTime, Utc};
use ota_aws::AwsCommandStore;
use ota_core::command::{CommandResponse, ExecutionStatus};
use ota_core::commands::{CommandExecution, CommandQuery, CommandRun, CommandRunStatus, ExecutionState};
use ota_core::names::{DeviceType, ThingName};
use ota_core::policy::{AbortRule, RolloutPolicy};
use ota_core::ports::CommandStore;
use ota_core::targeting::Refusal;
use serde_json::{Value, json};

const REGION: &str = "us-east-1";

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn run(id: &str, n: usize, policy: RolloutPolicy, parameters: Value) -> CommandRun {
    let ty = DeviceType::parse("smart_plug").unwrap();
    CommandRun {
        id: id.into(),
        plan_id: format!("cplan-{}", id.trim_start_matches("cmd-").split('-').next().unwrap()),
        command: if parameters.as_object().is_some_and(|p| !p.is_empty()) { "update_config" } else { "reboot" }.into(),
        parameters: parameters.as_object().cloned().unwrap_or_default(),
        created_by: "olivia".into(),
        created_at: t(0),
        status: CommandRunStatus::InProgress,
        reason: None,
        ended_at: None,
        policy,
        timeout_seconds: 60,
        executions: (0..n)
            .map(|i| {
                let thing = ThingName::parse(&format!("smart_plug-{i:02}")).unwrap();
                CommandExecution::queued(format!("{id}-{i}"), thing, ty.clone(), t(0))
            })
            .collect(),
        refusals: vec![Refusal { target: "smart_plug-99".into(), reason: "offline".into() }],
    }
}

/// The error code and message AWS sends (what ota-aws classifies errors by).
fn meta(code: &str, message: &str) -> aws_smithy_types::error::ErrorMetadata {
    aws_smithy_types::error::ErrorMetadata::builder().code(code).message(message).build()
}

/// One AWS execution: its status and `(reasonCode, reasonDescription)`.
type Known = (CommandExecutionStatus, Option<(String, String)>);

/// What the fake AWS knows: each AWS execution's status and reason, and every call made.
#[derive(Default)]
struct FakeAws {
    status: Mutex<HashMap<String, Known>>,
    created: Mutex<Vec<(String, String)>>,
    started: Mutex<Vec<(String, String, String, i64)>>,
}

impl FakeAws {
    fn set(&self, aws_id: &str, status: CommandExecutionStatus, reason: Option<(&str, &str)>) {
        self.status.lock().unwrap().insert(aws_id.into(), (status, reason.map(|(a, b)| (a.into(), b.into()))));
    }
}

fn iot(fake: &Arc<FakeAws>) -> Iot {
    let f = fake.clone();
    let create = mock!(Iot::create_command).then_compute_output(move |req| {
        let id = req.command_id().unwrap_or_default().to_string();
        let payload = req.payload().and_then(|p| p.content()).map(|b| String::from_utf8_lossy(b.as_ref()).into_owned());
        assert_eq!(req.namespace().map(|n| n.as_str()), Some("AWS-IoT"));
        assert_eq!(req.payload().and_then(|p| p.content_type()), Some("application/json"));
        f.created.lock().unwrap().push((id.clone(), payload.unwrap_or_default()));
        CreateCommandOutput::builder()
            .command_id(&id)
            .command_arn(format!("arn:aws:iot:{REGION}:{}:command/{id}", moto::ACCOUNT))
            .build()
    });
    let f = fake.clone();
    let get = mock!(Iot::get_command_execution).then_compute_response(move |req| {
        let id = req.execution_id().unwrap_or_default();
        assert!(
            req.target_arn()
                .is_some_and(|a| a.starts_with(&format!("arn:aws:iot:{REGION}:{}:thing/smart_plug-", moto::ACCOUNT))),
            "{req:?}"
        );
        match f.status.lock().unwrap().get(id) {
            None => MockResponse::Error(GetCommandExecutionError::ResourceNotFoundException(
                aws_sdk_iot::types::error::ResourceNotFoundException::builder()
                    .message("no such execution")
                    .meta(meta("ResourceNotFoundException", "no such execution"))
                    .build(),
            )),
            Some((status, reason)) => {
                let mut out = GetCommandExecutionOutput::builder().execution_id(id).status(status.clone());
                if let Some((code, words)) = reason {
                    out = out.status_reason(
                        StatusReason::builder().reason_code(code).reason_description(words).build().unwrap(),
                    );
                }
                MockResponse::Output(out.build())
            }
        }
    });
    leak_client_iot(vec![create, get])
}

fn leak_client_iot(rules: Vec<Rule>) -> Iot {
    let refs: Vec<&Rule> = Box::leak(rules.into_boxed_slice()).iter().collect();
    mock_client!(aws_sdk_iot, RuleMode::MatchAny, &refs)
}

/// StartCommandExecution: AWS's id is `aws-{client token}`; a thing named in `refuse` is
/// refused (ValidationException), one in `throttle` throttled.
fn jobs(fake: &Arc<FakeAws>, refuse: &'static [&'static str], throttle: &'static [&'static str]) -> JobsData {
    let f = fake.clone();
    let start = mock!(JobsData::start_command_execution).then_compute_response(move |req| {
        let target = req.target_arn().unwrap_or_default().to_string();
        let thing = target.rsplit('/').next().unwrap_or_default().to_string();
        if refuse.contains(&thing.as_str()) {
            return MockResponse::Error(StartCommandExecutionError::ValidationException(
                aws_sdk_iotjobsdataplane::types::error::ValidationException::builder()
                    .message("thing is not registered")
                    .meta(meta("ValidationException", "thing is not registered"))
                    .build(),
            ));
        }
        if throttle.contains(&thing.as_str()) {
            return MockResponse::Error(StartCommandExecutionError::ThrottlingException(
                aws_sdk_iotjobsdataplane::types::error::ThrottlingException::builder()
                    .message("slow down")
                    .meta(meta("ThrottlingException", "slow down"))
                    .build(),
            ));
        }
        let token = req.client_token().unwrap_or_default().to_string();
        f.started.lock().unwrap().push((
            target,
            req.command_arn().unwrap_or_default().to_string(),
            token.clone(),
            req.execution_timeout_seconds().unwrap_or_default(),
        ));
        let aws_id = format!("aws-{token}");
        f.status.lock().unwrap().entry(aws_id.clone()).or_insert((CommandExecutionStatus::Created, None));
        MockResponse::Output(StartCommandExecutionOutput::builder().execution_id(aws_id).build())
    });
    let refs: Vec<&Rule> = Box::leak(vec![start].into_boxed_slice()).iter().collect();
    // No retries: a computed mock answers a request's first attempt only.
    mock_client!(aws_sdk_iotjobsdataplane, RuleMode::MatchAny, &refs, |c| c
        .retry_config(aws_sdk_iotjobsdataplane::config::retry::RetryConfig::disabled()))
}

async fn store(
    server: &moto::Moto,
    prefix: &str,
    fake: &Arc<FakeAws>,
    refuse: &'static [&'static str],
    throttle: &'static [&'static str],
) -> AwsCommandStore {
    let settings = server.settings(prefix);
    let clients = server.clients().await;
    ota_aws::provision::create_resources(&clients, &settings).await.expect("tables");
    AwsCommandStore::new(
        iot(fake),
        jobs(fake, refuse, throttle),
        clients.dynamodb.clone(),
        settings.table("commands"),
        REGION,
        Some(moto::ACCOUNT.into()),
    )
}

fn states(r: &CommandRun) -> Vec<ExecutionState> {
    r.executions.iter().map(|e| e.state).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_stored_read_back_listed_and_never_overwritten() {
    let Some(server) = moto::start() else { return };
    let fake = Arc::new(FakeAws::default());
    let store = store(&server, "cmds1", &fake, &[], &[]).await;

    // 250 executions: more than one write transaction; 3,000 refusals: more than one item.
    let mut big = run("cmd-aaaa-1", 250, RolloutPolicy::default(), json!({}));
    big.refusals = (0..3000)
        .map(|i| Refusal {
            target: format!("smart_plug-{i:04}"),
            reason: format!("offline (last seen {i} minutes ago) {}", "x".repeat(60)),
        })
        .collect();
    store.create(&big).await.unwrap();
    assert_eq!(store.get("cmd-aaaa-1").await.unwrap(), big, "executions and refusals read back in order");

    let mut second = run("cmd-bbbb-1", 2, RolloutPolicy::default(), json!({}));
    second.created_at = t(10);
    store.create(&second).await.unwrap();
    let mut again = second.clone();
    again.executions.truncate(1);
    let err = store.create(&again).await.unwrap_err();
    assert!(matches!(err, ota_core::Error::AlreadyExists { .. }), "{err}");
    assert_eq!(store.get("cmd-bbbb-1").await.unwrap(), second, "the refused create changed nothing");

    let ids = |runs: Vec<CommandRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list(&CommandQuery::default()).await.unwrap()), ["cmd-bbbb-1", "cmd-aaaa-1"], "newest first");
    let by_plan = CommandQuery { plan_id: Some("cplan-aaaa".into()), ..Default::default() };
    assert_eq!(ids(store.list(&by_plan).await.unwrap()), ["cmd-aaaa-1"]);
    let by_thing = CommandQuery { thing: Some(ThingName::parse("smart_plug-200").unwrap()), ..Default::default() };
    assert_eq!(ids(store.list(&by_thing).await.unwrap()), ["cmd-aaaa-1"], "only the big run reaches smart_plug-200");
    let limited = CommandQuery { limit: Some(1), ..Default::default() };
    assert_eq!(ids(store.list(&limited).await.unwrap()), ["cmd-bbbb-1"]);
    let ended = CommandQuery { status: Some(CommandRunStatus::Canceled), ..Default::default() };
    assert!(store.list(&ended).await.unwrap().is_empty());
    assert!(matches!(store.get("cmd-none-1").await.unwrap_err(), ota_core::Error::NotFound { .. }));
    assert!(matches!(store.get("#open").await.unwrap_err(), ota_core::Error::NotFound { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advance_sends_what_the_pacing_admits_and_follows_aws_to_the_end() {
    let Some(server) = moto::start() else { return };
    let fake = Arc::new(FakeAws::default());
    let store = store(&server, "cmds2", &fake, &[], &[]).await;
    assert!(store.delivers_itself());
    store
        .create(&run("cmd-cccc-1", 3, RolloutPolicy { max_in_flight: 2, ..Default::default() }, json!({})))
        .await
        .unwrap();

    assert!(store.advance(t(1)).await.unwrap().is_empty(), "AWS delivers: nothing is returned to publish");
    let r = store.get("cmd-cccc-1").await.unwrap();
    assert_eq!(states(&r), [ExecutionState::Created, ExecutionState::Created, ExecutionState::Queued]);
    {
        let created = fake.created.lock().unwrap();
        assert_eq!(
            created.as_slice(),
            [("ota-reboot".to_string(), r#"{"command":"reboot","parameters":{}}"#.to_string())]
        );
        let mut started = fake.started.lock().unwrap().clone();
        started.sort();
        let arn = |i: usize| format!("arn:aws:iot:{REGION}:{}:thing/smart_plug-{i:02}", moto::ACCOUNT);
        let command = format!("arn:aws:iot:{REGION}:{}:command/ota-reboot", moto::ACCOUNT);
        assert_eq!(
            started,
            [(arn(0), command.clone(), "cmd-cccc-1-0".into(), 60), (arn(1), command, "cmd-cccc-1-1".into(), 60)]
        );
    }
    assert_eq!(store.aws_execution_id("cmd-cccc-1-0").await.unwrap().as_deref(), Some("aws-cmd-cccc-1-0"));
    assert_eq!(store.aws_execution_id("cmd-cccc-1-2").await.unwrap(), None, "not sent yet");

    // Nothing answered: no slot is free.
    store.advance(t(2)).await.unwrap();
    assert_eq!(fake.started.lock().unwrap().len(), 2);

    // One device succeeded, the other is working on it: the third is sent.
    fake.set("aws-cmd-cccc-1-0", CommandExecutionStatus::Succeeded, None);
    fake.set("aws-cmd-cccc-1-1", CommandExecutionStatus::InProgress, Some(("RECALIBRATING", "halfway")));
    store.advance(t(3)).await.unwrap();
    let r = store.get("cmd-cccc-1").await.unwrap();
    assert_eq!(states(&r), [ExecutionState::Succeeded, ExecutionState::InProgress, ExecutionState::Created]);
    assert_eq!(r.executions[1].reason_code.as_deref(), Some("RECALIBRATING"));
    assert_eq!(r.executions[1].reason.as_deref(), Some("halfway"));
    assert_eq!(fake.created.lock().unwrap().len(), 1, "the AWS command is created once");

    // The rest end: one rejected with its reason, one timed out by AWS.
    fake.set(
        "aws-cmd-cccc-1-1",
        CommandExecutionStatus::Rejected,
        Some(("UPDATE_IN_PROGRESS", "an update is in flight")),
    );
    fake.set("aws-cmd-cccc-1-2", CommandExecutionStatus::TimedOut, None);
    store.advance(t(4)).await.unwrap();
    let r = store.get("cmd-cccc-1").await.unwrap();
    assert_eq!(states(&r), [ExecutionState::Succeeded, ExecutionState::Rejected, ExecutionState::TimedOut]);
    assert_eq!(r.executions[1].reason_code.as_deref(), Some("UPDATE_IN_PROGRESS"));
    assert_eq!(r.executions[2].reason_code.as_deref(), Some("TIMED_OUT"));
    assert_eq!(r.status, CommandRunStatus::Completed);
    assert_eq!(fake.started.lock().unwrap().len(), 3);

    // A closed run is no longer visited: nothing more is asked of AWS.
    fake.set("aws-cmd-cccc-1-0", CommandExecutionStatus::Failed, None);
    store.advance(t(5)).await.unwrap();
    assert_eq!(store.get("cmd-cccc-1").await.unwrap(), r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_make_their_own_aws_command_and_refused_starts_fail_or_wait() {
    let Some(server) = moto::start() else { return };
    let fake = Arc::new(FakeAws::default());
    let store = store(&server, "cmds3", &fake, &["smart_plug-01"], &["smart_plug-02"]).await;
    let params = json!({"log_level": "debug", "sample_rate_seconds": 10});
    store.create(&run("cmd-dddd-1", 3, RolloutPolicy::default(), params)).await.unwrap();
    store.advance(t(1)).await.unwrap();

    let created = fake.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    assert!(created[0].0.starts_with("ota-update_config-") && created[0].0.len() == 30, "{created:?}");
    let payload: Value = serde_json::from_str(&created[0].1).unwrap();
    assert_eq!(
        payload,
        json!({"command": "update_config", "parameters": {"log_level": "debug", "sample_rate_seconds": 10}})
    );

    let r = store.get("cmd-dddd-1").await.unwrap();
    assert_eq!(states(&r), [ExecutionState::Created, ExecutionState::Failed, ExecutionState::Queued]);
    assert_eq!(r.executions[1].reason_code.as_deref(), Some(ota_aws::commands::START_FAILED_CODE));
    assert!(
        r.executions[1].reason.as_deref().unwrap().contains("thing is not registered"),
        "{:?}",
        r.executions[1].reason
    );
    assert_eq!(r.executions[2].sent_at, None, "throttled: back in the queue, to be sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_answers_timeouts_and_aborts_are_recorded_once() {
    let Some(server) = moto::start() else { return };
    let fake = Arc::new(FakeAws::default());
    let store = store(&server, "cmds4", &fake, &[], &[]).await;
    let plug = |i: usize| ThingName::parse(&format!("smart_plug-{i:02}")).unwrap();

    // Cancel: what was not sent is never sent; what was sent may still answer.
    store
        .create(&run("cmd-eeee-1", 4, RolloutPolicy { max_in_flight: 1, ..Default::default() }, json!({})))
        .await
        .unwrap();
    store.advance(t(1)).await.unwrap();
    let r = store.cancel("cmd-eeee-1", "operator changed their mind", t(2)).await.unwrap();
    assert_eq!(r.status, CommandRunStatus::Canceled);
    assert_eq!(states(&r)[1..], [ExecutionState::Canceled; 3]);
    assert!(matches!(store.cancel("cmd-eeee-1", "again", t(3)).await.unwrap_err(), ota_core::Error::Conflict(_)));
    assert!(matches!(store.cancel("cmd-none-1", "x", t(3)).await.unwrap_err(), ota_core::Error::NotFound { .. }));
    let done = CommandResponse { status: ExecutionStatus::Succeeded, status_reason: None, result: None };
    assert!(
        matches!(
            store.respond(&plug(1), "cmd-eeee-1-0", &done, t(4)).await.unwrap_err(),
            ota_core::Error::NotFound { .. }
        ),
        "a device answers only its own execution"
    );
    assert!(store.respond(&plug(0), "cmd-eeee-1-0", &done, t(4)).await.unwrap());
    assert!(!store.respond(&plug(0), "cmd-eeee-1-0", &done, t(5)).await.unwrap(), "a repeated answer changes nothing");
    assert!(matches!(
        store.respond(&plug(0), "cmd-eeee-1-9", &done, t(5)).await.unwrap_err(),
        ota_core::Error::NotFound { .. }
    ));
    store.advance(t(6)).await.unwrap();
    let r = store.get("cmd-eeee-1").await.unwrap();
    assert_eq!(
        states(&r),
        [ExecutionState::Succeeded, ExecutionState::Canceled, ExecutionState::Canceled, ExecutionState::Canceled]
    );
    assert_eq!(fake.started.lock().unwrap().len(), 1);

    // Timeout by ota's clock when AWS said nothing, then failures past the threshold abort.
    let policy = RolloutPolicy {
        max_in_flight: 2,
        abort: AbortRule { failure_percent: 50.0, min_executed: 2, max_failures: None },
        ..Default::default()
    };
    store.create(&run("cmd-ffff-1", 5, policy, json!({}))).await.unwrap();
    store.advance(t(10)).await.unwrap();
    store.advance(t(70)).await.unwrap();
    let r = store.get("cmd-ffff-1").await.unwrap();
    assert_eq!(r.status, CommandRunStatus::Aborted, "{}", r.summary());
    assert_eq!(states(&r)[..2], [ExecutionState::TimedOut; 2]);
    assert_eq!(r.executions[0].reason.as_deref(), Some("no answer within 60 s"));
    assert_eq!(states(&r)[2..], [ExecutionState::Canceled; 3], "the abort cancels what was not sent");
    assert!(matches!(store.cancel("cmd-ffff-1", "late", t(71)).await.unwrap_err(), ota_core::Error::Conflict(_)));
    let late = store.respond(&plug(0), "cmd-ffff-1-0", &done, t(72)).await.unwrap();
    assert!(!late, "a late answer after a timeout stays TIMED_OUT");
}

/// What the conformance suite asks of every store, for one that delivers itself: after every
/// step the stored run is, field for field, the run the pure transitions make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_run_is_the_pure_model_after_every_step() {
    let Some(server) = moto::start() else { return };
    let fake = Arc::new(FakeAws::default());
    let store = store(&server, "cmds5", &fake, &[], &[]).await;
    let policy = RolloutPolicy {
        max_in_flight: 2,
        abort: AbortRule { failure_percent: 50.0, min_executed: 4, max_failures: None },
        ..Default::default()
    };
    let mut model = run("cmd-gggg-1", 6, policy, json!({}));
    store.create(&model).await.unwrap();
    let step = async |model: &mut CommandRun, now: i64| {
        store.advance(t(now)).await.unwrap();
        let due: Vec<String> = model.advance(t(now)).into_iter().map(|d| d.execution_id).collect();
        assert_eq!(&store.get(&model.id).await.unwrap(), model, "after an advance at {now}");
        due
    };
    let answer = async |model: &mut CommandRun, id: &str, status: ExecutionStatus, now: i64| {
        let r = CommandResponse::new(status, "DONE", "as asked");
        let thing = model.execution(id).unwrap().thing.clone();
        let changed = store.respond(&thing, id, &r, t(now)).await.unwrap();
        assert_eq!(changed, model.respond(id, &r, t(now)).unwrap());
        assert_eq!(&store.get(&model.id).await.unwrap(), model, "after an answer to {id}");
    };
    let first = step(&mut model, 1).await;
    assert_eq!(first, ["cmd-gggg-1-0", "cmd-gggg-1-1"]);
    for id in &first {
        assert_eq!(store.aws_execution_id(id).await.unwrap(), Some(format!("aws-{id}")));
    }
    answer(&mut model, "cmd-gggg-1-0", ExecutionStatus::InProgress, 2).await;
    assert!(step(&mut model, 3).await.is_empty(), "IN_PROGRESS holds its slot");
    answer(&mut model, "cmd-gggg-1-0", ExecutionStatus::Failed, 4).await;
    answer(&mut model, "cmd-gggg-1-0", ExecutionStatus::Succeeded, 5).await;
    assert_eq!(step(&mut model, 6).await, ["cmd-gggg-1-2"]);
    // cmd-gggg-1-1 times out at 61, and -3 is sent in its place; failures pass the threshold.
    assert_eq!(step(&mut model, 61).await, ["cmd-gggg-1-3"]);
    answer(&mut model, "cmd-gggg-1-2", ExecutionStatus::Rejected, 62).await;
    answer(&mut model, "cmd-gggg-1-3", ExecutionStatus::Failed, 63).await;
    assert!(step(&mut model, 64).await.is_empty());
    assert_eq!(model.status, CommandRunStatus::Aborted, "{}", model.summary());
    assert!(step(&mut model, 200).await.is_empty(), "an ended run sends nothing");
    assert_eq!(fake.started.lock().unwrap().len(), 4);
}

/// On AWS nothing else moves a paced run between reads: the rollout monitor's tick sends its
/// next executions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_tick_advances_command_runs() {
    let Some(server) = moto::start() else { return };
    let fake = Arc::new(FakeAws::default());
    let mut backend = ota_core::memory::backend();
    backend.commands = Arc::new(store(&server, "cmds6", &fake, &[], &[]).await);
    backend
        .commands
        .create(&run("cmd-hhhh-1", 3, RolloutPolicy { max_in_flight: 2, ..Default::default() }, json!({})))
        .await
        .unwrap();
    let monitor = ota_aws::monitor::Monitor {
        backend: backend.clone(),
        iot: mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[]),
        sns: mock_client!(aws_sdk_sns, RuleMode::MatchAny, &[]),
        topic_arn: None,
        service: None,
    };
    assert!(monitor.check_active(t(1)).await.unwrap().is_empty(), "no rollout");
    assert_eq!(fake.started.lock().unwrap().len(), 2);
    fake.set("aws-cmd-hhhh-1-0", CommandExecutionStatus::Succeeded, None);
    monitor.check_active(t(61)).await.unwrap();
    let r = backend.commands.get("cmd-hhhh-1").await.unwrap();
    assert_eq!(states(&r), [ExecutionState::Succeeded, ExecutionState::TimedOut, ExecutionState::Created]);
}
