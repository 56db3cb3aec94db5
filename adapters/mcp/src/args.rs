//! Tool inputs. Their doc comments and examples become the JSON schemas the client's model
//! reads, so they say what each field means in the fleet's terms and show real values.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An optional device type filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceTypeArgs {
    /// Only this device type (a firmware folder name, snake_case). Omit for all types.
    #[schemars(example = &"pet_feeder")]
    #[serde(default)]
    pub device_type: Option<String>,
}

/// Which devices to show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FleetStatusArgs {
    /// Only devices of this device type. Omit for the whole fleet.
    #[schemars(example = &"pet_feeder")]
    #[serde(default)]
    pub device_type: Option<String>,
    /// Only devices whose current firmware matches: an exact version ("2.0.0"), a prefix
    /// ("1.x", "2.1.x") or a bound ("<2.0.0").
    #[schemars(example = &"1.x", example = &"<2.0.0")]
    #[serde(default)]
    pub version: Option<String>,
}

/// One device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GetDeviceArgs {
    /// The thing name, usually `{device_type}-{number}`.
    #[schemars(example = &"pet_feeder-03")]
    pub thing: String,
}

/// What to update, to which version. Name device types, things, or the whole fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UpdateArgs {
    /// Device types whose devices should move (every device of each type).
    #[schemars(example = ["pet_feeder"])]
    #[serde(default)]
    pub device_types: Vec<String>,
    /// Individual devices (thing names) that should move, in either direction.
    #[schemars(example = ["pet_feeder-03"])]
    #[serde(default)]
    pub things: Vec<String>,
    /// Every device of every type (each type to its own firmware of that version).
    #[serde(default)]
    pub whole_fleet: bool,
    /// The target firmware: "latest" (highest released), a partial version ("2" or "2.1": the
    /// highest 2.x / 2.1.x) or an exact one ("2.0.0").
    #[schemars(example = &"latest", example = &"2.0.0", example = &"2.1")]
    pub version: String,
    /// Only devices currently running a matching version: "1.0.0", "1.x" or "<2.0.0".
    #[schemars(example = &"1.x")]
    #[serde(default)]
    pub only_from_version: Option<String>,
    /// Device types or things to leave out. A name that is neither is refused.
    #[schemars(example = ["pet_feeder-02"])]
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Plan a rollback (moving to an older version) rather than an update.
    #[serde(default)]
    pub rollback: Option<bool>,
    /// Only devices connected now; the offline ones are left out (else their updates wait
    /// until they connect).
    #[serde(default)]
    pub only_online: bool,
    /// If the rollout aborts, roll the devices it already moved back to the version each ran
    /// before (linked rollback rollouts), whatever the type's policy says.
    #[serde(default)]
    pub revert_on_abort: bool,
}

/// Start an approved plan: the same arguments as `plan_update` plus its plan_id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StartArgs {
    /// The plan_id `plan_update` returned for these arguments, after the person approved it.
    #[schemars(example = &"plan-3f2a9c61d0b4e7a8")]
    pub plan_id: String,
    /// The request, exactly as given to `plan_update`.
    #[serde(flatten)]
    pub request: UpdateArgs,
}

/// A rollback: which devices, to which earlier version; plan_id only on the second call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RollbackArgs {
    /// Device types to roll back (their devices on a newer version move down).
    #[schemars(example = ["pet_feeder"])]
    #[serde(default)]
    pub device_types: Vec<String>,
    /// Individual devices to roll back.
    #[schemars(example = ["pet_feeder-03"])]
    #[serde(default)]
    pub things: Vec<String>,
    /// The earlier version to return to ("1.0.0", or a partial "1").
    #[schemars(example = &"1.0.0")]
    pub version: String,
    /// Only devices currently running a matching version: "2.0.0", "2.x" or "<3.0.0".
    #[schemars(example = &"2.x")]
    #[serde(default)]
    pub only_from_version: Option<String>,
    /// Device types or things to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Only devices connected now.
    #[serde(default)]
    pub only_online: bool,
    /// Omit to plan only. To start, pass the plan_id the planning call returned, with the
    /// same other arguments, after the person approved that plan.
    #[serde(default)]
    pub plan_id: Option<String>,
}

/// One rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GetRolloutArgs {
    /// The rollout id (as returned by start_rollout or list_rollouts).
    #[schemars(example = &"update-pet_feeder-2_0_0-3f2a9c61d0")]
    pub id: String,
}

/// Which rollouts to list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListRolloutsArgs {
    /// Only rollouts of this device type.
    #[schemars(example = &"pet_feeder")]
    #[serde(default)]
    pub device_type: Option<String>,
    /// Only active (IN_PROGRESS) rollouts. Default false.
    #[serde(default)]
    pub active_only: Option<bool>,
}

/// A rollout to cancel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CancelArgs {
    /// The rollout id.
    #[schemars(example = &"update-pet_feeder-2_0_0-3f2a9c61d0")]
    pub id: String,
    /// Why, for the audit trail and the rollout's status reason.
    #[schemars(example = &"devices report feeding errors")]
    #[serde(default)]
    pub reason: Option<String>,
}

