//! What a firmware declares it supports (`metadata.json`'s `commands` and `settings`), and
//! the check of a configuration change against it. The device runs the check before it
//! stores anything; the service runs the same check before it sends anything.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The type of one setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingType {
    /// A JSON integer, within `min`..=`max` when given.
    Integer,
    /// Any JSON number, within `min`..=`max` when given.
    Number,
    Boolean,
    /// A string; one of `allowed` when that is not empty.
    String,
    /// A string that must be one of `allowed`.
    Enum,
}

impl SettingType {
    /// The name `metadata.json` spells.
    pub fn as_str(self) -> &'static str {
        match self {
            SettingType::Integer => "integer",
            SettingType::Number => "number",
            SettingType::Boolean => "boolean",
            SettingType::String => "string",
            SettingType::Enum => "enum",
        }
    }
}

/// One declared setting: `{"type": "integer", "min": 1, "max": 3600, "default": 60}` or
/// `{"type": "enum", "allowed": ["error", "warn", "info", "debug"], "default": "info"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    #[serde(rename = "type")]
    pub kind: SettingType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

impl SettingSpec {
    /// An integer setting within `min..=max`.
    pub fn integer(min: i64, max: i64, default: i64) -> Self {
        #[allow(clippy::cast_precision_loss)] // settings bounds are small
        SettingSpec {
            kind: SettingType::Integer,
            min: Some(min as f64),
            max: Some(max as f64),
            allowed: Vec::new(),
            default: Some(default.into()),
        }
    }

    /// An enum setting.
    pub fn one_of(allowed: &[&str], default: &str) -> Self {
        SettingSpec {
            kind: SettingType::Enum,
            min: None,
            max: None,
            allowed: allowed.iter().map(|s| (*s).to_string()).collect(),
            default: Some(default.into()),
        }
    }

    /// Checks `value` for setting `key`.
    pub fn check(&self, key: &str, value: &Value) -> Result<(), SettingError> {
        let wrong = || SettingError::WrongType { key: key.to_string(), expected: self.kind, got: value.to_string() };
        match self.kind {
            SettingType::Integer | SettingType::Number => {
                let n = match self.kind {
                    SettingType::Integer if !(value.is_i64() || value.is_u64()) => return Err(wrong()),
                    _ => value.as_f64().ok_or_else(wrong)?,
                };
                if self.min.is_some_and(|m| n < m) || self.max.is_some_and(|m| n > m) {
                    return Err(SettingError::OutOfBounds {
                        key: key.to_string(),
                        value: value.to_string(),
                        min: self.min,
                        max: self.max,
                    });
                }
            }
            SettingType::Boolean if !value.is_boolean() => return Err(wrong()),
            SettingType::Boolean => {}
            SettingType::String | SettingType::Enum => {
                let s = value.as_str().ok_or_else(wrong)?;
                if (self.kind == SettingType::Enum || !self.allowed.is_empty()) && !self.allowed.iter().any(|a| a == s)
                {
                    return Err(SettingError::NotAllowed {
                        key: key.to_string(),
                        value: value.to_string(),
                        allowed: self.allowed.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Why a setting change was refused. Its `Display` names the key and what it accepts;
/// values are kept as their JSON text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown setting {key:?}; this firmware declares: {}", list(.declared))]
    Unknown { key: String, declared: Vec<String> },
    #[error("setting {key:?} takes {} {}, not {got}", article(.expected), .expected.as_str())]
    WrongType { key: String, expected: SettingType, got: String },
    #[error("setting {key:?} = {value} is out of bounds: {}", Bounds(*.min, *.max))]
    OutOfBounds { key: String, value: String, min: Option<f64>, max: Option<f64> },
    #[error("setting {key:?} = {value} is not allowed; one of: {}", list(.allowed))]
    NotAllowed { key: String, value: String, allowed: Vec<String> },
    #[error("no settings given")]
    Empty,
}

impl SettingError {
    /// The Commands API `reasonCode` (AWS: `[A-Z0-9_-]+`, at most 64 characters).
    pub fn code(&self) -> &'static str {
        match self {
            SettingError::Unknown { .. } => "UNKNOWN_SETTING",
            SettingError::WrongType { .. } => "WRONG_TYPE",
            SettingError::OutOfBounds { .. } => "OUT_OF_BOUNDS",
            SettingError::NotAllowed { .. } => "NOT_ALLOWED",
            SettingError::Empty => "INVALID_REQUEST",
        }
    }

    /// The setting refused, if one was.
    pub fn key(&self) -> Option<&str> {
        match self {
            SettingError::Unknown { key, .. }
            | SettingError::WrongType { key, .. }
            | SettingError::OutOfBounds { key, .. }
            | SettingError::NotAllowed { key, .. } => Some(key),
            SettingError::Empty => None,
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "(none)".to_string() } else { items.join(", ") }
}

fn article(t: &SettingType) -> &'static str {
    match t {
        SettingType::Integer | SettingType::Enum => "an",
        _ => "a",
    }
}

struct Bounds(Option<f64>, Option<f64>);

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(min), Some(max)) => write!(f, "{min} to {max}"),
            (Some(min), None) => write!(f, "at least {min}"),
            (None, Some(max)) => write!(f, "at most {max}"),
            (None, None) => f.write_str("unbounded"),
        }
    }
}

/// What a firmware supports: the commands it answers and the settings it takes. The shape
/// of `metadata.json`'s `commands` and `settings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub settings: BTreeMap<String, SettingSpec>,
}

impl Capabilities {
    /// The demo firmware's: `reboot`, `identify` (and `recalibrate` when `recalibrate`),
    /// `sample_rate_seconds` (integer, 1 to 3600, default 60) and `log_level` (`error`,
    /// `warn`, `info` or `debug`, default `info`).
    pub fn demo(recalibrate: bool) -> Self {
        let mut commands = vec!["reboot".to_string(), "identify".to_string()];
        if recalibrate {
            commands.push("recalibrate".to_string());
        }
        let mut settings = BTreeMap::new();
        settings.insert(SAMPLE_RATE.to_string(), SettingSpec::integer(1, 3600, 60));
        settings.insert("log_level".to_string(), SettingSpec::one_of(&["error", "warn", "info", "debug"], "info"));
        Capabilities { commands, settings }
    }

    /// Whether the firmware answers `command`. `update_config` is answered whenever the
    /// firmware declares a setting (or lists it).
    pub fn supports(&self, command: &str) -> bool {
        self.commands.iter().any(|c| c == command) || (command == UPDATE_CONFIG && !self.settings.is_empty())
    }

    /// Checks every key of `changes`; the first refused key refuses the whole change
    /// (nothing is applied in part).
    pub fn check_config(&self, changes: &Map<String, Value>) -> Result<(), SettingError> {
        if changes.is_empty() {
            return Err(SettingError::Empty);
        }
        for (key, value) in changes {
            let spec = self.settings.get(key).ok_or_else(|| SettingError::Unknown {
                key: key.clone(),
                declared: self.settings.keys().cloned().collect(),
            })?;
            spec.check(key, value)?;
        }
        Ok(())
    }

    /// Every setting's default.
    pub fn defaults(&self) -> Map<String, Value> {
        self.settings.iter().filter_map(|(k, s)| Some((k.clone(), s.default.clone()?))).collect()
    }
}

/// The command that changes settings.
pub const UPDATE_CONFIG: &str = "update_config";

/// The setting that paces telemetry.
pub const SAMPLE_RATE: &str = "sample_rate_seconds";
