//! Operations that change state: starting and cancelling rollouts, the OTA gate, policy,
//! and publishing firmware. Each checks the caller's role first and is audited.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::FleetManager;
use super::planning::Verification;
use crate::audit::AuditOutcome;
use crate::auth::Caller;
use crate::authz::{self, Resource};
use crate::catalog::{ArtifactRef, FirmwareMetadata, sha256_file_content};
use crate::config::TypeConfig;
use crate::error::{Error, Result};
use crate::integrity::{Sha256Verifier, VerifiedArtifact};
use crate::names::{DeviceType, JobId};
use crate::plan::{Action, Plan};
use crate::policy::RolloutPolicy;
use crate::rollout::{Rollout, RolloutQuery, RolloutStatus};
use crate::signing::{FirmwareSignature, FirmwareSigner};
use crate::targeting::UpdateRequest;
use crate::version::FirmwareVersion;

/// What starting a plan did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StartOutcome {
    pub plan: Plan,
    /// One per deployment that runs now (started by this call or already running), in plan order.
    pub rollouts: Vec<Rollout>,
    /// Ids that were already running (the same request was started before and is still
    /// active): nothing new was made for them.
    pub existing: Vec<JobId>,
    /// One per deployment, in plan order: what happened to it.
    pub items: Vec<StartItem>,
}

/// What happened to one deployment of a started plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StartItem {
    pub device_type: DeviceType,
    pub rollout_id: JobId,
    #[serde(flatten)]
    pub result: StartResult,
}

/// Started now, already running (since when), or refused (why; nothing was made for it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StartResult {
    Started,
    AlreadyRunning { started_at: DateTime<Utc> },
    Refused { reason: String },
}

impl StartOutcome {
    /// Whether nothing was made or found running.
    pub fn nothing_changed(&self) -> bool {
        self.items.iter().all(|i| matches!(i.result, StartResult::Refused { .. }))
    }

    /// One clause per item, the words every front door uses: "started X", "already running X,
    /// started at …", "refused X: why", joined by "; ".
    pub fn summary(&self) -> String {
        let lines: Vec<String> = self.items.iter().map(StartItem::summary).collect();
        lines.join("; ")
    }
}

impl StartItem {
    /// "started X (type)", "already running X (type), started at …", or "refused X (type),
    /// nothing changed for it: why".
    pub fn summary(&self) -> String {
        match &self.result {
            StartResult::Started => format!("started {} ({})", self.rollout_id, self.device_type),
            StartResult::AlreadyRunning { started_at } => format!(
                "already running {} ({}), started at {}",
                self.rollout_id,
                self.device_type,
                started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            StartResult::Refused { reason } => {
                format!("refused {} ({}), nothing changed for it: {reason}", self.rollout_id, self.device_type)
            }
        }
    }
}

/// What [`FleetManager::ask`] did with a plain-language request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AskOutcome {
    /// The plan the words became (any action).
    pub plan: Plan,
    /// Present when the plan was an update or rollback with something to run; `None` when
    /// there was nothing to start (the plan says why), which is not an error.
    pub started: Option<StartOutcome>,
    /// Present when the plan was a command with a device to send to: the command run it
    /// started, or the one already running exactly this plan (`created: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<super::CommandStart>,
}

impl FleetManager {
    /// Plans `req` again with a full integrity check and creates one rollout per deployment
    /// (operator). When `expected_plan_id` is given, the new plan must match it: what runs is
    /// exactly what was shown. Repeating a request whose rollout is still active returns that
    /// rollout; once it has ended, the same request starts a new rollout with a new id.
    pub async fn start(
        &self,
        caller: &Caller,
        req: &UpdateRequest,
        expected_plan_id: Option<&str>,
    ) -> Result<StartOutcome> {
        self.start_requests(caller, std::slice::from_ref(req), expected_plan_id).await
    }

    /// [`Self::start`] for the changes of one plan of several ([`Plan::update_requests`]): all
    /// are planned again together, `expected_plan_id` binds the whole set (a change in any of
    /// them refuses the start, and nothing is created), and the outcome has one item per
    /// deployment across all of them. One request is exactly [`Self::start`].
    pub async fn start_requests(
        &self,
        caller: &Caller,
        reqs: &[UpdateRequest],
        expected_plan_id: Option<&str>,
    ) -> Result<StartOutcome> {
        let request = match reqs {
            [one] => serde_json::to_value(one).unwrap_or_default(),
            several => json!({ "requests": several }),
        };
        self.require(caller, authz::Action::StartRollout, "start a rollout", Resource::Fleet, self.context(), &request)
            .await?;
        let result = self.start_inner(caller, reqs, expected_plan_id, None).await;
        let (plan_json, outcome) = match &result {
            Ok(o) if o.nothing_changed() => (serde_json::to_value(&o.plan).ok(), AuditOutcome::Refused(o.summary())),
            Ok(o) => (serde_json::to_value(&o.plan).ok(), AuditOutcome::Ok(o.summary())),
            Err(e @ (Error::Refused(_) | Error::Conflict(_) | Error::Forbidden { .. })) => {
                (None, AuditOutcome::Refused(e.to_string()))
            }
            Err(e) => (None, AuditOutcome::Error(e.to_string())),
        };
        self.audit(caller, "start", request, plan_json, outcome).await?;
        result
    }

