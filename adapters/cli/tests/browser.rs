//! The chat page in a real browser: `ota serve` on the demo world with simulated pet_feeder and
//! beehive_scale devices (`ota sim`), and `adapters/http/tests/browser/chat.mjs` driving
//! Debian's Chromium through playwright-core: sign in with an operator's token, plan and confirm
//! a pet_feeder update, follow the rollout to COMPLETED, ask for a refused beehive_scale update,
//! and check the phone layout. Screenshots land in `target/browser/`.
//!
//! Runs when `OTA_TEST_BROWSER=1` (CI sets it and installs chromium and the npm packages); it
//! says it skipped otherwise, and fails under `CI` without it.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Killed, free_port, ok, spawn, wait_for};
use tempfile::TempDir;

fn connected(dir: &Path, device_type: &str) -> i64 {
    let Ok(db) = rusqlite::Connection::open(dir.join("ota.db")) else { return 0 };
    db.query_row("SELECT COUNT(*) FROM devices WHERE device_type = ?1 AND connected = 1", [device_type], |r| r.get(0))
        .unwrap_or(0)
}

/// The last `n` lines of a log file, for a failure message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root")
}

#[test]
fn the_chat_page_plans_confirms_and_follows_a_rollout_in_chromium() {
    if std::env::var("OTA_TEST_BROWSER").ok().as_deref() != Some("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: set OTA_TEST_BROWSER=1 (with chromium and `npm ci` in adapters/http/tests/browser)"
        );
        println!("skipped: set OTA_TEST_BROWSER=1 (with Debian's chromium) to drive the chat page in a browser");
        return;
    }
    let root = workspace_root();
    let browser_dir = root.join("adapters/http/tests/browser");
    common::npm_ci(&browser_dir, "playwright-core");
    let screenshots = root.join("target/browser");
    std::fs::create_dir_all(&screenshots).unwrap();

    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    let (api, mqtt) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let logs = TempDir::new().unwrap();
    let (serve_log, sim_log) = (logs.path().join("serve.log"), logs.path().join("sim.log"));
    let _server = spawn(d, &["serve", "--listen", api.as_str(), "--mqtt-listen", mqtt.as_str()], &serve_log);
    wait_for("the server listens", Duration::from_secs(60), || {
        TcpStream::connect(&api).is_ok() && TcpStream::connect(&mqtt).is_ok()
    });
    let _sim = spawn(
        d,
        &["sim", "--types", "pet_feeder,beehive_scale", "--devices-per-type", "4", "--mqtt", mqtt.as_str()],
        &sim_log,
    );
    wait_for("the simulated devices connect", Duration::from_secs(60), || {
        connected(d, "pet_feeder") == 4 && connected(d, "beehive_scale") == 4
    });
    let token = ok(d, &["token", "create", "--role", "operator", "--ttl", "30m"]);

    // The script bounds its own steps (30 s each, 120 s for the rollout); this is a backstop.
    let out_log = logs.path().join("chat.log");
    let out_file = std::fs::File::create(&out_log).unwrap();
    let mut node = Killed(
        Command::new("node")
            .arg(browser_dir.join("chat.mjs"))
            .current_dir(&browser_dir)
            .env("OTA_URL", format!("http://{api}"))
            .env("OTA_TOKEN", token.trim())
            .env("OTA_SCREENSHOT_DIR", &screenshots)
            .stdin(Stdio::null())
            .stdout(out_file.try_clone().unwrap())
            .stderr(out_file)
            .spawn()
            .expect("run node (Node.js must be installed)"),
    );
    let deadline = Instant::now() + Duration::from_secs(420);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let transcript = std::fs::read_to_string(&out_log).unwrap_or_default();
    println!("{transcript}");
    let context = format!(
        "\n--- ota serve (last lines) ---\n{}\n--- ota sim (last lines) ---\n{}",
        tail(&serve_log, 40),
        tail(&sim_log, 20)
    );
    let status = status.unwrap_or_else(|| panic!("the browser test ran past 7 minutes:\n{transcript}{context}"));
    assert!(status.success(), "the browser test failed ({status}):\n{transcript}{context}");
    assert!(transcript.contains("passed"), "{transcript}");
    for shot in ["chat.png", "refusal.png", "phone.png"] {
        assert!(screenshots.join(shot).exists(), "no {shot} in {}", screenshots.display());
    }
    println!("screenshots: {}", screenshots.display());
}
