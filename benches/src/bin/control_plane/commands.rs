//! `--commands`: the command fan-out. How long ota's local server takes to send `reboot` to
//! every device of a fleet and hear each answer, against a broker-only baseline in the same
//! run (issue 16: "`reboot` to 10,000 simulated devices over the embedded endpoint until all
//! have answered: seconds and commands per minute").
//!
//! ```text
//! cargo run --release -p ota-benches --bin control_plane -- --commands --devices 10000
//! ```
//!
//! The world is the rollout bench's (one type, N registered devices, the policy with
//! `max_in_flight` = `--max-in-flight`, 1,000 by default, the policy's maximum), and its
//! firmware declares `reboot`. Each simulated device runs the agent's command machine beside
//! its update machine (see `fleet`): it answers `reboot` with `SUCCEEDED` (reason `REBOOTING`,
//! the machine's) on `.../executions/{id}/response/json` first, then restarts after the
//! agent's one-second grace: it closes its connection, boots the same image into fresh
//! machines and reconnects, subscribing, reporting its shadows and asking `$next/get` again.
//!
//! 1. Engine: the embedded endpoint and the jobs engine wired as `ota serve` wires them; N
//!    devices connect and go idle; `reboot` to every device of the type is planned
//!    (`FleetManager::plan_command`, which must target all N) with the longest timeout (one
//!    day), then timed from `FleetManager::start_command` until `FleetManager::command_run`
//!    reports the run no longer active. The engine paces the run by the policy (each tick, and
//!    at once when an answer frees a slot) and records each answer in SQLite. The run must end
//!    `COMPLETED` with every execution `SUCCEEDED`, or the bench fails. While the devices
//!    have not all answered (the fleet process counts the answers it sent, asked every 50
//!    ms) the run is read once a second (a read of N executions is not free); once they all
//!    have, every 50 ms, so the end is seen within about 50 ms of the engine recording it
//!    (`run_recorded_s` in the JSON is the run's own `ended_at - created_at`).
//! 2. Baseline: a fresh embedded endpoint whose cloud side is the trivial responder below (no
//!    SQLite, no engine, no service), N fresh devices, the same request to each with the same
//!    cap of `max_in_flight` outstanding, each answer acknowledged on
//!    `response/accepted/json` in the engine's shape, and the devices' other messages (their
//!    reconnection after the reboot) answered as the engine answers them; timed from the
//!    first request until the last answer is acknowledged.
//!
//! Not in either figure: the fleet coming up, and the devices' return after their reboot,
//! which goes on after the last answer; its time ("back after reboot") is printed apart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ota_core::command::{CommandRequest, CommandResponse};
use ota_core::commands::{CommandRunStatus, CommandSpec, ExecutionState, MAX_TIMEOUT_SECONDS};
use ota_core::device::DeviceQuery;
use ota_core::names::ThingName;
use ota_core::topics::{
    self, CONFIG_SHADOW, CommandTopic, JobsTopic, NEXT_JOB, Reply, ShadowOp, ShadowTopic, ThingTopic,
};
use ota_local::link::{DeviceEvent, DeviceLink, LinkPublisher};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::fleet::{self, Snapshot};
use crate::{Fleet, Options, Served, World, check_file_limit, endpoint, peak_rss_kib, round, transport, world};

/// The command sent to every device.
const COMMAND: &str = "reboot";
/// How often the end is looked for once every answer is in.
const POLL: Duration = Duration::from_millis(50);
/// How often the run is read while answers are outstanding.
const READ_EVERY: Duration = Duration::from_secs(1);

