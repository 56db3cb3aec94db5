//! Devices as the registry knows them: type, group, the firmware version their shadow
//! reports, connectivity, and what device management adds: attributes (`location`), the
//! health the device reports, the operational state operators set, the last telemetry and
//! the configuration (the named shadow `config`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::{DeviceType, ThingGroupName, ThingName};
use crate::version::FirmwareVersion;

/// The attribute that says where a device is, `/`-separated from the outside in
/// (`factory-floor-1/line-7`).
pub const LOCATION: &str = "location";

/// Health as the device reports it: one type on both sides of the link, defined with the
/// device's command machine (it builds without the service).
pub use crate::command::{Health, HealthStatus};

/// The operational state operators set. Devices not `active` are left out of rollouts and
/// commands unless named one by one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OperationalState {
    #[default]
    Active,
    Maintenance,
    Retired,
}

impl OperationalState {
    /// `active`, `maintenance` or `retired`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationalState::Active => "active",
            OperationalState::Maintenance => "maintenance",
            OperationalState::Retired => "retired",
        }
    }

    /// Parses the three names, any case.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "active" => Ok(OperationalState::Active),
            "maintenance" => Ok(OperationalState::Maintenance),
            "retired" => Ok(OperationalState::Retired),
            _ => Err(Error::invalid("state", s, "one of active, maintenance, retired")),
        }
    }

    fn is_active(&self) -> bool {
        *self == OperationalState::Active
    }

    /// Why a device in this state is left out of a rollout or command it was not named in;
    /// `None` when active.
    pub fn hold_back_reason(self) -> Option<&'static str> {
        match self {
            OperationalState::Active => None,
            OperationalState::Maintenance => Some("in maintenance; name it to include it"),
            OperationalState::Retired => Some("retired; name it to include it"),
        }
    }
}

impl std::fmt::Display for OperationalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last telemetry a device sent: a JSON object of metric → value, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Telemetry {
    pub values: serde_json::Map<String, serde_json::Value>,
    pub at: DateTime<Utc>,
}

impl Eq for Telemetry {}

impl Telemetry {
    /// Reads telemetry as a device reports it (`state.reported.telemetry`, or the body of a
    /// message on `dt/ota/{thing}/telemetry`): either `{"values": {...}, "at": "..."}` or a
    /// plain object of metric → value, which is then taken as measured at `received`.
    /// `None` when it is not a JSON object.
    pub fn from_reported(v: &serde_json::Value, received: DateTime<Utc>) -> Option<Self> {
        let obj = v.as_object()?;
        if let Some(serde_json::Value::Object(values)) = obj.get("values") {
            let at = obj
                .get("at")
                .and_then(|a| a.as_str())
                .and_then(|a| DateTime::parse_from_rfc3339(a).ok())
                .map_or(received, |a| a.with_timezone(&Utc));
            return Some(Telemetry { values: values.clone(), at });
        }
        Some(Telemetry { values: obj.clone(), at: received })
    }
}

/// The configuration of the named shadow `config`: what the device reports and what
/// operators want (JSON objects; empty when unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceConfig {
    #[serde(default)]
    pub reported: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub desired: serde_json::Map<String, serde_json::Value>,
}

impl Eq for DeviceConfig {}

impl DeviceConfig {
    fn is_empty(&self) -> bool {
        self.reported.is_empty() && self.desired.is_empty()
    }
}

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
    /// Free keys and values, as AWS thing attributes; [`LOCATION`] says where it is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// What the device last reported of its health; `None` until it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Set by operators; `active` unless one changed it.
    #[serde(default, skip_serializing_if = "OperationalState::is_active")]
    pub state: OperationalState,
    /// The last telemetry; `None` until the device sends some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Telemetry>,
    /// The named shadow `config`.
    #[serde(default, skip_serializing_if = "DeviceConfig::is_empty")]
    pub config: DeviceConfig,
}

impl Device {
    /// A device with only what registration knows; everything device management adds is
    /// empty (no attributes, no health or telemetry yet, `active`). Build records with
    /// `Device { .., ..Device::new(..) }` so fields added later need no edit.
    pub fn new(thing: ThingName, device_type: DeviceType, thing_group: ThingGroupName) -> Self {
        Device {
            thing,
            device_type,
            thing_group,
            firmware_version: None,
            connected: false,
            last_seen: None,
            attributes: BTreeMap::new(),
            health: None,
            state: OperationalState::Active,
            telemetry: None,
            config: DeviceConfig::default(),
        }
    }

    /// The `location` attribute, if set.
    pub fn location(&self) -> Option<&str> {
        self.attributes.get(LOCATION).map(String::as_str)
    }
}

