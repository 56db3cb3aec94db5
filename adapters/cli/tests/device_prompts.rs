//! Device management in plain words through the real binary on the demo world (`ota plan
//! --json`): device questions list exactly the devices they select, commands list each device
//! they would reach and each refusal with its command plan's id, telemetry is one series per
//! metric; and a confirmed `set_state` changes the device's state. `ota demo --headless`
//! runs a command end to end on the simulated fleet.

mod common;

use common::{ok, ota};
use serde_json::{Value, json};
use tempfile::TempDir;

fn plan(dir: &std::path::Path, prompt: &str) -> Value {
    serde_json::from_str(&ok(dir, &["--json", "plan", prompt])).unwrap_or_else(|e| panic!("{prompt}: {e}"))
}

fn field(p: &Value, key: &str, name: &str) -> Vec<String> {
    p[key].as_array().into_iter().flatten().filter_map(|x| x[name].as_str().map(str::to_string)).collect()
}

/// The demo world with every device connected but the demo's offline ones, as the simulator
/// would leave it (no simulator runs here: `init` leaves every device disconnected).
fn demo() -> TempDir {
    let dir = TempDir::new().unwrap();
    ok(dir.path(), &["init", "--demo"]);
    let db = rusqlite::Connection::open(dir.path().join("ota.db")).unwrap();
    let offline = ota_core::demo::OFFLINE;
    db.execute("UPDATE devices SET connected = 1 WHERE thing NOT IN (?1, ?2)", [offline[0], offline[1]]).unwrap();
    dir
}

#[test]
fn device_questions_list_exactly_the_devices_they_select() {
    let dir = demo();
    let d = dir.path();
    let p = plan(d, "Which devices are offline?");
    assert_eq!(p["action"], "device_status", "{p}");
    assert_eq!(field(&p, "devices", "thing"), ["mailbox_notifier-04", "sound_level_meter-04"], "{p}");
    for key in ["commands", "telemetry", "deployments"] {
        assert!(p.get(key).is_none() || p[key] == json!([]), "{key}: {p}");
    }

    let p = plan(d, "Is pet_feeder-03 online?");
    assert_eq!(field(&p, "devices", "thing"), ["pet_feeder-03"], "{p}");
    let dev = &p["devices"][0];
    for (key, want) in [
        ("connected", json!(true)),
        ("health", json!("ok")),
        ("state", json!("active")),
        ("location", json!("factory-floor-2")),
        ("firmware_version", json!("2.0.0")),
    ] {
        assert_eq!(dev[key], want, "{key}: {p}");
    }
    let p = plan(d, "Is mailbox_notifier-04 online?");
    assert_eq!(p["devices"][0]["connected"], false, "{p}");
    assert!(p["message"].as_str().unwrap().contains("offline (last seen"), "{p}");

    let p = plan(d, "What is the status of the weather station on line 7?");
    assert_eq!(field(&p, "devices", "thing"), ["weather_station-01"], "{p}");
    assert_eq!(p["devices"][0]["location"], "factory-floor-1/line-7", "{p}");

    let p = plan(d, "Show devices with warnings");
    assert_eq!(field(&p, "devices", "thing"), ["air_quality_monitor-03"], "{p}");

    let p = plan(d, "List the devices on factory-floor-1");
    let things = field(&p, "devices", "thing");
    assert_eq!(things.len(), 26 * 2, "{p}");
    assert!(things.iter().all(|t| t.ends_with("-01") || t.ends_with("-02")), "{things:?}");
    let mut sorted = things.clone();
    sorted.sort();
    assert_eq!(things, sorted, "sorted by thing");
}

