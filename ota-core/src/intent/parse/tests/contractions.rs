//! Contractions and apostrophes, straight (') or curly (’): "that's", "aren't", "don't",
//! "pet_feeder's". A contraction reads as the words it stands for, a possessive as its
//! noun, and a negated request stays refused.

use super::*;

/// Each prompt with an apostrophe reads as the same prompt written out.
#[test]
fn contractions_read_as_the_words_they_stand_for() {
    for (contracted, written_out) in [
        ("every smart_doorbell that's on 1.x", "every smart_doorbell that is on 1.x"),
        ("every smart_doorbell that’s on 1.x", "every smart_doorbell that is on 1.x"),
        ("what's the status of pet_feeder-03", "what is the status of pet_feeder-03"),
        ("what’s the status of pet_feeder-03", "what is the status of pet_feeder-03"),
        ("show pet_feeder's firmware", "show pet_feeder firmware"),
        ("show the pet feeder's firmware", "show the pet feeder firmware"),
        ("show the pet feeder’s firmware", "show the pet feeder firmware"),
        ("what's pet_feeder-03’s firmware", "what is pet_feeder-03 firmware"),
        ("where's the pet_feeder rollout", "where is the pet_feeder rollout"),
        ("how's the rollout going", "how is the rollout going"),
        ("pet feeders that weren't updated", "pet feeders that were not updated"),
        ("list the smart plugs that haven't updated", "list the smart plugs that have not updated"),
        ("which smart plugs aren't on 1.x", "which smart plugs are not on 1.x"),
        ("which smart plugs aren’t on 1.x", "which smart plugs are not on 1.x"),
        ("which pet feeders isn't on 1.x", "which pet feeders is not on 1.x"),
        ("update the smart plug's firmware to 2.0.0", "update the smart plug firmware to 2.0.0"),
        ("everything's status", "everything is status"),
    ] {
        assert_eq!(p(contracted), p(written_out), "{contracted:?}");
        assert!(
            !matches!(p(contracted), Intent::Unknown { ref message, .. } if message.contains('\'')),
            "{contracted}"
        );
    }
}

#[test]
fn contracted_questions_get_their_answers() {
    assert_eq!(
        p("every smart_doorbell that's on 1.x"),
        Intent::FleetStatus {
            device_types: types(&["smart_doorbell"]),
            thing_mentions: vec![],
            current_version: Some(filter("1.x")),
            not_latest: false
        }
    );
    for prompt in
        ["what's the status of pet_feeder-03", "what’s the status of pet_feeder-03", "pet_feeder-03's version"]
    {
        assert_eq!(
            p(prompt),
            Intent::FleetStatus {
                device_types: vec![],
                thing_mentions: strings(&["pet_feeder-03"]),
                current_version: None,
                not_latest: false
            },
            "{prompt}"
        );
    }
    assert_eq!(p("show pet_feeder's firmware"), Intent::ListFirmware { device_types: types(&["pet_feeder"]) });
    assert_eq!(p("show the pet feeder’s firmware"), Intent::ListFirmware { device_types: types(&["pet_feeder"]) });
    assert_eq!(
        p("where's the pet_feeder rollout"),
        Intent::RolloutStatus { rollout: Some(RolloutRef::DeviceType(types(&["pet_feeder"])[0].clone())) }
    );
    let u = update("update the smart plug's firmware to 2.0.0");
    assert_eq!(u.device_types, types(&["smart_plug"]));
    assert_eq!(u.version, Some(req("2.0.0")));
}

/// "that's all" closes a request; it widens nothing to the whole fleet.
#[test]
fn thats_all_ends_a_request() {
    for prompt in ["update to 2.0.0, that's all", "update to 2.0.0, that is all", "upgrade to latest. That’s all."] {
        let (message, _) = unknown(prompt);
        assert!(message.contains("Which devices"), "{prompt}: {message}");
    }
    assert_eq!(p("update pet feeders to 2.0.0, that's all"), p("update pet feeders to 2.0.0"));
    assert_eq!(p("cancel the rollout, that's all"), p("cancel the rollout"));
}

/// "don't", "do not", "won't", "shouldn't": never a plan to change anything.
#[test]
fn negated_requests_stay_negated() {
    for prompt in [
        "don't update the pet feeders",
        "don’t update the pet feeders",
        "don't update the pet feeders to 2.0.0",
        "don’t update the pet feeders to 2.0.0",
        "do not update the pet feeders to 2.0.0",
        "dont update the pet feeders to 2.0.0",
        "we won't update pet feeders to 2.0.0",
        "we won’t update pet feeders to 2.0.0",
        "you shouldn't update pet feeders to latest",
        "please don't roll back pet_feeder-03 to 1.0.0",
        "don't upgrade the whole fleet to the latest",
        "we wouldn't update the smart plugs to 2.0.0",
        "we couldn’t update the smart plugs to 2.0.0",
        "don't disable OTA for smart plugs",
        "didn't update pet feeders to 2.0.0",
    ] {
        let (message, _) = unknown(prompt);
        assert!(message.contains("not on what should not"), "{prompt}: {message}");
    }
}

proptest::proptest! {
    /// A straight or a curly apostrophe reads the same.
    #[test]
    fn curly_and_straight_apostrophes_read_the_same(
        prompt in proptest::sample::select(vec![
            "every smart_doorbell that's on 1.x",
            "don't update the pet feeders to 2.0.0",
            "what's the status of pet_feeder-03",
            "show the pet feeder's firmware",
            "which smart plugs aren't on 1.x",
            "we won't update pet feeders",
            "list the smart plugs that haven't updated",
        ]),
    ) {
        let curly = prompt.replace('\'', "’");
        proptest::prop_assert_eq!(p(&curly), p(prompt));
    }

    /// Any word with an apostrophe gets an answer, and a negated update is never a plan.
    #[test]
    fn no_negated_update_is_ever_planned(
        stem in "[a-z]{1,8}",
        neg in proptest::sample::select(vec!["don't", "don’t", "do not", "won't", "shouldn't", "mustn't"]),
    ) {
        let _ = p(&format!("{stem}'s {stem}'t {stem}’re"));
        let prompt = format!("{neg} update the pet feeders to 2.0.0");
        proptest::prop_assert!(!matches!(p(&prompt), Intent::Update(_)), "{}", prompt);
    }
}
