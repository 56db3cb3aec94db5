//! The real `ota` binary sending commands on the demo world: `ota commands send` prints the
//! plan (each target, each refusal with why) and sends nothing until confirmed by `--yes` or
//! exactly its `--plan-id`; `list`, `show` and `cancel` follow and stop runs. Most tests run no
//! server, so a started run's executions stay QUEUED (the server's engine sends them): what is
//! checked is the service's planning, confirmation and bookkeeping through the CLI; one runs
//! `ota serve` and `ota sim` and follows commands until the devices answered. Bad input
//! (an unknown command, an undeclared setting, a value out of bounds, an offline device, a
//! device in maintenance selected by a query, a policy's refusal, a bad flag) fails with the
//! service's words and starts nothing.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, spawn, wait_for};

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

/// The demo world with every device connected but the two the demo has offline (the
/// registry's connectivity column, which the server's endpoint writes when a device connects).
fn connected_world() -> TempDir {
    let dir = TempDir::new().expect("tempdir");
    ok(dir.path(), &["init", "--demo"]);
    let db = rusqlite::Connection::open(dir.path().join("ota.db")).unwrap();
    let offline = ota_core::demo::OFFLINE.map(|t| format!("'{t}'")).join(", ");
    let n = db.execute(&format!("UPDATE devices SET connected = 1 WHERE thing NOT IN ({offline})"), []).unwrap();
    assert_eq!(n, 102);
    dir
}

fn runs(d: &Path, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["commands", "list"];
    args.extend_from_slice(filter);
    json(d, &args).as_array().unwrap().clone()
}

fn refusal<'a>(plan: &'a Value, target: &str) -> &'a str {
    plan["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == target)
        .unwrap_or_else(|| panic!("{target} is not refused: {plan}"))["reason"]
        .as_str()
        .unwrap()
}