/// What one phase of the fan-out measured.
#[derive(Debug, Clone)]
struct FanOut {
    name: &'static str,
    /// From the start until every answer was recorded.
    seconds: f64,
    /// Executions that ended `SUCCEEDED`.
    succeeded: u64,
    /// Counters of the timed window only.
    window: Snapshot,
    /// Counters of the whole phase (fleet start to end).
    total: Snapshot,
    fleet_ready_s: f64,
    connected_s: f64,
    /// How long `FleetManager::start_command` itself took (engine only).
    start_call_s: Option<f64>,
    /// The run's own `ended_at - created_at` (engine only).
    run_recorded_s: Option<f64>,
    /// From the start until every device was connected and idle again after its reboot.
    back_s: f64,
    /// Counters from the start until then.
    until_back: Snapshot,
    outcome: String,
}

impl FanOut {
    fn per_minute(&self) -> f64 {
        self.succeeded as f64 * 60.0 / self.seconds
    }

    fn json(&self) -> Value {
        json!({
            "seconds": round(self.seconds, 3),
            "commands_succeeded": self.succeeded,
            "commands_per_minute": round(self.per_minute(), 1),
            "outcome": self.outcome,
            "fleet_ready_s": round(self.fleet_ready_s, 2),
            "connected_s": round(self.connected_s, 2),
            "start_call_s": self.start_call_s.map(|s| round(s, 3)),
            "run_recorded_s": self.run_recorded_s.map(|s| round(s, 3)),
            "back_after_reboot_s": round(self.back_s, 2),
            "window": self.window,
            "until_back": self.until_back,
            "total": self.total,
        })
    }
}

/// `--commands`: the engine phase, then (unless `--no-baseline`) the baseline, then the report.
pub async fn run(o: Options) -> Result<(), String> {
    check_file_limit(&o)?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let machine_start = ota_benches::machine();
    let load_start = ota_benches::load_average();
    eprintln!(
        "control_plane --commands: {COMMAND} to {} devices, max_in_flight {}, {}, {profile} build; {machine_start}",
        o.devices,
        o.max_in_flight,
        transport(o.tls)
    );
    let world = world(&o).await?;
    let (engine, run_id) = engine_phase(&world, &o).await?;
    eprintln!("engine: {} commands answered in {:.2} s", engine.succeeded, engine.seconds);
    let baseline = if o.baseline {
        let b = baseline_phase(&world, &o, &run_id).await?;
        eprintln!("baseline: {} commands answered in {:.2} s", b.succeeded, b.seconds);
        Some(b)
    } else {
        None
    };
    let _ = world.http_stop.send(true);
    let machine_end = ota_benches::machine();
    let load_end = ota_benches::load_average();
    let ratio = baseline.as_ref().map(|b| engine.seconds / b.seconds);

    println!(
        "command fan-out: {COMMAND} to {} devices, max_in_flight {}, timeout {MAX_TIMEOUT_SECONDS} s, {} ({cpus} CPUs, {profile})",
        o.devices,
        o.max_in_flight,
        transport(o.tls)
    );
    println!("  machine: {machine_start} at the start, {machine_end} at the end");
    if let Some(tls) = &world.tls {
        println!("  {} device certificates issued before the run in {:.2} s", o.devices, tls.issue_s);
    }
    let cols: Vec<&FanOut> = std::iter::once(&engine).chain(baseline.as_ref()).collect();
    let row = |label: &str, f: &dyn Fn(&FanOut) -> String| {
        let cells: String = cols.iter().map(|p| format!("{:>12}", f(p))).collect();
        println!("  {label:<46}{cells}");
    };
    row("", &|p| p.name.to_string());
    row("all devices connected (s, not timed)", &|p| format!("{:.2}", p.connected_s));
    row("all devices idle (s, not timed)", &|p| format!("{:.2}", p.fleet_ready_s));
    row("start -> all answered (s)", &|p| format!("{:.2}", p.seconds));
    row("commands SUCCEEDED", &|p| p.succeeded.to_string());
    row("commands per minute", &|p| format!("{:.0}", p.per_minute()));
    row("start -> all back after reboot (s, not timed)", &|p| format!("{:.2}", p.back_s));
    row("MQTT publishes device->cloud", &|p| p.window.publishes_up.to_string());
    row("  payload bytes", &|p| p.window.bytes_up.to_string());
    row("MQTT publishes cloud->device", &|p| p.window.publishes_down.to_string());
    row("  payload bytes", &|p| p.window.bytes_down.to_string());
    let kinds = |f: fn(&FanOut) -> &Snapshot| {
        let all: std::collections::BTreeSet<&String> = cols.iter().flat_map(|p| f(p).by_kind.keys()).collect();
        for kind in all {
            row(&format!("  {kind}"), &|p| f(p).by_kind.get(kind).copied().unwrap_or(0).to_string());
        }
    };
    kinds(|p| &p.window);
    row("MQTT connects (reboots)", &|p| p.window.connects.to_string());
    println!("  from the start until all devices were back (not timed):");
    row("MQTT connects (reboots)", &|p| p.until_back.connects.to_string());
    row("MQTT publishes device->cloud", &|p| p.until_back.publishes_up.to_string());
    row("MQTT publishes cloud->device", &|p| p.until_back.publishes_down.to_string());
    kinds(|p| &p.until_back);
    row("fleet peak RSS (MiB)", &|p| format!("{:.0}", p.total.peak_rss_kib as f64 / 1024.0));
    if let Some(r) = ratio {
        println!("  engine time / baseline time: {r:.2}");
    }
    if let (Some(call), Some(recorded)) = (engine.start_call_s, engine.run_recorded_s) {
        println!("  engine: start_command took {call:.3} s; the run's own ended_at - created_at {recorded:.3} s");
    }
    println!("  server process peak RSS: {:.0} MiB", peak_rss_kib() as f64 / 1024.0);
    println!(
        "{}",
        json!({
            "bench": "control_plane_commands",
            "command": COMMAND,
            "devices": o.devices,
            "max_in_flight": o.max_in_flight,
            "timeout_seconds": MAX_TIMEOUT_SECONDS,
            "tls": o.tls,
            "certificates_issue_s": world.tls.as_ref().map(|t| round(t.issue_s, 2)),
            "engine": engine.json(),
            "baseline": baseline.as_ref().map(FanOut::json),
            "engine_over_baseline_time": ratio.map(|r| round(r, 2)),
            "cpus": cpus,
            "machine_start": machine_start,
            "machine_end": machine_end,
            "load_average_start": load_start,
            "load_average_end": load_end,
            "profile": profile,
            "server_peak_rss_kib": peak_rss_kib(),
        })
    );
    Ok(())
}

