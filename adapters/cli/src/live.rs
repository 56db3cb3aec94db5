//! The commands that run rollouts and watch them: `ota ask`, `ota rollouts watch`, `ota sim`
//! and `ota demo`. Progress is read from the data dir's SQLite file, which the server's jobs
//! engine writes, so watching works from any terminal and Ctrl-C stops only the watching.
//!
//! `ota ask` and `ota demo --headless` start through [`FleetManager::ask`] (the one "plan these
//! words and start them" of every front door) and never wait forever: they return when every
//! rollout has ended, when only devices that are not connected are left (their updates wait
//! until they connect, as on AWS), or after `--wait`; the summary names the devices still
//! waiting and the exit status says which happened ([`EXIT_STATUS_HELP`]). A command prompt
//! ("Reboot pet_feeder-03") starts one command run instead, followed through
//! [`FleetManager::command_run`] until every execution is over or `--wait` elapsed; its JSON
//! lists each execution under `commands`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ota_core::auth::Caller;
use ota_core::commands::{CommandRun, CommandRunStatus};
use ota_core::device::{Device, DeviceQuery};
use ota_core::names::{DeviceType, JobId, ThingName};
use ota_core::plan::Plan;
use ota_core::ports::DeviceRegistry;
use ota_core::rollout::{RolloutQuery, RolloutStatus};
use ota_core::service::{FleetManager, StartItem, StartResult};
use ota_core::{Error, Result};
use ota_device::host::{DeviceTlsIdentity, FaultRates, FleetConfig, SimDeviceSpec, SimFleet, demo_fleet};
use ota_local::link::DeviceCredentials;
use ota_local::{Execution, ExecutionStatus, RolloutProgress, SqliteStore};
use serde::Serialize;
use serde_json::json;

use crate::cli::FleetArgs;
use crate::render::Output;

/// The simulated fleet `args` describes, with its faults drawn from the seed.
pub fn fleet_specs(args: &FleetArgs) -> Result<Vec<SimDeviceSpec>> {
    let types = match &args.types {
        Some(list) => list.split(',').map(|t| DeviceType::parse(t.trim())).collect::<Result<Vec<_>>>()?,
        None => ota_core::demo::device_types(),
    };
    let known = ota_core::demo::device_types();
    if let Some(unknown) = types.iter().find(|t| !known.contains(t)) {
        return Err(Error::not_found_hint("demo device type", unknown.to_string(), "see `ota firmware list`"));
    }
    if args.devices_per_type == 0 {
        return Err(Error::invalid("--devices-per-type", "0", "must be at least 1"));
    }
    let rates = FaultRates::new(args.corrupt_rate, args.boot_failure_rate, args.drop_rate)
        .and_then(|r| r.with_tamper(args.tamper_rate))
        .map_err(|e| Error::invalid("fault rate", format!("{e}"), "each rate is a fraction between 0 and 1"))?;
    let mut specs = demo_fleet(&types, args.devices_per_type, rates, args.seed)
        .map_err(|e| Error::invalid("simulated fleet", format!("{e}"), "check the fleet options"))?;
    if !args.connect_offline {
        // The demo world's offline devices stay offline: commands to them are refused and
        // rollouts wait for them, as for a real device out of reach.
        specs.retain(|s| !ota_core::demo::OFFLINE.contains(&s.thing.as_str()));
    }
    Ok(specs)
}

/// Simulated devices keep their firmware across runs the way real ones do: a device the
/// registry already knows starts on the version it last reported, not the demo's.
pub async fn resume_versions(svc: &FleetManager, specs: &mut [SimDeviceSpec]) -> Result<()> {
    for s in specs.iter_mut() {
        if let Some(v) = svc.backend().registry.get(&s.thing).await?.and_then(|d| d.firmware_version) {
            s.version = v;
        }
    }
    Ok(())
}

/// Registers the simulated devices (the thing group from the naming convention, the version
/// they will report), so plans target them before they first connect. A device the registry
/// knows keeps its record (location, health, state, telemetry, configuration, last seen), as
/// a real device's would; it is marked not connected until it connects.
pub async fn register(svc: &FleetManager, specs: &[SimDeviceSpec]) -> Result<()> {
    let naming = &svc.settings().naming;
    let mut devices = Vec::new();
    for s in specs {
        let device = match svc.backend().registry.get(&s.thing).await? {
            Some(known) => Device { firmware_version: Some(s.version.clone()), connected: false, ..known },
            None => Device {
                firmware_version: Some(s.version.clone()),
                connected: false,
                last_seen: None,
                ..Device::new(s.thing.clone(), s.device_type.clone(), naming.thing_group_of(&s.device_type))
            },
        };
        devices.push(device);
    }
    svc.backend().registry.upsert_many(devices).await
}

