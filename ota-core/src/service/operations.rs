//! Operations that change state: starting and cancelling rollouts, the OTA gate, policy,
//! and publishing firmware. Each checks the caller's role first and is audited.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::FleetManager;
use super::planning::Verification;
use crate::audit::AuditOutcome;
use crate::auth::{Caller, Role};
use crate::catalog::{ArtifactRef, FirmwareMetadata, sha256_file_content};
use crate::config::TypeConfig;
use crate::error::{Error, Result};
use crate::integrity::{Sha256Verifier, VerifiedArtifact};
use crate::names::{DeviceType, JobId};
use crate::plan::Plan;
use crate::policy::RolloutPolicy;
use crate::rollout::{Rollout, RolloutQuery, RolloutStatus};
use crate::targeting::{UpdateAction, UpdateRequest};
use crate::version::FirmwareVersion;

/// What starting a plan did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartOutcome {
    pub plan: Plan,
    /// One per deployment, in plan order.
    pub rollouts: Vec<Rollout>,
    /// Ids that already existed (the same request was started before): nothing new was made.
    pub existing: Vec<JobId>,
}

impl FleetManager {
    /// Plans `req` again with a full integrity check and creates one rollout per deployment
    /// (operator). When `expected_plan_id` is given, the new plan must match it: what runs is
    /// exactly what was shown. Repeating a started request returns the existing rollouts.
    pub async fn start(
        &self,
        caller: &Caller,
        req: &UpdateRequest,
        expected_plan_id: Option<&str>,
    ) -> Result<StartOutcome> {
        let request = serde_json::to_value(req).unwrap_or_default();
        self.require(caller, Role::Operator, "start a rollout", &request).await?;
        let result = self.start_inner(caller, req, expected_plan_id).await;
        let (plan_json, outcome) = match &result {
            Ok(o) => (
                serde_json::to_value(&o.plan).ok(),
                AuditOutcome::Ok(format!(
                    "rollouts {}",
                    o.rollouts.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
                )),
            ),
            Err(e @ (Error::Refused(_) | Error::Conflict(_))) => (None, AuditOutcome::Refused(e.to_string())),
            Err(e) => (None, AuditOutcome::Error(e.to_string())),
        };
        self.audit(caller, "start", request, plan_json, outcome).await?;
        result
    }

