//! The rollout event stream: every transition of a rollout and of its executions, in order,
//! as the page, SSE and `ota rollouts watch` follow it.

use chrono::{DateTime, Utc};
use ota_core::names::{JobId, ThingName};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DbResult, SqliteStore, column, optional_column, timestamp};

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

/// Appends an event to the stream, in the caller's transaction, and to `events` (what the
/// transaction publishes once it commits).
pub(super) fn record(
    conn: &Connection,
    events: &mut Vec<RolloutEvent>,
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
    events.push(RolloutEvent {
        seq: conn.last_insert_rowid(),
        rollout_id: rollout_id.clone(),
        at,
        kind: kind.to_string(),
        thing: thing.cloned(),
        detail,
    });
    Ok(())
}

impl SqliteStore {
    /// A rollout's events after `after_seq`, oldest first.
    pub async fn rollout_events(&self, id: &JobId, after_seq: i64) -> ota_core::Result<Vec<RolloutEvent>> {
        let id = id.clone();
        self.read(move |conn| {
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
}