/// What the simulated devices trust and refuse: the data dir's trusted keys (a real device
/// has them built into its firmware) and each image's security version, for their floors.
#[derive(Debug, Clone, Default)]
pub struct DeviceTrust {
    pub keys: ota_core::signing::KeyRing,
    pub security_versions: BTreeMap<(DeviceType, ota_core::version::FirmwareVersion), u32>,
    pub min_floor: u32,
}

/// The [`DeviceTrust`] of the service's settings and catalog for the types of `specs`.
pub async fn device_trust(svc: &FleetManager, specs: &[SimDeviceSpec], min_floor: u32) -> Result<DeviceTrust> {
    let keys = svc.settings().signing.key_ring()?;
    let mut security_versions = BTreeMap::new();
    let types: BTreeSet<&DeviceType> = specs.iter().map(|s| &s.device_type).collect();
    for t in types {
        for (v, sv) in svc.security_versions(t).await? {
            security_versions.insert((t.clone(), v), sv);
        }
    }
    Ok(DeviceTrust { keys, security_versions, min_floor })
}

/// Where `ota sim --tls` keeps its devices' certificates, inside the data dir: one folder per
/// thing with `cert.pem`, `key.pem` (owner-only) and `serial` (written last: a folder without
/// it is incomplete and issued again).
pub const SIM_CERTS_DIR: &str = "sim-certs";

/// The TLS identities of a simulated fleet, from the data dir's CA.
#[derive(Debug, Default)]
pub struct SimTls {
    pub identities: BTreeMap<ThingName, DeviceTlsIdentity>,
    /// How many certificates were issued now (0 when every device had one cached).
    pub issued: usize,
    /// Things whose cached certificate is revoked (`ota devices revoke`) and that have no other
    /// good one: they keep it, and the endpoint refuses them.
    pub revoked: Vec<ThingName>,
    /// Things revoked without a cached certificate: they are not started (a new certificate
    /// would undo the revocation).
    pub not_started: Vec<ThingName>,
}

/// Certificates for `things` from the data dir's CA: the cached one of each thing when the CA's
/// ledger knows it and has not revoked it; a new one, all in one ledger write, for things
/// without a usable cached one, so the ledger does not grow on every run. A revoked thing is
/// never issued a new certificate here (see [`SimTls`]); `ota devices enroll` re-admits it.
pub fn sim_tls(data_dir: &std::path::Path, things: &[ThingName]) -> Result<SimTls> {
    use ota_local::pki::LocalCa;
    let ca = LocalCa::load_or_create(data_dir).map_err(|e| Error::storage(format!("the device CA: {e}")))?;
    let ledger = ca.certificates().map_err(|e| Error::storage(format!("the device CA's ledger: {e}")))?;
    // serial -> revoked; thing -> whether it has a good certificate.
    let revoked_serial: BTreeMap<&str, bool> =
        ledger.iter().map(|c| (c.serial.as_str(), c.revoked_at.is_some())).collect();
    let mut has_good = BTreeSet::new();
    let mut has_any = BTreeSet::new();
    for c in &ledger {
        has_any.insert(c.thing.as_str());
        if c.revoked_at.is_none() {
            has_good.insert(c.thing.as_str());
        }
    }
    let root = data_dir.join(SIM_CERTS_DIR);
    let mut out = SimTls::default();
    let mut to_issue = Vec::new();
    for thing in things {
        let dir = root.join(thing.as_str());
        let cached = (|| -> Option<(String, String, String)> {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
            Some((read("serial")?.trim().to_string(), read("cert.pem")?, read("key.pem")?))
        })();
        let revoked_thing = has_any.contains(thing.as_str()) && !has_good.contains(thing.as_str());
        match cached {
            Some((serial, cert_pem, key_pem)) if revoked_serial.get(serial.as_str()) == Some(&false) => {
                out.identities.insert(thing.clone(), identity(&ca, cert_pem, key_pem));
            }
            Some((serial, cert_pem, key_pem))
                if revoked_serial.get(serial.as_str()) == Some(&true) && revoked_thing =>
            {
                out.revoked.push(thing.clone());
                out.identities.insert(thing.clone(), identity(&ca, cert_pem, key_pem));
            }
            None if revoked_thing => out.not_started.push(thing.clone()),
            // Nothing cached, a cached certificate the ledger does not know (another CA), or a
            // revoked one of a thing enrolled again since.
            _ => to_issue.push(thing.clone()),
        }
    }
    if !to_issue.is_empty() {
        let bundles = ca
            .issue_devices(&to_issue)
            .map_err(|e| Error::storage(format!("cannot issue the simulated devices' certificates: {e}")))?;
        out.issued = bundles.len();
        for (thing, b) in to_issue.into_iter().zip(bundles) {
            cache_certificate(&root.join(thing.as_str()), &b)?;
            out.identities
                .insert(thing, DeviceTlsIdentity { ca_pem: b.ca_pem, cert_pem: b.cert_pem, key_pem: b.key_pem });
        }
    }
    Ok(out)
}

