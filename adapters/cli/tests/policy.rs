//! The real `ota` binary with authorization policies: `ota policy check` validates a file and
//! says where it is wrong, `ota policy show` prints what is in force, and a data dir's
//! `policies.cedar` decides every command; one that does not parse or validate keeps every
//! command and `ota serve` from starting, naming its line and column.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

const DEFAULT: &str = include_str!("../../../ota-core/src/authz/default.cedar");

/// The default policies and a forbid of every gate change.
fn locked_gates() -> String {
    format!(
        "{DEFAULT}\n@id(\"gates-locked\")\n@reason(\"the OTA gates are locked for the audit\")\nforbid (principal, action == Action::\"SetOtaEnabled\", resource);\n"
    )
}

#[test]
fn policy_check_validates_a_file_and_says_where_it_is_wrong() {
    let dir = TempDir::new().unwrap();
    for name in ["senior_operator_reboot.cedar", "change_freeze.cedar"] {
        let file = example(name);
        let out = ok(dir.path(), &["policy", "check", file.to_str().unwrap()]);
        assert!(out.contains("valid") && out.contains("admin-administers"), "{out}");
    }
    let json: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &["--json", "policy", "check", example("change_freeze.cedar").to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(json["valid"], true);
    assert!(json["policies"].as_array().unwrap().iter().any(|p| p == "freeze-factory-floor-1"), "{json}");

    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "permit (principal, action, resource);\npermit (principal, action, resource)\n  when { true }\n",
    )
    .unwrap();
    let err = fails(dir.path(), &["policy", "check", bad.to_str().unwrap()]);
    assert!(err.contains("line 3, column 16") && err.contains("bad.cedar"), "{err}");

    let unknown = dir.path().join("unknown.cedar");
    std::fs::write(&unknown, "permit (principal, action == Action::\"RebootEverything\", resource);\n").unwrap();
    let err = fails(dir.path(), &["policy", "check", unknown.to_str().unwrap()]);
    assert!(err.contains("line 1, column ") && err.contains("RebootEverything"), "{err}");

    let err = fails(dir.path(), &["policy", "check", dir.path().join("missing.cedar").to_str().unwrap()]);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn policy_show_prints_the_defaults_or_the_data_dirs_file_and_the_schema() {
    let dir = TempDir::new().unwrap();
    let out = ok(dir.path(), &["policy", "show"]);
    assert!(out.contains("ota's default policies") && out.contains("@id(\"viewer-reads\")"), "{out}");
    let schema = ok(dir.path(), &["policy", "show", "--schema"]);
    assert!(
        schema.contains("entity Device in [DeviceType, Fleet]") && schema.contains("action StartRollout"),
        "{schema}"
    );
    std::fs::write(dir.path().join("policies.cedar"), locked_gates()).unwrap();
    let out = ok(dir.path(), &["policy", "show"]);
    assert!(out.contains("policies.cedar") && out.contains("gates-locked"), "{out}");
}

#[test]
fn a_data_dirs_policies_decide_every_command() {
    let dir = TempDir::new().unwrap();
    ok(dir.path(), &["init", "--demo"]);
    std::fs::write(dir.path().join("policies.cedar"), locked_gates()).unwrap();
    // The local user is the data dir's admin; the policy still forbids the gate change.
    let err = fails(dir.path(), &["config", "disable", "pet_feeder"]);
    assert!(err.contains("the OTA gates are locked for the audit") && err.contains("gates-locked"), "{err}");
    let gates = ok(dir.path(), &["--json", "config", "list"]);
    assert!(gates.contains("pet_feeder"), "{gates}");
    let pet: serde_json::Value = serde_json::from_str(&gates).unwrap();
    let pet = pet.as_array().unwrap().iter().find(|t| t["device_type"] == "pet_feeder").cloned().unwrap();
    assert_eq!(pet["ota_enabled"], true, "the refused change changed nothing: {pet}");
    // Everything else is the default matrix.
    assert!(ok(dir.path(), &["firmware", "list"]).contains("pet_feeder"));
    let audit = ok(dir.path(), &["--json", "audit"]);
    assert!(audit.contains("gates are locked"), "the refusal is audited: {audit}");
}

#[test]
fn a_bad_policy_file_keeps_every_command_and_the_server_from_starting() {
    let dir = TempDir::new().unwrap();
    ok(dir.path(), &["init", "--demo"]);
    let path = dir.path().join("policies.cedar");
    // Validates nowhere: a Fleet has no location.
    std::fs::write(
        &path,
        format!("{DEFAULT}\nforbid (principal, action == Action::\"StartRollout\", resource)\nwhen {{ resource.location == \"lab\" }};\n"),
    )
    .unwrap();
    let line = DEFAULT.lines().count() + 3;
    for args in [&["firmware", "list"][..], &["devices", "list"], &["plan", "update pet_feeder to 3.0.0"], &["audit"]] {
        let err = fails(dir.path(), args);
        assert!(err.contains(&format!("line {line}, column 8")) && err.contains("policies.cedar"), "{args:?}: {err}");
    }
    let mut serve = Command::new(env!("CARGO_BIN_EXE_ota"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
        .env_remove("OTA_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            serve.kill().unwrap();
            panic!("ota serve started with a policy file that does not validate");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success() && err.contains(&format!("line {line}, column 8")), "{err}");

    // A file that does not parse at all is as bad.
    std::fs::write(&path, "permit (").unwrap();
    let err = fails(dir.path(), &["firmware", "list"]);
    assert!(err.contains("line 1, column "), "{err}");
    // Fixed, everything runs again.
    std::fs::remove_file(&path).unwrap();
    ok(dir.path(), &["firmware", "list"]);
}
