//! The commands that run rollouts and watch them: `ota ask`, `ota rollouts watch`, `ota sim`
//! and `ota demo`. Progress is read from the data dir's SQLite file, which the server's jobs
//! engine writes, so watching works from any terminal and Ctrl-C stops only the watching.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ota_core::auth::Caller;
use ota_core::device::Device;
use ota_core::names::{DeviceType, JobId, ThingName};
use ota_core::plan::{Action, Plan};
use ota_core::ports::DeviceRegistry;
use ota_core::rollout::RolloutStatus;
use ota_core::service::FleetManager;
use ota_core::{Error, Result};
use ota_device::host::{FaultRates, FleetConfig, SimDeviceSpec, SimFleet, demo_fleet};
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
        .map_err(|e| Error::invalid("fault rate", format!("{e}"), "each rate is a fraction between 0 and 1"))?;
    demo_fleet(&types, args.devices_per_type, rates, args.seed)
        .map_err(|e| Error::invalid("simulated fleet", format!("{e}"), "check the fleet options"))
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
/// they will report), so plans target them before they first connect.
pub async fn register(svc: &FleetManager, specs: &[SimDeviceSpec]) -> Result<()> {
    let naming = &svc.settings().naming;
    let devices = specs
        .iter()
        .map(|s| Device {
            thing: s.thing.clone(),
            thing_group: naming.thing_group_of(&s.device_type),
            device_type: s.device_type.clone(),
            firmware_version: Some(s.version.clone()),
            connected: false,
            last_seen: None,
        })
        .collect();
    svc.backend().registry.upsert_many(devices).await
}

/// Starts the simulated devices against the MQTT endpoint at `host:port`.
pub fn start_fleet(specs: Vec<SimDeviceSpec>, host: &str, port: u16, creds: DeviceCredentials) -> Result<SimFleet> {
    let creds = Arc::new(creds);
    let config = FleetConfig::new(host, port, Arc::new(move |t: &ThingName| creds.password_for(t)));
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

/// Plans `prompt`; when it is an update or rollback with something to do, starts it.
/// Returns the plan and the started rollout ids.
pub async fn plan_and_start(svc: &FleetManager, me: &Caller, prompt: &str) -> Result<(Plan, Vec<JobId>)> {
    let plan = svc.plan_prompt(me, prompt).await?;
    let startable = matches!(plan.action, Action::Update | Action::Rollback) && !plan.deployments.is_empty();
    let Some(request) = plan.request.clone().filter(|_| startable) else {
        return Ok((plan, Vec::new()));
    };
    let started = svc.start(me, &request, plan.plan_id.as_deref()).await?;
    let ids = started.rollouts.iter().map(|r| r.id.clone()).collect();
    Ok((started.plan, ids))
}

fn settled(p: &RolloutProgress) -> bool {
    p.rollout.status != RolloutStatus::InProgress && p.counts.queued == 0 && p.counts.in_progress == 0
}

/// Follows rollouts until each has ended and its devices are done; with `bars`, draws a
/// progress bar per rollout. Ctrl-C stops the watching (`Ok(None)`), never the rollouts.
pub async fn watch(store: &SqliteStore, ids: &[JobId], bars: bool) -> Result<Option<Vec<RolloutProgress>>> {
    let multi = MultiProgress::new();
    if !bars {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>34} [{bar:30.green/red}] {pos}/{len} {msg}")
        .map_err(|e| Error::storage(e.to_string()))?
        .progress_chars("=> ");
    let mut progress_bars = Vec::new();
    for id in ids {
        let p = store.rollout_progress(id).await?;
        let bar = multi.add(ProgressBar::new(u64::from(p.counts.total)));
        bar.set_style(style.clone());
        bar.set_prefix(format!("{} {}", p.rollout.device_type, p.rollout.version));
        progress_bars.push(bar);
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
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
        if all.iter().all(settled) {
            return Ok(Some(all));
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                for bar in &progress_bars {
                    bar.abandon();
                }
                return Ok(None);
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The outcome table after a watch: every device that did not simply succeed, with its reason.
pub async fn print_summary(store: &SqliteStore, finished: &[RolloutProgress]) -> Result<()> {
    for p in finished {
        let c = &p.counts;
        println!(
            "\n{} ({} {} -> {}): {}",
            p.rollout.id,
            p.rollout.device_type,
            p.rollout.action.as_str(),
            p.rollout.version,
            p.rollout.status.as_str()
        );
        if let Some(reason) = &p.rollout.status_reason {
            println!("  {reason}");
        }
        println!(
            "  succeeded {}, failed {}, rejected {}, timed out {}, canceled {}",
            c.succeeded,
            c.failed,
            c.rejected,
            c.timed_out,
            c.canceled + c.removed
        );
        for e in store.executions(&p.rollout.id).await? {
            if e.status != ExecutionStatus::Succeeded {
                println!("  {:<28} {:<11} {}", e.thing.as_str(), e.status.as_str(), reason_of(&e));
            }
        }
    }
    Ok(())
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

/// `ota ask`: plan, start, watch, summarise.
pub async fn ask(svc: &FleetManager, store: &SqliteStore, me: &Caller, prompt: &str, out: &Output) -> Result<()> {
    let (plan, ids) = plan_and_start(svc, me, prompt).await?;
    if ids.is_empty() {
        out.plan(&plan);
        return Ok(());
    }
    if !out.json {
        out.plan(&plan);
        println!();
    }
    match watch(store, &ids, !out.json).await? {
        Some(finished) if out.json => {
            println!("{}", serde_json::to_string_pretty(&headless_rollouts(&finished)).unwrap_or_default());
        }
        Some(finished) => print_summary(store, &finished).await?,
        None => {
            eprintln!("\nstopped watching; the rollouts keep running on the server. Follow them with:");
            for id in &ids {
                eprintln!("  ota rollouts watch {id}");
            }
        }
    }
    Ok(())
}

/// One rollout in the headless JSON contract.
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
}

pub fn headless_rollouts(finished: &[RolloutProgress]) -> Vec<RolloutReport> {
    finished
        .iter()
        .map(|p| RolloutReport {
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
        })
        .collect()
}

/// The headless demo's JSON: the rollouts, then every simulated device as it runs now.
pub fn headless_report(finished: &[RolloutProgress], fleet: &SimFleet, plan: &Plan) -> serde_json::Value {
    let devices: Vec<serde_json::Value> = fleet
        .snapshot()
        .into_iter()
        .map(|d| {
            json!({"thing": d.thing.as_str(), "device_type": d.device_type.as_str(),
                   "firmware_version": d.firmware_version, "slot_state": d.slot_state, "boots": d.boots})
        })
        .collect();
    let refusals: BTreeMap<String, String> =
        plan.refusals.iter().map(|r| (r.target.clone(), r.reason.clone())).collect();
    json!({"plan_id": plan.plan_id, "message": plan.message, "refusals": refusals,
           "rollouts": headless_rollouts(finished), "devices": devices})
}
