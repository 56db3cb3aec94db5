//! Rollouts that run, end to end, through the real `ota` binary: the demo world, the local
//! server (embedded MQTT endpoint or mosquitto, jobs engine, signed downloads) and a fleet of
//! simulated devices running the real device agent over simulated flash.
//!
//! The fault campaign of the local-execution issue: corrupted downloads abort the rollout,
//! boot failures roll back and say so, dropped downloads resume, and a server killed with
//! SIGKILL mid-rollout finishes it after a restart with every device accounted for once.
//!
//! The mosquitto variants run when `OTA_TEST_MOSQUITTO=1` (CI sets it and installs
//! mosquitto); without it they say they skipped, and fail under `CI`.

mod common;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http, ok, ota, ota_cmd, spawn, wait_for};
use ota_core::names::DeviceType;
use ota_device::host::{FaultRates, SimDeviceSpec, demo_fleet};
use serde_json::Value;
use tempfile::TempDir;

const PROMPT: &str = "Update all pet_feeder devices to the latest firmware";

/// `ota demo --headless --json` with `prompt` on loopback ports of its own, with `extra`
/// options: its exit status and its JSON (whose `exit_code` must be that status).
fn headless_prompt(dir: &Path, prompt: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "--json",
        "demo",
        "--headless",
        "--prompt",
        prompt,
        "--listen",
        "127.0.0.1:0",
        "--mqtt-listen",
        "127.0.0.1:0",
        "--wait",
        "300",
    ];
    args.extend_from_slice(extra);
    let out = ota(dir, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the headless JSON: {e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let code = out.status.code().expect("an exit status");
    assert_eq!(report["exit_code"], code, "{report}");
    (code, report)
}

/// The headless demo of [`PROMPT`], which must have run to the end (exit 0, or 3 when devices
/// failed or the rollout aborted).
fn headless(dir: &Path, extra: &[&str]) -> Value {
    let (code, report) = headless_prompt(dir, PROMPT, extra);
    assert!(code == 0 || code == 3, "exit {code}: {report}");
    assert_eq!(
        report["result"],
        if report["rollouts"].as_array().is_some_and(|r| r.is_empty()) { "nothing_started" } else { "ended" }
    );
    report
}

fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("ota.db")).expect("open the database")
}

