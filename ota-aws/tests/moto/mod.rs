//! A moto server for the tests, started on 127.0.0.1 with a free port, gated by
//! `OTA_TEST_AWS=1`. Unset: the caller prints "skipped" and returns (under `CI` it fails). Set but moto cannot
//! start: the test fails, never skips silently.
#![allow(dead_code)] // each test binary uses a different part

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use ota_aws::{AwsClients, AwsSettings};

/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// A running moto server; killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `None` when `OTA_TEST_AWS` is not `1` (after printing why); panics when it is and moto
/// cannot start.
pub fn start() -> Option<Moto> {
    if std::env::var("OTA_TEST_AWS").as_deref() != Ok("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: set OTA_TEST_AWS=1 (with moto: pip install 'moto[server]'); .ci/run does"
        );
        println!("skipped: set OTA_TEST_AWS=1 (and pip install 'moto[server]') to run the AWS backend against moto");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let mut last_error = String::new();
    for cmd in [vec!["moto_server".to_string()], vec!["python3".into(), "-m".into(), "moto.server".into()]] {
        let spawned = Command::new(&cmd[0])
            .args(&cmd[1..])
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                last_error = format!("{}: {e}", cmd.join(" "));
                continue;
            }
        };
        let moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last_error = format!("{} did not listen on port {port} within 30 s", cmd.join(" "));
    }
    panic!("OTA_TEST_AWS=1 but moto could not start ({last_error}); pip install 'moto[server]'");
}

impl Moto {
    /// Settings for one fresh deployment on this server (`prefix` keeps deployments apart).
    pub fn settings(&self, prefix: &str) -> AwsSettings {
        let mut s = AwsSettings::new(format!("{prefix}-firmware"));
        s.endpoint_url = Some(self.url.clone());
        s.region = Some("us-east-1".into());
        s.table_prefix = prefix.to_string();
        s.presign_role_arn = Some(format!("arn:aws:iam::{ACCOUNT}:role/ota-presign"));
        s.fleet_index = false;
        s
    }

    /// Clients with static test credentials, so no credential chain is consulted.
    pub async fn clients(&self) -> AwsClients {
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .test_credentials()
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        AwsClients::from_shared(&shared, true, "us-east-1".into())
    }

    /// Clears every resource on the server.
    pub async fn reset(&self) {
        let out = Command::new("curl").args(["-sf", "-X", "POST", &format!("{}/moto-api/reset", self.url)]).status();
        if !matches!(out, Ok(s) if s.success()) {
            reset_over_tcp(&self.url);
        }
    }
}

/// `POST /moto-api/reset` without curl.
fn reset_over_tcp(url: &str) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("moto reachable");
    write!(s, "POST /moto-api/reset HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send reset");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200"), "moto reset failed: {buf}");
}
