//! The tamper campaign of the signed-firmware issue, through the real `ota` binary on real
//! data dirs (created by `ota init --demo`, so signing is required and the demo images are
//! signed by the data dir's trusted `default` key), with the local server and simulated
//! devices running the real device agent:
//!
//! - an image swapped in the catalog folder together with a matching `firmware.sha256` and
//!   `metadata.json` is refused at plan and, when it is swapped after the plan, at start;
//! - images signed by an untrusted key, or by a key since revoked, are refused at publish
//!   and at plan, and nothing is written;
//! - a man in the middle who rewrites images and the job document's sha256 to match
//!   (`--tamper-rate`) leaves every tampered device on its old image, FAILED
//!   `signature_invalid`, and the rollout's policy aborts as it does for corruption;
//! - a rollback below a device's security floor is refused by the service naming the device
//!   and the versions, and an image the service plans for a device whose own floor is higher
//!   is REJECTED `security_version_too_low` by the device.
//!
//! Every refusal is asked twice: the second time behaves as the first.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{ok, ota};
use ota_core::names::DeviceType;
use ota_device::host::{FaultRates, demo_fleet};
use serde_json::Value;
use tempfile::TempDir;

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(dir, &a)).expect("JSON output")
}

/// `ota args`, which must fail; its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = ota(dir, args);
    assert!(!out.status.success(), "ota {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).expect("utf-8")
}

fn demo_world() -> TempDir {
    let dir = TempDir::new().expect("tempdir");
    ok(dir.path(), &["init", "--demo"]);
    dir
}

