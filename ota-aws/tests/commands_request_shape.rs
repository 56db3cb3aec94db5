//! The AWS command store's requests, checked on their exact shape (aws-smithy-mocks, no
//! emulator): the jobs data endpoint found with DescribeEndpoint, a command that already
//! exists read back with GetCommand (and refused when its payload is not ota's), and the
//! transaction that claims an execution only while its run is IN_PROGRESS.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client as Dynamo;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_iot::Client as Iot;
use aws_sdk_iot::operation::create_command::CreateCommandError;
use aws_sdk_iot::operation::describe_endpoint::DescribeEndpointOutput;
use aws_sdk_iot::operation::get_command::GetCommandOutput;
use aws_sdk_iot::types::CommandPayload;
use aws_sdk_iotjobsdataplane::Client as JobsData;
use aws_sdk_iotjobsdataplane::operation::start_command_execution::StartCommandExecutionOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::Blob;
use aws_smithy_types::error::ErrorMetadata;
use chrono::{DateTime, Utc};
use ota_aws::AwsCommandStore;
use ota_core::commands::{CommandExecution, CommandRun, CommandRunStatus};
use ota_core::names::{DeviceType, ThingName};
use ota_core::ports::CommandStore;

const ACCOUNT: &str = "111122223333";
const PAYLOAD: &str = r#"{"command":"reboot","parameters":{}}"#;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn run() -> CommandRun {
    let thing = ThingName::parse("smart_plug-07").unwrap();
    CommandRun {
        id: "cmd-abc-1".into(),
        plan_id: "cplan-abc".into(),
        command: "reboot".into(),
        parameters: Default::default(),
        created_by: "olivia".into(),
        created_at: t(0),
        status: CommandRunStatus::InProgress,
        reason: None,
        ended_at: None,
        policy: Default::default(),
        timeout_seconds: 120,
        executions: vec![CommandExecution::queued(
            "cmd-abc-1-0".into(),
            thing,
            DeviceType::parse("smart_plug").unwrap(),
            t(0),
        )],
        refusals: Vec::new(),
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A table holding `run` (one QUEUED execution) as the store writes it.
fn table() -> Vec<Rule> {
    let r = run();
    let mut header = r.clone();
    header.executions.clear();
    let header_json = serde_json::to_string(&header).unwrap();
    let exec_json = serde_json::to_string(&r.executions[0]).unwrap();
    let open = mock!(Dynamo::get_item)
        .match_requests(|req| req.key().and_then(|k| k.get("run_id")) == Some(&s("#open")))
        .then_output(|| {
            GetItemOutput::builder()
                .item("run_id", s("#open"))
                .item("idx", AttributeValue::N("0".into()))
                .item("runs", AttributeValue::Ss(vec!["cmd-abc-1".into()]))
                .build()
        });
    let query = mock!(Dynamo::query)
        .match_requests(|req| req.expression_attribute_values().and_then(|v| v.get(":r")) == Some(&s("cmd-abc-1")))
        .then_output(move || {
            let header: HashMap<String, AttributeValue> = HashMap::from([
                ("run_id".into(), s("cmd-abc-1")),
                ("idx".into(), AttributeValue::N("-1".into())),
                ("run".into(), s(&header_json)),
                ("status".into(), s("IN_PROGRESS")),
            ]);
            let exec: HashMap<String, AttributeValue> = HashMap::from([
                ("run_id".into(), s("cmd-abc-1")),
                ("idx".into(), AttributeValue::N("0".into())),
                ("execution".into(), s(&exec_json)),
                ("state".into(), s("QUEUED")),
                ("thing".into(), s("smart_plug-07")),
            ]);
            QueryOutput::builder().items(header).items(exec).build()
        });
    // The claim: a condition on the header, the execution moved only from QUEUED.
    let claim = mock!(Dynamo::transact_write_items)
        .match_requests(|req| {
            let items = req.transact_items();
            let check = items.first().and_then(|i| i.condition_check());
            let update = items.get(1).and_then(|i| i.update());
            items.len() == 2
                && check.is_some_and(|c| {
                    c.key().get("idx") == Some(&AttributeValue::N("-1".into()))
                        && c.condition_expression() == "#status = :active"
                        && c.expression_attribute_values().and_then(|v| v.get(":active")) == Some(&s("IN_PROGRESS"))
                })
                && update.is_some_and(|u| {
                    u.key().get("idx") == Some(&AttributeValue::N("0".into()))
                        && u.condition_expression() == Some("#state = :queued")
                        && u.expression_attribute_values().and_then(|v| v.get(":new")) == Some(&s("CREATED"))
                })
        })
        .then_output(|| TransactWriteItemsOutput::builder().build());
    // AWS's id recorded beside ota's, on the execution still CREATED.
    let record = mock!(Dynamo::update_item)
        .match_requests(|req| {
            req.update_expression().is_some_and(|e| e.contains("aws_execution_id = :aws"))
                && req.expression_attribute_values().and_then(|v| v.get(":aws")) == Some(&s("4f2a-aws"))
                && req.condition_expression() == Some("#state = :prev")
                && req.expression_attribute_values().and_then(|v| v.get(":prev")) == Some(&s("CREATED"))
        })
        .then_output(|| UpdateItemOutput::builder().build());
    vec![open, query, claim, record]
}

fn rules(rules: Vec<Rule>) -> &'static [&'static Rule] {
    let owned: &'static [Rule] = Box::leak(rules.into_boxed_slice());
    Box::leak(owned.iter().collect::<Vec<_>>().into_boxed_slice())
}

