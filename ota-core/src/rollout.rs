//! Rollouts as stored: one per deployment (one device type, one firmware), with the plan and
//! policy they were started with. Executions per device arrive with the jobs engine.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Sha256Digest;
use crate::job::{FirmwareSource, JobDocument};
use crate::names::{DeviceType, JobId, ThingGroupName, ThingName};
use crate::policy::RolloutPolicy;
use crate::signing::FirmwareSignature;
use crate::targeting::UpdateAction;
use crate::version::FirmwareVersion;

/// Lifecycle of a rollout (AWS IoT job status, plus `Aborted` for a policy abort).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutStatus {
    InProgress,
    Completed,
    Canceled,
    Aborted,
}

impl RolloutStatus {
    /// Whether the rollout still holds its device type (one active rollout per type).
    pub fn is_active(self) -> bool {
        self == RolloutStatus::InProgress
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStatus::InProgress => "IN_PROGRESS",
            RolloutStatus::Completed => "COMPLETED",
            RolloutStatus::Canceled => "CANCELED",
            RolloutStatus::Aborted => "ABORTED",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [RolloutStatus::InProgress, RolloutStatus::Completed, RolloutStatus::Canceled, RolloutStatus::Aborted]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A started rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Rollout {
    pub id: JobId,
    pub plan_id: String,
    pub action: UpdateAction,
    pub device_type: DeviceType,
    pub thing_group: ThingGroupName,
    pub version: FirmwareVersion,
    pub sha256: Sha256Digest,
    pub size: u64,
    /// Sorted.
    pub things: Vec<ThingName>,
    pub fleet_query: String,
    pub policy: RolloutPolicy,
    pub status: RolloutStatus,
    /// Why the status last changed (cancel reason, abort reason).
    pub status_reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What each device ran when the rollout was planned (those that reported a version);
    /// recorded when its policy reverts on abort, the only use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub from_versions: BTreeMap<ThingName, FirmwareVersion>,
    /// Set on a rollout started to revert the devices an aborted rollout had moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_of: Option<JobId>,
    /// The image's signature as verified at start (over `sha256`, by a trusted key); every
    /// job document of the rollout carries it. `None`: unsigned (allowed only where signing
    /// is not required), or a rollout recorded before signatures existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<FirmwareSignature>,
    /// The image's anti-rollback counter (`metadata.json`'s `security_version`) at start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub security_version: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Rollout {
    /// The job document each device of this rollout receives, downloading from `url` (a
    /// link signed at delivery, or AWS's pre-signed URL placeholder).
    pub fn job_document(&self, url: String) -> JobDocument<'static> {
        JobDocument::update(
            &self.device_type,
            &self.version,
            self.action == UpdateAction::Rollback,
            FirmwareSource {
                url,
                size: self.size,
                sha256: self.sha256,
                signature: self.signature.clone(),
                security_version: self.security_version,
            },
        )
    }
}

/// A query over stored rollouts; the default lists all, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutQuery {
    pub device_type: Option<DeviceType>,
    pub active_only: bool,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

impl RolloutQuery {
    /// Whether `r` passes the filters (not the limit).
    pub fn matches(&self, r: &Rollout) -> bool {
        self.device_type.as_ref().is_none_or(|t| *t == r.device_type) && (!self.active_only || r.status.is_active())
    }
}
