//! The jobs engine's state and transitions on SQLite: one execution per (rollout, device)
//! with AWS IoT's execution states, the device shadows, and the rollout event stream.
//!
//! Every function here runs inside one transaction opened by its caller, so a transition
//! (a device's status update, the abort it triggers, the devices it releases, the events it
//! records) is committed whole or not at all. A server killed at any instant restarts from a
//! consistent file: nothing is lost and nothing is started twice.
//!
//! The functions are synchronous and pure over the connection and `now`; the async shell in
//! [`crate::jobs`] feeds them device messages and clock ticks and publishes what they return.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ota_core::audit::{AuditEntry, AuditOutcome};
use ota_core::names::{DeviceType, JobId, ThingName};
use ota_core::policy::{Decision, RolloutPolicy, RolloutStats};
use ota_core::rollout::{Rollout, RolloutStatus};
use ota_core::targeting::UpdateAction;
use ota_core::version::FirmwareVersion;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{DbResult, SqliteStore, column, optional_column, timestamp};

/// An execution's state, as AWS IoT Jobs names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    Rejected,
    TimedOut,
    Canceled,
    Removed,
}

impl ExecutionStatus {
    const ALL: [ExecutionStatus; 8] = [
        ExecutionStatus::Queued,
        ExecutionStatus::InProgress,
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::Rejected,
        ExecutionStatus::TimedOut,
        ExecutionStatus::Canceled,
        ExecutionStatus::Removed,
    ];

    /// The Jobs API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Queued => "QUEUED",
            ExecutionStatus::InProgress => "IN_PROGRESS",
            ExecutionStatus::Succeeded => "SUCCEEDED",
            ExecutionStatus::Failed => "FAILED",
            ExecutionStatus::Rejected => "REJECTED",
            ExecutionStatus::TimedOut => "TIMED_OUT",
            ExecutionStatus::Canceled => "CANCELED",
            ExecutionStatus::Removed => "REMOVED",
        }
    }

    /// Parses the Jobs API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the execution has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecutionStatus::Queued | ExecutionStatus::InProgress)
    }
}

impl super::Stored for ExecutionStatus {
    fn from_stored(s: &str) -> std::result::Result<Self, super::BoxError> {
        ExecutionStatus::parse(s).ok_or_else(|| format!("unknown execution status {s:?}").into())
    }
}

/// One device's part in one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub rollout_id: JobId,
    pub thing: ThingName,
    pub status: ExecutionStatus,
    /// Offered to the device (AWS: the execution exists and the device was notified).
    pub released: bool,
    pub version_number: i64,
    pub execution_number: i64,
    /// What the device last said (`reason`, `progress`, ...).
    pub status_details: Map<String, Value>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The firmware the device ran when the execution was created (the registry's record,
    /// else its shadow's report); `None` when neither knew, or for executions created before
    /// this was recorded. A revert sends the device back to it.
    #[serde(default)]
    pub from_version: Option<FirmwareVersion>,
    /// The reason code the device last reported (`statusDetails.reason`: `sha256_mismatch`,
    /// `boot_failed`, `download_failed`, ...), when it gave one.
    #[serde(default)]
    pub reason: Option<String>,
}

const EXEC_COLUMNS: &str = "rollout_id, thing, status, released, version_number, execution_number, status_details, \
                            queued_at, started_at, updated_at, from_version";

fn execution_from_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
    let details: Option<String> = row.get(6)?;
    let status_details: Map<String, Value> = details.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default();
    let reason = status_details.get("reason").and_then(Value::as_str).map(str::to_string);
    Ok(Execution {
        rollout_id: column(row, 0)?,
        thing: column(row, 1)?,
        status: column(row, 2)?,
        released: row.get(3)?,
        version_number: row.get(4)?,
        execution_number: row.get(5)?,
        status_details,
        queued_at: column(row, 7)?,
        started_at: optional_column(row, 8)?,
        updated_at: column(row, 9)?,
        from_version: optional_column(row, 10)?,
        reason,
    })
}

/// How a rollout's executions stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionCounts {
    pub total: u32,
    /// Queued and not yet offered: waiting for the policy to admit them.
    pub waiting: u32,
    /// Offered, not yet picked up by the device.
    pub queued: u32,
    pub in_progress: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub rejected: u32,
    pub timed_out: u32,
    pub canceled: u32,
    pub removed: u32,
}

impl ExecutionCounts {
    /// Executions that reached an end state.
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed + self.rejected + self.timed_out + self.canceled + self.removed
    }
}

/// A rollout with its execution counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutProgress {
    pub rollout: Rollout,
    pub counts: ExecutionCounts,
}

/// One entry of a rollout's event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    pub seq: i64,
    pub rollout_id: JobId,
    pub at: DateTime<Utc>,
    /// `created`, `started` (a device was offered the job), `execution` (a device's status
    /// changed), `timed_out`, `completed`, `canceled`, `aborted`.
    pub kind: String,
    pub thing: Option<ThingName>,
    pub detail: Value,
}

/// What a transition asks the outside world to do once it has committed.
#[derive(Debug, Default)]
pub struct Output {
    /// MQTT messages to devices: (topic, payload).
    pub publish: Vec<(String, Vec<u8>)>,
    /// Recorded events, in order.
    pub events: Vec<RolloutEvent>,
    /// Rollouts the policy aborted in this transition, with the reason: operators are told.
    pub aborted: Vec<(JobId, DeviceType, String)>,
    /// Rollouts that completed in this transition (a completed revert may call the next).
    pub completed: Vec<JobId>,
}

/// Signs the URL a device downloads `version` of `device_type` from, valid from `now`.
pub type FirmwareUrl = Arc<dyn Fn(&FirmwareVersion, &DeviceType, DateTime<Utc>) -> String + Send + Sync>;

/// What the engine needs besides the database: how to sign a download link.
#[derive(Clone)]
pub struct EngineContext {
    pub firmware_url: FirmwareUrl,
}

