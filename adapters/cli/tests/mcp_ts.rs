//! The TypeScript MCP SDK (`@modelcontextprotocol/sdk` from npm, the SDK Claude Code is built
//! on; pinned in `adapters/mcp/tests/ts-client/package-lock.json`) against the real `ota serve`
//! over streamable HTTP with a bearer token: `client.mjs` lists the tools, calls read tools,
//! lists and reads the resources, lists the prompts and gets `safe_rollout`, and plans the
//! pet_feeder update as an operator; a viewer's token reads but planning is refused;
//! no token is refused.
//!
//! Runs when `OTA_TEST_MCP_TS_CLIENT=1` (CI sets it and runs `npm ci` there); it says it
//! skipped otherwise, and fails under `CI` without it.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Killed, free_port, ok, spawn, wait_for};
use tempfile::TempDir;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp/tests/ts-client").canonicalize().expect("the client's folder")
}

/// `node client.mjs url token role`, bounded to 90 s; its success and transcript.
fn client(folder: &Path, url: &str, token: &str, role: &str) -> (bool, String) {
    let log = TempDir::new().unwrap();
    let log = log.path().join("client.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut node = Killed(
        Command::new("node")
            .arg(folder.join("client.mjs"))
            .args([url, token, role])
            .current_dir(folder)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("run node (Node.js must be installed)"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "client.mjs ({role}) ran past 90 s:\n{}", read(&log));
        std::thread::sleep(Duration::from_millis(100));
    };
    let transcript = read(&log);
    println!("--- {role} ---\n{transcript}");
    (status.success() && transcript.contains("passed"), transcript)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_typescript_mcp_sdk_lists_reads_and_plans_and_a_viewer_is_refused() {
    if std::env::var("OTA_TEST_MCP_TS_CLIENT").ok().as_deref() != Some("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: set OTA_TEST_MCP_TS_CLIENT=1 (with Node.js and `npm ci` in adapters/mcp/tests/ts-client); .ci/run does"
        );
        println!("skipped: set OTA_TEST_MCP_TS_CLIENT=1 (with Node.js and npm) to run the TypeScript MCP client");
        return;
    }
    let folder = client_dir();
    common::npm_ci(&folder, "@modelcontextprotocol/sdk");
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    let (api, mqtt) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let logs = TempDir::new().unwrap();
    let serve_log = logs.path().join("serve.log");
    let _server = spawn(d, &["serve", "--listen", api.as_str(), "--mqtt-listen", mqtt.as_str()], &serve_log);
    wait_for("the server listens", Duration::from_secs(60), || TcpStream::connect(&api).is_ok());
    let url = format!("http://{api}/mcp");
    let context = || format!("\n--- ota serve ---\n{}", read(&serve_log));

    let operator = ok(d, &["token", "create", "--role", "operator", "--ttl", "10m"]);
    let (passed, transcript) = client(&folder, &url, operator.trim(), "operator");
    assert!(passed, "the operator's session failed:\n{transcript}{}", context());
    assert!(transcript.contains("plan: ") && transcript.contains("plan_id"), "{transcript}");
    assert!(transcript.contains("resources: ota://firmware, ota://fleet"), "{transcript}");
    assert!(transcript.contains("prompts: rollback, safe_rollout"), "{transcript}");

    let viewer = ok(d, &["token", "create", "--role", "viewer", "--ttl", "10m"]);
    let (passed, transcript) = client(&folder, &url, viewer.trim(), "viewer");
    assert!(passed, "the viewer's session failed:\n{transcript}{}", context());
    assert!(transcript.contains("viewer: plan_update refused"), "{transcript}");

    let (passed, transcript) = client(&folder, &url, "-", "none");
    assert!(passed, "the tokenless session failed:\n{transcript}{}", context());

    let rollouts = ok(d, &["--json", "rollouts", "list"]);
    assert_eq!(rollouts.trim(), "[]", "planning started nothing");
}
