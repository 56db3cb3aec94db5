//! In-memory implementations of every port: the reference behaviour the conformance suite
//! pins down, the backend of unit tests, and the registry of the 1,000,000-device benchmark.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::audit::AuditEntry;
use crate::catalog::{ArtifactRef, CatalogFile};
use crate::commands::{CommandQuery, CommandRun, Dispatch};
use crate::config::TypeConfig;
use crate::device::{Device, DeviceQuery};
use crate::error::{Error, Result};
use crate::names::{DeviceType, JobId, ThingName};
use crate::ports::{
    AuditLog, Backend, ByteStream, CommandStore, ConfigStore, DeviceRegistry, FirmwareCatalog, RolloutStore,
    TelemetryPoint, TelemetryQuery, TelemetryStore, check_telemetry,
};
use crate::rollout::{Rollout, RolloutQuery, RolloutStatus};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh, empty in-memory backend.
pub fn backend() -> Backend {
    Backend {
        catalog: Arc::new(MemoryCatalog::default()),
        registry: Arc::new(MemoryRegistry::default()),
        config: Arc::new(MemoryConfig::default()),
        rollouts: Arc::new(MemoryRollouts::default()),
        audit: Arc::new(MemoryAudit::default()),
        telemetry: Arc::new(MemoryTelemetry::default()),
        commands: Arc::new(MemoryCommands::default()),
    }
}

/// File name → content, for one artifact.
type ArtifactFiles = HashMap<&'static str, Arc<Vec<u8>>>;

/// Catalog files in a map keyed by artifact and file.
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    files: Mutex<BTreeMap<ArtifactRef, ArtifactFiles>>,
}

impl MemoryCatalog {
    /// Writes or removes one file directly, bypassing `publish`'s rules: for tests that need
    /// a corrupt or incomplete catalog.
    pub fn put_raw(&self, artifact: &ArtifactRef, file: CatalogFile, content: Option<Vec<u8>>) {
        let mut files = lock(&self.files);
        let entry = files.entry(artifact.clone()).or_default();
        match content {
            Some(c) => {
                entry.insert(file.file_name(), Arc::new(c));
            }
            None => {
                entry.remove(file.file_name());
            }
        }
    }

    fn read(&self, artifact: &ArtifactRef, file: CatalogFile) -> Result<Arc<Vec<u8>>> {
        lock(&self.files)
            .get(artifact)
            .and_then(|f| f.get(file.file_name()))
            .cloned()
            .ok_or_else(|| Error::not_found(file.file_name(), artifact.key(file)))
    }
}

#[async_trait]
impl FirmwareCatalog for MemoryCatalog {
    async fn artifacts(&self) -> Result<Vec<ArtifactRef>> {
        Ok(lock(&self.files).iter().filter(|(_, f)| !f.is_empty()).map(|(a, _)| a.clone()).collect())
    }

