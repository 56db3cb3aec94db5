//! The intent engine's wider forms through the real binary on the demo world (`ota plan`):
//! contractions and curly apostrophes, device numbers written with spaces or as words,
//! "not on the latest firmware", and "stop all rollouts". Each must plan what the words pin
//! down, and never guess what they do not.

mod common;

use common::ok;
use serde_json::Value;
use tempfile::TempDir;

fn plan(dir: &std::path::Path, prompt: &str) -> Value {
    serde_json::from_str(&ok(dir, &["--json", "plan", prompt])).unwrap_or_else(|e| panic!("{prompt}: {e}"))
}

fn things(p: &Value) -> Vec<String> {
    let mut out: Vec<String> = p["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["things"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

fn demo() -> TempDir {
    let dir = TempDir::new().unwrap();
    ok(dir.path(), &["init", "--demo"]);
    dir
}

#[test]
fn contractions_and_curly_apostrophes_read_as_written() {
    let dir = demo();
    let d = dir.path();
    for prompt in ["Show every smart_doorbell that's on 1.x", "Show every smart_doorbell that’s on 1.x"] {
        let p = plan(d, prompt);
        assert_eq!(p["action"], "fleet_status", "{prompt}: {p}");
        assert!(p["message"].as_str().unwrap().contains("smart_doorbell"), "{prompt}: {p}");
    }
    for prompt in
        ["Don't update the pet feeders", "don’t roll back pet_feeder-03 to 1.0.0", "Please do not upgrade the fleet"]
    {
        let p = plan(d, prompt);
        assert!(
            p["deployments"].as_array().is_none_or(|d| d.is_empty()),
            "a negation never plans a change: {prompt}: {p}"
        );
        assert!(!matches!(p["action"].as_str(), Some("update" | "rollback")), "{prompt}: {p}");
    }
}

#[test]
fn device_numbers_with_spaces_or_words_name_the_device_and_nothing_is_guessed() {
    let dir = demo();
    let d = dir.path();
    // weather_station-03 runs 2.0.0; -02 already runs 1.0.0.
    let p = plan(d, "Roll back weather station 3 to 1.0.0");
    assert_eq!(things(&p), ["weather_station-03"], "{p}");
    let p = plan(d, "Roll back weather station 2 to 1.0.0");
    assert_eq!(p["request"]["target"]["things"], serde_json::json!(["weather_station-02"]), "{p}");
    let p = plan(d, "update pet feeder three to 3.0.0");
    assert_eq!(things(&p), ["pet_feeder-03"], "{p}");
    let p = plan(d, "update pet feeder number 2 to 3.0.0");
    assert_eq!(things(&p), ["pet_feeder-02"], "{p}");
    // A number that names no device is refused with close matches, never a guess.
    let p = plan(d, "update pet feeder 9 to 3.0.0");
    assert!(things(&p).is_empty(), "{p}");
    assert!(!p["refusals"].as_array().unwrap().is_empty(), "{p}");
    // "to 2" stays a version: the highest 2.x.
    let p = plan(d, "update the pet feeders to 2");
    assert_eq!(p["deployments"][0]["version"], "2.1.0", "{p}");
}

#[test]
fn not_on_the_latest_firmware_is_a_condition_for_status_and_updates() {
    let dir = demo();
    let d = dir.path();
    let p = plan(d, "Show me every device that isn't on the latest firmware");
    assert_eq!(p["action"], "fleet_status", "{p}");
    // -01 and -02 of every type run 1.0.0, -03 2.0.0 (the latest of 20 types), -04 the latest:
    // 6 types with a newer latest have 3 such devices, the 20 others 2.
    let message = p["message"].as_str().unwrap();
    assert!(message.starts_with("58 devices not on the latest firmware of their type"), "{message}");
    assert!(message.contains("pet_feeder (latest 3.0.0): 3"), "{message}");
    assert!(message.contains("air_quality_monitor-01, air_quality_monitor-02;"), "{message}");
    let p = plan(d, "update every device not on the latest");
    assert_eq!(p["action"], "update", "{p}");
    assert!(things(&p).contains(&"pet_feeder-01".to_string()) && !things(&p).contains(&"pet_feeder-04".to_string()));
}

#[test]
fn stop_all_rollouts_names_every_active_rollout_for_one_confirmation() {
    let dir = demo();
    let d = dir.path();
    for prompt in ["Update all pet_feeder devices to 3.0.0", "Update all smart_plug devices to 3.0.0"] {
        ok(d, &["rollouts", "start", prompt]);
    }
    for prompt in ["Stop all rollouts", "cancel everything", "cancel all active rollouts"] {
        let p = plan(d, prompt);
        assert_eq!(p["action"], "cancel", "{prompt}: {p}");
        assert_eq!(p["rollouts"].as_array().map(Vec::len), Some(2), "{prompt}: {p}");
    }
    // "stop it" with two active still asks which.
    let p = plan(d, "stop it");
    assert!(p["rollouts"].as_array().is_none_or(|r| r.is_empty()), "{p}");
    assert_eq!(p["suggestions"].as_array().map(Vec::len), Some(2), "{p}");
    // Planning changed nothing: both are still active.
    let listed: Value = serde_json::from_str(&ok(d, &["--json", "rollouts", "list"])).unwrap();
    assert_eq!(listed.as_array().unwrap().iter().filter(|r| r["status"] == "IN_PROGRESS").count(), 2);
}

/// A deployment as (device type, action, version, devices).
type Dep = (String, String, String, usize);

fn deployments(p: &Value) -> Vec<Dep> {
    p["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["device_type"].as_str().unwrap_or_default().to_string(),
                d["action"].as_str().unwrap_or_default().to_string(),
                d["version"].as_str().unwrap_or_default().to_string(),
                d["things"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

fn refused(p: &Value) -> Vec<String> {
    p["refusals"].as_array().into_iter().flatten().filter_map(|r| r["target"].as_str().map(str::to_string)).collect()
}

fn dep(t: &str, action: &str, version: &str, devices: usize) -> Dep {
    (t.to_string(), action.to_string(), version.to_string(), devices)
}

#[test]
fn several_changes_in_one_request_are_one_plan_with_a_deployment_per_type() {
    let dir = demo();
    let d = dir.path();
    // Demo: -01 and -02 run 1.0.0, -03 2.0.0, -04 the type's latest; beehive_scale's gate is closed.
    let cases: [(&str, Vec<Dep>); 7] = [
        (
            "Update energy_meter to 2.0.0 and roll back fish_tank_monitor to 1.0.0",
            vec![dep("energy_meter", "update", "2.0.0", 2), dep("fish_tank_monitor", "rollback", "1.0.0", 2)],
        ),
        (
            "update pet_feeder to 3.0.0; also roll back smart_plug to 2.0.0",
            vec![dep("pet_feeder", "update", "3.0.0", 3), dep("smart_plug", "rollback", "2.0.0", 1)],
        ),
        (
            "upgrade energy_meter to the latest and roll back fish_tank_monitor to 1.0.0",
            vec![dep("energy_meter", "update", "2.0.0", 2), dep("fish_tank_monitor", "rollback", "1.0.0", 2)],
        ),
        (
            "Roll back pet_feeder-04 to 2.1.0 and weather_station-03 to 1.1.0",
            vec![dep("pet_feeder", "rollback", "2.1.0", 1), dep("weather_station", "rollback", "1.1.0", 1)],
        ),
        (
            "update smart plugs to 3.0.0, also update the air quality monitors to 1.1.0",
            vec![dep("smart_plug", "update", "3.0.0", 3), dep("air_quality_monitor", "update", "1.1.0", 2)],
        ),
        (
            "Update vision_ai_face_detector and pet_feeder to 3.0.0 then update energy_meter to 2.0.0",
            vec![
                dep("pet_feeder", "update", "3.0.0", 3),
                dep("vision_ai_face_detector", "update", "3.0.0", 3),
                dep("energy_meter", "update", "2.0.0", 2),
            ],
        ),
        (
            "update energy_meter-01 to 2.0.0. Then roll back fish_tank_monitor-04 to 1.0.0.",
            vec![dep("energy_meter", "update", "2.0.0", 1), dep("fish_tank_monitor", "rollback", "1.0.0", 1)],
        ),
    ];
    for (prompt, want) in cases {
        let p = plan(d, prompt);
        assert_eq!(deployments(&p), want, "{prompt}: {p}");
        assert!(p["plan_id"].is_string() && refused(&p).is_empty(), "{prompt}: {p}");
        assert_eq!(p["requests"].as_array().map(Vec::len), Some(2), "one typed request per change: {prompt}: {p}");
        assert!(p.get("request").is_none(), "{prompt}: {p}");
    }
    // Each change keeps its own action: an update to an older version moves no device (an
    // update never downgrades), as it would alone; the other change is still planned.
    let p = plan(d, "Update energy_meter to 2.0.0 and fish_tank_monitor to 1.0.0");
    assert_eq!(deployments(&p), [dep("energy_meter", "update", "2.0.0", 2)], "{p}");
    let held: Vec<&str> = p["held_back"].as_array().unwrap().iter().filter_map(|h| h["thing"].as_str()).collect();
    assert_eq!(held, ["fish_tank_monitor-03", "fish_tank_monitor-04"], "{p}");
    // Requests of one change keep their reading and their JSON shape.
    for (prompt, devices) in
        [("update pet_feeder and energy_meter to 2.0.0", 4), ("update pet_feeder from 1.0.0 to 2.0.0", 2)]
    {
        let p = plan(d, prompt);
        assert!(p["request"].is_object() && p.get("requests").is_none(), "{prompt}: {p}");
        assert_eq!(things(&p).len(), devices, "{prompt}: {p}");
    }
}

#[test]
fn a_refused_change_is_listed_and_the_allowed_ones_still_planned() {
    let dir = demo();
    let d = dir.path();
    for (prompt, planned, refusal) in [
        (
            "Update pet_feeder to 3.0.0; also update beehive_scale to 2.0.0",
            dep("pet_feeder", "update", "3.0.0", 3),
            "beehive_scale",
        ),
        (
            "update energy_meter to 2.0.0 and roll back beehive_scale to 1.0.0",
            dep("energy_meter", "update", "2.0.0", 2),
            "beehive_scale",
        ),
        (
            "update pet_feeder to 3.0.0 and energy_meter to 9.0.0",
            dep("pet_feeder", "update", "3.0.0", 3),
            "energy_meter",
        ),
        (
            "update smart_plug to 3.0.0 and roll back pet_feeder-09 to 1.0.0",
            dep("smart_plug", "update", "3.0.0", 3),
            "pet_feeder-09",
        ),
    ] {
        let p = plan(d, prompt);
        assert_eq!(deployments(&p), [planned], "{prompt}: {p}");
        assert_eq!(refused(&p), [refusal], "{prompt}: {p}");
        assert!(p["plan_id"].is_string(), "{prompt}: {p}");
    }
}

#[test]
fn several_changes_never_guess_what_a_part_leaves_open() {
    let dir = demo();
    let d = dir.path();
    for (prompt, says) in [
        ("update pet_feeder to 3.0.0 and roll back smart_plug", "Which version"),
        ("update pet_feeder to 3.0.0 and roll back to 1.0.0", "Which devices"),
        ("update pet_feeder to 3.0.0 and then update them to 2.0.0", "earlier messages"),
        ("update energy_meter to 2.0.0 and pet_feedr_x to 3.0.0", "pet_feedr_x"),
        ("update pet_feeder to 3.0.0 and roll back pet_feeder to 1.0.0", "two of these changes"),
        ("update pet_feeder to 3.0.0 and disable OTA for smart plugs", "on its own"),
        ("update pet_feeder-01 to 3.0.0 and roll back pet_feeder-04 to 1.0.0", "more than one of these changes"),
    ] {
        let p = plan(d, prompt);
        assert!(deployments(&p).is_empty() && p["plan_id"].is_null(), "{prompt}: {p}");
        assert!(p["message"].as_str().unwrap().contains(says), "{prompt}: {p}");
    }
    let p = plan(d, "update energy_meter to 2.0.0 and pet_feedr_x to 3.0.0");
    assert_eq!(p["suggestions"][0], "pet_feeder", "close matches: {p}");
}

#[test]
fn one_confirmation_starts_every_change_and_binds_all_of_them() {
    let dir = demo();
    let d = dir.path();
    let prompt = "Update energy_meter to 2.0.0 and roll back fish_tank_monitor to 1.0.0";
    let p = plan(d, prompt);
    let id = p["plan_id"].as_str().unwrap().to_string();
    // A policy change in one change since planning refuses the whole start.
    ok(d, &["config", "policy", "fish_tank_monitor", "--max-in-flight", "3"]);
    let out = common::ota(d, &["rollouts", "start", prompt, "--plan-id", &id]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("differs from plan"), "{out:?}");
    let listed: Value = serde_json::from_str(&ok(d, &["--json", "rollouts", "list"])).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "nothing started: {listed}");
    // Planned again and confirmed once: both start.
    let p = plan(d, prompt);
    let id = p["plan_id"].as_str().unwrap().to_string();
    let started: Value =
        serde_json::from_str(&ok(d, &["--json", "rollouts", "start", prompt, "--plan-id", &id])).unwrap();
    let results: Vec<&str> = started["items"].as_array().unwrap().iter().filter_map(|i| i["result"].as_str()).collect();
    assert_eq!(results, ["started", "started"], "{started}");
    // Repeated while they run: already running, each.
    let again: Value = serde_json::from_str(&ok(d, &["--json", "rollouts", "start", prompt])).unwrap();
    let results: Vec<&str> = again["items"].as_array().unwrap().iter().filter_map(|i| i["result"].as_str()).collect();
    assert_eq!(results, ["already_running", "already_running"], "{again}");
}
