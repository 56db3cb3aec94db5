//! The [`RolloutStore`] port on SQLite: a rollout is created with all its executions, and
//! finished with its queued executions canceled, each in one `BEGIN IMMEDIATE` transaction.
//! The partial unique index `rollouts_one_active_per_type` backs the "one active rollout per
//! type" check, so even a writer that skips `create` cannot store a second active rollout.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ota_core::names::JobId;
use ota_core::ports::RolloutStore;
use ota_core::rollout::{Rollout, RolloutQuery, RolloutStatus};
use ota_core::{Error, Result};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::rollouts::{active_for, insert, select_list, select_one};
use super::{SqliteStore, StoreError, column, timestamp};

fn not_found(id: &JobId) -> StoreError {
    StoreError::Domain(Error::not_found("rollout", id.as_str()))
}

#[async_trait]
impl RolloutStore for SqliteStore {
    async fn create(&self, rollout: &Rollout) -> Result<()> {
        let rollout = rollout.clone();
        self.call(move |conn| {
            // IMMEDIATE takes the write lock before the checks, so no other connection (or
            // process) can slip a rollout in between the checks and the insert.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let taken: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM rollouts WHERE id = ?1")?
                .query_row([rollout.id.as_str()], |r| r.get(0))
                .optional()?;
            if taken.is_some() {
                return Err(Error::already_exists("rollout", rollout.id.as_str()).into());
            }
            if let Some(active) = active_for(&tx, &rollout.device_type)? {
                return Err(ota_core::Error::active_rollout(&active, &rollout.device_type).into());
            }
            insert(&tx, &rollout)?;
            // The executions are created with the rollout, in the same transaction: a
            // rollout can never exist with some of its devices missing.
            super::executions::create_executions(&tx, &rollout)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &JobId) -> Result<Rollout> {
        let id = id.clone();
        self.read(move |conn| select_one(conn, &id)?.ok_or_else(|| not_found(&id))).await
    }
    async fn list(&self, query: &RolloutQuery) -> Result<Vec<Rollout>> {
        let query = query.clone();
        self.read(move |conn| select_list(conn, &query)).await
    }

    async fn finish(&self, id: &JobId, status: RolloutStatus, reason: &str, at: DateTime<Utc>) -> Result<Rollout> {
        let (id, reason) = (id.clone(), reason.to_string());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: RolloutStatus = tx
                .prepare_cached("SELECT status FROM rollouts WHERE id = ?1")?
                .query_row([id.as_str()], |row| column(row, 0))
                .optional()?
                .ok_or_else(|| not_found(&id))?;
            if !current.is_active() {
                return Err(Error::Conflict(format!("rollout {id} already ended ({})", current.as_str())).into());
            }
            if status.is_active() {
                return Err(Error::invalid(
                    "rollout status",
                    status.as_str(),
                    "a rollout can only finish as COMPLETED, CANCELED or ABORTED",
                )
                .into());
            }
            tx.prepare_cached("UPDATE rollouts SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE id = ?1")?
                .execute(params![id.as_str(), status.as_str(), reason, timestamp(&at)])?;
            // As AWS IoT's CancelJob without `force`: queued executions are canceled, devices
            // already updating finish and report.
            super::executions::rollout_finished(&tx, &id, status, &reason, at)?;
            let updated = select_one(&tx, &id)?.ok_or_else(|| not_found(&id))?;
            tx.commit()?;
            Ok(updated)
        })
        .await
    }
}