fn identity(ca: &ota_local::pki::LocalCa, cert_pem: String, key_pem: String) -> DeviceTlsIdentity {
    DeviceTlsIdentity { ca_pem: ca.ca_pem().to_string(), cert_pem, key_pem }
}

/// Writes a simulated device's certificate into `dir` (0700): the key owner-only, the serial
/// last.
fn cache_certificate(dir: &std::path::Path, b: &ota_local::pki::DeviceBundle) -> Result<()> {
    let fail =
        |what: &std::path::Path, e: std::io::Error| Error::storage(format!("cannot write {}: {e}", what.display()));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| fail(dir, e))?;
    // A leftover serial from an earlier certificate must not vouch for the new files.
    let serial = dir.join("serial");
    match std::fs::remove_file(&serial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(&serial, e)),
        _ => {}
    }
    for (name, contents, private) in
        [("key.pem", &b.key_pem, true), ("cert.pem", &b.cert_pem, false), ("serial", &b.serial, false)]
    {
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        options
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, contents.as_bytes()))
            .map_err(|e| fail(&path, e))?;
    }
    Ok(())
}

/// Starts the simulated devices against the MQTT endpoint at `host:port`: with their
/// passwords over plain TCP, or, given `tls`, over mutual TLS with their certificates.
pub fn start_fleet(
    specs: Vec<SimDeviceSpec>,
    host: &str,
    port: u16,
    creds: DeviceCredentials,
    trust: DeviceTrust,
    tls: Option<BTreeMap<ThingName, DeviceTlsIdentity>>,
) -> Result<SimFleet> {
    let creds = Arc::new(creds);
    let mut config = FleetConfig::new(host, port, Arc::new(move |t: &ThingName| creds.password_for(t)));
    if let Some(tls) = tls {
        let tls = Arc::new(tls);
        config.tls_for = Some(Arc::new(move |t: &ThingName| tls.get(t).cloned()));
    }
    config.trust = trust.keys;
    config.security_versions = Arc::new(trust.security_versions);
    config.min_security_floor = trust.min_floor;
    SimFleet::start(specs, config).map_err(|e| Error::storage(format!("cannot start the simulated fleet: {e}")))
}

