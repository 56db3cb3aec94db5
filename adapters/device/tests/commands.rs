//! Commands end to end: the service plans and starts them, the local jobs engine paces and
//! delivers them over a real transport, and the simulated fleet (the real agent on every
//! device, `ota_device::host::SimFleet`) answers them; nothing is mocked. Each scenario runs
//! over the embedded endpoint, and again through Debian's mosquitto (configured only with
//! the files `write_mosquitto_files` generates) with the engine as its privileged client.
//!
//! What is checked: `reboot` paced by the type's in-flight limit (2 over 6 plugs, never more
//! than 2 sent and unanswered at any sample) and counted as a boot by each device;
//! `identify` and `recalibrate`; `update_config` applied and reported in the `config` shadow,
//! a value the device's firmware bounds refuse REJECTED naming the key, one the catalog's
//! declaration refuses never sent; a device that never answers TIMED_OUT; the same command
//! again once it ended, a new run.
//!
//! The mosquitto run happens when `OTA_TEST_MOSQUITTO=1` (with mosquitto installed); without
//! it the test says it skipped (under `CI` it fails).

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use ota_core::auth::{Caller, Role};
use ota_core::command::{SAMPLE_RATE, SettingSpec};
use ota_core::commands::{CommandRun, CommandRunStatus, CommandSpec, ExecutionState, run_id};
use ota_core::device::{Device, DeviceQuery, LOCATION};
use ota_core::names::{DeviceType, NamingConvention, ThingName};
use ota_core::policy::RolloutPolicy;
use ota_core::ports::DeviceRegistry;
use ota_core::service::{FleetManager, PublishRequest, Settings};
use ota_core::version::FirmwareVersion;
use ota_device::host::{FleetConfig, SimDeviceSpec, SimFleet};
use ota_local::jobs::{DeviceInput, DevicePublisher, EngineOptions, JobsEngine};
use ota_local::link::{
    DeviceCredentials, DeviceEvent, DeviceLink, LinkPublisher, embedded, external, write_mosquitto_files,
};
use ota_local::{EngineContext, SqliteStore};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

const PLUGS: u32 = 6;
const MONITORS: u32 = 3;
/// Registered and online as far as the registry knows, but nothing runs it: it never answers.
const SILENT: &str = "smart_plug-09";
/// The catalog declares `sample_rate_seconds` up to this; the devices' firmware takes 3600.
const CATALOG_MAX_RATE: i64 = 100_000;
const WAIT: Duration = Duration::from_secs(60);

fn ty(s: &str) -> DeviceType {
    DeviceType::parse(s).unwrap()
}

fn thing(s: &str) -> ThingName {
    ThingName::parse(s).unwrap()
}

fn plugs() -> Vec<ThingName> {
    (1..=PLUGS).map(|n| thing(&format!("smart_plug-{n:02}"))).collect()
}

fn monitors() -> Vec<ThingName> {
    (1..=MONITORS).map(|n| thing(&format!("co2_monitor-{n:02}"))).collect()
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// The engine's replies go out on the link.
struct LinkOut(LinkPublisher);

#[async_trait]
impl DevicePublisher for LinkOut {
    async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        self.0.publish(topic, payload).await.map_err(|e| e.to_string())
    }
}

/// mosquitto, started here with ota's password and ACL files.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CLOUD_USER: &str = "ota-cloud";
const CLOUD_PASSWORD: &str = "cloud-secret";