impl std::fmt::Debug for EngineContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineContext")
    }
}

fn epoch(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn record(
    conn: &Connection,
    out: &mut Output,
    rollout_id: &JobId,
    at: DateTime<Utc>,
    kind: &str,
    thing: Option<&ThingName>,
    detail: Value,
) -> DbResult<()> {
    conn.prepare_cached(
        "INSERT INTO rollout_events (rollout_id, at, kind, thing, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![rollout_id.as_str(), timestamp(&at), kind, thing.map(|t| t.as_str()), detail.to_string()])?;
    out.events.push(RolloutEvent {
        seq: conn.last_insert_rowid(),
        rollout_id: rollout_id.clone(),
        at,
        kind: kind.to_string(),
        thing: thing.cloned(),
        detail,
    });
    Ok(())
}

/// The firmware a device runs as far as this file knows: the registry's record (kept from
/// the shadow's reports), else the shadow's own `firmwareVersion`.
fn running_version(conn: &Connection, thing: &ThingName) -> DbResult<Option<FirmwareVersion>> {
    let registered: Option<Option<String>> = conn
        .prepare_cached("SELECT firmware_version FROM devices WHERE thing = ?1")?
        .query_row([thing.as_str()], |row| row.get(0))
        .optional()?;
    if let Some(v) = registered.flatten().and_then(|v| FirmwareVersion::parse(&v).ok()) {
        return Ok(Some(v));
    }
    Ok(read_shadow(conn, thing)?.and_then(|(_, reported, _)| {
        reported.get("firmwareVersion").and_then(Value::as_str).and_then(|v| FirmwareVersion::parse(v).ok())
    }))
}

/// Creates the executions of a new rollout, all waiting, in the rollout's device order, each
/// with the firmware its device runs now.
pub(super) fn create_executions(conn: &Connection, rollout: &Rollout) -> DbResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO executions (rollout_id, thing, position, status, queued_at, updated_at, from_version)
         VALUES (?1, ?2, ?3, 'QUEUED', ?4, ?4, ?5)",
    )?;
    let at = timestamp(&rollout.created_at);
    for (position, thing) in rollout.things.iter().enumerate() {
        let from = running_version(conn, thing)?.map(|v| v.to_string());
        stmt.execute(params![
            rollout.id.as_str(),
            thing.as_str(),
            i64::try_from(position).unwrap_or(i64::MAX),
            at,
            from
        ])?;
    }
    let mut out = Output::default();
    record(
        conn,
        &mut out,
        &rollout.id,
        rollout.created_at,
        "created",
        None,
        json!({"devices": rollout.things.len(), "version": rollout.version.to_string(), "by": rollout.created_by}),
    )
}

/// A rollout ended (canceled, aborted or completed): as AWS IoT's CancelJob without
/// `force`, every queued execution is canceled; devices already updating finish and report.
/// Each device that had been offered the job gets a row in `device_outbox`, committed with
/// the cancel: the engine, which may run in another process, tells it its next job.
pub(super) fn rollout_finished(
    conn: &Connection,
    id: &JobId,
    status: RolloutStatus,
    reason: &str,
    at: DateTime<Utc>,
) -> DbResult<()> {
    finish_in_tx(conn, id, status, reason, at, &mut Output::default())
}

fn finish_in_tx(
    conn: &Connection,
    id: &JobId,
    status: RolloutStatus,
    reason: &str,
    at: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    // Devices that were offered the job are owed a notice that their next job changed (as
    // AWS publishes notify-next when a pending execution is canceled). The engine drains it.
    let owed = conn
        .prepare_cached(
            "INSERT INTO device_outbox (thing, rollout_id, created_at)
             SELECT thing, rollout_id, ?2 FROM executions
             WHERE rollout_id = ?1 AND status = 'QUEUED' AND released = 1 ORDER BY position",
        )?
        .execute(params![id.as_str(), timestamp(&at)])?;
    let canceled = conn
        .prepare_cached(
            "UPDATE executions SET status = 'CANCELED', version_number = version_number + 1, updated_at = ?2
             WHERE rollout_id = ?1 AND status = 'QUEUED'",
        )?
        .execute(params![id.as_str(), timestamp(&at)])?;
    let kind = match status {
        RolloutStatus::Completed => "completed",
        RolloutStatus::Canceled => "canceled",
        RolloutStatus::Aborted => "aborted",
        RolloutStatus::InProgress => "in_progress",
    };
    record(conn, out, id, at, kind, None, json!({"reason": reason, "canceled": canceled, "notified": owed}))?;
    Ok(())
}

