//! The simulated fleet: how `demo_fleet` builds a fleet and draws its faults (pure), and a
//! small fleet of real agents against Debian's mosquitto with a password file, updated by a
//! cloud written here (rumqttc on the AWS IoT Jobs and shadow topics) with a demo image
//! (`ota_core::demo::firmware_image`, an ESP32 app image) served over HTTP with Range.
//!
//! The broker test runs when `OTA_TEST_MOSQUITTO=1` (with `mosquitto` and `mosquitto_passwd`
//! installed); without the variable it says it skipped (under `CI` it fails).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cloud;
use ota_core::integrity::Sha256Verifier;
use ota_core::names::{DeviceType, ThingName};
use ota_core::version::FirmwareVersion;
use ota_device::host::{
    DROP_AT, DeviceFaults, FaultRates, FleetConfig, FleetError, PasswordFor, SimDeviceSpec, SimFleet, demo_fleet,
};
use serde_json::{Value, json};

fn ty(name: &str) -> DeviceType {
    DeviceType::parse(name).unwrap()
}

fn rates(corrupt: f64, boot_failure: f64, drop: f64) -> FaultRates {
    FaultRates::new(corrupt, boot_failure, drop).unwrap()
}

#[test]
fn the_demo_fleet_names_devices_and_gives_them_the_demo_versions() {
    let fleet =
        demo_fleet(&[ty("pet_feeder"), ty("motion_sensor"), ty("pet_feeder")], 9, FaultRates::default(), 1).unwrap();
    assert_eq!(fleet.len(), 18, "a repeated type counts once");
    let pf: Vec<(&str, String)> = fleet[..9].iter().map(|s| (s.thing.as_str(), s.version.to_string())).collect();
    let expected = [
        ("pet_feeder-01", "1.0.0"),
        ("pet_feeder-02", "1.0.0"),
        ("pet_feeder-03", "2.0.0"),
        ("pet_feeder-04", "3.0.0"),
        ("pet_feeder-05", "1.0.0"),
        ("pet_feeder-06", "1.0.0"),
        ("pet_feeder-07", "2.0.0"),
        ("pet_feeder-08", "3.0.0"),
        ("pet_feeder-09", "1.0.0"),
    ];
    assert_eq!(pf, expected.map(|(t, v)| (t, v.to_string())));
    assert!(fleet[..9].iter().all(|s| s.device_type == ty("pet_feeder")));
    // motion_sensor's latest demo version is 2.0.0.
    assert_eq!(fleet[9 + 3].thing.as_str(), "motion_sensor-04");
    assert_eq!(fleet[9 + 3].version, FirmwareVersion::new(2, 0, 0));
    // The first four agree with the demo world's devices.
    let demo = ota_core::demo::devices(&ty("pet_feeder"), 4);
    let ours: Vec<(ThingName, FirmwareVersion)> =
        fleet[..4].iter().map(|s| (s.thing.clone(), s.version.clone())).collect();
    assert_eq!(ours, demo);
    assert!(fleet.iter().all(|s| !s.faults.any()), "no rates, no faults");
    let three_digits = demo_fleet(&[ty("smart_plug")], 100, FaultRates::default(), 1).unwrap();
    assert_eq!(three_digits[99].thing.as_str(), "smart_plug-100");
    assert_eq!(three_digits[99].version, FirmwareVersion::new(3, 0, 0));
}

