//! Ports: the traits every backend implements (in memory here, SQLite and a folder in
//! `ota-local`, AWS in `ota-aws`). Guarantees are stated on each method and checked for every
//! backend by the [`crate::conformance`] suite.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Stream;

use crate::audit::AuditEntry;
use crate::catalog::ArtifactRef;
use crate::commands::{CommandQuery, CommandRun, Dispatch};
use crate::config::TypeConfig;
use crate::device::{Device, DeviceQuery};
use crate::error::Result;
use crate::names::{DeviceType, JobId, ThingName};
use crate::rollout::{Rollout, RolloutQuery, RolloutStatus};
use crate::version::FirmwareVersion;

/// A firmware image as a stream of chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>>> + Send>>;

/// The firmware catalog: `firmwares/v{semver}/{device_type}/...` in a bucket or a folder.
#[async_trait]
pub trait FirmwareCatalog: Send + Sync + std::fmt::Debug + 'static {
    /// Every artifact folder in the catalog (a folder holding at least one of the three files,
    /// whose version and type parse), sorted by type then version. Folders whose names do not
    /// parse are ignored, never turned into types. An artifact being published is not listed
    /// until complete (publish is atomic); one damaged later is listed, and the service's
    /// integrity check names its missing file.
    async fn artifacts(&self) -> Result<Vec<ArtifactRef>>;

    /// The raw content of `firmware.sha256`. `NotFound` when the artifact or the file is missing.
    async fn read_sha256(&self, artifact: &ArtifactRef) -> Result<String>;

    /// The raw content of `metadata.json`. `NotFound` when the artifact or the file is missing.
    async fn read_metadata(&self, artifact: &ArtifactRef) -> Result<Vec<u8>>;

    /// Streams `firmware.bin`; the caller verifies it. `NotFound` when missing.
    async fn open(&self, artifact: &ArtifactRef) -> Result<ByteStream>;

    /// A cheap identity of the stored `firmware.bin` (S3: its ETag; a folder: size and
    /// modification time) that changes when the image is replaced, so plans can cache
    /// verification without hashing the image again. `None`: the backend cannot tell cheaply,
    /// and plans trust the two small files alone.
    async fn image_fingerprint(&self, _artifact: &ArtifactRef) -> Result<Option<String>> {
        Ok(None)
    }

    /// The raw content of `firmware.sig` (the DER signature); `None` when the artifact has
    /// none (unsigned). `NotFound` when the artifact is missing.
    async fn read_signature(&self, artifact: &ArtifactRef) -> Result<Option<Vec<u8>>>;

    /// Signs a published artifact: writes `firmware.sig`, then replaces `metadata.json` (which
    /// names the key). The image and `firmware.sha256` never change, so a published version's
    /// bytes stay immutable; a reader between the two writes sees the old signature, which the
    /// service refuses as disagreeing, never a wrong image. `NotFound` when the artifact is missing.
    async fn write_signature(&self, artifact: &ArtifactRef, signature: Vec<u8>, metadata: Vec<u8>) -> Result<()>;

    /// Writes a new artifact. `AlreadyExists` when the folder holds any file: a published
    /// version is immutable. Readers never observe a partly written artifact: `artifacts()`
    /// lists it only once all three files are in place.
    async fn publish(
        &self,
        artifact: &ArtifactRef,
        image: Vec<u8>,
        sha256_file: String,
        metadata: Vec<u8>,
    ) -> Result<()>;

    /// Every version that has a folder for `device_type`, highest first.
    async fn versions(&self, device_type: &DeviceType) -> Result<Vec<FirmwareVersion>> {
        let mut v: Vec<FirmwareVersion> =
            self.artifacts().await?.into_iter().filter(|a| &a.device_type == device_type).map(|a| a.version).collect();
        v.sort_by(|a, b| b.cmp(a));
        Ok(v)
    }
}

/// The device registry: things, their type and group, and what their shadows report.
#[async_trait]
pub trait DeviceRegistry: Send + Sync + std::fmt::Debug + 'static {
    /// Devices matching `query`, sorted by thing name.
    async fn list(&self, query: &DeviceQuery) -> Result<Vec<Device>>;

    /// One device, or `None`.
    async fn get(&self, thing: &ThingName) -> Result<Option<Device>>;

    /// Creates or replaces a device record (registration, or a shadow report).
    async fn upsert(&self, device: Device) -> Result<()>;

    /// Creates or replaces many records; backends that can make it one transaction do.
    async fn upsert_many(&self, devices: Vec<Device>) -> Result<()> {
        for d in devices {
            self.upsert(d).await?;
        }
        Ok(())
    }

    /// The distinct device types of registered devices, sorted.
    async fn device_types(&self) -> Result<Vec<DeviceType>>;

    /// Sets the operational state of one device, leaving every other field as it is (a shadow
    /// report in between is kept). Returns the updated record; `NotFound` for an unknown
    /// thing. Backends that can make it one statement do; the default reads and writes back.
    async fn set_state(&self, thing: &ThingName, state: crate::device::OperationalState) -> Result<Device> {
        let mut d = self.get(thing).await?.ok_or_else(|| crate::Error::not_found("device", thing.as_str()))?;
        d.state = state;
        self.upsert(d.clone()).await?;
        Ok(d)
    }

    /// [`Self::list`] as shared records: what planning reads. A registry that keeps its
    /// records in memory hands out references to them instead of a copy of each (a
    /// whole-fleet plan over a million devices would otherwise copy a million records to
    /// read each once); the default wraps `list`'s copies.
    async fn snapshot(&self, query: &DeviceQuery) -> Result<Vec<Arc<Device>>> {
        Ok(self.list(query).await?.into_iter().map(Arc::new).collect())
    }
}