    async fn start_inner(
        &self,
        caller: &Caller,
        req: &UpdateRequest,
        expected_plan_id: Option<&str>,
    ) -> Result<StartOutcome> {
        let plan = self.build_plan(req, Verification::Full).await?;
        if let Some(expected) = expected_plan_id
            && plan.plan_id.as_deref() != Some(expected)
        {
            return Err(Error::Conflict(format!(
                "the fleet or the catalog changed since plan {expected} was shown (it is now {}); plan again and confirm the new plan",
                plan.plan_id.as_deref().unwrap_or("empty")
            )));
        }
        if plan.deployments.is_empty() {
            return Err(Error::Refused(plan.message.clone()));
        }
        // Check every type first so a conflict on the second type does not leave the first started.
        let mut existing = Vec::new();
        for d in &plan.deployments {
            match self.backend.rollouts.get(&d.rollout_id).await {
                Ok(_) => existing.push(d.rollout_id.clone()),
                Err(Error::NotFound { .. }) => {
                    let active = self
                        .backend
                        .rollouts
                        .list(&RolloutQuery {
                            device_type: Some(d.device_type.clone()),
                            active_only: true,
                            limit: Some(1),
                        })
                        .await?;
                    if let Some(a) = active.first() {
                        return Err(Error::active_rollout(&a.id, &d.device_type));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let now = self.now();
        let plan_id = plan.plan_id.clone().unwrap_or_default();
        let mut rollouts = Vec::new();
        for d in &plan.deployments {
            if existing.contains(&d.rollout_id) {
                rollouts.push(self.backend.rollouts.get(&d.rollout_id).await?);
                continue;
            }
            let action = if d.rollout_id.as_str().starts_with("rollback-") {
                UpdateAction::Rollback
            } else {
                UpdateAction::Update
            };
            let r = Rollout {
                id: d.rollout_id.clone(),
                plan_id: plan_id.clone(),
                action,
                device_type: d.device_type.clone(),
                thing_group: d.thing_group.clone(),
                version: d.version.clone(),
                sha256: d.sha256,
                size: d.size,
                things: d.things.clone(),
                fleet_query: d.fleet_query.clone(),
                policy: d.policy.clone(),
                status: RolloutStatus::InProgress,
                status_reason: None,
                created_by: caller.subject.clone(),
                created_at: now,
                updated_at: now,
            };
            self.backend.rollouts.create(&r).await?;
            rollouts.push(r);
        }
        Ok(StartOutcome { plan, rollouts, existing })
    }

    /// Rollouts, newest first.
    pub async fn list_rollouts(&self, caller: &Caller, query: &RolloutQuery) -> Result<Vec<Rollout>> {
        caller.require(Role::Viewer, "list rollouts")?;
        self.backend.rollouts.list(query).await
    }

    /// One rollout.
    pub async fn rollout(&self, caller: &Caller, id: &JobId) -> Result<Rollout> {
        caller.require(Role::Viewer, "read a rollout")?;
        self.backend.rollouts.get(id).await
    }

    /// What cancelling rollout `id` would cancel, checked as `caller` and changing nothing:
    /// the operator role, the rollout exists and is still active. The chat shows this before
    /// asking for confirmation; [`FleetManager::cancel`] checks everything again.
    pub async fn preview_cancel(&self, caller: &Caller, id: &JobId) -> Result<Rollout> {
        caller.require(Role::Operator, "cancel a rollout")?;
        let rollout = self.backend.rollouts.get(id).await?;
        if !rollout.status.is_active() {
            return Err(Error::Conflict(format!("rollout {id} already ended ({})", rollout.status.as_str())));
        }
        Ok(rollout)
    }

    /// The OTA gate of a type as it is now, checked for a change by `caller` (admin, a known
    /// type) and changing nothing. [`FleetManager::set_ota_enabled`] checks everything again.
    pub async fn preview_set_ota(&self, caller: &Caller, device_type: &DeviceType, enabled: bool) -> Result<bool> {
        caller.require(Role::Admin, if enabled { "enable OTA" } else { "disable OTA" })?;
        if !self.known_types().await?.contains(device_type) {
            return Err(self.unknown_type(device_type).await);
        }
        Ok(self.enabled_types([device_type.clone()]).await?.contains(device_type))
    }

    /// Cancels an active rollout (operator).
    pub async fn cancel(&self, caller: &Caller, id: &JobId, reason: &str) -> Result<Rollout> {
        let request = json!({ "rollout": id, "reason": reason });
        self.require(caller, Role::Operator, "cancel a rollout", &request).await?;
        let reason = if reason.trim().is_empty() {
            format!("canceled by {}", caller.subject)
        } else {
            reason.trim().to_string()
        };
        let result = self.backend.rollouts.finish(id, RolloutStatus::Canceled, &reason, self.now()).await;
        let outcome = match &result {
            Ok(r) => AuditOutcome::Ok(format!("{} canceled", r.id)),
            Err(e) => AuditOutcome::Refused(e.to_string()),
        };
        self.audit(caller, "cancel", request, None, outcome).await?;
        result
    }

    /// Opens or closes the OTA gate of a type (admin). The type must be known to the catalog
    /// or the registry.
    pub async fn set_ota_enabled(
        &self,
        caller: &Caller,
        device_type: &DeviceType,
        enabled: bool,
    ) -> Result<TypeConfig> {
        let request = json!({ "device_type": device_type, "ota_enabled": enabled });
        self.require(caller, Role::Admin, if enabled { "enable OTA" } else { "disable OTA" }, &request).await?;
        if !self.known_types().await?.contains(device_type) {
            return Err(self.unknown_type(device_type).await);
        }
        let current = self.backend.config.get(device_type).await?;
        let config = TypeConfig {
            device_type: device_type.clone(),
            ota_enabled: enabled,
            policy: current.and_then(|c| c.policy),
            updated_by: caller.subject.clone(),
            updated_at: self.now(),
        };
        self.backend.config.put(config.clone()).await?;
        let what = if enabled { "enabled" } else { "disabled" };
        self.audit(caller, "set_ota", request, None, AuditOutcome::Ok(format!("OTA {what} for {device_type}"))).await?;
        Ok(config)
    }

    /// Sets or clears a type's policy override (admin). The policy is validated first.
    pub async fn set_policy(
        &self,
        caller: &Caller,
        device_type: &DeviceType,
        policy: Option<RolloutPolicy>,
    ) -> Result<TypeConfig> {
        let request = json!({ "device_type": device_type, "policy": policy });
        self.require(caller, Role::Admin, "change a rollout policy", &request).await?;
        if let Some(p) = &policy {
            p.validate()?;
        }
        if !self.known_types().await?.contains(device_type) {
            return Err(self.unknown_type(device_type).await);
        }
        let current = self.backend.config.get(device_type).await?;
        let config = TypeConfig {
            device_type: device_type.clone(),
            ota_enabled: current.map_or(self.settings.gate.enabled_without_record, |c| c.ota_enabled),
            policy,
            updated_by: caller.subject.clone(),
            updated_at: self.now(),
        };
        self.backend.config.put(config.clone()).await?;
        self.audit(caller, "set_policy", request, None, AuditOutcome::Ok(format!("policy set for {device_type}")))
            .await?;
        Ok(config)
    }

    /// Publishes a new firmware (admin): writes the image, its `firmware.sha256` and its
    /// `metadata.json`. A published version is immutable.
    pub async fn publish_firmware(&self, caller: &Caller, publish: PublishRequest) -> Result<VerifiedArtifact> {
        let artifact = ArtifactRef::new(publish.device_type.clone(), publish.version.clone());
        let request =
            json!({ "artifact": artifact, "size": publish.image.len(), "release_notes": publish.release_notes });
        self.require(caller, Role::Admin, "publish firmware", &request).await?;
        if publish.image.is_empty() {
            return Err(Error::invalid("firmware image", "", "is empty"));
        }
        let mut verifier = Sha256Verifier::new();
        verifier.update(&publish.image);
        let (sha256, size) = verifier.finish();
        let metadata = FirmwareMetadata {
            version: publish.version,
            device_type: publish.device_type,
            size,
            sha256,
            built_at: publish.built_at.unwrap_or_else(|| self.now()),
            release_notes: publish.release_notes,
            extra: publish.extra,
        };
        let result = self
            .backend
            .catalog
            .publish(&artifact, publish.image, sha256_file_content(&sha256), metadata.to_json())
            .await;
        let outcome = match &result {
            Ok(()) => AuditOutcome::Ok(format!("published {artifact} sha256 {sha256}")),
            Err(e) => AuditOutcome::Refused(e.to_string()),
        };
        self.audit(caller, "publish", request, None, outcome).await?;
        result?;
        Ok(VerifiedArtifact { artifact, sha256, size })
    }
}

/// A firmware to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    pub device_type: DeviceType,
    pub version: FirmwareVersion,
    pub image: Vec<u8>,
    pub release_notes: String,
    /// Defaults to now.
    pub built_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Extra metadata fields (board, git commit, ...).
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}
