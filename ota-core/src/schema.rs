//! JSON Schemas (feature `schema`) of the types whose serde form is a checked string: each
//! is written exactly as `Serialize` writes it (the newtypes serialize `into = "String"`), with
//! the rule its `parse` enforces as a pattern and length bounds. The other operator-side types
//! derive `JsonSchema` next to their `Serialize`. MCP publishes these schemas as the tools'
//! output schemas, so a client can check every `structuredContent` it gets.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::catalog::Sha256Digest;
use crate::names::{
    DEVICE_TYPE_MAX_LEN, DeviceType, JOB_ID_MAX_LEN, JobId, THING_NAME_MAX_LEN, ThingGroupName, ThingName,
};
use crate::version::FirmwareVersion;

/// A string schema with a pattern, length bounds and a description.
fn string(pattern: &str, min: usize, max: Option<usize>, description: &str, example: &str) -> Schema {
    let mut s = json_schema!({
        "type": "string",
        "pattern": pattern,
        "minLength": min,
        "description": description,
        "examples": [example],
    });
    if let Some(max) = max {
        s.insert("maxLength".into(), max.into());
    }
    s
}

macro_rules! string_schema {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn schema_id() -> Cow<'static, str> {
                Cow::Borrowed(concat!("ota_core::", $name))
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

string_schema!(
    DeviceType,
    "DeviceType",
    string(
        "^[a-z][a-z0-9]*(_[a-z0-9]+)*$",
        1,
        Some(DEVICE_TYPE_MAX_LEN),
        "A device type: the snake_case firmware folder name.",
        "pet_feeder",
    )
);

string_schema!(
    ThingName,
    "ThingName",
    string("^[a-zA-Z0-9:_-]+$", 1, Some(THING_NAME_MAX_LEN), "An AWS IoT thing name (one device).", "pet_feeder-03")
);

string_schema!(
    ThingGroupName,
    "ThingGroupName",
    string(
        "^[a-zA-Z0-9:_-]+$",
        1,
        Some(THING_NAME_MAX_LEN),
        "An AWS IoT thing-group name (the devices of one type).",
        "PetFeederAWSDevice",
    )
);

string_schema!(
    JobId,
    "JobId",
    string(
        "^[a-zA-Z0-9_-]+$",
        1,
        Some(JOB_ID_MAX_LEN),
        "A rollout (AWS IoT job) id.",
        "update-pet_feeder-2_0_0-3f2a9c61d0"
    )
);

string_schema!(
    FirmwareVersion,
    "FirmwareVersion",
    string(
        r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$",
        5,
        None,
        "A firmware version: semver MAJOR.MINOR.PATCH, with an optional pre-release, no build metadata.",
        "2.0.0",
    )
);

string_schema!(
    Sha256Digest,
    "Sha256Digest",
    string(
        "^[0-9a-f]{64}$",
        64,
        Some(64),
        "A SHA-256 digest: 64 lowercase hex characters.",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    )
);

#[cfg(test)]
mod tests {
    use crate::plan::Plan;

    /// The plan's schema (MCP's output schema of every planning tool) names the device
    /// management fields and actions, so a client can check a command or device plan too.
    #[test]
    fn the_plan_schema_has_the_device_fields_and_actions() {
        let schema = serde_json::to_value(schemars::schema_for!(Plan)).unwrap();
        let text = schema.to_string();
        let properties = schema["properties"].as_object().expect("the plan's properties");
        for field in ["commands", "devices", "telemetry", "refusals", "message", "plan_id"] {
            assert!(properties.contains_key(field), "{field} missing: {text}");
        }
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
        for optional in ["commands", "devices", "telemetry"] {
            assert!(!required.contains(&optional), "{optional} is left out when empty, so not required");
        }
        for action in ["\"command\"", "\"device_status\"", "\"telemetry\"", "\"update\""] {
            assert!(text.contains(action), "action {action} missing");
        }
        for key in ["firmware_version", "health_message", "parameters", "points"] {
            assert!(text.contains(key), "{key} missing");
        }
    }
}