/// The engine phase: `reboot` to every device through the service, timed from
/// `start_command` until the run is no longer active; every execution must succeed.
/// Returns the phase and the run's id (the baseline names its executions after it).
async fn engine_phase(world: &World, o: &Options) -> Result<(FanOut, String), String> {
    let n = u64::from(o.devices);
    let served = Served::start(world).await?;
    let (mut fleet, ready) = Fleet::start(world, o, served.addr).await?;
    eprintln!(
        "engine: {} devices connected after {:.2} s, idle after {:.2} s",
        o.devices, ready.connected_s, ready.seconds
    );
    let query = DeviceQuery { device_type: Some(world.device_type.clone()), ..Default::default() };
    let spec =
        CommandSpec { timeout_seconds: Some(MAX_TIMEOUT_SECONDS), ..CommandSpec::to_query(COMMAND, Map::new(), query) };
    let plan = world.svc.plan_command(&world.me, &spec).await.map_err(|e| format!("plan_command: {e}"))?;
    if plan.targets.len() != o.devices as usize {
        let first: Vec<String> = plan.refusals.iter().take(3).map(|r| format!("{}: {}", r.target, r.reason)).collect();
        return Err(format!(
            "the command plan targets {} of the {} devices ({}); first refusals: {}",
            plan.targets.len(),
            o.devices,
            plan.message,
            first.join("; ")
        ));
    }

    let before = fleet.snapshot("snap").await?;
    let t0 = Instant::now();
    let started = world
        .svc
        .start_command(&world.me, &spec, plan.plan_id.as_deref())
        .await
        .map_err(|e| format!("start_command: {e}"))?;
    let start_call_s = t0.elapsed().as_secs_f64();
    let id = started.run.id.clone();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read = Instant::now();
    let mut last_report = Instant::now();
    let run = loop {
        poll.tick().await;
        let answered = fleet.snapshot("snap").await?.command_answers - before.command_answers;
        if answered >= n || last_read.elapsed() >= READ_EVERY {
            last_read = Instant::now();
            let run = world.svc.command_run(&world.me, &id).await.map_err(|e| format!("command_run: {e}"))?;
            if !run.is_active() {
                break run;
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                let c = run.counts();
                eprintln!(
                    "engine: {:.0} s: {} succeeded, {} in flight, {} queued; the devices sent {answered} answers",
                    t0.elapsed().as_secs_f64(),
                    c.succeeded,
                    c.in_flight,
                    c.queued
                );
            }
        }
        if t0.elapsed() > o.timeout {
            return Err(format!("the command run did not end within {:?}", o.timeout));
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let counts = run.counts();
    if run.status != CommandRunStatus::Completed || u64::from(counts.succeeded) != n {
        let failed: Vec<String> = run
            .executions
            .iter()
            .filter(|e| e.state != ExecutionState::Succeeded)
            .take(3)
            .map(|e| format!("{} {} {}", e.thing, e.state, e.reason.as_deref().unwrap_or("")))
            .collect();
        return Err(format!(
            "the command run did not succeed on every device: {}; e.g. {}",
            run.summary(),
            failed.join("; ")
        ));
    }
    let run_recorded_s = run.ended_at.map(|end| (end - run.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6);
    let after = fleet.snapshot("snap").await?;
    let (back_s, back) = wait_back(&mut fleet, &before, t0, n, o.timeout).await?;
    let total = fleet.quit().await?;
    served.stop().await;
    let phase = FanOut {
        name: "engine",
        seconds,
        succeeded: u64::from(counts.succeeded),
        window: after.since(&before),
        total,
        fleet_ready_s: ready.seconds,
        connected_s: ready.connected_s,
        start_call_s: Some(start_call_s),
        run_recorded_s,
        back_s,
        until_back: back.since(&before),
        outcome: run.summary(),
    };
    Ok((phase, id))
}

/// The baseline phase: the same requests through a fresh embedded endpoint, with the trivial
/// responder as the cloud side.
async fn baseline_phase(world: &World, o: &Options, run_id: &str) -> Result<FanOut, String> {
    let n = u64::from(o.devices);
    let (link, addr) = endpoint(world).await?;
    let DeviceLink { events, publisher, handle } = link;
    // Named as the engine names them: `{run id}-{index}`, targets in thing order.
    let executions =
        (1..=o.devices).map(|i| (fleet::thing_name(&world.device_type, i), format!("{run_id}-{}", i - 1))).collect();
    let (start_tx, start_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let responding = tokio::spawn(respond(events, publisher, executions, o.max_in_flight as usize, start_rx, done_tx));

    let (mut fleet, ready) = Fleet::start(world, o, addr).await?;
    eprintln!(
        "baseline: {} devices connected after {:.2} s, idle after {:.2} s",
        o.devices, ready.connected_s, ready.seconds
    );
    let before = fleet.snapshot("snap").await?;
    let t0 = Instant::now();
    let _ = start_tx.send(());
    let (seconds, succeeded) = match tokio::time::timeout(o.timeout, done_rx).await {
        Ok(Ok(Done { at, succeeded })) => (at.duration_since(t0).as_secs_f64(), succeeded),
        Ok(Err(_)) => return Err("the baseline's responder stopped".into()),
        Err(_) => return Err(format!("the baseline did not hear every answer within {:?}", o.timeout)),
    };
    if succeeded != n {
        return Err(format!("the baseline heard {succeeded} SUCCEEDED answers from {n} devices"));
    }
    let after = fleet.snapshot("snap").await?;
    let (back_s, back) = wait_back(&mut fleet, &before, t0, n, o.timeout).await?;
    let total = fleet.quit().await?;
    handle.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), responding).await;
    Ok(FanOut {
        name: "baseline",
        seconds,
        succeeded,
        window: after.since(&before),
        total,
        fleet_ready_s: ready.seconds,
        connected_s: ready.connected_s,
        start_call_s: None,
        run_recorded_s: None,
        back_s,
        until_back: back.since(&before),
        outcome: format!("{succeeded} of {n} SUCCEEDED"),
    })
}

/// Waits until every device is connected and idle again after its reboot: the seconds
/// since `t0`, and the counters then. An error when some are not back within `limit`.
async fn wait_back(
    fleet: &mut Fleet,
    before: &Snapshot,
    t0: Instant,
    n: u64,
    limit: Duration,
) -> Result<(f64, Snapshot), String> {
    loop {
        let now = fleet.snapshot("snap").await?;
        let back = now.back_after_reboot - before.back_after_reboot;
        if back >= n {
            return Ok((t0.elapsed().as_secs_f64(), now));
        }
        if t0.elapsed() > limit {
            return Err(format!("only {back} of {n} devices were back after their reboot within {limit:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the baseline's responder reports once every execution has ended.
#[derive(Debug)]
struct Done {
    /// When the last answer was acknowledged.
    at: Instant,
    succeeded: u64,
}

/// One execution the responder sent or will send.
#[derive(Debug)]
struct Execution {
    thing: ThingName,
    state: ExecutionState,
}

/// The baseline's cloud side: sends the command to `max_in_flight` devices at once (one more
/// each time an answer ends an execution), acknowledges each answer on
/// `response/accepted/json` as the engine does (`{"executionId", "status", "timestamp"}`;
/// `response/rejected/json` for one that is not an answer, another device's or a repeat), and
/// answers what the devices publish when they come back from their reboot as the engine
/// answers it: `$next/get` with no job, the classic shadow's update accepted, the `config`
/// shadow's update accepted and its get rejected (404: the bench firmware has no settings, so
/// the document is empty). No SQLite, no policy, no registry. Runs until the device events end.
async fn respond(
    mut events: mpsc::Receiver<DeviceEvent>,
    publisher: LinkPublisher,
    executions: Vec<(ThingName, String)>,
    max_in_flight: usize,
    start: oneshot::Receiver<()>,
    done: oneshot::Sender<Done>,
) {
    let request = CommandRequest { command: COMMAND.to_string(), parameters: Map::new() }.to_payload().into_bytes();
    let total = executions.len();
    let order: Vec<String> = executions.iter().map(|(_, id)| id.clone()).collect();
    let mut by_id: HashMap<String, Execution> =
        executions.into_iter().map(|(thing, id)| (id, Execution { thing, state: ExecutionState::Queued })).collect();
    let mut next = 0usize;
    let mut in_flight = 0usize;
    let (mut ended, mut succeeded) = (0usize, 0u64);
    let mut versions: HashMap<ThingName, i64> = HashMap::new();
    let mut start = Some(start);
    let mut done = Some(done);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let send_next = |next: &mut usize, by_id: &mut HashMap<String, Execution>, out: &mut Vec<(String, Vec<u8>)>| {
        let Some(id) = order.get(*next) else { return false };
        *next += 1;
        let e = by_id.get_mut(id).expect("every execution is in the map");
        e.state = ExecutionState::Created;
        out.push((CommandTopic::Request.to_topic(e.thing.as_str(), id), request.clone()));
        true
    };
    loop {
        tokio::select! {
            started = async { start.as_mut().expect("guarded").await }, if start.is_some() => {
                start = None;
                if started.is_ok() {
                    while in_flight < max_in_flight && send_next(&mut next, &mut by_id, &mut out) {
                        in_flight += 1;
                    }
                }
            }
            event = events.recv() => {
                let Some(event) = event else { return };
                let DeviceEvent::Message { thing, topic, payload } = event else { continue };
                let now = chrono::Utc::now().timestamp();
                if let Some((who, id, CommandTopic::Response)) = topics::parse_command(&topic) {
                    let reply = |kind: Reply, body: Value| {
                        (CommandTopic::ResponseReply(kind).to_topic(who, id), body.to_string().into_bytes())
                    };
                    let reject = |code: &str, message: String| {
                        reply(Reply::Rejected, json!({"error": code, "errorMessage": message, "executionId": id}))
                    };
                    let response = match CommandResponse::parse(&payload) {
                        Ok(r) => r,
                        Err(e) => {
                            out.push(reject("InvalidRequest", format!("not a command execution response: {e}")));
                            continue;
                        }
                    };
                    match by_id.get_mut(id).filter(|e| e.thing == thing && e.state != ExecutionState::Queued) {
                        None => out.push(reject("ResourceNotFound", format!("no command execution {id} for {thing}"))),
                        Some(e) if e.state.is_terminal() => {
                            let message = format!("the command execution is already {}; the answer changes nothing", e.state);
                            out.push(reject("TerminalStateReached", message));
                        }
                        Some(e) => {
                            e.state = ExecutionState::from(response.status);
                            let body = json!({"executionId": id, "status": e.state.as_str(), "timestamp": now});
                            out.push(reply(Reply::Accepted, body));
                            if e.state.is_terminal() {
                                ended += 1;
                                succeeded += u64::from(e.state == ExecutionState::Succeeded);
                                in_flight -= 1;
                                if send_next(&mut next, &mut by_id, &mut out) {
                                    in_flight += 1;
                                }
                            }
                        }
                    }
                } else if let Some(request) = topics::parse_for(thing.as_str(), &topic) {
                    let token = serde_json::from_slice::<Value>(&payload).ok().and_then(|v| v.get("clientToken").cloned());
                    let with_token = |mut body: Value| {
                        if let Some(t) = &token {
                            body["clientToken"] = t.clone();
                        }
                        body.to_string().into_bytes()
                    };
                    let state = || serde_json::from_slice::<Value>(&payload).ok().and_then(|v| v.get("state").cloned());
                    match request {
                        ThingTopic::Jobs(JobsTopic::Get(NEXT_JOB, None)) => {
                            let body = with_token(json!({"timestamp": now}));
                            out.push((request.with_reply(Reply::Accepted).to_topic(thing.as_str()), body));
                        }
                        ThingTopic::Shadow(ShadowTopic { name: None, op: ShadowOp::Update, reply: None }) => {
                            let version = versions.entry(thing.clone()).or_default();
                            *version += 1;
                            let body = with_token(json!({"state": state(), "version": *version, "timestamp": now}));
                            out.push((request.with_reply(Reply::Accepted).to_topic(thing.as_str()), body));
                        }
                        ThingTopic::Shadow(ShadowTopic { name: Some(CONFIG_SHADOW), op: ShadowOp::Update, reply: None }) => {
                            // Reported and desired stay empty: the document does not change.
                            let body = with_token(json!({"state": state(), "version": 1, "timestamp": now}));
                            out.push((request.with_reply(Reply::Accepted).to_topic(thing.as_str()), body));
                        }
                        ThingTopic::Shadow(ShadowTopic { name: Some(CONFIG_SHADOW), op: ShadowOp::Get, reply: None }) => {
                            let message = format!("No shadow exists with name: '{CONFIG_SHADOW}'");
                            let body = with_token(json!({"code": "404", "message": message, "timestamp": now}));
                            out.push((request.with_reply(Reply::Rejected).to_topic(thing.as_str()), body));
                        }
                        _ => {}
                    }
                }
            }
        }
        for (topic, payload) in out.drain(..) {
            let _ = publisher.publish(topic, payload).await;
        }
        if ended == total
            && let Some(done) = done.take()
        {
            let _ = done.send(Done { at: Instant::now(), succeeded });
        }
    }
}