/// A location normalised for comparison: lower case, spaces, hyphens and underscores all
/// one `-`, runs collapsed, `/` kept with no blanks around it. So "Line 7", "line-7" and
/// "LINE_7" are one location, and "Factory Floor 1 / Line 7" is `factory-floor-1/line-7`.
pub fn normalize_location(s: &str) -> String {
    s.split('/')
        .map(|part| {
            let mut out = String::new();
            for word in part.split(|c: char| c.is_whitespace() || c == '-' || c == '_').filter(|w| !w.is_empty()) {
                if !out.is_empty() {
                    out.push('-');
                }
                out.push_str(&word.to_lowercase());
            }
            out
        })
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a device at `location` is at `wanted`: the same location, one inside it
/// (`factory-floor-1` holds `factory-floor-1/line-7`; prefixes stop at `/` boundaries, so
/// `factory-floor-1` does not hold `factory-floor-10`), or, for a `wanted` without a `/`,
/// any location with that segment (`line 7` matches `factory-floor-1/line-7`). Both sides
/// are compared as [`normalize_location`] writes them.
pub fn location_matches(location: &str, wanted: &str) -> bool {
    let have = normalize_location(location);
    let want = normalize_location(wanted);
    if want.is_empty() {
        return false;
    }
    if have == want || have.starts_with(&format!("{want}/")) {
        return true;
    }
    if !want.contains('/') {
        return have.split('/').any(|seg| seg == want);
    }
    // A path below the top ("line-7/bench-2"): matches where it sits inside the location.
    let segs: Vec<&str> = have.split('/').collect();
    let wanted: Vec<&str> = want.split('/').collect();
    segs.windows(wanted.len()).any(|w| w == wanted.as_slice())
}

/// A query over the registry. Every field narrows the result; the default matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceQuery {
    pub device_type: Option<DeviceType>,
    pub version: Option<crate::version::VersionFilter>,
    pub connected: Option<bool>,
    /// Devices at this location or inside it, as [`location_matches`] says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Devices whose last health report has this status (a device that never reported has
    /// none and matches no health filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Devices in this operational state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<OperationalState>,
}

impl DeviceQuery {
    /// Whether `d` passes the query.
    pub fn matches(&self, d: &Device) -> bool {
        self.device_type.as_ref().is_none_or(|t| *t == d.device_type)
            && self.version.as_ref().is_none_or(|f| f.matches(d.firmware_version.as_ref()))
            && self.connected.is_none_or(|c| c == d.connected)
            && self.location.as_ref().is_none_or(|l| d.location().is_some_and(|have| location_matches(have, l)))
            && self.health.is_none_or(|h| d.health.as_ref().is_some_and(|dh| dh.status == h))
            && self.state.is_none_or(|s| s == d.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_match_exactly_by_prefix_at_slashes_and_as_written_by_people() {
        let at = "factory-floor-1/line-7";
        assert!(location_matches(at, "factory-floor-1/line-7"));
        assert!(location_matches(at, "factory-floor-1"));
        assert!(location_matches(at, "Factory Floor 1"));
        assert!(location_matches(at, "line 7"));
        assert!(location_matches(at, "LINE_7"));
        assert!(location_matches(at, "factory floor 1 / line 7"));
        assert!(!location_matches(at, "line 3"));
        assert!(!location_matches(at, "factory-floor"), "a prefix stops at a slash");
        assert!(!location_matches("factory-floor-10", "factory-floor-1"));
        assert!(!location_matches(at, "line"));
        assert!(!location_matches(at, ""));
        assert!(!location_matches("lab", "factory-floor-1"));
    }

    #[test]
    fn old_records_read_with_the_defaults_and_new_fields_are_omitted_when_empty() {
        let old = r#"{"thing":"pet_feeder-01","device_type":"pet_feeder","thing_group":"PetFeederAWSDevice",
                      "firmware_version":"1.0.0","connected":true,"last_seen":null}"#;
        let d: Device = serde_json::from_str(old).unwrap();
        assert_eq!(d.state, OperationalState::Active);
        assert!(d.attributes.is_empty() && d.health.is_none() && d.telemetry.is_none());
        let back = serde_json::to_value(&d).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(old).unwrap());
    }

    #[test]
    fn queries_narrow_by_location_health_and_state() {
        let mut d = Device::new(
            ThingName::parse("co2_monitor-01").unwrap(),
            DeviceType::parse("co2_monitor").unwrap(),
            ThingGroupName::parse("Co2MonitorAWSDevice").unwrap(),
        );
        d.attributes.insert(LOCATION.into(), "factory-floor-1/line-7".into());
        let q = |f: fn(&mut DeviceQuery)| {
            let mut q = DeviceQuery::default();
            f(&mut q);
            q
        };
        assert!(q(|q| q.location = Some("line 7".into())).matches(&d));
        assert!(!q(|q| q.location = Some("lab".into())).matches(&d));
        assert!(!q(|q| q.health = Some(HealthStatus::Ok)).matches(&d), "never reported");
        d.health = Some(Health { status: HealthStatus::Warning, message: "drift".into() });
        assert!(q(|q| q.health = Some(HealthStatus::Warning)).matches(&d));
        assert!(q(|q| q.state = Some(OperationalState::Active)).matches(&d));
        d.state = OperationalState::Maintenance;
        assert!(!q(|q| q.state = Some(OperationalState::Active)).matches(&d));
        assert!(HealthStatus::parse("bogus").is_err() && OperationalState::parse("broken").is_err());
    }
}