#[test]
fn fault_counts_are_exact_distinct_and_reproducible_from_the_seed() {
    let types = [ty("pet_feeder")];
    let fleet = demo_fleet(&types, 100, rates(0.2, 0.1, 0.05), 42).unwrap();
    let count = |f: fn(&DeviceFaults) -> bool| fleet.iter().filter(|s| f(&s.faults)).count();
    assert_eq!(count(|f| f.corrupt_download), 20);
    assert_eq!(count(|f| f.fail_boot), 10);
    assert_eq!(count(|f| f.drop_download), 5);
    assert_eq!(count(DeviceFaults::any), 35, "each faulty device has one fault while they fit");

    assert_eq!(demo_fleet(&types, 100, rates(0.2, 0.1, 0.05), 42).unwrap(), fleet, "same seed, same fleet");
    let other = demo_fleet(&types, 100, rates(0.2, 0.1, 0.05), 43).unwrap();
    assert_ne!(other, fleet, "another seed picks other devices");
    assert_eq!(other.iter().filter(|s| s.faults.corrupt_download).count(), 20);

    // round(rate × n) over the whole fleet, across types.
    let two = demo_fleet(&[ty("pet_feeder"), ty("smart_plug")], 3, rates(0.5, 0.0, 1.0), 7).unwrap();
    assert_eq!(two.iter().filter(|s| s.faults.corrupt_download).count(), 3, "round(0.5 × 6)");
    assert_eq!(two.iter().filter(|s| s.faults.drop_download).count(), 6);
    assert_eq!(two.iter().filter(|s| s.faults.fail_boot).count(), 0);
    let odd = demo_fleet(&types, 5, rates(0.5, 0.0, 0.0), 7).unwrap();
    assert_eq!(odd.iter().filter(|s| s.faults.corrupt_download).count(), 3, "round(2.5) is 3");

    // Rates over the whole fleet wrap around: every device gets both.
    let all = demo_fleet(&types, 10, rates(1.0, 1.0, 0.0), 3).unwrap();
    assert!(all.iter().all(|s| s.faults.corrupt_download && s.faults.fail_boot));
}

#[test]
fn bad_rates_and_unknown_types_are_refused() {
    for bad in [(-0.1, 0.0, 0.0), (0.0, 1.5, 0.0), (0.0, 0.0, f64::NAN)] {
        let err = FaultRates::new(bad.0, bad.1, bad.2).unwrap_err();
        assert!(matches!(err, FleetError::Rate { .. }), "{bad:?}: {err}");
        let unchecked = FaultRates { corrupt: bad.0, boot_failure: bad.1, drop: bad.2, tamper: 0.0 };
        assert!(demo_fleet(&[ty("pet_feeder")], 4, unchecked, 1).is_err(), "{bad:?}");
    }
    let err = demo_fleet(&[ty("pet_feeder"), ty("toaster")], 4, FaultRates::default(), 1).unwrap_err();
    assert!(matches!(&err, FleetError::UnknownType(t) if t == "toaster"), "{err}");
    assert!(demo_fleet(&[], 4, FaultRates::default(), 1).unwrap().is_empty());
    assert!(demo_fleet(&[ty("pet_feeder")], 0, FaultRates::default(), 1).unwrap().is_empty());
}

#[test]
fn a_fleet_with_a_thing_twice_is_refused_before_anything_starts() {
    let spec = |n: u32| SimDeviceSpec {
        thing: ThingName::parse(&format!("pet_feeder-{n:02}")).unwrap(),
        device_type: ty("pet_feeder"),
        version: FirmwareVersion::new(1, 0, 0),
        faults: DeviceFaults::default(),
    };
    let password: PasswordFor = Arc::new(|_| String::new());
    let err = SimFleet::start(vec![spec(1), spec(2), spec(1)], FleetConfig::new("127.0.0.1", 1, password)).unwrap_err();
    assert!(matches!(&err, FleetError::DuplicateThing(t) if t == "pet_feeder-01"), "{err}");
}

