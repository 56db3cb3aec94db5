//! Audit entries written inside a transaction the caller holds: the jobs engine records its
//! own transitions (an abort, a completion, timeouts) in the transaction that makes them, so
//! a transition is never committed unaudited, nor audited without having happened. Rows
//! have exactly the shape [`ota_core::ports::AuditLog::append`] writes (see `audit.rs`).

use ota_core::audit::{AuditEntry, AuditOutcome};
use rusqlite::{Connection, params};

use super::{DbResult, timestamp, to_json};

/// Appends `entry` (its `seq` is ignored: AUTOINCREMENT assigns the next one) and returns the
/// assigned sequence number.
pub(super) fn append_in_tx(conn: &Connection, entry: &AuditEntry) -> DbResult<u64> {
    let (result, detail) = match &entry.outcome {
        AuditOutcome::Ok(d) => ("ok", d),
        AuditOutcome::Refused(d) => ("refused", d),
        AuditOutcome::Error(d) => ("error", d),
    };
    conn.prepare_cached(
        "INSERT INTO audit (at, subject, roles, operation, request, plan, outcome, outcome_detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        timestamp(&entry.at),
        entry.subject,
        to_json("roles", &entry.roles)?,
        entry.operation,
        to_json("request", &entry.request)?,
        entry.plan.as_ref().map(|p| to_json("plan", p)).transpose()?,
        result,
        detail,
    ])?;
    let seq = conn.last_insert_rowid();
    Ok(u64::try_from(seq).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, seq))?)
}
