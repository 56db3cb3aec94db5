//! Command runs on AWS IoT Device Management's Commands, with their record in DynamoDB.
//!
//! **The AWS side.** Each distinct request is one AWS *command* in the `AWS-IoT` namespace
//! whose static payload is exactly the request ota sends everywhere, the JSON
//! `{"command", "parameters"}` (`application/json`, so devices get it on
//! `$aws/commands/things/{thing}/executions/{id}/request/json`). A command without
//! parameters is `ota-{command}` (`ota-reboot`); one with parameters is
//! `ota-{command}-{12 hex of SHA-256 of the payload}`, one AWS command per distinct
//! parameter set. StartCommandExecution does take per-execution parameters, but only into a
//! *dynamic* command's payload template, whose placeholders are typed scalars fixed when the
//! command is created: `update_config`'s settings are an arbitrary JSON object, which no fixed
//! template can carry, so ota uses static payloads and lets the digest name them. CreateCommand
//! runs the first time a payload is sent (a command that already exists is read back with
//! GetCommand, and its payload must be ota's). Each execution is StartCommandExecution on
//! the jobs data plane (`arn:aws:iot:{region}:{account}:thing/{thing}`, the run's timeout as
//! `executionTimeoutSeconds`, ota's execution id as the client token, so a retried start is
//! the same execution), and is followed with GetCommandExecution: its status (`CREATED`,
//! `IN_PROGRESS`, `SUCCEEDED`, `FAILED`, `REJECTED`, `TIMED_OUT`) becomes the execution's
//! state, `statusReason` its `reason_code` and `reason`, and each named result a JSON value
//! (a string, a boolean, or base64 for binary).
//!
//! **Ids.** ota keeps its own execution ids (`{run id}-{index}`, what every backend shows);
//! AWS's execution id, returned by StartCommandExecution, is stored beside it as
//! `aws_execution_id` on the execution's item ([`AwsCommandStore::aws_execution_id`] reads
//! it). Devices see AWS's id on their topics and answer AWS, not ota: on AWS the service
//! learns their answers through [`CommandStore::advance`] (GetCommandExecution), which the
//! service calls after a start and on every read (`delivers_itself`).
//!
//! **Table `{prefix}-commands`**, hash key `run_id` (S), range key `idx` (N):
//! - `idx = -1`: the run's header: `run` (S, the run as JSON without its executions and
//!   refusals), `status`, `plan_id`, `kind = run` and `created_at` (the `by_created` index).
//! - `idx = i >= 0`: execution `i`: `execution` (S, JSON), `state` (S, for conditions),
//!   `thing` (S, the `by_thing` index), `aws_execution_id` (S, once started). A run of 10,000
//!   devices is 10,000 small items, never one item near DynamoDB's 400 KB.
//! - `idx = -2 - k`: part `k` of the plan's refusals (`refusals`, S, JSON), at most ~200 KB each.
//! - `run_id = #open`, `idx = 0`: `runs` (SS), the runs still active or with executions in
//!   flight, which `advance` visits; `run_id = #plan#{plan id}`, `idx = 0`: `runs` (SS), every
//!   run of a plan. Both are read strongly consistent: a run is in them as soon as it exists.
//!
//! **Concurrency.** Every state change is a conditional write on the state it was read in; an
//! execution is sent only after a transaction moved it `QUEUED -> CREATED` while the header
//! still said `IN_PROGRESS`, so two Lambdas advancing the same run never send one execution
//! twice, and nothing is sent once a cancel or abort is recorded. `create` writes the
//! executions in transactions of up to 100 items, each `attribute_not_exists`, then the header
//! and the two sets in one last transaction; on error what it wrote is deleted again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client as Dynamo;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update};
use aws_sdk_iot::Client as Iot;
use aws_sdk_iot::types::{CommandExecutionStatus, CommandNamespace, CommandPayload};
use aws_sdk_iotjobsdataplane::Client as JobsData;
use aws_smithy_types::Blob;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use ota_core::command::{CommandResponse, ExecutionStatus, StatusReason};
use ota_core::commands::{
    CommandExecution, CommandQuery, CommandRun, CommandRunStatus, Dispatch, ExecutionState, TIMED_OUT_CODE,
    timed_out_reason,
};
use ota_core::names::ThingName;
use ota_core::ports::CommandStore;
use ota_core::targeting::Refusal;
use ota_core::{Error, Result};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::errors::{AwsFailure, FailureKind, aws, fail};
use crate::tables::{Item, get_s, parse_json, s, timestamp};

/// The header's `idx`.
const HEADER: i64 = -1;
/// The set of open runs.
const OPEN: &str = "#open";
/// How many AWS calls one `advance` keeps in flight.
const CONCURRENCY: usize = 16;
/// Items per write transaction (DynamoDB's limit).
const TRANSACTION_ITEMS: usize = 100;
/// The most bytes of refusals JSON in one item.
const REFUSALS_PER_ITEM: usize = 200_000;
/// The reason code of an execution AWS would not start.
pub const START_FAILED_CODE: &str = "START_FAILED";

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn plan_key(plan_id: &str) -> String {
    format!("#plan#{plan_id}")
}

