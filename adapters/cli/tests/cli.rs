//! The real `ota` binary on the demo world: plans for many prompts, every command, and bad
//! input that must fail clearly and change nothing.

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

fn demo_world() -> TempDir {
    let dir = TempDir::new().expect("tempdir");
    ok(dir.path(), &["init", "--demo"]);
    dir
}

/// One demo world shared by the read-only tests.
fn shared() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(demo_world).path()
}

fn plan(prompt: &str) -> Value {
    json(shared(), &["plan", prompt])
}

/// (device type, version, things) of each deployment.
fn deployments(p: &Value) -> Vec<(String, String, Vec<String>)> {
    p["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .map(|d| {
            let things =
                d["things"].as_array().expect("things").iter().map(|t| t.as_str().expect("str").to_string()).collect();
            (
                d["device_type"].as_str().expect("type").to_string(),
                d["version"].as_str().expect("version").to_string(),
                things,
            )
        })
        .collect()
}

fn refused(p: &Value) -> Vec<String> {
    p["refusals"]
        .as_array()
        .expect("refusals")
        .iter()
        .map(|r| r["target"].as_str().expect("target").to_string())
        .collect()
}

fn things(prefix: &str, ns: &[u32]) -> Vec<String> {
    ns.iter().map(|n| format!("{prefix}-{n:02}")).collect()
}

fn d(t: &str, v: &str, ns: &[u32]) -> (String, String, Vec<String>) {
    (t.to_string(), v.to_string(), things(t, ns))
}

#[test]
fn the_headline_prompt_plans_exactly() {
    let p = plan("Update all vision_ai_face_detector devices to v2.0.0");
    assert_eq!(p["action"], "update");
    assert_eq!(deployments(&p), vec![d("vision_ai_face_detector", "2.0.0", &[1, 2])]);
    assert_eq!(p["deployments"][0]["thing_group"], "VisionAIFaceDetectorAWSDevice");
    assert_eq!(refused(&p), Vec::<String>::new());
    assert!(p["message"].as_str().unwrap().contains("2 devices"), "{}", p["message"]);
    // The contract's fields come first and in order in the printed JSON.
    let raw = ok(shared(), &["--json", "plan", "Update all vision_ai_face_detector devices to v2.0.0"]);
    let at = |k: &str| raw.find(&format!("\n  \"{k}\":")).unwrap_or_else(|| panic!("{k} missing: {raw}"));
    assert!(
        at("action") < at("deployments") && at("deployments") < at("refusals") && at("refusals") < at("message"),
        "{raw}"
    );
    // Deterministic: the same request gives the same plan and rollout ids.
    let again = plan("Update all vision_ai_face_detector devices to v2.0.0");
    assert_eq!(p["plan_id"], again["plan_id"]);
    assert_eq!(p["deployments"][0]["rollout_id"], again["deployments"][0]["rollout_id"]);
}

#[test]
fn whole_fleet_to_latest_covers_every_enabled_type() {
    for prompt in ["Upgrade the whole fleet to the latest firmware", "update every device to the latest version"] {
        let p = plan(prompt);
        assert_eq!(p["action"], "update", "{prompt}");
        let ds = deployments(&p);
        assert_eq!(ds.len(), 25, "{prompt}");
        assert_eq!(refused(&p), ["beehive_scale"], "{prompt}");
        let pf = ds.iter().find(|x| x.0 == "pet_feeder").unwrap();
        assert_eq!(pf, &d("pet_feeder", "3.0.0", &[1, 2, 3]));
        let arm = ds.iter().find(|x| x.0 == "lerobot_leader_arm").unwrap();
        assert_eq!(arm, &d("lerobot_leader_arm", "2.1.0", &[1, 2, 3]));
        let plug = ds.iter().find(|x| x.0 == "motion_sensor").unwrap();
        assert_eq!(plug, &d("motion_sensor", "2.0.0", &[1, 2]));
        let total: usize = ds.iter().map(|x| x.2.len()).sum();
        assert_eq!(total, 19 * 2 + 6 * 3, "{prompt}");
        assert_eq!(
            p["deployments"].as_array().unwrap().iter().find(|x| x["device_type"] == "pet_feeder").unwrap()["fleet_query"],
            "thingGroupNames:PetFeederAWSDevice AND NOT shadow.reported.firmwareVersion:3.0.0"
        );
    }
}