/// `None` when the mosquitto run is not enabled; panics when it is and mosquitto cannot run.
fn mosquitto(creds: &DeviceCredentials, things: &[ThingName]) -> Option<Mosquitto> {
    if std::env::var("OTA_TEST_MOSQUITTO").ok().as_deref() != Some("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed: apt-get install mosquitto); .ci/run does"
        );
        println!("skipped: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed) to run the commands over mosquitto");
        return None;
    }
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("OTA_TEST_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)");
    let dir = tempfile::tempdir().unwrap();
    let files = write_mosquitto_files(dir.path(), creds, things, CLOUD_USER, CLOUD_PASSWORD).unwrap();
    // A free port can be taken between probing and mosquitto's bind: retried on a new one.
    let mut last = String::new();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.path().join("mosquitto.conf");
        // `user root`: as root, mosquitto would otherwise drop to its own user before reading
        // the owner-only password file; as any other user the line is ignored.
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\nuser root\n",
            files.password_file.display(),
            files.acl_file.display()
        );
        std::fs::write(&conf, text).unwrap();
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let up = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Err(format!("mosquitto exited at start: {status}"));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
                match child.try_wait() {
                    Ok(Some(status)) => break Err(format!("mosquitto exited at start: {status}")),
                    _ => break Ok(()),
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break Err(format!("mosquitto did not listen on {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        match up {
            Ok(()) => return Some(Mosquitto { child, port, _dir: dir }),
            Err(e) => last = e,
        }
    }
    panic!("OTA_TEST_MOSQUITTO=1 but mosquitto would not start: {last}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Embedded,
    Mosquitto,
}

/// The local backend, the service over it, the engine, a transport and the simulated fleet.
struct World {
    svc: Arc<FleetManager>,
    store: Arc<SqliteStore>,
    fleet: Option<SimFleet>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    link: Option<ota_local::link::LinkHandle>,
    _broker: Option<Mosquitto>,
    _dir: tempfile::TempDir,
}

fn admin() -> Caller {
    Caller::new("admin", [Role::Admin])
}

fn operator() -> Caller {
    Caller::new("operator", [Role::Operator])
}

/// What the catalog's firmware 1.0.0 of `t` declares: the demo declarations, with a
/// `sample_rate_seconds` bound wider than the one the device's own firmware checks.
fn declarations(t: &DeviceType) -> BTreeMap<String, Value> {
    let mut caps = ota_core::demo::capabilities(t);
    caps.settings.insert(SAMPLE_RATE.to_string(), SettingSpec::integer(1, CATALOG_MAX_RATE, 60));
    let mut out = BTreeMap::new();
    out.insert("commands".to_string(), json!(caps.commands));
    out.insert("settings".to_string(), serde_json::to_value(&caps.settings).unwrap());
    out
}

impl World {
    /// Everything up, every simulated device connected and reporting. `None` when the
    /// transport is mosquitto and that run is not enabled.
    async fn start(transport: Transport) -> Option<World> {
        let creds = DeviceCredentials::from_secret([21; 32]);
        let simulated: Vec<ThingName> = plugs().into_iter().chain(monitors()).collect();
        let mut all = simulated.clone();
        all.push(thing(SILENT));
        let broker = match transport {
            Transport::Embedded => None,
            Transport::Mosquitto => Some(mosquitto(&creds, &all)?),
        };

        let dir = tempfile::tempdir().unwrap();
        let (backend, store) = ota_local::open_local(dir.path()).unwrap();
        let svc = Arc::new(FleetManager::new(backend, Settings::default()).unwrap());
        let admin = admin();
        for t in [ty("smart_plug"), ty("co2_monitor")] {
            let request = PublishRequest {
                image: format!("{t} 1.0.0 ").repeat(200).into_bytes(),
                release_notes: String::new(),
                device_type: t.clone(),
                version: FirmwareVersion::new(1, 0, 0),
                built_at: None,
                extra: declarations(&t),
            };
            svc.publish_firmware(&admin, request).await.unwrap();
        }
        // The plugs' commands are paced two at a time.
        let pacing = RolloutPolicy { max_in_flight: 2, ..Default::default() };
        svc.set_policy(&admin, &ty("smart_plug"), Some(pacing)).await.unwrap();
        let naming = NamingConvention::default();
        let records = all.iter().map(|t| {
            let (device_type, _) = t.conventional_parts().unwrap();
            let mut d = Device {
                firmware_version: Some(FirmwareVersion::new(1, 0, 0)),
                // The silent one is online as far as the registry knows; the others say so
                // themselves once they connect.
                connected: t.as_str() == SILENT,
                last_seen: None,
                ..Device::new(t.clone(), device_type.clone(), naming.thing_group_of(&device_type))
            };
            d.attributes.insert(LOCATION.into(), "factory-floor-1/line-7".into());
            d
        });
        store.upsert_many(records.collect()).await.unwrap();

        let (link, host, port): (DeviceLink, String, u16) = match &broker {
            None => {
                let (link, addr) = embedded("127.0.0.1:0".parse().unwrap(), Arc::new(creds.clone())).await.unwrap();
                (link, "127.0.0.1".into(), addr.port())
            }
            Some(b) => {
                let url = format!("mqtt://{CLOUD_USER}:{CLOUD_PASSWORD}@127.0.0.1:{}", b.port);
                (
                    external(&url, "ota-cloud-commands").await.expect("the engine connects to mosquitto"),
                    "127.0.0.1".into(),
                    b.port,
                )
            }
        };
        let DeviceLink { mut events, publisher, handle } = link;
        let ctx = EngineContext {
            firmware_url: Arc::new(|v, t, _| format!("http://127.0.0.1:1/firmwares/v{v}/{t}/firmware.bin")),
        };
        let options =
            EngineOptions { tick: Duration::from_millis(50), service: Some(svc.clone()), ..Default::default() };
        let engine = JobsEngine::new(store.clone(), ctx, options);
        let (stop, shutdown) = watch::channel(false);
        let (input, input_rx) = mpsc::channel(1024);
        let pump = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let message = match event {
                    DeviceEvent::Connected { thing } => DeviceInput::Connected(thing),
                    DeviceEvent::Disconnected { thing } => DeviceInput::Disconnected(thing),
                    DeviceEvent::Message { thing, topic, payload } => DeviceInput::Message { thing, topic, payload },
                };
                if input.send(message).await.is_err() {
                    break;
                }
            }
        });
        let running = tokio::spawn(engine.run(input_rx, Arc::new(LinkOut(publisher)), shutdown));

        let password = Arc::new(creds);
        let mut config = FleetConfig::new(&host, port, Arc::new(move |t: &ThingName| password.password_for(t)));
        config.poll_interval = Duration::from_millis(20);
        config.reboot_grace = Duration::from_millis(150);
        config.reconnect_delay = Duration::from_millis(200);
        config.keep_alive = Duration::from_secs(5);
        config.start_interval = Duration::from_millis(5);
        config.stop_timeout = Duration::from_secs(10);
        config.slot_size = 4 << 20;
        let specs = simulated
            .iter()
            .map(|t| SimDeviceSpec {
                thing: t.clone(),
                device_type: t.conventional_parts().unwrap().0.clone(),
                version: FirmwareVersion::new(1, 0, 0),
                faults: Default::default(),
            })
            .collect();
        let fleet = SimFleet::start(specs, config).unwrap();
        let world = World {
            svc,
            store,
            fleet: Some(fleet),
            stop,
            tasks: vec![pump, running],
            link: Some(handle),
            _broker: broker,
            _dir: dir,
        };
        world.ready(&simulated, &BTreeMap::new()).await;
        Some(world)
    }

    fn fleet(&self) -> &SimFleet {
        self.fleet.as_ref().unwrap()
    }

    /// Waits until every one of `things` is online in the registry and has reported
    /// telemetry (after its time in `since`, when there is one): a device reports after it has
    /// subscribed, so it then receives what is published to it.
    async fn ready(&self, things: &[ThingName], since: &BTreeMap<ThingName, chrono::DateTime<Utc>>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let devices = self.store.list(&DeviceQuery::default()).await.unwrap();
            let waiting: Vec<&str> = things
                .iter()
                .filter(|t| {
                    !devices.iter().any(|d| {
                        &d.thing == *t
                            && d.connected
                            && d.telemetry.as_ref().is_some_and(|tm| since.get(*t).is_none_or(|s| tm.at > *s))
                    })
                })
                .map(|t| t.as_str())
                .collect();
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {WAIT:?}: {waiting:?}; fleet: {:?}",
                self.fleet().snapshot()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Plans `spec`, starts exactly that plan, and follows its run until every execution has
    /// ended; returns it with the most executions seen sent and unanswered at one sample.
    async fn run(&self, spec: &CommandSpec) -> (CommandRun, usize) {
        let op = operator();
        let plan = self.svc.plan_command(&op, spec).await.unwrap();
        let started = self.svc.start_command(&op, spec, plan.plan_id.as_deref()).await.unwrap();
        assert!(started.created, "{}", started.message);
        let deadline = Instant::now() + WAIT;
        let mut most = 0;
        loop {
            let run = self.svc.command_run(&op, &started.run.id).await.unwrap();
            most = most.max(run.executions.iter().filter(|e| e.state.in_flight()).count());
            if !run.is_active() && run.executions.iter().all(|e| e.state.is_terminal()) {
                return (run, most);
            }
            assert!(Instant::now() < deadline, "not over within {WAIT:?}: {}", run.summary());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        let fleet = self.fleet.take().unwrap();
        let left = tokio::task::spawn_blocking(move || fleet.stop()).await.unwrap();
        assert_eq!(left, 0, "every device thread ended");
        let _ = self.stop.send(true);
        if let Some(link) = self.link.take() {
            link.shutdown().await;
        }
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

fn states(run: &CommandRun) -> Vec<(String, ExecutionState, Option<String>)> {
    run.executions.iter().map(|e| (e.thing.to_string(), e.state, e.reason_code.clone())).collect()
}

async fn every_command_end_to_end(transport: Transport) {
    let Some(world) = World::start(transport).await else { return };
    let op = operator();

    // reboot, two at a time over six plugs: every one answers, reboots and comes back.
    let boots_before: BTreeMap<String, u32> =
        world.fleet().snapshot().into_iter().map(|s| (s.thing.to_string(), s.boots)).collect();
    let reboot = CommandSpec::to_things("reboot", Map::new(), plugs());
    let (run, most) = world.run(&reboot).await;
    assert_eq!(run.status, CommandRunStatus::Completed, "{}", run.summary());
    assert!(
        run.executions
            .iter()
            .all(|e| e.state == ExecutionState::Succeeded && e.reason_code.as_deref() == Some("REBOOTING")),
        "{:?}",
        states(&run)
    );
    assert!(most <= 2, "never more than 2 sent and unanswered at a sample: {most}");
    assert_eq!(run.policy.max_in_flight, 2, "the type's pacing");
    // The same from what the run recorded (the engine's clock): whenever one was sent, at
    // most 2 were out (sent, not yet answered), that one included; a freed slot is taken
    // in the transaction that freed it.
    for e in &run.executions {
        let sent = e.sent_at.expect("sent");
        let out = run.executions.iter().filter(|o| o.sent_at.is_some_and(|s| s <= sent) && o.updated_at > sent).count();
        assert!((1..=2).contains(&out), "{out} out when {} was sent: {:?}", e.thing, run.executions);
    }
    let mut sends: Vec<_> = run.executions.iter().filter_map(|e| e.sent_at).collect();
    sends.sort();
    sends.dedup();
    assert!(sends.len() >= 3, "six sent two at a time go out at three moments at least: {sends:?}");
    let answered: BTreeMap<ThingName, _> = run.executions.iter().map(|e| (e.thing.clone(), e.updated_at)).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let snapshot = world.fleet().snapshot();
        let rebooted = snapshot
            .iter()
            .filter(|s| s.device_type == ty("smart_plug"))
            .all(|s| s.boots == boots_before[s.thing.as_str()] + 1 && s.connected);
        if rebooted {
            break;
        }
        assert!(Instant::now() < deadline, "the plugs did not reboot: {snapshot:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in world.fleet().snapshot().iter().filter(|s| s.device_type == ty("co2_monitor")) {
        assert_eq!(s.boots, boots_before[s.thing.as_str()], "only the plugs rebooted: {s:?}");
    }
    world.ready(&plugs(), &answered).await;

    // identify and recalibrate to the CO2 monitors (selected by type); recalibrate is not
    // declared by the plugs' firmware, so the plan refuses them, naming why.
    let by_type = DeviceQuery { device_type: Some(ty("co2_monitor")), ..Default::default() };
    let identify = CommandSpec::to_query("identify", Map::new(), by_type.clone());
    let (first_identify, _) = world.run(&identify).await;
    assert!(
        first_identify.executions.iter().all(|e| e.state == ExecutionState::Succeeded),
        "{:?}",
        states(&first_identify)
    );
    assert_eq!(first_identify.executions.len(), MONITORS as usize);
    let (run, _) = world.run(&CommandSpec::to_query("recalibrate", Map::new(), by_type.clone())).await;
    assert!(run.executions.iter().all(|e| e.state == ExecutionState::Succeeded), "{:?}", states(&run));
    let plan = world
        .svc
        .plan_command(&op, &CommandSpec::to_things("recalibrate", Map::new(), vec![thing("smart_plug-01")]))
        .await
        .unwrap();
    assert!(plan.targets.is_empty() && plan.refusals[0].reason.contains("not declared by its firmware"), "{plan:?}");

    // update_config: a good value is applied, stored and reported in the config shadow.
    let m1 = thing("co2_monitor-01");
    let good = CommandSpec::to_things("update_config", params(json!({"sample_rate_seconds": 30})), vec![m1.clone()]);
    let (run, _) = world.run(&good).await;
    assert_eq!(
        states(&run),
        [(m1.to_string(), ExecutionState::Succeeded, Some("CONFIG_APPLIED".to_string()))],
        "{}",
        run.summary()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let d = world.store.get(&m1).await.unwrap().unwrap();
        if d.config.reported.get(SAMPLE_RATE) == Some(&json!(30)) {
            assert_eq!(d.config.desired.get(SAMPLE_RATE), Some(&json!(30)), "desired as the service recorded it");
            break;
        }
        assert!(Instant::now() < deadline, "the new rate was not reported: {:?}", d.config);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shadow = world.store.config_shadow(&m1).await.unwrap().unwrap();
    assert!(shadow["state"].get("delta").is_none(), "reported as desired: {shadow}");

    // A value the catalog allows but the device's firmware bounds refuse: REJECTED, naming
    // the key and its bounds; the device keeps what it had.
    let m2 = thing("co2_monitor-02");
    let too_big =
        CommandSpec::to_things("update_config", params(json!({"sample_rate_seconds": 9000})), vec![m2.clone()]);
    let (run, _) = world.run(&too_big).await;
    let e = &run.executions[0];
    assert_eq!((e.state, e.reason_code.as_deref()), (ExecutionState::Rejected, Some("OUT_OF_BOUNDS")), "{e:?}");
    let why = e.reason.as_deref().unwrap_or_default();
    assert!(why.contains("sample_rate_seconds") && why.contains("1 to 3600"), "{why}");
    let d = world.store.get(&m2).await.unwrap().unwrap();
    assert_eq!(d.config.reported.get(SAMPLE_RATE), Some(&json!(60)), "nothing changed on the device: {:?}", d.config);
    // One the catalog's declaration refuses is never sent: the plan says why, naming the key.
    let zero = CommandSpec::to_things("update_config", params(json!({"sample_rate_seconds": 0})), vec![m2.clone()]);
    let plan = world.svc.plan_command(&op, &zero).await.unwrap();
    assert!(plan.targets.is_empty(), "{plan:?}");
    assert!(plan.refusals[0].reason.contains("sample_rate_seconds"), "{plan:?}");
    let err = world.svc.start_command(&op, &zero, None).await.unwrap_err();
    assert!(err.to_string().contains("sample_rate_seconds"), "{err}");

    // A device that never answers times out.
    let mut silent = CommandSpec::to_things("identify", Map::new(), vec![thing(SILENT)]);
    silent.timeout_seconds = Some(1);
    let (run, _) = world.run(&silent).await;
    let e = &run.executions[0];
    assert_eq!((e.state, e.reason.as_deref()), (ExecutionState::TimedOut, Some("no answer within 1 s")), "{e:?}");
    assert_eq!(run.status, CommandRunStatus::Completed);

    // The same command again, once the first run ended: a new run, which runs again.
    let (again, _) = world.run(&identify).await;
    assert_ne!(again.id, first_identify.id);
    assert_eq!(again.id, run_id(&first_identify.plan_id, 2), "the next generation of the same plan");
    assert!(again.executions.iter().all(|e| e.state == ExecutionState::Succeeded), "{:?}", states(&again));

    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_end_to_end_over_the_embedded_endpoint() {
    every_command_end_to_end(Transport::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_end_to_end_over_mosquitto() {
    every_command_end_to_end(Transport::Mosquitto).await;
}