/// (status, reason) of every execution of the only rollout, by thing.
fn executions(dir: &Path) -> BTreeMap<String, (String, String)> {
    let conn = db(dir);
    let mut stmt = conn.prepare("SELECT thing, status, COALESCE(status_details, '{}') FROM executions").unwrap();
    stmt.query_map([], |r| {
        let details: String = r.get(2)?;
        let details: Value = serde_json::from_str(&details).unwrap_or(Value::Null);
        Ok((r.get(0)?, (r.get(1)?, details["reason"].as_str().unwrap_or("").to_string())))
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

/// Devices offered the job at some point.
fn started(dir: &Path) -> usize {
    let n: i64 =
        db(dir).query_row("SELECT COUNT(*) FROM executions WHERE started_at IS NOT NULL", [], |r| r.get(0)).unwrap();
    usize::try_from(n).unwrap()
}

/// What each device reported in its shadow, as the registry holds it.
fn reported_versions(dir: &Path) -> BTreeMap<String, String> {
    let conn = db(dir);
    let mut stmt = conn.prepare("SELECT thing, COALESCE(firmware_version, '') FROM devices").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<rusqlite::Result<_>>().unwrap()
}

/// Every simulated device runs a valid image, and its shadow says the version it runs.
fn assert_fleet_sound(dir: &Path, report: &Value) {
    let reported = reported_versions(dir);
    let devices = report["devices"].as_array().expect("devices");
    assert!(!devices.is_empty());
    for d in devices {
        let thing = d["thing"].as_str().unwrap();
        assert_eq!(d["slot_state"], "valid", "{thing} runs an image that is not valid: {d}");
        assert_eq!(
            reported.get(thing).map(String::as_str),
            d["firmware_version"].as_str(),
            "{thing}'s shadow does not say what it runs"
        );
    }
}

fn fleet(per_type: u32, rates: FaultRates, seed: u64) -> Vec<SimDeviceSpec> {
    demo_fleet(&[DeviceType::parse("pet_feeder").unwrap()], per_type, rates, seed).unwrap()
}

#[test]
fn the_headless_demo_updates_a_fleet_and_prints_the_documented_json() {
    let dir = TempDir::new().unwrap();
    let report = headless(dir.path(), &["--types", "pet_feeder", "--devices-per-type", "8"]);
    let rollouts = report["rollouts"].as_array().expect("rollouts");
    assert_eq!(rollouts.len(), 1, "{report}");
    let r = &rollouts[0];
    for key in [
        "job_id",
        "device_type",
        "version",
        "status",
        "succeeded",
        "failed",
        "canceled",
        "timed_out",
        "rejected",
        "executions",
    ] {
        assert!(r.get(key).is_some(), "the contract's {key} is missing: {r}");
    }
    assert_eq!((report["exit_code"].as_i64(), report["result"].as_str()), (Some(0), Some("ended")), "{report}");
    assert_eq!(report["items"][0]["result"], "started", "{report}");
    assert_eq!(report["summary"], format!("started {} (pet_feeder)", r["job_id"].as_str().unwrap()));
    let executions = r["executions"].as_array().unwrap();
    assert_eq!(executions.len(), 6, "{r}");
    assert!(executions.iter().all(|e| e["status"] == "SUCCEEDED" && e["reason"].is_null()), "{r}");
    assert_eq!(report["waiting"], serde_json::json!([]));
    assert_eq!((r["device_type"].as_str(), r["version"].as_str()), (Some("pet_feeder"), Some("3.0.0")));
    assert_eq!(r["status"], "completed");
    // Devices 4 and 8 already run the latest; the other six update.
    assert_eq!((r["succeeded"].as_u64(), r["failed"].as_u64(), r["canceled"].as_u64()), (Some(6), Some(0), Some(0)));
    for d in report["devices"].as_array().unwrap() {
        assert_eq!((d["firmware_version"].as_str(), d["slot_state"].as_str()), (Some("3.0.0"), Some("valid")), "{d}");
    }
    assert_fleet_sound(dir.path(), &report);
    // A second run starts nothing new: every device already runs the latest.
    let again = headless(dir.path(), &["--types", "pet_feeder", "--devices-per-type", "8"]);
    assert_eq!(again["rollouts"].as_array().map(Vec::len), Some(0), "{again}");
    assert_eq!((again["exit_code"].as_i64(), again["result"].as_str()), (Some(0), Some("nothing_started")));
}

/// The whole fleet with only two types simulated: the other types' devices never connect, so
/// the demo returns once only they are left (it used to wait forever), naming them, exit 4.
#[test]
fn the_headless_demo_returns_when_only_offline_devices_are_left() {
    let dir = TempDir::new().unwrap();
    let args = ["--types", "pet_feeder,smart_plug", "--devices-per-type", "6"];
    let (code, report) = headless_prompt(dir.path(), "Upgrade the whole fleet to the latest firmware", &args);
    assert_eq!((code, report["result"].as_str()), (4, Some("only_offline_left")), "{report}");
    let rollouts = report["rollouts"].as_array().unwrap();
    for r in rollouts.iter().filter(|r| r["device_type"] == "pet_feeder" || r["device_type"] == "smart_plug") {
        assert_eq!((r["status"].as_str(), r["succeeded"].as_u64()), (Some("completed"), Some(5)), "{r}");
    }
    let waiting = report["waiting"].as_array().unwrap();
    assert!(!waiting.is_empty());
    for w in waiting {
        let thing = w["thing"].as_str().unwrap();
        assert!(!thing.starts_with("pet_feeder") && !thing.starts_with("smart_plug"), "{w}");
        assert_eq!((w["status"].as_str(), w["connected"].as_bool()), (Some("QUEUED"), Some(false)), "{w}");
    }
    // Every waiting device belongs to a rollout the report lists, still in progress.
    let in_progress: Vec<&str> =
        rollouts.iter().filter(|r| r["status"] == "in_progress").map(|r| r["job_id"].as_str().unwrap()).collect();
    assert!(waiting.iter().all(|w| in_progress.contains(&w["rollout_id"].as_str().unwrap())), "{report}");
}

/// 100 pet feeders, 20 % of them with corrupted downloads, the default policy.
fn corrupt_campaign(dir: &Path, extra: &[&str]) {
    let mut args = vec!["--types", "pet_feeder", "--devices-per-type", "100", "--corrupt-rate", "0.2", "--seed", "7"];
    args.extend_from_slice(extra);
    let report = headless(dir, &args);
    let r = &report["rollouts"][0];
    assert_eq!(r["status"], "aborted", "{r}");
    assert_eq!(report["exit_code"], 3, "an aborted rollout exits 3");
    let listed = r["executions"].as_array().unwrap();
    assert!(
        listed.iter().any(|e| e["status"] == "FAILED" && e["reason"] == "sha256_mismatch"),
        "each device's execution with its reason: {r}"
    );
    let n = started(dir);
    assert!(n < 30, "{n} devices were started before the abort");
    let executions = executions(dir);
    let total = executions.len();
    assert_eq!(total, 75, "25 of the 100 already run the latest");
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for (status, reason) in executions.values() {
        *by_status.entry(status.as_str()).or_default() += 1;
        if status == "FAILED" {
            assert_eq!(reason, "sha256_mismatch", "a failure other than the corrupted download");
        }
    }
    let ended = by_status.get("SUCCEEDED").unwrap_or(&0) + by_status.get("FAILED").unwrap_or(&0);
    assert_eq!(
        by_status.get("CANCELED").copied().unwrap_or(0),
        total - ended,
        "every other device is canceled: {by_status:?}"
    );
    assert!(by_status.get("FAILED").copied().unwrap_or(0) >= 1);
    assert_fleet_sound(dir, &report);
    // Devices with a corrupted download kept their image; only successes moved.
    let moved = report["devices"].as_array().unwrap().iter().filter(|d| d["firmware_version"] == "3.0.0").count();
    assert_eq!(moved, 25 + by_status.get("SUCCEEDED").copied().unwrap_or(0));
}

#[test]
fn an_abort_with_revert_on_abort_returns_every_updated_device_to_its_previous_version() {
    let dir = TempDir::new().unwrap();
    let prompt = "Update all pet_feeder devices to the latest firmware and roll back the updated ones if it aborts";
    let args = ["--types", "pet_feeder", "--devices-per-type", "100", "--corrupt-rate", "0.2", "--seed", "7"];
    let (code, report) = headless_prompt(dir.path(), prompt, &args);
    assert_eq!(code, 3, "an aborted rollout exits 3: {report}");
    assert_eq!(report["result"], "ended", "{report}");
    let rollouts = report["rollouts"].as_array().unwrap();
    let update = &rollouts[0];
    assert_eq!(update["status"], "aborted", "{update}");
    let moved = update["executions"].as_array().unwrap().iter().filter(|e| e["status"] == "SUCCEEDED").count();
    assert!(moved > 0, "some devices updated before the abort: {update}");
    // The reverts: linked to the update, one per version the moved devices came from.
    let reverts: Vec<&Value> = rollouts.iter().filter(|r| r["revert_of"] == update["job_id"]).collect();
    assert!(!reverts.is_empty(), "{report}");
    assert!(reverts.iter().all(|r| r["status"] == "completed" && r["failed"] == 0), "{reverts:?}");
    let reverted: u64 = reverts.iter().map(|r| r["succeeded"].as_u64().unwrap()).sum();
    assert_eq!(reverted as usize, moved, "every updated device was reverted, once");
    // Every device runs what it ran before the request: -n with n mod 4 in {1, 2} 1.0.0, 3 2.0.0, 0 3.0.0.
    for d in report["devices"].as_array().unwrap() {
        let thing = d["thing"].as_str().unwrap();
        let n: u32 = thing.rsplit('-').next().unwrap().parse().unwrap();
        let before = match n % 4 {
            1 | 2 => "1.0.0",
            3 => "2.0.0",
            _ => "3.0.0",
        };
        assert_eq!(d["firmware_version"], before, "{thing}: {d}");
    }
    assert_fleet_sound(dir.path(), &report);
    // The audit trail names the engine as the one who reverted, and why.
    let audit = ok(dir.path(), &["--json", "audit"]);
    assert!(audit.contains("\"revert\"") && audit.contains("reverting"), "{audit}");
}

#[test]
fn corrupted_downloads_abort_the_rollout_and_cancel_the_rest() {
    let dir = TempDir::new().unwrap();
    corrupt_campaign(dir.path(), &[]);
}

fn boot_and_drop_campaign(dir: &Path, extra: &[&str]) {
    let rates = FaultRates::new(0.0, 0.25, 0.25).unwrap();
    let specs = fleet(12, rates, 3);
    let mut args = vec![
        "--types",
        "pet_feeder",
        "--devices-per-type",
        "12",
        "--boot-failure-rate",
        "0.25",
        "--drop-rate",
        "0.25",
        "--seed",
        "3",
    ];
    args.extend_from_slice(extra);
    let report = headless(dir, &args);
    let executions = executions(dir);
    let running: BTreeMap<String, String> = report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["thing"].as_str().unwrap().to_string(), d["firmware_version"].as_str().unwrap().to_string()))
        .collect();
    let (mut failing, mut dropping) = (0, 0);
    for s in &specs {
        let Some((status, reason)) = executions.get(s.thing.as_str()) else { continue };
        if s.faults.fail_boot {
            failing += 1;
            assert_eq!((status.as_str(), reason.as_str()), ("FAILED", "boot_failed"), "{}", s.thing);
            assert_eq!(running[s.thing.as_str()], s.version.to_string(), "{} rolled back to what it ran", s.thing);
        } else {
            if s.faults.drop_download {
                dropping += 1;
            }
            assert_eq!(status, "SUCCEEDED", "{} ({:?})", s.thing, s.faults);
            assert_eq!(running[s.thing.as_str()], "3.0.0");
        }
    }
    assert!(failing >= 1 && dropping >= 1, "the seed must put both faults on updated devices");
    assert_eq!(report["exit_code"], 3, "devices failed");
    let listed: BTreeMap<&str, (&str, &str)> = report["rollouts"][0]["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["thing"].as_str().unwrap(), (e["status"].as_str().unwrap(), e["reason"].as_str().unwrap_or(""))))
        .collect();
    for (thing, (status, reason)) in &executions {
        assert_eq!(listed.get(thing.as_str()), Some(&(status.as_str(), reason.as_str())), "{thing}");
    }
    assert_eq!(report["rollouts"][0]["status"], "completed", "9 executed devices stay under min_executed (10)");
    assert_fleet_sound(dir, &report);
}

#[test]
fn boot_failures_roll_back_and_dropped_downloads_resume() {
    let dir = TempDir::new().unwrap();
    boot_and_drop_campaign(dir.path(), &[]);
}

fn count(dir: &Path, sql: &str) -> i64 {
    db(dir).query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

#[test]
fn a_server_killed_mid_rollout_finishes_it_after_a_restart() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    let (http, mqtt) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let serve_args = ["serve", "--listen", http.as_str(), "--mqtt-listen", mqtt.as_str()];
    let logs = TempDir::new().unwrap();
    let server_log = logs.path().join("serve.log");
    let server = spawn(d, &serve_args, &server_log);
    wait_for("the server listens", Duration::from_secs(30), || TcpStream::connect(&mqtt).is_ok());
    let sim_args = ["sim", "--types", "pet_feeder", "--devices-per-type", "40", "--mqtt", mqtt.as_str()];
    let _sim = spawn(d, &sim_args, &logs.path().join("sim.log"));
    wait_for("the devices connect", Duration::from_secs(60), || {
        count(d, "SELECT COUNT(*) FROM devices WHERE device_type = 'pet_feeder' AND connected = 1") == 40
    });
    ok(d, &["rollouts", "start", PROMPT]);
    wait_for("a few devices updated", Duration::from_secs(60), || {
        count(d, "SELECT COUNT(*) FROM executions WHERE status = 'SUCCEEDED'") >= 3
    });
    drop(server); // SIGKILL
    let succeeded_at_kill = count(d, "SELECT COUNT(*) FROM executions WHERE status = 'SUCCEEDED'");
    assert!(succeeded_at_kill < 30, "the rollout ended before the kill; the test proves nothing");
    let _server = spawn(d, &serve_args, &server_log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(d, "SELECT COUNT(*) FROM rollouts WHERE status = 'IN_PROGRESS'") != 0 {
        if Instant::now() > deadline {
            let stuck: Vec<String> =
                executions(d).into_iter().filter(|(_, (s, _))| s != "SUCCEEDED").map(|(t, _)| t).collect();
            let log = std::fs::read_to_string(&server_log).unwrap_or_default();
            for line in log
                .lines()
                .filter(|l| stuck.iter().any(|t| l.contains(&format!("{t}/")) || l.contains(&format!("\"{t}\""))))
            {
                println!("{line}");
            }
            panic!("the rollout did not end after the restart; stuck: {stuck:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status: String = db(d)
        .query_row("SELECT status || ': ' || COALESCE(status_reason, '') FROM rollouts", [], |r| r.get(0))
        .unwrap();
    assert!(status.starts_with("COMPLETED"), "{status}; executions: {:?}", executions(d));
    let executions = executions(d);
    assert_eq!(executions.len(), 30);
    assert!(executions.values().all(|(s, _)| s == "SUCCEEDED"), "{executions:?}");
    assert_eq!(count(d, "SELECT COUNT(*) FROM executions WHERE execution_number <> 1"), 0, "nothing retried");
    assert_eq!(
        count(
            d,
            "SELECT COUNT(*) FROM (SELECT thing FROM rollout_events WHERE kind = 'started' GROUP BY thing HAVING COUNT(*) > 1)"
        ),
        0,
        "a device was started twice"
    );
    assert_eq!(count(d, "SELECT COUNT(DISTINCT thing) FROM rollout_events WHERE kind = 'started'"), 30);
    wait_for("every shadow reports the new version", Duration::from_secs(30), || {
        count(d, "SELECT COUNT(*) FROM devices WHERE device_type = 'pet_feeder' AND firmware_version = '3.0.0'") == 40
    });
}

// ---- On Debian's mosquitto --------------------------------------------------------------

struct Broker {
    child: Child,
    port: u16,
    _conf: TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Provisions the fleet's credentials with `ota devices provision` and starts mosquitto with
/// them; `None` when the mosquitto tests are not enabled.
fn mosquitto_for(dir: &Path, fleet_args: &[&str]) -> Option<(Broker, String)> {
    if std::env::var("OTA_TEST_MOSQUITTO").ok().as_deref() != Some("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed: apt-get install mosquitto); .ci/run does"
        );
        println!("skipped: set OTA_TEST_MOSQUITTO=1 (with mosquitto installed) to run the broker campaign");
        return None;
    }
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("OTA_TEST_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)");
    ok(dir, &["init", "--demo"]);
    let mut args = vec!["sim", "--register-only"];
    args.extend_from_slice(fleet_args);
    ok(dir, &args);
    let conf = TempDir::new().unwrap();
    let password = "cloud-secret-for-the-test";
    let out = ota_cmd(dir)
        .args(["devices", "provision", "--mosquitto"])
        .arg(conf.path())
        .env("OTA_MQTT_CLOUD_PASSWORD", password)
        .output()
        .unwrap();
    assert!(out.status.success(), "provision: {}", String::from_utf8_lossy(&out.stderr));
    for _ in 0..5 {
        let port = free_port();
        let file = conf.path().join("mosquitto.conf");
        std::fs::write(
            &file,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\nuser root\nmax_queued_messages 10000\n",
                conf.path().join("mosquitto.passwd").display(),
                conf.path().join("mosquitto.acl").display()
            ),
        )
        .unwrap();
        let mut child =
            Command::new(&bin).arg("-c").arg(&file).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let up = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break false;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if up {
            let url = format!("mqtt://ota-cloud:{password}@127.0.0.1:{port}");
            return Some((Broker { child, port, _conf: conf }, url));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("OTA_TEST_MOSQUITTO=1 but mosquitto would not start");
}

#[test]
fn mosquitto_corrupted_downloads_abort_the_rollout_and_cancel_the_rest() {
    let dir = TempDir::new().unwrap();
    let Some((broker, url)) = mosquitto_for(dir.path(), &["--types", "pet_feeder", "--devices-per-type", "100"]) else {
        return;
    };
    corrupt_campaign(dir.path(), &["--mqtt-url", url.as_str()]);
    assert!(broker.port > 0);
}

#[test]
fn mosquitto_boot_failures_roll_back_and_dropped_downloads_resume() {
    let dir = TempDir::new().unwrap();
    let Some((broker, url)) = mosquitto_for(dir.path(), &["--types", "pet_feeder", "--devices-per-type", "12"]) else {
        return;
    };
    boot_and_drop_campaign(dir.path(), &["--mqtt-url", url.as_str()]);
    assert!(broker.port > 0);
}

#[test]
fn the_http_api_needs_a_token_and_answers_through_the_service() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    let (api, mqtt) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let logs = TempDir::new().unwrap();
    let _server =
        spawn(d, &["serve", "--listen", api.as_str(), "--mqtt-listen", mqtt.as_str()], &logs.path().join("s.log"));
    wait_for("the server listens", Duration::from_secs(30), || TcpStream::connect(&api).is_ok());
    let operator = ok(d, &["token", "create", "--role", "operator", "--ttl", "10m"]);
    let operator = operator.trim();
    let viewer = ok(d, &["token", "create", "--role", "viewer", "--ttl", "10m"]);
    let viewer = viewer.trim();

    // The page and the health check are public; everything else under /api needs a token.
    let (status, head, page) = http(&api, "GET", "/", None, None);
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("text/html") && page.contains("ota-config"), "{head}");
    assert_eq!(http(&api, "GET", "/api/health", None, None).0, 200);
    let (status, head, _) = http(&api, "GET", "/api/rollouts", None, None);
    assert_eq!(status, 401);
    assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    assert_eq!(http(&api, "GET", "/api/rollouts", Some("not-a-token"), None).0, 401);

    let (status, _, body) = http(&api, "GET", "/api/whoami", Some(viewer), None);
    assert_eq!(status, 200, "{body}");
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["roles"], serde_json::json!(["viewer"]), "{me}");
    let (status, _, body) = http(&api, "GET", "/api/devices?type=pet_feeder", Some(viewer), None);
    assert_eq!(status, 200, "{body}");
    let devices: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(4), "{devices}");

    let ask = r#"{"prompt": "Update all pet_feeder devices to the latest firmware"}"#;
    let (status, _, body) = http(&api, "POST", "/api/ask", Some(operator), Some(ask));
    assert_eq!(status, 200, "{body}");
    let plan: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plan["plan"]["deployments"][0]["device_type"], "pet_feeder", "{plan}");
    assert_eq!(plan["started"], Value::Null, "without execute it only plans");
    // A viewer's token cannot plan an update, whatever the words say.
    let (status, _, body) = http(&api, "POST", "/api/ask", Some(viewer), Some(ask));
    assert_eq!(status, 403, "{body}");

    // The chat plans and waits for a confirmation; a viewer's confirmation is refused.
    let chat = r#"{"message": "Update all pet_feeder devices to the latest firmware"}"#;
    let (status, _, body) = http(&api, "POST", "/api/chat", Some(operator), Some(chat));
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["answered_by"], "intent", "{reply}");
    assert_eq!(reply["pending"]["kind"], "start", "{reply}");
    let plan_id = reply["plan"]["plan_id"].as_str().unwrap().to_string();
    assert_eq!(count(d, "SELECT COUNT(*) FROM rollouts"), 0, "nothing starts before the confirmation");
    let confirm = serde_json::json!({"request": reply["plan"]["request"]}).to_string();
    let (status, _, body) =
        http(&api, "POST", &format!("/api/plans/{plan_id}/start"), Some(viewer), Some(confirm.as_str()));
    assert_eq!(status, 200, "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refused["error"], "forbidden", "{refused}");
    assert_eq!(count(d, "SELECT COUNT(*) FROM rollouts"), 0);

    // The gate holds here as everywhere: beehive_scale is disabled in the demo world. Nothing
    // to start is the plan (saying why), as in every front door.
    let refused = r#"{"prompt": "Update all beehive_scale devices to the latest firmware", "execute": true}"#;
    let (status, _, body) = http(&api, "POST", "/api/ask", Some(operator), Some(refused));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((&answer["started"], &answer["plan"]["refusals"][0]["target"]), (&Value::Null, &"beehive_scale".into()));
    assert_eq!(count(d, "SELECT COUNT(*) FROM rollouts"), 0, "nothing was started");

    // Firmware downloads need a signed link.
    let (status, _, _) = http(&api, "GET", "/firmwares/v3.0.0/pet_feeder/firmware.bin", None, None);
    assert_eq!(status, 403);
}

/// The official Python MCP SDK against the real server, over streamable HTTP with a token and
/// over stdio. Runs when `OTA_TEST_MCP_CLIENT=1` (CI sets it and installs `mcp` from PyPI).
#[test]
fn a_third_party_mcp_client_plans_starts_and_watches_a_rollout() {
    if std::env::var("OTA_TEST_MCP_CLIENT").ok().as_deref() != Some("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: set OTA_TEST_MCP_CLIENT=1 (with the Python MCP SDK: pip install mcp); .ci/run does"
        );
        println!("skipped: set OTA_TEST_MCP_CLIENT=1 (with `pip install mcp`) to run the Python MCP client");
        return;
    }
    let sdk = Command::new("python3").args(["-c", "import mcp"]).output();
    assert!(
        sdk.as_ref().is_ok_and(|o| o.status.success()),
        "OTA_TEST_MCP_CLIENT=1 but the Python MCP SDK cannot be imported (pip install mcp): {sdk:?}"
    );
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    let (http_addr, mqtt) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let logs = TempDir::new().unwrap();
    let _server = spawn(
        d,
        &["serve", "--listen", http_addr.as_str(), "--mqtt-listen", mqtt.as_str()],
        &logs.path().join("s.log"),
    );
    wait_for("the server listens", Duration::from_secs(30), || TcpStream::connect(&mqtt).is_ok());
    let _sim = spawn(d, &["sim", "--types", "pet_feeder", "--mqtt", mqtt.as_str()], &logs.path().join("sim.log"));
    wait_for("the devices connect", Duration::from_secs(60), || {
        count(d, "SELECT COUNT(*) FROM devices WHERE device_type = 'pet_feeder' AND connected = 1") == 4
    });
    // Without a token: 401 pointing at the protected-resource metadata.
    let (status, head, _) = http(&http_addr, "POST", "/mcp", None, Some("{}"));
    assert_eq!(status, 401);
    assert!(head.contains("/.well-known/oauth-protected-resource"), "{head}");
    let token = ok(d, &["token", "create", "--role", "operator", "--ttl", "10m"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let url = format!("http://{http_addr}/mcp");
    let out = Command::new("python3").arg(&script).args(["http", url.as_str(), token.trim()]).output().unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    println!("{transcript}");
    assert!(out.status.success(), "{transcript}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(transcript.contains("get_rollout: COMPLETED"), "{transcript}");
    assert!(transcript.contains("prompts: rollback, safe_rollout"), "{transcript}");
    assert!(transcript.contains("resource: ota://rollouts/"), "{transcript}");
    // A viewer's token can read but not start.
    let viewer = ok(d, &["token", "create", "--role", "viewer"]);
    let out = Command::new("python3").arg(&script).args(["http", url.as_str(), viewer.trim()]).output().unwrap();
    assert!(!out.status.success(), "a viewer started a rollout");
    let out = Command::new("python3").arg(&script).args(["stdio", env!("CARGO_BIN_EXE_ota")]).arg(d).output().unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    println!("{transcript}");
    assert!(out.status.success(), "{transcript}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn serve_accepts_tokens_from_a_configured_oidc_issuer_instead_of_its_own() {
    // The "other issuer" is another data dir's key, published as a JWKS file.
    let other = TempDir::new().unwrap();
    ok(other.path(), &["init"]);
    let jwks = ok(other.path(), &["token", "jwks"]);
    let jwks_file = other.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let foreign = ok(other.path(), &["token", "create", "--role", "viewer"]);

    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    let own = ok(d, &["token", "create", "--role", "admin"]);
    let (api, mqtt) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let logs = TempDir::new().unwrap();
    let jwks_arg = jwks_file.to_str().unwrap();
    let args = [
        "serve",
        "--listen",
        api.as_str(),
        "--mqtt-listen",
        mqtt.as_str(),
        "--oidc-issuer",
        "ota-local",
        "--oidc-jwks",
        jwks_arg,
        "--oidc-audience",
        "ota",
        "--roles-claim",
        "roles",
        "--oidc-client-id",
        "ota-page",
        "--page-signin-domain",
        "https://fleet.auth.eu-west-1.amazoncognito.com",
    ];
    let _server = spawn(d, &args, &logs.path().join("s.log"));
    wait_for("the server listens", Duration::from_secs(30), || TcpStream::connect(&mqtt).is_ok());
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
    let post = |token: &str| {
        use std::io::{Read, Write};
        let mut conn = TcpStream::connect(&api).unwrap();
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\n\r\n{list}",
            token.trim(),
            list.len()
        );
        conn.write_all(req.as_bytes()).unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
    };
    let accepted = post(&foreign);
    assert!(accepted.starts_with("HTTP/1.1 200"), "{accepted}");
    // A viewer's token: the read tools, not the ones its role may not use.
    assert!(accepted.contains("list_firmware") && !accepted.contains("plan_update"), "{accepted}");
    let refused = post(&own);
    assert!(refused.starts_with("HTTP/1.1 401"), "the local key is not the configured issuer's: {refused}");

    // The chat API takes the same tokens, and the page signs in at the issuer's hosted UI.
    assert_eq!(http(&api, "GET", "/api/whoami", Some(foreign.trim()), None).0, 200);
    assert_eq!(http(&api, "GET", "/api/whoami", Some(own.trim()), None).0, 401);
    let (_, head, page) = http(&api, "GET", "/", None, None);
    assert!(page.contains(r#""kind":"cognito""#) && page.contains(r#""client_id":"ota-page""#), "{page:.300}");
    assert!(head.contains("https://fleet.auth.eu-west-1.amazoncognito.com"), "the CSP allows it: {head}");
    let lonely = ota(d, &["serve", "--page-signin-domain", "https://x.auth.eu-west-1.amazoncognito.com"]);
    assert!(!lonely.status.success(), "a sign-in domain needs an issuer and a client id");
}

/// A one-answer OpenAI-compatible server on a thread: every chat completion is `answer`.
/// Returns its base URL and the request bodies it received.
fn scripted_model(answer: &'static str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            let reply = serde_json::json!({
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 321, "completion_tokens": 12}
            })
            .to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                reply.len()
            );
            let _ = conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(reply.as_bytes()));
        }
    });
    (url, received)
}

