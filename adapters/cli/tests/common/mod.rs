//! Running the real `ota` binary from the CLI's integration tests: commands on a data dir,
//! background processes killed when a test ends, free ports and polling.

#![allow(dead_code)] // each test crate uses its own part

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `ota --data-dir dir`, untouched by the caller's environment.
pub fn ota_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ota"));
    c.arg("--data-dir").arg(dir);
    for var in ["OTA_DATA_DIR", "OTA_MQTT_URL", "OTA_BACKEND", "OTA_CHAT_MODEL", "OTA_CHAT_BASE_URL"] {
        c.env_remove(var);
    }
    c
}

pub fn ota(dir: &Path, args: &[&str]) -> Output {
    ota_cmd(dir).args(args).output().expect("run ota")
}

/// `ota args`, which must succeed; its stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = ota(dir, args);
    assert!(out.status.success(), "ota {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ota args` in the background (device tracing on), its stderr appended to `log`.
pub fn spawn(dir: &Path, args: &[&str], log: &Path) -> Killed {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Killed(
        ota_cmd(dir)
            .args(args)
            .env("OTA_TRACE_DEVICES", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