    /// Understands `text` and, when `execute` is set and it is an update or rollback with
    /// something to run, starts exactly the plan it made (operator for the start; any role may
    /// ask). With `expected_plan_id`, the plan must be the one shown (see [`Self::start`]).
    /// A command plan ("Reboot pet_feeder-03") is started the same way as one command run
    /// ([`Self::start_command`], bound to the command plan's id), in `command`.
    /// The one path for "do what I say" in every front door (`ota ask`, MCP `ask`,
    /// `POST /api/ask`, the chat's tool): a plan with nothing to start is returned with
    /// `started: None` and its message says why; that is not an error.
    pub async fn ask(
        &self,
        caller: &Caller,
        text: &str,
        execute: bool,
        expected_plan_id: Option<&str>,
    ) -> Result<AskOutcome> {
        let (mut plan, command) = self.plan_prompt_and_command(caller, text).await?;
        if plan.action == Action::Command {
            // A command plan is started as a command run, bound to the command plan's id.
            let startable = command.is_some() && plan.plan_id.is_some();
            if execute
                && !startable
                && let Some(expected) = expected_plan_id
            {
                return Err(Error::Conflict(format!(
                    "what would run differs from plan {expected} as it was shown (now: {}); plan again and confirm the new plan",
                    plan.message
                )));
            }
            let (true, Some(spec)) = (execute, command) else {
                return Ok(AskOutcome { plan, started: None, command: None });
            };
            let start = self.start_command(caller, &spec, expected_plan_id.or(plan.plan_id.as_deref())).await?;
            let mut said = start.message.clone();
            if let Some(first) = said.get(..1) {
                said = first.to_uppercase() + &said[1..];
            }
            plan.message = format!("{} {said}.", plan.message);
            return Ok(AskOutcome { plan, started: None, command: Some(start) });
        }
        let startable = matches!(plan.action, Action::Update | Action::Rollback) && !plan.deployments.is_empty();
        // A confirmation of a plan that has since become empty (or another action) is stale,
        // not "nothing to do": say so, as a start would.
        if execute
            && !startable
            && let Some(expected) = expected_plan_id
        {
            return Err(Error::Conflict(format!(
                "what would run differs from plan {expected} as it was shown (now: {}); plan again and confirm the new plan",
                plan.message
            )));
        }
        let requests = plan.update_requests();
        if !(execute && startable) || requests.is_empty() {
            return Ok(AskOutcome { plan, started: None, command: None });
        }
        let started = self.start_requests(caller, &requests, expected_plan_id.or(plan.plan_id.as_deref())).await?;
        Ok(AskOutcome { plan: started.plan.clone(), started: Some(started), command: None })
    }

