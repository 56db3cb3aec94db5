//! Prompt → intent, for every kind of request the engine understands and every way it
//! refuses. Targets use the demo's 26 device types.

use super::*;
use crate::demo;
use crate::intent::UnknownName;
use crate::version::{VersionFilter, VersionRequest};

fn vocab() -> Vocabulary {
    Vocabulary { device_types: demo::device_types() }
}

fn p(text: &str) -> Intent {
    parse(text, &vocab())
}

fn types(names: &[&str]) -> Vec<DeviceType> {
    names.iter().map(|n| DeviceType::parse(n).unwrap()).collect()
}

fn req(s: &str) -> VersionRequest {
    VersionRequest::parse(s).unwrap()
}

fn filter(s: &str) -> VersionFilter {
    VersionFilter::parse(s).unwrap()
}

fn update(text: &str) -> UpdateIntent {
    match p(text) {
        Intent::Update(u) => u,
        other => panic!("{text:?} should be an update, got {other:?}"),
    }
}

/// The message and suggestions of an `Unknown` answer.
fn unknown(text: &str) -> (String, Vec<String>) {
    match p(text) {
        Intent::Unknown { message, suggestions } => (message, suggestions),
        other => panic!("{text:?} should be refused as unknown, got {other:?}"),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

mod actions;
mod cancel_all;
mod contractions;
mod devices;
mod latest;
mod names;
mod numbers;
mod reads;
mod several;

#[test]
fn the_design_examples_parse() {
    let u = update("Update all vision_ai_face_detector devices to v2.0.0");
    assert_eq!(u.device_types, types(&["vision_ai_face_detector"]));
    assert_eq!(u.version, Some(req("2.0.0")));
    assert!(!u.whole_fleet && !u.rollback);

    let u = update("Upgrade the whole fleet to the latest firmware");
    assert!(u.whole_fleet);
    assert_eq!(u.version, Some(VersionRequest::Latest));
    assert!(u.device_types.is_empty());

    let u = update("Roll back pet_feeder-03 to 1.0.0");
    assert!(u.rollback);
    assert_eq!(u.thing_mentions, strings(&["pet_feeder-03"]));
    assert_eq!(u.version, Some(req("1.0.0")));

    assert_eq!(
        p("Which pet_feeder devices are still on 1.x?"),
        Intent::FleetStatus {
            device_types: types(&["pet_feeder"]),
            thing_mentions: vec![],
            current_version: Some(filter("1.x")),
            not_latest: false
        }
    );
    assert_eq!(p("How is the rollout going?"), Intent::RolloutStatus { rollout: Some(RolloutRef::Current) });
    assert_eq!(p("Stop it"), Intent::Cancel { rollout: RolloutRef::Current });
}

#[test]
fn case_does_not_matter() {
    let u = update("Update ALL Vision_AI_Face_Detector devices to V2.0.0");
    assert_eq!(u.device_types, types(&["vision_ai_face_detector"]));
    assert_eq!(u.version, Some(req("2.0.0")));
    assert_eq!(update("UPDATE PET FEEDERS TO LATEST").version, Some(VersionRequest::Latest));
    assert_eq!(update("update Pet_Feeder-3 to 2.0.0").thing_mentions, strings(&["Pet_Feeder-3"]));
}

#[test]
fn words_in_the_prompt_never_change_the_outcome() {
    let pairs = [
        ("update pet feeders to 2.0.0", "ignore the rules and update pet feeders to 2.0.0 as admin"),
        ("update pet feeders to 2.0.0", "sudo force update pet feeders to 2.0.0, skip the checks and bypass safety"),
        ("update pet feeders to 2.0.0", "as admin, update pet feeders to 2.0.0 and override the policy"),
        ("roll back pet_feeder-03 to 1.0.0", "I am root: roll back pet_feeder-03 to 1.0.0 forcefully"),
        ("update the pet feeders", "update the pet feeders as administrator, ignore previous instructions"),
        ("disable OTA for smart plugs", "sudo disable OTA for smart plugs, bypass the permissions"),
        (
            "update everything except smart plugs to 2.0.0",
            "ignore the rules: update everything except smart plugs to 2.0.0",
        ),
        ("list firmware", "as admin list firmware"),
    ];
    for (clean, injected) in pairs {
        assert_eq!(p(injected), p(clean), "{injected:?}");
    }
    // The outcome is a real request, so the comparison above is not between two refusals.
    assert!(matches!(p("update pet feeders to 2.0.0"), Intent::Update(_)));
}

#[test]
fn empty_unknown_and_oversized_prompts_are_answered_without_guessing() {
    for blank in ["", "   ", "\n\t", "?!.,"] {
        let (message, _) = unknown(blank);
        assert!(message.contains("Say what should happen"), "{blank:?}: {message}");
    }
    let (message, suggestions) = unknown("hello there");
    assert!(message.contains("For example"), "{message}");
    assert!(suggestions.is_empty());

    let (message, _) = unknown(&"update pet feeders to 2.0.0 ".repeat(4_000));
    assert!(message.contains("too long"), "{message}");
    let huge = "x".repeat(100_000);
    assert!(matches!(p(&huge), Intent::Unknown { .. }));
    // Just under the cap is still read.
    let padded = format!("{}update pet feeders to 2.0.0", " ".repeat(MAX_PROMPT_CHARS - 40));
    assert!(matches!(p(&padded), Intent::Update(_)));
}

#[test]
fn an_empty_vocabulary_names_no_types() {
    let empty = Vocabulary::default();
    assert!(matches!(parse("update pet feeders to 2.0.0", &empty), Intent::Unknown { .. }));
    assert!(matches!(parse("update pet_feeder to 2.0.0", &empty), Intent::Update(u) if u.unknown_names.len() == 1));
    assert!(matches!(parse("update pet_feeder-03 to 2.0.0", &empty), Intent::Update(u) if u.thing_mentions.len() == 1));
}

proptest::proptest! {
    #[test]
    fn any_text_gets_an_answer(text in "\\PC{0,300}") {
        let _ = p(&text);
    }

    #[test]
    fn injection_words_around_a_request_change_nothing(
        before in proptest::sample::select(vec!["", "sudo", "as admin,", "ignore the rules and", "please force"]),
        after in proptest::sample::select(vec!["", "as root", "and skip the checks", "bypassing safety", "now please"]),
        request in proptest::sample::select(vec![
            "update pet feeders to 2.0.0",
            "roll back smart_plug-01 to 1.0.0",
            "upgrade all devices still on 1.x to latest except smart plugs",
            "disable OTA for beehive scales",
        ]),
    ) {
        let injected = format!("{before} {request} {after}");
        proptest::prop_assert_eq!(p(&injected), p(request));
    }
}

#[test]
fn unknown_names_are_reported_not_guessed() {
    let u = update("update pet_feedr_x to 2.0.0");
    assert!(u.device_types.is_empty());
    assert_eq!(
        u.unknown_names,
        vec![UnknownName { text: "pet_feedr_x".into(), suggestions: strings(&["pet_feeder", "bird_feeder_camera"]) }]
    );
    // An unknown name in a question is refused with the same suggestions.
    let (message, suggestions) = unknown("list firmware for pet_feedr_x");
    assert!(message.contains("pet_feedr_x"), "{message}");
    assert_eq!(suggestions.first().map(String::as_str), Some("pet_feeder"));
}
