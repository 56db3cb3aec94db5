//! Behaviours of the update state machine, one test each, over the simulated world.

use serde_json::json;

use super::sim::*;
use super::*;
use crate::job::JobExecution;

fn drain(m: &mut UpdateMachine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn booted(version: &str) -> UpdateMachine {
    let mut m = UpdateMachine::new(config());
    m.handle(Event::Booted(BootInfo {
        running: RunningImage { version: v(version), slot: "ota_0".into(), state: SlotState::Valid },
        update_slot_state: SlotState::Empty,
        update_slot_size: SLOT_SIZE,
        pending: None,
    }));
    m
}

fn publishes(actions: &[Action]) -> Vec<(String, serde_json::Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish { topic, payload } => Some((topic.clone(), serde_json::from_str(payload).unwrap())),
            _ => None,
        })
        .collect()
}

#[test]
fn on_connect_it_subscribes_asks_for_the_next_job_and_reports_the_shadow() {
    let mut m = booted("1.0.0");
    assert!(drain(&mut m).is_empty(), "nothing happens before the network is up");
    m.handle(Event::Connected);
    let actions = drain(&mut m);
    let subs: Vec<_> = actions
        .iter()
        .filter_map(|a| if let Action::Subscribe { topic } = a { Some(topic.as_str()) } else { None })
        .collect();
    assert!(subs.contains(&"$aws/things/pet_feeder-01/jobs/notify-next"), "{subs:?}");
    assert!(subs.contains(&"$aws/things/pet_feeder-01/jobs/$next/get/accepted"), "{subs:?}");
    let pubs = publishes(&actions);
    let shadow = &pubs.iter().find(|(t, _)| t == "$aws/things/pet_feeder-01/shadow/update").unwrap().1;
    assert_eq!(shadow["state"]["reported"], json!({"firmwareVersion": "1.0.0", "deviceType": TYPE, "slot": "ota_0"}));
    assert_eq!(pubs.last().unwrap().0, "$aws/things/pet_feeder-01/jobs/$next/get", "asks after subscribing");
}

#[test]
fn a_good_update_reboots_into_the_new_image_and_reports_succeeded() {
    let mut w = World::new("1.0.0");
    w.offer("job-1", "2.0.0", 10_000);
    w.run_to_quiet(None);
    assert_eq!(w.running_version(), v("2.0.0"));
    assert_eq!(w.slots[w.running].state, Sim::Valid, "confirmed after the self-test");
    let (status, details) = w.final_status("job-1").unwrap();
    assert_eq!((status.as_str(), &details["firmwareVersion"]), ("SUCCEEDED", &json!("2.0.0")));
    assert_eq!(w.shadow.as_ref().unwrap()["firmwareVersion"], "2.0.0");
    assert_eq!(w.shadow.as_ref().unwrap()["slot"], "ota_1");
    assert_eq!(w.pending(), None, "the pending record is gone once the cloud has the result");
    // The order that makes power loss safe.
    let order: Vec<_> = w.log.iter().map(Action::kind).filter(|k| *k != ActionKind::WriteChunk).collect();
    let pos = |k| order.iter().position(|x| *x == k).unwrap();
    assert!(pos(ActionKind::FinishUpdate) < pos(ActionKind::PersistPending));
    assert!(pos(ActionKind::PersistPending) < pos(ActionKind::SetBootSlot));
    assert!(pos(ActionKind::SetBootSlot) < pos(ActionKind::Reboot));
    assert!(pos(ActionKind::Reboot) < pos(ActionKind::MarkSlotValid));
}