/// The AWS command id of a payload: `ota-{command}` without parameters, else
/// `ota-{command}-{12 hex of the payload's SHA-256}`; at most 64 characters.
pub fn aws_command_id(command: &str, parameters: &Map<String, Value>, payload: &str) -> String {
    let plain = format!("ota-{command}");
    if parameters.is_empty() && plain.len() <= 64 {
        return plain;
    }
    let digest = hex::encode(&Sha256::digest(payload.as_bytes())[..6]);
    let name: String = command.chars().take(64 - 4 - 1 - 12).collect();
    format!("ota-{name}-{digest}")
}

/// What GetCommandExecution said, as the answer a device would have published. `None` for
/// `CREATED` (sent, not answered) and statuses this SDK does not know.
pub fn response_from_aws(
    status: &CommandExecutionStatus,
    reason: Option<&aws_sdk_iot::types::StatusReason>,
    result: Option<&HashMap<String, aws_sdk_iot::types::CommandExecutionResult>>,
) -> Option<CommandResponse> {
    let status = match status {
        CommandExecutionStatus::InProgress => ExecutionStatus::InProgress,
        CommandExecutionStatus::Succeeded => ExecutionStatus::Succeeded,
        CommandExecutionStatus::Failed => ExecutionStatus::Failed,
        CommandExecutionStatus::Rejected => ExecutionStatus::Rejected,
        CommandExecutionStatus::TimedOut => ExecutionStatus::TimedOut,
        _ => return None,
    };
    let status_reason = reason.map(|r| StatusReason {
        reason_code: r.reason_code().to_string(),
        reason_description: r.reason_description().unwrap_or_default().to_string(),
    });
    let result = result.filter(|r| !r.is_empty()).map(|r| {
        r.iter()
            .map(|(k, v)| {
                let value = if let Some(s) = v.s() {
                    Value::String(s.to_string())
                } else if let Some(b) = v.b() {
                    Value::Bool(b)
                } else if let Some(bin) = v.bin() {
                    Value::String(aws_smithy_types::base64::encode(bin.as_ref()))
                } else {
                    Value::Null
                };
                (k.clone(), value)
            })
            .collect::<Map<String, Value>>()
    });
    Some(CommandResponse { status, status_reason, result })
}

/// Where StartCommandExecution goes: a fixed client, or the account's `iot:Jobs` endpoint
/// found once with DescribeEndpoint.
#[derive(Debug)]
enum JobsEndpoint {
    Fixed(JobsData),
    Discover { base: JobsData, found: OnceCell<JobsData> },
}

/// One run as stored: the run, and AWS's id of each execution sent (by ota's execution id).
#[derive(Debug, Clone)]
struct Stored {
    run: CommandRun,
    aws_ids: HashMap<String, String>,
}

/// Command runs on AWS IoT Commands plus their DynamoDB record.
#[derive(Debug)]
pub struct AwsCommandStore {
    iot: Iot,
    jobs: JobsEndpoint,
    db: Dynamo,
    table: String,
    region: String,
    account_id: Option<String>,
    /// `arn:aws:iot:{region}:{account}:thing/`, once known.
    thing_prefix: OnceCell<String>,
    /// AWS command id -> its ARN, for the commands this process created or found.
    command_arns: Mutex<HashMap<String, String>>,
}

impl AwsCommandStore {
    /// A store whose StartCommandExecution calls go through `jobs` as configured (an
    /// emulator, or an endpoint given in the settings).
    pub fn new(
        iot: Iot,
        jobs: JobsData,
        db: Dynamo,
        table: impl Into<String>,
        region: impl Into<String>,
        account_id: Option<String>,
    ) -> Self {
        Self::build(iot, JobsEndpoint::Fixed(jobs), db, table.into(), region.into(), account_id)
    }

    /// A store that finds the account's `iot:Jobs` data endpoint with DescribeEndpoint before
    /// its first StartCommandExecution (what AWS documents for the jobs data plane).
    pub fn discovering_endpoint(
        iot: Iot,
        jobs: JobsData,
        db: Dynamo,
        table: impl Into<String>,
        region: impl Into<String>,
        account_id: Option<String>,
    ) -> Self {
        let jobs = JobsEndpoint::Discover { base: jobs, found: OnceCell::new() };
        Self::build(iot, jobs, db, table.into(), region.into(), account_id)
    }

    fn build(
        iot: Iot,
        jobs: JobsEndpoint,
        db: Dynamo,
        table: String,
        region: String,
        account_id: Option<String>,
    ) -> Self {
        AwsCommandStore {
            iot,
            jobs,
            db,
            table,
            region,
            account_id,
            thing_prefix: OnceCell::new(),
            command_arns: Mutex::new(HashMap::new()),
        }
    }

    /// AWS's id of an execution ota sent, `None` before it was started. `NotFound` for an
    /// unknown execution.
    pub async fn aws_execution_id(&self, execution_id: &str) -> Result<Option<String>> {
        let (run_id, idx) =
            split_execution_id(execution_id).ok_or_else(|| Error::not_found("command execution", execution_id))?;
        let item = self.item(run_id, idx).await?.ok_or_else(|| Error::not_found("command execution", execution_id))?;
        Ok(item.get("aws_execution_id").and_then(|v| v.as_s().ok()).cloned())
    }

