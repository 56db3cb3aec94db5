//! Running the real `ota` binary from the CLI's integration tests: commands on a data dir,
//! background processes killed when a test ends, free ports and polling.

#![allow(dead_code)] // each test crate uses its own part

use std::net::{TcpListener, TcpStream};
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

/// One HTTP/1.1 request over a plain socket: (status, headers, body).
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut conn = TcpStream::connect(addr).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    conn.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `npm ci` in `folder` unless `package` (the one its script needs) is installed there already.
pub fn npm_ci(folder: &Path, package: &str) {
    if folder.join("node_modules").join(package).join("package.json").exists() {
        return;
    }
    println!("installing {package} and its lockfile's other packages (npm ci in {})", folder.display());
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(folder)
        .output()
        .expect("run npm (Node.js and npm must be installed)");
    assert!(
        out.status.success(),
        "npm ci failed in {}:\n{}\n{}",
        folder.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
