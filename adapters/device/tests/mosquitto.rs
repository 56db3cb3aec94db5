//! The agent against a real broker: Debian's mosquitto, started here on a free loopback
//! port. The test is the cloud, with a plain rumqttc client: it publishes the job on
//! `notify-next`, answers `$next/get` and status updates the way AWS IoT Jobs does, serves
//! the image from a local HTTP server, and checks the device's status updates and shadow.
//!
//! Runs when `OTA_TEST_MOSQUITTO=1` (CI sets it and installs mosquitto); then a missing or
//! failing mosquitto fails the test. Without the variable it says it skipped (under `CI` it fails).

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ota_device::host::{
    HostHttp, HttpFaults, ImageServer, MemStorage, Power, ServerFaults, SimFlash, SimSlotState, SyntheticImage,
};
use ota_device::{Agent, Exit, pump_mqtt};
use serde_json::Value;

struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `None` when the test is not enabled; panics when it is and mosquitto cannot run.
fn broker() -> Option<Broker> {
    if std::env::var("OTA_TEST_MOSQUITTO").ok().as_deref() != Some("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed: apt-get install mosquitto); .ci/run does"
        );
        println!("skipped: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed) to run the broker test");
        return None;
    }
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_string)
        .or_else(|| which("mosquitto"))
        .expect("OTA_TEST_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)");
    // A free port can be taken by another test between probing and mosquitto's bind, so a
    // mosquitto that exits at start is retried on a new port a few times.
    let mut last = String::new();
    for _ in 0..5 {
        match start(&bin) {
            Ok(b) => return Some(b),
            Err(e) => last = e,
        }
    }
    panic!("OTA_TEST_MOSQUITTO=1 but mosquitto would not start: {last}");
}