    async fn jobs_client(&self) -> Result<&JobsData> {
        match &self.jobs {
            JobsEndpoint::Fixed(c) => Ok(c),
            JobsEndpoint::Discover { base, found } => {
                found
                    .get_or_try_init(|| async {
                        let out = self
                            .iot
                            .describe_endpoint()
                            .endpoint_type("iot:Jobs")
                            .send()
                            .await
                            .map_err(fail("iot:DescribeEndpoint"))?;
                        let address = out
                            .endpoint_address()
                            .filter(|a| !a.is_empty())
                            .ok_or_else(|| Error::storage("iot:DescribeEndpoint returned no iot:Jobs endpoint"))?;
                        let config = base.config().to_builder().endpoint_url(format!("https://{address}")).build();
                        Ok::<_, Error>(JobsData::from_conf(config))
                    })
                    .await
            }
        }
    }

    async fn thing_arn(&self, thing: &ThingName) -> Result<String> {
        let prefix = self
            .thing_prefix
            .get_or_try_init(|| async {
                if let Some(account) = &self.account_id {
                    return Ok(format!("arn:aws:iot:{}:{account}:thing/", self.region));
                }
                let d = self
                    .iot
                    .describe_thing()
                    .thing_name(thing.as_str())
                    .send()
                    .await
                    .map_err(|e| aws("iot:DescribeThing")(e).not_found("thing", thing.as_str()))?;
                let arn = d.thing_arn().unwrap_or_default();
                arn.strip_suffix(thing.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| Error::storage(format!("unexpected thing ARN {arn:?} for {thing}")))
            })
            .await?;
        Ok(format!("{prefix}{thing}"))
    }

    /// The ARN of the AWS command that carries `payload`, created when it does not exist.
    async fn command_arn(&self, d: &Dispatch) -> Result<String> {
        let payload = d.payload();
        let id = aws_command_id(&d.command, &d.parameters, &payload);
        if let Some(arn) = lock(&self.command_arns).get(&id) {
            return Ok(arn.clone());
        }
        let body =
            CommandPayload::builder().content(Blob::new(payload.as_bytes())).content_type("application/json").build();
        let created = self
            .iot
            .create_command()
            .command_id(&id)
            .namespace(CommandNamespace::AwsIoT)
            .display_name(format!("ota {}", d.command).chars().take(64).collect::<String>())
            .description(format!("ota: {payload}").chars().take(2028).collect::<String>())
            .payload(body)
            .send()
            .await;
        let arn = match created {
            Ok(out) => out.command_arn().unwrap_or_default().to_string(),
            Err(e) => {
                let f = aws("iot:CreateCommand")(e);
                if !(f.kind == FailureKind::AlreadyExists || f.code == "ConflictException") {
                    return Err(f.into_error());
                }
                // It exists: it must carry exactly this payload.
                let got = self.iot.get_command().command_id(&id).send().await.map_err(fail("iot:GetCommand"))?;
                let content = got.payload().and_then(|p| p.content()).map(|b| b.as_ref().to_vec()).unwrap_or_default();
                if content != payload.as_bytes() {
                    return Err(Error::Conflict(format!(
                        "the AWS command {id} exists with another payload than ota's {payload}; delete it (aws iot delete-command --command-id {id}) and send again"
                    )));
                }
                got.command_arn().unwrap_or_default().to_string()
            }
        };
        if arn.is_empty() {
            return Err(Error::storage(format!("iot:CreateCommand returned no ARN for {id}")));
        }
        lock(&self.command_arns).insert(id, arn.clone());
        Ok(arn)
    }

