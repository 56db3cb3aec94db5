//! Job executions: one row per (rollout, device) with AWS IoT's execution states, their
//! counts, how a new rollout's executions are created and how a finished rollout's queued
//! ones are canceled, and the execution as the Jobs API encodes it.

use chrono::{DateTime, Utc};
use ota_core::names::{JobId, ThingName};
use ota_core::rollout::{Rollout, RolloutStatus};
use ota_core::version::FirmwareVersion;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::events::{RolloutEvent, record};
use super::shadow::running_version;
use super::wire::{EngineContext, epoch, job_document, notify_next_topic};
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

pub(super) const EXEC_COLUMNS: &str = "rollout_id, thing, status, released, version_number, execution_number, status_details, \
                            queued_at, started_at, updated_at, from_version";

pub(super) fn execution_from_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
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
    fn add(&mut self, status: ExecutionStatus, released: bool, n: u32) {
        self.total += n;
        match status {
            ExecutionStatus::Queued if released => self.queued += n,
            ExecutionStatus::Queued => self.waiting += n,
            ExecutionStatus::InProgress => self.in_progress += n,
            ExecutionStatus::Succeeded => self.succeeded += n,
            ExecutionStatus::Failed => self.failed += n,
            ExecutionStatus::Rejected => self.rejected += n,
            ExecutionStatus::TimedOut => self.timed_out += n,
            ExecutionStatus::Canceled => self.canceled += n,
            ExecutionStatus::Removed => self.removed += n,
        }
    }

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
    record(
        conn,
        &mut Vec::new(),
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
    finish_in_tx(conn, id, status, reason, at, &mut Vec::new())
}

pub(super) fn finish_in_tx(
    conn: &Connection,
    id: &JobId,
    status: RolloutStatus,
    reason: &str,
    at: DateTime<Utc>,
    events: &mut Vec<RolloutEvent>,
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
    record(conn, events, id, at, kind, None, json!({"reason": reason, "canceled": canceled, "notified": owed}))?;
    Ok(())
}

/// The device's next job: the one in progress, else the oldest offered one.
pub(super) fn next_execution(conn: &Connection, thing: &ThingName) -> DbResult<Option<Execution>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {EXEC_COLUMNS} FROM executions
             WHERE thing = ?1 AND released = 1 AND status IN ('IN_PROGRESS', 'QUEUED')
             ORDER BY status = 'IN_PROGRESS' DESC, started_at ASC LIMIT 1"
        ))?
        .query_row([thing.as_str()], execution_from_row)
        .optional()?)
}

pub(super) fn execution(conn: &Connection, rollout_id: &str, thing: &ThingName) -> DbResult<Option<Execution>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {EXEC_COLUMNS} FROM executions WHERE rollout_id = ?1 AND thing = ?2"))?
        .query_row(params![rollout_id, thing.as_str()], execution_from_row)
        .optional()?)
}

pub(super) fn execution_json(
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
    if with_document && let Some(rollout) = super::rollouts::select_one_without_things(conn, &e.rollout_id)? {
        v["jobDocument"] = job_document(ctx, &rollout, now);
    }
    Ok(v)
}

pub(super) fn notify_next(
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
    Ok((notify_next_topic(thing), body.to_string().into_bytes()))
}

/// The counts of one rollout's executions, from `execution_counts` (kept by triggers in
/// every transaction that changes an execution): a few rows, however large the rollout.
pub(super) fn counts(conn: &Connection, id: &JobId) -> DbResult<ExecutionCounts> {
    counts_from(conn, "SELECT status, released, n FROM execution_counts WHERE rollout_id = ?1 AND n > 0", id)
}

/// How many of a rollout's executions have started: those offered to their device and not
/// retried since, which are exactly the released ones (a release sets `started_at`, a retry
/// clears both, a cancel keeps both). From the counters, like [`counts`].
pub(super) fn started(conn: &Connection, id: &JobId) -> DbResult<u32> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(SUM(n), 0) FROM execution_counts WHERE rollout_id = ?1 AND released = 1")?
        .query_row([id.as_str()], |row| row.get(0))?)
}

/// [`counts`] the slow way, grouping every execution of the rollout: what the counters
/// must always equal (the tests check it after every kind of transition).
#[cfg(test)]
pub(super) fn counts_by_grouping(conn: &Connection, id: &JobId) -> DbResult<ExecutionCounts> {
    counts_from(
        conn,
        "SELECT status, released, COUNT(*) FROM executions WHERE rollout_id = ?1 GROUP BY status, released",
        id,
    )
}

/// Adds up `(status, released, n)` rows that `sql` selects for rollout `?1`.
fn counts_from(conn: &Connection, sql: &str, id: &JobId) -> DbResult<ExecutionCounts> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([id.as_str()], |row| {
        Ok((column::<ExecutionStatus>(row, 0)?, row.get::<_, bool>(1)?, row.get::<_, u32>(2)?))
    })?;
    let mut c = ExecutionCounts::default();
    for row in rows {
        let (status, released, n) = row?;
        c.add(status, released, n);
    }
    Ok(c)
}

impl SqliteStore {
    /// A rollout and how its executions stand.
    pub async fn rollout_progress(&self, id: &JobId) -> ota_core::Result<RolloutProgress> {
        let id = id.clone();
        self.read(move |conn| {
            let rollout = super::rollouts::select_one(conn, &id)?
                .ok_or_else(|| super::StoreError::Domain(ota_core::Error::not_found("rollout", id.as_str())))?;
            Ok(RolloutProgress { counts: counts(conn, &id)?, rollout })
        })
        .await
    }

    /// Every execution of a rollout, in queue order.
    pub async fn executions(&self, id: &JobId) -> ota_core::Result<Vec<Execution>> {
        let id = id.clone();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {EXEC_COLUMNS} FROM executions WHERE rollout_id = ?1 ORDER BY position"
                ))?
                .query_map([id.as_str()], execution_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}
