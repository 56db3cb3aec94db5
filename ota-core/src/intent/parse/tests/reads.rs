//! Questions: firmware lists, fleet status and rollout status.

use super::*;

fn id(s: &str) -> crate::names::JobId {
    crate::names::JobId::parse(s).unwrap()
}

#[test]
fn firmware_is_listed_for_all_or_some_types() {
    for (prompt, want) in [
        ("list firmware", &[][..]),
        ("what firmware is available", &[]),
        ("list all firmware", &[]),
        ("show me the catalog", &[]),
        ("which versions exist for pet_feeder", &["pet_feeder"]),
        ("show firmware for face detectors", &["vision_ai_face_detector"]),
        ("what is the latest firmware for pet feeders?", &["pet_feeder"]),
        ("what are the available versions for the doorbell", &["smart_doorbell"]),
        ("show the firmware catalog for smart plugs", &["smart_plug"]),
    ] {
        assert_eq!(p(prompt), Intent::ListFirmware { device_types: types(want) }, "{prompt}");
    }
}

#[test]
fn fleet_status_is_narrowed_by_type_thing_and_version() {
    let fleet = |t: &[&str], things: &[&str], v: Option<&str>| Intent::FleetStatus {
        device_types: types(t),
        thing_mentions: strings(things),
        current_version: v.map(filter),
        not_latest: false,
    };
    for (prompt, want) in [
        ("fleet status", fleet(&[], &[], None)),
        ("show devices", fleet(&[], &[], None)),
        ("status", fleet(&[], &[], None)),
        ("list the smart plugs", fleet(&["smart_plug"], &[], None)),
        ("what version is pet_feeder-03 running", fleet(&[], &["pet_feeder-03"], None)),
        ("is pet_feeder-03 on 2.0.0?", fleet(&[], &["pet_feeder-03"], Some("2.0.0"))),
        ("how many devices are on 2.0.0", fleet(&[], &[], Some("2.0.0"))),
        ("how many pet feeders are still on 1.x", fleet(&["pet_feeder"], &[], Some("1.x"))),
        ("which devices run something older than 2.0.0?", fleet(&[], &[], Some("<2.0.0"))),
        ("Which firmware versions are the pet feeders running?", fleet(&["pet_feeder"], &[], None)),
        ("what's the status of the pet feeders?", fleet(&["pet_feeder"], &[], None)),
        ("which devices failed?", fleet(&[], &[], None)),
        // A question that mentions an update verb is still only a question.
        ("which pet_feeder devices should I update?", fleet(&["pet_feeder"], &[], None)),
    ] {
        assert_eq!(p(prompt), want, "{prompt}");
    }
    let Intent::FleetStatus { device_types, .. } = p("show all devices except smart plugs") else { panic!() };
    assert_eq!(device_types.len(), 25);
    let (message, _) = unknown("which devices are not on 1.x");
    assert!(message.contains("not on"), "{message}");
    assert!(matches!(p("which devices are on the latest version?"), Intent::Unknown { .. }));
}

#[test]
fn rollout_status_names_one_rollout_a_type_or_all() {
    for (prompt, want) in [
        ("How is the rollout going?", Some(RolloutRef::Current)),
        ("how is it going", Some(RolloutRef::Current)),
        ("rollout status", Some(RolloutRef::Current)),
        ("rollback status", Some(RolloutRef::Current)),
        ("show rollouts", None),
        ("list all rollouts", None),
        (
            "status of update-pet_feeder-3_0_0-ab12cd34ef",
            Some(RolloutRef::Id(id("update-pet_feeder-3_0_0-ab12cd34ef"))),
        ),
        ("progress of the pet feeder rollout", Some(RolloutRef::DeviceType(types(&["pet_feeder"])[0].clone()))),
        ("how's the pet feeder update going", Some(RolloutRef::DeviceType(types(&["pet_feeder"])[0].clone()))),
        ("show me rollouts for smart plugs", Some(RolloutRef::DeviceType(types(&["smart_plug"])[0].clone()))),
    ] {
        assert_eq!(p(prompt), Intent::RolloutStatus { rollout: want }, "{prompt}");
    }
}

#[test]
fn nothing_recognised_gets_help_and_close_names() {
    let (message, suggestions) = unknown("pet_feeder-03");
    assert!(message.contains("I can update"), "{message}");
    assert!(suggestions.is_empty());
    // "face" alone names no type, but it is a word of one.
    let (message, suggestions) = unknown("face");
    assert_eq!(suggestions, strings(&["vision_ai_face_detector"]));
    assert!(message.contains("Did you mean vision_ai_face_detector"), "{message}");
}

#[test]
fn open_questions_are_told_apart_from_status_requests() {
    for open in [
        "what do you recommend?",
        "what should I do?",
        "any advice?",
        "why is it so slow?",
        "what's up with my feeders, anything I should upgrade?",
        "why did the pet_feeder rollout stop?",
        "can you explain the firmware versions of the smart plugs?",
    ] {
        assert!(is_open_question(open, &p(open), &vocab()), "{open}: {:?}", p(open));
    }
    for concrete in [
        "show fleet status",
        "is everything ok?",
        "how many devices are there?",
        "which devices are still on 1.x?",
        "how is the rollout going?",
        "list firmware",
        "what is pet_feeder-03 running?",
        "Update all pet_feeder devices to 2.0.0",
        "you should update all pet_feeder devices to 2.0.0",
        "frobnicate the gizmo",
    ] {
        assert!(!is_open_question(concrete, &p(concrete), &vocab()), "{concrete}: {:?}", p(concrete));
    }
}
