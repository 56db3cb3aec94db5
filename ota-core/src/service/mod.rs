//! The service: every operation an operator can perform, with every safety rule enforced
//! here (roles, config gate, version existence, integrity, policy bounds, one active rollout
//! per type). Front doors (CLI, MCP, HTTP, chat) are thin calls into [`FleetManager`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, AuditOutcome};
use crate::auth::Caller;
use crate::authz::{Action, Authorizer, Context, Resource};
use crate::catalog::{ArtifactRef, FirmwareMetadata};
use crate::config::{GateSettings, TypeConfig};
use crate::device::{Device, DeviceQuery};
use crate::error::{Error, Result};
use crate::integrity::VerifiedArtifact;
use crate::intent::Vocabulary;
use crate::names::{DeviceType, NamingConvention, ThingGroupName, ThingName};
use crate::policy::RolloutPolicy;
use crate::ports::Backend;
use crate::version::FirmwareVersion;

mod commands;
mod devices;
mod operations;
mod planning;
mod prompt;
mod revert;
mod several;
mod trust;
mod verify;

pub use commands::CommandStart;
pub use devices::DeviceStatus;
pub use operations::{AskOutcome, PublishOptions, PublishRequest, StartItem, StartOutcome, StartResult};
pub use revert::REVERT_SUBJECT;
pub use trust::{SigningSettings, TrustedKeySetting};

/// The time source; tests and simulations substitute their own.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Service settings read from configuration: `<data-dir>/settings.json` locally, the
/// `OTA_SETTINGS` environment variable (the same JSON) for the CLI on AWS and both Lambdas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub naming: NamingConvention,
    pub gate: GateSettings,
    /// Trusted and revoked firmware signing keys, and whether signing is required.
    #[serde(default, skip_serializing_if = "is_default")]
    pub signing: SigningSettings,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Settings {
    /// Checks every part: the naming convention and the default policy's bounds.
    pub fn validate(&self) -> Result<()> {
        self.naming.validate()?;
        self.signing.validate()?;
        self.gate.default_policy.validate()
    }

    /// Parses and validates settings JSON read from `source` (a path or a variable name).
    pub fn from_json(bytes: &[u8], source: &str) -> Result<Self> {
        let s: Settings =
            serde_json::from_slice(bytes).map_err(|e| Error::invalid("settings", source, e.to_string()))?;
        s.validate().map_err(|e| Error::invalid("settings", source, e.to_string()))?;
        Ok(s)
    }
}

/// One device type as the operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceTypeSummary {
    pub device_type: DeviceType,
    pub thing_group: ThingGroupName,
    pub ota_enabled: bool,
    /// Highest first.
    pub versions: Vec<FirmwareVersion>,
    pub latest: Option<FirmwareVersion>,
    pub devices: usize,
}

/// One catalog entry as listed (metadata read, image not hashed: `ota firmware verify` hashes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FirmwareEntry {
    pub device_type: DeviceType,
    pub version: FirmwareVersion,
    pub metadata: Option<FirmwareMetadata>,
    /// Why the metadata could not be read, when it could not.
    pub problem: Option<String>,
}

/// Devices and a per-type, per-version summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FleetStatus {
    pub devices: Vec<Device>,
    pub summary: Vec<TypeStatus>,
}

/// Counts for one device type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TypeStatus {
    pub device_type: DeviceType,
    pub total: usize,
    pub connected: usize,
    /// Version (or "unknown") → devices.
    pub by_version: BTreeMap<String, usize>,
}

/// The result of checking one artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub artifact: ArtifactRef,
    pub verified: Option<VerifiedArtifact>,
    pub error: Option<String>,
}

/// The fleet firmware service.
#[derive(Debug)]
pub struct FleetManager {
    backend: Backend,
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// The policies every operation is decided by (the default ones unless the backend's
    /// configuration gives a policy file).
    authorizer: Arc<Authorizer>,
    /// Artifacts verified while planning, keyed by what their small files said. Starting a
    /// rollout never uses it: it hashes the image again.
    verified: Mutex<HashMap<VerifyKey, VerifiedArtifact>>,
}

type VerifyKey = (ArtifactRef, String, Vec<u8>, Option<String>);

impl FleetManager {
    /// A service over `backend` with the wall clock. Invalid settings are refused here, so no
    /// front door can run on a policy or naming convention outside its bounds.
    pub fn new(backend: Backend, settings: Settings) -> Result<Self> {
        Self::with_clock(backend, settings, Arc::new(SystemClock))
    }

