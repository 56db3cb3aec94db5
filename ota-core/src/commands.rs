//! Commands through the service: what an operator sends to devices (`reboot`, `identify`,
//! `recalibrate`, `update_config`, `set_state`, or any command a firmware declares), planned
//! and confirmed like a rollout, then run as one *command run* of one execution per device.
//!
//! A run is paced by a [`RolloutPolicy`] exactly as a rollout is: [`RolloutPolicy::admit`]
//! says how many more executions may be sent now (the in-flight limit, the start rate), and
//! [`RolloutPolicy::decide`] aborts the run when failures pass the abort thresholds; an
//! execution not answered within the run's timeout is `TIMED_OUT`. [`CommandRun::advance`]
//! and [`CommandRun::respond`] are the pure transitions every backend applies (the memory
//! backend on the record itself, SQLite in one transaction, AWS around its API calls).
//!
//! Ids: a run is `cmd-{plan hash}-{generation}` (a confirmation repeated while the run is
//! active returns that run; once it ended, the same plan confirmed again is a new
//! generation: asking twice to reboot a device reboots it twice); its executions are
//! `{run id}-{index}`, in the Commands API's execution-id alphabet.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::command::{CommandResponse, ExecutionStatus};
use crate::device::DeviceQuery;
use crate::error::{Error, Result};
use crate::names::{DeviceType, ThingName};
use crate::policy::{Decision, RolloutPolicy, RolloutStats};
use crate::targeting::Refusal;

/// The commands ota itself knows. Any other command must be declared by the firmware of the
/// devices it goes to (`metadata.json`'s `commands`).
pub const KNOWN_COMMANDS: [&str; 5] = ["reboot", "identify", "recalibrate", "update_config", "set_state"];

/// `set_state`: sets the operational state in the registry, with no device round trip.
pub const SET_STATE: &str = "set_state";

/// How long a device has to answer unless the request says otherwise: 5 minutes.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;

/// The longest timeout a command may ask for: one day (AWS allows 1 to 86,400 seconds).
pub const MAX_TIMEOUT_SECONDS: u64 = 86_400;

/// Whether `name` could be a command's name: `[a-z0-9_]{1,64}`, starting with a letter.
pub fn valid_command_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// What an operator asks to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// `reboot`, `identify`, `recalibrate`, `update_config`, `set_state` or a declared command.
    pub command: String,
    /// `update_config`: the settings to change; `set_state`: `{"state": "maintenance"}`.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Devices named one by one (devices in maintenance or retired are included when named).
    #[serde(default)]
    pub things: Vec<ThingName>,
    /// Devices selected by a query (type, location, health, ...): those in maintenance or
    /// retired are left out, and the plan says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<DeviceQuery>,
    /// Seconds a device has to answer (1 to 86,400); [`DEFAULT_TIMEOUT_SECONDS`] if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

impl CommandSpec {
    /// A command to devices named one by one.
    pub fn to_things(command: &str, parameters: Map<String, Value>, things: Vec<ThingName>) -> Self {
        CommandSpec { command: command.to_string(), parameters, things, query: None, timeout_seconds: None }
    }

    /// A command to the devices `query` selects.
    pub fn to_query(command: &str, parameters: Map<String, Value>, query: DeviceQuery) -> Self {
        CommandSpec {
            command: command.to_string(),
            parameters,
            things: Vec::new(),
            query: Some(query),
            timeout_seconds: None,
        }
    }

    /// The timeout in force, checked.
    pub fn timeout(&self) -> Result<u64> {
        match self.timeout_seconds {
            None => Ok(DEFAULT_TIMEOUT_SECONDS),
            Some(t) if (1..=MAX_TIMEOUT_SECONDS).contains(&t) => Ok(t),
            Some(t) => Err(Error::invalid(
                "command timeout",
                format!("{t} s"),
                format!("a command's timeout is 1 to {MAX_TIMEOUT_SECONDS} seconds"),
            )),
        }
    }
}

/// One device a planned command goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandTarget {
    pub thing: ThingName,
    pub device_type: DeviceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `active`, `maintenance` or `retired`.
    pub state: String,
}