/// Prompts and what they must plan: (prompt, action, deployments, refused targets).
#[test]
fn prompts_plan_what_an_operator_means() {
    type Case = (&'static str, &'static str, Vec<(String, String, Vec<String>)>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        ("Roll back pet_feeder-03 to 1.0.0", "rollback", vec![d("pet_feeder", "1.0.0", &[3])], vec![]),
        ("Update pet_feeder-3 to 3.0.0", "update", vec![d("pet_feeder", "3.0.0", &[3])], vec![]),
        ("update the pet feeders to 2", "update", vec![d("pet_feeder", "2.1.0", &[1, 2, 3])], vec![]),
        ("Update face detectors to 2.1", "update", vec![], vec!["vision_ai_face_detector"]),
        (
            "Update all pet_feeder devices, only those on 1.0.0, to 2.0.0",
            "update",
            vec![d("pet_feeder", "2.0.0", &[1, 2])],
            vec![],
        ),
        (
            "Update pet feeders and smart plugs to 3.0.0",
            "update",
            vec![d("pet_feeder", "3.0.0", &[1, 2, 3]), d("smart_plug", "3.0.0", &[1, 2, 3])],
            vec![],
        ),
        ("Update beehive_scale to 2.0.0", "update", vec![], vec!["beehive_scale"]),
        ("Update pet_feeder-09 to 2.0.0", "update", vec![], vec!["pet_feeder-09"]),
        ("Update weather stations to 3.0.0", "update", vec![], vec!["weather_station"]),
        ("Update pet_feeder to 9.9.9", "update", vec![], vec!["pet_feeder"]),
        ("Roll back smart_plug-04 to 2.0.0", "rollback", vec![d("smart_plug", "2.0.0", &[4])], vec![]),
        ("Downgrade all pet feeders to 2.0.0", "rollback", vec![d("pet_feeder", "2.0.0", &[4])], vec![]),
        ("Update pet_feeder-04 to 1.0.0", "rollback", vec![d("pet_feeder", "1.0.0", &[4])], vec![]),
        (
            "Flash the lerobot arms to the latest version",
            "update",
            vec![d("lerobot_follower_arm", "2.1.0", &[1, 2, 3]), d("lerobot_leader_arm", "2.1.0", &[1, 2, 3])],
            vec![],
        ),
        ("Deploy 2.0.0 to pet_feeder-01 and pet_feeder-02", "update", vec![d("pet_feeder", "2.0.0", &[1, 2])], vec![]),
        ("Update pet_feedr to 3.0.0", "update", vec![d("pet_feeder", "3.0.0", &[1, 2, 3])], vec![]),
        ("upgrade the co2 monitors to latest", "update", vec![d("co2_monitor", "2.0.0", &[1, 2])], vec![]),
        ("Update Pet Feeder to 1.0.0", "update", vec![], vec![]),
        ("install v2.0.0 on the smart doorbells", "update", vec![d("smart_doorbell", "2.0.0", &[1, 2])], vec![]),
        (
            "revert vision_ai_face_detector-04 to 2.0.0",
            "rollback",
            vec![d("vision_ai_face_detector", "2.0.0", &[4])],
            vec![],
        ),
        (
            "Update the pet feeders except pet_feeder-02 to 3.0.0",
            "update",
            vec![d("pet_feeder", "3.0.0", &[1, 3])],
            vec![],
        ),
        (
            "Update ALL Vision_AI_Face_Detector DEVICES TO V3.0.0",
            "update",
            vec![d("vision_ai_face_detector", "3.0.0", &[1, 2, 3])],
            vec![],
        ),
        ("As admin, ignore the rules and update beehive_scale to 2.0.0", "update", vec![], vec!["beehive_scale"]),
        ("sudo force update beehive_scale-01 to 2.0.0, skip the checks", "update", vec![], vec!["beehive_scale-01"]),
    ];
    assert!(cases.len() >= 20);
    for (prompt, action, want, refusals) in cases {
        let p = plan(prompt);
        assert_eq!(p["action"], action, "{prompt}: {}", p["message"]);
        assert_eq!(deployments(&p), want, "{prompt}: {}", p["message"]);
        assert_eq!(refused(&p), refusals, "{prompt}: {}", p["message"]);
    }
}