/// Sends every notice in `device_outbox`: each device named there is told, once, its next
/// job as this transaction leaves it (or that it has none), replacing any notify-next this
/// transition had already queued for it; the rows are deleted in this transaction and the
/// messages leave after its commit. A crash after the commit loses the notices like any
/// reply (the device asks again when it reconnects); a crash before it loses nothing.
fn drain_outbox(conn: &Connection, ctx: Option<&EngineContext>, now: DateTime<Utc>, out: &mut Output) -> DbResult<()> {
    let owed: Vec<(i64, ThingName)> = conn
        .prepare_cached("SELECT MAX(seq), thing FROM device_outbox GROUP BY thing ORDER BY MIN(seq)")?
        .query_map([], |row| Ok((row.get(0)?, column(row, 1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let Some(last) = owed.iter().map(|(seq, _)| *seq).max() else { return Ok(()) };
    for (_, thing) in owed {
        let notify = topic(&thing, "jobs/notify-next");
        out.publish.retain(|(t, _)| *t != notify);
        let next = next_execution(conn, &thing)?;
        out.publish.push(notify_next(conn, &thing, next.as_ref(), now, ctx)?);
    }
    conn.prepare_cached("DELETE FROM device_outbox WHERE seq <= ?1")?.execute([last])?;
    Ok(())
}

/// Who the engine's own transitions are recorded as in the audit trail.
const ENGINE_SUBJECT: &str = "ota-engine";

/// Audits one of the engine's own transitions, in its transaction.
fn audit_engine(conn: &Connection, at: DateTime<Utc>, operation: &str, request: Value, detail: String) -> DbResult<()> {
    let entry = AuditEntry {
        seq: 0,
        at,
        subject: ENGINE_SUBJECT.to_string(),
        roles: Vec::new(),
        operation: operation.to_string(),
        request,
        plan: None,
        outcome: AuditOutcome::Ok(detail),
    };
    super::audit::insert(conn, &entry)?;
    Ok(())
}

/// A rollout as the transitions need it: everything but its device list (`things` is empty;
/// the executions are the per-device rows).
fn rollout_of(conn: &Connection, id: &JobId) -> DbResult<Option<Rollout>> {
    super::rollouts::select_one_without_things(conn, id)
}

/// The device's next job: the one in progress, else the oldest offered one.
fn next_execution(conn: &Connection, thing: &ThingName) -> DbResult<Option<Execution>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {EXEC_COLUMNS} FROM executions
             WHERE thing = ?1 AND released = 1 AND status IN ('IN_PROGRESS', 'QUEUED')
             ORDER BY status = 'IN_PROGRESS' DESC, started_at ASC LIMIT 1"
        ))?
        .query_row([thing.as_str()], execution_from_row)
        .optional()?)
}

fn execution(conn: &Connection, rollout_id: &str, thing: &ThingName) -> DbResult<Option<Execution>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {EXEC_COLUMNS} FROM executions WHERE rollout_id = ?1 AND thing = ?2"))?
        .query_row(params![rollout_id, thing.as_str()], execution_from_row)
        .optional()?)
}

/// The job document a device receives, with a freshly signed download link (as AWS
/// replaces the pre-signed URL placeholder at delivery).
fn job_document(ctx: Option<&EngineContext>, rollout: &Rollout, now: DateTime<Utc>) -> Value {
    let url = ctx.map(|c| (c.firmware_url)(&rollout.version, &rollout.device_type, now)).unwrap_or_default();
    json!({
        "operation": ota_core::job::OPERATION,
        "deviceType": rollout.device_type.as_str(),
        "version": rollout.version.to_string(),
        "rollback": rollout.action == UpdateAction::Rollback,
        "firmware": {"url": url, "size": rollout.size, "sha256": rollout.sha256.to_hex()},
    })
}

fn execution_json(
    conn: &Connection,
    e: &Execution,
    ctx: Option<&EngineContext>,
    now: DateTime<Utc>,
    with_document: bool,
) -> DbResult<Value> {
    let mut v = json!({
        "jobId": e.rollout_id.as_str(),
        "thingName": e.thing.as_str(),
        "status": e.status.as_str(),
        "statusDetails": e.status_details,
        "queuedAt": epoch(e.queued_at),
        "lastUpdatedAt": epoch(e.updated_at),
        "versionNumber": e.version_number,
        "executionNumber": e.execution_number,
    });
    if let Some(s) = e.started_at {
        v["startedAt"] = json!(epoch(s));
    }
    if with_document && let Some(rollout) = rollout_of(conn, &e.rollout_id)? {
        v["jobDocument"] = job_document(ctx, &rollout, now);
    }
    Ok(v)
}

fn topic(thing: &ThingName, rest: &str) -> String {
    format!("$aws/things/{thing}/{rest}")
}

fn notify_next(
    conn: &Connection,
    thing: &ThingName,
    next: Option<&Execution>,
    now: DateTime<Utc>,
    ctx: Option<&EngineContext>,
) -> DbResult<(String, Vec<u8>)> {
    let mut body = json!({"timestamp": epoch(now)});
    if let Some(e) = next {
        body["execution"] = execution_json(conn, e, ctx, now, true)?;
    }
    Ok((topic(thing, "jobs/notify-next"), body.to_string().into_bytes()))
}

/// The counts of one rollout's executions.
fn counts(conn: &Connection, id: &JobId) -> DbResult<ExecutionCounts> {
    let mut c = ExecutionCounts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT status, released, COUNT(*) FROM executions WHERE rollout_id = ?1 GROUP BY status, released",
    )?;
    let rows = stmt.query_map([id.as_str()], |row| {
        Ok((column::<ExecutionStatus>(row, 0)?, row.get::<_, bool>(1)?, row.get::<_, u32>(2)?))
    })?;
    for row in rows {
        let (status, released, n) = row?;
        c.total += n;
        match status {
            ExecutionStatus::Queued if released => c.queued += n,
            ExecutionStatus::Queued => c.waiting += n,
            ExecutionStatus::InProgress => c.in_progress += n,
            ExecutionStatus::Succeeded => c.succeeded += n,
            ExecutionStatus::Failed => c.failed += n,
            ExecutionStatus::Rejected => c.rejected += n,
            ExecutionStatus::TimedOut => c.timed_out += n,
            ExecutionStatus::Canceled => c.canceled += n,
            ExecutionStatus::Removed => c.removed += n,
        }
    }
    Ok(c)
}

/// The policy's view of a rollout, from its counts. The starts (all, and those of the last
/// minute) are read only when the policy limits the start rate: they cost two reads of every
/// execution row, on every transition, and nothing else uses them.
fn stats(
    conn: &Connection,
    id: &JobId,
    c: &ExecutionCounts,
    policy: &RolloutPolicy,
    now: DateTime<Utc>,
) -> DbResult<RolloutStats> {
    let rate_limited = policy.max_per_minute.is_some() || policy.exponential_ramp.is_some();
    let (started, recent_starts) = if rate_limited {
        let started: u32 = conn
            .prepare_cached("SELECT COUNT(*) FROM executions WHERE rollout_id = ?1 AND started_at IS NOT NULL")?
            .query_row([id.as_str()], |row| row.get(0))?;
        let recent_starts = conn
            .prepare_cached("SELECT started_at FROM executions WHERE rollout_id = ?1 AND started_at > ?2")?
            .query_map(params![id.as_str(), timestamp(&(now - Duration::minutes(1)))], |row| column(row, 0))?
            .collect::<rusqlite::Result<Vec<DateTime<Utc>>>>()?;
        (started, recent_starts)
    } else {
        (0, Vec::new())
    };
    Ok(RolloutStats {
        total: c.total,
        queued: c.waiting,
        in_progress: c.queued + c.in_progress,
        succeeded: c.succeeded,
        failed: c.failed,
        rejected: c.rejected,
        timed_out: c.timed_out,
        canceled: c.canceled + c.removed,
        started,
        recent_starts,
    })
}