/// What a command would do, or why not: the targets it would run on, each refused device with
/// its reason, the pacing and the timeout. `plan_id` is present when there is something to
/// start; a start must present it (what was shown is what runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandPlan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    pub command: String,
    pub parameters: Map<String, Value>,
    /// Sorted by thing.
    pub targets: Vec<CommandTarget>,
    /// Sorted by target.
    pub refusals: Vec<Refusal>,
    /// The in-flight limit, start rate and abort thresholds the run is paced by.
    pub policy: RolloutPolicy,
    pub timeout_seconds: u64,
    pub message: String,
    /// The run that already does exactly this, when one is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
}

impl CommandPlan {
    /// The digest of exactly what would run: command, parameters, targets, policy, timeout.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update(bytes);
            h.update([0]);
        };
        field(self.command.as_bytes());
        field(serde_json::to_string(&self.parameters).unwrap_or_default().as_bytes());
        field(&(self.targets.len() as u64).to_le_bytes());
        for t in &self.targets {
            field(t.thing.as_str().as_bytes());
        }
        field(serde_json::to_string(&self.policy).unwrap_or_default().as_bytes());
        field(&self.timeout_seconds.to_le_bytes());
        format!("cplan-{}", hex::encode(&h.finalize()[..6]))
    }
}

/// The run id of generation `generation` of the plan `plan_id`.
pub fn run_id(plan_id: &str, generation: u32) -> String {
    let hash = plan_id.strip_prefix("cplan-").unwrap_or(plan_id);
    format!("cmd-{hash}-{generation}")
}

/// An execution's state: the Commands API's statuses, with `QUEUED` (not sent yet: the run's
/// pacing holds it) and `CANCELED` (never sent: the run was canceled or aborted first).
/// `CREATED` is sent and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionState {
    Queued,
    Created,
    InProgress,
    Succeeded,
    Failed,
    Rejected,
    TimedOut,
    Canceled,
}

impl ExecutionState {
    /// Every state, in order.
    pub const ALL: [ExecutionState; 8] = [
        ExecutionState::Queued,
        ExecutionState::Created,
        ExecutionState::InProgress,
        ExecutionState::Succeeded,
        ExecutionState::Failed,
        ExecutionState::Rejected,
        ExecutionState::TimedOut,
        ExecutionState::Canceled,
    ];

    /// As stored and shown: `QUEUED`, `SUCCEEDED`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Queued => "QUEUED",
            ExecutionState::Created => "CREATED",
            ExecutionState::InProgress => "IN_PROGRESS",
            ExecutionState::Succeeded => "SUCCEEDED",
            ExecutionState::Failed => "FAILED",
            ExecutionState::Rejected => "REJECTED",
            ExecutionState::TimedOut => "TIMED_OUT",
            ExecutionState::Canceled => "CANCELED",
        }
    }

    /// Parses [`Self::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the execution is over.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecutionState::Queued | ExecutionState::Created | ExecutionState::InProgress)
    }

    /// Whether it was sent and is not over (it holds an in-flight slot).
    pub fn in_flight(self) -> bool {
        matches!(self, ExecutionState::Created | ExecutionState::InProgress)
    }

    /// Whether it counts as a failure for the abort thresholds.
    pub fn is_failure(self) -> bool {
        matches!(self, ExecutionState::Failed | ExecutionState::Rejected | ExecutionState::TimedOut)
    }
}