fn exists() -> CreateCommandError {
    CreateCommandError::ConflictException(
        aws_sdk_iot::types::error::ConflictException::builder()
            .message("command ota-reboot already exists")
            .meta(ErrorMetadata::builder().code("ConflictException").build())
            .build(),
    )
}

fn iot(payload: &'static str) -> (Iot, [&'static Rule; 3]) {
    let endpoint =
        mock!(Iot::describe_endpoint).match_requests(|r| r.endpoint_type() == Some("iot:Jobs")).then_output(|| {
            DescribeEndpointOutput::builder().endpoint_address("a1b2c3.jobs.iot.eu-west-1.amazonaws.com").build()
        });
    let create = mock!(Iot::create_command)
        .match_requests(|r| {
            r.command_id() == Some("ota-reboot")
                && r.namespace().map(|n| n.as_str()) == Some("AWS-IoT")
                && r.payload().and_then(|p| p.content()).map(|b| b.as_ref()) == Some(PAYLOAD.as_bytes())
        })
        .then_error(exists);
    let get = mock!(Iot::get_command).match_requests(|r| r.command_id() == Some("ota-reboot")).then_output(move || {
        GetCommandOutput::builder()
            .command_id("ota-reboot")
            .command_arn(format!("arn:aws:iot:eu-west-1:{ACCOUNT}:command/ota-reboot"))
            .payload(
                CommandPayload::builder()
                    .content(Blob::new(payload.as_bytes()))
                    .content_type("application/json")
                    .build(),
            )
            .build()
    });
    let r = rules(vec![endpoint, create, get]);
    let client = mock_client!(aws_sdk_iot, RuleMode::MatchAny, r);
    (client, [r[0], r[1], r[2]])
}

#[tokio::test]
async fn an_execution_is_claimed_then_started_at_the_discovered_endpoint_on_the_existing_command() {
    let (iot, [endpoint, create, get]) = iot(PAYLOAD);
    let start = mock!(JobsData::start_command_execution)
        .match_requests(|r| {
            r.target_arn() == Some(&format!("arn:aws:iot:eu-west-1:{ACCOUNT}:thing/smart_plug-07"))
                && r.command_arn() == Some(&format!("arn:aws:iot:eu-west-1:{ACCOUNT}:command/ota-reboot"))
                && r.execution_timeout_seconds() == Some(120)
                && r.client_token() == Some("cmd-abc-1-0")
        })
        .then_output(|| StartCommandExecutionOutput::builder().execution_id("4f2a-aws").build());
    let jobs_rules = rules(vec![start]);
    let jobs = mock_client!(aws_sdk_iotjobsdataplane, RuleMode::MatchAny, jobs_rules);
    let db_rules = rules(table());
    let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, db_rules);
    let store = AwsCommandStore::discovering_endpoint(iot, jobs, db, "ota-commands", "eu-west-1", Some(ACCOUNT.into()));
    assert!(store.advance(t(1)).await.unwrap().is_empty());
    assert_eq!(endpoint.num_calls(), 1, "the iot:Jobs endpoint is looked up");
    assert_eq!((create.num_calls(), get.num_calls()), (1, 1), "an existing command is read back");
    assert_eq!(jobs_rules[0].num_calls(), 1, "started once, at the discovered endpoint's client");
    assert_eq!((db_rules[2].num_calls(), db_rules[3].num_calls()), (1, 1), "claimed, then AWS's id recorded");
}

#[tokio::test]
async fn a_command_of_that_name_with_another_payload_is_refused_and_nothing_is_started() {
    let (iot, [_, _, get]) = iot(r#"{"command":"reboot","parameters":{"force":true}}"#);
    let start = mock!(JobsData::start_command_execution)
        .then_output(|| StartCommandExecutionOutput::builder().execution_id("never").build());
    let jobs_rules = rules(vec![start]);
    let jobs = mock_client!(aws_sdk_iotjobsdataplane, RuleMode::MatchAny, jobs_rules);
    let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules(table()));
    let store = AwsCommandStore::new(iot, jobs, db, "ota-commands", "eu-west-1", Some(ACCOUNT.into()));
    let err = store.advance(t(1)).await.unwrap_err();
    assert!(
        matches!(&err, ota_core::Error::Conflict(m) if m.contains("ota-reboot") && m.contains("delete-command")),
        "{err}"
    );
    assert_eq!(get.num_calls(), 1);
    assert_eq!(jobs_rules[0].num_calls(), 0, "nothing is started on a command that says something else");
}
