//! The one progress port: where per-device progress of a rollout comes from, when the backend
//! has it (the local engine's executions; IoT Jobs' `DescribeJob` counters and
//! `ListJobExecutionsForJob` on AWS). MCP's `get_rollout` and `ota://rollouts/{id}`, the chat
//! (through [`crate::ChatTools`]), the page's `/api` and its stream, and the CLI all read it
//! through [`ProgressSource`]. It lives here, below `ota-http` (which re-exports it), so
//! both front doors share it without a dependency cycle.

use async_trait::async_trait;
use ota_core::names::{JobId, ThingName};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Devices of a rollout per execution state. The local engine knows `waiting` (not yet
/// offered); IoT Jobs reports it as queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: u32,
    pub waiting: u32,
    pub queued: u32,
    pub in_progress: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub rejected: u32,
    pub timed_out: u32,
    pub canceled: u32,
    pub removed: u32,
}

/// One device's execution of a rollout: its Jobs state (`QUEUED`, `IN_PROGRESS`, `SUCCEEDED`,
/// `FAILED`, `REJECTED`, `TIMED_OUT`, `CANCELED`, `REMOVED`) and the reason code the device
/// reported (`sha256_mismatch`, `boot_failed`, `download_failed`, ...), when it gave one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceExecution {
    pub thing: ThingName,
    pub status: String,
    pub reason: Option<String>,
}

/// Where per-device progress comes from, when the backend has it.
#[async_trait]
pub trait ProgressSource: Send + Sync + std::fmt::Debug {
    /// Devices per state for rollout `id`; `None` when unknown.
    async fn counts(&self, id: &JobId) -> ota_core::Result<Option<Counts>>;

    /// Each device's execution of rollout `id`, when the backend lists them.
    async fn executions(&self, _id: &JobId) -> ota_core::Result<Option<Vec<DeviceExecution>>> {
        Ok(None)
    }

    /// The rollout's recorded events after sequence number `after`, when the backend keeps them.
    async fn events(&self, _id: &JobId, _after: i64) -> ota_core::Result<Option<Value>> {
        Ok(None)
    }
}

/// The progress MCP reports for rollout `id`: `{"counts", "devices"}` (`devices` is `null`
/// where the backend does not list executions), or `None` when the source knows no counts.
pub async fn report(source: &dyn ProgressSource, id: &JobId) -> ota_core::Result<Option<Value>> {
    let Some(counts) = source.counts(id).await? else {
        return Ok(None);
    };
    let devices = source.executions(id).await?;
    Ok(Some(json!({ "counts": counts, "devices": devices })))
}
