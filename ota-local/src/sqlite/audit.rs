//! The append-only audit trail on the `audit` table. Triggers refuse UPDATE and DELETE, so
//! the trail cannot be rewritten through this file, not just through this API.

use async_trait::async_trait;
use ota_core::Result;
use ota_core::audit::{AuditEntry, AuditOutcome};
use ota_core::ports::AuditLog;
use rusqlite::{Row, params};

use super::{SqliteStore, column, json_column, optional_json_column, to_json};
use super::{conversion_error, timestamp};

/// Appends `entry` on `conn`, inside whatever transaction the caller holds (the jobs engine
/// records its own transitions in the transaction that makes them, so a transition is never
/// committed unaudited). The entry's own `seq` is ignored: AUTOINCREMENT assigns the next one
/// and never reuses a number. Returns the assigned number.
pub(super) fn insert(conn: &rusqlite::Connection, entry: &AuditEntry) -> super::DbResult<u64> {
    let (result, detail) = outcome_parts(&entry.outcome);
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
    // The connection is held for the whole call, so this is our own insert's rowid.
    let seq = conn.last_insert_rowid();
    Ok(u64::try_from(seq).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, seq))?)
}

fn outcome_parts(outcome: &AuditOutcome) -> (&'static str, &str) {
    match outcome {
        AuditOutcome::Ok(d) => ("ok", d),
        AuditOutcome::Refused(d) => ("refused", d),
        AuditOutcome::Error(d) => ("error", d),
    }
}

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let seq: i64 = row.get(0)?;
    let result: String = row.get(7)?;
    let detail: String = row.get(8)?;
    let outcome = match result.as_str() {
        "ok" => AuditOutcome::Ok(detail),
        "refused" => AuditOutcome::Refused(detail),
        "error" => AuditOutcome::Error(detail),
        other => {
            return Err(conversion_error(7, format!("unknown audit outcome {other:?}")));
        }
    };
    Ok(AuditEntry {
        seq: u64::try_from(seq).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, seq))?,
        at: column(row, 1)?,
        subject: row.get(2)?,
        roles: json_column(row, 3)?,
        operation: row.get(4)?,
        request: json_column(row, 5)?,
        plan: optional_json_column(row, 6)?,
        outcome,
    })
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append(&self, entry: AuditEntry) -> Result<u64> {
        self.call(move |conn| insert(conn, &entry)).await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at, subject, roles, operation, request, plan, outcome, outcome_detail
                 FROM audit ORDER BY seq DESC LIMIT ?1",
            )?;
            let entries = stmt
                .query_map([super::sql_limit(Some(limit))], entry_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(entries)
        })
        .await
    }
}
