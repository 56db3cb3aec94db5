//! `ota sim --tls` against a running `ota serve`: simulated devices connect to the TLS device
//! port with their own certificates from the data dir's CA (no password), an update rollout
//! completes over that link, the same request again has nothing to update, and a second run
//! reuses the certificates it cached (the CA's ledger does not grow) while a device revoked
//! in between is refused and said so.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const PROMPT: &str = "Update all pet_feeder devices to the latest firmware";
const DEVICES: [&str; 4] = ["pet_feeder-01", "pet_feeder-02", "pet_feeder-03", "pet_feeder-04"];

fn ledger_entries(data: &Path) -> usize {
    let text = std::fs::read_to_string(data.join("device-ca/certificates.json")).unwrap_or_default();
    text.matches("\"serial\"").count()
}

fn db(data: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data.join("ota.db")).unwrap()
}

/// Whether the registry says `thing` is connected.
fn connected(data: &Path, thing: &str) -> bool {
    db(data)
        .query_row("SELECT connected FROM devices WHERE thing = ?1", [thing], |r| r.get::<_, i64>(0))
        .is_ok_and(|c| c == 1)
}

/// `ota --json devices list --type pet_feeder`: thing -> firmware version.
fn versions(data: &Path) -> std::collections::BTreeMap<String, String> {
    let out = ok(data, &["--json", "devices", "list", "--type", "pet_feeder"]);
    let listed: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let devices = listed["devices"].as_array().or(listed.as_array()).cloned().unwrap_or_default();
    devices
        .iter()
        .map(|d| {
            let thing = d["thing"].as_str().unwrap_or_default().to_string();
            (thing, d["firmware_version"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

fn ask(data: &Path) -> Value {
    let out = ota(data, &["--json", "ask", PROMPT, "--wait", "180"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("ask's JSON: {e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    report
}

#[test]
fn a_simulated_fleet_updates_over_mutual_tls_and_reuses_its_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&data, &["init", "--demo"]);
    let (api, mqtt, mqtts) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _server = spawn(
        &data,
        &["serve", "--listen", &api, "--mqtt-listen", &mqtt, "--mqtts-listen", &mqtts],
        &dir.path().join("serve.log"),
    );
    wait_for("the TLS port listens", WAIT, || TcpStream::connect(&mqtts).is_ok() && data.join("server.json").exists());

    // No --mqtt: the TLS device port comes from server.json.
    let sim_args = ["sim", "--tls", "--types", "pet_feeder", "--devices-per-type", "4"];
    let sim_log = dir.path().join("sim.log");
    let sim = spawn(&data, &sim_args, &sim_log);
    wait_for("the devices connect over TLS", WAIT, || DEVICES.iter().all(|t| connected(&data, t)));
    let log = std::fs::read_to_string(&sim_log).unwrap();
    assert!(
        log.contains(&format!(
            "TLS to 127.0.0.1:{}: 4 certificate(s) issued, 0 reused",
            mqtts.split(':').nth(1).unwrap()
        )),
        "{log}"
    );
    assert_eq!(ledger_entries(&data), 4, "one certificate per device");
    for thing in DEVICES {
        let cached = data.join("sim-certs").join(thing);
        assert!(cached.join("cert.pem").exists() && cached.join("serial").exists(), "{thing} is cached");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cached.join("key.pem")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{thing}'s key is owner-only");
        }
    }
    let before = versions(&data);
    assert_eq!(before.len(), 4, "{before:?}");
    assert!(before.values().any(|v| v == "1.0.0"), "something to update: {before:?}");

    let report = ask(&data);
    assert_eq!(report["result"], "ended", "{report}");
    let rollouts = report["rollouts"].as_array().unwrap();
    assert_eq!(rollouts.len(), 1, "{report}");
    assert_eq!(rollouts[0]["status"], "completed", "{report}");
    let latest = rollouts[0]["version"].as_str().unwrap().to_string();
    wait_for("every device reports the new version", WAIT, || versions(&data).values().all(|v| *v == latest));

    // The same request again: nothing to update, nothing started.
    let again = ask(&data);
    assert_eq!(again["result"], "nothing_started", "{again}");
    assert!(again["rollouts"].as_array().unwrap().is_empty(), "{again}");

    // A second run on the same data dir reuses the cached certificates; a device revoked in
    // between keeps its revoked one and is refused.
    drop(sim);
    wait_for("the first fleet is gone", WAIT, || DEVICES.iter().all(|t| !connected(&data, t)));
    let out = ok(&data, &["devices", "revoke", "pet_feeder-02"]);
    assert!(out.contains("1 certificate(s) revoked"), "{out}");
    let sim_log = dir.path().join("sim2.log");
    let _sim = spawn(&data, &sim_args, &sim_log);
    wait_for("the good devices connect again", WAIT, || {
        ["pet_feeder-01", "pet_feeder-03", "pet_feeder-04"].iter().all(|t| connected(&data, t))
    });
    let log = std::fs::read_to_string(&sim_log).unwrap();
    assert!(log.contains("0 certificate(s) issued, 4 reused"), "{log}");
    assert!(log.contains("pet_feeder-02's certificate is revoked"), "{log}");
    assert_eq!(ledger_entries(&data), 4, "no certificate issued on the second run");
    // The revoked device's attempts keep failing (it retries every second).
    std::thread::sleep(Duration::from_secs(3));
    assert!(!connected(&data, "pet_feeder-02"), "a revoked device got in");
    let log = std::fs::read_to_string(&sim_log).unwrap();
    assert!(log.contains("pet_feeder-02: cannot connect to the MQTT endpoint"), "the simulator says why: {log}");
}