#[test]
fn devices_without_an_endpoint_keep_their_image_and_stop_when_told() {
    // A port nothing listens on: every connection attempt is refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let specs = demo_fleet(&[ty("pet_feeder")], 4, FaultRates::default(), 1).unwrap();
    let password_for: PasswordFor = Arc::new(|_| "pw".to_string());
    let mut config = FleetConfig::new("127.0.0.1", port, password_for);
    config.reconnect_delay = Duration::from_millis(50);
    config.start_interval = Duration::from_millis(1);
    let fleet = SimFleet::start(specs.clone(), config).unwrap();
    assert_eq!(fleet.len(), 4);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet.snapshot().iter().any(|s| s.boots == 0) {
        assert!(Instant::now() < deadline, "the devices never booted: {:#?}", fleet.snapshot());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Some connection attempts go by, each device saying why it has no session.
    while fleet.snapshot().iter().any(|s| s.connect_error.is_none()) {
        assert!(Instant::now() < deadline, "no connect error: {:#?}", fleet.snapshot());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let snapshot = fleet.snapshot();
    assert_eq!(fleet.stop(), 0, "every device thread ended within the stop timeout");
    let seen: Vec<(&str, &str, &str, u32, bool)> = snapshot
        .iter()
        .map(|s| (s.thing.as_str(), s.firmware_version.as_str(), s.slot_state, s.boots, s.connected))
        .collect();
    assert_eq!(
        seen,
        [
            ("pet_feeder-01", "1.0.0", "valid", 1, false),
            ("pet_feeder-02", "1.0.0", "valid", 1, false),
            ("pet_feeder-03", "2.0.0", "valid", 1, false),
            ("pet_feeder-04", "3.0.0", "valid", 1, false),
        ],
        "still on their first boot, never connected"
    );
    assert!(snapshot.iter().all(|s| s.last_error.is_none() && s.device_type == ty("pet_feeder")));
    for s in &snapshot {
        let why = s.connect_error.as_deref().unwrap_or_default();
        assert!(why.starts_with("cannot connect to the MQTT endpoint: "), "{}: {why:?}", s.thing);
    }
}

// ---------------------------------------------------------------------------------------
// Against mosquitto.

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

fn find(name: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .into_iter()
        .map(str::to_string)
        .chain(path.split(':').map(str::to_string))
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
}

/// mosquitto on a free loopback port, refusing anonymous clients and knowing `users`.
fn broker(users: &[(String, String)]) -> Option<Broker> {
    if std::env::var("OTA_TEST_MOSQUITTO").ok().as_deref() != Some("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed: apt-get install mosquitto); .ci/run does"
        );
        println!("skipped: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed) to run the fleet's broker test");
        return None;
    }
    let bin =
        find("mosquitto").expect("OTA_TEST_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)");
    let passwd = find("mosquitto_passwd").expect("mosquitto_passwd comes with mosquitto");
    let mut last = String::new();
    // A probed free port can be taken before mosquitto binds it: retry on another.
    for _ in 0..5 {
        match start(&bin, &passwd, users) {
            Ok(b) => return Some(b),
            Err(e) => last = e,
        }
    }
    panic!("OTA_TEST_MOSQUITTO=1 but mosquitto would not start: {last}");
}

fn start(bin: &str, passwd: &str, users: &[(String, String)]) -> Result<Broker, String> {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let plain: String = users.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    std::fs::write(&passwords, plain).unwrap();
    let hashed = Command::new(passwd).arg("-U").arg(&passwords).status().map_err(|e| format!("{passwd}: {e}"))?;
    assert!(hashed.success(), "mosquitto_passwd -U failed");
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\n",
            passwords.display()
        ),
    )
    .unwrap();
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

/// Serves one image at every path, honouring `Range: bytes=N-`, and logs (path, start,
/// status) of every request.
struct Downloads {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(String, u64, u16)>>>,
}

impl Downloads {
    fn start(image: Arc<Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        // Lives until the test process ends.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (image, log) = (image.clone(), l.clone());
                std::thread::spawn(move || serve(conn, &image, &log));
            }
        });
        Downloads { addr, log }
    }

    fn requests(&self, path: &str) -> Vec<(u64, u16)> {
        self.log.lock().unwrap().iter().filter(|(p, _, _)| p == path).map(|(_, s, st)| (*s, *st)).collect()
    }
}

fn serve(conn: TcpStream, image: &[u8], log: &Mutex<Vec<(String, u64, u16)>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut start = 0u64;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            start = v.trim().strip_prefix("bytes=").and_then(|r| r.split('-').next()?.parse().ok()).unwrap_or(0);
        }
    }
    let len = image.len() as u64;
    let mut out = conn;
    let status = if start >= len {
        416
    } else if start > 0 {
        206
    } else {
        200
    };
    log.lock().unwrap().push((path, start, status));
    let head = match status {
        200 => format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"),
        206 => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{len}\r\nConnection: close\r\n\r\n",
            len - start,
            len - 1
        ),
        _ => "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    if out.write_all(head.as_bytes()).is_ok() && status != 416 {
        let _ = out.write_all(&image[start as usize..]);
    }
}