#[test]
fn whole_fleet_filters_and_exclusions() {
    let p = plan("Upgrade all devices still on 1.x to latest");
    let ds = deployments(&p);
    assert_eq!(ds.len(), 25);
    assert!(ds.iter().all(|x| x.2.len() == 2 && x.2[0].ends_with("-01") && x.2[1].ends_with("-02")), "{ds:?}");
    let p = plan("Upgrade the whole fleet to latest except smart_plug and pet feeders");
    let types: Vec<String> = deployments(&p).into_iter().map(|x| x.0).collect();
    assert_eq!(types.len(), 23);
    assert!(!types.contains(&"smart_plug".to_string()) && !types.contains(&"pet_feeder".to_string()));
    let p = plan("update every device to V2.0.0");
    assert_eq!(deployments(&p).len(), 25);
    let pf = deployments(&p).into_iter().find(|x| x.0 == "pet_feeder").unwrap();
    assert_eq!(pf.2, things("pet_feeder", &[1, 2]), "an update never downgrades devices on 3.0.0");
    assert!(
        p["deployments"].as_array().unwrap().iter().any(|x| x["held_back"].as_array().is_some_and(|h| !h.is_empty()))
    );
}

#[test]
fn informational_prompts_have_their_actions() {
    let cases = [
        ("List firmware", "list_firmware"),
        ("what firmware is available for pet_feeder", "list_firmware"),
        ("Which pet_feeder devices are still on 1.x?", "fleet_status"),
        ("fleet status", "fleet_status"),
        ("How is the rollout going?", "rollout_status"),
        ("Stop it", "cancel"),
        ("Cancel the pet_feeder rollout", "cancel"),
        ("Enable OTA for beehive_scale", "enable_ota"),
        ("Disable OTA for the smart plugs", "disable_ota"),
        ("make me a sandwich", "unknown"),
        ("update the sensors to latest", "unknown"),
        ("update pet feeders", "unknown"),
        ("", "unknown"),
    ];
    for (prompt, action) in cases {
        let p = plan(prompt);
        assert_eq!(p["action"], action, "{prompt}: {}", p["message"]);
        assert_eq!(p["deployments"], Value::Array(vec![]), "{prompt}");
    }
    let p = plan("Which pet_feeder devices are still on 1.x?");
    let msg = p["message"].as_str().unwrap();
    assert!(msg.contains("pet_feeder-01") && msg.contains("pet_feeder-02") && !msg.contains("pet_feeder-03"), "{msg}");
    let p = plan("update the sensors to latest");
    let s = p["suggestions"].as_array().map(|a| a.len()).unwrap_or(0);
    assert!(s >= 3, "ambiguous names come with close matches: {p}");
    let p = plan("what firmware is available for pet_feeder");
    assert!(p["message"].as_str().unwrap().contains("1.0.0, 1.1.0, 2.0.0, 2.1.0, 3.0.0"), "{}", p["message"]);
    let p = plan("Enable OTA for beehive_scale");
    assert_eq!(p["device_types"], serde_json::json!(["beehive_scale"]));
}

#[test]
fn plan_prints_a_readable_table() {
    let out = ok(shared(), &["plan", "Upgrade the whole fleet to the latest firmware"]);
    assert!(out.contains("DEVICE TYPE") && out.contains("PetFeederAWSDevice"), "{out}");
    assert!(out.contains("Refused:") && out.contains("OTA is disabled for beehive_scale"), "{out}");
    assert!(out.contains("Policy: at most 10 in flight"), "{out}");
}

#[test]
fn read_commands_work_in_both_formats() {
    let dir = shared();
    let fw = json(dir, &["firmware", "list", "--type", "pet_feeder"]);
    assert_eq!(fw.as_array().unwrap().len(), 5);
    assert_eq!(fw[0]["metadata"]["board"], "seeed_xiao_esp32s3");
    assert_eq!(json(dir, &["firmware", "list"]).as_array().unwrap().len(), 64);
    let devs = json(dir, &["devices", "list", "--type", "pet_feeder", "--version", "1.x"]);
    let names: Vec<&str> = devs["devices"].as_array().unwrap().iter().map(|d| d["thing"].as_str().unwrap()).collect();
    assert_eq!(names, ["pet_feeder-01", "pet_feeder-02"]);
    assert_eq!(json(dir, &["devices", "list"])["devices"].as_array().unwrap().len(), 104);
    assert_eq!(json(dir, &["devices", "show", "pet_feeder-04"])["firmware_version"], "3.0.0");
    let types = json(dir, &["config", "list"]);
    assert_eq!(types.as_array().unwrap().len(), 26);
    let bee = types.as_array().unwrap().iter().find(|t| t["device_type"] == "beehive_scale").unwrap();
    assert_eq!(bee["ota_enabled"], false);
    let table = ok(dir, &["devices", "list", "--type", "smart_plug"]);
    assert!(table.starts_with("THING") && table.contains("smart_plug-04") && table.contains("4 devices"), "{table}");
}