/// The OTA gate of one type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SetOtaArgs {
    /// The device type.
    #[schemars(example = &"beehive_scale")]
    pub device_type: String,
    /// true opens the gate (updates may be planned), false closes it.
    pub enabled: bool,
}

/// A plain-language request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AskArgs {
    /// What the person asked, in their words.
    #[schemars(example = &"Update all pet_feeder devices to 2.0.0", example = &"Roll back pet_feeder-03 to 1.0.0")]
    pub prompt: String,
    /// Start the update or rollback it plans right away. Default false: plan only. Set it only
    /// after the person approved the plan a previous call showed.
    #[serde(default)]
    pub execute: Option<bool>,
    /// With execute: the plan_id the person approved; the start is refused if the words now
    /// plan anything else (the fleet, the catalog or a policy changed).
    #[schemars(example = &"plan-3f2a9c61d0b4e7a8")]
    #[serde(default)]
    pub plan_id: Option<String>,
}

/// Which devices to list: every filter narrows the list; none lists the whole fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListDevicesArgs {
    /// Only devices of this device type.
    #[schemars(example = &"air_quality_monitor")]
    #[serde(default)]
    pub device_type: Option<String>,
    /// Only devices whose current firmware matches: "2.0.0", "1.x" or "<2.0.0".
    #[schemars(example = &"1.x")]
    #[serde(default)]
    pub version: Option<String>,
    /// Only devices at this location or inside it: a full path ("factory-floor-1/line-7"), a
    /// prefix ("factory-floor-1") or one part of it ("line 7"); case, spaces and hyphens do
    /// not matter.
    #[schemars(example = &"factory-floor-1", example = &"line 7")]
    #[serde(default)]
    pub location: Option<String>,
    /// Only devices whose last health report is "ok", "warning" or "error" (a device that never
    /// reported matches none).
    #[schemars(example = &"warning")]
    #[serde(default)]
    pub health: Option<String>,
    /// Only devices in this operational state: "active", "maintenance" or "retired".
    #[schemars(example = &"maintenance")]
    #[serde(default)]
    pub state: Option<String>,
    /// true: only devices connected now; false: only devices offline now. Omit for both.
    #[serde(default)]
    pub online: Option<bool>,
}

/// A command to send: what, to which devices, with which parameters; plan_id only on the
/// confirming call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SendCommandArgs {
    /// "reboot", "identify", "recalibrate", "update_config" (parameters: the settings to
    /// change), "set_state" (parameters: {"state": "maintenance"}), or a command the devices'
    /// firmware declares.
    #[schemars(example = &"recalibrate", example = &"update_config")]
    pub command: String,
    /// Devices by thing name. Named devices are included even in maintenance or retired.
    #[schemars(example = ["pet_feeder-03"])]
    #[serde(default)]
    pub things: Vec<String>,
    /// Select devices by type (with location and health: those matching all). Devices the
    /// selection reaches in maintenance or retired are left out, and the plan says so.
    #[schemars(example = &"air_quality_monitor")]
    #[serde(default)]
    pub device_type: Option<String>,
    /// Select devices at this location or inside it ("factory-floor-1", "line 3").
    #[schemars(example = &"line 3")]
    #[serde(default)]
    pub location: Option<String>,
    /// Select devices whose last health report is "ok", "warning" or "error".
    #[serde(default)]
    pub health: Option<String>,
    /// The command's parameters: for update_config the settings and their values
    /// ({"sample_rate_seconds": 10}), for set_state {"state": "maintenance"}; {} otherwise.
    #[schemars(example = &serde_json::json!({"sample_rate_seconds": 10}))]
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Seconds each device has to answer (1 to 86400; default 300).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Omit to plan only. To send, pass the plan_id the planning call returned, with the same
    /// other arguments, after the person approved that plan.
    #[schemars(example = &"cplan-3f2a9c61d0b4")]
    #[serde(default)]
    pub plan_id: Option<String>,
}

/// One command run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GetCommandArgs {
    /// The command run id (as send_command returned it).
    #[schemars(example = &"cmd-3f2a9c61d0b4-1")]
    pub id: String,
}

/// A device's telemetry history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TelemetryArgs {
    /// The thing name.
    #[schemars(example = &"co2_monitor-01")]
    pub thing: String,
    /// Only this metric (points without it are left out), e.g. "co2_ppm".
    #[schemars(example = &"co2_ppm")]
    #[serde(default)]
    pub metric: Option<String>,
    /// How far back: "90m", "24h", "7d", or an RFC 3339 time. Omit for everything kept (7 days).
    #[schemars(example = &"24h")]
    #[serde(default)]
    pub since: Option<String>,
    /// At most this many points, the newest (returned oldest first). Default 500.
    #[serde(default)]
    pub limit: Option<usize>,
}