/// How long telemetry history is kept unless configured otherwise: 7 days.
pub const TELEMETRY_RETENTION_DAYS: i64 = 7;

/// The largest telemetry message accepted: 8 KiB of JSON.
pub const MAX_TELEMETRY_BYTES: usize = 8 * 1024;

/// One telemetry report of one device: metric → value (a JSON object), and when.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TelemetryPoint {
    pub thing: ThingName,
    pub at: chrono::DateTime<chrono::Utc>,
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl TelemetryPoint {
    /// Reads what a device published on `dt/ota/{thing}/telemetry` (or reported as
    /// `state.reported.telemetry`): a JSON object of at most [`MAX_TELEMETRY_BYTES`], either
    /// of metric → value or `{"values": {...}, "at": "RFC 3339"}`. `received` is its time when
    /// it carries none. Anything else is `Invalid`, naming why.
    pub fn parse(thing: &ThingName, payload: &[u8], received: chrono::DateTime<chrono::Utc>) -> Result<Self> {
        if payload.len() > MAX_TELEMETRY_BYTES {
            return Err(crate::Error::invalid(
                "telemetry",
                format!("{} bytes from {thing}", payload.len()),
                format!("telemetry is at most {MAX_TELEMETRY_BYTES} bytes"),
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| crate::Error::invalid("telemetry", format!("from {thing}"), format!("not JSON: {e}")))?;
        let t = crate::device::Telemetry::from_reported(&value, received).ok_or_else(|| {
            crate::Error::invalid("telemetry", format!("from {thing}"), "telemetry is a JSON object of metric -> value")
        })?;
        Ok(TelemetryPoint { thing: thing.clone(), at: t.at, values: t.values })
    }
}

/// A query over the telemetry history of one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TelemetryQuery {
    pub thing: ThingName,
    /// Only points that carry this metric, with only it in their values.
    #[serde(default)]
    pub metric: Option<String>,
    /// From this time, inclusive.
    #[serde(default)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Up to this time, exclusive.
    #[serde(default)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many points: the newest ones (still returned oldest first).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl TelemetryQuery {
    /// Every point of `thing`.
    pub fn of(thing: ThingName) -> Self {
        TelemetryQuery { thing, metric: None, since: None, until: None, limit: None }
    }

    /// Whether `p` is in the time range and device (the metric is applied by [`Self::narrow`]).
    pub fn selects(&self, p: &TelemetryPoint) -> bool {
        p.thing == self.thing
            && self.since.is_none_or(|s| p.at >= s)
            && self.until.is_none_or(|u| p.at < u)
            && self.metric.as_ref().is_none_or(|m| p.values.contains_key(m))
    }

    /// `p` with only the queried metric (unchanged without one).
    pub fn narrow(&self, mut p: TelemetryPoint) -> TelemetryPoint {
        if let Some(m) = &self.metric {
            p.values.retain(|k, _| k == m);
        }
        p
    }
}

/// Telemetry history: what devices report, by device and time, kept for a retention period.
#[async_trait]
pub trait TelemetryStore: Send + Sync + std::fmt::Debug + 'static {
    /// Appends points. Each is checked again (at most [`MAX_TELEMETRY_BYTES`] as JSON, an
    /// object): `Invalid` for any bad one, and then none is stored. Appending also drops the
    /// device's points older than the retention before the newest appended one.
    async fn append(&self, points: Vec<TelemetryPoint>) -> Result<()>;

    /// The points `query` selects, oldest first (ties in append order).
    async fn query(&self, query: &TelemetryQuery) -> Result<Vec<TelemetryPoint>>;

    /// Drops every point before `before`; returns how many.
    async fn prune(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64>;

    /// How long points are kept: [`TELEMETRY_RETENTION_DAYS`] unless the backend is configured otherwise.
    fn retention(&self) -> chrono::Duration {
        chrono::Duration::days(TELEMETRY_RETENTION_DAYS)
    }
}

/// Checks points before any is stored: what every [`TelemetryStore::append`] refuses.
pub fn check_telemetry(points: &[TelemetryPoint]) -> Result<()> {
    for p in points {
        let len = serde_json::to_vec(&p.values).map(|v| v.len()).unwrap_or(usize::MAX);
        if len > MAX_TELEMETRY_BYTES {
            return Err(crate::Error::invalid(
                "telemetry",
                format!("{len} bytes from {}", p.thing),
                format!("telemetry is at most {MAX_TELEMETRY_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// The telemetry history of a backend that has none yet (AWS, until its topic rule into
/// DynamoDB exists): appends and queries are refused, saying so; the last telemetry is still
/// in each device's record.
#[derive(Debug, Default)]
pub struct NoTelemetryHistory;

#[async_trait]
impl TelemetryStore for NoTelemetryHistory {
    async fn append(&self, _points: Vec<TelemetryPoint>) -> Result<()> {
        Err(crate::Error::Refused("this backend keeps no telemetry history (only each device's last telemetry)".into()))
    }
    async fn query(&self, _query: &TelemetryQuery) -> Result<Vec<TelemetryPoint>> {
        Err(crate::Error::Refused("this backend keeps no telemetry history (only each device's last telemetry)".into()))
    }
    async fn prune(&self, _before: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        Ok(0)
    }
}

/// The per-type config gate.
#[async_trait]
pub trait ConfigStore: Send + Sync + std::fmt::Debug + 'static {
    /// The record for a type, or `None` when the type was never configured.
    async fn get(&self, device_type: &DeviceType) -> Result<Option<TypeConfig>>;

    /// Creates or replaces the record for `config.device_type`.
    async fn put(&self, config: TypeConfig) -> Result<()>;

    /// Every record, sorted by type.
    async fn list(&self) -> Result<Vec<TypeConfig>>;
}

/// Stored rollouts.
#[async_trait]
pub trait RolloutStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new rollout, atomically with two checks: `AlreadyExists` when the id is taken,
    /// `Conflict` naming the active rollout when one is active for the same device type. On
    /// error nothing is stored.
    async fn create(&self, rollout: &Rollout) -> Result<()>;

    /// One rollout; `NotFound` when the id is unknown.
    async fn get(&self, id: &JobId) -> Result<Rollout>;

    /// Rollouts matching `query`, newest first (ties broken by id).
    async fn list(&self, query: &RolloutQuery) -> Result<Vec<Rollout>>;

    /// Moves an active rollout to `status` (`Canceled`, `Aborted` or `Completed`) with a
    /// reason, atomically. `NotFound` for an unknown id, `Conflict` when it already ended,
    /// then `Invalid` when `status` is `InProgress`. Returns the updated rollout.
    async fn finish(
        &self,
        id: &JobId,
        status: RolloutStatus,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Rollout>;
}

/// Stored command runs ([`crate::commands`]): the executions of each, paced and timed out by
/// [`crate::commands::CommandRun::advance`]'s rules, answered by devices.
#[async_trait]
pub trait CommandStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new run (its executions `QUEUED`). `AlreadyExists` when the id is taken; on
    /// error nothing is stored.
    async fn create(&self, run: &CommandRun) -> Result<()>;

    /// One run with its executions; `NotFound` for an unknown id.
    async fn get(&self, id: &str) -> Result<CommandRun>;

    /// Runs matching `query`, newest first (ties broken by id).
    async fn list(&self, query: &CommandQuery) -> Result<Vec<CommandRun>>;

    /// Cancels an active run: executions not sent are `CANCELED`. `NotFound` for an unknown
    /// id, `Conflict` when it already ended. Returns the updated run.
    async fn cancel(&self, id: &str, reason: &str, at: chrono::DateTime<chrono::Utc>) -> Result<CommandRun>;

    /// Advances every run at `now` as [`CommandRun::advance`] does (timeouts, abort, pacing,
    /// completion) and returns the executions that are now due to be sent, which the caller
    /// delivers. A backend that delivers them itself (AWS: StartCommandExecution) returns none.
    async fn advance(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Dispatch>>;

    /// Records `thing`'s answer to `execution_id` ([`CommandRun::respond`]). `Ok(true)` when it
    /// changed the execution, `Ok(false)` when it was already over. `NotFound` for an unknown
    /// execution or one of another device: a device answers only its own.
    async fn respond(
        &self,
        thing: &ThingName,
        execution_id: &str,
        response: &crate::command::CommandResponse,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool>;

    /// Whether [`Self::advance`] delivers what it sends itself (AWS), so the service may call
    /// it after a start and on a read. `false` (the default): a jobs engine delivers them,
    /// and only it advances runs.
    fn delivers_itself(&self) -> bool {
        false
    }
}

/// The append-only audit trail.
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug + 'static {
    /// Appends an entry and returns its sequence number, greater than every earlier one.
    async fn append(&self, entry: AuditEntry) -> Result<u64>;

    /// The newest `limit` entries, newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>>;
}

/// One backend: an implementation of every port.
#[derive(Debug, Clone)]
pub struct Backend {
    pub catalog: Arc<dyn FirmwareCatalog>,
    pub registry: Arc<dyn DeviceRegistry>,
    pub config: Arc<dyn ConfigStore>,
    pub rollouts: Arc<dyn RolloutStore>,
    pub audit: Arc<dyn AuditLog>,
    /// Telemetry history.
    pub telemetry: Arc<dyn TelemetryStore>,
    /// Command runs.
    pub commands: Arc<dyn CommandStore>,
}