/// The reason the plan of `prompt` refuses `target`, or "" when it does not.
fn refusal(dir: &Path, prompt: &str, target: &str) -> String {
    let plan = json(dir, &["plan", prompt]);
    plan["refusals"]
        .as_array()
        .expect("refusals")
        .iter()
        .find(|r| r["target"] == target)
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Versions the plan of `prompt` deploys.
fn deployed(dir: &Path, prompt: &str) -> Vec<String> {
    let plan = json(dir, &["plan", prompt]);
    plan["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .map(|d| d["version"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn rollouts(dir: &Path) -> usize {
    json(dir, &["rollouts", "list"]).as_array().expect("rollouts").len()
}

fn default_key_id(dir: &Path) -> String {
    let keys = json(dir, &["keys", "list"]);
    let k = keys.as_array().unwrap().iter().find(|k| k["name"] == "default").expect("the default key");
    k["key_id"].as_str().unwrap().to_string()
}

/// Replaces an artifact's image with `image`, and rewrites its `firmware.sha256` and
/// `metadata.json` to agree with it (as whoever can write the folder would); `firmware.sig`
/// and the signature in metadata.json stay as they were.
fn swap_image(dir: &Path, device_type: &str, version: &str, image: &[u8]) {
    use sha2::Digest;
    let folder = dir.join(format!("firmwares/v{version}/{device_type}"));
    let sha = hex::encode(sha2::Sha256::digest(image));
    std::fs::write(folder.join("firmware.bin"), image).unwrap();
    std::fs::write(folder.join("firmware.sha256"), format!("{sha}  firmware.bin\n")).unwrap();
    let mut meta: Value = serde_json::from_slice(&std::fs::read(folder.join("metadata.json")).unwrap()).unwrap();
    assert!(meta["signature"].is_object(), "the demo image is signed: {meta}");
    meta["sha256"] = Value::from(sha);
    meta["size"] = Value::from(image.len());
    std::fs::write(folder.join("metadata.json"), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
}

#[test]
fn a_new_data_dir_requires_signing_and_keeps_its_keys_private() {
    let dir = demo_world();
    let p = dir.path();
    let settings: Value = serde_json::from_slice(&std::fs::read(p.join("settings.json")).unwrap()).unwrap();
    assert_eq!(settings["signing"]["require_signed"], true, "{settings}");
    let id = default_key_id(p);
    assert_eq!(settings["signing"]["trusted_keys"][0]["key_id"], id.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(p.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("keys"), 0o700);
        assert_eq!(mode("keys/default.key"), 0o600);
    }
    // Every demo image is signed by it, and verifies.
    let listing = json(p, &["firmware", "list", "--for", "pet_feeder-01"]);
    for v in listing["versions"].as_array().unwrap() {
        assert_eq!((v["signed_by"].as_str(), v["allowed"].as_bool()), (Some(id.as_str()), Some(true)), "{v}");
    }
    // export prints the public key only; generate never prints the private one.
    let exported = ok(p, &["keys", "export", "default"]);
    assert!(exported.starts_with("-----BEGIN PUBLIC KEY-----") && !exported.contains("PRIVATE"), "{exported}");
    let generated = ok(p, &["keys", "generate", "release"]);
    assert!(!generated.contains("PRIVATE KEY-----"), "{generated}");
    let secret = std::fs::read_to_string(p.join("keys/release.key")).unwrap();
    assert!(secret.contains("BEGIN PRIVATE KEY") && !generated.contains(secret.lines().nth(1).unwrap()));
    // A name taken is refused, and the key stays as it was.
    assert!(fails(p, &["keys", "generate", "release"]).contains("already exists"));
    assert_eq!(std::fs::read_to_string(p.join("keys/release.key")).unwrap(), secret);
    assert!(fails(p, &["keys", "generate", "../escape"]).contains("invalid key name"));
    // An unsigned publish is refused where signing is required, and writes nothing.
    let img = p.join("new.bin");
    std::fs::write(&img, vec![7u8; 10_000]).unwrap();
    let err = fails(p, &["firmware", "publish", "--type", "pet_feeder", "--version", "4.0.0", img.to_str().unwrap()]);
    assert!(err.contains("signing is required"), "{err}");
    assert!(!p.join("firmwares/v4.0.0").exists());
}

#[test]
fn an_existing_data_dir_without_a_signing_section_keeps_working_unsigned() {
    let dir = TempDir::new().unwrap();
    let p = dir.path();
    // A data dir from before signing: a database, and settings.json without `signing`.
    ok(p, &["init"]);
    let mut settings: Value = serde_json::from_slice(&std::fs::read(p.join("settings.json")).unwrap()).unwrap();
    settings.as_object_mut().unwrap().remove("signing");
    std::fs::write(p.join("settings.json"), serde_json::to_vec_pretty(&settings).unwrap()).unwrap();
    std::fs::remove_dir_all(p.join("keys")).unwrap();
    ok(p, &["init", "--demo"]);
    let settings: Value = serde_json::from_slice(&std::fs::read(p.join("settings.json")).unwrap()).unwrap();
    assert!(settings.get("signing").is_none(), "an existing data dir keeps its settings: {settings}");
    assert!(!p.join("keys").exists());
    let listing = json(p, &["firmware", "list", "--for", "pet_feeder-01"]);
    for v in listing["versions"].as_array().unwrap() {
        assert_eq!((v["signature"].as_str(), v["allowed"].as_bool()), (Some("unsigned"), Some(true)), "{v}");
    }
    let img = p.join("new.bin");
    std::fs::write(&img, vec![7u8; 10_000]).unwrap();
    ok(p, &["firmware", "publish", "--type", "pet_feeder", "--version", "4.0.0", img.to_str().unwrap()]);
    assert_eq!(deployed(p, "Update pet_feeder-01 to 4.0.0"), ["4.0.0"]);
    // What signing protects against: with no key trusted, the man in the middle wins, since
    // the digest it rewrote is all a device can check.
    let (code, report) =
        headless(p, "Update pet_feeder-01 to 2.0.0", &["--devices-per-type", "4", "--tamper-rate", "1.0"]);
    assert_eq!(code, 0, "{report}");
    let job = report["rollouts"][0]["job_id"].as_str().unwrap().to_string();
    assert_eq!(executions_of(&report, &job)["pet_feeder-01"].0, "SUCCEEDED", "{report}");
}

#[test]
fn an_image_swapped_with_consistent_files_is_refused_at_plan_and_at_start() {
    let dir = demo_world();
    let p = dir.path();
    let id = default_key_id(p);
    let prompt = "Update all pet_feeder devices to 3.0.0";
    let original = std::fs::read(p.join("firmwares/v3.0.0/pet_feeder/firmware.bin")).unwrap();
    let files: Vec<(String, Vec<u8>)> = ["firmware.sha256", "metadata.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(p.join("firmwares/v3.0.0/pet_feeder").join(f)).unwrap()))
        .collect();
    let mut evil = original.clone();
    evil[5_000] ^= 0x5a;
    // At start: planned while the image was sound, swapped before the start.
    let plan = json(p, &["plan", prompt]);
    let plan_id = plan["plan_id"].as_str().unwrap().to_string();
    swap_image(p, "pet_feeder", "3.0.0", &evil);
    let err = fails(p, &["rollouts", "start", prompt, "--plan-id", &plan_id]);
    assert!(err.contains("signature_invalid") || err.contains("plan again"), "{err}");
    assert_eq!(rollouts(p), 0, "nothing started");
    // At plan, twice: the signature by the trusted key no longer matches the image.
    for _ in 0..2 {
        let reason = refusal(p, prompt, "pet_feeder");
        assert!(reason.contains("signature_invalid") && reason.contains(&id), "{reason}");
        let started = json(p, &["rollouts", "start", prompt]);
        assert!(started["rollouts"].as_array().is_none_or(Vec::is_empty), "{started}");
        assert_eq!(rollouts(p), 0);
    }
    let verify = ota(p, &["firmware", "verify", "--type", "pet_feeder"]);
    assert!(!verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).contains("signature_invalid"));
    // Without a signature at all, it is refused as unsigned.
    std::fs::remove_file(p.join("firmwares/v3.0.0/pet_feeder/firmware.sig")).unwrap();
    let meta_path = p.join("firmwares/v3.0.0/pet_feeder/metadata.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta.as_object_mut().unwrap().remove("signature");
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    assert!(refusal(p, prompt, "pet_feeder").contains("not signed"), "{}", refusal(p, prompt, "pet_feeder"));
    // Re-signing the swapped image needs the trusted key: whoever swapped it has none.
    ok(p, &["keys", "generate", "intruder"]);
    let err = fails(p, &["firmware", "sign", "pet_feeder", "3.0.0", "--key", "intruder"]);
    assert!(err.contains("not trusted"), "{err}");
    assert!(refusal(p, prompt, "pet_feeder").contains("not signed"));
    // The original files back: planned and started.
    std::fs::write(p.join("firmwares/v3.0.0/pet_feeder/firmware.bin"), &original).unwrap();
    for (f, bytes) in &files {
        std::fs::write(p.join("firmwares/v3.0.0/pet_feeder").join(f), bytes).unwrap();
    }
    ok(p, &["firmware", "sign", "pet_feeder", "3.0.0", "--key", "default"]);
    assert_eq!(refusal(p, prompt, "pet_feeder"), "");
    let started = json(p, &["rollouts", "start", prompt]);
    assert_eq!(started["rollouts"].as_array().map(Vec::len), Some(1), "{started}");
}

#[test]
fn untrusted_and_revoked_keys_are_refused_at_publish_and_at_plan() {
    let dir = demo_world();
    let p = dir.path();
    let img = p.join("new.bin");
    std::fs::write(&img, vec![9u8; 20_000]).unwrap();
    let img = img.to_str().unwrap();
    let publish = |version: &str, key: &str| {
        ota(p, &["firmware", "publish", "--type", "pet_feeder", "--version", version, "--sign", key, img])
    };
    // Untrusted: refused, twice, nothing written.
    ok(p, &["keys", "generate", "rogue"]);
    for _ in 0..2 {
        let out = publish("4.0.0", "rogue");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("not trusted"), "{err}");
        assert!(!p.join("firmwares/v4.0.0").exists());
    }
    // Unknown key, and a key file others may read: refused before anything is read or written.
    assert!(String::from_utf8_lossy(&publish("4.0.0", "missing").stderr).contains("not found"));
    ok(p, &["keys", "generate", "release", "--trust"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = p.join("keys/release.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = String::from_utf8_lossy(&publish("4.0.0", "release").stderr).to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!p.join("firmwares/v4.0.0").exists());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Trusted: published, signed, planned.
    assert!(publish("4.0.0", "release").status.success());
    assert!(p.join("firmwares/v4.0.0/pet_feeder/firmware.sig").exists());
    assert_eq!(deployed(p, "Update pet_feeder-01 to 4.0.0"), ["4.0.0"]);
    // Revoked: plans refuse what it signed, naming it, twice; it signs nothing new.
    let release = json(p, &["keys", "list"]);
    let release_id = release.as_array().unwrap().iter().find(|k| k["name"] == "release").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(p, &["keys", "revoke", "release"]);
    assert!(ok(p, &["keys", "revoke", &release_id]).contains("already revoked"));
    let listed = json(p, &["keys", "list"]);
    let row = listed.as_array().unwrap().iter().find(|k| k["name"] == "release").unwrap().clone();
    assert_eq!((row["trusted"].as_bool(), row["revoked"].as_bool()), (Some(true), Some(true)), "{row}");
    for _ in 0..2 {
        let reason = refusal(p, "Update pet_feeder-01 to 4.0.0", "pet_feeder");
        assert!(reason.contains("revoked") && reason.contains(&release_id), "{reason}");
    }
    let err = String::from_utf8_lossy(&publish("4.1.0", "release").stderr).to_string();
    assert!(err.contains("revoked"), "{err}");
    assert!(!p.join("firmwares/v4.1.0").exists());
    assert!(fails(p, &["keys", "revoke", "nobody"]).contains("not found"));
    // Rotation: signed again by a trusted key, planned again.
    ok(p, &["firmware", "sign", "pet_feeder", "4.0.0", "--key", "default"]);
    assert_eq!(deployed(p, "Update pet_feeder-01 to 4.0.0"), ["4.0.0"]);
    let audit = ok(p, &["--json", "audit", "--limit", "50"]);
    assert!(audit.contains("sign_firmware") && audit.contains("refusing to sign"), "{audit}");
}

/// `ota demo --headless --json` of `prompt` on ports of its own: its exit status and JSON.
fn headless(dir: &Path, prompt: &str, extra: &[&str]) -> (i32, Value) {
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
        "--types",
        "pet_feeder",
    ];
    args.extend_from_slice(extra);
    let out = ota(dir, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the headless JSON: {e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().expect("an exit status"), report)
}

/// (status, reason) of every execution of rollout `job_id`, by thing, from the report.
fn executions_of(report: &Value, job_id: &str) -> BTreeMap<String, (String, String)> {
    let r = report["rollouts"].as_array().unwrap().iter().find(|r| r["job_id"] == job_id).expect("the rollout");
    r["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let reason = e["reason"].as_str().unwrap_or_default().to_string();
            (e["thing"].as_str().unwrap().to_string(), (e["status"].as_str().unwrap().to_string(), reason))
        })
        .collect()
}

fn running(report: &Value) -> BTreeMap<String, (String, String)> {
    report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let v = d["firmware_version"].as_str().unwrap().to_string();
            (d["thing"].as_str().unwrap().to_string(), (v, d["slot_state"].as_str().unwrap().to_string()))
        })
        .collect()
}

#[test]
fn tampered_devices_keep_their_image_and_report_signature_invalid() {
    let dir = TempDir::new().unwrap();
    let p = dir.path();
    let specs = demo_fleet(
        &[DeviceType::parse("pet_feeder").unwrap()],
        12,
        FaultRates::default().with_tamper(0.25).unwrap(),
        5,
    )
    .unwrap();
    let args = ["--devices-per-type", "12", "--tamper-rate", "0.25", "--seed", "5"];
    let (code, report) = headless(p, "Update all pet_feeder devices to the latest firmware", &args);
    assert_eq!(code, 3, "devices failed: {report}");
    let job = report["rollouts"][0]["job_id"].as_str().unwrap().to_string();
    let executions = executions_of(&report, &job);
    let devices = running(&report);
    let mut tampered = 0;
    for s in &specs {
        let (version, slot) = &devices[s.thing.as_str()];
        assert_eq!(slot, "valid", "{}", s.thing);
        let Some((status, reason)) = executions.get(s.thing.as_str()) else {
            assert_eq!(version, "3.0.0", "{} ran the latest already", s.thing);
            continue;
        };
        if s.faults.tamper_download {
            tampered += 1;
            assert_eq!((status.as_str(), reason.as_str()), ("FAILED", "signature_invalid"), "{}", s.thing);
            assert_eq!(version, &s.version.to_string(), "{} kept its old image", s.thing);
        } else {
            assert_eq!(status, "SUCCEEDED", "{}", s.thing);
            assert_eq!(version, "3.0.0");
        }
    }
    assert!(tampered >= 1, "the seed puts tampered devices among those that update: {specs:?}");
}

#[test]
fn a_tampering_link_aborts_the_rollout_as_corruption_does_and_again_the_second_time() {
    let dir = demo_world();
    let p = dir.path();
    ok(p, &["config", "policy", "pet_feeder", "--max-in-flight", "2", "--abort-min-executed", "2"]);
    let args = ["--devices-per-type", "12", "--tamper-rate", "1.0"];
    let prompt = "Update all pet_feeder devices to the latest firmware";
    for round in 0..2 {
        let (code, report) = headless(p, prompt, &args);
        assert_eq!(code, 3, "round {round}: {report}");
        let r = report["rollouts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(r["status"], "aborted", "round {round}: {r}");
        let executions = executions_of(&report, r["job_id"].as_str().unwrap());
        let failed: Vec<_> = executions.values().filter(|(s, _)| s == "FAILED").collect();
        assert!(!failed.is_empty(), "{r}");
        assert!(failed.iter().all(|(_, reason)| reason == "signature_invalid"), "{r}");
        assert!(executions.values().all(|(s, _)| s == "FAILED" || s == "CANCELED"), "nothing succeeded: {r}");
        // No device moved: 01, 02, 05, ... run 1.0.0 and 03, 07, 11 run 2.0.0, as before.
        for (thing, (version, slot)) in running(&report) {
            assert_eq!(slot, "valid", "{thing}");
            let n: u32 = thing.rsplit('-').next().unwrap().parse().unwrap();
            let expected = match n % 4 {
                1 | 2 => "1.0.0",
                3 => "2.0.0",
                _ => "3.0.0",
            };
            assert_eq!(version, expected, "{thing} (round {round})");
        }
    }
    assert_eq!(rollouts(p), 2);
}

#[test]
fn a_rollback_below_the_security_floor_is_refused_by_the_service_and_by_the_device() {
    let dir = demo_world();
    let p = dir.path();
    let img = p.join("secure.bin");
    // An image the simulated bootloader can boot: it names its version in its app descriptor.
    let v4 = ota_core::version::FirmwareVersion::new(4, 0, 0);
    std::fs::write(&img, ota_core::demo::firmware_image(&DeviceType::parse("pet_feeder").unwrap(), &v4)).unwrap();
    let img = img.to_str().unwrap();
    ok(
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
            "--security-version",
            "2",
            img,
        ],
    );
    // pet_feeder-01 moves to 4.0.0, whose security version is its floor from then on.
    let (code, report) = headless(p, "Update pet_feeder-01 to 4.0.0", &["--devices-per-type", "4"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(running(&report)["pet_feeder-01"].0, "4.0.0");
    let listing = json(p, &["firmware", "list", "--for", "pet_feeder-01"]);
    assert_eq!(listing["security_floor"], 2, "{listing}");
    for v in listing["versions"].as_array().unwrap() {
        let allowed = v["version"] == "4.0.0";
        assert_eq!(v["allowed"].as_bool(), Some(allowed), "{v}");
    }
    let text = ok(p, &["firmware", "list", "--for", "pet_feeder-01"]);
    assert!(text.contains("security floor 2"), "{text}");
    // The service refuses the rollback, naming the device and the versions, twice.
    for _ in 0..2 {
        let reason = refusal(p, "Roll back pet_feeder-01 to 1.0.0", "pet_feeder");
        assert!(reason.contains("pet_feeder-01 requires security version 2 or higher; 1.0.0 has 0"), "{reason}");
        let started = json(p, &["rollouts", "start", "Roll back pet_feeder-01 to 1.0.0"]);
        assert!(started["rollouts"].as_array().is_none_or(Vec::is_empty), "{started}");
    }
    // A device whose own floor is higher than the service knows (its eFuse burned further)
    // rejects the job before downloading anything, and keeps running what it ran.
    let (code, report) =
        headless(p, "Update pet_feeder-02 to 4.0.0", &["--devices-per-type", "4", "--security-floor", "3"]);
    assert_eq!(code, 3, "{report}");
    let r = report["rollouts"].as_array().unwrap().last().unwrap().clone();
    let executions = executions_of(&report, r["job_id"].as_str().unwrap());
    assert_eq!(
        executions.get("pet_feeder-02").map(|(s, r)| (s.as_str(), r.as_str())),
        Some(("REJECTED", "security_version_too_low")),
        "{r}"
    );
    assert_eq!(running(&report)["pet_feeder-02"], ("1.0.0".to_string(), "valid".to_string()));
}
