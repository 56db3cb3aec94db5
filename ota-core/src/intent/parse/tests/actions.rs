//! Requests that change the fleet: update, roll back, cancel, enable or disable OTA.

use super::*;

#[test]
fn every_update_verb_asks_for_an_update() {
    for prompt in [
        "update pet feeders to 2.0.0",
        "upgrade pet feeders to 2.0.0",
        "flash pet feeders to 2.0.0",
        "deploy 2.0.0 to the pet feeders",
        "install 2.0.0 on the pet feeders",
        "push 2.0.0 to pet feeders",
        "roll out 2.0.0 to the pet feeders",
        "rollout 2.0.0 to pet feeders",
        "move the pet feeders to 2.0.0",
        "put 2.0.0 on the pet feeders",
        "please go ahead and update the pet feeders to 2.0.0",
        "could you upgrade the pet feeders to 2.0.0?",
        "upgarde pet feeders to 2.0.0",
        "updte pet feeders to 2.0.0",
        "udpate pet feeders to 2.0.0",
    ] {
        let u = update(prompt);
        assert_eq!(u.device_types, types(&["pet_feeder"]), "{prompt}");
        assert_eq!(u.version, Some(req("2.0.0")), "{prompt}");
        assert!(!u.rollback, "{prompt}");
    }
}

#[test]
fn versions_are_read_in_every_usual_form() {
    for (prompt, want) in [
        ("update pet feeders to v2.0.0", req("2.0.0")),
        ("update pet feeders to V2", req("2")),
        ("update pet feeders to 2.1", req("2.1")),
        ("update pet feeders to 2", req("2")),
        ("update pet feeders to version 2", req("2")),
        ("update pet feeders to 2.x", req("2")),
        ("update pet feeders to 2.0.0-rc.1", req("2.0.0-rc.1")),
        ("flash v2.0.0 onto pet_feeder-01", req("2.0.0")),
        ("update pet feeders with 2.0.0", req("2.0.0")),
        ("update pet feeders to latest", VersionRequest::Latest),
        ("update pet feeders to the latest firmware", VersionRequest::Latest),
        ("upgrade pet feeders to the newest version", VersionRequest::Latest),
        ("update pet feeders to the most recent release", VersionRequest::Latest),
    ] {
        assert_eq!(update(prompt).version, Some(want), "{prompt}");
    }
}

#[test]
fn a_missing_version_is_asked_for_never_assumed() {
    for prompt in ["update the pet feeders", "upgrade pet_feeder-03", "revert pet feeders", "downgrade pet_feeder-03"] {
        let (message, _) = unknown(prompt);
        assert!(message.contains("Which version"), "{prompt}: {message}");
    }
    // A number that no word marks as a version is not taken for one.
    let (message, _) = unknown("update 3 pet feeders to 2.0.0");
    assert!(message.contains("\"3\""), "{message}");
    // After a singular type name it is the device's number (see `numbers.rs`), never a version:
    // alone, it is asked about.
    assert_eq!(update("update pet feeder 3 to 2.0.0").thing_mentions, strings(&["pet_feeder-3"]));
    let (message, _) = unknown("update pet feeder 3");
    assert!(message.contains("pet_feeder-3") && message.contains("version 3"), "{message}");
}

#[test]
fn conflicting_versions_are_refused() {
    // Two versions after "to" with one target between them cannot be two changes.
    let (message, _) = unknown("update pet feeders to 2.0.0 to 3.0.0");
    assert!(message.contains("several versions"), "{message}");
    // Several changes, each with its own target and version, are one request of several
    // changes (see `several.rs`), no longer refused.
    assert!(matches!(p("Update energy_meter to 2.0.0 and fish_tank_monitor to 1.0.0"), Intent::Updates { .. }));
    assert!(matches!(p("update pet feeders to 2.0.0 and smart plugs to 1.1.0"), Intent::Updates { .. }));
    let (message, _) = unknown("update pet feeders from 1.0.0 to 2.0.0 with 1.1.0");
    assert!(!message.contains("one by one"), "{message}");
    let (message, _) = unknown("update pet feeders to latest version 2.0.0");
    assert!(message.contains("latest"), "{message}");
    // "latest 2.x" is one request: the newest 2.x.
    assert_eq!(update("update pet feeders to the latest 2.x").version, Some(req("2")));
}