    async fn item(&self, run_id: &str, idx: i64) -> Result<Option<Item>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("run_id", s(run_id))
            .key("idx", n(idx))
            .consistent_read(true)
            .send()
            .await
            .map_err(fail("dynamodb:GetItem"))?;
        Ok(out.item().cloned())
    }

    /// The ids in a set item (`#open`, `#plan#...`).
    async fn set(&self, key: &str) -> Result<Vec<String>> {
        Ok(self
            .item(key, 0)
            .await?
            .and_then(|i| i.get("runs").and_then(|v| v.as_ss().ok()).cloned())
            .unwrap_or_default())
    }

    fn set_update(&self, key: &str, op: &str, run_id: &str) -> Result<Update> {
        Update::builder()
            .table_name(&self.table)
            .key("run_id", s(key))
            .key("idx", n(0))
            .update_expression(format!("{op} #runs :id"))
            .expression_attribute_names("#runs", "runs")
            .expression_attribute_values(":id", AttributeValue::Ss(vec![run_id.to_string()]))
            .build()
            .map_err(Error::storage)
    }

    async fn close(&self, run_id: &str) -> Result<()> {
        self.db
            .update_item()
            .table_name(&self.table)
            .key("run_id", s(OPEN))
            .key("idx", n(0))
            .update_expression("DELETE #runs :id")
            .expression_attribute_names("#runs", "runs")
            .expression_attribute_values(":id", AttributeValue::Ss(vec![run_id.to_string()]))
            .send()
            .await
            .map_err(fail("dynamodb:UpdateItem"))?;
        Ok(())
    }

    /// Every item of a run, or `None` without a header.
    async fn load(&self, run_id: &str) -> Result<Option<Stored>> {
        let mut header: Option<CommandRun> = None;
        let mut executions: BTreeMap<i64, CommandExecution> = BTreeMap::new();
        let mut refusals: BTreeMap<i64, Vec<Refusal>> = BTreeMap::new();
        let mut aws_ids = HashMap::new();
        let mut pages = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("run_id = :r")
            .expression_attribute_values(":r", s(run_id))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(fail("dynamodb:Query"))?;
            for item in page.items() {
                let idx: i64 = item
                    .get("idx")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| Error::storage(format!("a stored item of command run {run_id} has no idx")))?;
                match idx {
                    HEADER => header = Some(parse_json("command run", get_s(item, "run")?)?),
                    i if i >= 0 => {
                        let e: CommandExecution = parse_json("command execution", get_s(item, "execution")?)?;
                        if let Some(a) = item.get("aws_execution_id").and_then(|v| v.as_s().ok()) {
                            aws_ids.insert(e.execution_id.clone(), a.clone());
                        }
                        executions.insert(i, e);
                    }
                    i => {
                        refusals.insert(-2 - i, parse_json("command refusals", get_s(item, "refusals")?)?);
                    }
                }
            }
        }
        let Some(mut run) = header else { return Ok(None) };
        run.executions = executions.into_values().collect();
        run.refusals = refusals.into_values().flatten().collect();
        Ok(Some(Stored { run, aws_ids }))
    }

    fn header_put(&self, run: &CommandRun) -> Result<Put> {
        let mut bare = run.clone();
        bare.executions.clear();
        bare.refusals.clear();
        let json = serde_json::to_string(&bare).map_err(Error::storage)?;
        Put::builder()
            .table_name(&self.table)
            .item("run_id", s(&run.id))
            .item("idx", n(HEADER))
            .item("kind", s("run"))
            .item("created_at", s(timestamp(&run.created_at)))
            .item("status", s(run.status.as_str()))
            .item("plan_id", s(&run.plan_id))
            .item("run", s(json))
            .condition_expression("attribute_not_exists(run_id)")
            .build()
            .map_err(Error::storage)
    }

    fn execution_put(&self, run_id: &str, idx: usize, e: &CommandExecution) -> Result<Put> {
        let json = serde_json::to_string(e).map_err(Error::storage)?;
        Put::builder()
            .table_name(&self.table)
            .item("run_id", s(run_id))
            .item("idx", n(idx as i64))
            .item("thing", s(e.thing.as_str()))
            .item("state", s(e.state.as_str()))
            .item("execution", s(json))
            .condition_expression("attribute_not_exists(run_id)")
            .build()
            .map_err(Error::storage)
    }

    fn refusal_puts(&self, run: &CommandRun) -> Result<Vec<Put>> {
        let mut parts: Vec<Vec<&Refusal>> = vec![Vec::new()];
        let mut size = 0;
        for r in &run.refusals {
            let len = r.target.len() + r.reason.len() + 32;
            if size + len > REFUSALS_PER_ITEM && !parts.last().is_some_and(Vec::is_empty) {
                parts.push(Vec::new());
                size = 0;
            }
            size += len;
            if let Some(p) = parts.last_mut() {
                p.push(r);
            }
        }
        parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .enumerate()
            .map(|(k, p)| {
                let json = serde_json::to_string(&p).map_err(Error::storage)?;
                Put::builder()
                    .table_name(&self.table)
                    .item("run_id", s(&run.id))
                    .item("idx", n(-2 - k as i64))
                    .item("refusals", s(json))
                    .condition_expression("attribute_not_exists(run_id)")
                    .build()
                    .map_err(Error::storage)
            })
            .collect()
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> std::result::Result<(), AwsFailure> {
        self.db
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
            .map_err(aws("dynamodb:TransactWriteItems"))
    }

    /// Deletes what a failed create wrote.
    async fn remove(&self, run_id: &str, keys: &[i64]) -> Result<()> {
        for chunk in keys.chunks(TRANSACTION_ITEMS) {
            let items = chunk
                .iter()
                .map(|idx| {
                    Delete::builder()
                        .table_name(&self.table)
                        .key("run_id", s(run_id))
                        .key("idx", n(*idx))
                        .build()
                        .map(|d| TransactWriteItem::builder().delete(d).build())
                        .map_err(Error::storage)
                })
                .collect::<Result<Vec<_>>>()?;
            self.transact(items).await.map_err(|f| f.into_error())?;
        }
        Ok(())
    }

    /// Writes an execution if it is still in `prev`; `false` when it no longer is.
    async fn write_execution(
        &self,
        run_id: &str,
        idx: usize,
        e: &CommandExecution,
        prev: ExecutionState,
        aws_id: Option<&str>,
    ) -> Result<bool> {
        let json = serde_json::to_string(e).map_err(Error::storage)?;
        let mut req = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("run_id", s(run_id))
            .key("idx", n(idx as i64))
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#execution", "execution")
            .expression_attribute_values(":json", s(json))
            .expression_attribute_values(":new", s(e.state.as_str()))
            .expression_attribute_values(":prev", s(prev.as_str()))
            .condition_expression("#state = :prev");
        req = match aws_id {
            Some(a) => req
                .update_expression("SET #execution = :json, #state = :new, aws_execution_id = :aws")
                .expression_attribute_values(":aws", s(a)),
            None => req.update_expression("SET #execution = :json, #state = :new"),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) => match aws("dynamodb:UpdateItem")(e) {
                f if f.kind == FailureKind::ConditionFailed => Ok(false),
                f => Err(f.into_error()),
            },
        }
    }

    /// Records that a run ended, if its header still says `IN_PROGRESS`; `false` otherwise.
    async fn write_end(&self, run: &CommandRun) -> Result<bool> {
        let mut bare = run.clone();
        bare.executions.clear();
        bare.refusals.clear();
        let json = serde_json::to_string(&bare).map_err(Error::storage)?;
        let sent = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("run_id", s(&run.id))
            .key("idx", n(HEADER))
            .update_expression("SET #run = :json, #status = :status")
            .condition_expression("#status = :active")
            .expression_attribute_names("#run", "run")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":json", s(json))
            .expression_attribute_values(":status", s(run.status.as_str()))
            .expression_attribute_values(":active", s(CommandRunStatus::InProgress.as_str()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => match aws("dynamodb:UpdateItem")(e) {
                f if f.kind == FailureKind::ConditionFailed => Ok(false),
                f => Err(f.into_error()),
            },
        }
    }

    /// Moves `claimed` from `QUEUED` to `CREATED` while the run is `IN_PROGRESS`, in
    /// transactions; returns those claimed (a lost transaction stops claiming).
    async fn claim(&self, run: &CommandRun, claimed: Vec<usize>) -> Result<Vec<usize>> {
        let mut won = Vec::new();
        for chunk in claimed.chunks(TRANSACTION_ITEMS - 1) {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .key("run_id", s(&run.id))
                .key("idx", n(HEADER))
                .condition_expression("#status = :active")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":active", s(CommandRunStatus::InProgress.as_str()))
                .build()
                .map_err(Error::storage)?;
            let mut items = vec![TransactWriteItem::builder().condition_check(check).build()];
            for &i in chunk {
                let e = &run.executions[i];
                let json = serde_json::to_string(e).map_err(Error::storage)?;
                let u = Update::builder()
                    .table_name(&self.table)
                    .key("run_id", s(&run.id))
                    .key("idx", n(i as i64))
                    .update_expression("SET #execution = :json, #state = :new")
                    .condition_expression("#state = :queued")
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_names("#execution", "execution")
                    .expression_attribute_values(":json", s(json))
                    .expression_attribute_values(":new", s(ExecutionState::Created.as_str()))
                    .expression_attribute_values(":queued", s(ExecutionState::Queued.as_str()))
                    .build()
                    .map_err(Error::storage)?;
                items.push(TransactWriteItem::builder().update(u).build());
            }
            match self.transact(items).await {
                Ok(()) => won.extend_from_slice(chunk),
                Err(f) if f.kind == FailureKind::ConditionFailed => break,
                Err(f) => return Err(f.into_error()),
            }
        }
        Ok(won)
    }

    /// Starts one execution on AWS: its AWS id, or AWS's refusal of this one execution. An
    /// error (the command cannot be created, the thing's ARN is unknown) leaves it to the
    /// next step, which starts it again under the same client token.
    async fn start(&self, d: &Dispatch) -> Result<std::result::Result<String, AwsFailure>> {
        let command_arn = self.command_arn(d).await?;
        let target = self.thing_arn(&d.thing).await?;
        let timeout = i64::try_from(d.timeout_seconds).unwrap_or(i64::MAX);
        let sent = self
            .jobs_client()
            .await?
            .start_command_execution()
            .target_arn(target)
            .command_arn(command_arn)
            .execution_timeout_seconds(timeout)
            .client_token(&d.execution_id)
            .send()
            .await;
        Ok(match sent {
            Ok(out) => match out.execution_id() {
                Some(id) if !id.is_empty() => Ok(id.to_string()),
                _ => Err(AwsFailure {
                    kind: FailureKind::Other,
                    action: "iot-jobs-data:StartCommandExecution",
                    code: START_FAILED_CODE.into(),
                    message: "AWS returned no execution id".into(),
                }),
            },
            Err(e) => Err(aws("iot:StartCommandExecution")(e)),
        })
    }

    /// What AWS says of an execution in flight now; `None` when it has nothing new.
    async fn refresh(&self, thing: &ThingName, aws_id: &str) -> Result<Option<CommandResponse>> {
        let target = self.thing_arn(thing).await?;
        let got =
            self.iot.get_command_execution().execution_id(aws_id).target_arn(target).include_result(true).send().await;
        match got {
            Ok(out) => Ok(out.status().and_then(|st| response_from_aws(st, out.status_reason(), out.result()))),
            Err(e) => match aws("iot:GetCommandExecution")(e) {
                // Gone or busy: the run's own timeout still ends it.
                f if matches!(f.kind, FailureKind::NotFound | FailureKind::Throttled) => Ok(None),
                f => Err(f.into_error()),
            },
        }
    }

    /// One run's step at `now`: AWS's news of what is in flight, timeouts, the abort, the
    /// completion, and the sends the pacing admits. Returns whether the run is still open.
    async fn advance_run(&self, stored: Stored, now: DateTime<Utc>) -> Result<bool> {
        let Stored { mut run, mut aws_ids } = stored;
        let before: Vec<ExecutionState> = run.executions.iter().map(|e| e.state).collect();

        // What devices told AWS.
        let asks: Vec<(String, ThingName, String)> = run
            .executions
            .iter()
            .filter(|e| e.state.in_flight())
            .filter_map(|e| aws_ids.get(&e.execution_id).map(|a| (e.execution_id.clone(), e.thing.clone(), a.clone())))
            .collect();
        let news: Vec<Result<(String, Option<CommandResponse>)>> = futures::stream::iter(
            asks.into_iter()
                .map(|(id, thing, aws_id)| async move { self.refresh(&thing, &aws_id).await.map(|r| (id, r)) }),
        )
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
        for got in news {
            let (id, response) = got?;
            let Some(mut response) = response else { continue };
            let current = run.execution(&id).map(|e| (e.state, e.reason_code.clone()));
            let new_state = ExecutionState::from(response.status);
            if current.as_ref().is_some_and(|(s, code)| {
                *s == new_state && code.as_deref() == response.status_reason.as_ref().map(|r| r.reason_code.as_str())
            }) {
                continue;
            }
            if response.status == ExecutionStatus::TimedOut && response.status_reason.is_none() {
                response.status_reason = Some(StatusReason {
                    reason_code: TIMED_OUT_CODE.into(),
                    reason_description: timed_out_reason(run.timeout_seconds),
                });
            }
            run.respond(&id, &response, now)?;
        }

        let was_active = run.is_active();
        let dispatches = run.advance(now);

        // Persist what changed other than the sends: answers, timeouts, cancels of an abort.
        if was_active && !run.is_active() && !self.write_end(&run).await? {
            // Canceled meanwhile: the next step reads the run again.
            return Ok(true);
        }
        let claimed: BTreeSet<&str> = dispatches.iter().map(|d| d.execution_id.as_str()).collect();
        let changes: Vec<(usize, ExecutionState)> = run
            .executions
            .iter()
            .enumerate()
            .filter(|(i, e)| e.state != before[*i] && !claimed.contains(e.execution_id.as_str()))
            .map(|(i, _)| (i, before[i]))
            .collect();
        let writes: Vec<Result<bool>> = futures::stream::iter(changes.into_iter().map(|(i, prev)| {
            let run = &run;
            async move { self.write_execution(&run.id, i, &run.executions[i], prev, None).await }
        }))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
        for w in writes {
            w?;
        }

        // The sends: claimed first, then started (with any sent earlier whose start was lost).
        let index: HashMap<String, usize> =
            run.executions.iter().enumerate().map(|(i, e)| (e.execution_id.clone(), i)).collect();
        let want: Vec<usize> = dispatches.iter().filter_map(|d| index.get(&d.execution_id).copied()).collect();
        let mut to_start: Vec<Dispatch> = Vec::new();
        if !want.is_empty() {
            let won: BTreeSet<usize> = self.claim(&run, want).await?.into_iter().collect();
            to_start
                .extend(dispatches.into_iter().filter(|d| index.get(&d.execution_id).is_some_and(|i| won.contains(i))));
        }
        for e in run.executions.iter().filter(|e| e.state.in_flight() && !aws_ids.contains_key(&e.execution_id)) {
            if !to_start.iter().any(|d| d.execution_id == e.execution_id) && before[index[&e.execution_id]].in_flight()
            {
                to_start.push(Dispatch {
                    run_id: run.id.clone(),
                    execution_id: e.execution_id.clone(),
                    thing: e.thing.clone(),
                    command: run.command.clone(),
                    parameters: run.parameters.clone(),
                    timeout_seconds: run.timeout_seconds,
                });
            }
        }
        let started: Vec<(Dispatch, Result<std::result::Result<String, AwsFailure>>)> =
            futures::stream::iter(to_start.into_iter().map(|d| async move {
                let r = self.start(&d).await;
                (d, r)
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (d, r) in started {
            let i = index[&d.execution_id];
            let mut e = run.executions[i].clone();
            match r? {
                Ok(aws_id) => {
                    self.write_execution(&run.id, i, &e, e.state, Some(&aws_id)).await?;
                    aws_ids.insert(d.execution_id.clone(), aws_id);
                }
                Err(f) if f.kind == FailureKind::Denied => return Err(f.into_error()),
                Err(f) if f.kind == FailureKind::Throttled => {
                    // Not sent: back to the queue for the next step.
                    let prev = e.state;
                    e.state = ExecutionState::Queued;
                    e.sent_at = None;
                    self.write_execution(&run.id, i, &e, prev, None).await?;
                    run.executions[i] = e;
                }
                Err(f) => {
                    let prev = e.state;
                    e.state = ExecutionState::Failed;
                    e.reason_code = Some(START_FAILED_CODE.into());
                    e.reason = Some(format!("AWS did not start it: {}", f.into_error()));
                    e.updated_at = now;
                    self.write_execution(&run.id, i, &e, prev, None).await?;
                    run.executions[i] = e;
                }
            }
        }
        Ok(run.is_active() || run.executions.iter().any(|e| e.state.in_flight()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `{run id}-{index}` -> (run id, index).
fn split_execution_id(id: &str) -> Option<(&str, i64)> {
    let (run, idx) = id.rsplit_once('-')?;
    let idx: i64 = idx.parse().ok().filter(|i| *i >= 0)?;
    (!run.is_empty() && !run.starts_with('#')).then_some((run, idx))
}

#[async_trait]
impl CommandStore for AwsCommandStore {
    async fn create(&self, run: &CommandRun) -> Result<()> {
        if run.executions.is_empty() {
            return Err(Error::invalid("command run", &run.id, "has no execution"));
        }
        let mut written: Vec<i64> = Vec::new();
        let mut puts: Vec<(i64, Put)> = Vec::new();
        for (i, e) in run.executions.iter().enumerate() {
            puts.push((i as i64, self.execution_put(&run.id, i, e)?));
        }
        for (k, p) in self.refusal_puts(run)?.into_iter().enumerate() {
            puts.push((-2 - k as i64, p));
        }
        let mut chunks: Vec<Vec<(i64, Put)>> = Vec::new();
        while !puts.is_empty() {
            let rest = puts.split_off(puts.len().min(TRANSACTION_ITEMS));
            chunks.push(std::mem::replace(&mut puts, rest));
        }
        let header = self.header_put(run)?;
        let last = vec![
            TransactWriteItem::builder().put(header).build(),
            TransactWriteItem::builder().update(self.set_update(OPEN, "ADD", &run.id)?).build(),
            TransactWriteItem::builder().update(self.set_update(&plan_key(&run.plan_id), "ADD", &run.id)?).build(),
        ];
        let mut outcome = Ok(());
        for chunk in chunks.into_iter().map(Some).chain(std::iter::once(None)) {
            let (keys, items): (Vec<i64>, Vec<TransactWriteItem>) = match chunk {
                Some(c) => c.into_iter().map(|(k, p)| (k, TransactWriteItem::builder().put(p).build())).unzip(),
                None => (Vec::new(), last.clone()),
            };
            if let Err(f) = self.transact(items).await {
                outcome = Err(if f.kind == FailureKind::ConditionFailed {
                    Error::AlreadyExists { what: "command run", name: run.id.clone(), hint: String::new() }
                } else {
                    f.into_error()
                });
                break;
            }
            written.extend(keys);
        }
        if let Err(e) = outcome {
            // Nothing may stay stored.
            self.remove(&run.id, &written).await?;
            return Err(e);
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<CommandRun> {
        if id.starts_with('#') {
            return Err(Error::not_found("command run", id));
        }
        self.load(id).await?.map(|s| s.run).ok_or_else(|| Error::not_found("command run", id))
    }

    async fn list(&self, query: &CommandQuery) -> Result<Vec<CommandRun>> {
        // The candidate runs: a plan's (consistent), a device's (by_thing), or every run.
        let ids: Vec<String> = if let Some(plan) = &query.plan_id {
            self.set(&plan_key(plan)).await?
        } else if let Some(thing) = &query.thing {
            let mut ids = BTreeSet::new();
            let mut pages = self
                .db
                .query()
                .table_name(&self.table)
                .index_name("by_thing")
                .key_condition_expression("#thing = :t")
                .expression_attribute_names("#thing", "thing")
                .expression_attribute_values(":t", s(thing.as_str()))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for item in page.map_err(fail("dynamodb:Query"))?.items() {
                    ids.insert(get_s(item, "run_id")?.to_string());
                }
            }
            ids.into_iter().collect()
        } else {
            let mut ids = Vec::new();
            let mut pages = self
                .db
                .query()
                .table_name(&self.table)
                .index_name("by_created")
                .key_condition_expression("#kind = :run")
                .expression_attribute_names("#kind", "kind")
                .expression_attribute_values(":run", s("run"))
                .scan_index_forward(false)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for item in page.map_err(fail("dynamodb:Query"))?.items() {
                    ids.push(get_s(item, "run_id")?.to_string());
                }
            }
            ids
        };
        // Headers first (small), then executions only for the runs kept.
        let mut headers: Vec<CommandRun> = Vec::new();
        for id in ids {
            if let Some(item) = self.item(&id, HEADER).await? {
                let run: CommandRun = parse_json("command run", get_s(&item, "run")?)?;
                if query.status.is_none_or(|st| run.status == st)
                    && query.plan_id.as_ref().is_none_or(|p| &run.plan_id == p)
                {
                    headers.push(run);
                }
            }
        }
        headers.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        let mut out = Vec::new();
        for h in headers {
            if query.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            if let Some(stored) = self.load(&h.id).await?
                && query.matches(&stored.run)
            {
                out.push(stored.run);
            }
        }
        Ok(out)
    }

    async fn cancel(&self, id: &str, reason: &str, at: DateTime<Utc>) -> Result<CommandRun> {
        let stored = self.load(id).await?.ok_or_else(|| Error::not_found("command run", id))?;
        let mut run = stored.run;
        let before: Vec<ExecutionState> = run.executions.iter().map(|e| e.state).collect();
        run.cancel(reason, at)?;
        if !self.write_end(&run).await? {
            let now = self.get(id).await?;
            return Err(Error::Conflict(format!("command run {id} already ended ({})", now.status)));
        }
        // No execution is claimed any more: cancel those still queued.
        let changes: Vec<usize> = (0..run.executions.len()).filter(|i| before[*i] == ExecutionState::Queued).collect();
        let writes: Vec<Result<bool>> = futures::stream::iter(changes.into_iter().map(|i| {
            let run = &run;
            async move { self.write_execution(&run.id, i, &run.executions[i], ExecutionState::Queued, None).await }
        }))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
        for w in writes {
            w?;
        }
        self.get(id).await
    }

    async fn advance(&self, now: DateTime<Utc>) -> Result<Vec<Dispatch>> {
        for id in self.set(OPEN).await? {
            match self.load(&id).await? {
                None => self.close(&id).await?,
                Some(stored) => {
                    if !self.advance_run(stored, now).await? {
                        self.close(&id).await?;
                    }
                }
            }
        }
        Ok(Vec::new())
    }

    async fn respond(
        &self,
        thing: &ThingName,
        execution_id: &str,
        response: &CommandResponse,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let unknown = || Error::not_found("command execution", format!("{execution_id} of {thing}"));
        let (run_id, idx) = split_execution_id(execution_id).ok_or_else(unknown)?;
        for _ in 0..5 {
            let Some(item) = self.item(run_id, idx).await? else { return Err(unknown()) };
            let e: CommandExecution = parse_json("command execution", get_s(&item, "execution")?)?;
            if &e.thing != thing || e.execution_id != execution_id {
                return Err(unknown());
            }
            let Some(header) = self.item(run_id, HEADER).await? else { return Err(unknown()) };
            let mut run: CommandRun = parse_json("command run", get_s(&header, "run")?)?;
            let prev = e.state;
            run.executions = vec![e];
            if !run.respond(execution_id, response, at)? {
                return Ok(false);
            }
            let idx = usize::try_from(idx).map_err(|_| unknown())?;
            if self.write_execution(run_id, idx, &run.executions[0], prev, None).await? {
                return Ok(true);
            }
            // Changed meanwhile (a timeout, another answer): read it again.
        }
        Err(Error::Conflict(format!("command execution {execution_id} kept changing; answer again")))
    }

    fn delivers_itself(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_name_the_command_and_digest_the_parameters() {
        let none = Map::new();
        assert_eq!(aws_command_id("reboot", &none, r#"{"command":"reboot","parameters":{}}"#), "ota-reboot");
        let mut p = Map::new();
        p.insert("log_level".into(), Value::String("debug".into()));
        let a =
            aws_command_id("update_config", &p, r#"{"command":"update_config","parameters":{"log_level":"debug"}}"#);
        let b = aws_command_id("update_config", &p, r#"{"command":"update_config","parameters":{"log_level":"info"}}"#);
        assert!(a.starts_with("ota-update_config-") && a.len() == "ota-update_config-".len() + 12, "{a}");
        assert_ne!(a, b, "one AWS command per distinct parameter set");
        let long = "x".repeat(64);
        let id = aws_command_id(&long, &none, "{}");
        assert!(id.len() <= 64 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{id}");
    }

    #[test]
    fn execution_ids_split_into_run_and_index() {
        assert_eq!(split_execution_id("cmd-0123456789ab-2-17"), Some(("cmd-0123456789ab-2", 17)));
        assert_eq!(split_execution_id("cmd-x-1-a"), None);
        assert_eq!(split_execution_id("#open-0"), None);
        assert_eq!(split_execution_id("17"), None);
    }

    #[test]
    fn aws_statuses_map_to_execution_states_with_reasons_and_results() {
        use aws_sdk_iot::types::{CommandExecutionResult, StatusReason as AwsReason};
        assert!(response_from_aws(&CommandExecutionStatus::Created, None, None).is_none(), "sent, not answered");
        let reason = AwsReason::builder().reason_code("UPDATE_IN_PROGRESS").reason_description("busy").build().unwrap();
        let r = response_from_aws(&CommandExecutionStatus::Rejected, Some(&reason), None).unwrap();
        assert_eq!(r.status, ExecutionStatus::Rejected);
        let sr = r.status_reason.unwrap();
        assert_eq!((sr.reason_code.as_str(), sr.reason_description.as_str()), ("UPDATE_IN_PROGRESS", "busy"));
        let mut result = HashMap::new();
        result.insert("boots".to_string(), CommandExecutionResult::builder().s("3").build());
        result.insert("ok".to_string(), CommandExecutionResult::builder().b(true).build());
        result.insert("raw".to_string(), CommandExecutionResult::builder().bin(Blob::new(b"hi".to_vec())).build());
        let r = response_from_aws(&CommandExecutionStatus::Succeeded, None, Some(&result)).unwrap();
        let got = Value::Object(r.result.unwrap());
        assert_eq!(got, serde_json::json!({"boots": "3", "ok": true, "raw": "aGk="}));
        for (aws, ota) in [
            (CommandExecutionStatus::InProgress, ExecutionStatus::InProgress),
            (CommandExecutionStatus::Failed, ExecutionStatus::Failed),
            (CommandExecutionStatus::TimedOut, ExecutionStatus::TimedOut),
        ] {
            assert_eq!(response_from_aws(&aws, None, None).unwrap().status, ota);
        }
    }
}