    pub(super) async fn start_inner(
        &self,
        caller: &Caller,
        reqs: &[UpdateRequest],
        expected_plan_id: Option<&str>,
        revert_of: Option<&JobId>,
    ) -> Result<StartOutcome> {
        let mut plan = self.build_plans(reqs, Verification::Full).await?;
        if revert_of.is_some() {
            // A revert never reverts itself, whatever the type's policy says.
            plan.deployments.iter_mut().for_each(|d| d.policy.revert_on_abort = false);
            plan.plan_id = (!plan.deployments.is_empty()).then(|| crate::plan::plan_id(&plan.deployments));
        }
        if let Some(expected) = expected_plan_id
            && plan.plan_id.as_deref() != Some(expected)
        {
            return Err(Error::Conflict(format!(
                "what would run differs from plan {expected} as it was shown (the fleet, the catalog, a policy or the rollouts changed; it is now {}); plan again and confirm the new plan",
                plan.plan_id.as_deref().unwrap_or("empty")
            )));
        }
        if plan.deployments.is_empty() {
            return Err(Error::Refused(plan.message.clone()));
        }
        if revert_of.is_none() {
            // Every device the plan reaches, by the policies (a change freeze, ...).
            self.authorize_deployments(caller, &plan).await?;
        }
        // Check every type first (of every change) so a conflict on the second type does not
        // leave the first started.
        let mut running = Vec::new();
        for d in &plan.deployments {
            match self.backend.rollouts.get(&d.rollout_id).await {
                Ok(r) if r.status.is_active() => running.push(r),
                Ok(r) => {
                    // Planning never names an ended rollout; only a race can (it ended meanwhile).
                    return Err(Error::Conflict(format!(
                        "rollout {} ended ({}) while this request was being started; plan again",
                        r.id,
                        r.status.as_str()
                    )));
                }
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
        let mut items = Vec::new();
        for d in &plan.deployments {
            let item =
                |result| StartItem { device_type: d.device_type.clone(), rollout_id: d.rollout_id.clone(), result };
            if let Some(r) = running.iter().find(|r| r.id == d.rollout_id) {
                items.push(item(StartResult::AlreadyRunning { started_at: r.created_at }));
                rollouts.push(r.clone());
                continue;
            }
            let r = Rollout {
                id: d.rollout_id.clone(),
                plan_id: plan_id.clone(),
                action: d.action,
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
                from_versions: d.from_versions.clone(),
                revert_of: revert_of.cloned(),
                // What start's full check verified: every job document carries it.
                signature: d.signature.clone(),
                security_version: d.security_version,
            };
            // A later type can still lose a race (another start took it meanwhile): what was
            // created stays created, and the reply lists each item.
            match self.backend.rollouts.create(&r).await {
                Ok(()) => {
                    items.push(item(StartResult::Started));
                    rollouts.push(r);
                }
                Err(e) if !rollouts.is_empty() => {
                    items.push(item(StartResult::Refused { reason: e.to_string() }));
                }
                Err(e) => return Err(e),
            }
        }
        let existing = running.into_iter().map(|r| r.id).collect();
        Ok(StartOutcome { plan, rollouts, existing, items })
    }

    /// Rollouts, newest first.
    pub async fn list_rollouts(&self, caller: &Caller, query: &RolloutQuery) -> Result<Vec<Rollout>> {
        let resource = super::type_resource(query.device_type.as_ref());
        self.allow(caller, authz::Action::ListRollouts, "list rollouts", resource)?;
        self.backend.rollouts.list(query).await
    }

    /// One rollout.
    pub async fn rollout(&self, caller: &Caller, id: &JobId) -> Result<Rollout> {
        let found = self.backend.rollouts.get(id).await;
        let device_type = found.as_ref().ok().map(|r| r.device_type.to_string());
        let resource = Resource::Rollout { id: id.to_string(), device_type };
        self.allow(caller, authz::Action::ReadRollout, "read a rollout", resource)?;
        found
    }

    /// What cancelling rollout `id` would cancel, checked as `caller` and changing nothing:
    /// the operator role, the rollout exists and is still active. The chat shows this before
    /// asking for confirmation; [`FleetManager::cancel`] checks everything again.
    pub async fn preview_cancel(&self, caller: &Caller, id: &JobId) -> Result<Rollout> {
        let found = self.backend.rollouts.get(id).await;
        let device_type = found.as_ref().ok().map(|r| r.device_type.to_string());
        let resource = Resource::Rollout { id: id.to_string(), device_type };
        self.allow(caller, authz::Action::CancelRollout, "cancel a rollout", resource)?;
        let rollout = found?;
        if !rollout.status.is_active() {
            return Err(Error::Conflict(format!("rollout {id} already ended ({})", rollout.status.as_str())));
        }
        Ok(rollout)
    }

    /// The OTA gate of a type as it is now, checked for a change by `caller` (admin, a known
    /// type) and changing nothing. [`FleetManager::set_ota_enabled`] checks everything again.
    pub async fn preview_set_ota(&self, caller: &Caller, device_type: &DeviceType, enabled: bool) -> Result<bool> {
        let what = if enabled { "enable OTA" } else { "disable OTA" };
        let context = authz::Context { ota_enabled: Some(enabled), ..self.context() };
        self.authorize(
            caller,
            authz::Action::SetOtaEnabled,
            what,
            &Resource::device_type(device_type.as_str()),
            &context,
        )?;
        if !self.known_types().await?.contains(device_type) {
            return Err(self.unknown_type(device_type).await);
        }
        Ok(self.enabled_types([device_type.clone()]).await?.contains(device_type))
    }

    /// Cancels an active rollout (operator).
    pub async fn cancel(&self, caller: &Caller, id: &JobId, reason: &str) -> Result<Rollout> {
        let request = json!({ "rollout": id, "reason": reason });
        let resource = self.rollout_resource(id).await;
        self.require(caller, authz::Action::CancelRollout, "cancel a rollout", resource, self.context(), &request)
            .await?;
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
        let what = if enabled { "enable OTA" } else { "disable OTA" };
        let context = authz::Context { ota_enabled: Some(enabled), ..self.context() };
        let resource = Resource::device_type(device_type.as_str());
        self.require(caller, authz::Action::SetOtaEnabled, what, resource, context, &request).await?;
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
        let resource = Resource::device_type(device_type.as_str());
        self.require(caller, authz::Action::SetPolicy, "change a rollout policy", resource, self.context(), &request)
            .await?;
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
    /// `metadata.json`. A published version is immutable. Unsigned: refused when signing is
    /// required (see [`FleetManager::publish_firmware_signed`]).
    pub async fn publish_firmware(&self, caller: &Caller, publish: PublishRequest) -> Result<VerifiedArtifact> {
        self.publish_firmware_signed(caller, publish, PublishOptions::default()).await
    }

    /// [`FleetManager::publish_firmware`] with a security version and signed by `signer`,
    /// whose key must be trusted: the
    /// image's digest is signed and the signature verified before anything is written, and
    /// `firmware.sig` is added beside the three files. Without a signer, refused when signing
    /// is required.
    pub async fn publish_firmware_signed(
        &self,
        caller: &Caller,
        publish: PublishRequest,
        options: PublishOptions<'_>,
    ) -> Result<VerifiedArtifact> {
        let signer = options.signer;
        let artifact = ArtifactRef::new(publish.device_type.clone(), publish.version.clone());
        let mut request =
            json!({ "artifact": artifact, "size": publish.image.len(), "release_notes": publish.release_notes });
        if let Some(s) = signer {
            request["key_id"] = json!(s.key_id());
        }
        if options.security_version > 0 {
            request["security_version"] = json!(options.security_version);
        }
        let context = authz::Context { version: Some(artifact.version.to_string()), ..self.context() };
        let resource = Resource::device_type(artifact.device_type.as_str());
        self.require(caller, authz::Action::PublishFirmware, "publish firmware", resource, context, &request).await?;
        if publish.image.is_empty() {
            return Err(Error::invalid("firmware image", "", "is empty"));
        }
        let mut verifier = Sha256Verifier::new();
        verifier.update(&publish.image);
        let (sha256, size) = verifier.finish();
        let signature = match signer {
            Some(s) => match self.sign_trusted(&artifact, &sha256, s).await {
                Ok(sig) => Some(sig),
                Err(e) => {
                    self.audit(caller, "publish", request, None, AuditOutcome::Refused(e.to_string())).await?;
                    return Err(e);
                }
            },
            None if self.settings.signing.require_signed => {
                let e = Error::Integrity {
                    artifact: artifact.to_string(),
                    detail: "signing is required: publish with a trusted key (`ota firmware publish --sign KEY`)"
                        .into(),
                };
                self.audit(caller, "publish", request, None, AuditOutcome::Refused(e.to_string())).await?;
                return Err(e);
            }
            None => None,
        };
        let signed_by = signature.as_ref().map(|s| s.key_id);
        let der = signature.as_ref().and_then(FirmwareSignature::der);
        let signed = signature.clone();
        let mut metadata = FirmwareMetadata {
            version: publish.version,
            device_type: publish.device_type,
            size,
            sha256,
            built_at: publish.built_at.unwrap_or_else(|| self.now()),
            release_notes: publish.release_notes,
            signature,
            security_version: options.security_version,
            commands: Vec::new(),
            settings: Default::default(),
            extra: publish.extra,
        };
        // A request declares commands and settings among its extra fields.
        metadata.lift_declarations();
        let mut result = self
            .backend
            .catalog
            .publish(&artifact, publish.image, sha256_file_content(&sha256), metadata.to_json())
            .await;
        if let (Ok(()), Some(der)) = (&result, der) {
            // The three files first, then the signature: between the two an artifact reads as
            // unsigned, which a data dir that requires signing refuses, never the reverse.
            result = self.backend.catalog.write_signature(&artifact, der, metadata.to_json()).await;
        }
        let outcome = match (&result, signed_by) {
            (Ok(()), Some(k)) => AuditOutcome::Ok(format!("published {artifact} sha256 {sha256} signed by key {k}")),
            (Ok(()), None) => AuditOutcome::Ok(format!("published {artifact} sha256 {sha256}")),
            (Err(e), _) => AuditOutcome::Refused(e.to_string()),
        };
        self.audit(caller, "publish", request, None, outcome).await?;
        result?;
        Ok(VerifiedArtifact {
            artifact,
            sha256,
            size,
            signed_by,
            signature: signed,
            security_version: metadata.security_version,
        })
    }
}

/// How a firmware is published beyond its files.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishOptions<'a> {
    /// Signs the image; its key must be trusted.
    pub signer: Option<&'a dyn FirmwareSigner>,
    /// The anti-rollback counter written to `metadata.json` (`security_version`).
    pub security_version: u32,
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