#[test]
fn rollbacks_are_marked_and_need_a_version() {
    for prompt in [
        "roll back pet_feeder-03 to 1.0.0",
        "rollback pet_feeder-03 to 1.0.0",
        "revert pet_feeder-03 to 1.0.0",
        "downgrade pet_feeder-03 to 1.0.0",
        "go back to 1.0.0 on pet_feeder-03",
        "bring pet_feeder-03 back to 1.0.0",
        "roll pet_feeder-03 back to 1.0.0",
        "roll-back pet_feeder-03 to 1.0.0",
    ] {
        let u = update(prompt);
        assert!(u.rollback, "{prompt}");
        assert_eq!(u.thing_mentions, strings(&["pet_feeder-03"]), "{prompt}");
        assert_eq!(u.version, Some(req("1.0.0")), "{prompt}");
    }
    let u = update("roll back all pet feeders on 2.0.0 to 1.0.0");
    assert_eq!((u.rollback, u.current_version, u.version), (true, Some(filter("2.0.0")), Some(req("1.0.0"))));
}

#[test]
fn the_whole_fleet_is_named_explicitly() {
    for prompt in [
        "update the whole fleet to 2.0.0",
        "update the entire fleet to 2.0.0",
        "update all devices to 2.0.0",
        "update every device to 2.0.0",
        "update everything to 2.0.0",
        "update the fleet to 2.0.0",
        "update all types to 2.0.0",
        "update all my devices to 2.0.0",
        "update all the things to 2.0.0",
        "update devices older than 2.0.0 to 2.0.0",
    ] {
        let u = update(prompt);
        assert!(u.whole_fleet, "{prompt}");
        assert!(u.device_types.is_empty() && u.thing_mentions.is_empty(), "{prompt}");
    }
    // "all" with a type is that type, not the fleet.
    let u = update("update all pet_feeder devices to 2.0.0");
    assert!(!u.whole_fleet);
    assert_eq!(u.device_types, types(&["pet_feeder"]));
}

#[test]
fn unnamed_targets_are_asked_for() {
    for prompt in ["update to 2.0.0", "update the devices to 2.0.0", "upgrade to latest"] {
        let (message, _) = unknown(prompt);
        assert!(message.contains("Which devices"), "{prompt}: {message}");
    }
    // "them" points at an earlier message the engine cannot see: never the whole fleet.
    for prompt in ["update all of them to 2.0.0", "update them to 2.0.0", "update all those devices to latest"] {
        let (message, _) = unknown(prompt);
        assert!(message.contains("earlier messages"), "{prompt}: {message}");
    }
}

#[test]
fn several_targets_at_once() {
    let u = update("update pet feeders and smart plugs to latest");
    assert_eq!(u.device_types, types(&["pet_feeder", "smart_plug"]));
    let u = update("update pet_feeder-01, pet_feeder-02 and smart_plug-03 to 2.0.0");
    assert_eq!(u.thing_mentions, strings(&["pet_feeder-01", "pet_feeder-02", "smart_plug-03"]));
    let u = update("Upgrade the air quality monitors, the co2 monitors and kitchen-sensor-1 to latest");
    assert_eq!(u.device_types, types(&["air_quality_monitor", "co2_monitor"]));
    assert_eq!(u.thing_mentions, strings(&["kitchen-sensor-1"]));
}

#[test]
fn exclusions_leave_types_and_things_out() {
    for marker in ["except", "but not", "excluding", "other than", "apart from", "besides", "without", "leaving out"] {
        let prompt = format!("update the whole fleet {marker} smart plugs and pet_feeder-02 to 2.0.0");
        let u = update(&prompt);
        assert!(u.whole_fleet, "{prompt}");
        assert_eq!(u.exclude_types, types(&["smart_plug"]), "{prompt}");
        assert_eq!(u.exclude_thing_mentions, strings(&["pet_feeder-02"]), "{prompt}");
        assert_eq!(u.version, Some(req("2.0.0")), "{prompt}");
    }
    let u = update("update everything but the pet feeders to 2.0.0");
    assert_eq!((u.whole_fleet, u.exclude_types), (true, types(&["pet_feeder"])));
    // After "everything", "but" leaves out, wherever the version sits.
    let u = update("update everything to 2.0.0 but pet feeders");
    assert_eq!((u.whole_fleet, u.exclude_types), (true, types(&["pet_feeder"])));
    let u = update("update all devices to 2.0.0, ignore pet feeders");
    assert_eq!((u.whole_fleet, u.exclude_types), (true, types(&["pet_feeder"])));
    let u = update("update the pet feeders and smart plugs to 3.0.0 except pet_feeder-02");
    assert_eq!(u.device_types, types(&["pet_feeder", "smart_plug"]));
    assert_eq!(u.exclude_thing_mentions, strings(&["pet_feeder-02"]));
    // An exclusion that names nothing known must not be dropped silently.
    let (message, _) = unknown("update everything except pet_fedr_cam to 2.0.0");
    assert!(message.contains("leave it out"), "{message}");
}

