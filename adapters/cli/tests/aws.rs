//! The real `ota` binary with `--backend aws` against moto: `ota aws seed-demo` uploads the
//! demo world, then `plan` and `rollouts start` create an IoT job whose configuration reads
//! back from IoT's own API. Gated by `OTA_TEST_AWS=1` (moto from PyPI).
//!
//! Built only with ota-cli's `aws` feature (the README's test command turns it on);
//! `aws_feature.rs` fails under CI when it is off.
#![cfg(feature = "aws")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Option<Moto> {
    if std::env::var("OTA_TEST_AWS").as_deref() != Ok("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: set OTA_TEST_AWS=1 (with moto: pip install 'moto[server]'); .ci/run does"
        );
        println!("skipped: set OTA_TEST_AWS=1 to run the CLI against moto");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("OTA_TEST_AWS=1 but moto_server cannot start ({e}); pip install 'moto[server]'"));
    let m = Moto(child, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(m)
}

fn ota(port: u16, args: &[&str]) -> Value {
    let out = ota_output(port, args);
    assert!(out.status.success(), "ota {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// `ota --backend aws --json ARGS` against moto, on a data dir of its own; whatever it did.
fn ota_output(port: u16, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(["--backend", "aws", "--json", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env("OTA_AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("OTA_AWS_REGION", "us-east-1")
        .env("OTA_AWS_BUCKET", "ota-demo-firmware")
        .env("OTA_AWS_TABLE_PREFIX", "ota-demo")
        .env("OTA_AWS_PRESIGN_ROLE_ARN", "arn:aws:iam::123456789012:role/ota-presign")
        .env("OTA_AWS_FLEET_INDEX", "off")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("OTA_BACKEND")
        .env_remove("AWS_PROFILE")
        .env_remove("OTA_SETTINGS")
        .output()
        .expect("run ota")
}

#[test]
fn seed_demo_plan_and_start_create_a_configured_job() {
    let Some(m) = moto() else { return };
    let seeded = ota(m.1, &["aws", "seed-demo", "--create-resources"]);
    assert_eq!(seeded["demo"]["devices_created"], 104, "{seeded}");
    let again = ota(m.1, &["aws", "seed-demo"]);
    assert_eq!(again["demo"]["devices_created"], 0, "seeding is idempotent");

    let prompt = "Update all vision_ai_face_detector devices to v2.0.0";
    let plan = ota(m.1, &["plan", prompt]);
    let things: Vec<&str> =
        plan["deployments"][0]["things"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(things, ["vision_ai_face_detector-01", "vision_ai_face_detector-02"], "{plan}");
    let plan_id = plan["plan_id"].as_str().unwrap();

    let started = ota(m.1, &["rollouts", "start", prompt, "--plan-id", plan_id]);
    let id = started["rollouts"][0]["id"].as_str().unwrap().to_string();

    // The job as IoT holds it: DescribeJob over REST (moto routes by the credential scope
    // and does not check the signature), so the CLI's tests need no SDK of their own.
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iot/aws4_request, SignedHeaders=host, Signature=0";
    let job = Command::new("curl")
        .args(["-sf", "-H", auth, &format!("http://127.0.0.1:{}/jobs/{id}", m.1)])
        .output()
        .unwrap();
    assert!(job.status.success(), "DescribeJob over REST failed");
    let job: Value = serde_json::from_slice(&job.stdout).unwrap();
    let job = &job["job"];
    assert_eq!(job["targetSelection"], "SNAPSHOT");
    assert_eq!(job["targets"].as_array().map(Vec::len), Some(2));
    assert_eq!(job["jobExecutionsRolloutConfig"]["maximumPerMinute"], 2);
    assert_eq!(job["abortConfig"]["criteriaList"][0]["thresholdPercentage"], 5.0);
    assert_eq!(job["timeoutConfig"]["inProgressTimeoutInMinutes"], 30);
    assert_eq!(job["presignedUrlConfig"]["roleArn"], "arn:aws:iam::123456789012:role/ota-presign");

    let listed = ota(m.1, &["rollouts", "list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[test]
fn enroll_writes_the_provisioning_of_an_aws_iot_thing_and_revoke_retires_its_certificate() {
    let Some(m) = moto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("pet_feeder-05");
    let certs_arg = certs.to_str().unwrap();
    let enroll = ["devices", "enroll", "pet_feeder-05", "--type", "pet_feeder", "--attr", "location=kitchen"];

    // Bad input creates nothing on AWS and writes nothing.
    let bad = ota_output(m.1, &[&enroll[..5], &["--attr", "bad", "--out", certs_arg]].concat());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("key=value"), "{bad:?}");
    let url = ota_output(m.1, &[&enroll[..], &["--out", certs_arg, "--mqtt-url", "mqtts://x:8883"]].concat());
    assert!(String::from_utf8_lossy(&url.stderr).contains("IoT endpoint"), "{url:?}");
    assert!(!certs.exists());
    let listed = ota(m.1, &["devices", "list"]);
    assert!(!listed.to_string().contains("pet_feeder-05"), "{listed}");

    let done = ota(m.1, &[&enroll[..], &["--out", certs_arg]].concat());
    assert_eq!(done["thing"], "pet_feeder-05", "{done}");
    let mqtt_url = done["mqtt_url"].as_str().unwrap();
    assert!(mqtt_url.starts_with("mqtts://") && mqtt_url.ends_with("-ats.iot.us-east-1.amazonaws.com:8883"), "{done}");
    let read = |f: &str| std::fs::read_to_string(certs.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert!(read("ca.pem").starts_with("-----BEGIN CERTIFICATE-----"), "Amazon Root CA 1");
    assert!(read("cert.pem").starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(read("key.pem").contains("PRIVATE KEY-----"));
    let nvs = read("nvs.csv");
    assert!(nvs.starts_with("key,type,encoding,value\nota,namespace,,\n"), "{nvs}");
    assert!(nvs.contains("thing,data,string,\"pet_feeder-05\""), "{nvs}");
    assert!(nvs.contains(&format!("mqtt_url,data,string,\"{mqtt_url}\"")), "{nvs}");
    assert!(!nvs.contains("https_ca"), "downloads are S3's: no local CA for HTTPS: {nvs}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the device key is owner-only");
    }
    let device = ota(m.1, &["devices", "show", "pet_feeder-05"]);
    assert!(device.to_string().contains("pet_feeder"), "registered in IoT: {device}");
    // The same folder again: refused before anything is created.
    let again = ota_output(m.1, &[&enroll[..], &["--out", certs_arg]].concat());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "{again:?}");

    let revoked = ota(m.1, &["devices", "revoke", "pet_feeder-05"]);
    assert_eq!(revoked["serials"].as_array().map(Vec::len), Some(1), "{revoked}");
    let twice = ota(m.1, &["devices", "revoke", "pet_feeder-05"]);
    assert_eq!(twice["serials"].as_array().map(Vec::len), Some(0), "nothing left to revoke: {twice}");
}