impl From<ExecutionStatus> for ExecutionState {
    fn from(s: ExecutionStatus) -> Self {
        match s {
            ExecutionStatus::InProgress => ExecutionState::InProgress,
            ExecutionStatus::Succeeded => ExecutionState::Succeeded,
            ExecutionStatus::Failed => ExecutionState::Failed,
            ExecutionStatus::Rejected => ExecutionState::Rejected,
            ExecutionStatus::TimedOut => ExecutionState::TimedOut,
        }
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One device's execution of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandExecution {
    pub execution_id: String,
    pub thing: ThingName,
    pub device_type: DeviceType,
    pub state: ExecutionState,
    /// The device's `reasonCode` (upper case), or ota's for a timeout or cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// The device's `reasonDescription`, or ota's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Map<String, Value>>,
    /// When it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl CommandExecution {
    /// A queued execution.
    pub fn queued(execution_id: String, thing: ThingName, device_type: DeviceType, at: DateTime<Utc>) -> Self {
        CommandExecution {
            execution_id,
            thing,
            device_type,
            state: ExecutionState::Queued,
            reason_code: None,
            reason: None,
            result: None,
            sent_at: None,
            updated_at: at,
        }
    }

    fn end(&mut self, state: ExecutionState, code: &str, reason: String, at: DateTime<Utc>) {
        self.state = state;
        self.reason_code = Some(code.to_string());
        self.reason = Some(reason);
        self.updated_at = at;
    }
}

/// A run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandRunStatus {
    InProgress,
    Completed,
    Aborted,
    Canceled,
}

impl CommandRunStatus {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandRunStatus::InProgress => "IN_PROGRESS",
            CommandRunStatus::Completed => "COMPLETED",
            CommandRunStatus::Aborted => "ABORTED",
            CommandRunStatus::Canceled => "CANCELED",
        }
    }

    /// Parses [`Self::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::InProgress, Self::Completed, Self::Aborted, Self::Canceled].into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for CommandRunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One started command: its executions and how it is paced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandRun {
    pub id: String,
    pub plan_id: String,
    pub command: String,
    pub parameters: Map<String, Value>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub status: CommandRunStatus,
    /// Why it ended, when it did not simply complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    pub policy: RolloutPolicy,
    pub timeout_seconds: u64,
    /// Sorted by thing.
    pub executions: Vec<CommandExecution>,
    /// The targets the plan refused, kept with the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<Refusal>,
}

/// One execution to deliver: the request a backend publishes (or starts on AWS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    pub run_id: String,
    pub execution_id: String,
    pub thing: ThingName,
    pub command: String,
    pub parameters: Map<String, Value>,
    pub timeout_seconds: u64,
}

impl Dispatch {
    /// The request payload (`{"command", "parameters"}`).
    pub fn payload(&self) -> String {
        crate::command::CommandRequest { command: self.command.clone(), parameters: self.parameters.clone() }
            .to_payload()
    }
}

/// Counts of a run's executions by state, and what the policy reads of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExecutionCounts {
    pub total: u32,
    pub queued: u32,
    pub in_flight: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub rejected: u32,
    pub timed_out: u32,
    pub canceled: u32,
}

impl ExecutionCounts {
    /// Counts one state.
    pub fn add(&mut self, state: ExecutionState, n: u32) {
        self.total += n;
        match state {
            ExecutionState::Queued => self.queued += n,
            ExecutionState::Created | ExecutionState::InProgress => self.in_flight += n,
            ExecutionState::Succeeded => self.succeeded += n,
            ExecutionState::Failed => self.failed += n,
            ExecutionState::Rejected => self.rejected += n,
            ExecutionState::TimedOut => self.timed_out += n,
            ExecutionState::Canceled => self.canceled += n,
        }
    }

    /// What [`RolloutPolicy::admit`] and [`RolloutPolicy::decide`] read, with the send times
    /// of the last minute for a start rate.
    pub fn stats(&self, recent_starts: Vec<DateTime<Utc>>) -> RolloutStats {
        RolloutStats {
            total: self.total,
            queued: self.queued,
            in_progress: self.in_flight,
            succeeded: self.succeeded,
            failed: self.failed,
            rejected: self.rejected,
            timed_out: self.timed_out,
            canceled: self.canceled,
            started: self.total - self.queued - self.canceled,
            recent_starts,
        }
    }

    /// Whether every execution is over.
    pub fn all_over(&self) -> bool {
        self.queued == 0 && self.in_flight == 0
    }
}

/// What the pacing decides for a run at one moment: the pure core of every backend's
/// `advance`. Given the counts after timeouts were applied and the send times of the last
/// minute, either abort (with the reason), or send this many more, then complete when all
/// are over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pace {
    Abort(String),
    Send(u32),
    Complete,
}