#[test]
fn current_version_conditions_narrow_the_targets() {
    for (prompt, want) in [
        ("update pet feeders to 2.0.0, only those on 1.0.0", filter("1.0.0")),
        ("update pet feeders still on 1.x to latest", filter("1.x")),
        ("update pet feeders that are currently on 1.x to latest", filter("1.x")),
        ("update pet feeders running 1.0 to latest", filter("1.0")),
        ("update pet feeders which run 1.0.0 to latest", filter("1.0.0")),
        ("upgrade pet feeders from 1.0.0 to 2.0.0", filter("1.0.0")),
        ("upgrade pet feeders still on version 1 to version 2", filter("1")),
        ("update pet feeders older than 2.0.0 to latest", filter("<2.0.0")),
        ("update pet feeders below 2.0.0 to latest", filter("<2.0.0")),
        ("update pet feeders lower than 2.1 to latest", filter("<2.1.0")),
        ("update pet feeders before 2 to latest", filter("<2.0.0")),
        ("update pet feeders <2.0.0 to latest", filter("<2.0.0")),
    ] {
        assert_eq!(update(prompt).current_version, Some(want), "{prompt}");
    }
    let u = update("upgrade all devices still on 1.x to the latest version except smart_plug");
    assert!(u.whole_fleet);
    assert_eq!(u.current_version, Some(filter("1.x")));
    assert_eq!(u.version, Some(VersionRequest::Latest));
    assert_eq!(u.exclude_types, types(&["smart_plug"]));
}

#[test]
fn conditions_a_request_cannot_express_are_refused() {
    for prompt in [
        "update devices not on 2.0.0 to 2.0.0",
        "update pet feeders that aren't on 1.x to 2.0.0",
        "update pet feeders newer than 1.0.0 to 2.0.0",
        "update all devices to 2.0.0 except those on 1.0.0",
        "update the pet feeders to 2.0.0 except pet feeders running 1.0.0",
        "update pet feeders still on latest to 2.0.0",
    ] {
        assert!(matches!(p(prompt), Intent::Unknown { .. }), "{prompt}");
    }
}

#[test]
fn negated_requests_change_nothing() {
    for prompt in [
        "don't update the pet feeders to 2.0.0",
        "do not roll back pet_feeder-03 to 1.0.0",
        "never disable OTA for smart plugs",
    ] {
        let (message, _) = unknown(prompt);
        assert!(message.contains("not on what should not"), "{prompt}: {message}");
    }
}

#[test]
fn unknown_words_stop_a_change_but_not_a_question() {
    let (message, _) = unknown("update the kitchen pet feeders to 2.0.0");
    assert!(message.contains("\"kitchen\""), "{message}");
    let (message, suggestions) = unknown("upgrade pet feeders to 2.0.0 in the garage");
    assert!(message.contains("garage"), "{message}");
    assert_eq!(suggestions, strings(&["garage_door_controller"]));
    assert!(matches!(unknown("update pet feeders to 2.0.0 unless they are offline"), (m, _) if m.contains("unless")));
    // The same unknown word in a question is harmless.
    assert!(matches!(p("which kitchen pet feeders are on 1.x?"), Intent::FleetStatus { .. }));
}

#[test]
fn cancel_names_one_rollout() {
    let id = crate::names::JobId::parse("update-pet_feeder-3_0_0-ab12cd34ef").unwrap();
    for (prompt, want) in [
        ("Stop it", RolloutRef::Current),
        ("stop the rollout", RolloutRef::Current),
        ("abort", RolloutRef::Current),
        ("cancel the rollback", RolloutRef::Current),
        ("cancel the pet_feeder rollout", RolloutRef::DeviceType(types(&["pet_feeder"])[0].clone())),
        ("halt the pet feeder update", RolloutRef::DeviceType(types(&["pet_feeder"])[0].clone())),
        ("stop updating the smart plugs", RolloutRef::DeviceType(types(&["smart_plug"])[0].clone())),
        ("cancel update-pet_feeder-3_0_0-ab12cd34ef", RolloutRef::Id(id.clone())),
    ] {
        assert_eq!(p(prompt), Intent::Cancel { rollout: want }, "{prompt}");
    }
    let (_, suggestions) = unknown("cancel the smart plug and pet feeder rollouts");
    assert_eq!(suggestions, strings(&["smart_plug", "pet_feeder"]));
    // "all" asks for every active rollout (see `cancel_all.rs`); a bare plural still asks which.
    assert_eq!(p("cancel all rollouts"), Intent::Cancel { rollout: RolloutRef::AllActive });
    assert!(matches!(p("cancel the rollouts"), Intent::Unknown { .. }));
    assert!(matches!(p("cancel pet_feeder-03"), Intent::Unknown { .. }));
    let (message, _) = unknown("pause the rollout");
    assert!(message.contains("not supported"), "{message}");
}