const PET_FEEDER: &str = "pet_feeder";
const JOB: &str = "update-pet_feeder-2_1_0";

/// What gives a thing its job once it has reported its shadow (None: no job).
type JobFor = Box<dyn Fn(&str) -> Option<Value> + Send>;

/// The cloud: one [`Cloud`] per thing on the wildcard topics, as user `cloud`. A thing's job
/// is created and announced on `notify-next` once the thing has reported its shadow.
struct TestCloud {
    clouds: Arc<Mutex<BTreeMap<String, Cloud>>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestCloud {
    fn start(port: u16, things: &[String], job_for: JobFor) -> Self {
        let clouds: Arc<Mutex<BTreeMap<String, Cloud>>> =
            Arc::new(Mutex::new(things.iter().map(|t| (t.clone(), Cloud::new(t))).collect()));
        let mut options = rumqttc::MqttOptions::new("cloud", "127.0.0.1", port);
        options.set_credentials("cloud", "cloud-pw");
        options.set_keep_alive(Duration::from_secs(30));
        let (cloud_client, mut cloud_conn) = rumqttc::Client::new(options, 1024);
        for t in ["jobs/$next/get", "jobs/+/update", "shadow/update"] {
            cloud_client.subscribe(format!("$aws/things/+/{t}"), rumqttc::QoS::AtLeastOnce).unwrap();
        }
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let (c, d) = (clouds.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut subacks = 0;
            for event in cloud_conn.iter() {
                if d.load(Ordering::SeqCst) {
                    return;
                }
                let p = match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == 3 {
                            let _ = subscribed_tx.send(());
                        }
                        continue;
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => p,
                    _ => continue,
                };
                let Some(thing) = p.topic.strip_prefix("$aws/things/").and_then(|r| r.split('/').next()) else {
                    continue;
                };
                let mut clouds = c.lock().unwrap();
                let Some(cloud) = clouds.get_mut(thing) else { continue };
                let mut replies = cloud.handle(&p.topic, &p.payload);
                if cloud.jobs.is_empty()
                    && p.topic.ends_with("/shadow/update")
                    && let Some(document) = job_for(thing)
                {
                    cloud.add_job(JOB, document);
                    replies.push(cloud.notify_next());
                }
                drop(clouds);
                for (topic, payload) in replies {
                    if cloud_client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).is_err() {
                        return;
                    }
                }
            }
        });
        subscribed_rx.recv_timeout(Duration::from_secs(10)).expect("the cloud's subscriptions are acknowledged");
        TestCloud { clouds, done, thread: Some(thread) }
    }

    fn with<T>(&self, thing: &str, f: impl FnOnce(&Cloud) -> T) -> T {
        f(&self.clouds.lock().unwrap()[thing])
    }

    /// Ends the cloud's thread; call once the broker is gone (its connection then errors).
    fn finish(mut self) -> BTreeMap<String, Cloud> {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.clouds.lock().unwrap())
    }
}

/// Fleet settings with short waits.
fn fleet_config(port: u16, password_for: PasswordFor) -> FleetConfig {
    let mut config = FleetConfig::new("127.0.0.1", port, password_for);
    config.self_test_timeout = Duration::from_secs(10);
    config.reconnect_delay = Duration::from_millis(200);
    config.poll_interval = Duration::from_millis(50);
    config.retry_delay = Duration::from_millis(100);
    config.reboot_grace = Duration::from_millis(300);
    config.http_timeout = Duration::from_secs(5);
    config
}

fn password(thing: &str) -> String {
    format!("pw-{thing}")
}

/// The broker's users: every thing with its password, and the cloud.
fn users(things: &[String]) -> Vec<(String, String)> {
    let mut users: Vec<(String, String)> = things.iter().map(|t| (t.clone(), password(t))).collect();
    users.push(("cloud".into(), "cloud-pw".into()));
    users
}

