//! The intent engine: plain words in, a structured request out, with no language model.
//!
//! It is deterministic and conservative: names are resolved against the known device types
//! (tolerating plurals, spaces for underscores and small typos), thing names are returned as
//! mentions for the service to resolve against the registry, and when the engine is unsure
//! it answers [`Intent::Unknown`] with close matches instead of guessing a target or a
//! version. Words in a prompt never carry permissions: "as admin" or "ignore the rules" are
//! just words here; roles come from the authenticated caller only.

use serde::{Deserialize, Serialize};

use crate::device::{HealthStatus, OperationalState};
use crate::names::{DeviceType, JobId};
use crate::version::{VersionFilter, VersionRequest};

mod fuzzy;
mod parse;
mod things;

pub use parse::{is_open_question, parse};
pub use things::{ThingMatch, resolve_thing};

/// What the engine knows while parsing: the device types of the catalog and the registry.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub device_types: Vec<DeviceType>,
}

/// A request understood from plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "intent")]
pub enum Intent {
    /// Update or roll back devices.
    Update(UpdateIntent),
    /// Several updates or rollbacks in one request ("update energy_meter to 2.0.0 and roll
    /// back fish_tank_monitor to 1.0.0"): each change names its own target and version and
    /// keeps its own action; they are planned together and confirmed once. At least two,
    /// in prompt order, no device type or thing named by two of them.
    Updates { changes: Vec<UpdateIntent> },
    /// List firmware, for some types or (empty) all.
    ListFirmware { device_types: Vec<DeviceType> },
    /// Fleet status, optionally narrowed.
    FleetStatus {
        device_types: Vec<DeviceType>,
        thing_mentions: Vec<String>,
        current_version: Option<VersionFilter>,
        /// "not on the latest firmware": only devices not running their type's latest
        /// version, which differs per type (the service reads it from the catalog).
        #[serde(default)]
        not_latest: bool,
    },
    /// Status of one rollout, the rollouts of a type, or (None) every recent rollout.
    RolloutStatus { rollout: Option<RolloutRef> },
    /// Cancel a rollout.
    Cancel { rollout: RolloutRef },
    /// Enable or disable OTA for device types.
    SetOta { enabled: bool, device_types: Vec<DeviceType> },
    /// A question about devices' connectivity, health, operational state or location ("Is
    /// pet_feeder-03 online?", "Which devices are offline?", "List the devices on
    /// factory-floor-1"): every device the selection names or passes.
    DeviceStatus { devices: DeviceSelection },
    /// A command to devices: `reboot`, `identify`, `recalibrate`, `update_config` (with its
    /// settings) or `set_state` (with its state). Planned and confirmed like a rollout.
    Command(CommandIntent),
    /// The telemetry history of one device ("Show the last 24 hours of CO2 for
    /// co2_monitor-01"): `metrics` as written (empty: every metric), over the last
    /// `minutes` (a day when the request names no window).
    Telemetry { devices: DeviceSelection, metrics: Vec<String>, minutes: u32 },
    /// Not understood; `message` says what was missing and `suggestions` offers close matches.
    Unknown { message: String, suggestions: Vec<String> },
}

/// The devices a device-management request names: things one by one, device types, or the
/// whole fleet, narrowed by place, connectivity, health and operational state. Names are as
/// written; the service resolves them against the registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceSelection {
    /// Words that look like thing names (`pet_feeder-03`), as written.
    #[serde(default)]
    pub thing_mentions: Vec<String>,
    #[serde(default)]
    pub device_types: Vec<DeviceType>,
    /// Every device ("all devices", "the fleet", or a place or condition with no type).
    #[serde(default)]
    pub whole_fleet: bool,
    /// A place as written ("line 7", "factory-floor-1", "lab"); the service matches it as
    /// [`crate::device::location_matches`] does (exact, inside, or one segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Only devices connected (or not) now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Only devices whose last health report has this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Only devices in this operational state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<OperationalState>,
}

impl DeviceSelection {
    /// Whether it names no device, type or group at all.
    pub fn is_empty(&self) -> bool {
        self.thing_mentions.is_empty() && self.device_types.is_empty() && !self.whole_fleet
    }

    /// Whether a condition (place, connectivity, health, state) narrows it.
    pub fn narrowed(&self) -> bool {
        self.location.is_some() || self.connected.is_some() || self.health.is_some() || self.state.is_some()
    }
}

/// A command, before its names are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandIntent {
    /// `reboot`, `identify`, `recalibrate`, `update_config` or `set_state`.
    pub command: String,
    /// For `update_config`: each setting as written, in prompt order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<SettingWords>,
    /// For `set_state`: the state asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<OperationalState>,
    pub devices: DeviceSelection,
}

/// One setting change as written: "sample_rate_seconds to 10", "the sample rate ... to 10 s".
/// The service matches the name against what the devices' firmware declares and reads the
/// value by the declared type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingWords {
    /// Lower case, words joined by `_` (`sample_rate`, `log_level`).
    pub name: String,
    /// As written (`10`, `debug`).
    pub value: String,
    /// A unit written after the value (`s`, `minutes`), lower case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// An update or rollback, before thing mentions are resolved against the registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdateIntent {
    /// Asked for with roll back / revert / downgrade words.
    pub rollback: bool,
    pub version: Option<VersionRequest>,
    pub whole_fleet: bool,
    pub device_types: Vec<DeviceType>,
    /// Words that look like thing names (`pet_feeder-3`), as written.
    pub thing_mentions: Vec<String>,
    /// "only those on 1.0.0", "still on 1.x", "older than 2.0.0".
    pub current_version: Option<VersionFilter>,
    pub exclude_types: Vec<DeviceType>,
    pub exclude_thing_mentions: Vec<String>,
    /// "only online devices", "the connected ones": devices not connected now are left out.
    #[serde(default)]
    pub only_connected: bool,
    /// "… and roll back the updated ones if it aborts": revert on abort for this request.
    #[serde(default)]
    pub revert_on_abort: bool,
    /// Identifier-like words that matched no device type (`pet_feedr_x`): refused, never guessed.
    pub unknown_names: Vec<UnknownName>,
}

/// A name in the prompt that matched nothing, with close matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownName {
    pub text: String,
    pub suggestions: Vec<String>,
}

/// Which rollout a status or cancel request means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum RolloutRef {
    Id(JobId),
    DeviceType(DeviceType),
    /// "stop it", "how is the rollout going": the service picks the only active one, or asks.
    Current,
    /// "stop all rollouts", "cancel everything": every active rollout, confirmed once. Only
    /// "all", "every", "each" or "everything" words ask for it.
    AllActive,
}