#[test]
fn ota_is_enabled_and_disabled_per_type() {
    for (prompt, enabled, want) in [
        ("enable OTA for beehive_scale", true, &["beehive_scale"][..]),
        ("disable updates for the smart plugs", false, &["smart_plug"]),
        ("turn on OTA for pet feeders", true, &["pet_feeder"]),
        ("turn off ota for smart_plug", false, &["smart_plug"]),
        ("switch OTA off for the doorbells", false, &["smart_doorbell"]),
        ("set OTA off for pet feeders", false, &["pet_feeder"]),
        ("allow updates for pet feeders", true, &["pet_feeder"]),
        ("block updates for garage door controllers", false, &["garage_door_controller"]),
        ("disable OTA for the beehive scales", false, &["beehive_scale"]),
        ("disable update for smart plugs and pet feeders", false, &["smart_plug", "pet_feeder"]),
    ] {
        assert_eq!(p(prompt), Intent::SetOta { enabled, device_types: types(want) }, "{prompt}");
    }
    let Intent::SetOta { enabled: false, device_types } = p("disable OTA for all devices except pet feeders") else {
        panic!("a fleet-wide switch names every type");
    };
    assert_eq!(device_types.len(), 25);
    assert!(!device_types.contains(&types(&["pet_feeder"])[0]));
    for prompt in
        ["enable OTA", "enable pet feeders", "enable ota for pet_feeder-03", "disable OTA for pet feeders on 1.x"]
    {
        assert!(matches!(p(prompt), Intent::Unknown { .. }), "{prompt}");
    }
}

#[test]
fn updates_and_rollbacks_combine_but_other_changes_go_one_at_a_time() {
    for prompt in [
        "update pet feeders to 2.0.0 and disable OTA for smart plugs",
        "cancel the rollout and enable OTA for pet feeders",
    ] {
        let (message, _) = unknown(prompt);
        assert!(message.contains("several changes") && message.contains("on its own"), "{prompt}: {message}");
    }
    // Several updates and rollbacks, each with its own target and version, are one request.
    assert!(matches!(p("roll back pet_feeder-03 to 1.0.0 and update smart plugs to 2.0.0"), Intent::Updates { .. }));
}

#[test]
fn questions_never_change_anything() {
    assert!(matches!(p("which pet feeders should I update to 2.0.0?"), Intent::FleetStatus { .. }));
    assert!(matches!(p("how do I cancel the rollout?"), Intent::RolloutStatus { .. }));
}

#[test]
fn a_revert_on_abort_clause_is_an_option_of_the_change_not_a_second_action() {
    for prompt in [
        "Update all pet_feeder devices to 3.0.0 and roll back the updated ones if it aborts",
        "update the pet feeders to latest, and revert them if it aborts",
        "upgrade pet feeders to 3.0.0 with automatic rollback if it fails",
        "update pet feeders to 3.0.0; roll them back if the rollout aborts",
    ] {
        let u = update(prompt);
        assert!(u.revert_on_abort, "{prompt}");
        assert!(!u.rollback, "{prompt}");
        assert_eq!(u.device_types, types(&["pet_feeder"]), "{prompt}");
    }
    let u = update("roll back pet_feeder-03 to 1.0.0 and undo it if it fails");
    assert!(u.rollback && u.revert_on_abort);
    assert!(!update("update pet feeders to 3.0.0").revert_on_abort);
    // Words that only mention both are read as written.
    assert!(!matches!(
        parse("which rollouts failed and were rolled back?", &vocab()),
        Intent::Update(UpdateIntent { revert_on_abort: true, .. })
    ));
}

#[test]
fn only_online_devices_narrows_an_update() {
    for prompt in [
        "update only online pet feeders to 3.0.0",
        "update the pet feeders that are online to 3.0.0",
        "upgrade the connected pet feeders to latest",
    ] {
        assert!(update(prompt).only_connected, "{prompt}");
    }
    assert!(!update("update pet feeders to 3.0.0").only_connected);
}
