//! The CLI at the edge of a pipe: `ota devices show pet_feeder-02 | head -3` and friends. A
//! reader that goes away early is not an error: no panic, no backtrace, nothing on stderr, and
//! the exit status `ota --help` documents for it (0). Runs the real binary with stdout a pipe.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{ExitStatus, Stdio};

use common::{ok, ota_cmd};
use tempfile::TempDir;

/// Runs `ota args` with stdout a pipe that is closed after `lines` lines were read (0: before
/// the command writes anything, so its first write meets a closed pipe); its status and stderr.
fn with_closed_stdout(dir: &std::path::Path, args: &[&str], lines: usize) -> (ExitStatus, String) {
    let mut child = ota_cmd(dir)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ota");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    for _ in 0..lines {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "ota {args:?} printed fewer than {lines} lines");
    }
    drop(reader); // the read end closes: the next write gets EPIPE
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_quiet(args: &[&str], status: ExitStatus, stderr: &str) {
    assert!(!stderr.contains("panicked"), "ota {args:?} panicked on a closed pipe:\n{stderr}");
    assert!(!stderr.contains("backtrace"), "ota {args:?} printed a backtrace:\n{stderr}");
    assert!(stderr.trim().is_empty(), "ota {args:?} printed on stderr:\n{stderr}");
    assert_eq!(status.code(), Some(0), "ota {args:?} on a closed pipe: {status}\n{stderr}");
}

#[test]
fn a_closed_pipe_ends_every_kind_of_output_quietly() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    // Read one line, then close (`| head -1`): the rest may or may not still be written.
    for args in [
        &["devices", "list"][..],
        &["devices", "show", "pet_feeder-02"],
        &["--json", "audit"],
        &["--json", "devices", "list"],
        &["firmware", "list"],
    ] {
        let (status, stderr) = with_closed_stdout(d, args, 1);
        assert_quiet(args, status, &stderr);
    }
    // Closed before the first write: that write always meets EPIPE.
    for args in [
        &["devices", "list"][..],
        &["devices", "show", "pet_feeder-02"],
        &["--json", "audit"],
        &["plan", "Update all pet_feeder devices to the latest firmware"],
        &["rollouts", "list"],
        &["config", "list"],
    ] {
        let (status, stderr) = with_closed_stdout(d, args, 0);
        assert_quiet(args, status, &stderr);
    }
}

#[test]
fn an_error_is_printed_once_even_when_stdout_is_closed() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["init", "--demo"]);
    let args = ["--json", "devices", "show", "no_such_type-01"];
    let (status, stderr) = with_closed_stdout(d, &args, 0);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(1), "an error keeps its status on a closed pipe: {stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "one error line:\n{stderr}");
}

#[test]
fn help_documents_the_exit_status() {
    let dir = TempDir::new().unwrap();
    let help = ok(dir.path(), &["--help"]);
    for code in ["0  done", "1  an error", "3  `ask`", "4  `ask`", "head -1"] {
        assert!(help.contains(code), "`ota --help` does not say {code:?}:\n{help}");
    }
}