/// Decides [`Pace`] for counts under `policy`.
pub fn pace(
    policy: &RolloutPolicy,
    counts: &ExecutionCounts,
    recent_starts: Vec<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Pace {
    let stats = counts.stats(recent_starts);
    if let Decision::Abort { reason } = policy.decide(&stats) {
        return Pace::Abort(reason);
    }
    if counts.all_over() {
        return Pace::Complete;
    }
    Pace::Send(policy.admit(&stats, now))
}

/// The reason code of a timeout.
pub const TIMED_OUT_CODE: &str = "TIMED_OUT";
/// The reason code of an execution never sent because its run ended first.
pub const CANCELED_CODE: &str = "CANCELED";

/// The words of a timeout.
pub fn timed_out_reason(timeout_seconds: u64) -> String {
    format!("no answer within {timeout_seconds} s")
}

impl CommandRun {
    /// Counts of the executions by state.
    pub fn counts(&self) -> ExecutionCounts {
        let mut c = ExecutionCounts::default();
        for e in &self.executions {
            c.add(e.state, 1);
        }
        c
    }

    /// Whether the run is still going.
    pub fn is_active(&self) -> bool {
        self.status == CommandRunStatus::InProgress
    }

    /// One execution by id.
    pub fn execution(&self, execution_id: &str) -> Option<&CommandExecution> {
        self.executions.iter().find(|e| e.execution_id == execution_id)
    }

    /// One line for people: "cmd-...: reboot to 3 devices: 2 SUCCEEDED, 1 IN_PROGRESS (IN_PROGRESS)".
    pub fn summary(&self) -> String {
        let mut by: BTreeMap<ExecutionState, usize> = BTreeMap::new();
        for e in &self.executions {
            *by.entry(e.state).or_default() += 1;
        }
        let parts: Vec<String> = by.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let n = self.executions.len();
        let mut s = format!(
            "{}: {} to {n} device{}: {} ({})",
            self.id,
            self.command,
            if n == 1 { "" } else { "s" },
            parts.join(", "),
            self.status
        );
        if let Some(r) = &self.reason {
            s.push_str(&format!(": {r}"));
        }
        s
    }

    fn timeout(&self) -> Duration {
        Duration::seconds(i64::try_from(self.timeout_seconds).unwrap_or(i64::MAX / 1000))
    }

    fn end_run(&mut self, status: CommandRunStatus, reason: Option<String>, now: DateTime<Utc>) {
        self.status = status;
        self.reason = reason;
        self.ended_at = Some(now);
        let why = match status {
            CommandRunStatus::Aborted => "the command run aborted before this device was sent it",
            _ => "the command run was canceled before this device was sent it",
        };
        for e in self.executions.iter_mut().filter(|e| e.state == ExecutionState::Queued) {
            e.end(ExecutionState::Canceled, CANCELED_CODE, why.to_string(), now);
        }
    }

    /// One step of the run at `now`: executions sent longer than the timeout ago become
    /// `TIMED_OUT`; then the policy aborts the run (queued executions are `CANCELED`), or
    /// admits more executions (returned, now `CREATED`), or completes it when all are over.
    /// A run that ended only times out what it had sent.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<Dispatch> {
        let timeout = self.timeout();
        for e in self.executions.iter_mut().filter(|e| e.state.in_flight()) {
            if e.sent_at.is_some_and(|s| s + timeout <= now) {
                e.end(ExecutionState::TimedOut, TIMED_OUT_CODE, timed_out_reason(self.timeout_seconds), now);
            }
        }
        if !self.is_active() {
            return Vec::new();
        }
        let window = now - Duration::minutes(1);
        let recent: Vec<DateTime<Utc>> =
            self.executions.iter().filter_map(|e| e.sent_at).filter(|t| *t > window).collect();
        match pace(&self.policy, &self.counts(), recent, now) {
            Pace::Abort(reason) => {
                self.end_run(CommandRunStatus::Aborted, Some(reason), now);
                Vec::new()
            }
            Pace::Complete => {
                self.end_run(CommandRunStatus::Completed, None, now);
                Vec::new()
            }
            Pace::Send(n) => {
                let mut out = Vec::new();
                for e in self.executions.iter_mut().filter(|e| e.state == ExecutionState::Queued).take(n as usize) {
                    e.state = ExecutionState::Created;
                    e.sent_at = Some(now);
                    e.updated_at = now;
                    out.push(Dispatch {
                        run_id: self.id.clone(),
                        execution_id: e.execution_id.clone(),
                        thing: e.thing.clone(),
                        command: self.command.clone(),
                        parameters: self.parameters.clone(),
                        timeout_seconds: self.timeout_seconds,
                    });
                }
                out
            }
        }
    }

    /// Records a device's answer. `Ok(true)` when it changed the execution; `Ok(false)` when
    /// the execution is already over (a late answer after a timeout stays `TIMED_OUT`; a
    /// repeated answer changes nothing) or was never sent. `NotFound` for an unknown id.
    pub fn respond(&mut self, execution_id: &str, response: &CommandResponse, now: DateTime<Utc>) -> Result<bool> {
        let e = self
            .executions
            .iter_mut()
            .find(|e| e.execution_id == execution_id)
            .ok_or_else(|| Error::not_found("command execution", execution_id))?;
        if !e.state.in_flight() {
            return Ok(false);
        }
        e.state = response.status.into();
        e.updated_at = now;
        if let Some(r) = &response.status_reason {
            e.reason_code = Some(r.reason_code.clone());
            e.reason = (!r.reason_description.is_empty()).then(|| r.reason_description.clone());
        }
        if response.result.is_some() {
            e.result = response.result.clone();
        }
        Ok(true)
    }

    /// Cancels an active run: executions not sent yet are `CANCELED`; those sent may still
    /// answer and are recorded. `Conflict` when it already ended.
    pub fn cancel(&mut self, reason: &str, now: DateTime<Utc>) -> Result<()> {
        if !self.is_active() {
            return Err(Error::Conflict(format!("command run {} already ended ({})", self.id, self.status)));
        }
        self.end_run(CommandRunStatus::Canceled, Some(reason.to_string()), now);
        Ok(())
    }
}