/// After any change to an active rollout: abort when the policy says so, otherwise offer
/// the job to as many waiting devices as the policy admits, and complete the rollout when
/// every execution has ended.
fn evaluate(
    conn: &Connection,
    ctx: Option<&EngineContext>,
    rollout: &Rollout,
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    if !rollout.status.is_active() {
        return Ok(());
    }
    let policy: &RolloutPolicy = &rollout.policy;
    let c = counts(conn, &rollout.id)?;
    let stats = stats(conn, &rollout.id, &c, policy, now)?;
    if let Decision::Abort { reason } = policy.decide(&stats) {
        if set_rollout_status(conn, &rollout.id, RolloutStatus::Aborted, &reason, now)? {
            finish_in_tx(conn, &rollout.id, RolloutStatus::Aborted, &reason, now, out)?;
            let request = json!({"rollout": rollout.id.as_str(), "device_type": rollout.device_type.as_str(),
                                 "reason": reason, "counts": c});
            audit_engine(conn, now, "abort", request, format!("{} ABORTED: {reason}", rollout.id))?;
            // The devices it had offered the job to are told at once, after this commit.
            drain_outbox(conn, ctx, now, out)?;
            out.aborted.push((rollout.id.clone(), rollout.device_type.clone(), reason));
        }
        return Ok(());
    }
    let admit = policy.admit(&stats, now);
    if admit > 0 {
        // A device busy with another job (from an earlier, canceled rollout) waits its turn.
        let things: Vec<ThingName> = conn
            .prepare_cached(
                "SELECT e.thing FROM executions e
                 WHERE e.rollout_id = ?1 AND e.status = 'QUEUED' AND e.released = 0
                   AND NOT EXISTS (SELECT 1 FROM executions o WHERE o.thing = e.thing AND o.released = 1
                                   AND o.status IN ('QUEUED', 'IN_PROGRESS'))
                 ORDER BY e.position LIMIT ?2",
            )?
            .query_map(params![rollout.id.as_str(), admit], |row| column(row, 0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut release = conn.prepare_cached(
            "UPDATE executions SET released = 1, started_at = ?3, updated_at = ?3
             WHERE rollout_id = ?1 AND thing = ?2",
        )?;
        for thing in things {
            release.execute(params![rollout.id.as_str(), thing.as_str(), timestamp(&now)])?;
            record(conn, out, &rollout.id, now, "started", Some(&thing), json!({}))?;
            let next = next_execution(conn, &thing)?;
            out.publish.push(notify_next(conn, &thing, next.as_ref(), now, ctx)?);
        }
    }
    // Admitting only releases waiting executions: how many have finished is unchanged.
    if c.finished() == c.total {
        let reason = format!(
            "all {} devices finished: {} succeeded, {} failed, {} rejected, {} timed out, {} canceled",
            c.total,
            c.succeeded,
            c.failed,
            c.rejected,
            c.timed_out,
            c.canceled + c.removed
        );
        if set_rollout_status(conn, &rollout.id, RolloutStatus::Completed, &reason, now)? {
            finish_in_tx(conn, &rollout.id, RolloutStatus::Completed, &reason, now, out)?;
            let request = json!({"rollout": rollout.id.as_str(), "device_type": rollout.device_type.as_str(),
                                 "counts": c});
            audit_engine(conn, now, "complete", request, format!("{} COMPLETED: {reason}", rollout.id))?;
            out.completed.push(rollout.id.clone());
        }
    }
    Ok(())
}

fn set_rollout_status(
    conn: &Connection,
    id: &JobId,
    status: RolloutStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE rollouts SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE id = ?1 AND status = 'IN_PROGRESS'",
        )?
        .execute(params![id.as_str(), status.as_str(), reason, timestamp(&now)])?;
    Ok(changed > 0)
}

/// A device's status update, as the Jobs MQTT API receives it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateRequest {
    status: Option<String>,
    #[serde(default)]
    status_details: Option<Map<String, Value>>,
    #[serde(default)]
    expected_version: Option<Value>,
    #[serde(default)]
    client_token: Option<String>,
    #[serde(default)]
    include_job_document: bool,
}

fn rejected(
    thing: &ThingName,
    what: &str,
    code: &str,
    message: &str,
    token: Option<&str>,
    now: DateTime<Utc>,
) -> (String, Vec<u8>) {
    rejected_with(thing, what, code, message, token, now, Value::Null)
}

/// [`rejected`] with one more field when `execution_state` is not null (a `VersionMismatch`
/// tells the device where its execution stands, as AWS does).
fn rejected_with(
    thing: &ThingName,
    what: &str,
    code: &str,
    message: &str,
    token: Option<&str>,
    now: DateTime<Utc>,
    execution_state: Value,
) -> (String, Vec<u8>) {
    let mut body = json!({"code": code, "message": message, "timestamp": epoch(now)});
    if let Some(t) = token {
        body["clientToken"] = json!(t);
    }
    if !execution_state.is_null() {
        body["executionState"] = execution_state;
    }
    (topic(thing, &format!("{what}/rejected")), body.to_string().into_bytes())
}

fn client_token(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(payload).ok()?.get("clientToken")?.as_str().map(str::to_string)
}

