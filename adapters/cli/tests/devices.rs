//! The real `ota` binary on the demo world's device management: `ota devices show` (the whole
//! status), `ota devices list` with its location, health, state and connectivity filters,
//! `ota devices set-state`, and `ota telemetry` over the week of history `init --demo` writes.
//! Bad input fails with the service's words and changes nothing.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;

fn ota(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ota"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("OTA_DATA_DIR")
        .env_remove("OTA_BACKEND")
        .output()
        .expect("run ota")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = ota(dir, args);
    assert!(out.status.success(), "ota {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = ota(dir, args);
    assert!(!out.status.success(), "ota {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).expect("utf-8")
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(dir, &a)).expect("JSON output")
}

/// The demo world with every device connected but the two the demo has offline, as the
/// simulator leaves them (the registry's connectivity column, which the server's endpoint
/// writes when a device connects).
fn connected_world() -> TempDir {
    let dir = TempDir::new().expect("tempdir");
    ok(dir.path(), &["init", "--demo"]);
    let db = rusqlite::Connection::open(dir.path().join("ota.db")).unwrap();
    let offline = ota_core::demo::OFFLINE.map(|t| format!("'{t}'")).join(", ");
    let n = db.execute(&format!("UPDATE devices SET connected = 1 WHERE thing NOT IN ({offline})"), []).unwrap();
    assert_eq!(n, 102);
    dir
}

/// One such world for the tests that only read.
fn shared() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(connected_world).path()
}

fn things(list: &Value) -> Vec<String> {
    list["devices"].as_array().unwrap().iter().map(|d| d["thing"].as_str().unwrap().to_string()).collect()
}

