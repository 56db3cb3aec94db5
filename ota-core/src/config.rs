//! The per-type config gate: whether OTA is enabled for a device type, and its policy override.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::names::DeviceType;
use crate::policy::RolloutPolicy;

/// Configuration of one device type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TypeConfig {
    pub device_type: DeviceType,
    pub ota_enabled: bool,
    /// Replaces the default policy for this type when set.
    pub policy: Option<RolloutPolicy>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// Settings of the gate itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateSettings {
    /// Whether a type with no config record may be updated. Off by default: a new type is
    /// disabled until an admin enables it.
    pub enabled_without_record: bool,
    /// The policy for types without an override.
    pub default_policy: RolloutPolicy,
}