    async fn read_sha256(&self, artifact: &ArtifactRef) -> Result<String> {
        let bytes = self.read(artifact, CatalogFile::Sha256)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::Integrity {
            artifact: artifact.to_string(),
            detail: "firmware.sha256 is not text".into(),
        })
    }

    async fn read_metadata(&self, artifact: &ArtifactRef) -> Result<Vec<u8>> {
        Ok(self.read(artifact, CatalogFile::Metadata)?.to_vec())
    }

    async fn open(&self, artifact: &ArtifactRef) -> Result<ByteStream> {
        let image = self.read(artifact, CatalogFile::Image)?;
        const CHUNK: usize = 64 * 1024;
        let chunks = (0..image.len().div_ceil(CHUNK)).map(move |i| {
            let end = ((i + 1) * CHUNK).min(image.len());
            Ok(image[i * CHUNK..end].to_vec())
        });
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn read_signature(&self, artifact: &ArtifactRef) -> Result<Option<Vec<u8>>> {
        match self.read(artifact, CatalogFile::Signature) {
            Ok(sig) => Ok(Some(sig.to_vec())),
            Err(_) if lock(&self.files).get(artifact).is_some_and(|f| !f.is_empty()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write_signature(&self, artifact: &ArtifactRef, signature: Vec<u8>, metadata: Vec<u8>) -> Result<()> {
        let mut files = lock(&self.files);
        let f = files
            .get_mut(artifact)
            .filter(|f| !f.is_empty())
            .ok_or_else(|| Error::not_found("artifact", artifact.folder()))?;
        f.insert(CatalogFile::Signature.file_name(), Arc::new(signature));
        f.insert(CatalogFile::Metadata.file_name(), Arc::new(metadata));
        Ok(())
    }

    async fn publish(
        &self,
        artifact: &ArtifactRef,
        image: Vec<u8>,
        sha256_file: String,
        metadata: Vec<u8>,
    ) -> Result<()> {
        let mut files = lock(&self.files);
        if files.get(artifact).is_some_and(|f| !f.is_empty()) {
            return Err(Error::published_is_immutable(artifact));
        }
        let mut f = HashMap::new();
        f.insert(CatalogFile::Image.file_name(), Arc::new(image));
        f.insert(CatalogFile::Sha256.file_name(), Arc::new(sha256_file.into_bytes()));
        f.insert(CatalogFile::Metadata.file_name(), Arc::new(metadata));
        files.insert(artifact.clone(), f);
        Ok(())
    }
}

/// Devices in a sorted map, with a count of devices per type.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    devices: Mutex<Devices>,
}

#[derive(Debug, Default)]
struct Devices {
    /// Shared records: a snapshot hands out references, an upsert replaces the record.
    by_thing: BTreeMap<ThingName, Arc<Device>>,
    /// Devices per type, kept with every insert: `device_types` (asked on every plan) reads
    /// a few dozen entries instead of every device.
    types: BTreeMap<DeviceType, usize>,
}

impl Devices {
    fn insert(&mut self, device: Device) {
        *self.types.entry(device.device_type.clone()).or_default() += 1;
        if let Some(old) = self.by_thing.insert(device.thing.clone(), Arc::new(device))
            && let Some(n) = self.types.get_mut(&old.device_type)
        {
            *n -= 1;
            if *n == 0 {
                self.types.remove(&old.device_type);
            }
        }
    }
}

impl MemoryRegistry {
    /// Inserts many devices at once (benchmarks load a million).
    pub fn extend(&self, devices: impl IntoIterator<Item = Device>) {
        let mut map = lock(&self.devices);
        for d in devices {
            map.insert(d);
        }
    }
}

#[async_trait]
impl DeviceRegistry for MemoryRegistry {
    async fn list(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        Ok(lock(&self.devices).by_thing.values().filter(|d| query.matches(d)).map(|d| Device::clone(d)).collect())
    }

    async fn get(&self, thing: &ThingName) -> Result<Option<Device>> {
        Ok(lock(&self.devices).by_thing.get(thing).map(|d| Device::clone(d)))
    }

    async fn upsert(&self, device: Device) -> Result<()> {
        lock(&self.devices).insert(device);
        Ok(())
    }

    async fn snapshot(&self, query: &DeviceQuery) -> Result<Vec<Arc<Device>>> {
        Ok(lock(&self.devices).by_thing.values().filter(|d| query.matches(d)).cloned().collect())
    }

    async fn upsert_many(&self, devices: Vec<Device>) -> Result<()> {
        self.extend(devices);
        Ok(())
    }

    async fn device_types(&self) -> Result<Vec<DeviceType>> {
        Ok(lock(&self.devices).types.keys().cloned().collect())
    }

    async fn set_state(&self, thing: &ThingName, state: crate::device::OperationalState) -> Result<Device> {
        let mut devices = lock(&self.devices);
        let d = devices.by_thing.get_mut(thing).ok_or_else(|| Error::not_found("device", thing.as_str()))?;
        Arc::make_mut(d).state = state;
        Ok(Device::clone(d))
    }
}

#[cfg(test)]
mod registry_tests {
    use super::*;
    use crate::names::NamingConvention;

    fn device(thing: &str, ty: &str) -> Device {
        let device_type = DeviceType::parse(ty).unwrap();
        Device {
            firmware_version: None,
            connected: false,
            last_seen: None,
            ..Device::new(
                ThingName::parse(thing).unwrap(),
                device_type.clone(),
                NamingConvention::default().thing_group_of(&device_type),
            )
        }
    }

    #[test]
    fn device_types_follow_every_insert_and_replacement() {
        let r = MemoryRegistry::default();
        let types = |r: &MemoryRegistry| futures::executor::block_on(r.device_types()).unwrap();
        r.extend([device("pet_feeder-01", "pet_feeder"), device("pet_feeder-02", "pet_feeder")]);
        futures::executor::block_on(r.upsert(device("smart_plug-01", "smart_plug"))).unwrap();
        assert_eq!(types(&r), [DeviceType::parse("pet_feeder").unwrap(), DeviceType::parse("smart_plug").unwrap()]);
        // A record replaced with another type moves its count; a type with none left is gone.
        futures::executor::block_on(r.upsert(device("smart_plug-01", "pet_feeder"))).unwrap();
        assert_eq!(types(&r), [DeviceType::parse("pet_feeder").unwrap()]);
        futures::executor::block_on(r.upsert(device("pet_feeder-01", "pet_feeder"))).unwrap();
        assert_eq!(types(&r), [DeviceType::parse("pet_feeder").unwrap()], "the same type again counts once");
    }
}

/// Type configs in a sorted map.
#[derive(Debug, Default)]
pub struct MemoryConfig {
    configs: Mutex<BTreeMap<DeviceType, TypeConfig>>,
}

#[async_trait]
impl ConfigStore for MemoryConfig {
    async fn get(&self, device_type: &DeviceType) -> Result<Option<TypeConfig>> {
        Ok(lock(&self.configs).get(device_type).cloned())
    }

    async fn put(&self, config: TypeConfig) -> Result<()> {
        lock(&self.configs).insert(config.device_type.clone(), config);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<TypeConfig>> {
        Ok(lock(&self.configs).values().cloned().collect())
    }
}

/// Rollouts in a map; one lock makes `create`'s two checks atomic.
#[derive(Debug, Default)]
pub struct MemoryRollouts {
    rollouts: Mutex<BTreeMap<JobId, Rollout>>,
}

#[async_trait]
impl RolloutStore for MemoryRollouts {
    async fn create(&self, rollout: &Rollout) -> Result<()> {
        let mut map = lock(&self.rollouts);
        if map.contains_key(&rollout.id) {
            return Err(Error::already_exists("rollout", rollout.id.as_str()));
        }
        if let Some(active) = map.values().find(|r| r.device_type == rollout.device_type && r.status.is_active()) {
            return Err(Error::active_rollout(&active.id, &rollout.device_type));
        }
        map.insert(rollout.id.clone(), rollout.clone());
        Ok(())
    }

    async fn get(&self, id: &JobId) -> Result<Rollout> {
        lock(&self.rollouts).get(id).cloned().ok_or_else(|| Error::not_found("rollout", id.as_str()))
    }

    async fn list(&self, query: &RolloutQuery) -> Result<Vec<Rollout>> {
        let mut out: Vec<Rollout> = lock(&self.rollouts).values().filter(|r| query.matches(r)).cloned().collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        if let Some(limit) = query.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    async fn finish(
        &self,
        id: &JobId,
        status: RolloutStatus,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Rollout> {
        let mut map = lock(&self.rollouts);
        let r = map.get_mut(id).ok_or_else(|| Error::not_found("rollout", id.as_str()))?;
        if !r.status.is_active() {
            return Err(Error::Conflict(format!("rollout {id} already ended ({})", r.status.as_str())));
        }
        if status.is_active() {
            return Err(Error::invalid(
                "rollout status",
                status.as_str(),
                "a rollout can only finish as COMPLETED, CANCELED or ABORTED",
            ));
        }
        r.status = status;
        r.status_reason = Some(reason.to_string());
        r.updated_at = at;
        Ok(r.clone())
    }
}

/// Audit entries in a vector.
#[derive(Debug, Default)]
pub struct MemoryAudit {
    entries: Mutex<Vec<AuditEntry>>,
}

#[async_trait]
impl AuditLog for MemoryAudit {
    async fn append(&self, mut entry: AuditEntry) -> Result<u64> {
        let mut entries = lock(&self.entries);
        entry.seq = entries.len() as u64 + 1;
        let seq = entry.seq;
        entries.push(entry);
        Ok(seq)
    }

    async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        Ok(lock(&self.entries).iter().rev().take(limit).cloned().collect())
    }
}

/// Telemetry history per device, in time order.
#[derive(Debug, Default)]
pub struct MemoryTelemetry {
    points: Mutex<BTreeMap<ThingName, Vec<TelemetryPoint>>>,
}

#[async_trait]
impl TelemetryStore for MemoryTelemetry {
    async fn append(&self, points: Vec<TelemetryPoint>) -> Result<()> {
        check_telemetry(&points)?;
        let retention = self.retention();
        let mut map = lock(&self.points);
        let mut newest: BTreeMap<ThingName, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
        for p in points {
            let n = newest.entry(p.thing.clone()).or_insert(p.at);
            *n = (*n).max(p.at);
            let v = map.entry(p.thing.clone()).or_default();
            // Stable: points of one time keep their append order.
            let at = v.partition_point(|q| q.at <= p.at);
            v.insert(at, p);
        }
        for (thing, at) in newest {
            if let Some(v) = map.get_mut(&thing) {
                v.retain(|p| p.at >= at - retention);
            }
        }
        Ok(())
    }

    async fn query(&self, query: &TelemetryQuery) -> Result<Vec<TelemetryPoint>> {
        let map = lock(&self.points);
        let mut out: Vec<TelemetryPoint> = map
            .get(&query.thing)
            .map(|v| v.iter().filter(|p| query.selects(p)).cloned().map(|p| query.narrow(p)).collect())
            .unwrap_or_default();
        if let Some(limit) = query.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        Ok(out)
    }

    async fn prune(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let mut map = lock(&self.points);
        let mut n = 0;
        for v in map.values_mut() {
            let len = v.len();
            v.retain(|p| p.at >= before);
            n += (len - v.len()) as u64;
        }
        Ok(n)
    }
}

/// Command runs in a map, advanced in place.
#[derive(Debug, Default)]
pub struct MemoryCommands {
    runs: Mutex<BTreeMap<String, CommandRun>>,
}

#[async_trait]
impl CommandStore for MemoryCommands {
    async fn create(&self, run: &CommandRun) -> Result<()> {
        let mut runs = lock(&self.runs);
        if runs.contains_key(&run.id) {
            return Err(Error::AlreadyExists { what: "command run", name: run.id.clone(), hint: String::new() });
        }
        runs.insert(run.id.clone(), run.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<CommandRun> {
        lock(&self.runs).get(id).cloned().ok_or_else(|| Error::not_found("command run", id))
    }

    async fn list(&self, query: &CommandQuery) -> Result<Vec<CommandRun>> {
        let mut out: Vec<CommandRun> = lock(&self.runs).values().filter(|r| query.matches(r)).cloned().collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        if let Some(l) = query.limit {
            out.truncate(l);
        }
        Ok(out)
    }

    async fn cancel(&self, id: &str, reason: &str, at: chrono::DateTime<chrono::Utc>) -> Result<CommandRun> {
        let mut runs = lock(&self.runs);
        let run = runs.get_mut(id).ok_or_else(|| Error::not_found("command run", id))?;
        run.cancel(reason, at)?;
        Ok(run.clone())
    }

    async fn advance(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Dispatch>> {
        let mut runs = lock(&self.runs);
        let mut out = Vec::new();
        for run in runs.values_mut() {
            if run.is_active() || run.executions.iter().any(|e| e.state.in_flight()) {
                out.extend(run.advance(now));
            }
        }
        Ok(out)
    }

    async fn respond(
        &self,
        thing: &ThingName,
        execution_id: &str,
        response: &crate::command::CommandResponse,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        let mut runs = lock(&self.runs);
        let run = runs
            .values_mut()
            .find(|r| r.executions.iter().any(|e| e.execution_id == execution_id && &e.thing == thing))
            .ok_or_else(|| Error::not_found("command execution", format!("{execution_id} of {thing}")))?;
        run.respond(execution_id, response, at)
    }
}
