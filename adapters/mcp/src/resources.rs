//! MCP resources and prompts, as hawkBit's MCP server ships them.
//!
//! Resources (JSON, `application/json`), each read through the service as the request's
//! caller (the viewer role suffices; without a caller the read is refused, as for tools):
//! - `ota://firmware`: the firmware catalog, `{"firmware": [...]}` as `list_firmware`.
//! - `ota://fleet`: per device type, devices by version and connected, with the type's latest
//!   version and OTA gate: `{"device_types": [{device_type, total, connected, by_version,
//!   latest, ota_enabled}]}`.
//! - `ota://rollouts/{id}` (a template): one rollout, `{"rollout", "progress"}` as
//!   `get_rollout`, with progress when the backend has it.
//!
//! Prompts: `safe_rollout` (plan, show, start with the plan id, watch) and `rollback` (the
//! same two-step rollback), with `device_type` and `version` arguments. They hold no data, so
//! they need no caller; their arguments are validated as names and versions.

use ota_core::Error;
use ota_core::device::DeviceQuery;
use ota_core::names::{DeviceType, JobId};
use ota_core::version::VersionRequest;
use rmcp::ErrorData;
use rmcp::model::{
    GetPromptResult, JsonObject, Prompt, PromptArgument, PromptMessage, ReadResourceResult, Resource, ResourceContents,
    ResourceTemplate, Role,
};
use serde_json::{Value, json};

use crate::OtaMcp;

pub const FIRMWARE_URI: &str = "ota://firmware";
pub const FLEET_URI: &str = "ota://fleet";
pub const ROLLOUT_TEMPLATE: &str = "ota://rollouts/{id}";
const ROLLOUT_PREFIX: &str = "ota://rollouts/";
const JSON: &str = "application/json";

pub fn list() -> Vec<Resource> {
    vec![
        Resource::new(FIRMWARE_URI, "firmware")
            .with_title("Firmware catalog")
            .with_description("Every published firmware: device type, version, size, sha256, release notes.")
            .with_mime_type(JSON),
        Resource::new(FLEET_URI, "fleet")
            .with_title("Fleet summary")
            .with_description(
                "Per device type: devices by firmware version, how many are connected, the latest version and the OTA gate.",
            )
            .with_mime_type(JSON),
    ]
}

pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(ROLLOUT_TEMPLATE, "rollout")
            .with_title("One rollout")
            .with_description(
                "A rollout by id: status, version, target devices, who started it, and per-device progress when the backend reports it.",
            )
            .with_mime_type(JSON),
    ]
}

/// A service error as a JSON-RPC error of a resource read.
fn read_error(e: Error) -> ErrorData {
    let data = Some(json!({ "error": e.kind() }));
    match &e {
        Error::Invalid { .. } => ErrorData::invalid_params(e.to_string(), data),
        Error::NotFound { .. } => ErrorData::resource_not_found(e.to_string(), data),
        Error::Storage(_) => ErrorData::internal_error(e.to_string(), data),
        _ => ErrorData::invalid_request(e.to_string(), data),
    }
}

fn contents(uri: &str, value: &Value) -> ReadResourceResult {
    ReadResourceResult::new(vec![ResourceContents::text(value.to_string(), uri).with_mime_type(JSON)])
}

impl OtaMcp {
    /// Reads `uri` as the caller of the request.
    pub(crate) async fn read(&self, uri: &str, ext: &rmcp::model::Extensions) -> Result<ReadResourceResult, ErrorData> {
        let caller = self.caller_data(ext)?;
        let value = match uri {
            FIRMWARE_URI => {
                let entries = self.svc.list_firmware(&caller, None).await.map_err(read_error)?;
                json!(crate::reply::FirmwareList { firmware: entries })
            }
            FLEET_URI => {
                let types = self.svc.device_types(&caller).await.map_err(read_error)?;
                let status = self.svc.fleet_status(&caller, &DeviceQuery::default()).await.map_err(read_error)?;
                let rows: Vec<Value> = types
                    .iter()
                    .map(|t| {
                        let s = status.summary.iter().find(|s| s.device_type == t.device_type);
                        json!({
                            "device_type": t.device_type,
                            "total": s.map_or(0, |s| s.total),
                            "connected": s.map_or(0, |s| s.connected),
                            "by_version": s.map(|s| json!(s.by_version)).unwrap_or_else(|| json!({})),
                            "latest": t.latest,
                            "ota_enabled": t.ota_enabled,
                        })
                    })
                    .collect();
                json!({ "device_types": rows })
            }
            _ => match uri.strip_prefix(ROLLOUT_PREFIX) {
                Some(id) => {
                    let id = JobId::parse(id).map_err(read_error)?;
                    let rollout = self.svc.rollout(&caller, &id).await.map_err(read_error)?;
                    let progress = self.progress_of(&id).await.map_err(read_error)?;
                    json!(crate::reply::RolloutReply { rollout, progress })
                }
                None => {
                    return Err(ErrorData::resource_not_found(
                        format!("no resource {uri:?}: ota serves {FIRMWARE_URI}, {FLEET_URI} and {ROLLOUT_TEMPLATE}"),
                        None,
                    ));
                }
            },
        };
        Ok(contents(uri, &value))
    }
}