/// Waits until every simulated device is connected and has reported the version it runs.
pub async fn wait_reported(store: &SqliteStore, specs: &[SimDeviceSpec], timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut missing = 0;
        for s in specs {
            let d = DeviceRegistry::get(store, &s.thing).await?;
            if !d.is_some_and(|d| d.connected && d.last_seen.is_some()) {
                missing += 1;
            }
        }
        if missing == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::storage(format!("{missing} simulated devices did not connect within {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `ota ask` and `ota demo --headless` wait for at most, by default (`--wait`).
pub const DEFAULT_WAIT_SECS: u64 = 600;

/// Exit status: a rollout aborted or was canceled, or a device failed, was rejected or timed out.
pub const EXIT_FAILED: u8 = 3;
/// Exit status: returned while devices still wait (only offline ones left, `--wait`, Ctrl-C).
pub const EXIT_WAITING: u8 = 4;

/// The exit statuses of `ota ask` and `ota demo --headless`, for their `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  every rollout it started or found running ended and every device succeeded, or there
     was nothing to start (the plan says why)
  1  an error, or the start was refused (nothing changed)
  3  a rollout aborted or was canceled, or a device failed, was rejected or timed out
     (also when other devices still wait)
  4  returned while devices still wait: only devices that are not connected are left (their
     updates start when they connect), --wait elapsed, or Ctrl-C. The rollouts keep running
     on the server; follow them with `ota rollouts watch ID`.";

/// How long devices must look offline-only before watching stops: a device rebooting into
/// its new image is in progress, not queued, but a connection event may lag a poll.
const OFFLINE_GRACE: Duration = Duration::from_secs(2);

/// How a watch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// There was nothing to start (`ota ask` only): the plan says why.
    NothingStarted,
    /// The start was refused for every deployment: nothing changed.
    Refused,
    /// Every rollout ended and its devices are done.
    Ended,
    /// Only devices that are not connected (and have not started) are left.
    OnlyOfflineLeft,
    /// `--wait` elapsed first.
    WaitElapsed,
    /// Ctrl-C.
    Interrupted,
}

/// What a watch waits for.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Return after this long at most; `None`: until the rollouts end.
    pub wait: Option<Duration>,
    /// Return when only devices that are not connected are left.
    pub until_only_offline: bool,
    /// Draw a progress bar per rollout.
    pub bars: bool,
}

/// The rollouts as the watch left them, and why it stopped.
#[derive(Debug)]
pub struct Watched {
    pub progress: Vec<RolloutProgress>,
    pub end: End,
}

fn settled(p: &RolloutProgress) -> bool {
    p.rollout.status != RolloutStatus::InProgress && p.counts.queued == 0 && p.counts.in_progress == 0
}

/// Whether every device still to do in the unsettled rollouts is queued (not started) and not
/// connected: then nothing more happens until one connects.
async fn only_offline_left(store: &SqliteStore, all: &[RolloutProgress]) -> Result<bool> {
    if all.iter().any(|p| p.counts.in_progress > 0) {
        return Ok(false);
    }
    let connected: BTreeSet<ThingName> =
        DeviceRegistry::list(store, &DeviceQuery { connected: Some(true), ..Default::default() })
            .await?
            .into_iter()
            .map(|d| d.thing)
            .collect();
    for p in all.iter().filter(|p| !settled(p)) {
        let left: Vec<Execution> =
            store.executions(&p.rollout.id).await?.into_iter().filter(|e| !e.status.is_terminal()).collect();
        // A rollout whose devices are all done is about to end: wait for it.
        if left.is_empty() || left.iter().any(|e| e.status != ExecutionStatus::Queued || connected.contains(&e.thing)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Follows rollouts until each has ended and its devices are done, or until what `how` allows;
/// with `how.bars`, draws a progress bar per rollout. A rollout that aborted with
/// `revert_on_abort` is followed until its reverts are done, and each revert is followed too.
/// Ctrl-C stops the watching, never the rollouts.
pub async fn watch(svc: &FleetManager, store: &SqliteStore, ids: &[JobId], how: Watch) -> Result<Watched> {
    // Following is reading: a viewer may do it.
    let me = Caller::new("ota-cli-watch", [ota_core::auth::Role::Viewer]);
    let mut ids = ids.to_vec();
    let multi = MultiProgress::new();
    if !how.bars {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>34} [{bar:30.green/red}] {pos}/{len} {msg}")
        .map_err(|e| Error::storage(e.to_string()))?
        .progress_chars("=> ");
    let bar_for = |p: &RolloutProgress| {
        let bar = multi.add(ProgressBar::new(u64::from(p.counts.total)));
        bar.set_style(style.clone());
        let revert = if p.rollout.revert_of.is_some() { " (revert)" } else { "" };
        bar.set_prefix(format!("{} {}{revert}", p.rollout.device_type, p.rollout.version));
        bar
    };
    let mut progress_bars = Vec::new();
    for id in &ids {
        progress_bars.push(bar_for(&store.rollout_progress(id).await?));
    }
    let deadline = how.wait.map(|w| tokio::time::Instant::now() + w);
    let mut offline_since: Option<tokio::time::Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let stop = |bars: &[ProgressBar], progress, end| {
        for bar in bars {
            bar.abandon();
        }
        Ok(Watched { progress, end })
    };
    loop {
        let mut all = Vec::new();
        for (id, bar) in ids.iter().zip(&progress_bars) {
            let p = store.rollout_progress(id).await?;
            let c = &p.counts;
            bar.set_position(u64::from(c.finished()));
            bar.set_message(format!(
                "{} ok, {} failed, {} updating, {} queued, {} canceled  {}",
                c.succeeded,
                c.failed + c.rejected + c.timed_out,
                c.in_progress + c.queued,
                c.waiting,
                c.canceled + c.removed,
                p.rollout.status.as_str().to_lowercase()
            ));
            if settled(&p) {
                bar.finish();
            }
            all.push(p);
        }
        // Reverts of aborted rollouts join the watch as the engine starts them.
        let mut owed = false;
        for p in all.iter().filter(|p| p.rollout.status == RolloutStatus::Aborted && p.rollout.policy.revert_on_abort) {
            owed |= svc.revert_pending(&me, &p.rollout.id).await?;
            let q = RolloutQuery { device_type: Some(p.rollout.device_type.clone()), ..Default::default() };
            for r in ota_core::ports::RolloutStore::list(store, &q).await? {
                if r.revert_of.as_ref() == Some(&p.rollout.id) && !ids.contains(&r.id) {
                    progress_bars.push(bar_for(&store.rollout_progress(&r.id).await?));
                    ids.push(r.id);
                    owed = true;
                }
            }
        }
        if all.iter().all(settled) && !owed {
            return Ok(Watched { progress: all, end: End::Ended });
        }
        if how.until_only_offline && only_offline_left(store, &all).await? {
            let since = *offline_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= OFFLINE_GRACE {
                return stop(&progress_bars, all, End::OnlyOfflineLeft);
            }
        } else {
            offline_since = None;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return stop(&progress_bars, all, End::WaitElapsed);
        }
        tokio::select! {
            _ = &mut ctrl_c => return stop(&progress_bars, all, End::Interrupted),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The outcome table after a watch: every device that did not simply succeed, with its reason
/// (for a device still waiting: whether it is connected, and when it was last seen).
pub async fn print_summary(store: &SqliteStore, finished: &[RolloutProgress]) -> Result<()> {
    for p in finished {
        let c = &p.counts;
        outln!(
            "\n{} ({} {} -> {}): {}",
            p.rollout.id,
            p.rollout.device_type,
            p.rollout.action.as_str(),
            p.rollout.version,
            p.rollout.status.as_str()
        );
        if let Some(reason) = &p.rollout.status_reason {
            outln!("  {reason}");
        }
        if let Some(of) = &p.rollout.revert_of {
            outln!("  reverts the devices {of} had moved when it aborted");
        }
        outln!(
            "  succeeded {}, failed {}, rejected {}, timed out {}, canceled {}, waiting {}",
            c.succeeded,
            c.failed,
            c.rejected,
            c.timed_out,
            c.canceled + c.removed,
            c.waiting + c.queued + c.in_progress
        );
        for e in store.executions(&p.rollout.id).await? {
            if e.status == ExecutionStatus::Succeeded {
                continue;
            }
            let why = if e.status.is_terminal() {
                reason_of(&e)
            } else {
                connection_of(DeviceRegistry::get(store, &e.thing).await?.as_ref())
            };
            let line = format!("  {:<28} {:<11} {why}", e.thing.as_str(), e.status.as_str());
            outln!("{}", line.trim_end());
        }
    }
    Ok(())
}

fn connection_of(d: Option<&Device>) -> String {
    match d {
        Some(d) if d.connected => "connected".into(),
        Some(Device { last_seen: Some(t), .. }) => format!("not connected, last seen {}", seen(t)),
        _ => "not connected, never seen".into(),
    }
}

fn seen(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn reason_of(e: &Execution) -> String {
    let d = &e.status_details;
    match (d.get("reason").and_then(|v| v.as_str()), d.get("detail").and_then(|v| v.as_str())) {
        (Some(r), Some(detail)) => format!("{r}: {detail}"),
        (Some(r), None) => r.to_string(),
        _ if e.status == ExecutionStatus::Canceled => "canceled before it started".into(),
        _ => String::new(),
    }
}

/// One device's execution as every front door lists it: `{"thing", "status", "reason"}`, the
/// reason being the code the device reported (`sha256_mismatch`, `boot_failed`, ...).
pub fn device_execution(e: &Execution) -> ota_http::DeviceExecution {
    ota_http::DeviceExecution {
        thing: e.thing.clone(),
        status: e.status.as_str().to_string(),
        reason: e.reason.clone(),
    }
}

/// One rollout in the headless JSON contract, with each device's execution.
#[derive(Debug, Serialize)]
pub struct RolloutReport {
    pub job_id: String,
    pub device_type: String,
    pub version: String,
    pub status: String,
    pub succeeded: u32,
    pub failed: u32,
    pub canceled: u32,
    pub timed_out: u32,
    pub rejected: u32,
    pub total: u32,
    pub reason: Option<String>,
    /// Set on a revert: the aborted rollout whose moved devices it returns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert_of: Option<String>,
    pub executions: Vec<ota_http::DeviceExecution>,
}

pub async fn headless_rollouts(store: &SqliteStore, finished: &[RolloutProgress]) -> Result<Vec<RolloutReport>> {
    let mut out = Vec::new();
    for p in finished {
        let executions = store.executions(&p.rollout.id).await?.iter().map(device_execution).collect();
        out.push(RolloutReport {
            job_id: p.rollout.id.to_string(),
            device_type: p.rollout.device_type.to_string(),
            version: p.rollout.version.to_string(),
            status: p.rollout.status.as_str().to_lowercase(),
            succeeded: p.counts.succeeded,
            failed: p.counts.failed,
            canceled: p.counts.canceled + p.counts.removed,
            timed_out: p.counts.timed_out,
            rejected: p.counts.rejected,
            total: p.counts.total,
            reason: p.rollout.status_reason.clone(),
            revert_of: p.rollout.revert_of.as_ref().map(ToString::to_string),
            executions,
        });
    }
    Ok(out)
}

/// A device a rollout still waits for when watching stopped.
#[derive(Debug, Clone, Serialize)]
pub struct WaitingDevice {
    pub thing: ThingName,
    pub rollout_id: JobId,
    pub status: String,
    pub connected: bool,
    pub last_seen: Option<DateTime<Utc>>,
}

async fn waiting_devices(store: &SqliteStore, progress: &[RolloutProgress]) -> Result<Vec<WaitingDevice>> {
    let mut out = Vec::new();
    for p in progress.iter().filter(|p| !settled(p)) {
        for e in store.executions(&p.rollout.id).await? {
            if e.status.is_terminal() {
                continue;
            }
            let d = DeviceRegistry::get(store, &e.thing).await?;
            out.push(WaitingDevice {
                rollout_id: p.rollout.id.clone(),
                status: e.status.as_str().to_string(),
                connected: d.as_ref().is_some_and(|d| d.connected),
                last_seen: d.and_then(|d| d.last_seen),
                thing: e.thing,
            });
        }
    }
    Ok(out)
}

/// What `ota ask` and `ota demo --headless` print with `--json`.
#[derive(Debug, Serialize)]
pub struct AskReport {
    pub plan_id: Option<String>,
    pub message: String,
    pub refusals: BTreeMap<String, String>,
    /// The service's words for what the start did, or the plan's message when nothing started.
    pub summary: String,
    /// Per deployment: started, already running (since), or refused.
    pub items: Vec<StartItem>,
    /// Only the rollouts this request started or found running, never an ended one.
    pub rollouts: Vec<RolloutReport>,
    /// Devices still to do when watching stopped.
    pub waiting: Vec<WaitingDevice>,
    pub result: End,
    pub exit_code: u8,
    /// The whole plan (`ota ask`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Every simulated device as it runs now (`ota demo --headless`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<serde_json::Value>>,
    /// The command run a command prompt started (or found running), when it was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_run: Option<String>,
    /// Each device's execution of that command run, as watching left it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandReport>,
}

/// One device's execution of a command run in the headless JSON contract.
#[derive(Debug, Clone, Serialize)]
pub struct CommandReport {
    pub execution_id: String,
    pub thing: ThingName,
    pub command: String,
    /// `QUEUED`, `CREATED`, `IN_PROGRESS`, `SUCCEEDED`, `FAILED`, `REJECTED`, `TIMED_OUT` or
    /// `CANCELED`.
    pub status: String,
    /// The device's reason (`reasonDescription`, else its `reasonCode`), or ota's for a
    /// timeout or cancel.
    pub reason: Option<String>,
}

impl CommandReport {
    fn of(run: &CommandRun) -> Vec<Self> {
        run.executions
            .iter()
            .map(|e| CommandReport {
                execution_id: e.execution_id.clone(),
                thing: e.thing.clone(),
                command: run.command.clone(),
                status: e.state.as_str().to_string(),
                reason: e.reason.clone().or_else(|| e.reason_code.clone()),
            })
            .collect()
    }
}

impl AskReport {
    fn new(plan: &Plan, items: Vec<StartItem>, summary: String, result: End) -> Self {
        AskReport {
            plan_id: plan.plan_id.clone(),
            message: plan.message.clone(),
            refusals: plan.refusals.iter().map(|r| (r.target.clone(), r.reason.clone())).collect(),
            summary,
            items,
            rollouts: Vec::new(),
            waiting: Vec::new(),
            result,
            exit_code: match result {
                End::Refused => 1,
                _ => 0,
            },
            plan: Some(plan.clone()),
            devices: None,
            command_run: None,
            commands: Vec::new(),
        }
    }
}

/// The exit status of a watch that ended with `end` over `rollouts` (see [`EXIT_STATUS_HELP`]).
fn exit_code(end: End, rollouts: &[RolloutReport]) -> u8 {
    let failed = rollouts.iter().any(|r| r.status != "completed" && r.status != "in_progress")
        || rollouts.iter().any(|r| r.failed + r.rejected + r.timed_out > 0);
    match end {
        End::NothingStarted => 0,
        End::Refused => 1,
        _ if failed => EXIT_FAILED,
        End::Ended => 0,
        End::OnlyOfflineLeft | End::WaitElapsed | End::Interrupted => EXIT_WAITING,
    }
}

/// Asks the service to plan `prompt` and start it, and follows what it started (or found
/// running) until it ended, only offline devices are left, or `wait` elapsed. With
/// `print_progress`, prints the plan, each item and progress bars as it goes.
pub async fn ask_and_follow(
    svc: &FleetManager,
    store: &SqliteStore,
    me: &Caller,
    prompt: &str,
    wait: Duration,
    print_progress: bool,
    out: &Output,
) -> Result<(AskReport, Vec<RolloutProgress>)> {
    let asked = svc.ask(me, prompt, true, None).await?;
    if let Some(start) = asked.command {
        if print_progress {
            out.plan(&asked.plan);
            outln!();
            outln!("{}", start.message);
        }
        let (run, end) = follow_command(svc, me, &start.run.id, wait).await?;
        let mut report = AskReport::new(&asked.plan, Vec::new(), run.summary(), end);
        report.command_run = Some(run.id.clone());
        report.commands = CommandReport::of(&run);
        report.exit_code = command_exit_code(end, &run);
        return Ok((report, Vec::new()));
    }
    let Some(started) = asked.started else {
        if print_progress {
            out.plan(&asked.plan);
        }
        let summary = asked.plan.message.clone();
        return Ok((AskReport::new(&asked.plan, Vec::new(), summary, End::NothingStarted), Vec::new()));
    };
    if print_progress {
        out.plan(&started.plan);
        outln!();
        if started.nothing_changed() {
            outln!("Refused, nothing changed:");
        }
        for item in &started.items {
            outln!("{}", item.summary());
        }
    }
    if started.nothing_changed() {
        return Ok((AskReport::new(&started.plan, started.items.clone(), started.summary(), End::Refused), Vec::new()));
    }
    let ids: Vec<JobId> = started
        .items
        .iter()
        .filter(|i| !matches!(i.result, StartResult::Refused { .. }))
        .map(|i| i.rollout_id.clone())
        .collect();
    let how = Watch { wait: Some(wait), until_only_offline: true, bars: print_progress };
    let watched = watch(svc, store, &ids, how).await?;
    let mut report = AskReport::new(&started.plan, started.items.clone(), started.summary(), watched.end);
    report.rollouts = headless_rollouts(store, &watched.progress).await?;
    report.waiting = waiting_devices(store, &watched.progress).await?;
    report.exit_code = exit_code(watched.end, &report.rollouts);
    Ok((report, watched.progress))
}

/// Follows command run `id` until it is over (every execution answered, timed out or
/// canceled), `wait` elapsed, or Ctrl-C; the run as it was then and why watching stopped.
/// The engine delivers the executions and applies their timeouts; this only reads.
pub async fn follow_command(svc: &FleetManager, me: &Caller, id: &str, wait: Duration) -> Result<(CommandRun, End)> {
    let deadline = tokio::time::Instant::now() + wait;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let run = svc.command_run(me, id).await?;
        let over = run.executions.iter().all(|e| e.state.is_terminal());
        if !run.is_active() && over {
            return Ok((run, End::Ended));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((run, End::WaitElapsed));
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok((run, End::Interrupted)),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The exit status of a followed command run (see [`EXIT_STATUS_HELP`]): 0 when it completed
/// and every device succeeded, 3 when it aborted or was canceled or a device failed, was
/// rejected or timed out, 4 when watching stopped first.
fn command_exit_code(end: End, run: &CommandRun) -> u8 {
    let failed = matches!(run.status, CommandRunStatus::Aborted | CommandRunStatus::Canceled)
        || run.executions.iter().any(|e| e.state.is_failure());
    match end {
        _ if failed => EXIT_FAILED,
        End::Ended => 0,
        End::NothingStarted => 0,
        End::Refused => 1,
        End::OnlyOfflineLeft | End::WaitElapsed | End::Interrupted => EXIT_WAITING,
    }
}

/// The closing lines after a followed command: each device's execution, and how it ended.
fn print_command_ending(report: &AskReport, wait: Duration) {
    outln!();
    for c in &report.commands {
        let line = format!("  {:<28} {:<11} {}", c.thing.as_str(), c.status, c.reason.as_deref().unwrap_or_default());
        outln!("{}", line.trim_end());
    }
    let id = report.command_run.as_deref().unwrap_or_default();
    match report.result {
        End::Ended if report.exit_code == 0 => outln!("\nThe command ran; every device succeeded."),
        End::Ended => outln!("\nThe command run ended, not on every device as asked (see above)."),
        End::WaitElapsed | End::Interrupted | End::OnlyOfflineLeft => {
            let why = if report.result == End::Interrupted {
                "stopped watching (Ctrl-C)".to_string()
            } else {
                format!("stopped waiting after {} s (--wait)", wait.as_secs())
            };
            outln!("\nReturned: {why}. The command run keeps going on the server; follow it with:");
            outln!("  ota commands show {id}");
        }
        End::NothingStarted | End::Refused => {}
    }
}

/// The closing lines after a watch: why it stopped and which devices still wait.
pub fn print_ending(report: &AskReport, wait: Duration) {
    if report.command_run.is_some() {
        print_command_ending(report, wait);
        return;
    }
    let n = report.waiting.len();
    let devices: Vec<String> = report
        .waiting
        .iter()
        .take(20)
        .map(|w| {
            let how = if w.connected {
                format!("{}, connected", w.status)
            } else {
                match &w.last_seen {
                    Some(t) => format!("not connected, last seen {}", seen(t)),
                    None => "not connected, never seen".to_string(),
                }
            };
            format!("{} ({how})", w.thing)
        })
        .collect();
    let more = if n > devices.len() { format!(" and {} more", n - devices.len()) } else { String::new() };
    let still = format!("{n} device{} still waiting: {}{more}", if n == 1 { "" } else { "s" }, devices.join(", "));
    let why = match report.result {
        End::NothingStarted | End::Refused => return,
        End::Ended => {
            if report.exit_code == 0 {
                outln!("\nEvery rollout ended; every device succeeded.");
            } else {
                outln!("\nEvery rollout ended, not all of them as asked (see above).");
            }
            return;
        }
        End::OnlyOfflineLeft => "only devices that are not connected are left; their updates start when they connect",
        End::WaitElapsed => &format!("stopped waiting after {} s (--wait)", wait.as_secs()),
        End::Interrupted => "stopped watching (Ctrl-C)",
    };
    outln!("\nReturned: {why}. {still}.");
    let ids: BTreeSet<&str> = report.waiting.iter().map(|w| w.rollout_id.as_str()).collect();
    outln!("The rollouts keep running on the server; follow them with:");
    for id in ids {
        outln!("  ota rollouts watch {id}");
    }
}

/// `ota ask`: plan, start, watch, summarise; returns the exit status.
pub async fn ask(
    svc: &FleetManager,
    store: &SqliteStore,
    me: &Caller,
    prompt: &str,
    wait: Duration,
    out: &Output,
) -> Result<u8> {
    let (report, progress) = ask_and_follow(svc, store, me, prompt, wait, !out.json, out).await?;
    if out.json {
        outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print_summary(store, &progress).await?;
        print_ending(&report, wait);
    }
    Ok(report.exit_code)
}

/// The headless demo's JSON: the report without the whole plan, with every simulated device as
/// it runs now.
pub fn with_devices(mut report: AskReport, fleet: &SimFleet) -> AskReport {
    report.plan = None;
    let devices: Vec<serde_json::Value> = fleet
        .snapshot()
        .into_iter()
        .map(|d| {
            json!({"thing": d.thing.as_str(), "device_type": d.device_type.as_str(),
                   "firmware_version": d.firmware_version, "slot_state": d.slot_state, "boots": d.boots})
        })
        .collect();
    report.devices = Some(devices);
    report
}