fn targets(plan: &Value) -> Vec<&str> {
    plan["targets"].as_array().unwrap().iter().map(|t| t["thing"].as_str().unwrap()).collect()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

#[test]
fn a_command_is_planned_then_sent_once_confirmed_followed_and_canceled() {
    let dir = connected_world();
    let d = dir.path();
    let send = ["commands", "send", "identify", "--thing", "pet_feeder-02", "--thing", "pet_feeder-01"];
    let shown = ok(d, &send);
    assert!(shown.starts_with("Command plan cplan-"), "{shown}");
    assert!(shown.contains("pet_feeder-01") && shown.contains("factory-floor-1/line-7"), "{shown}");
    assert!(shown.contains("Nothing was sent") && shown.contains("--plan-id cplan-"), "{shown}");
    let plan = json(d, &send);
    assert_eq!(targets(&plan), ["pet_feeder-01", "pet_feeder-02"]);
    let plan_id = plan["plan_id"].as_str().unwrap().to_string();
    assert!(runs(d, &[]).is_empty(), "planning sent nothing");

    // A plan id that is not what would run now starts nothing.
    let stale = fails(d, &[&send[..], &["--plan-id", "cplan-000000000000"]].concat());
    assert!(stale.contains("conflict") && stale.contains(&plan_id), "{stale}");
    assert!(runs(d, &[]).is_empty());

    let started = json(d, &[&send[..], &["--plan-id", plan_id.as_str()]].concat());
    assert_eq!(started["created"], true, "{started}");
    let run_id = started["run"]["id"].as_str().unwrap().to_string();
    assert!(run_id.starts_with("cmd-"), "{run_id}");
    assert_eq!(started["run"]["status"], "IN_PROGRESS");
    // Confirmed again while it runs: that run, nothing new.
    let again = ok(d, &[&send[..], &["--plan-id", plan_id.as_str()]].concat());
    assert!(again.contains("already running") && again.contains(&run_id), "{again}");
    assert_eq!(runs(d, &[]).len(), 1);
    // The plan now says it runs.
    assert_eq!(json(d, &send)["running"], run_id.as_str());

    let shown = ok(d, &["commands", "show", &run_id]);
    assert!(
        shown.contains(&format!("command run:  {run_id}")) && shown.contains("status:       IN_PROGRESS"),
        "{shown}"
    );
    assert!(shown.contains("pet_feeder-01") && shown.contains("QUEUED"), "{shown}");
    let run = json(d, &["commands", "show", &run_id]);
    assert_eq!(run["executions"].as_array().unwrap().len(), 2);
    assert_eq!(runs(d, &["--status", "in_progress"]).len(), 1);
    assert!(runs(d, &["--status", "COMPLETED"]).is_empty());
    assert_eq!(runs(d, &["--thing", "pet_feeder-01"]).len(), 1);
    assert!(runs(d, &["--thing", "pet_feeder-03"]).is_empty());
    let table = ok(d, &["commands", "list"]);
    assert!(table.starts_with("RUN ID") && table.contains(&run_id) && table.contains("2 QUEUED"), "{table}");

    let canceled = ok(d, &["commands", "cancel", &run_id, "--reason", "wrong feeders"]);
    assert!(canceled.contains("canceled") && canceled.contains("CANCELED"), "{canceled}");
    let run = json(d, &["commands", "show", &run_id]);
    assert_eq!(run["status"], "CANCELED", "{run}");
    assert!(run["executions"].as_array().unwrap().iter().all(|e| e["state"] == "CANCELED"), "{run}");
    // Canceled twice: the second is a conflict and changes nothing.
    let twice = fails(d, &["commands", "cancel", &run_id]);
    assert!(twice.contains("conflict"), "{twice}");
    assert_eq!(json(d, &["commands", "show", &run_id])["status"], "CANCELED");
    assert!(fails(d, &["commands", "cancel", "cmd-000000000000-1"]).contains("not found"));
    assert!(fails(d, &["commands", "show", "cmd-000000000000-1"]).contains("not found"));

    // Once it ended, the same plan confirmed with --yes is a new run.
    let rerun = json(d, &[&send[..], &["--yes"]].concat());
    assert_eq!(rerun["created"], true);
    assert_ne!(rerun["run"]["id"], run_id.as_str());
    let audit = ok(d, &["--json", "audit"]);
    assert!(audit.contains("start a command") && audit.contains("cancel a command run"), "{audit}");
}

#[test]
fn update_config_and_set_state_are_commands_too() {
    let dir = connected_world();
    let d = dir.path();
    let send =
        ["commands", "send", "update_config", "--thing", "weather_station-02", "--param", "sample_rate_seconds=10"];
    let plan = json(d, &send);
    assert_eq!(plan["parameters"]["sample_rate_seconds"], 10, "a number, not a string: {plan}");
    let started = json(d, &[&send[..], &["--yes"]].concat());
    assert_eq!(started["created"], true, "{started}");
    // The desired configuration is recorded as soon as it is sent.
    let status = json(d, &["devices", "show", "weather_station-02"]);
    assert_eq!(status["config"]["desired"]["sample_rate_seconds"], 10, "{status}");
    let shown = ok(d, &["devices", "show", "weather_station-02"]);
    assert!(shown.contains("sample_rate_seconds") && shown.contains("10 (pending)"), "{shown}");
    let log =
        json(d, &["commands", "send", "update_config", "--thing", "weather_station-02", "--param", "log_level=debug"]);
    assert_eq!(log["parameters"]["log_level"], "debug");

    // set_state needs no device round trip: it works offline and completes at once.
    let set = ["commands", "send", "set_state", "--thing", "mailbox_notifier-04", "--param", "state=maintenance"];
    let done = json(d, &[&set[..], &["--yes"]].concat());
    assert_eq!(done["run"]["status"], "COMPLETED", "{done}");
    assert_eq!(done["run"]["executions"][0]["state"], "SUCCEEDED");
    assert_eq!(json(d, &["devices", "show", "mailbox_notifier-04"])["state"], "maintenance");
    let err = fails(d, &["commands", "send", "set_state", "--thing", "mailbox_notifier-04", "--param", "state=asleep"]);
    assert!(err.contains("one of active, maintenance, retired"), "{err}");
}

#[test]
fn bad_commands_fail_with_the_reason_and_send_nothing() {
    let dir = connected_world();
    let d = dir.path();
    let plug = ["--thing", "smart_plug-01"];
    // Unknown command: an error before anything is planned.
    let err = fails(d, &[&["commands", "send", "frobnicate"][..], &plug].concat());
    assert!(err.contains("not a command ota knows"), "{err}");
    let err = fails(d, &[&["commands", "send", "Reboot!"][..], &plug].concat());
    assert!(err.contains("lower-case name"), "{err}");
    // No target at all.
    assert!(fails(d, &["commands", "send", "reboot"]).contains("command targets"));
    // Recalibrate is not declared by a smart_plug's firmware.
    let plan = json(d, &[&["commands", "send", "recalibrate"][..], &plug].concat());
    assert!(refusal(&plan, "smart_plug-01").contains("recalibrate is not declared by its firmware"), "{plan}");
    assert!(plan.get("plan_id").is_none(), "nothing to send: {plan}");
    let err = fails(d, &[&["commands", "send", "recalibrate", "--yes"][..], &plug].concat());
    assert!(err.contains("nothing to send recalibrate") && err.contains("not declared"), "{err}");

    // An undeclared setting and a value out of bounds.
    fn cfg(param: &str) -> Vec<&str> {
        vec!["commands", "send", "update_config", "--param", param, "--thing", "smart_plug-01"]
    }
    let plan = json(d, &cfg("brightness=3"));
    assert!(refusal(&plan, "smart_plug-01").contains("unknown setting \"brightness\""), "{plan}");
    let plan = json(d, &cfg("sample_rate_seconds=0"));
    let why = refusal(&plan, "smart_plug-01");
    assert!(why.contains("out of bounds") && why.contains("3600"), "{why}");
    let plan = json(d, &cfg("sample_rate_seconds=fast"));
    assert!(refusal(&plan, "smart_plug-01").contains("sample_rate_seconds"), "{plan}");
    let err = fails(d, &[&cfg("sample_rate_seconds=99999")[..], &["--yes"]].concat());
    assert!(err.contains("out of bounds"), "{err}");

    // Offline devices are never sent a command.
    let plan =
        json(d, &["commands", "send", "reboot", "--thing", "mailbox_notifier-04", "--thing", "sound_level_meter-04"]);
    for t in ["mailbox_notifier-04", "sound_level_meter-04"] {
        assert!(refusal(&plan, t).contains("offline (last seen "), "{plan}");
        assert!(refusal(&plan, t).contains("never sent to offline devices"), "{plan}");
    }
    let err = fails(d, &["commands", "send", "reboot", "--thing", "mailbox_notifier-04", "--yes"]);
    assert!(err.contains("offline"), "{err}");
    // A lab query takes the online ones and refuses the offline ones.
    let lab = json(d, &["commands", "send", "identify", "--location", "lab", "--type", "sound_level_meter"]);
    assert!(targets(&lab).is_empty() && refusal(&lab, "sound_level_meter-04").contains("offline"), "{lab}");

    // A device in maintenance is left out of a query, and included when named.
    ok(d, &["devices", "set-state", "smart_plug-02", "maintenance"]);
    let plan = json(d, &["commands", "send", "reboot", "--type", "smart_plug"]);
    assert_eq!(targets(&plan), ["smart_plug-01", "smart_plug-03", "smart_plug-04"]);
    assert!(refusal(&plan, "smart_plug-02").contains("in maintenance; name it to include it"), "{plan}");
    let table = ok(d, &["commands", "send", "reboot", "--type", "smart_plug"]);
    assert!(table.contains("Refused:") && table.contains("in maintenance"), "{table}");
    let named = json(d, &["commands", "send", "reboot", "--thing", "smart_plug-02"]);
    assert_eq!(targets(&named), ["smart_plug-02"]);

    // Bad flags.
    for (args, needle) in [
        (vec!["commands", "send", "reboot", "--thing", "smart_plug-01", "--timeout", "0"], "1 to 86400"),
        (vec!["commands", "send", "reboot", "--thing", "smart_plug-01", "--timeout", "90000"], "1 to 86400"),
        (vec!["commands", "send", "update_config", "--thing", "smart_plug-01", "--param", "x"], "KEY=VALUE"),
        (vec!["commands", "send", "reboot", "--thing", "../etc"], "invalid thing name"),
        (vec!["commands", "send", "reboot", "--type", "toaster"], "not found"),
        (vec!["commands", "send", "reboot", "--type", "smart_plug", "--health", "grim"], "one of ok, warning, error"),
        (vec!["commands", "send", "reboot", "--thing", "smart_plug-01", "--yes", "--plan-id", "x"], "cannot be used"),
        (vec!["commands", "list", "--status", "done"], "one of in_progress"),
    ] {
        let err = fails(d, &args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(runs(d, &[]).is_empty(), "nothing was started by any of it");
}

#[test]
fn the_policies_decide_who_may_send_what() {
    let dir = connected_world();
    let d = dir.path();
    let reboot = ["commands", "send", "reboot", "--thing", "pet_feeder-03"];
    let identify = ["commands", "send", "identify", "--thing", "pet_feeder-03"];
    // Only a senior_operator may reboot: the local admin is not one.
    std::fs::copy(example("senior_operator_reboot.cedar"), d.join("policies.cedar")).unwrap();
    let err = fails(d, &reboot);
    assert!(err.contains("only a senior_operator may reboot a device"), "{err}");
    assert!(err.contains("reboot-needs-senior-operator"), "{err}");
    assert_eq!(targets(&json(d, &identify)), ["pet_feeder-03"], "other commands stay allowed");

    // A data dir whose policies only let anyone read: everyone is a viewer here.
    let viewer_only = format!(
        "{}\n",
        include_str!("../../../ota-core/src/authz/default.cedar")
            .split("@id(\"operator-operates\")")
            .next()
            .unwrap()
            .trim_end()
    );
    assert!(viewer_only.contains("viewer-reads") && !viewer_only.contains("Operate"), "{viewer_only}");
    std::fs::write(d.join("policies.cedar"), viewer_only).unwrap();
    for args in [&identify[..], &["commands", "send", "identify", "--thing", "pet_feeder-03", "--yes"]] {
        let err = fails(d, args);
        assert!(err.contains("permission denied") && err.contains("no policy permits SendCommand"), "{err}");
    }
    let err = fails(d, &["devices", "set-state", "pet_feeder-03", "maintenance"]);
    assert!(err.contains("permission denied"), "{err}");
    // Reading is still allowed, and nothing was started or changed.
    assert!(runs(d, &[]).is_empty());
    assert_eq!(json(d, &["devices", "show", "pet_feeder-03"])["state"], "active");
    assert!(ok(d, &["telemetry", "pet_feeder-03", "--since", "2h"]).contains("food_level_pct"));
}

/// Polls `ota commands show RUN --json` until the run ends (or 90 s pass): the run.
fn ended(d: &Path, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let run = json(d, &["commands", "show", run_id]);
        if run["status"] != "IN_PROGRESS" {
            return run;
        }
        assert!(Instant::now() < deadline, "the command run did not end in 90 s: {run}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn states(run: &Value) -> Vec<(String, String)> {
    run["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["thing"].as_str().unwrap().to_string(), e["state"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn commands_run_on_simulated_devices_through_ota_serve() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    let logs = TempDir::new().unwrap();
    let (http_addr, mqtt) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let _server = spawn(d, &["serve", "--listen", &http_addr, "--mqtt-listen", &mqtt], &logs.path().join("serve.log"));
    wait_for("the server listens", Duration::from_secs(30), || TcpStream::connect(&mqtt).is_ok());
    let _sim = spawn(d, &["sim", "--types", "smart_plug,co2_monitor", "--mqtt", &mqtt], &logs.path().join("sim.log"));
    wait_for("the devices connect", Duration::from_secs(60), || {
        json(d, &["devices", "list", "--online"])["devices"].as_array().is_some_and(|a| a.len() == 8)
    });

    let started = json(d, &["commands", "send", "identify", "--type", "smart_plug", "--yes"]);
    let run = ended(d, started["run"]["id"].as_str().unwrap());
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert!(states(&run).iter().all(|(_, s)| s == "SUCCEEDED"), "{run}");
    assert_eq!(states(&run).len(), 4);

    let started = json(d, &["commands", "send", "recalibrate", "--thing", "co2_monitor-01", "--yes"]);
    let run = ended(d, started["run"]["id"].as_str().unwrap());
    assert_eq!(states(&run), [("co2_monitor-01".to_string(), "SUCCEEDED".to_string())], "{run}");

    let send = ["commands", "send", "update_config", "--thing", "co2_monitor-02", "--param", "sample_rate_seconds=10"];
    let started = json(d, &[&send[..], &["--yes"]].concat());
    let run = ended(d, started["run"]["id"].as_str().unwrap());
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(states(&run)[0].1, "SUCCEEDED", "{run}");
    wait_for("the device reports its new setting", Duration::from_secs(30), || {
        json(d, &["devices", "show", "co2_monitor-02"])["config"]["reported"]["sample_rate_seconds"] == 10
    });
    let shown = ok(d, &["devices", "show", "co2_monitor-02"]);
    assert!(shown.contains("sample_rate_seconds") && !shown.contains("(pending)"), "{shown}");

    // A reboot is answered, then the device reconnects.
    let started = json(d, &["commands", "send", "reboot", "--thing", "smart_plug-02", "--yes"]);
    let run = ended(d, started["run"]["id"].as_str().unwrap());
    assert_eq!(states(&run), [("smart_plug-02".to_string(), "SUCCEEDED".to_string())], "{run}");
    wait_for("the rebooted device is back", Duration::from_secs(60), || {
        json(d, &["devices", "show", "smart_plug-02"])["connected"] == true
    });
    let listed = runs(d, &["--status", "completed"]);
    assert_eq!(listed.len(), 4, "{listed:?}");
}