#[test]
fn devices_show_gives_the_whole_status() {
    let d = shared();
    let out = ok(d, &["devices", "show", "air_quality_monitor-03"]);
    assert!(
        out.starts_with("air_quality_monitor-03 at factory-floor-2: online, health warning (PM2.5 sensor drift)"),
        "{out}"
    );
    for line in [
        "firmware:     ",
        "connected:    yes",
        "location:     factory-floor-2",
        "health:       warning (PM2.5 sensor drift)",
        "state:        active",
        "telemetry:    ",
        "pm2_5_ugm3=",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    // JSON: the DeviceStatus, with the record's fields also at the top as before.
    let s = json(d, &["devices", "show", "mailbox_notifier-04"]);
    assert_eq!(s["connectivity"], "offline", "{s}");
    assert_eq!(s["connected"], false);
    assert_eq!(s["location"], "lab");
    assert_eq!(s["state"], "active");
    assert_eq!(s["health"]["status"], "ok");
    assert!(s["last_seen"].is_string() && s["summary"].as_str().unwrap().contains("offline (last seen "), "{s}");
    assert_eq!(s["device"]["thing"], "mailbox_notifier-04");
    assert_eq!(s["thing"], "mailbox_notifier-04");
    assert_eq!(s["firmware_version"], s["device"]["firmware_version"]);
    assert!(s["telemetry"]["values"].is_object() && s["config"].is_object(), "{s}");
    // Unknown names: close matches, and nothing printed on stdout but the error.
    assert!(fails(d, &["devices", "show", "mailbox_notifier-4"]).contains("mailbox_notifier-04"));
    assert!(fails(d, &["devices", "show", "../x"]).contains("invalid thing name"));
}

#[test]
fn devices_list_filters_by_location_health_state_and_connectivity() {
    let d = shared();
    let line7 = things(&json(d, &["devices", "list", "--location", "Line 7"]));
    assert_eq!(line7.len(), 26, "{line7:?}");
    assert!(line7.iter().all(|t| t.ends_with("-01")), "{line7:?}");
    let floor1 = json(d, &["devices", "list", "--location", "factory-floor-1"]);
    assert_eq!(things(&floor1).len(), 52);
    assert!(
        floor1["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["attributes"]["location"].as_str().unwrap().starts_with("factory-floor-1/")),
        "{floor1}"
    );
    assert_eq!(things(&json(d, &["devices", "list", "--health", "warning"])), ["air_quality_monitor-03"]);
    assert_eq!(things(&json(d, &["devices", "list", "--offline"])), ["mailbox_notifier-04", "sound_level_meter-04"]);
    assert_eq!(things(&json(d, &["devices", "list", "--online"])).len(), 102);
    assert_eq!(
        things(&json(d, &["devices", "list", "--type", "sound_level_meter", "--location", "lab", "--offline"])),
        ["sound_level_meter-04"]
    );
    assert!(things(&json(d, &["devices", "list", "--state", "maintenance"])).is_empty());
    assert_eq!(things(&json(d, &["devices", "list", "--state", "active"])).len(), 104);
    let table = ok(d, &["devices", "list", "--health", "warning"]);
    assert!(table.starts_with("THING") && table.contains("LOCATION") && table.contains("HEALTH"), "{table}");
    assert!(table.contains("factory-floor-2") && table.contains("warning") && table.contains("1 devices"), "{table}");

    assert!(fails(d, &["devices", "list", "--health", "poorly"]).contains("one of ok, warning, error"));
    assert!(fails(d, &["devices", "list", "--state", "broken"]).contains("one of active, maintenance, retired"));
    assert!(fails(d, &["devices", "list", "--location", " / "]).contains("--location"));
    assert!(fails(d, &["devices", "list", "--online", "--offline"]).contains("cannot be used with"));
}

#[test]
fn set_state_is_audited_and_the_same_state_again_changes_nothing() {
    let dir = connected_world();
    let d = dir.path();
    let out = ok(d, &["devices", "set-state", "smart_plug-04", "maintenance", "--reason", "fuse replaced"]);
    assert!(out.contains("smart_plug-04: active -> maintenance"), "{out}");
    assert_eq!(things(&json(d, &["devices", "list", "--state", "maintenance"])), ["smart_plug-04"]);
    assert_eq!(json(d, &["devices", "show", "smart_plug-04"])["state"], "maintenance");
    let again = ok(d, &["devices", "set-state", "smart_plug-04", "Maintenance"]);
    assert!(again.contains("already maintenance; nothing changed"), "{again}");
    let audit = ok(d, &["--json", "audit"]);
    assert!(audit.contains("fuse replaced") && audit.contains("set a device's state"), "{audit}");

    // Bad input changes nothing.
    assert!(fails(d, &["devices", "set-state", "smart_plug-03", "broken"]).contains("one of active, maintenance"));
    assert!(fails(d, &["devices", "set-state", "smart_plug-09", "retired"]).contains("not found"));
    assert_eq!(things(&json(d, &["devices", "list", "--state", "maintenance"])), ["smart_plug-04"]);
    let back = json(d, &["devices", "set-state", "smart_plug-04", "active"]);
    assert_eq!(back["thing"], "smart_plug-04");
    assert!(things(&json(d, &["devices", "list", "--state", "maintenance"])).is_empty());
}

fn at(p: &Value) -> chrono::DateTime<chrono::Utc> {
    p["at"].as_str().unwrap().parse().unwrap()
}

#[test]
fn telemetry_reads_the_history_by_metric_and_time() {
    let d = shared();
    let day = json(d, &["telemetry", "co2_monitor-01", "--metric", "co2_ppm", "--since", "24h"]);
    let day = day.as_array().unwrap();
    // Hourly history: a day holds 24 points (25 if the run straddles an hour's edge).
    assert!((24..=25).contains(&day.len()), "{}", day.len());
    for p in day {
        let keys: Vec<&String> = p["values"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["co2_ppm"], "{p}");
        assert!(p["values"]["co2_ppm"].as_f64().unwrap() > 100.0, "{p}");
    }
    assert!(day.windows(2).all(|w| at(&w[0]) < at(&w[1])), "oldest first");
    let span = at(day.last().unwrap()) - at(&day[0]);
    assert!(span <= chrono::Duration::hours(24), "{span}");
    let week = json(d, &["telemetry", "co2_monitor-01", "--since", "7d"]);
    let week = week.as_array().unwrap();
    assert!(week.len() >= 7 * 24 - 1, "{}", week.len());
    assert!(week[0]["values"].get("temperature_c").is_some(), "{}", week[0]);
    let last3 = json(d, &["telemetry", "co2_monitor-01", "--limit", "3"]);
    assert_eq!(last3.as_array().unwrap().len(), 3);
    assert_eq!(last3[2], *week.last().unwrap(), "the newest points");

    let table = ok(d, &["telemetry", "co2_monitor-01", "--since", "90m"]);
    assert!(table.starts_with("AT") && table.contains("co2_ppm") && table.contains("temperature_c"), "{table}");
    assert!(table.contains("from co2_monitor-01 since "), "{table}");
    let none = ok(d, &["telemetry", "co2_monitor-01", "--metric", "soil_moisture_pct"]);
    assert!(none.contains("no telemetry of soil_moisture_pct from co2_monitor-01"), "{none}");

    for bad in ["yesterday", "24", "0h", "-3h", "99999999999999d"] {
        let err = fails(d, &["telemetry", "co2_monitor-01", &format!("--since={bad}")]);
        assert!(err.contains("--since"), "{bad}: {err}");
    }
    assert!(fails(d, &["telemetry", "co2_monitor-09"]).contains("not found"));
    assert!(fails(d, &["telemetry", "co2_monitor-01", "--limit", "0"]).contains("--limit"));
}
