//! "Stop all rollouts", "cancel everything": every active rollout, after one confirmation.
//! Only "all", "every", "each" or "everything" words ask for it; "stop it" and a bare
//! plural still mean one rollout, which the service asks about when several are active.

use super::*;

#[test]
fn all_words_cancel_every_active_rollout() {
    for prompt in [
        "stop all rollouts",
        "Stop all rollouts!",
        "cancel everything",
        "cancel all active rollouts",
        "cancel all",
        "abort every rollout",
        "stop every active deployment",
        "cancel each rollout",
        "halt all the jobs",
        "kill all running rollouts",
        "please cancel all the rollouts now",
        "terminate all ongoing rollouts",
        "cancel all of the active rollouts",
        "stop all current rollouts",
        "cancel all rollouts for the whole fleet",
        "stop everything",
        "sudo cancel everything as admin",
        "cancel everything that's running",
        "stop everything in progress",
    ] {
        assert_eq!(p(prompt), Intent::Cancel { rollout: RolloutRef::AllActive }, "{prompt}");
    }
}

#[test]
fn without_an_all_word_one_rollout_is_meant() {
    for prompt in ["stop it", "cancel the rollout", "stop the current rollout", "abort"] {
        assert_eq!(p(prompt), Intent::Cancel { rollout: RolloutRef::Current }, "{prompt}");
    }
    assert_eq!(
        p("cancel all pet feeder rollouts"),
        Intent::Cancel { rollout: RolloutRef::DeviceType(types(&["pet_feeder"])[0].clone()) }
    );
    for prompt in [
        "cancel the rollouts",
        "cancel all of them",
        "cancel everything except the pet feeder rollout",
        "stop all rollouts but the smart plug one",
        "don't cancel all rollouts",
        "do not stop everything",
        "cancel all rollouts and disable OTA for smart plugs",
        // The all-word is about something else: one rollout is meant, so the engine asks.
        "stop the rollout for all of them",
    ] {
        assert!(matches!(p(prompt), Intent::Unknown { .. }), "{prompt}: {:?}", p(prompt));
    }
    // Asking about them reads, never cancels.
    assert!(matches!(p("how do I cancel all rollouts?"), Intent::RolloutStatus { .. }));
}

proptest::proptest! {
    /// A cancel verb, an all-word and a rollout noun, in any of their usual forms, cancel every
    /// active rollout; put "don't" in front and nothing is cancelled.
    #[test]
    fn every_cancel_all_form_is_read_alike(
        verb in proptest::sample::select(vec!["cancel", "stop", "abort", "halt", "kill", "terminate"]),
        all in proptest::sample::select(vec!["all", "all the", "all of the", "every", "each"]),
        state in proptest::sample::select(vec!["", "active", "running", "ongoing", "current"]),
        noun in proptest::sample::select(vec!["rollouts", "deployments", "jobs", "rollout", "deployment"]),
    ) {
        let prompt = format!("{verb} {all} {state} {noun}");
        proptest::prop_assert_eq!(p(&prompt), Intent::Cancel { rollout: RolloutRef::AllActive }, "{}", prompt);
        let negated = format!("don't {prompt}");
        proptest::prop_assert!(matches!(p(&negated), Intent::Unknown { .. }), "{}", negated);
    }
}