pub const SAFE_ROLLOUT: &str = "safe_rollout";
pub const ROLLBACK: &str = "rollback";

pub fn prompts() -> Vec<Prompt> {
    vec![
        Prompt::new(
            SAFE_ROLLOUT,
            Some("The safe rollout workflow: plan with plan_update, show the person the plan, start with start_rollout and the plan_id once they agree, watch with get_rollout."),
            Some(vec![
                PromptArgument::new("device_type")
                    .with_description("The device type to update (e.g. pet_feeder).")
                    .with_required(true),
                PromptArgument::new("version")
                    .with_description("The version to install: latest (default), a partial (\"2\", \"2.1\") or an exact one.")
                    .with_required(false),
            ]),
        )
        .with_title("Roll out firmware safely"),
        Prompt::new(
            ROLLBACK,
            Some("The rollback workflow: rollback without plan_id to plan, show the person the plan, call rollback again with its plan_id once they agree, watch with get_rollout."),
            Some(vec![
                PromptArgument::new("device_type")
                    .with_description("The device type to roll back (e.g. pet_feeder).")
                    .with_required(true),
                PromptArgument::new("version")
                    .with_description("The earlier version to return to (e.g. 1.0.0).")
                    .with_required(true),
            ]),
        )
        .with_title("Roll back firmware"),
    ]
}

fn arg<'a>(args: &'a Option<JsonObject>, name: &str) -> Option<&'a str> {
    args.as_ref().and_then(|a| a.get(name)).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn required<'a>(args: &'a Option<JsonObject>, name: &str) -> Result<&'a str, ErrorData> {
    arg(args, name).ok_or_else(|| ErrorData::invalid_params(format!("argument {name} is required"), None))
}

fn invalid(e: Error) -> ErrorData {
    ErrorData::invalid_params(e.to_string(), None)
}

/// The prompt `name` with `args`: names and versions are validated, never pasted unchecked.
pub fn get(name: &str, args: &Option<JsonObject>) -> Result<GetPromptResult, ErrorData> {
    if name != SAFE_ROLLOUT && name != ROLLBACK {
        return Err(ErrorData::invalid_params(
            format!("no prompt {name:?}: ota offers {SAFE_ROLLOUT} and {ROLLBACK}"),
            None,
        ));
    }
    let device_type = DeviceType::parse(required(args, "device_type")?).map_err(invalid)?;
    let (description, text) = match name {
        SAFE_ROLLOUT => {
            let version = arg(args, "version").unwrap_or("latest");
            VersionRequest::parse(version).map_err(invalid)?;
            (
                format!("Safely roll out {version} to {device_type}"),
                format!(
                    "Update the {device_type} devices to firmware {version}, safely:\n\
1. Call plan_update with device_types [\"{device_type}\"] and version \"{version}\". It changes nothing.\n\
2. Show me the plan: which devices move to which version, which are held back or already current, and what is refused and why. Stop there and wait for my explicit yes.\n\
3. Only after I agree, call start_rollout with the same arguments and the plan's plan_id. If it is refused because the plan changed, plan again and show me the new plan.\n\
4. Watch with get_rollout until the rollout is COMPLETED, CANCELED or ABORTED, and tell me how each device did. Ask me before cancel_rollout."
                ),
            )
        }
        ROLLBACK => {
            let version = required(args, "version")?;
            VersionRequest::parse(version).map_err(invalid)?;
            (
                format!("Roll {device_type} back to {version}"),
                format!(
                    "Roll the {device_type} devices back to firmware {version}:\n\
1. Call rollback with device_types [\"{device_type}\"] and version \"{version}\", without plan_id. It only plans.\n\
2. Show me the plan: which devices go back to which version, what is held back and what is refused and why. Stop there and wait for my explicit yes.\n\
3. Only after I agree, call rollback again with the same arguments and the plan's plan_id. If it is refused because the plan changed, plan again and show me the new plan.\n\
4. Watch with get_rollout until the rollout is COMPLETED, CANCELED or ABORTED, and tell me how each device did."
                ),
            )
        }
        _ => unreachable!("checked above"),
    };
    Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)]).with_description(description))
}