#[test]
fn mosquitto_a_simulated_fleet_updates_and_fails_as_its_faults_say() {
    let things: Vec<String> = (1..=5).map(|n| format!("pet_feeder-{n:02}")).collect();
    let Some(broker) = broker(&users(&things)) else { return };

    let target = FirmwareVersion::new(2, 1, 0);
    let image = ota_core::demo::firmware_image(&ty(PET_FEEDER), &target);
    let mut verifier = Sha256Verifier::new();
    verifier.update(&image);
    let (digest, size) = verifier.finish();
    let downloads = Downloads::start(Arc::new(image));
    let addr = downloads.addr;
    let job_for: JobFor = Box::new(move |thing| {
        Some(json!({"operation": "ota_update", "deviceType": PET_FEEDER, "version": "2.1.0", "rollback": false,
            "firmware": {"url": format!("http://{addr}/{thing}/firmware.bin"), "size": size,
                         "sha256": digest.to_hex()}}))
    });
    let cloud = TestCloud::start(broker.port, &things, job_for);

    let faults = [
        DeviceFaults::default(),
        DeviceFaults { corrupt_download: true, ..Default::default() },
        DeviceFaults { fail_boot: true, ..Default::default() },
        DeviceFaults { drop_download: true, ..Default::default() },
        // -05 has a wrong password: the broker refuses it.
        DeviceFaults::default(),
    ];
    let specs: Vec<SimDeviceSpec> = things
        .iter()
        .zip(faults)
        .map(|(t, faults)| SimDeviceSpec {
            thing: ThingName::parse(t).unwrap(),
            device_type: ty(PET_FEEDER),
            version: FirmwareVersion::new(1, 0, 0),
            faults,
        })
        .collect();
    let password_for: PasswordFor = Arc::new(|thing: &ThingName| match thing.as_str() {
        "pet_feeder-05" => "wrong".to_string(),
        other => password(other),
    });
    let fleet = SimFleet::start(specs, fleet_config(broker.port, password_for)).unwrap();

    let ended = |thing: &str| cloud.with(thing, |c| c.final_status(JOB).is_some());
    let deadline = Instant::now() + Duration::from_secs(50);
    while !things[..4].iter().all(|t| ended(t)) {
        assert!(Instant::now() < deadline, "not every job ended within 50 s: {:#?}", fleet.snapshot());
        std::thread::sleep(Duration::from_millis(100));
    }
    let states: BTreeMap<String, _> = fleet.snapshot().into_iter().map(|s| (s.thing.to_string(), s)).collect();
    let left = fleet.stop();
    drop(broker);
    let clouds = cloud.finish();
    assert_eq!(left, 0, "every device thread ended within the stop timeout");

    let summary = |thing: &str| {
        let s = &states[thing];
        (s.firmware_version.as_str(), s.slot_state, s.boots)
    };
    let reason = |thing: &str| {
        let (status, details) = clouds[thing].final_status(JOB).unwrap();
        (status, details["reason"].as_str().unwrap_or_default().to_string(), details["firmwareVersion"].clone())
    };

    // -01: a clean update.
    assert_eq!(reason("pet_feeder-01").0, "SUCCEEDED");
    assert_eq!(reason("pet_feeder-01").2, Value::from("2.1.0"));
    assert_eq!(summary("pet_feeder-01"), ("2.1.0", "valid", 2), "one restart into the new image");
    assert_eq!(clouds["pet_feeder-01"].shadow["firmwareVersion"], "2.1.0");
    assert_eq!(downloads.requests("/pet_feeder-01/firmware.bin"), [(0, 200)]);

    // -02: the corrupted byte fails the hash; the old image stays, no restart.
    assert_eq!(reason("pet_feeder-02").0, "FAILED");
    assert_eq!(reason("pet_feeder-02").1, "sha256_mismatch");
    assert_eq!(summary("pet_feeder-02"), ("1.0.0", "valid", 1));
    assert_eq!(clouds["pet_feeder-02"].shadow["firmwareVersion"], "1.0.0");

    // -03: the new image fails its self-test, the bootloader rolls back.
    let (status, why, version) = reason("pet_feeder-03");
    assert_eq!((status.as_str(), why.as_str(), version), ("FAILED", "boot_failed", Value::from("1.0.0")));
    assert_eq!(summary("pet_feeder-03"), ("1.0.0", "valid", 3), "boot into the new image, then back");
    assert_eq!(clouds["pet_feeder-03"].shadow["firmwareVersion"], "1.0.0");

    // -04: the first download drops mid-body and resumes from there.
    assert_eq!(reason("pet_feeder-04").0, "SUCCEEDED");
    assert_eq!(summary("pet_feeder-04"), ("2.1.0", "valid", 2));
    assert_eq!(downloads.requests("/pet_feeder-04/firmware.bin"), [(0, 200), (DROP_AT, 206)]);

    // -05: refused by the broker, so it never had a session nor a job.
    assert!(!states["pet_feeder-05"].connected && states["pet_feeder-01"].connected);
    assert!(clouds["pet_feeder-05"].jobs.is_empty());
    assert_eq!(summary("pet_feeder-05"), ("1.0.0", "valid", 1));
    assert!(states.values().all(|s| s.last_error.is_none()), "{states:#?}");
}