/// `ota serve --model openai:…` asks the configured server what the intent engine does not
/// understand (with the MCP tools), and answers common commands without it.
#[test]
fn serve_with_a_model_answers_what_the_intent_engine_cannot() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    let bad = ota(d, &["serve", "--model", "gpt-4"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("openai:MODEL"), "{bad:?}");

    let (model_url, received) = scripted_model("Your feeders are fine; 3 of 4 could move to 3.0.0.");
    let (api, mqtt) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let logs = TempDir::new().unwrap();
    let args =
        ["serve", "--listen", &api, "--mqtt-listen", &mqtt, "--model", "openai:scripted", "--model-url", &model_url];
    let _server = spawn(d, &args, &logs.path().join("s.log"));
    wait_for("the server listens", Duration::from_secs(30), || TcpStream::connect(&api).is_ok());
    let token = ok(d, &["token", "create", "--role", "operator", "--ttl", "10m"]);
    let token = token.trim();

    let (_, _, page) = http(&api, "GET", "/", None, None);
    assert!(page.contains("openai:scripted"), "the page names the model");
    let common = r#"{"message": "Update all pet_feeder devices to the latest firmware"}"#;
    let (status, _, body) = http(&api, "POST", "/api/chat", Some(token), Some(common));
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((reply["answered_by"].as_str(), reply["model_calls"].as_u64()), (Some("intent"), Some(0)), "{reply}");
    assert!(received.lock().unwrap().is_empty());

    let open = r#"{"message": "any advice?"}"#;
    let (status, _, body) = http(&api, "POST", "/api/chat", Some(token), Some(open));
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["answered_by"], "model", "{reply}");
    assert_eq!(reply["reply"], "Your feeders are fine; 3 of 4 could move to 3.0.0.");
    assert_eq!(reply["usage"]["input_tokens"], 321);
    let sent = received.lock().unwrap();
    let tools: Vec<&str> =
        sent[0]["tools"].as_array().unwrap().iter().filter_map(|t| t["function"]["name"].as_str()).collect();
    assert!(tools.contains(&"plan_update") && tools.contains(&"start_rollout"), "the MCP tools: {tools:?}");
    assert_eq!(count(d, "SELECT COUNT(*) FROM rollouts"), 0);
}
