//! The hand-written schemas of ota-core's checked strings (names, versions, digests) against
//! what their `Serialize` writes and what their `parse` refuses, with an independent JSON
//! Schema validator: every value the service can write is valid, and the strings `parse`
//! rejects are invalid, so the output schemas neither refuse real replies nor admit garbage.

use ota_core::catalog::Sha256Digest;
use ota_core::names::{DeviceType, JobId, ThingGroupName, ThingName};
use ota_core::version::FirmwareVersion;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde_json::{Value, json};

fn validator<T: JsonSchema>() -> jsonschema::Validator {
    let schema = SchemaSettings::draft2020_12().for_serialize().into_generator().into_root_schema_for::<T>();
    let schema = serde_json::to_value(schema).unwrap();
    jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
    let v = jsonschema::validator_for(&schema).unwrap();
    // The examples a client's model reads are valid values.
    for example in schema["examples"].as_array().expect("examples") {
        assert!(v.is_valid(example), "the example {example} does not match {schema}");
    }
    v
}

/// Each parsed value, serialized, is valid; each string `parse` refuses is invalid.
fn check<T: JsonSchema + Serialize>(parse: impl Fn(&str) -> ota_core::Result<T>, good: &[&str], bad: &[&str]) {
    let v = validator::<T>();
    for s in good {
        let written = serde_json::to_value(parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))).unwrap();
        assert!(v.is_valid(&written), "{written} is what Serialize writes, but the schema refuses it");
    }
    for s in bad {
        assert!(parse(s).is_err(), "{s} parses; the test expects a refusal");
        assert!(!v.is_valid(&json!(s)), "the schema admits {s:?}, which parse refuses");
    }
    assert!(!v.is_valid(&json!(3)) && !v.is_valid(&Value::Null));
}

#[test]
fn device_types() {
    let longest = "a".repeat(64);
    let too_long = "a".repeat(65);
    check(
        DeviceType::parse,
        &["pet_feeder", "esp32_cam", "vision_ai_face_detector", "a", &longest],
        &["", "Pet_feeder", "pet__feeder", "pet_feeder_", "_pet", "2cam", "pet-feeder", "pet feeder", &too_long],
    );
}

#[test]
fn thing_and_group_names() {
    let longest = "x".repeat(128);
    let too_long = "x".repeat(129);
    let good = ["pet_feeder-03", "a:b_c-D9", &longest];
    let bad = ["", "pet feeder", "../x", "pet/feeder", "é", &too_long];
    check(ThingName::parse, &good, &bad);
    check(ThingGroupName::parse, &["PetFeederAWSDevice", "a:b_c-D9", &longest], &bad);
}

#[test]
fn job_ids() {
    let longest = "j".repeat(64);
    let too_long = "j".repeat(65);
    check(JobId::parse, &["update-pet_feeder-2_0_0-3f2a9c61d0", &longest], &["", "a:b", "a b", "a.b", &too_long]);
}

#[test]
fn firmware_versions_are_written_without_the_v() {
    check(
        FirmwareVersion::parse,
        &["2.0.0", "v2.0.0", "V10.20.30", "0.0.0", "2.0.0-rc.1", "1.0.0-alpha-2.x"],
        &["", "2", "2.1", "latest", "2.0.0+build", "01.0.0", "2.0.0-"],
    );
    // What `parse` accepts with a prefix is written without it.
    assert!(!validator::<FirmwareVersion>().is_valid(&json!("v2.0.0")));
}

#[test]
fn digests_are_lowercase_hex() {
    let upper = "AB".repeat(32);
    check(
        Sha256Digest::parse_hex,
        &[&"ab".repeat(32), &upper, &"09".repeat(32)],
        &["", "ab", &"zz".repeat(32), &"ab".repeat(33)],
    );
    // Upper case parses, but is written in lower case; the schema wants what is written.
    assert!(!validator::<Sha256Digest>().is_valid(&json!(upper)));
}
