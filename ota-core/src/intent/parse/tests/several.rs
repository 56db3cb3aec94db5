//! Several changes in one request: each part with its own target and version becomes one
//! change of [`Intent::Updates`], keeping its own action; anything the words do not pin down
//! for a part makes the whole request unknown.

use super::*;

fn changes(text: &str) -> Vec<UpdateIntent> {
    match p(text) {
        Intent::Updates { changes } => changes,
        other => panic!("{text:?} should be several changes, got {other:?}"),
    }
}

/// (rollback, types, things, version) of each change.
fn shape(text: &str) -> Vec<(bool, Vec<DeviceType>, Vec<String>, VersionRequest)> {
    changes(text)
        .into_iter()
        .map(|c| (c.rollback, c.device_types, c.thing_mentions, c.version.expect("a version")))
        .collect()
}

#[test]
fn each_part_with_its_own_target_and_version_is_one_change() {
    let em = || types(&["energy_meter"]);
    let ftm = || types(&["fish_tank_monitor"]);
    for prompt in [
        "Update energy_meter to 2.0.0 and fish_tank_monitor to 1.0.0",
        "update energy_meter to 2.0.0, fish_tank_monitor to 1.0.0",
        "update energy_meter to 2.0.0; fish_tank_monitor to 1.0.0",
        "Update energy meters to 2.0.0 and also fish tank monitors to 1.0.0",
        "update energy_meter to 2.0.0. Then update fish_tank_monitor to 1.0.0.",
    ] {
        assert_eq!(
            shape(prompt),
            vec![(false, em(), vec![], req("2.0.0")), (false, ftm(), vec![], req("1.0.0"))],
            "{prompt}"
        );
    }
    // A part with its own verb keeps its own action.
    assert_eq!(
        shape("update pet_feeder to 3.0.0; also roll back beehive_scale to 1.0.0"),
        vec![
            (false, types(&["pet_feeder"]), vec![], req("3.0.0")),
            (true, types(&["beehive_scale"]), vec![], req("1.0.0"))
        ]
    );
    assert_eq!(
        shape("upgrade energy_meter to the latest and roll back fish_tank_monitor to 1.0.0"),
        vec![(false, em(), vec![], VersionRequest::Latest), (true, ftm(), vec![], req("1.0.0"))]
    );
    // A part without a verb takes the action of the one before it.
    assert_eq!(
        shape("roll back pet_feeder-03 to 1.0.0 and smart_plug-02 to 2.0.0"),
        vec![
            (true, vec![], strings(&["pet_feeder-03"]), req("1.0.0")),
            (true, vec![], strings(&["smart_plug-02"]), req("2.0.0"))
        ]
    );
    // Three parts, the first naming two types for one version.
    assert_eq!(
        shape(
            "update pet_feeder and smart_plug to 3.0.0, energy_meter to 2.0.0 and roll back weather_station to 1.0.0"
        ),
        vec![
            (false, types(&["pet_feeder", "smart_plug"]), vec![], req("3.0.0")),
            (false, em(), vec![], req("2.0.0")),
            (true, types(&["weather_station"]), vec![], req("1.0.0")),
        ]
    );
    // A target without a version of its own joins the next part, as it reads.
    assert_eq!(
        shape("update pet_feeder to 3.0.0, energy_meter and fish_tank_monitor to 2.0.0"),
        vec![
            (false, types(&["pet_feeder"]), vec![], req("3.0.0")),
            (false, types(&["energy_meter", "fish_tank_monitor"]), vec![], req("2.0.0"))
        ]
    );
    // Each part keeps its own filters and exclusions.
    let c = changes("update pet_feeder from 1.0.0 to 3.0.0 and smart_plug except smart_plug-01 to 2.0.0");
    assert_eq!(c[0].current_version, Some(filter("1.0.0")));
    assert_eq!(c[1].exclude_thing_mentions, strings(&["smart_plug-01"]));
    assert_eq!(c[1].current_version, None);
}

#[test]
fn requests_of_one_change_keep_their_reading() {
    // One change for two types, a filter plus a target, one version for two types.
    for prompt in [
        "update pet_feeder and energy_meter to 2.0.0",
        "update pet_feeder from 1.0.0 to 2.0.0",
        "update pet_feeder to 2.0.0 and energy_meter to 2.0.0",
        "update pet feeders to 2.0.0 and roll back the updated ones if it aborts",
    ] {
        assert!(matches!(p(prompt), Intent::Update(_)), "{prompt}: {:?}", p(prompt));
    }
    let u = update("update pet_feeder from 1.0.0 to 2.0.0");
    assert_eq!((u.current_version, u.version), (Some(filter("1.0.0")), Some(req("2.0.0"))));
}

#[test]
fn a_revert_clause_applies_to_the_changes_of_its_sentence() {
    let c = changes("update pet_feeder to 3.0.0 and smart_plug to 2.0.0 and roll back the updated ones if it aborts");
    assert!(c.iter().all(|c| c.revert_on_abort), "{c:?}");
    let c = changes("update pet_feeder to 3.0.0 and roll back if it fails; also update energy_meter to 2.0.0");
    assert_eq!(c.iter().map(|c| c.revert_on_abort).collect::<Vec<_>>(), [true, false], "{c:?}");
    assert_eq!(c[1].device_types, types(&["energy_meter"]));
}

#[test]
fn a_part_the_words_do_not_pin_down_makes_the_whole_request_unknown() {
    // No version for the second part: asked, never taken from the first.
    let (message, _) = unknown("update pet_feeder to 3.0.0 and roll back smart_plug");
    assert!(message.contains("smart_plug") && message.contains("Which version"), "{message}");
    // No target for the second part.
    let (message, _) = unknown("update pet_feeder to 3.0.0 and roll back to 1.0.0");
    assert!(message.contains("Which devices"), "{message}");
    // "them" in a part points at nothing the engine can see.
    let (message, _) = unknown("roll back pet_feeder-03 to 1.0.0 and then update them to 2.0.0");
    assert!(message.contains("earlier messages"), "{message}");
    // An unknown name in any part refuses all of them, with close matches.
    let (message, suggestions) = unknown("update energy_meter to 2.0.0 and pet_feedr_x to 3.0.0");
    assert!(message.contains("pet_feedr_x") && message.contains("any of these"), "{message}");
    assert_eq!(suggestions.first().map(String::as_str), Some("pet_feeder"));
    // A part that is no update or rollback.
    let (message, _) = unknown("update pet_feeder to 3.0.0 and cancel the smart_plug rollout to 2.0.0");
    assert!(message.contains("several changes"), "{message}");
    // A stray number in a part.
    let (message, _) = unknown("update pet_feeder to 3.0.0 and 3 smart plugs to 2.0.0");
    assert!(message.contains("\"3\""), "{message}");
}

#[test]
fn two_parts_naming_the_same_type_or_device_are_refused() {
    for (prompt, name) in [
        ("update pet_feeder to 3.0.0 and roll back pet_feeder to 1.0.0", "pet_feeder"),
        ("update pet_feeder-03 to 3.0.0 and pet_feeder-03 to 2.0.0", "pet_feeder-03"),
        ("update the whole fleet to latest and everything to 2.0.0", "the whole fleet"),
    ] {
        let (message, _) = unknown(prompt);
        assert!(message.contains(name) && message.contains("two of these changes"), "{prompt}: {message}");
    }
}