/// A field of /proc/self/status (Linux), for the figures.
fn proc_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

#[test]
fn mosquitto_four_hundred_devices_connect_report_their_versions_and_stop() {
    let types = [ty("pet_feeder"), ty("smart_plug"), ty("motion_sensor"), ty("weather_station")];
    let specs = demo_fleet(&types, 100, FaultRates::default(), 9).unwrap();
    let things: Vec<String> = specs.iter().map(|s| s.thing.to_string()).collect();
    let Some(broker) = broker(&users(&things)) else { return };
    let cloud = TestCloud::start(broker.port, &things, Box::new(|_| None));
    let threads_before: usize = proc_status("Threads:").parse().unwrap_or(0);

    let started = Instant::now();
    let password_for: PasswordFor = Arc::new(|thing: &ThingName| password(thing.as_str()));
    let fleet = SimFleet::start(specs.clone(), FleetConfig::new("127.0.0.1", broker.port, password_for)).unwrap();
    let reported =
        |s: &SimDeviceSpec| cloud.with(s.thing.as_str(), |c| c.shadow["firmwareVersion"] == s.version.to_string());
    let deadline = Instant::now() + Duration::from_secs(50);
    while !specs.iter().all(reported) {
        let missing = specs.iter().filter(|s| !reported(s)).count();
        assert!(Instant::now() < deadline, "{missing} of 400 devices did not report within 50 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_reported = started.elapsed();
    let snapshot = fleet.snapshot();
    let threads: usize = proc_status("Threads:").parse().unwrap_or(0);
    let rss = proc_status("VmRSS:");
    let stopping = Instant::now();
    let left = fleet.stop();
    let stop_took = stopping.elapsed();
    println!(
        "400 devices: all reported in {all_reported:?}; {} fleet threads; RSS {rss}; stop took {stop_took:?}",
        threads.saturating_sub(threads_before)
    );
    drop(broker);
    cloud.finish();

    assert_eq!(left, 0, "every device thread ended within the stop timeout");
    assert!(snapshot.iter().all(|s| s.connected && s.boots == 1 && s.slot_state == "valid"), "{snapshot:#?}");
    let versions: Vec<(&str, &str)> =
        snapshot.iter().map(|s| (s.thing.as_str(), s.firmware_version.as_str())).collect();
    let expected: Vec<(&str, String)> = specs.iter().map(|s| (s.thing.as_str(), s.version.to_string())).collect();
    assert_eq!(versions, expected.iter().map(|(t, v)| (*t, v.as_str())).collect::<Vec<_>>());
    // Two threads a device; other tests of this binary may start or end threads meanwhile.
    let ours = threads.saturating_sub(threads_before);
    assert!(ours < 1_000, "{ours} threads for 400 devices: more than an agent and a pump each");
}

/// Simulated devices over mosquitto, the test as the cloud: each publishes telemetry of its
/// type, honours the commands its demo firmware declares (recalibrate on a co2_monitor,
/// not on a smart_plug), and a reboot reconnects it and counts a boot.
#[test]
fn mosquitto_simulated_devices_publish_telemetry_and_honour_commands() {
    let things: Vec<String> = vec!["co2_monitor-01".into(), "smart_plug-01".into()];
    let Some(broker) = broker(&users(&things)) else { return };
    let mut options = rumqttc::MqttOptions::new("cloud", "127.0.0.1", broker.port);
    options.set_credentials("cloud", "cloud-pw");
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    for t in ["dt/ota/+/telemetry", "$aws/commands/things/+/executions/+/response/json"] {
        client.subscribe(t, rumqttc::QoS::AtLeastOnce).unwrap();
    }
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let (s, done) = (seen.clone(), Arc::new(AtomicBool::new(false)));
    let d = done.clone();
    let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut subacks = 0;
        for event in connection.iter() {
            if d.load(Ordering::SeqCst) {
                return;
            }
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    subacks += 1;
                    if subacks == 2 {
                        let _ = subscribed_tx.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    s.lock()
                        .unwrap()
                        .push((p.topic.clone(), serde_json::from_slice(&p.payload).unwrap_or(Value::Null)));
                }
                _ => {}
            }
        }
    });
    subscribed_rx.recv_timeout(Duration::from_secs(10)).expect("the cloud's subscriptions are acknowledged");
    let wait_for = |topic: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, v)) = seen.lock().unwrap().iter().find(|(t, _)| t == topic) {
                return v.clone();
            }
            assert!(Instant::now() < deadline, "nothing on {topic}: {:?}", seen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let specs = things
        .iter()
        .map(|t| SimDeviceSpec {
            thing: ThingName::parse(t).unwrap(),
            device_type: ty(t.split('-').next().unwrap()),
            version: FirmwareVersion::new(1, 0, 0),
            faults: DeviceFaults::default(),
        })
        .collect();
    let password_for: PasswordFor = Arc::new(|thing: &ThingName| password(thing.as_str()));
    let fleet = SimFleet::start(specs, fleet_config(broker.port, password_for)).unwrap();

    let co2 = wait_for("dt/ota/co2_monitor-01/telemetry");
    let ppm = co2["co2_ppm"].as_i64().expect("CO2 in ppm");
    assert!((400..=2000).contains(&ppm), "{co2}");
    let plug = wait_for("dt/ota/smart_plug-01/telemetry");
    assert!(plug["power_w"].is_number(), "{plug}");

    let command = |thing: &str, id: &str, body: &str| {
        let topic = format!("$aws/commands/things/{thing}/executions/{id}/request/json");
        client.publish(topic, rumqttc::QoS::AtLeastOnce, false, body.as_bytes().to_vec()).unwrap();
        wait_for(&format!("$aws/commands/things/{thing}/executions/{id}/response/json"))
    };
    assert_eq!(command("co2_monitor-01", "cal-1", r#"{"command":"recalibrate"}"#)["status"], "SUCCEEDED");
    let refused = command("smart_plug-01", "cal-2", r#"{"command":"recalibrate"}"#);
    assert_eq!(refused["statusReason"]["reasonCode"], "UNSUPPORTED_COMMAND", "{refused}");
    assert_eq!(command("smart_plug-01", "id-1", r#"{"command":"identify"}"#)["status"], "SUCCEEDED");

    let boots = |thing: &str| fleet.snapshot().into_iter().find(|s| s.thing.as_str() == thing).unwrap();
    assert_eq!(boots("co2_monitor-01").boots, 1);
    assert_eq!(command("co2_monitor-01", "rb-1", r#"{"command":"reboot"}"#)["status"], "SUCCEEDED");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(boots("co2_monitor-01").boots == 2 && boots("co2_monitor-01").connected) {
        assert!(Instant::now() < deadline, "no second boot: {:#?}", fleet.snapshot());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(boots("smart_plug-01").boots, 1, "only the device told to reboot did");

    let left = fleet.stop();
    done.store(true, Ordering::SeqCst);
    drop(broker);
    let _ = thread.join();
    assert_eq!(left, 0);
}