/// A query over stored runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandQuery {
    /// Only runs with an execution on this device.
    #[serde(default)]
    pub thing: Option<ThingName>,
    #[serde(default)]
    pub status: Option<CommandRunStatus>,
    /// Only runs of this plan.
    #[serde(default)]
    pub plan_id: Option<String>,
    /// At most this many, newest first.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl CommandQuery {
    /// Whether `run` matches (limit aside).
    pub fn matches(&self, run: &CommandRun) -> bool {
        self.status.is_none_or(|s| run.status == s)
            && self.plan_id.as_ref().is_none_or(|p| &run.plan_id == p)
            && self.thing.as_ref().is_none_or(|t| run.executions.iter().any(|e| &e.thing == t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::StatusReason;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn run(n: usize, policy: RolloutPolicy) -> CommandRun {
        let ty = DeviceType::parse("smart_plug").unwrap();
        CommandRun {
            id: "cmd-abc-1".into(),
            plan_id: "cplan-abc".into(),
            command: "reboot".into(),
            parameters: Map::new(),
            created_by: "alice".into(),
            created_at: t(0),
            status: CommandRunStatus::InProgress,
            reason: None,
            ended_at: None,
            policy,
            timeout_seconds: 60,
            executions: (0..n)
                .map(|i| {
                    let thing = ThingName::parse(&format!("smart_plug-{i:02}")).unwrap();
                    CommandExecution::queued(format!("cmd-abc-1-{i}"), thing, ty.clone(), t(0))
                })
                .collect(),
            refusals: Vec::new(),
        }
    }

    fn answer(status: ExecutionStatus) -> CommandResponse {
        CommandResponse { status, status_reason: None, result: None }
    }

    #[test]
    fn the_in_flight_limit_paces_the_sends() {
        let mut r = run(5, RolloutPolicy { max_in_flight: 2, ..Default::default() });
        let first = r.advance(t(1));
        assert_eq!(first.len(), 2);
        assert!(r.advance(t(2)).is_empty(), "no slot is free");
        assert!(r.respond(&first[0].execution_id, &answer(ExecutionStatus::Succeeded), t(3)).unwrap());
        assert_eq!(r.advance(t(4)).len(), 1);
        assert_eq!(r.counts().queued, 2);
    }

    #[test]
    fn an_unanswered_execution_times_out_and_a_late_answer_changes_nothing() {
        let mut r = run(1, RolloutPolicy::default());
        let sent = r.advance(t(0));
        r.advance(t(59));
        assert_eq!(r.executions[0].state, ExecutionState::Created);
        r.advance(t(60));
        assert_eq!(r.executions[0].state, ExecutionState::TimedOut);
        assert_eq!(r.executions[0].reason.as_deref(), Some("no answer within 60 s"));
        assert!(!r.respond(&sent[0].execution_id, &answer(ExecutionStatus::Succeeded), t(61)).unwrap());
        r.advance(t(61));
        assert_eq!(r.status, CommandRunStatus::Completed);
    }

    #[test]
    fn failures_past_the_threshold_abort_and_cancel_what_was_not_sent() {
        let policy = RolloutPolicy {
            max_in_flight: 3,
            abort: crate::policy::AbortRule { failure_percent: 50.0, min_executed: 2, max_failures: None },
            ..Default::default()
        };
        let mut r = run(10, policy);
        let sent = r.advance(t(0));
        let rejected = CommandResponse {
            status: ExecutionStatus::Rejected,
            status_reason: Some(StatusReason {
                reason_code: "UPDATE_IN_PROGRESS".into(),
                reason_description: "busy".into(),
            }),
            result: None,
        };
        r.respond(&sent[0].execution_id, &rejected, t(1)).unwrap();
        r.respond(&sent[1].execution_id, &rejected, t(1)).unwrap();
        assert!(r.advance(t(2)).is_empty());
        assert_eq!(r.status, CommandRunStatus::Aborted);
        assert!(r.reason.as_deref().unwrap().contains("2 of 2"), "{:?}", r.reason);
        let c = r.counts();
        assert_eq!((c.canceled, c.in_flight, c.rejected), (7, 1, 2));
        assert_eq!(r.executions[0].reason_code.as_deref(), Some("UPDATE_IN_PROGRESS"));
        // The one still in flight may answer after the abort; it is recorded, nothing is sent.
        assert!(r.respond(&sent[2].execution_id, &answer(ExecutionStatus::Succeeded), t(3)).unwrap());
        assert!(r.advance(t(4)).is_empty());
        assert!(r.cancel("late", t(5)).is_err(), "an ended run cannot be canceled");
    }

    #[test]
    fn cancel_keeps_what_was_sent_and_a_repeated_answer_is_ignored() {
        let mut r = run(4, RolloutPolicy { max_in_flight: 1, ..Default::default() });
        let sent = r.advance(t(0));
        r.cancel("operator changed their mind", t(1)).unwrap();
        assert_eq!(r.counts().canceled, 3);
        assert!(r.respond(&sent[0].execution_id, &answer(ExecutionStatus::InProgress), t(2)).unwrap());
        assert!(r.respond(&sent[0].execution_id, &answer(ExecutionStatus::Succeeded), t(3)).unwrap());
        assert!(!r.respond(&sent[0].execution_id, &answer(ExecutionStatus::Failed), t(4)).unwrap());
        assert_eq!(r.executions[0].state, ExecutionState::Succeeded);
        assert!(r.respond("cmd-abc-1-99", &answer(ExecutionStatus::Failed), t(4)).is_err());
        assert_eq!(r.status, CommandRunStatus::Canceled);
    }

    #[test]
    fn command_names_and_ids() {
        assert!(valid_command_name("recalibrate") && valid_command_name("set_state"));
        assert!(!valid_command_name("Reboot") && !valid_command_name("") && !valid_command_name("1x"));
        assert!(!valid_command_name("re boot"));
        let id = run_id("cplan-0123456789ab", 12);
        assert_eq!(id, "cmd-0123456789ab-12");
        assert!(crate::command::valid_execution_id(&format!("{id}-99999")));
    }
}
