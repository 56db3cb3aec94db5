//! Device types as people write them, and thing names as mentions.

use super::*;

/// The types an update names, for prompts that must name exactly those.
fn named(prompt: &str) -> Vec<DeviceType> {
    let u = update(&format!("update {prompt} to 2.0.0"));
    assert!(u.unknown_names.is_empty(), "{prompt}: {:?}", u.unknown_names);
    u.device_types
}

#[test]
fn plurals_spaces_and_identifiers_name_types() {
    for (prompt, want) in [
        ("pet_feeder", "pet_feeder"),
        ("pet_feeders", "pet_feeder"),
        ("the pet feeders", "pet_feeder"),
        ("every pet feeder", "pet_feeder"),
        ("pet-feeders", "pet_feeder"),
        ("petfeeders", "pet_feeder"),
        ("vision ai face detectors", "vision_ai_face_detector"),
        ("face detectors", "vision_ai_face_detector"),
        ("object counters", "vision_ai_object_counter"),
        ("doorbells", "smart_doorbell"),
        ("co2 monitors", "co2_monitor"),
        ("soil sensors", "soil_moisture_sensor"),
        ("humidity sensors", "temperature_humidity_sensor"),
        ("leader arms", "lerobot_leader_arm"),
        ("garage door controllers", "garage_door_controller"),
        ("weather stations", "weather_station"),
        ("led strips", "led_strip_controller"),
        ("bird feeders", "bird_feeder_camera"),
        ("notifiers", "mailbox_notifier"),
        ("beehive scale", "beehive_scale"),
        ("the garage devices", "garage_door_controller"),
    ] {
        assert_eq!(named(prompt), types(&[want]), "{prompt}");
    }
}

#[test]
fn small_typos_are_tolerated() {
    for (prompt, want) in [
        ("the face detecters", "vision_ai_face_detector"),
        ("pet feedrs", "pet_feeder"),
        ("pet fedders", "pet_feeder"),
        ("pet_feedr", "pet_feeder"),
        ("vision_ai_face_detectr", "vision_ai_face_detector"),
        ("smart dorbells", "smart_doorbell"),
    ] {
        assert_eq!(named(prompt), types(&[want]), "{prompt}");
    }
}

#[test]
fn families_name_all_their_members() {
    assert_eq!(named("lerobot arms"), types(&["lerobot_follower_arm", "lerobot_leader_arm"]));
    assert_eq!(named("lerobot"), types(&["lerobot_follower_arm", "lerobot_leader_arm"]));
    assert_eq!(named("vision ai devices"), types(&["vision_ai_face_detector", "vision_ai_object_counter"]));
    assert_eq!(named("smart devices"), types(&["smart_doorbell", "smart_plug"]));
}

#[test]
fn ambiguous_nouns_are_asked_about_with_the_candidates() {
    for (prompt, candidates) in [
        ("update sensors to 2.0.0", &["soil_moisture_sensor", "motion_sensor", "temperature_humidity_sensor"][..]),
        ("update the monitors to 2.0.0", &["air_quality_monitor", "co2_monitor", "fish_tank_monitor"]),
        ("update arms to 2.0.0", &["lerobot_follower_arm", "lerobot_leader_arm"]),
        ("update bridges to latest", &["sphero_rvr_bridge", "uart_jetson_bridge"]),
        ("update the meters to latest", &["energy_meter", "sound_level_meter"]),
        ("update detectors to latest", &["vision_ai_face_detector", "water_leak_detector"]),
        ("list sensors", &["soil_moisture_sensor", "motion_sensor", "temperature_humidity_sensor"]),
        ("enable OTA for sensors", &["soil_moisture_sensor", "motion_sensor", "temperature_humidity_sensor"]),
    ] {
        let (message, suggestions) = unknown(prompt);
        assert_eq!(suggestions, strings(candidates), "{prompt}");
        assert!(message.contains("could mean"), "{prompt}: {message}");
    }
}

#[test]
fn a_modifier_word_is_not_a_second_type() {
    // "water" starts water_leak_detector, but here it describes the pumps.
    let (message, _) = unknown("update the water pumps to 2.0.0");
    assert!(message.contains("\"water\""), "{message}");
    // "sounds" is not the sound_level_meter.
    assert!(matches!(p("sounds good, update pet feeders to 2.0.0"), Intent::Unknown { .. }));
}

#[test]
fn thing_names_are_kept_as_written() {
    for (prompt, want) in [
        ("update pet_feeder-3 to 2.0.0", "pet_feeder-3"),
        ("update pet_feeder-03 to 2.0.0", "pet_feeder-03"),
        ("update kitchen-sensor-1 to 2.0.0", "kitchen-sensor-1"),
        ("update kitchen-sensor to 2.0.0", "kitchen-sensor"),
        ("update PET_FEEDER-03's firmware to 2.0.0", "PET_FEEDER-03"),
        ("update lab:esp32:7 to 2.0.0", "lab:esp32:7"),
    ] {
        let u = update(prompt);
        assert_eq!(u.thing_mentions, strings(&[want]), "{prompt}");
        assert!(u.device_types.is_empty(), "{prompt}");
    }
}

#[test]
fn rollout_ids_are_not_thing_names() {
    let (message, _) = unknown("update update-pet_feeder-3_0_0-ab12cd34ef to 2.0.0");
    assert!(message.contains("is a rollout"), "{message}");
}

#[test]
fn adjacent_types_without_a_comma_are_both_named() {
    assert_eq!(named("doorbells smart plugs"), types(&["smart_doorbell", "smart_plug"]));
    assert_eq!(
        named("the doorbells, smart plugs and pet feeders"),
        types(&["smart_doorbell", "smart_plug", "pet_feeder"])
    );
}