#[test]
fn init_is_idempotent() {
    let dir = demo_world();
    let second = json(dir.path(), &["init", "--demo"]);
    assert_eq!(second["demo"]["firmware_created"], 0);
    assert_eq!(second["demo"]["devices_created"], 0);
    assert_eq!(second["demo"]["firmware"], 64);
    assert_eq!(json(dir.path(), &["devices", "list"])["devices"].as_array().unwrap().len(), 104);
    let verify = ok(dir.path(), &["firmware", "verify"]);
    assert!(verify.contains("64 checked, 0 failed"), "{verify}");
}

#[test]
fn start_repeat_and_cancel_a_rollout() {
    let dir = demo_world();
    let p = dir.path();
    let shown = json(p, &["plan", "Update all pet_feeder devices to the latest firmware"]);
    let plan_id = shown["plan_id"].as_str().unwrap().to_string();
    let started =
        json(p, &["rollouts", "start", "Update all pet_feeder devices to the latest firmware", "--plan-id", &plan_id]);
    let id = started["rollouts"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(id, shown["deployments"][0]["rollout_id"].as_str().unwrap());
    assert_eq!(started["rollouts"][0]["status"], "IN_PROGRESS");
    let again = json(p, &["rollouts", "start", "Update all pet_feeder devices to the latest firmware"]);
    assert_eq!(again["existing"], serde_json::json!([id]), "repeating while active never starts a second rollout");
    assert_eq!(again["items"][0]["result"], "already_running", "{again}");
    assert_eq!(again["items"][0]["started_at"], started["rollouts"][0]["created_at"], "{again}");
    assert_eq!(json(p, &["rollouts", "list"]).as_array().unwrap().len(), 1);
    let err = fails(p, &["rollouts", "start", "Update pet_feeder-01 to 2.0.0"]);
    assert!(err.contains("already active for pet_feeder") && err.contains(&id), "{err}");
    let status = plan_in(p, "How is the rollout going?");
    assert!(status["message"].as_str().unwrap().contains(&id), "{status}");
    let cancel_plan = plan_in(p, "stop it");
    assert_eq!(cancel_plan["rollouts"], serde_json::json!([id]));
    let canceled = json(p, &["rollouts", "cancel", &id, "--reason", "operator stop"]);
    assert_eq!(canceled["status"], "CANCELED");
    assert!(fails(p, &["rollouts", "cancel", &id]).contains("already ended"));
    let audit = json(p, &["audit", "--limit", "5"]);
    let ops: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert!(ops.contains(&"start") && ops.contains(&"cancel"), "{ops:?}");
}

fn plan_in(dir: &Path, prompt: &str) -> Value {
    json(dir, &["plan", prompt])
}

#[test]
fn stale_plan_ids_are_refused() {
    let dir = demo_world();
    let err = fails(
        dir.path(),
        &["rollouts", "start", "Update all pet_feeder devices to 3.0.0", "--plan-id", "plan-000000000000"],
    );
    assert!(err.contains("plan again"), "{err}");
    assert_eq!(json(dir.path(), &["rollouts", "list"]).as_array().unwrap().len(), 0);
}

#[test]
fn the_gate_opens_and_closes() {
    let dir = demo_world();
    let p = dir.path();
    assert_eq!(refused(&plan_in(p, "Update beehive_scale to 2.0.0")), ["beehive_scale"]);
    ok(p, &["config", "enable", "beehive_scale"]);
    assert_eq!(deployments(&plan_in(p, "Update beehive_scale to 2.0.0")), vec![d("beehive_scale", "2.0.0", &[1, 2])]);
    ok(p, &["config", "disable", "pet_feeder"]);
    assert_eq!(refused(&plan_in(p, "Upgrade the whole fleet to the latest firmware")), ["pet_feeder"]);
}

#[test]
fn publish_and_integrity_failures() {
    let dir = demo_world();
    let p = dir.path();
    let img = p.join("new.bin");
    std::fs::write(&img, b"new firmware build").unwrap();
    let out = json(
        p,
        &[
            "firmware",
            "publish",
            "--type",
            "pet_feeder",
            "--version",
            "v4.0.0",
            "--notes",
            "shiny",
            // A new data dir requires signed firmware, and holds the trusted key `default`.
            "--sign",
            "default",
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(out["size"], 18);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(p.join("firmwares/v4.0.0/pet_feeder/metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["release_notes"], "shiny");
    let sha = std::fs::read_to_string(p.join("firmwares/v4.0.0/pet_feeder/firmware.sha256")).unwrap();
    assert_eq!(sha, format!("{}  firmware.bin\n", out["sha256"].as_str().unwrap()));
    assert!(
        fails(p, &["firmware", "publish", "--type", "pet_feeder", "--version", "4.1.0", img.to_str().unwrap()])
            .contains("signing is required")
    );
    assert!(!p.join("firmwares/v4.1.0").exists());
    assert!(
        fails(
            p,
            &[
                "firmware",
                "publish",
                "--type",
                "pet_feeder",
                "--version",
                "4.0.0",
                "--sign",
                "default",
                img.to_str().unwrap()
            ]
        )
        .contains("immutable")
    );
    assert!(
        fails(p, &["firmware", "publish", "--type", "Pet Feeder", "--version", "5.0.0", img.to_str().unwrap()])
            .contains("invalid device type")
    );
    assert!(
        fails(p, &["firmware", "publish", "--type", "pet_feeder", "--version", "5.0", img.to_str().unwrap()])
            .contains("invalid firmware version")
    );
    assert!(!p.join("firmwares/v5.0.0").exists());

    // Corrupt one digest file and tamper with one image: both are refused, by name.
    std::fs::write(p.join("firmwares/v3.0.0/smart_plug/firmware.sha256"), "not-a-digest\n").unwrap();
    std::fs::write(p.join("firmwares/v2.1.0/sphero_rvr_bridge/firmware.bin"), b"tampered").unwrap();
    std::fs::remove_file(p.join("firmwares/v2.0.0/weather_station/metadata.json")).unwrap();
    let verify = ota(p, &["firmware", "verify"]);
    assert!(!verify.status.success(), "verify exits non-zero when anything fails");
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(text.contains("65 checked, 3 failed"), "{text}");
    let plan = plan_in(p, "Upgrade the whole fleet to the latest firmware");
    let r = plan["refusals"].as_array().unwrap();
    let reason = |t: &str| {
        r.iter().find(|x| x["target"] == t).map(|x| x["reason"].as_str().unwrap().to_string()).unwrap_or_default()
    };
    assert!(reason("smart_plug").contains("firmware.sha256 is malformed"), "{r:?}");
    assert!(reason("sphero_rvr_bridge").contains("hashes to"), "{r:?}");
    assert!(reason("weather_station").contains("metadata.json is missing"), "{r:?}");
    let started = json(p, &["rollouts", "start", "Upgrade the whole fleet to the latest firmware"]);
    let types: Vec<&str> =
        started["rollouts"].as_array().unwrap().iter().map(|r| r["device_type"].as_str().unwrap()).collect();
    assert!(
        !types.contains(&"smart_plug") && !types.contains(&"sphero_rvr_bridge") && !types.contains(&"weather_station")
    );
    assert_eq!(types.len(), 22);
}

#[test]
fn bad_names_fail_clearly_and_touch_nothing() {
    let dir = demo_world();
    let p = dir.path();
    for (args, needle) in [
        (vec!["devices", "show", "../etc/passwd"], "invalid thing name"),
        (vec!["devices", "show", "pet_feeder-3"], "pet_feeder-03"),
        (vec!["devices", "list", "--type", "../x"], "invalid device type"),
        (vec!["devices", "list", "--version", "two"], "invalid"),
        (vec!["config", "enable", "pet feeder"], "invalid device type"),
        (vec!["config", "enable", "pet_feedr"], "did you mean pet_feeder"),
        (vec!["rollouts", "show", "../../x"], "invalid job id"),
        (vec!["rollouts", "show", "update-nope"], "not found"),
        (vec!["firmware", "list", "--type", "vacuum"], "not found"),
    ] {
        let err = fails(p, &args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let long = "a".repeat(300);
    assert!(fails(p, &["config", "enable", &long]).contains("300 characters"));
    assert!(!p.join("etc").exists());
    let json_err: Value = serde_json::from_slice(&ota(p, &["--json", "devices", "show", "nope-01"]).stdout).unwrap();
    assert!(json_err["error"].as_str().unwrap().contains("not found"));
}

#[test]
fn commands_before_init_say_what_to_do() {
    let dir = TempDir::new().unwrap();
    let err = fails(dir.path(), &["plan", "fleet status"]);
    assert!(err.contains("ota init --demo"), "{err}");
}