    /// A service with a given clock; invalid settings are refused.
    pub fn with_clock(backend: Backend, settings: Settings, clock: Arc<dyn Clock>) -> Result<Self> {
        settings.validate()?;
        Ok(FleetManager {
            backend,
            settings,
            clock,
            authorizer: Arc::new(Authorizer::default()),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// This service deciding every operation by `authorizer`'s policies instead of the default
    /// ones (a validated policy file: see [`Authorizer::from_text`]).
    pub fn with_authorizer(mut self, authorizer: Arc<Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// The policies in force.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// The ports this service runs on.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The current time of the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Every device type the catalog or the registry knows, with versions, gate and counts.
    pub async fn device_types(&self, caller: &Caller) -> Result<Vec<DeviceTypeSummary>> {
        self.allow(caller, Action::ListDeviceTypes, "list device types", Resource::Fleet)?;
        let versions = self.catalog_versions().await?;
        let enabled = self.enabled_types(versions.keys().cloned()).await?;
        let devices = self.backend.registry.list(&DeviceQuery::default()).await?;
        let mut counts: BTreeMap<DeviceType, usize> = BTreeMap::new();
        for d in &devices {
            *counts.entry(d.device_type.clone()).or_default() += 1;
        }
        let types: BTreeSet<DeviceType> = versions.keys().chain(counts.keys()).cloned().collect();
        let enabled = self.enabled_types_with(types.iter().cloned(), enabled).await?;
        Ok(types
            .into_iter()
            .map(|t| {
                let mut vs = versions.get(&t).cloned().unwrap_or_default();
                vs.sort_by(|a, b| b.cmp(a));
                let latest = crate::version::VersionRequest::Latest.resolve(&vs);
                DeviceTypeSummary {
                    thing_group: self.settings.naming.thing_group_of(&t),
                    ota_enabled: enabled.contains(&t),
                    devices: counts.get(&t).copied().unwrap_or(0),
                    versions: vs,
                    latest,
                    device_type: t,
                }
            })
            .collect())
    }

    /// Catalog entries, optionally for one type, sorted by type then version.
    pub async fn list_firmware(&self, caller: &Caller, device_type: Option<&DeviceType>) -> Result<Vec<FirmwareEntry>> {
        self.allow(caller, Action::ListFirmware, "list firmware", type_resource(device_type))?;
        let mut out = Vec::new();
        for a in self.backend.catalog.artifacts().await? {
            if device_type.is_some_and(|t| *t != a.device_type) {
                continue;
            }
            let (metadata, problem) = match self.backend.catalog.read_metadata(&a).await {
                Ok(bytes) => match FirmwareMetadata::parse(&a, &bytes) {
                    Ok(m) => (Some(m), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                Err(e) => (None, Some(e.to_string())),
            };
            out.push(FirmwareEntry { device_type: a.device_type, version: a.version, metadata, problem });
        }
        if let Some(t) = device_type
            && out.is_empty()
        {
            return Err(self.unknown_type(t).await);
        }
        Ok(out)
    }

    /// Devices matching `query`, with a per-type summary.
    pub async fn fleet_status(&self, caller: &Caller, query: &DeviceQuery) -> Result<FleetStatus> {
        self.allow(caller, Action::ReadFleet, "read fleet status", type_resource(query.device_type.as_ref()))?;
        if let Some(t) = &query.device_type
            && !self.known_types().await?.contains(t)
        {
            return Err(self.unknown_type(t).await);
        }
        let devices = self.backend.registry.list(query).await?;
        let mut summary: BTreeMap<DeviceType, TypeStatus> = BTreeMap::new();
        for d in &devices {
            let s = summary.entry(d.device_type.clone()).or_insert_with(|| TypeStatus {
                device_type: d.device_type.clone(),
                total: 0,
                connected: 0,
                by_version: BTreeMap::new(),
            });
            s.total += 1;
            s.connected += usize::from(d.connected);
            let v = d.firmware_version.as_ref().map_or_else(|| "unknown".to_string(), |v| v.to_string());
            *s.by_version.entry(v).or_default() += 1;
        }
        Ok(FleetStatus { devices, summary: summary.into_values().collect() })
    }

    /// One device; `NotFound` with close names when unknown.
    pub async fn device(&self, caller: &Caller, thing: &ThingName) -> Result<Device> {
        let found = self.backend.registry.get(thing).await?;
        let resource = found.as_ref().map_or(Resource::Fleet, device_resource);
        self.allow(caller, Action::ReadDevice, "read a device", resource)?;
        if let Some(d) = found {
            return Ok(d);
        }
        let candidates = self.thing_candidates(thing.as_str()).await?;
        let hint = match crate::intent::resolve_thing(thing.as_str(), &candidates) {
            crate::intent::ThingMatch::Found(t) => format!("did you mean {t}?"),
            crate::intent::ThingMatch::NotFound { suggestions } if !suggestions.is_empty() => {
                format!("close matches: {}", suggestions.join(", "))
            }
            _ => String::new(),
        };
        Err(Error::not_found_hint("device", thing.as_str(), hint))
    }

    /// The newest audit entries (admin).
    pub async fn audit_trail(&self, caller: &Caller, limit: usize) -> Result<Vec<AuditEntry>> {
        self.allow(caller, Action::ReadAudit, "read the audit trail", Resource::Fleet)?;
        self.backend.audit.recent(limit).await
    }

    // ---- shared helpers -------------------------------------------------------------------

    /// Every version of every type in the catalog.
    pub(crate) async fn catalog_versions(&self) -> Result<BTreeMap<DeviceType, Vec<FirmwareVersion>>> {
        let mut map: BTreeMap<DeviceType, Vec<FirmwareVersion>> = BTreeMap::new();
        for a in self.backend.catalog.artifacts().await? {
            map.entry(a.device_type).or_default().push(a.version);
        }
        Ok(map)
    }

    /// Types known to the catalog or the registry.
    pub(crate) async fn known_types(&self) -> Result<BTreeSet<DeviceType>> {
        let mut types: BTreeSet<DeviceType> = self.catalog_versions().await?.into_keys().collect();
        types.extend(self.backend.registry.device_types().await?);
        Ok(types)
    }

    /// The vocabulary the intent engine resolves names against.
    pub(crate) async fn vocabulary(&self) -> Result<Vocabulary> {
        Ok(Vocabulary { device_types: self.known_types().await?.into_iter().collect() })
    }

    /// The gate for `types`: those whose OTA is enabled.
    pub(crate) async fn enabled_types(
        &self,
        types: impl IntoIterator<Item = DeviceType>,
    ) -> Result<BTreeSet<DeviceType>> {
        self.enabled_types_with(types, BTreeSet::new()).await
    }

    async fn enabled_types_with(
        &self,
        types: impl IntoIterator<Item = DeviceType>,
        mut acc: BTreeSet<DeviceType>,
    ) -> Result<BTreeSet<DeviceType>> {
        let configs: BTreeMap<DeviceType, TypeConfig> =
            self.backend.config.list().await?.into_iter().map(|c| (c.device_type.clone(), c)).collect();
        for t in types {
            let on = configs.get(&t).map_or(self.settings.gate.enabled_without_record, |c| c.ota_enabled);
            if on {
                acc.insert(t);
            }
        }
        Ok(acc)
    }

    /// The policy in force for a type.
    pub(crate) async fn policy_for(&self, device_type: &DeviceType) -> Result<RolloutPolicy> {
        Ok(self
            .backend
            .config
            .get(device_type)
            .await?
            .and_then(|c| c.policy)
            .unwrap_or_else(|| self.settings.gate.default_policy.clone()))
    }

    /// `NotFound` for a device type, listing close known types.
    pub(crate) async fn unknown_type(&self, t: &DeviceType) -> Error {
        let known = self.known_types().await.unwrap_or_default();
        let close = crate::similarity::closest_names(t.as_str(), known.iter().map(|k| k.as_str()), 3);
        let hint = if close.is_empty() { String::new() } else { format!("did you mean {}?", close.join(", ")) };
        Error::not_found_hint("device type", t.as_str(), hint)
    }

    /// Things that a mention such as `pet_feeder-3` may mean: the devices of the type its
    /// prefix names (exactly or nearly), so a typo never scans a million-device registry.
    pub(crate) async fn thing_candidates(&self, mention: &str) -> Result<Vec<ThingName>> {
        let Some((prefix, _)) = mention.rsplit_once('-') else { return Ok(Vec::new()) };
        let known = self.known_types().await?;
        let mut types: Vec<DeviceType> = known.iter().filter(|t| t.as_str() == prefix).cloned().collect();
        if types.is_empty() {
            let close = crate::similarity::closest_names(prefix, known.iter().map(|k| k.as_str()), 2);
            types = close.iter().filter_map(|c| DeviceType::parse(c).ok()).collect();
        }
        let mut out = Vec::new();
        for t in types {
            let q = DeviceQuery { device_type: Some(t), ..Default::default() };
            out.extend(self.backend.registry.list(&q).await?.into_iter().map(|d| d.thing));
        }
        Ok(out)
    }

    /// Appends to the audit trail. A failing audit write fails the operation that wanted it,
    /// so nothing happens unrecorded.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        operation: &str,
        request: serde_json::Value,
        plan: Option<serde_json::Value>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        self.backend
            .audit
            .append(AuditEntry {
                seq: 0,
                at: self.now(),
                subject: caller.subject.clone(),
                roles: caller.roles.iter().copied().collect(),
                operation: operation.to_string(),
                request,
                plan,
                outcome,
            })
            .await
            .map(|_| ())
    }

    /// The request's context as the policies see it: now by the service's clock, nothing else.
    pub(crate) fn context(&self) -> Context {
        Context::at(self.now())
    }

    /// The one place operations are authorized: decides `action` on `resource` in `context`
    /// for `caller` by the policies in force. A refusal is [`Error::Forbidden`] naming `what`
    /// (the operation in words), with the policy's reason when a forbid matched.
    pub(crate) fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        what: &str,
        resource: &Resource,
        context: &Context,
    ) -> Result<()> {
        self.authorizer.is_authorized(caller, action, resource, context).into_result(caller, action, what)
    }

    /// [`Self::authorize`] in the plain context ([`Self::context`]).
    pub(crate) fn allow(&self, caller: &Caller, action: Action, what: &str, resource: Resource) -> Result<()> {
        self.authorize(caller, action, what, &resource, &self.context())
    }

    /// [`Self::authorize`] for an operation that changes something: a refusal is audited (as
    /// `what`, with `request`) before it is returned.
    pub(crate) async fn require(
        &self,
        caller: &Caller,
        action: Action,
        what: &str,
        resource: Resource,
        context: Context,
        request: &serde_json::Value,
    ) -> Result<()> {
        if let Err(e) = self.authorize(caller, action, what, &resource, &context) {
            self.audit(caller, what, request.clone(), None, AuditOutcome::Refused(e.to_string())).await?;
            return Err(e);
        }
        Ok(())
    }

    /// Decides StartRollout for every device the plan's deployments reach, each as a Device
    /// resource with its type, location and state (one registry listing per type), in the
    /// context of its deployment's device count. The first device refused refuses the whole
    /// start, before anything is created.
    pub(crate) async fn authorize_deployments(&self, caller: &Caller, plan: &crate::plan::Plan) -> Result<()> {
        for d in &plan.deployments {
            let q = DeviceQuery { device_type: Some(d.device_type.clone()), ..Default::default() };
            let known: HashMap<ThingName, Device> =
                self.backend.registry.list(&q).await?.into_iter().map(|dev| (dev.thing.clone(), dev)).collect();
            let context = self.context().devices(d.things.len());
            for thing in &d.things {
                let resource = known
                    .get(thing)
                    .map_or_else(|| Resource::device(thing.as_str(), d.device_type.as_str()), device_resource);
                let what = format!("start a rollout to {thing}");
                self.authorize(caller, Action::StartRollout, &what, &resource, &context)?;
            }
        }
        Ok(())
    }

    /// A rollout as a policy resource, with its type when it is known (an unknown rollout is
    /// decided without one, then the operation says it is not found).
    pub(crate) async fn rollout_resource(&self, id: &crate::names::JobId) -> Resource {
        let device_type = self.backend.rollouts.get(id).await.ok().map(|r| r.device_type.to_string());
        Resource::Rollout { id: id.to_string(), device_type }
    }
}

/// A device type as a policy resource, or the fleet when none is named.
pub(crate) fn type_resource(device_type: Option<&DeviceType>) -> Resource {
    device_type.map_or(Resource::Fleet, |t| Resource::device_type(t.as_str()))
}

/// A device as a policy resource, with its type, location and operational state.
pub(crate) fn device_resource(d: &Device) -> Resource {
    Resource::Device {
        thing: d.thing.to_string(),
        device_type: d.device_type.to_string(),
        location: d.location().map(str::to_string),
        state: Some(d.state.as_str().to_string()),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
