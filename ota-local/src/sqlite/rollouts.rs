//! Stored rollouts on the `rollouts` table. The partial unique index
//! `rollouts_one_active_per_type` backs the "one active rollout per type" check, so even a
//! writer that skips `create` cannot store a second active rollout for a type.
//!
//! Rows only: the [`RolloutStore`](ota_core::ports::RolloutStore) port, which creates and
//! finishes a rollout together with its executions, is `rollout_store`.

use ota_core::names::{DeviceType, JobId};
use ota_core::rollout::{Rollout, RolloutQuery};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::{
    DbResult, column, json_column, optional_column, optional_json_column, sql_limit, timestamp, to_i64, to_json,
};

const COLUMNS: &str = "id, plan_id, action, device_type, thing_group, version, sha256, size, things, \
                       fleet_query, policy, status, status_reason, created_by, created_at, updated_at, \
                       from_versions, revert_of, signature, security_version";

/// [`COLUMNS`] with an empty device list in place of `things`.
const COLUMNS_WITHOUT_THINGS: &str = "id, plan_id, action, device_type, thing_group, version, sha256, size, '[]', \
                                      fleet_query, policy, status, status_reason, created_by, created_at, updated_at, \
                                      '{}', revert_of, signature, security_version";

fn rollout_from_row(row: &Row<'_>) -> rusqlite::Result<Rollout> {
    let size: i64 = row.get(7)?;
    Ok(Rollout {
        id: column(row, 0)?,
        plan_id: row.get(1)?,
        action: column(row, 2)?,
        device_type: column(row, 3)?,
        thing_group: column(row, 4)?,
        version: column(row, 5)?,
        sha256: column(row, 6)?,
        size: u64::try_from(size).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(7, size))?,
        things: json_column(row, 8)?,
        fleet_query: row.get(9)?,
        policy: json_column(row, 10)?,
        status: column(row, 11)?,
        status_reason: row.get(12)?,
        created_by: row.get(13)?,
        created_at: column(row, 14)?,
        updated_at: column(row, 15)?,
        from_versions: json_column(row, 16)?,
        revert_of: optional_column(row, 17)?,
        signature: optional_json_column(row, 18)?,
        security_version: row.get(19)?,
    })
}

pub(super) fn select_one(conn: &Connection, id: &JobId) -> DbResult<Option<Rollout>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM rollouts WHERE id = ?1"))?;
    Ok(stmt.query_row([id.as_str()], rollout_from_row).optional()?)
}

/// [`select_one`] with `things` left empty: for the jobs engine, which reads the rollout on
/// nearly every device message and never needs its device list (the executions are the
/// per-device rows). With 10,000 devices, parsing the list was most of a transition's cost.
pub(super) fn select_one_without_things(conn: &Connection, id: &JobId) -> DbResult<Option<Rollout>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS_WITHOUT_THINGS} FROM rollouts WHERE id = ?1"))?;
    Ok(stmt.query_row([id.as_str()], rollout_from_row).optional()?)
}

pub(super) fn active_for(conn: &Connection, device_type: &DeviceType) -> DbResult<Option<JobId>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM rollouts WHERE device_type = ?1 AND status = 'IN_PROGRESS'")?;
    Ok(stmt.query_row([device_type.as_str()], |row| column(row, 0)).optional()?)
}

pub(super) fn insert(conn: &Connection, r: &Rollout) -> DbResult<()> {
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO rollouts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
    ))?;
    stmt.execute(params![
        r.id.as_str(),
        r.plan_id,
        r.action.as_str(),
        r.device_type.as_str(),
        r.thing_group.as_str(),
        r.version.to_string(),
        r.sha256.to_hex(),
        to_i64("firmware size", r.size)?,
        to_json("things", &r.things)?,
        r.fleet_query,
        to_json("policy", &r.policy)?,
        r.status.as_str(),
        r.status_reason,
        r.created_by,
        timestamp(&r.created_at),
        timestamp(&r.updated_at),
        to_json("from_versions", &r.from_versions)?,
        r.revert_of.as_ref().map(|id| id.as_str()),
        r.signature.as_ref().map(|s| to_json("signature", s)).transpose()?,
        r.security_version,
    ])?;
    Ok(())
}

/// Rollouts matching `query`, newest first.
pub(super) fn select_list(conn: &Connection, query: &RolloutQuery) -> DbResult<Vec<Rollout>> {
    let mut sql = format!("SELECT {COLUMNS} FROM rollouts");
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    if let Some(t) = &query.device_type {
        clauses.push("device_type = ?");
        values.push(Value::Text(t.to_string()));
    }
    if query.active_only {
        clauses.push("status = 'IN_PROGRESS'");
    }
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    // Newest first, ties by id: timestamps are stored fixed-width, so text order is
    // time order.
    sql.push_str(" ORDER BY created_at DESC, id ASC LIMIT ?");
    values.push(Value::Integer(sql_limit(query.limit)));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rollouts = stmt.query_map(params_from_iter(values), rollout_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rollouts)
}
