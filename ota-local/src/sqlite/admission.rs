//! What follows any change to an active rollout: the policy aborts it, admits waiting
//! devices, or completes it; and the notices owed to devices whose offer was withdrawn.

use chrono::{DateTime, Duration, Utc};
use ota_core::audit::{AuditEntry, AuditOutcome};
use ota_core::names::{JobId, ThingName};
use ota_core::policy::{Decision, RolloutPolicy, RolloutStats};
use ota_core::rollout::{Rollout, RolloutStatus};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use super::events::record;
use super::executions::{ExecutionCounts, counts, finish_in_tx, next_execution, notify_next, started};
use super::wire::{EngineContext, Output, notify_next_topic};
use super::{DbResult, column, timestamp};

/// Sends every notice in `device_outbox`: each device named there is told, once, its next
/// job as this transaction leaves it (or that it has none), replacing any notify-next this
/// transition had already queued for it; the rows are deleted in this transaction and the
/// messages leave after its commit. A crash after the commit loses the notices like any
/// reply (the device asks again when it reconnects); a crash before it loses nothing.
pub(super) fn drain_outbox(
    conn: &Connection,
    ctx: Option<&EngineContext>,
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let owed: Vec<(i64, ThingName)> = conn
        .prepare_cached("SELECT MAX(seq), thing FROM device_outbox GROUP BY thing ORDER BY MIN(seq)")?
        .query_map([], |row| Ok((row.get(0)?, column(row, 1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let Some(last) = owed.iter().map(|(seq, _)| *seq).max() else { return Ok(()) };
    for (_, thing) in owed {
        let notify = notify_next_topic(&thing);
        out.publish.retain(|(t, _)| *t != notify);
        let next = next_execution(conn, &thing)?;
        out.publish.push(notify_next(conn, &thing, next.as_ref(), now, ctx)?);
    }
    conn.prepare_cached("DELETE FROM device_outbox WHERE seq <= ?1")?.execute([last])?;
    Ok(())
}

/// Who the engine's own transitions are recorded as in the audit trail.
pub(super) const ENGINE_SUBJECT: &str = "ota-engine";

/// Audits one of the engine's own transitions, in its transaction.
pub(super) fn audit_engine(
    conn: &Connection,
    at: DateTime<Utc>,
    operation: &str,
    request: Value,
    detail: String,
) -> DbResult<()> {
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
pub(super) fn rollout_of(conn: &Connection, id: &JobId) -> DbResult<Option<Rollout>> {
    super::rollouts::select_one_without_things(conn, id)
}

/// The policy's view of a rollout, from its counts. The starts (all, and those of the last
/// minute) are read only when the policy limits the start rate: from the counters and from
/// the index of start times, so neither reads every execution of the rollout.
fn stats(
    conn: &Connection,
    id: &JobId,
    c: &ExecutionCounts,
    policy: &RolloutPolicy,
    now: DateTime<Utc>,
) -> DbResult<RolloutStats> {
    let rate_limited = policy.max_per_minute.is_some() || policy.exponential_ramp.is_some();
    let (started, recent_starts) = if rate_limited {
        let recent_starts = conn
            .prepare_cached(
                "SELECT started_at FROM executions WHERE rollout_id = ?1 AND started_at IS NOT NULL AND started_at > ?2",
            )?
            .query_map(params![id.as_str(), timestamp(&(now - Duration::minutes(1)))], |row| column(row, 0))?
            .collect::<rusqlite::Result<Vec<DateTime<Utc>>>>()?;
        (started(conn, id)?, recent_starts)
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
pub(super) fn evaluate(
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
            finish_in_tx(conn, &rollout.id, RolloutStatus::Aborted, &reason, now, &mut out.events)?;
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
            record(conn, &mut out.events, &rollout.id, now, "started", Some(&thing), json!({}))?;
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
            finish_in_tx(conn, &rollout.id, RolloutStatus::Completed, &reason, now, &mut out.events)?;
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
