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
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_ota"))
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
        .output()
        .expect("run ota");
    assert!(out.status.success(), "ota {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
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