#[test]
fn command_plans_list_each_device_each_refusal_and_their_plan_id() {
    let dir = demo();
    let d = dir.path();
    let p = plan(d, "Reboot mailbox_notifier-04");
    assert_eq!(p["action"], "command", "{p}");
    assert!(p.get("commands").is_none() && p.get("plan_id").is_none(), "nothing to send: {p}");
    assert_eq!(field(&p, "refusals", "target"), ["mailbox_notifier-04"], "{p}");
    assert!(field(&p, "refusals", "reason")[0].contains("offline"), "{p}");

    let p = plan(d, "Reboot pet_feeder-03");
    assert_eq!(p["commands"], json!([{"thing": "pet_feeder-03", "command": "reboot", "parameters": {}}]), "{p}");
    assert!(p["plan_id"].as_str().is_some_and(|id| id.starts_with("cplan-")), "{p}");

    let p = plan(d, "Recalibrate all air quality monitors on line 3");
    assert_eq!(
        p["commands"],
        json!([{"thing": "air_quality_monitor-02", "command": "recalibrate", "parameters": {}}]),
        "{p}"
    );

    let a = plan(d, "Set sample_rate_seconds to 10 on weather_station-02");
    let b = plan(d, "Set the sample rate of weather_station-02 to 10 s");
    let want =
        json!([{"thing": "weather_station-02", "command": "update_config", "parameters": {"sample_rate_seconds": 10}}]);
    assert_eq!((&a["commands"], &b["commands"]), (&want, &want), "{a}\n{b}");
    assert_eq!(a["plan_id"], b["plan_id"]);
    let p = plan(d, "set log_level to debug on weather_station-02");
    assert_eq!(p["commands"][0]["parameters"], json!({"log_level": "debug"}), "{p}");
    let p = plan(d, "Set sample_rate_seconds to 0 on weather_station-02");
    assert!(p.get("commands").is_none(), "{p}");
    assert!(field(&p, "refusals", "reason")[0].contains("out of bounds"), "{p}");

    let p = plan(d, "identify the smart plugs in the lab");
    assert_eq!(field(&p, "commands", "thing"), ["smart_plug-04"], "{p}");

    let p = plan(d, "Put smart_plug-04 into maintenance");
    assert_eq!(
        p["commands"],
        json!([{"thing": "smart_plug-04", "command": "set_state", "parameters": {"state": "maintenance"}}]),
        "{p}"
    );
    // Confirmed by its plan id (no device round trip for a state), it changes the state.
    let id = p["plan_id"].as_str().unwrap().to_string();
    let out = ota(d, &["rollouts", "start", "Put smart_plug-04 into maintenance", "--plan-id", "cplan-000000000000"]);
    assert!(!out.status.success(), "another plan id is refused");
    assert_eq!(plan(d, "Is smart_plug-04 online?")["devices"][0]["state"], "active");
    ok(d, &["rollouts", "start", "Put smart_plug-04 into maintenance", "--plan-id", &id]);
    assert_eq!(plan(d, "Is smart_plug-04 online?")["devices"][0]["state"], "maintenance");
    let p = plan(d, "Which devices are in maintenance?");
    assert_eq!(field(&p, "devices", "thing"), ["smart_plug-04"], "{p}");
    // A group now leaves it out, and says why.
    let p = plan(d, "reboot the smart plugs in the lab");
    assert!(p.get("commands").is_none(), "{p}");
    assert!(field(&p, "refusals", "reason")[0].contains("maintenance"), "{p}");
}

#[test]
fn telemetry_history_is_one_series_per_metric() {
    let dir = demo();
    let d = dir.path();
    let p = plan(d, "Show the last 24 hours of CO2 for co2_monitor-01");
    assert_eq!(p["action"], "telemetry", "{p}");
    assert_eq!(field(&p, "telemetry", "metric"), ["co2_ppm"], "{p}");
    let points = p["telemetry"][0]["points"].as_array().unwrap();
    // `init` writes a week of hourly history up to now.
    assert!((23..=25).contains(&points.len()), "{} points", points.len());
    assert!(points.iter().all(|x| x["value"].as_f64().is_some_and(|v| (100.0..3000.0).contains(&v))), "{p}");
    let p = plan(d, "Show the last 24 hours of CO2 for the weather stations");
    assert_eq!(p["suggestions"].as_array().map(Vec::len), Some(4), "one device at a time: {p}");
}

/// A command end to end: planned, started and delivered to the simulated device, which
/// reboots (its boots count goes up) and answers SUCCEEDED.
#[test]
fn the_headless_demo_runs_a_command_end_to_end() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let out = ota(
        d,
        &[
            "--json",
            "demo",
            "--headless",
            "--prompt",
            "Reboot pet_feeder-03",
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--wait",
            "120",
            "--types",
            "pet_feeder",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the headless JSON: {e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    let commands = report["commands"].as_array().unwrap_or_else(|| panic!("no commands: {report}"));
    assert_eq!(commands.len(), 1, "{report}");
    let c = &commands[0];
    assert_eq!(
        (&c["thing"], &c["command"], &c["status"]),
        (&json!("pet_feeder-03"), &json!("reboot"), &json!("SUCCEEDED"))
    );
    assert!(c["execution_id"].as_str().is_some_and(|id| id.starts_with("cmd-")), "{c}");
    let devices = report["devices"].as_array().unwrap();
    let rebooted = devices.iter().find(|x| x["thing"] == "pet_feeder-03").unwrap();
    let other = devices.iter().find(|x| x["thing"] == "pet_feeder-01").unwrap();
    assert!(rebooted["boots"].as_u64() > other["boots"].as_u64(), "{rebooted} vs {other}");
}
