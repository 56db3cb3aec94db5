//! Devices as the registry knows them: type, group, the firmware version their shadow
//! reports, and connectivity.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::names::{DeviceType, ThingGroupName, ThingName};
use crate::version::FirmwareVersion;

/// One device of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Device {
    pub thing: ThingName,
    pub device_type: DeviceType,
    pub thing_group: ThingGroupName,
    /// `state.reported.firmwareVersion` of the device shadow; `None` until it reports.
    pub firmware_version: Option<FirmwareVersion>,
    pub connected: bool,
    pub last_seen: Option<DateTime<Utc>>,
}

/// A query over the registry. Every field narrows the result; the default matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceQuery {
    pub device_type: Option<DeviceType>,
    pub version: Option<crate::version::VersionFilter>,
    pub connected: Option<bool>,
}

impl DeviceQuery {
    /// Whether `d` passes the query.
    pub fn matches(&self, d: &Device) -> bool {
        self.device_type.as_ref().is_none_or(|t| *t == d.device_type)
            && self.version.as_ref().is_none_or(|f| f.matches(d.firmware_version.as_ref()))
            && self.connected.is_none_or(|c| c == d.connected)
    }
}