/// Handles one message a device published under its own `$aws/things/{thing}/`.
fn handle_message(
    conn: &Connection,
    ctx: Option<&EngineContext>,
    thing: &ThingName,
    topic_name: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> DbResult<Output> {
    let mut out = Output::default();
    let prefix = format!("$aws/things/{thing}/");
    let Some(rest) = topic_name.strip_prefix(&prefix) else { return Ok(out) };
    match rest {
        "jobs/$next/get" => {
            let next = next_execution(conn, thing)?;
            let mut body = json!({"timestamp": epoch(now)});
            if let Some(t) = client_token(payload) {
                body["clientToken"] = json!(t);
            }
            if let Some(e) = &next {
                body["execution"] = execution_json(conn, e, ctx, now, true)?;
            }
            out.publish.push((topic(thing, "jobs/$next/get/accepted"), body.to_string().into_bytes()));
        }
        "shadow/update" => shadow_update(conn, thing, payload, now, &mut out)?,
        "shadow/get" => shadow_get(conn, thing, payload, now, &mut out)?,
        _ => {
            let Some(job) = rest.strip_prefix("jobs/") else { return Ok(out) };
            if let Some(id) = job.strip_suffix("/update") {
                job_update(conn, ctx, thing, id, payload, now, &mut out)?;
            } else if let Some(id) = job.strip_suffix("/get") {
                let token = client_token(payload);
                match execution(conn, id, thing)?.filter(|e| e.released) {
                    Some(e) => {
                        let mut body =
                            json!({"timestamp": epoch(now), "execution": execution_json(conn, &e, ctx, now, true)?});
                        if let Some(t) = token {
                            body["clientToken"] = json!(t);
                        }
                        out.publish
                            .push((topic(thing, &format!("jobs/{id}/get/accepted")), body.to_string().into_bytes()));
                    }
                    None => out.publish.push(rejected(
                        thing,
                        &format!("jobs/{id}/get"),
                        "ResourceNotFound",
                        &format!("no job execution {id} for {thing}"),
                        token.as_deref(),
                        now,
                    )),
                }
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn job_update(
    conn: &Connection,
    ctx: Option<&EngineContext>,
    thing: &ThingName,
    id: &str,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let what = format!("jobs/{id}/update");
    let request: UpdateRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            out.publish.push(rejected(
                thing,
                &what,
                "InvalidJson",
                &format!("the update is not valid JSON: {e}"),
                None,
                now,
            ));
            return Ok(());
        }
    };
    let token = request.client_token.as_deref();
    let Some(current) = execution(conn, id, thing)?.filter(|e| e.released) else {
        out.publish.push(rejected(
            thing,
            &what,
            "ResourceNotFound",
            &format!("no job execution {id} for {thing}"),
            token,
            now,
        ));
        return Ok(());
    };
    let Some(status) = request.status.as_deref().and_then(ExecutionStatus::parse).filter(|s| {
        matches!(
            s,
            ExecutionStatus::InProgress
                | ExecutionStatus::Succeeded
                | ExecutionStatus::Failed
                | ExecutionStatus::Rejected
        )
    }) else {
        out.publish.push(rejected(
            thing,
            &what,
            "InvalidRequest",
            "status must be IN_PROGRESS, SUCCEEDED, FAILED or REJECTED",
            token,
            now,
        ));
        return Ok(());
    };
    if let Some(expected) = &request.expected_version {
        let expected = expected.as_i64().or_else(|| expected.as_str().and_then(|s| s.parse().ok()));
        if expected != Some(current.version_number) {
            let state = json!({"status": current.status.as_str(), "statusDetails": current.status_details,
                               "versionNumber": current.version_number});
            let message = "expectedVersion does not match";
            out.publish.push(rejected_with(thing, &what, "VersionMismatch", message, token, now, state));
            return Ok(());
        }
    }
    if current.status.is_terminal() {
        out.publish.push(rejected(
            thing,
            &what,
            "InvalidStateTransition",
            &format!("the job execution is already {}", current.status.as_str()),
            token,
            now,
        ));
        return Ok(());
    }
    let Some(rollout) = rollout_of(conn, &current.rollout_id)? else { return Ok(()) };
    let details = request.status_details.unwrap_or_else(|| current.status_details.clone());
    let version = current.version_number + 1;
    let deadline = now + Duration::minutes(i64::from(rollout.policy.in_progress_timeout_minutes));
    conn.prepare_cached(
        "UPDATE executions SET status = ?3, status_details = ?4, version_number = ?5, updated_at = ?6,
             in_progress_at = COALESCE(in_progress_at, CASE WHEN ?3 = 'IN_PROGRESS' THEN ?6 END),
             deadline = COALESCE(deadline, CASE WHEN ?3 = 'IN_PROGRESS' THEN ?7 END)
         WHERE rollout_id = ?1 AND thing = ?2",
    )?
    .execute(params![
        id,
        thing.as_str(),
        status.as_str(),
        Value::Object(details.clone()).to_string(),
        version,
        timestamp(&now),
        timestamp(&deadline)
    ])?;
    let mut accepted = json!({
        "executionState": {"status": status.as_str(), "statusDetails": details, "versionNumber": version},
        "timestamp": epoch(now),
    });
    if let Some(t) = token {
        accepted["clientToken"] = json!(t);
    }
    if request.include_job_document {
        accepted["jobDocument"] = job_document(ctx, &rollout, now);
    }
    out.publish.push((topic(thing, &format!("{what}/accepted")), accepted.to_string().into_bytes()));
    if status != current.status || status.is_terminal() {
        record(
            conn,
            out,
            &rollout.id,
            now,
            "execution",
            Some(thing),
            json!({"status": status.as_str(), "details": details}),
        )?;
    }
    if status.is_terminal() {
        ended(conn, ctx, &rollout, thing, status, now, out)?;
    }
    Ok(())
}

/// An execution reached an end state: retry it when the policy allows, tell the device its
/// next job, and let the policy decide what the rollout does next.
fn ended(
    conn: &Connection,
    ctx: Option<&EngineContext>,
    rollout: &Rollout,
    thing: &ThingName,
    status: ExecutionStatus,
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let retries = match status {
        ExecutionStatus::Failed => i64::from(rollout.policy.retries.failed),
        ExecutionStatus::TimedOut => i64::from(rollout.policy.retries.timed_out),
        _ => 0,
    };
    if retries > 0 && rollout.status.is_active() {
        // AWS creates a new execution number for a retry; the device sees it as a new offer.
        let retried = conn
            .prepare_cached(
                "UPDATE executions SET status = 'QUEUED', released = 0, started_at = NULL, in_progress_at = NULL,
                     deadline = NULL, execution_number = execution_number + 1, version_number = 1, updated_at = ?3
                 WHERE rollout_id = ?1 AND thing = ?2 AND execution_number <= ?4",
            )?
            .execute(params![rollout.id.as_str(), thing.as_str(), timestamp(&now), retries])?;
        if retried > 0 {
            record(conn, out, &rollout.id, now, "retry", Some(thing), json!({"after": status.as_str()}))?;
        }
    }
    let fresh = rollout_of(conn, &rollout.id)?.unwrap_or_else(|| rollout.clone());
    evaluate(conn, ctx, &fresh, now, out)?;
    // The device's next job changed; unless the evaluation just offered it one, say so.
    let notify = topic(thing, "jobs/notify-next");
    if !out.publish.iter().any(|(t, _)| *t == notify) {
        let next = next_execution(conn, thing)?;
        out.publish.push(notify_next(conn, thing, next.as_ref(), now, ctx)?);
    }
    Ok(())
}

/// Times out executions in progress past their deadline, then evaluates every active rollout,
/// then sends the notices other transactions (an operator's cancel) left in the outbox.
fn tick(conn: &Connection, ctx: Option<&EngineContext>, now: DateTime<Utc>) -> DbResult<Output> {
    let mut out = Output::default();
    let expired: Vec<(JobId, ThingName)> = conn
        .prepare_cached(
            "SELECT rollout_id, thing FROM executions WHERE status = 'IN_PROGRESS' AND deadline < ?1
             ORDER BY rollout_id, thing",
        )?
        .query_map([timestamp(&now)], |row| Ok((column(row, 0)?, column(row, 1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if !expired.is_empty() {
        // One entry per tick that timed executions out, naming each rollout and its devices.
        let mut by_rollout: Vec<(&JobId, Vec<&str>)> = Vec::new();
        for (id, thing) in &expired {
            match by_rollout.last_mut() {
                Some((last, things)) if *last == id => things.push(thing.as_str()),
                _ => by_rollout.push((id, vec![thing.as_str()])),
            }
        }
        let detail =
            by_rollout.iter().map(|(id, things)| format!("{id}: {}", things.join(", "))).collect::<Vec<_>>().join("; ");
        let request = json!({"timed_out": by_rollout.iter()
            .map(|(id, things)| json!({"rollout": id.as_str(), "things": things}))
            .collect::<Vec<_>>()});
        let detail = format!("{} executions timed out in progress: {detail}", expired.len());
        audit_engine(conn, now, "timeout", request, detail)?;
    }
    for (id, thing) in expired {
        conn.prepare_cached(
            "UPDATE executions SET status = 'TIMED_OUT', version_number = version_number + 1, updated_at = ?3
             WHERE rollout_id = ?1 AND thing = ?2",
        )?
        .execute(params![id.as_str(), thing.as_str(), timestamp(&now)])?;
        record(conn, &mut out, &id, now, "execution", Some(&thing), json!({"status": "TIMED_OUT"}))?;
        if let Some(rollout) = rollout_of(conn, &id)? {
            ended(conn, ctx, &rollout, &thing, ExecutionStatus::TimedOut, now, &mut out)?;
        }
    }
    let active: Vec<JobId> = conn
        .prepare_cached("SELECT id FROM rollouts WHERE status = 'IN_PROGRESS' ORDER BY created_at")?
        .query_map([], |row| column(row, 0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in active {
        if let Some(rollout) = rollout_of(conn, &id)? {
            evaluate(conn, ctx, &rollout, now, &mut out)?;
        }
    }
    drain_outbox(conn, ctx, now, &mut out)?;
    Ok(out)
}

/// A device's stored shadow: (version, reported, desired); `None` before its first update.
fn read_shadow(conn: &Connection, thing: &ThingName) -> DbResult<Option<(i64, Value, Value)>> {
    let row: Option<(i64, String, String)> = conn
        .prepare_cached("SELECT version, reported, desired FROM shadows WHERE thing = ?1")?
        .query_row([thing.as_str()], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    let object = |text: &str| serde_json::from_str(text).unwrap_or_else(|_| json!({}));
    Ok(row.map(|(v, r, d)| (v, object(&r), object(&d))))
}

/// Applies `state.reported` (a `null` deletes a key), answers accepted or rejected, sends a
/// delta when desired and reported differ, and copies the firmware version and liveness to
/// the registry.
fn shadow_update(
    conn: &Connection,
    thing: &ThingName,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let token = client_token(payload);
    let body: Value = match serde_json::from_slice(payload) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let (t, p) =
                rejected(thing, "shadow/update", "400", "Payload contains invalid json", token.as_deref(), now);
            out.publish.push((t, p));
            return Ok(());
        }
    };
    let (version, mut reported, mut desired) = read_shadow(conn, thing)?.unwrap_or((0, json!({}), json!({})));
    if let Some(expected) = body.get("version").and_then(Value::as_i64)
        && expected != version
    {
        out.publish.push(rejected(thing, "shadow/update", "409", "Version conflict", token.as_deref(), now));
        return Ok(());
    }
    let state = body.get("state").cloned().unwrap_or(Value::Null);
    let merge = |target: &mut Value, patch: Option<&Value>| {
        if let (Some(Value::Object(patch)), Value::Object(t)) = (patch, target) {
            for (k, v) in patch {
                if v.is_null() {
                    t.remove(k);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    };
    merge(&mut reported, state.get("reported"));
    merge(&mut desired, state.get("desired"));
    let version = version + 1;
    conn.prepare_cached(
        "INSERT INTO shadows (thing, version, reported, desired, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (thing) DO UPDATE SET version = excluded.version, reported = excluded.reported,
             desired = excluded.desired, updated_at = excluded.updated_at",
    )?
    .execute(params![thing.as_str(), version, reported.to_string(), desired.to_string(), timestamp(&now)])?;
    let mut accepted = json!({"state": state, "version": version, "timestamp": epoch(now)});
    if let Some(t) = &token {
        accepted["clientToken"] = json!(t);
    }
    out.publish.push((topic(thing, "shadow/update/accepted"), accepted.to_string().into_bytes()));
    if let Value::Object(d) = &desired {
        let delta: Map<String, Value> = d
            .iter()
            .filter(|(k, v)| reported.get(k.as_str()) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !delta.is_empty() {
            let body = json!({"state": delta, "version": version, "timestamp": epoch(now)});
            out.publish.push((topic(thing, "shadow/update/delta"), body.to_string().into_bytes()));
        }
    }
    let firmware = reported.get("firmwareVersion").and_then(Value::as_str).and_then(|v| FirmwareVersion::parse(v).ok());
    conn.prepare_cached(
        "UPDATE devices SET firmware_version = COALESCE(?2, firmware_version), connected = 1, last_seen = ?3 WHERE thing = ?1",
    )?
    .execute(params![thing.as_str(), firmware.map(|v| v.to_string()), timestamp(&now)])?;
    Ok(())
}

fn shadow_get(
    conn: &Connection,
    thing: &ThingName,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let token = client_token(payload);
    match read_shadow(conn, thing)? {
        Some((version, reported, desired)) => {
            let mut body = json!({"state": {"reported": reported, "desired": desired}, "version": version, "timestamp": epoch(now)});
            if let Some(t) = &token {
                body["clientToken"] = json!(t);
            }
            out.publish.push((topic(thing, "shadow/get/accepted"), body.to_string().into_bytes()));
        }
        None => out.publish.push(rejected(
            thing,
            "shadow/get",
            "404",
            &format!("No shadow exists with name: '{thing}'"),
            token.as_deref(),
            now,
        )),
    }
    Ok(())
}

impl SqliteStore {
    /// The subject of the engine's own audit entries (`abort`, `complete`, `timeout`).
    pub const ENGINE_SUBJECT: &'static str = ENGINE_SUBJECT;

    /// Handles one message a device published under its own `$aws/things/{thing}/`, in one
    /// transaction. The caller publishes `Output::publish` once this returns.
    pub async fn handle_device_message(
        &self,
        ctx: EngineContext,
        thing: ThingName,
        topic: String,
        payload: Vec<u8>,
        now: DateTime<Utc>,
    ) -> ota_core::Result<Output> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = handle_message(&tx, Some(&ctx), &thing, &topic, &payload, now)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// One clock tick of the engine: timeouts, aborts, admissions, completions.
    pub async fn engine_tick(&self, ctx: EngineContext, now: DateTime<Utc>) -> ota_core::Result<Output> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = tick(&tx, Some(&ctx), now)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// What the engine sends when it starts. Offers of jobs made before a restart whose
    /// notification may have been lost: each such device is told its next job again (a device
    /// ignores a repeated offer). And the notices still in the outbox (a rollout canceled
    /// while no engine ran, or just before a crash): those devices are told their next job,
    /// or that they have none, and the outbox is emptied in the same transaction.
    pub async fn pending_offers(&self, ctx: EngineContext, now: DateTime<Utc>) -> ota_core::Result<Output> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Output::default();
            let things: Vec<ThingName> = tx
                .prepare_cached(
                    "SELECT DISTINCT thing FROM executions WHERE released = 1 AND status = 'QUEUED' ORDER BY thing",
                )?
                .query_map([], |row| column(row, 0))?
                .collect::<rusqlite::Result<_>>()?;
            for thing in things {
                let next = next_execution(&tx, &thing)?;
                out.publish.push(notify_next(&tx, &thing, next.as_ref(), now, Some(&ctx))?);
            }
            drain_outbox(&tx, Some(&ctx), now, &mut out)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// How many device notices wait in the outbox for the engine (0 once it has drained them).
    pub async fn outbox_len(&self) -> ota_core::Result<u64> {
        self.call(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM device_outbox", [], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// Records that a device's MQTT session opened or closed.
    pub async fn set_connected(&self, thing: ThingName, connected: bool, now: DateTime<Utc>) -> ota_core::Result<()> {
        self.call(move |conn| {
            conn.prepare_cached("UPDATE devices SET connected = ?2, last_seen = ?3 WHERE thing = ?1")?
                .execute(params![thing.as_str(), connected, timestamp(&now)])?;
            Ok(())
        })
        .await
    }

    /// A rollout and how its executions stand.
    pub async fn rollout_progress(&self, id: &JobId) -> ota_core::Result<RolloutProgress> {
        let id = id.clone();
        self.call(move |conn| {
            let rollout = super::rollouts::select_one(conn, &id)?
                .ok_or_else(|| super::StoreError::Domain(ota_core::Error::not_found("rollout", id.as_str())))?;
            Ok(RolloutProgress { counts: counts(conn, &id)?, rollout })
        })
        .await
    }

    /// Every execution of a rollout, in queue order.
    pub async fn executions(&self, id: &JobId) -> ota_core::Result<Vec<Execution>> {
        let id = id.clone();
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {EXEC_COLUMNS} FROM executions WHERE rollout_id = ?1 ORDER BY position"
                ))?
                .query_map([id.as_str()], execution_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// A rollout's events after `after_seq`, oldest first.
    pub async fn rollout_events(&self, id: &JobId, after_seq: i64) -> ota_core::Result<Vec<RolloutEvent>> {
        let id = id.clone();
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT seq, rollout_id, at, kind, thing, detail FROM rollout_events
                     WHERE rollout_id = ?1 AND seq > ?2 ORDER BY seq",
                )?
                .query_map(params![id.as_str(), after_seq], |row| {
                    let detail: String = row.get(5)?;
                    Ok(RolloutEvent {
                        seq: row.get(0)?,
                        rollout_id: column(row, 1)?,
                        at: column(row, 2)?,
                        kind: row.get(3)?,
                        thing: optional_column(row, 4)?,
                        detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// The stored shadow document of a device (`reported`, `desired`, `version`).
    pub async fn shadow(&self, thing: &ThingName) -> ota_core::Result<Option<Value>> {
        let thing = thing.clone();
        self.call(move |conn| {
            Ok(read_shadow(conn, &thing)?.map(
                |(v, reported, desired)| json!({"state": {"reported": reported, "desired": desired}, "version": v}),
            ))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use ota_core::catalog::Sha256Digest;
    use ota_core::device::Device;
    use ota_core::names::NamingConvention;
    use ota_core::ports::RolloutStore;

    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_323_045 + seconds, 0).unwrap()
    }

    fn ctx() -> EngineContext {
        EngineContext {
            firmware_url: Arc::new(|v, ty, _| format!("http://127.0.0.1:1/firmwares/v{v}/{ty}/firmware.bin")),
        }
    }

    fn thing(n: u32) -> ThingName {
        ThingName::parse(&format!("pet_feeder-{n:02}")).unwrap()
    }

    async fn store_with(n: u32, policy: RolloutPolicy) -> (SqliteStore, JobId) {
        let store = SqliteStore::open_in_memory().unwrap();
        let ty = DeviceType::parse("pet_feeder").unwrap();
        let group = NamingConvention::default().thing_group_of(&ty);
        let devices = (1..=n)
            .map(|i| Device {
                thing: thing(i),
                thing_group: group.clone(),
                device_type: ty.clone(),
                firmware_version: Some(FirmwareVersion::new(1, 0, 0)),
                connected: true,
                last_seen: None,
            })
            .collect();
        store.upsert_many(devices).await.unwrap();
        let rollout = Rollout {
            id: JobId::parse("update-pet_feeder-2_0_0-abc").unwrap(),
            plan_id: "plan".into(),
            action: UpdateAction::Update,
            fleet_query: format!("thingGroupNames:{group}"),
            thing_group: group,
            device_type: ty,
            version: FirmwareVersion::new(2, 0, 0),
            sha256: Sha256Digest([0xab; 32]),
            size: 1000,
            things: (1..=n).map(thing).collect(),
            policy,
            status: RolloutStatus::InProgress,
            status_reason: None,
            created_by: "operator".into(),
            created_at: t(0),
            updated_at: t(0),
            from_versions: Default::default(),
            revert_of: None,
        };
        store.create(&rollout).await.unwrap();
        (store, rollout.id)
    }

    fn offered(out: &Output) -> usize {
        out.publish
            .iter()
            .filter(|(topic, p)| {
                // Parsed, not matched as text: key order depends on serde_json's features,
                // which the whole workspace's build may change.
                topic.ends_with("/notify-next")
                    && serde_json::from_slice::<Value>(p).is_ok_and(|v| v.get("execution").is_some())
            })
            .count()
    }

    async fn report(store: &SqliteStore, n: u32, id: &JobId, status: &str, now: DateTime<Utc>) -> Output {
        let topic = format!("$aws/things/{}/jobs/{id}/update", thing(n));
        let body = json!({"status": status}).to_string().into_bytes();
        store.handle_device_message(ctx(), thing(n), topic, body, now).await.unwrap()
    }

    #[tokio::test]
    async fn transitions_never_read_the_rollouts_device_list() {
        let (store, id) = store_with(3, RolloutPolicy::default()).await;
        // The engine works from the executions; a device list it cannot even parse must not
        // matter (with 10,000 devices, parsing it on every message was most of the cost).
        store.call(|c| Ok(c.execute("UPDATE rollouts SET things = 'not a list'", [])?)).await.unwrap();
        assert_eq!(offered(&store.engine_tick(ctx(), t(1)).await.unwrap()), 3);
        for n in 1..=3 {
            let out = report(&store, n, &id, "IN_PROGRESS", t(2)).await;
            assert!(out.publish[0].0.ends_with("/update/accepted"), "{out:?}");
            let out = report(&store, n, &id, "SUCCEEDED", t(3)).await;
            assert!(out.publish[0].0.ends_with("/update/accepted"), "{out:?}");
        }
        let kinds: Vec<String> = store.rollout_events(&id, 0).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds.last().map(String::as_str), Some("completed"), "{kinds:?}");
    }

    #[tokio::test]
    async fn a_start_rate_limit_still_counts_the_starts_of_the_last_minute() {
        let policy = RolloutPolicy { max_in_flight: 10, max_per_minute: Some(2), ..Default::default() };
        let (store, id) = store_with(5, policy).await;
        assert_eq!(offered(&store.engine_tick(ctx(), t(0)).await.unwrap()), 2);
        assert_eq!(offered(&store.engine_tick(ctx(), t(30)).await.unwrap()), 0, "2 started within the minute");
        // A finished device frees a slot, not the rate: nobody new is offered within the minute.
        report(&store, 1, &id, "SUCCEEDED", t(31)).await;
        assert_eq!(offered(&store.engine_tick(ctx(), t(40)).await.unwrap()), 0);
        assert_eq!(offered(&store.engine_tick(ctx(), t(61)).await.unwrap()), 2, "the minute has passed");
    }
}