#[test]
fn invalid_documents_are_rejected_before_anything_is_written() {
    let img = image("2.0.0", 4000);
    let good = document("2.0.0", &img);
    let mut bad_type = good.clone();
    bad_type["deviceType"] = json!("smart_plug");
    let mut no_op = good.clone();
    no_op["operation"] = json!("reboot");
    let mut big = good.clone();
    big["firmware"]["size"] = json!(SLOT_SIZE + 1);
    let mut ftp = good.clone();
    ftp["firmware"]["url"] = json!("ftp://firmware.example/fw.bin");
    let mut short_sha = good.clone();
    short_sha["firmware"]["sha256"] = json!("abcd");
    let cases = [
        (bad_type, "wrong_device_type"),
        (no_op, "unsupported_operation"),
        (big, "image_too_large"),
        (ftp, "unsupported_url"),
        (short_sha, "invalid_sha256"),
        (json!({"version": "2.0.0"}), "malformed_document"),
    ];
    for (doc, reason) in cases {
        let mut w = World::new("1.0.0");
        w.offer_document("job-1", doc);
        w.run_to_quiet(None);
        let (status, details) = w.final_status("job-1").unwrap();
        assert_eq!((status.as_str(), details["reason"].as_str().unwrap()), ("REJECTED", reason));
        assert!(details["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(w.executed(ActionKind::BeginUpdate), 0, "{reason}: nothing written");
        assert_eq!(w.running_version(), v("1.0.0"));
    }
}

#[test]
fn a_job_for_the_running_version_succeeds_as_already_installed() {
    let mut w = World::new("2.0.0");
    w.offer("job-1", "2.0.0", 4000);
    w.run_to_quiet(None);
    let (status, details) = w.final_status("job-1").unwrap();
    assert_eq!((status.as_str(), &details["reason"]), ("SUCCEEDED", &json!("already_installed")));
    assert_eq!(w.executed(ActionKind::BeginUpdate), 0);
}

#[test]
fn a_downgrade_needs_the_rollback_flag() {
    let mut w = World::new("2.0.0");
    w.offer("job-1", "1.0.0", 4000);
    w.run_to_quiet(None);
    assert_eq!(w.final_status("job-1").unwrap().1["reason"], "downgrade_not_allowed");

    let mut w = World::new("2.0.0");
    let mut doc = w.offer("job-2", "1.0.0", 4000);
    doc["rollback"] = json!(true);
    w.jobs[0].document = doc;
    w.run_to_quiet(None);
    assert_eq!(w.final_status("job-2").unwrap().0, "SUCCEEDED");
    assert_eq!(w.running_version(), v("1.0.0"));
}

#[test]
fn progress_is_reported_in_steps_and_not_more_often_than_the_interval() {
    let progress = |ms_per_chunk: u64, min_interval_ms: u64| {
        let mut w = World::new("1.0.0");
        w.config.progress = ProgressPolicy { percent_step: 10, min_interval_ms };
        w.ms_per_chunk = ms_per_chunk;
        w.offer("job-1", "2.0.0", 50 * CHUNK);
        w.run_to_quiet(None);
        let p: Vec<u64> = w
            .statuses
            .iter()
            .filter(|(_, s, d, _)| s == "IN_PROGRESS" && d["step"] == "downloading")
            .map(|(_, _, d, _)| d["progress"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(w.final_status("job-1").unwrap().0, "SUCCEEDED");
        p
    };
    let fast_steps = progress(1000, 0);
    assert_eq!(fast_steps, [0, 10, 20, 30, 40, 50, 60, 70, 80, 90], "one message per 10 %");
    // 50 chunks one second apart, at most one message per 20 s: the interval wins.
    let slow = progress(1000, 20_000);
    assert!(slow.len() <= 4 && slow.len() >= 2, "{slow:?}");
    assert!(slow.windows(2).all(|w| w[0] < w[1]));
    // Everything arrives in the same instant: only the start is reported.
    assert_eq!(progress(0, 5_000), [0]);
}

#[test]
fn a_corrupt_image_fails_with_both_digests_and_keeps_the_old_image() {
    let mut w = World::new("1.0.0");
    let doc = w.offer("job-1", "2.0.0", 10_000);
    w.faults.corrupt_at = Some(5_000);
    w.run_to_quiet(None);
    let (status, details) = w.final_status("job-1").unwrap();
    assert_eq!((status.as_str(), details["reason"].as_str().unwrap()), ("FAILED", "sha256_mismatch"));
    assert_eq!(details["expected"], doc["firmware"]["sha256"]);
    assert!(details["actual"].as_str().is_some_and(|a| a.len() == 64 && *a != details["expected"]));
    assert_eq!(w.executed(ActionKind::AbortUpdate), 1);
    assert_eq!(w.executed(ActionKind::PersistPending) + w.executed(ActionKind::SetBootSlot), 0);
    assert_eq!((w.running_version(), w.slots[w.running].state), (v("1.0.0"), Sim::Valid));
    assert_eq!(w.boot, w.running);
}

#[test]
fn an_image_longer_than_announced_is_a_mismatch() {
    let mut w = World::new("1.0.0");
    let mut doc = w.offer("job-1", "2.0.0", 10_000);
    doc["firmware"]["size"] = json!(9_000);
    w.jobs[0].document = doc;
    w.run_to_quiet(None);
    let (status, details) = w.final_status("job-1").unwrap();
    assert_eq!(
        (status.as_str(), &details["reason"], &details["expectedSize"]),
        ("FAILED", &json!("sha256_mismatch"), &json!("9000"))
    );
    assert_eq!(w.executed(ActionKind::AbortUpdate), 1);
    assert_eq!(w.running_version(), v("1.0.0"));
}

#[test]
fn a_broken_download_resumes_where_it_stopped() {
    let mut w = World::new("1.0.0");
    w.offer("job-1", "2.0.0", 10_000);
    w.faults.break_once_at = Some(3_000);
    w.run_to_quiet(None);
    let offsets: Vec<u64> = w
        .log
        .iter()
        .filter_map(|a| if let Action::Download { offset, .. } = a { Some(*offset) } else { None })
        .collect();
    assert_eq!(offsets, [0, 3_000], "the second request is a Range request from the break");
    assert_eq!(w.executed(ActionKind::BeginUpdate), 1, "the slot is not erased again");
    assert_eq!(w.final_status("job-1").unwrap().0, "SUCCEEDED");
}

#[test]
fn a_download_that_keeps_breaking_fails_after_the_retry_limit() {
    let mut w = World::new("1.0.0");
    w.config.max_download_attempts = 3;
    w.offer("job-1", "2.0.0", 10_000);
    w.faults.break_every = Some(1_000);
    w.run_to_quiet(None);
    let (status, details) = w.final_status("job-1").unwrap();
    assert_eq!(
        (status.as_str(), &details["reason"], &details["attempts"]),
        ("FAILED", &json!("download_failed"), &json!("3"))
    );
    assert_eq!(w.downloads, 3);
    assert_eq!(w.executed(ActionKind::AbortUpdate), 1);
    assert_eq!(w.running_version(), v("1.0.0"));
}

#[test]
fn a_refused_download_fails_at_once() {
    let mut w = World::new("1.0.0");
    w.offer("job-1", "2.0.0", 10_000);
    w.faults.refuse = Some(403);
    w.run_to_quiet(None);
    let (status, details) = w.final_status("job-1").unwrap();
    assert_eq!((status.as_str(), &details["httpStatus"]), ("FAILED", &json!("403")));
    assert_eq!(w.downloads, 1);
}

#[test]
fn an_image_that_fails_its_self_test_is_rolled_back_and_reported() {
    let mut w = World::new("1.0.0");
    w.offer("job-1", "2.0.0", 10_000);
    w.broken.insert(v("2.0.0"));
    w.run_to_quiet(None);
    assert_eq!(w.executed(ActionKind::MarkSlotInvalidAndReboot), 1);
    assert_eq!(w.executed(ActionKind::MarkSlotValid), 0);
    assert_eq!((w.running_version(), w.slots[w.running].state), (v("1.0.0"), Sim::Valid));
    assert_eq!(w.slots[1].state, Sim::Invalid);
    let (status, details) = w.final_status("job-1").unwrap();
    assert_eq!(status, "FAILED");
    assert_eq!(details, json!({"reason": "boot_failed", "firmwareVersion": "1.0.0", "targetVersion": "2.0.0"}));
    assert_eq!(w.shadow.as_ref().unwrap()["firmwareVersion"], "1.0.0");
    assert_eq!(w.pending(), None);
}

#[test]
fn a_second_job_runs_after_the_first_ends() {
    let mut w = World::new("1.0.0");
    w.offer("job-1", "2.0.0", 5_000);
    w.offer("job-2", "3.0.0", 5_000);
    w.run_to_quiet(None);
    assert_eq!(w.final_status("job-1").unwrap().0, "SUCCEEDED");
    assert_eq!(w.final_status("job-2").unwrap().0, "SUCCEEDED");
    assert_eq!(w.running_version(), v("3.0.0"));
}

fn downloading() -> (UpdateMachine, JobExecution) {
    let mut m = booted("1.0.0");
    m.handle(Event::Connected);
    let img = image("2.0.0", 4000);
    let exec = JobExecution {
        job_id: crate::names::JobId::parse("job-1").unwrap(),
        status: "QUEUED".into(),
        document: document("2.0.0", &img),
    };
    m.handle(Event::NextJob(Some(exec.clone())));
    drain(&mut m);
    m.handle(Event::Chunk { bytes: &img[..1000], now_ms: 1 });
    drain(&mut m);
    assert_eq!(m.phase(), Phase::Downloading);
    (m, exec)
}

#[test]
fn a_redelivered_job_does_not_restart_the_download() {
    let (mut m, exec) = downloading();
    m.handle(Event::JobNotified(Some(exec)));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.phase(), Phase::Downloading);
}

#[test]
fn a_cancelled_job_aborts_the_slot_write_without_a_status() {
    let (mut m, _) = downloading();
    m.handle(Event::JobNotified(None));
    assert_eq!(drain(&mut m), [Action::AbortUpdate]);
    assert_eq!(m.phase(), Phase::Idle);
}

#[test]
fn a_flash_write_error_fails_the_job_and_discards_the_slot() {
    let (mut m, _) = downloading();
    m.handle(Event::ActionFailed { action: ActionKind::WriteChunk, detail: "flash timeout".into() });
    let actions = drain(&mut m);
    assert_eq!(actions[0], Action::AbortUpdate);
    let (_, body) = &publishes(&actions)[0];
    assert_eq!((&body["status"], &body["statusDetails"]["reason"]), (&json!("FAILED"), &json!("flash_error")));
}

#[test]
fn a_report_the_cloud_refuses_still_clears_the_pending_record() {
    let mut w = World::new("1.0.0");
    w.offer("job-1", "2.0.0", 5_000);
    w.run_to_quiet(None);
    // The same result again, as after a power cut between reporting and clearing.
    w.storage = Some(
        PendingJob { job_id: crate::names::JobId::parse("job-1").unwrap(), target: v("2.0.0"), previous: v("1.0.0") }
            .to_bytes(),
    );
    w.run_to_quiet(None);
    assert_eq!(w.pending(), None);
    assert!(w.statuses.iter().any(|(_, s, _, accepted)| s == "SUCCEEDED" && !accepted));
}

#[test]
fn a_torn_pending_record_does_not_stop_the_device() {
    let mut w = World::new("1.0.0");
    w.storage = Some(b"{\"jobId\":\"jo".to_vec());
    w.offer("job-1", "2.0.0", 5_000);
    w.run_to_quiet(None);
    assert_eq!(w.final_status("job-1").unwrap().0, "SUCCEEDED");
}

/// A download that finishes before the cloud answered the job's IN_PROGRESS.
fn verified_before_go_ahead() -> (UpdateMachine, JobExecution) {
    let (mut m, exec) = downloading();
    let img = image("2.0.0", 4000);
    m.handle(Event::Chunk { bytes: &img[1000..], now_ms: 2 });
    m.handle(Event::DownloadEnded { now_ms: 3 });
    let actions = drain(&mut m);
    assert!(!actions.iter().any(|a| matches!(a.kind(), ActionKind::SetBootSlot | ActionKind::Reboot)), "{actions:?}");
    let asked = publishes(&actions);
    assert_eq!(asked.len(), 1, "it asks for the go-ahead: {asked:?}");
    assert_eq!(
        (asked[0].1["status"].as_str(), asked[0].1["statusDetails"]["step"].as_str()),
        (Some("IN_PROGRESS"), Some("verified"))
    );
    assert_eq!(m.phase(), Phase::Downloading, "verified, waiting for the go-ahead");
    (m, exec)
}

#[test]
fn a_verified_image_is_installed_only_once_the_cloud_accepts_the_job() {
    let (mut m, exec) = verified_before_go_ahead();
    m.handle(Event::UpdateAccepted { job_id: exec.job_id, status: Some("IN_PROGRESS".into()) });
    let kinds: Vec<ActionKind> = drain(&mut m).iter().map(Action::kind).collect();
    assert!(kinds.contains(&ActionKind::SetBootSlot) && kinds.contains(&ActionKind::Reboot), "{kinds:?}");
    assert_eq!(m.phase(), Phase::Installing);
}

#[test]
fn a_job_canceled_while_its_image_downloaded_is_never_installed() {
    // Rejected IN_PROGRESS: the execution was canceled (a rollout abort) meanwhile.
    let (mut m, exec) = verified_before_go_ahead();
    m.handle(Event::UpdateRejected { job_id: exec.job_id, code: "InvalidStateTransition".into() });
    assert_eq!(drain(&mut m), [Action::AbortUpdate]);
    assert_eq!(m.phase(), Phase::Idle);
    // Or the cloud says the next job is another one, or none.
    let (mut m, _) = verified_before_go_ahead();
    m.handle(Event::JobNotified(None));
    assert_eq!(drain(&mut m), [Action::AbortUpdate]);
    assert_eq!(m.phase(), Phase::Idle);
}

#[test]
fn a_reconnect_mid_update_asks_the_cloud_where_the_job_stands() {
    // The cloud restarted and lost the IN_PROGRESS and the go-ahead request.
    let (mut m, mut exec) = verified_before_go_ahead();
    m.handle(Event::Disconnected);
    m.handle(Event::Connected);
    let asked = publishes(&drain(&mut m));
    assert_eq!(asked.last().unwrap().0, "$aws/things/pet_feeder-01/jobs/$next/get", "{asked:?}");
    // Still queued there: it says IN_PROGRESS again and waits.
    m.handle(Event::NextJob(Some(exec.clone())));
    let again = publishes(&drain(&mut m));
    assert_eq!(again[0].1["status"], "IN_PROGRESS");
    assert_eq!(m.phase(), Phase::Downloading);
    // In progress there: that is the go-ahead.
    exec.status = "IN_PROGRESS".into();
    m.handle(Event::NextJob(Some(exec)));
    assert!(drain(&mut m).iter().any(|a| a.kind() == ActionKind::SetBootSlot));
}

#[test]
fn a_late_reply_to_an_earlier_status_does_not_pass_for_the_report_ack() {
    // Booted into the new image with the result still to report.
    let mut m = UpdateMachine::new(config());
    let job_id = crate::names::JobId::parse("job-1").unwrap();
    m.handle(Event::Booted(BootInfo {
        running: RunningImage { version: v("2.0.0"), slot: "ota_1".into(), state: SlotState::Unverified },
        update_slot_state: SlotState::Valid,
        update_slot_size: SLOT_SIZE,
        pending: Some(PendingJob { job_id: job_id.clone(), target: v("2.0.0"), previous: v("1.0.0") }),
    }));
    m.handle(Event::Connected);
    drain(&mut m);
    // The reply to the IN_PROGRESS sent before the reboot arrives first: not the ack.
    m.handle(Event::UpdateAccepted { job_id: job_id.clone(), status: Some("IN_PROGRESS".into()) });
    assert!(!drain(&mut m).contains(&Action::ClearPending), "a stale reply cleared the record");
    m.handle(Event::UpdateAccepted { job_id, status: Some("SUCCEEDED".into()) });
    assert!(drain(&mut m).contains(&Action::ClearPending));
}
