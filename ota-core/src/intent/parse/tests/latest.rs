//! "Not on the latest firmware" as a condition: in questions it selects the devices not
//! running their type's latest (resolved per type by the service); in an update it is the
//! latest for whatever the words name, which already leaves out the devices on it.

use super::*;

fn behind(device_types: &[&str]) -> Intent {
    Intent::FleetStatus {
        device_types: types(device_types),
        thing_mentions: vec![],
        current_version: None,
        not_latest: true,
    }
}

#[test]
fn questions_about_devices_not_on_the_latest() {
    for (prompt, want) in [
        ("Show me every device that isn't on the latest firmware", behind(&[])),
        ("Show me every device that isn’t on the latest firmware", behind(&[])),
        ("show me every device that is not on the latest firmware", behind(&[])),
        ("which devices aren't on the latest", behind(&[])),
        ("devices that aren't on the latest", behind(&[])),
        ("list devices not running the latest firmware", behind(&[])),
        ("which devices are not on the newest version?", behind(&[])),
        ("what isn't running the latest release?", behind(&[])),
        ("which pet feeders are not on the latest version", behind(&["pet_feeder"])),
        ("how many smart plugs are not on the latest?", behind(&["smart_plug"])),
        ("smart plugs that aren't on the latest firmware", behind(&["smart_plug"])),
        ("show pet feeders and smart plugs not on the newest firmware", behind(&["pet_feeder", "smart_plug"])),
        ("which weather stations don't run the latest firmware", behind(&["weather_station"])),
        ("Which doorbells haven't been updated to the latest?", behind(&["smart_doorbell"])),
        ("which pet feeders weren't moved to the latest yet", behind(&["pet_feeder"])),
    ] {
        assert_eq!(p(prompt), want, "{prompt}");
    }
}

/// "outdated", "out of date", "not up to date" ask the same question.
#[test]
fn outdated_words_ask_about_devices_not_on_the_latest() {
    for (prompt, want) in [
        ("which devices are outdated?", behind(&[])),
        ("which devices are out of date", behind(&[])),
        ("which devices aren't up-to-date", behind(&[])),
        ("show me the devices that are not uptodate", behind(&[])),
        ("show outdated pet feeders", behind(&["pet_feeder"])),
        ("which smart plugs are not up to date", behind(&["smart_plug"])),
        ("what is the status of the outdated smart plugs", behind(&["smart_plug"])),
    ] {
        assert_eq!(p(prompt), want, "{prompt}");
    }
    // Up to date without a negation is not this question; with a version it is two.
    assert!(matches!(p("which devices are up to date"), Intent::FleetStatus { not_latest: false, .. }));
    assert!(matches!(p("which pet feeders are outdated and on 1.x"), Intent::Unknown { .. }));
    // An update of outdated devices still names its version: "outdated" does not pick one.
    let (message, _) = unknown("update all outdated devices");
    assert!(message.contains("Which version"), "{message}");
}

#[test]
fn updates_of_devices_not_on_the_latest_go_to_the_latest() {
    for (prompt, whole_fleet, names) in [
        ("update every device not on the latest", true, vec![]),
        ("update every device not on the latest firmware to latest", true, vec![]),
        ("update devices not on the latest", true, vec![]),
        ("upgrade all devices that aren't on the latest version", true, vec![]),
        ("update everything that's not on the newest release", true, vec![]),
        ("update all pet feeders that aren't on the latest", false, vec!["pet_feeder"]),
        ("upgrade the smart plugs not running the latest firmware", false, vec!["smart_plug"]),
    ] {
        let u = update(prompt);
        assert_eq!(u.version, Some(VersionRequest::Latest), "{prompt}");
        assert_eq!(u.whole_fleet, whole_fleet, "{prompt}");
        assert_eq!(u.device_types, types(&names), "{prompt}");
        assert_eq!(u.current_version, None, "{prompt}");
        assert!(!u.rollback, "{prompt}");
    }
}

#[test]
fn not_on_the_latest_with_another_version_is_refused() {
    for prompt in [
        "update every device not on the latest to 2.0.0",
        "update every device not on the latest on 1.x",
        "which devices are not on the latest 1.x",
        "roll back devices not on the latest to 1.0.0",
    ] {
        assert!(matches!(p(prompt), Intent::Unknown { .. }), "{prompt}: {:?}", p(prompt));
    }
    // "haven't been updated to 2.0.0" means the devices *not* on it: refused, never read as "on 2.0.0".
    for prompt in ["Which doorbells haven't been updated to 2.0.0?", "which doorbells have not been updated to 2.0.0"] {
        let (message, _) = unknown(prompt);
        assert!(message.contains("not on"), "{prompt}: {message}");
    }
    // "on the latest" (not negated) still selects nothing the engine can express.
    assert!(matches!(p("which pet feeders are on the latest"), Intent::Unknown { .. }));
    // "don't update the devices not on the latest" is a negated request.
    let (message, _) = unknown("don't update the devices not on the latest");
    assert!(message.contains("not on what should not"), "{message}");
}

proptest::proptest! {
    /// However "not on the latest" is worded, a question selects by it and an update goes to the latest.
    #[test]
    fn not_on_the_latest_is_read_in_every_wording(
        neg in proptest::sample::select(vec!["that aren't", "that are not", "not", "which aren’t", "that don't run"]),
        on in proptest::sample::select(vec!["on", "running", ""]),
        latest in proptest::sample::select(vec!["latest", "newest"]),
        noun in proptest::sample::select(vec!["", " firmware", " version", " release"]),
    ) {
        let condition = format!("{neg} {on} the {latest}{noun}");
        proptest::prop_assert_eq!(p(&format!("which smart plugs {condition}?")), behind(&["smart_plug"]));
        let u = update(&format!("update all smart plugs {condition}"));
        proptest::prop_assert_eq!(u.version, Some(VersionRequest::Latest));
        proptest::prop_assert_eq!(u.current_version, None);
    }
}
