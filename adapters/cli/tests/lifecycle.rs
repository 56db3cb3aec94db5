//! The rollout lifecycle through the real `ota` binary, as an operator meets it: the same
//! request runs again once its rollout ended (a rollback after an update, a request after a
//! cancel), a plan's id binds its policy, a chat session belongs to its subject, and `ota ask`
//! returns with a summary when the devices left are offline.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Killed, free_port, http, ok, ota, spawn, wait_for};
use serde_json::{Value, json};
use tempfile::TempDir;

const UPDATE: &str = "Update all pet_feeder devices to the latest firmware";
const ROLLBACK: &str = "Roll back all pet_feeder devices to 1.0.0";

fn json_out(dir: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(dir, &a)).expect("JSON output")
}

fn demo_world() -> TempDir {
    let dir = TempDir::new().unwrap();
    ok(dir.path(), &["init", "--demo"]);
    dir
}

/// `ota serve` on free ports, and `ota sim` with `sim_args` against it once it listens;
/// returns them (killed when dropped) and the HTTP address.
fn serve_and_sim(dir: &Path, sim_args: &[&str], logs: &Path) -> (Killed, Option<Killed>, String) {
    let (api, mqtt) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let server =
        spawn(dir, &["serve", "--listen", api.as_str(), "--mqtt-listen", mqtt.as_str()], &logs.join("serve.log"));
    wait_for("the server listens", Duration::from_secs(30), || TcpStream::connect(&mqtt).is_ok());
    let sim = (!sim_args.is_empty()).then(|| {
        let mut args = vec!["sim", "--mqtt", mqtt.as_str()];
        args.extend_from_slice(sim_args);
        spawn(dir, &args, &logs.join("sim.log"))
    });
    (server, sim, api)
}

/// The pet feeders' versions as the registry holds them.
fn pet_feeders(dir: &Path) -> BTreeMap<String, (String, bool)> {
    json_out(dir, &["devices", "list", "--type", "pet_feeder"])["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let version = d["firmware_version"].as_str().unwrap_or("").to_string();
            (d["thing"].as_str().unwrap().to_string(), (version, d["connected"].as_bool().unwrap()))
        })
        .collect()
}

fn wait_versions(dir: &Path, version: &str) {
    wait_for(&format!("every pet_feeder reports {version}"), Duration::from_secs(30), || {
        pet_feeders(dir).values().all(|(v, _)| v == version)
    });
}

