//! Power loss at every step of an update. Each test runs the update once to learn its
//! actions, then once more per action with the power cut just before that action executes
//! (in-flight flash writes and everything in RAM are lost; flash, storage and the cloud
//! remain), powers the device back on and lets it settle. Whatever the step, the device must
//! boot a valid image, end the job with a final status that matches the image it runs, leave
//! no pending record behind and report the version it runs in its shadow.

use std::collections::BTreeSet;

use super::sim::*;
use super::*;

const JOB: &str = "job-1";
const IMAGE_LEN: usize = 6 * CHUNK + 100;

/// The steps a power cut can hit, each named by the phase the machine is in and the action
/// that was about to run. The enumeration below must hit every one of them.
const HAPPY_STEPS: &[(&str, Phase, ActionKind)] = &[
    ("connecting: before subscribing", Phase::Idle, ActionKind::Subscribe),
    ("before reporting IN_PROGRESS", Phase::Idle, ActionKind::Publish),
    ("before erasing the inactive slot", Phase::Downloading, ActionKind::BeginUpdate),
    ("before the HTTP request", Phase::Downloading, ActionKind::Download),
    ("mid-download, before a chunk is written", Phase::Downloading, ActionKind::WriteChunk),
    ("mid-download, before a progress report", Phase::Downloading, ActionKind::Publish),
    ("verified, before closing the slot", Phase::Installing, ActionKind::FinishUpdate),
    ("slot closed, before persisting the pending job", Phase::Installing, ActionKind::PersistPending),
    ("persisted, before reporting the reboot", Phase::Installing, ActionKind::Publish),
    ("persisted, before switching the boot slot", Phase::Installing, ActionKind::SetBootSlot),
    ("switched, before rebooting", Phase::Installing, ActionKind::Reboot),
    ("new image up, before confirming it", Phase::Idle, ActionKind::MarkSlotValid),
    ("confirmed, before reporting SUCCEEDED", Phase::Idle, ActionKind::Publish),
    ("reported, before clearing the pending job", Phase::Idle, ActionKind::ClearPending),
];

const ROLLBACK_STEPS: &[(&str, Phase, ActionKind)] = &[
    ("self-test failed, before marking the image invalid", Phase::RollingBack, ActionKind::MarkSlotInvalidAndReboot),
    ("rolled back, before reporting boot_failed", Phase::Idle, ActionKind::Publish),
    ("boot_failed reported, before clearing the pending job", Phase::Idle, ActionKind::ClearPending),
];

fn world(broken: bool) -> World {
    let mut w = World::new("1.0.0");
    w.offer(JOB, "2.0.0", IMAGE_LEN);
    w.ms_per_chunk = 1_000;
    if broken {
        w.broken.insert(v("2.0.0"));
    }
    w
}

/// The phase the machine is in before each action of an uninterrupted run.
fn trace(broken: bool) -> Vec<(Phase, ActionKind)> {
    let mut w = world(broken);
    assert!(!w.run_to_quiet(None));
    w.phases.iter().copied().zip(w.log.iter().map(Action::kind)).collect()
}

/// Checks the device after it settled following a cut before action `cut`.
fn check_settled(w: &World, cut: usize, step: (Phase, ActionKind), broken: bool) {
    let at = format!("power cut before action {cut} ({step:?})");
    let running = w.running_version();
    assert_eq!(w.slots[w.running].state, Sim::Valid, "{at}: the running image is confirmed");
    assert_eq!(w.boot, w.running, "{at}: the next boot starts the same image");
    assert_eq!(w.pending(), None, "{at}: no pending record is left");
    let (status, details) = w.final_status(JOB).unwrap_or_else(|| panic!("{at}: the job never ended"));
    if running == v("2.0.0") {
        assert!(!broken, "{at}: a broken image must never stay");
        assert_eq!((status.as_str(), &details["firmwareVersion"]), ("SUCCEEDED", &serde_json::json!("2.0.0")), "{at}");
    } else {
        assert_eq!(running, v("1.0.0"), "{at}");
        assert_eq!((status.as_str(), &details["reason"]), ("FAILED", &serde_json::json!("boot_failed")), "{at}");
    }
    assert_eq!(w.shadow.as_ref().unwrap()["firmwareVersion"], running.to_string(), "{at}: the shadow tells the truth");
    let finals: BTreeSet<&str> = w
        .statuses
        .iter()
        .filter(|(_, s, _, accepted)| *accepted && s != "IN_PROGRESS")
        .map(|(_, s, _, _)| s.as_str())
        .collect();
    assert_eq!(finals.len(), 1, "{at}: exactly one final status: {finals:?}");
}

fn cut_everywhere(broken: bool, must_cover: &[(&str, Phase, ActionKind)]) {
    let steps = trace(broken);
    assert!(steps.len() > 20, "the trace covers a whole update: {steps:?}");
    let mut covered = BTreeSet::new();
    for (cut, step) in steps.iter().enumerate() {
        let mut w = world(broken);
        let lost = w.run_to_quiet(Some(cut));
        assert!(lost, "the power cut before action {cut} happened");
        check_settled(&w, cut, *step, broken);
        covered.insert(*step);
    }
    for (name, phase, kind) in must_cover {
        assert!(covered.contains(&(*phase, *kind)), "step not enumerated: {name} ({phase:?}, {kind:?})");
    }
}

#[test]
fn power_loss_at_every_step_of_a_good_update_ends_cleanly() {
    cut_everywhere(false, HAPPY_STEPS);
}

#[test]
fn power_loss_at_every_step_of_a_failing_update_ends_cleanly() {
    let steps: Vec<_> = HAPPY_STEPS
        .iter()
        .filter(|(_, _, k)| *k != ActionKind::MarkSlotValid)
        .chain(ROLLBACK_STEPS)
        .copied()
        .filter(|(name, _, _)| !name.contains("SUCCEEDED"))
        .collect();
    cut_everywhere(true, &steps);
}

#[test]
fn power_loss_during_the_self_test_rolls_back() {
    // Cut before the new image confirms itself: the bootloader finds it still unverified on
    // the next boot and starts the old one, which reports boot_failed.
    let steps = trace(false);
    let cut = steps.iter().position(|s| *s == (Phase::Idle, ActionKind::MarkSlotValid)).unwrap();
    let mut w = world(false);
    w.run_to_quiet(Some(cut));
    assert_eq!(w.running_version(), v("1.0.0"));
    assert_eq!(w.final_status(JOB).unwrap().1["reason"], "boot_failed");
}

#[test]
fn power_loss_before_the_boot_slot_switch_restarts_the_job() {
    let steps = trace(false);
    let cut = steps.iter().position(|s| s.1 == ActionKind::SetBootSlot).unwrap();
    let mut w = world(false);
    w.run_to_quiet(Some(cut));
    assert_eq!(w.executed(ActionKind::BeginUpdate), 2, "the download starts over");
    assert_eq!(w.final_status(JOB).unwrap().0, "SUCCEEDED");
    assert_eq!(w.running_version(), v("2.0.0"));
}
