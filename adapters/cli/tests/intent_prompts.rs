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