/// `ota --json ask PROMPT --wait 120`: its exit status and report.
fn ask(dir: &Path, prompt: &str) -> (i32, Value) {
    let out = ota(dir, &["--json", "ask", prompt, "--wait", "120"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("ota ask: {e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

#[test]
fn the_same_rollback_after_an_update_runs_again_with_a_new_rollout() {
    let dir = demo_world();
    let d = dir.path();
    let logs = TempDir::new().unwrap();
    let (_server, _sim, _) = serve_and_sim(d, &["--types", "pet_feeder"], logs.path());
    wait_for("the pet feeders connect", Duration::from_secs(60), || pet_feeders(d).values().all(|(_, c)| *c));

    let (code, up) = ask(d, UPDATE);
    assert_eq!((code, up["result"].as_str()), (0, Some("ended")), "{up}");
    wait_versions(d, "3.0.0");
    let (code, first) = ask(d, ROLLBACK);
    assert_eq!((code, first["result"].as_str()), (0, Some("ended")), "{first}");
    let first_id = first["items"][0]["rollout_id"].as_str().unwrap().to_string();
    assert_eq!(first["items"][0]["result"], "started", "{first}");
    assert_eq!(first["rollouts"][0]["succeeded"], 4, "{first}");
    wait_versions(d, "1.0.0");
    let (code, up) = ask(d, UPDATE);
    assert_eq!((code, up["rollouts"][0]["succeeded"].as_u64()), (0, Some(4)), "{up}");
    wait_versions(d, "3.0.0");

    // The same rollback again: not the first one's answer, a new rollout that runs.
    let (code, again) = ask(d, ROLLBACK);
    assert_eq!((code, again["result"].as_str()), (0, Some("ended")), "{again}");
    assert_eq!(again["items"][0]["result"], "started", "{again}");
    let again_id = again["items"][0]["rollout_id"].as_str().unwrap();
    assert_eq!(again_id, format!("{first_id}-2"), "the next generation of the same request");
    assert_eq!(again["summary"], format!("started {again_id} (pet_feeder)"));
    let r = &again["rollouts"][0];
    assert_eq!(
        (r["job_id"].as_str(), r["status"].as_str(), r["succeeded"].as_u64()),
        (Some(again_id), Some("completed"), Some(4))
    );
    wait_versions(d, "1.0.0");
    let shown = json_out(d, &["rollouts", "show", again_id]);
    let executions = shown["executions"].as_array().unwrap();
    assert_eq!(executions.len(), 4, "{shown}");
    assert!(executions.iter().all(|e| e["status"] == "SUCCEEDED" && e.get("reason").is_some()), "{shown}");
}

#[test]
fn a_canceled_request_starts_again_with_a_new_id() {
    let dir = demo_world();
    let d = dir.path();
    let first = json_out(d, &["rollouts", "start", UPDATE]);
    assert_eq!(first["items"][0]["result"], "started", "{first}");
    let id = first["items"][0]["rollout_id"].as_str().unwrap().to_string();
    // While it is active, the same request finds it.
    let running = json_out(d, &["rollouts", "start", UPDATE]);
    assert_eq!((&running["items"][0]["result"], &running["existing"]), (&json!("already_running"), &json!([id])));
    let text = ok(d, &["rollouts", "start", UPDATE]);
    assert!(text.starts_with(&format!("already running {id} (pet_feeder), started at ")), "{text}");
    ok(d, &["rollouts", "cancel", &id, "--reason", "changed my mind"]);
    // Once it ended, the same request is a new rollout.
    let text = ok(d, &["rollouts", "start", UPDATE]);
    assert_eq!(text.trim(), format!("started {id}-2 (pet_feeder): pet_feeder -> 3.0.0 (3 devices)"), "{text}");
    let listed = json_out(d, &["rollouts", "list"]);
    let statuses: BTreeMap<&str, &str> =
        listed.as_array().unwrap().iter().map(|r| (r["id"].as_str().unwrap(), r["status"].as_str().unwrap())).collect();
    let next = format!("{id}-2");
    assert_eq!(statuses, BTreeMap::from([(id.as_str(), "CANCELED"), (next.as_str(), "IN_PROGRESS")]));
    let shown = json_out(d, &["rollouts", "show", &next]);
    assert_eq!(shown["executions"][0], json!({"thing": "pet_feeder-01", "status": "QUEUED", "reason": null}));
}

#[test]
fn a_policy_changed_between_plan_and_start_is_refused() {
    let dir = demo_world();
    let d = dir.path();
    let shown = json_out(d, &["plan", UPDATE]);
    let plan_id = shown["plan_id"].as_str().unwrap().to_string();
    let policy = ok(d, &["config", "policy", "pet_feeder", "--max-in-flight", "2"]);
    assert!(policy.contains("max") || policy.contains('2'), "{policy}");
    let out = ota(d, &["rollouts", "start", UPDATE, "--plan-id", &plan_id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&plan_id) && err.contains("plan again"), "{err}");
    assert_eq!(json_out(d, &["rollouts", "list"]), json!([]), "nothing started");
    // The new plan shows the new policy; confirming it starts exactly that.
    let replanned = json_out(d, &["plan", UPDATE]);
    assert_ne!(replanned["plan_id"], shown["plan_id"]);
    assert_eq!(replanned["deployments"][0]["policy"]["max_in_flight"], 2, "{replanned}");
    let started = json_out(d, &["rollouts", "start", UPDATE, "--plan-id", replanned["plan_id"].as_str().unwrap()]);
    assert_eq!(started["rollouts"][0]["policy"]["max_in_flight"], 2, "{started}");
    // The service checks the policy's bounds, whoever asks.
    let out = ota(d, &["config", "policy", "pet_feeder", "--max-in-flight", "0"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("max_in_flight"));
    ok(d, &["config", "policy", "pet_feeder", "--clear"]);
    assert_eq!(json_out(d, &["plan", UPDATE])["deployments"][0]["policy"]["max_in_flight"], 10);
}

#[test]
fn another_subjects_chat_session_is_refused_and_the_owners_confirmation_survives() {
    let dir = demo_world();
    let d = dir.path();
    let logs = TempDir::new().unwrap();
    let (_server, _, api) = serve_and_sim(d, &[], logs.path());
    let token =
        |subject: &str| ok(d, &["token", "create", "--role", "operator", "--subject", subject]).trim().to_string();
    let (alice, mallory) = (token("alice"), token("mallory"));
    let chat = |token: &str, body: Value| {
        let (status, _, body) = http(&api, "POST", "/api/chat", Some(token), Some(body.to_string().as_str()));
        (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
    };
    let (status, planned) = chat(&alice, json!({"message": UPDATE}));
    assert_eq!((status, planned["pending"]["kind"].as_str()), (200, Some("start")), "{planned}");
    let session = planned["session_id"].as_str().unwrap();
    for message in ["hello", "yes"] {
        let (status, err) = chat(&mallory, json!({"message": message, "session_id": session}));
        assert_eq!((status, err["error"].as_str()), (409, Some("conflict")), "{message}: {err}");
    }
    assert_eq!(json_out(d, &["rollouts", "list"]), json!([]), "nothing started");
    let (status, started) = chat(&alice, json!({"message": "yes", "session_id": session}));
    assert_eq!(status, 200, "{started}");
    let id = started["rollouts"][0]["id"].as_str().unwrap_or_else(|| panic!("{started}"));
    assert_eq!(started["reply"], format!("Started {id} (pet_feeder). Progress follows below."));
    assert_eq!(started["items"][0]["result"], "started");
}

#[test]
fn ota_ask_returns_with_a_summary_when_only_offline_devices_are_left() {
    let dir = demo_world();
    let d = dir.path();
    let logs = TempDir::new().unwrap();
    // pet_feeder-01 and -02 are simulated; -03 (on 2.0.0) never connects; -04 runs the latest.
    let (_server, _sim, _) = serve_and_sim(d, &["--types", "pet_feeder", "--devices-per-type", "2"], logs.path());
    wait_for("two pet feeders connect", Duration::from_secs(60), || {
        pet_feeders(d).values().filter(|(_, c)| *c).count() == 2
    });
    let out = ota(d, &["ask", UPDATE, "--wait", "120"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\nstarted update-pet_feeder-"), "{text}");
    assert!(
        // The demo world records when each device was last seen at `init`.
        text.contains("Returned: only devices that are not connected are left; their updates start when they connect. 1 device still waiting: pet_feeder-03 (not connected, last seen "),
        "{text}"
    );
    assert!(text.contains("ota rollouts watch update-pet_feeder-"), "{text}");
    // Asked again, it is the same rollout, still waiting for the same device.
    let (code, again) = ask(d, UPDATE);
    assert_eq!((code, again["result"].as_str()), (4, Some("only_offline_left")), "{again}");
    assert_eq!(again["items"][0]["result"], "already_running", "{again}");
    let waiting: Vec<&str> =
        again["waiting"].as_array().unwrap().iter().map(|w| w["thing"].as_str().unwrap()).collect();
    assert_eq!(waiting, ["pet_feeder-03"]);
    let executions: BTreeMap<&str, &str> = again["rollouts"][0]["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["thing"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        executions,
        BTreeMap::from([("pet_feeder-01", "SUCCEEDED"), ("pet_feeder-02", "SUCCEEDED"), ("pet_feeder-03", "QUEUED")])
    );
}

#[test]
fn ota_ask_is_bounded_by_wait_and_says_nothing_started_for_an_empty_plan() {
    let dir = demo_world();
    let d = dir.path();
    // No server: nothing will run. --wait 0 returns at once, exit 4, naming the devices.
    let out = ota(d, &["--json", "ask", UPDATE, "--wait", "0"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), report["result"].as_str()), (Some(4), Some("wait_elapsed")), "{report}");
    assert_eq!(report["waiting"].as_array().map(Vec::len), Some(3), "{report}");
    // Nothing to start (OTA is disabled for beehive_scale): the plan says why, exit 0.
    let out = ota(d, &["--json", "ask", "Update all beehive_scale devices to the latest firmware"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), report["result"].as_str()), (Some(0), Some("nothing_started")), "{report}");
    assert_eq!((&report["items"], &report["refusals"]["beehive_scale"].is_string()), (&json!([]), &true));
    let help = ok(d, &["ask", "--help"]);
    assert!(help.contains("Exit status:") && help.contains("  4  returned while devices still wait"), "{help}");
}
