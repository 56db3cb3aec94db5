//! Devices named by type and number, written with spaces or as words: "weather station 2",
//! "pet feeder three", "pet_feeder 3", "pet feeder number 3". They read as the thing name
//! `{type}-{number}`, which the service resolves like `pet_feeder-3`; a number a word marks
//! as a version stays a version, and a bare number that could be either is asked about.

use super::*;

/// Each prompt reads as the same prompt with the thing name written out.
#[test]
fn a_type_and_a_number_name_a_device() {
    for (spaced, named) in [
        ("what's the status of weather station 2", "what's the status of weather_station-2"),
        ("how is weather station two doing", "how is weather_station-2 doing"),
        ("show pet feeder three", "show pet_feeder-3"),
        ("show pet_feeder 3", "show pet_feeder-3"),
        ("what is pet feeder number 3 running", "what is pet_feeder-3 running"),
        ("show pet feeder number one", "show pet_feeder-1"),
        ("show smart plug #1", "show smart_plug-1"),
        ("status of the smart plug no 4", "status of the smart_plug-4"),
        ("is pet feeder 12 on 1.x?", "is pet_feeder-12 on 1.x?"),
        ("update pet feeder 3 to 2.0.0", "update pet_feeder-3 to 2.0.0"),
        ("update pet feeder three to 2.0.0", "update pet_feeder-3 to 2.0.0"),
        ("update pet feeder number 3 to latest", "update pet_feeder-3 to latest"),
        ("update the pet feeder #3 to 2.0.0", "update the pet_feeder-3 to 2.0.0"),
        ("roll back weather station 2 to 1.0.0", "roll back weather_station-2 to 1.0.0"),
        ("update pet feeder 3 and smart plug 1 to 2.0.0", "update pet_feeder-3 and smart_plug-1 to 2.0.0"),
        ("update all pet feeders except pet feeder 3 to 2.0.0", "update all pet feeders except pet_feeder-3 to 2.0.0"),
        ("update pet_feeder 02 to 2.0.0", "update pet_feeder-2 to 2.0.0"),
        ("upgrade vision ai face detector 2 to latest", "upgrade vision_ai_face_detector-2 to latest"),
    ] {
        assert_eq!(p(spaced), p(named), "{spaced:?}");
        assert!(!matches!(p(spaced), Intent::Unknown { .. }), "{spaced:?}: {:?}", p(spaced));
    }
    assert_eq!(
        p("what's the status of weather station 2"),
        Intent::FleetStatus {
            device_types: vec![],
            thing_mentions: strings(&["weather_station-2"]),
            current_version: None,
            not_latest: false
        }
    );
    let u = update("update all pet feeders except pet feeder 3 to 2.0.0");
    assert_eq!(u.device_types, types(&["pet_feeder"]));
    assert_eq!(u.exclude_thing_mentions, strings(&["pet_feeder-3"]));
}

/// A number after "to", "version", "v", "on", "older than" is a version, as before.
#[test]
fn numbers_marked_as_versions_stay_versions() {
    for (prompt, want) in [
        ("update pet feeders to 2", req("2")),
        ("update pet feeder to 2", req("2")),
        ("update pet feeder to version 2", req("2")),
        ("update pet feeder version 3", req("3")),
        ("update pet feeder v3", req("3")),
        ("update pet_feeder 2.0.0", req("2.0.0")),
    ] {
        let u = update(prompt);
        assert_eq!(u.device_types, types(&["pet_feeder"]), "{prompt}");
        assert!(u.thing_mentions.is_empty(), "{prompt}");
        assert_eq!(u.version, Some(want), "{prompt}");
    }
    let u = update("update pet feeders on 1 to 2.0.0");
    assert!(u.thing_mentions.is_empty());
    assert_eq!(u.current_version, Some(filter("1")));
    assert_eq!(
        p("which pet feeders are older than 2"),
        Intent::FleetStatus {
            device_types: types(&["pet_feeder"]),
            thing_mentions: vec![],
            current_version: Some(VersionFilter::Below(crate::version::FirmwareVersion::new(2, 0, 0))),
            not_latest: false
        }
    );
}

/// Device or version? Without another version in the request, the engine asks.
#[test]
fn a_bare_number_that_could_be_a_version_is_asked_about() {
    for prompt in [
        "update pet feeder 2",
        "roll back pet feeder 2",
        "upgrade the weather station 3",
        "update pet feeder three",
        "flash smart_plug 4",
    ] {
        let (message, suggestions) = unknown(prompt);
        assert!(message.contains("name the device") && message.contains("or version"), "{prompt}: {message}");
        assert_eq!(suggestions.len(), 1, "{prompt}");
    }
    // Plural names before a number are no device: the number is refused as before.
    for prompt in ["update pet feeders 2", "update 3 pet feeders to 2.0.0", "update pet_feeders 2 to 2.0.0"] {
        let (message, _) = unknown(prompt);
        assert!(message.contains("What does"), "{prompt}: {message}");
    }
    // "one" is a pronoun unless "number" says otherwise.
    assert_eq!(
        p("which pet feeder one is on 1.x"),
        Intent::FleetStatus {
            device_types: types(&["pet_feeder"]),
            thing_mentions: vec![],
            current_version: Some(filter("1.x")),
            not_latest: false
        }
    );
}

proptest::proptest! {
    /// Any number after a singular type name, with a version said after "to", names the device;
    /// the same number after "to" is the version.
    #[test]
    fn device_numbers_and_versions_are_told_apart(
        n in 0u32..1000,
        ty in proptest::sample::select(vec!["pet feeder", "pet_feeder", "weather station", "smart plug"]),
    ) {
        let name = ty.replace(' ', "_");
        let u = update(&format!("update {ty} {n} to 2.0.0"));
        proptest::prop_assert_eq!(u.thing_mentions, vec![format!("{name}-{n}")]);
        proptest::prop_assert_eq!(u.version, Some(req("2.0.0")));
        let u = update(&format!("update {ty} to {n}"));
        proptest::prop_assert!(u.thing_mentions.is_empty());
        proptest::prop_assert_eq!(u.version, Some(req(&n.to_string())));
    }
}