fn start(bin: &str) -> Result<Broker, String> {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {bin}: {e}"))?;
    let mut broker = Broker { child, port, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = broker.child.try_wait() {
            return Err(format!("mosquitto exited at start: {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Whoever answers must be our mosquitto, still running after its bind.
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("mosquitto exited at start: {status}"));
            }
            return Ok(broker);
        }
        if Instant::now() > deadline {
            return Err(format!("mosquitto did not listen on port {port} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
}

/// What one scenario changes.
#[derive(Default)]
struct Scenario {
    http: HttpFaults,
    server: ServerFaults,
    failing_self_test: bool,
}

struct Outcome {
    cloud: Cloud,
    flash: SimFlash,
    exits: Vec<Exit>,
    requests: Vec<(String, u64, u16)>,
    image: SyntheticImage,
}

fn run(thing: &str, scenario: Scenario) -> Option<Outcome> {
    let broker = broker()?;
    let server = ImageServer::start().unwrap();
    let image = SyntheticImage::new("2.0.0", 400_000);
    let url = server.put("/v2.0.0/pet_feeder/firmware.bin", image.clone());
    server.set_faults(scenario.server);

    let cloud = Arc::new(Mutex::new(Cloud::new(thing)));
    let power = Power::new();
    let flash = SimFlash::new("1.0.0", SLOT_SIZE, power.clone());
    if scenario.failing_self_test {
        flash.fail_self_test_of("2.0.0");
    }
    let storage = MemStorage::new(power.clone());
    let faults = Arc::new(Mutex::new(scenario.http));

    // The cloud: a plain MQTT client on the device's topics.
    let (cloud_client, mut cloud_conn) =
        rumqttc::Client::new(rumqttc::MqttOptions::new("cloud", "127.0.0.1", broker.port), 64);
    let prefix = format!("$aws/things/{thing}");
    for t in ["jobs/$next/get", "jobs/+/update", "shadow/update"] {
        cloud_client.subscribe(format!("{prefix}/{t}"), rumqttc::QoS::AtLeastOnce).unwrap();
    }
    let (c, doc) = (cloud.clone(), document(&image, &url));
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    // The device must not start before the broker has the cloud's subscriptions, or the
    // cloud misses the device's first shadow report and never announces the job.
    let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
    let cloud_thread = std::thread::spawn(move || {
        let mut job_sent = false;
        let mut subacks = 0;
        for event in cloud_conn.iter() {
            if d.load(Ordering::SeqCst) {
                return;
            }
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) = event {
                subacks += 1;
                if subacks == 3 {
                    let _ = subscribed_tx.send(());
                }
                continue;
            }
            let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = event else { continue };
            let mut cloud = c.lock().unwrap();
            let mut replies = cloud.handle(&p.topic, &p.payload);
            // Once the device has subscribed and reported its shadow, a job is created and
            // announced the way AWS does: on notify-next.
            if !job_sent && p.topic.ends_with("/shadow/update") {
                job_sent = true;
                cloud.add_job("update-pet_feeder-2_0_0-test", doc.clone());
                replies.push(cloud.notify_next());
            }
            drop(cloud);
            for (topic, payload) in replies {
                if cloud_client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).is_err() {
                    return;
                }
            }
        }
    });

    subscribed_rx.recv_timeout(Duration::from_secs(10)).expect("the cloud's subscriptions are acknowledged");
    let port = broker.port;
    let exits = run_until_idle(&cloud, &flash, &power, || {
        let (client, connection) = ota_device::host::connect(thing, "127.0.0.1", port);
        let (tx, rx) = channel();
        std::thread::spawn(move || pump_mqtt(connection, tx));
        let http = HostHttp::new(Duration::from_secs(5), faults.clone());
        let f = flash.clone();
        let mut agent = Agent::new(agent_config(thing), client, rx, http, flash.clone(), storage.clone())
            .with_self_test(move || !f.running_image_fails_self_test());
        agent.run(power.off_flag()).expect("the agent runs")
    });
    // The cloud's connection sees errors once the broker is gone, and then its flag.
    done.store(true, Ordering::SeqCst);
    drop(broker);
    let _ = cloud_thread.join();
    let cloud = std::mem::replace(&mut *cloud.lock().unwrap(), Cloud::new(thing));
    Some(Outcome { cloud, flash, exits, requests: server.requests(), image })
}

const JOB: &str = "update-pet_feeder-2_0_0-test";

fn statuses(o: &Outcome) -> Vec<String> {
    o.cloud.statuses.iter().map(|(_, s, d, _)| format!("{s} {}", d["reason"].as_str().unwrap_or(""))).collect()
}

#[test]
fn mosquitto_a_good_update_succeeds_and_reports_the_new_version() {
    let Some(o) = run("pet_feeder-m1", Scenario::default()) else { return };
    assert_eq!(o.exits, [Exit::Reboot, Exit::Stopped]);
    let (status, details) = o.cloud.final_status(JOB).expect("the job ended");
    assert_eq!(
        (status.as_str(), &details["firmwareVersion"]),
        ("SUCCEEDED", &Value::from("2.0.0")),
        "{:?}",
        statuses(&o)
    );
    assert_eq!(o.cloud.statuses[0].1, "IN_PROGRESS", "the device says it started");
    assert_eq!(o.cloud.shadow["firmwareVersion"], "2.0.0");
    assert_eq!(o.cloud.shadow["deviceType"], TYPE);
    assert_eq!(o.cloud.shadow["slot"], "ota_1");
    assert_eq!(o.flash.running_slot(), (1, SimSlotState::Valid));
    assert_eq!(o.flash.slot(1).digest, Some(o.image.sha256()));
}

#[test]
fn mosquitto_a_corrupt_image_fails_with_sha256_mismatch() {
    let scenario =
        Scenario { http: HttpFaults { corrupt_at: Some(77_777), ..Default::default() }, ..Default::default() };
    let Some(o) = run("pet_feeder-m2", scenario) else { return };
    let (status, details) = o.cloud.final_status(JOB).expect("the job ended");
    assert_eq!(
        (status.as_str(), &details["reason"]),
        ("FAILED", &Value::from("sha256_mismatch")),
        "{:?}",
        statuses(&o)
    );
    assert_eq!(details["expected"], o.image.sha256().to_hex());
    assert_ne!(details["actual"], details["expected"]);
    assert_eq!(o.exits, [Exit::Stopped], "no reboot");
    assert_eq!(o.flash.running_slot(), (0, SimSlotState::Valid));
    assert_eq!(o.cloud.shadow["firmwareVersion"], "1.0.0");
}

#[test]
fn mosquitto_a_boot_failure_rolls_back_and_reports_boot_failed() {
    let Some(o) = run("pet_feeder-m3", Scenario { failing_self_test: true, ..Default::default() }) else { return };
    let (status, details) = o.cloud.final_status(JOB).expect("the job ended");
    assert_eq!((status.as_str(), &details["reason"]), ("FAILED", &Value::from("boot_failed")), "{:?}", statuses(&o));
    assert_eq!(details["firmwareVersion"], "1.0.0");
    assert_eq!(o.exits, [Exit::Reboot, Exit::Reboot, Exit::Stopped]);
    assert_eq!(o.flash.running_slot(), (0, SimSlotState::Valid));
    assert_eq!(o.flash.slot(1).state, SimSlotState::Invalid);
    assert_eq!(o.cloud.shadow["firmwareVersion"], "1.0.0");
}

#[test]
fn mosquitto_a_dropped_download_resumes_with_a_range_request() {
    let scenario = Scenario { server: ServerFaults { drop_once_at: Some(150_000) }, ..Default::default() };
    let Some(o) = run("pet_feeder-m4", scenario) else { return };
    let (status, _) = o.cloud.final_status(JOB).expect("the job ended");
    assert_eq!(status, "SUCCEEDED", "{:?}", statuses(&o));
    let starts: Vec<(u64, u16)> = o.requests.iter().map(|(_, start, status)| (*start, *status)).collect();
    assert_eq!(starts, [(0, 200), (150_000, 206)], "one full request, cut, then one Range request from the cut");
    assert_eq!(o.flash.slot(1).digest, Some(o.image.sha256()));
}

/// The application of the command test: counts what it is asked, reports one reading.
#[derive(Clone, Default)]
struct Sensor {
    calls: Arc<Mutex<Vec<String>>>,
}

impl ota_device::Application for Sensor {
    fn identify(&mut self) -> Result<(), String> {
        self.calls.lock().unwrap().push("identify".into());
        Ok(())
    }

    fn recalibrate(&mut self) -> Result<(), String> {
        self.calls.lock().unwrap().push("recalibrate".into());
        Ok(())
    }

    fn telemetry(&mut self) -> Option<(serde_json::Map<String, Value>, ota_core::command::Health)> {
        let Value::Object(m) = serde_json::json!({"co2_ppm": 612}) else { unreachable!() };
        Some((m, ota_core::command::Health::ok()))
    }

    fn configure(&mut self, config: &serde_json::Map<String, Value>) {
        self.calls.lock().unwrap().push(format!("configure {}", Value::Object(config.clone())));
    }
}

/// What the cloud side of the command test saw, by topic, in order.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// Waits until `seen` holds a message on `topic` after the first `from`; returns it and
/// its index.
fn wait_for(seen: &Seen, from: usize, topic: &str) -> (usize, Value) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((i, (_, v))) = seen.lock().unwrap().iter().enumerate().skip(from).find(|(_, (t, _))| t == topic) {
            return (i, v.clone());
        }
        assert!(Instant::now() < deadline, "nothing on {topic} within 15 s: {:?}", seen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Commands over a real broker, the test as the cloud: update_config accepted (stored,
/// reported in the config shadow), update_config out of bounds (REJECTED naming the key and
/// its bounds, nothing stored), identify through the application, reboot (SUCCEEDED, the
/// agent exits to reboot), and the next boot reconnects with the stored configuration.
#[test]
fn mosquitto_commands_round_trip() {
    let Some(broker) = broker() else { return };
    let thing = "co2_monitor-m5";
    let (cloud, mut cloud_conn) =
        rumqttc::Client::new(rumqttc::MqttOptions::new("cloud", "127.0.0.1", broker.port), 64);
    let config_update = format!("$aws/things/{thing}/shadow/name/config/update");
    let telemetry = format!("dt/ota/{thing}/telemetry");
    for t in
        [format!("$aws/commands/things/{thing}/executions/+/response/json"), config_update.clone(), telemetry.clone()]
    {
        cloud.subscribe(t, rumqttc::QoS::AtLeastOnce).unwrap();
    }
    let seen: Seen = Arc::default();
    let (s, done) = (seen.clone(), Arc::new(AtomicBool::new(false)));
    let d = done.clone();
    let (subscribed_tx, subscribed_rx) = channel();
    let cloud_thread = std::thread::spawn(move || {
        let mut subacks = 0;
        for event in cloud_conn.iter() {
            if d.load(Ordering::SeqCst) {
                return;
            }
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    subacks += 1;
                    if subacks == 3 {
                        let _ = subscribed_tx.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    s.lock().unwrap().push((p.topic.clone(), v));
                }
                _ => {}
            }
        }
    });
    subscribed_rx.recv_timeout(Duration::from_secs(10)).expect("the cloud's subscriptions are acknowledged");

    let power = Power::new();
    let flash = SimFlash::new("1.0.0", SLOT_SIZE, power.clone());
    let storage = MemStorage::new(power.clone());
    let sensor = Sensor::default();
    let port = broker.port;
    let boot = |power: Power| {
        let (flash, storage, sensor) = (flash.clone(), storage.clone(), sensor.clone());
        std::thread::spawn(move || {
            flash.power_on();
            let (client, connection) = ota_device::host::connect(thing, "127.0.0.1", port);
            let (tx, rx) = channel();
            std::thread::spawn(move || pump_mqtt(connection, tx));
            let mut config = agent_config(thing);
            config.capabilities = ota_core::command::Capabilities::demo(true);
            let mut agent =
                Agent::new(config, client, rx, HostHttp::new(Duration::from_secs(5), Arc::default()), flash, storage)
                    .with_application(sensor);
            agent.run(power.off_flag()).expect("the agent runs")
        })
    };
    let request = |id: &str, body: &str| {
        let topic = format!("$aws/commands/things/{thing}/executions/{id}/request/json");
        cloud.publish(topic, rumqttc::QoS::AtLeastOnce, false, body.as_bytes().to_vec()).unwrap();
    };
    let response = |id: &str| format!("$aws/commands/things/{thing}/executions/{id}/response/json");

    let first = boot(power.clone());
    // The device reports its configuration once it has subscribed; then it takes commands.
    let (i, reported) = wait_for(&seen, 0, &config_update);
    assert_eq!(reported["state"]["reported"], serde_json::json!({"sample_rate_seconds": 60, "log_level": "info"}));
    let (_, reading) = wait_for(&seen, 0, &telemetry);
    assert_eq!(reading, serde_json::json!({"co2_ppm": 612}), "telemetry at connect");

    request("c-1", r#"{"command":"update_config","parameters":{"sample_rate_seconds":10}}"#);
    let (j, answer) = wait_for(&seen, 0, &response("c-1"));
    assert_eq!(answer["status"], "SUCCEEDED", "{answer}");
    let (_, reported) = wait_for(&seen, i + 1, &config_update);
    assert_eq!(reported["state"]["reported"]["sample_rate_seconds"], 10);
    let stored: Value = serde_json::from_slice(&storage.value("ota_config").expect("stored")).unwrap();
    assert_eq!(stored["sample_rate_seconds"], 10);

    request("c-2", r#"{"command":"update_config","parameters":{"sample_rate_seconds":0,"log_level":"debug"}}"#);
    let (_, answer) = wait_for(&seen, j, &response("c-2"));
    assert_eq!(answer["status"], "REJECTED", "{answer}");
    assert_eq!(answer["statusReason"]["reasonCode"], "OUT_OF_BOUNDS");
    let description = answer["statusReason"]["reasonDescription"].as_str().unwrap();
    assert!(description.contains("sample_rate_seconds") && description.contains("1 to 3600"), "{description}");
    let stored: Value = serde_json::from_slice(&storage.value("ota_config").unwrap()).unwrap();
    assert_eq!(stored, serde_json::json!({"sample_rate_seconds": 10, "log_level": "info"}), "nothing changed");

    request("i-1", r#"{"command":"identify"}"#);
    assert_eq!(wait_for(&seen, 0, &response("i-1")).1["status"], "SUCCEEDED");
    request("x-1", r#"{"command":"self_destruct"}"#);
    assert_eq!(wait_for(&seen, 0, &response("x-1")).1["statusReason"]["reasonCode"], "UNSUPPORTED_COMMAND");

    let before_reboot = seen.lock().unwrap().len();
    request("r-1", r#"{"command":"reboot"}"#);
    assert_eq!(wait_for(&seen, 0, &response("r-1")).1["status"], "SUCCEEDED");
    assert_eq!(first.join().unwrap(), Exit::Reboot, "reboot ends the boot");
    // A redelivered request of the last boot would be a new boot's to answer; the second
    // boot reconnects and reports the stored configuration.
    let second = boot(power.clone());
    let (_, reported) = wait_for(&seen, before_reboot, &config_update);
    assert_eq!(reported["state"]["reported"]["sample_rate_seconds"], 10, "the configuration survived the reboot");
    power.switch_off();
    assert_eq!(second.join().unwrap(), Exit::Stopped);
    let calls = sensor.calls.lock().unwrap().clone();
    assert_eq!(calls.iter().filter(|c| *c == "identify").count(), 1, "{calls:?}");
    assert!(
        calls.iter().any(|c| c.contains("\"sample_rate_seconds\":10")),
        "the application was configured: {calls:?}"
    );

    done.store(true, Ordering::SeqCst);
    drop(broker);
    let _ = cloud_thread.join();
}
