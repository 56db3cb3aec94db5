//! Validated names, parsed once at the boundary: device types, things, thing groups, job ids,
//! and the naming convention that maps a device type to its thing group.
//!
//! Every constructor rejects path-like, empty, over-long or otherwise malformed input before
//! anything can reach storage, so `../x` can never become a folder or a key.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest device type accepted. Keeps `{PascalCase}AWSDevice` inside AWS's 128-character
/// thing-group limit and leaves room for the type inside a 64-character job id.
pub const DEVICE_TYPE_MAX_LEN: usize = 64;
/// AWS IoT limit for thing names and thing-group names.
pub const THING_NAME_MAX_LEN: usize = 128;
/// AWS IoT limit for job ids.
pub const JOB_ID_MAX_LEN: usize = 64;

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The validated name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::parse(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }
    };
}

fn check_len(what: &'static str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(what, s, "must not be empty"));
    }
    if s.len() > max {
        return Err(Error::invalid(
            what,
            truncate_for_message(s),
            format!("is {} characters long; at most {max} are allowed", s.len()),
        ));
    }
    Ok(())
}

fn truncate_for_message(s: &str) -> String {
    if s.chars().count() > 40 {
        let head: String = s.chars().take(40).collect();
        format!("{head}...")
    } else {
        s.to_string()
    }
}

fn check_chars(what: &'static str, s: &str, allowed: impl Fn(char) -> bool, rule: &str) -> Result<()> {
    if let Some(bad) = s.chars().find(|c| !allowed(*c)) {
        return Err(Error::invalid(what, truncate_for_message(s), format!("character {bad:?} is not allowed; {rule}")));
    }
    Ok(())
}

/// A device type: the `snake_case` folder name under `firmwares/v{semver}/`.
///
/// Lowercase ASCII letters and digits in words joined by single underscores, starting with a
/// letter, at most [`DEVICE_TYPE_MAX_LEN`] characters: `vision_ai_face_detector`, `esp32_cam`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceType(String);
string_newtype!(DeviceType);

impl DeviceType {
    /// Parses a device type, rejecting anything that is not `snake_case`.
    pub fn parse(s: &str) -> Result<Self> {
        const WHAT: &str = "device type";
        check_len(WHAT, s, DEVICE_TYPE_MAX_LEN)?;
        check_chars(
            WHAT,
            s,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
            "a device type is snake_case: lowercase letters, digits and single underscores",
        )?;
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(Error::invalid(WHAT, s, "must start with a lowercase letter"));
        }
        if s.ends_with('_') || s.contains("__") {
            return Err(Error::invalid(WHAT, s, "words are joined by single underscores"));
        }
        Ok(DeviceType(s.to_string()))
    }

    /// The words of the type: `pet_feeder` → `["pet", "feeder"]`.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.0.split('_')
    }
}

/// An AWS IoT thing name: 1–128 characters of `[a-zA-Z0-9:_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ThingName(String);
string_newtype!(ThingName);

fn aws_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-')
}

impl ThingName {
    /// Parses a thing name with AWS's character rules and length.
    pub fn parse(s: &str) -> Result<Self> {
        check_len("thing name", s, THING_NAME_MAX_LEN)?;
        check_chars("thing name", s, aws_name_char, "use letters, digits, ':', '_' and '-'")?;
        Ok(ThingName(s.to_string()))
    }

    /// The demo convention `{device_type}-{nn}`, when the name follows it.
    pub fn conventional_parts(&self) -> Option<(DeviceType, u32)> {
        let (ty, n) = self.0.rsplit_once('-')?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 9 {
            return None;
        }
        Some((DeviceType::parse(ty).ok()?, n.parse().ok()?))
    }
}

/// An AWS IoT thing-group name: 1–128 characters of `[a-zA-Z0-9:_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ThingGroupName(String);
string_newtype!(ThingGroupName);

impl ThingGroupName {
    /// Parses a thing-group name with AWS's character rules and length.
    pub fn parse(s: &str) -> Result<Self> {
        check_len("thing group name", s, THING_NAME_MAX_LEN)?;
        check_chars("thing group name", s, aws_name_char, "use letters, digits, ':', '_' and '-'")?;
        Ok(ThingGroupName(s.to_string()))
    }
}

/// An AWS IoT job id: 1–64 characters of `[a-zA-Z0-9_-]`. Rollout ids are job ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);
string_newtype!(JobId);

impl JobId {
    /// Parses a job id with AWS's character rules and length.
    pub fn parse(s: &str) -> Result<Self> {
        check_len("job id", s, JOB_ID_MAX_LEN)?;
        check_chars(
            "job id",
            s,
            |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
            "use letters, digits, '_' and '-'",
        )?;
        Ok(JobId(s.to_string()))
    }
}

/// Maps device types to thing groups: `vision_ai_face_detector` ⇄ `VisionAIFaceDetectorAWSDevice`.
///
/// Words become PascalCase, words in `acronyms` are upper-cased, and `suffix` is appended.
/// Where two rendered words would run together ambiguously (`esp32` + `cam`, `cam` + `2`) a
/// `_` is kept between them, so [`NamingConvention::device_type_of`] always inverts
/// [`NamingConvention::thing_group_of`]. Explicit `overrides` win in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamingConvention {
    /// Lowercase words rendered fully upper-case.
    pub acronyms: Vec<String>,
    /// Appended to every generated group name.
    pub suffix: String,
    /// Explicit group names for types that do not follow the convention.
    #[serde(default)]
    pub overrides: BTreeMap<DeviceType, ThingGroupName>,
}

impl Default for NamingConvention {
    fn default() -> Self {
        NamingConvention {
            acronyms: [
                "ai", "aws", "ble", "co2", "esp32", "gps", "ir", "iot", "led", "ml", "pir", "rgb", "rvr", "uart",
                "usb", "uv",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            suffix: "AWSDevice".to_string(),
            overrides: BTreeMap::new(),
        }
    }
}

impl NamingConvention {
    /// The thing group that holds every device of `device_type`.
    pub fn thing_group_of(&self, device_type: &DeviceType) -> ThingGroupName {
        if let Some(g) = self.overrides.get(device_type) {
            return g.clone();
        }
        let mut out = String::new();
        // Start of the current `_`-separated part of `out`, and the words it holds so far.
        let mut part_start = 0;
        let mut part_words: Vec<&str> = Vec::new();
        for word in device_type.words() {
            let rendered = self.render_word(word);
            let mut candidate = out[part_start..].to_string();
            candidate.push_str(&rendered);
            let mut expected = part_words.clone();
            expected.push(word);
            if part_words.is_empty() || segment_lowercase(&candidate) == expected {
                out.push_str(&rendered);
                part_words.push(word);
            } else {
                out.push('_');
                part_start = out.len();
                out.push_str(&rendered);
                part_words = vec![word];
            }
        }
        out.push_str(&self.suffix);
        // A valid device type renders to at most 64 + 31 separators + suffix characters of
        // [A-Za-z0-9_]; a suffix from configuration is validated in `validate`.
        ThingGroupName(out)
    }

    /// The device type whose devices a thing group holds, or an error when the group does not
    /// follow the convention.
    pub fn device_type_of(&self, group: &ThingGroupName) -> Result<DeviceType> {
        if let Some((t, _)) = self.overrides.iter().find(|(_, g)| *g == group) {
            return Ok(t.clone());
        }
        let stem = group.as_str().strip_suffix(self.suffix.as_str()).ok_or_else(|| {
            Error::invalid("thing group name", group.as_str(), format!("does not end with {:?}", self.suffix))
        })?;
        let mut words = Vec::new();
        for part in stem.split('_') {
            words.extend(segment_lowercase(part));
        }
        DeviceType::parse(&words.join("_")).map_err(|_| {
            Error::invalid("thing group name", group.as_str(), "does not name a device type by the naming convention")
        })
    }

    /// Checks a convention read from configuration.
    pub fn validate(&self) -> Result<()> {
        ThingGroupName::parse(&format!("X{}", self.suffix))?;
        for a in &self.acronyms {
            if a.is_empty() || !a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
                return Err(Error::invalid("acronym", a, "acronyms are lowercase words of letters and digits"));
            }
        }
        Ok(())
    }

    fn render_word(&self, word: &str) -> String {
        if self.acronyms.iter().any(|a| a == word) {
            word.to_ascii_uppercase()
        } else {
            let mut c = word.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        }
    }
}

/// Splits a PascalCase run into lowercase words. A word starts at an upper-case letter that
/// follows a lower-case one, or at the last upper-case letter of a run when a lower-case letter
/// follows it (`AIFace` → `ai`, `face`), or at an upper-case letter after a digit when a
/// lower-case letter follows (`CO2Monitor` → `co2`, `monitor`). Digits never start a word.
fn segment_lowercase(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let starts = i > 0
            && c.is_ascii_uppercase()
            && (chars[i - 1].is_ascii_lowercase()
                || ((chars[i - 1].is_ascii_uppercase() || chars[i - 1].is_ascii_digit())
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase())));
        if starts && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn design_examples_map_both_ways() {
        let n = NamingConvention::default();
        for (t, g) in [
            ("vision_ai_face_detector", "VisionAIFaceDetectorAWSDevice"),
            ("pet_feeder", "PetFeederAWSDevice"),
            ("sphero_rvr_bridge", "SpheroRVRBridgeAWSDevice"),
            ("uart_jetson_bridge", "UARTJetsonBridgeAWSDevice"),
            ("co2_monitor", "CO2MonitorAWSDevice"),
            ("led_strip_controller", "LEDStripControllerAWSDevice"),
        ] {
            let t = DeviceType::parse(t).unwrap();
            let g = ThingGroupName::parse(g).unwrap();
            assert_eq!(n.thing_group_of(&t), g);
            assert_eq!(n.device_type_of(&g).unwrap(), t);
        }
    }

    #[test]
    fn ambiguous_joins_keep_a_separator() {
        let n = NamingConvention::default();
        let t = DeviceType::parse("esp32_cam_2").unwrap();
        let g = n.thing_group_of(&t);
        assert_eq!(g.as_str(), "ESP32Cam_2AWSDevice");
        assert_eq!(n.device_type_of(&g).unwrap(), t);
    }

    #[test]
    fn overrides_win_both_ways() {
        let mut n = NamingConvention::default();
        let t = DeviceType::parse("pet_feeder").unwrap();
        let g = ThingGroupName::parse("LegacyFeeders").unwrap();
        n.overrides.insert(t.clone(), g.clone());
        assert_eq!(n.thing_group_of(&t), g);
        assert_eq!(n.device_type_of(&g).unwrap(), t);
    }

    #[test]
    fn groups_outside_the_convention_are_rejected() {
        let n = NamingConvention::default();
        let err = n.device_type_of(&ThingGroupName::parse("Kitchen").unwrap()).unwrap_err();
        assert!(err.to_string().contains("AWSDevice"), "{err}");
    }

    #[test]
    fn malformed_names_are_rejected_with_the_rule() {
        for bad in [
            "",
            "../x",
            "Pet Feeder",
            "pet__feeder",
            "pet_feeder_",
            "_pet",
            "1pet",
            "pet-feeder",
            "PetFeeder",
            "pet/feeder",
        ] {
            let err = DeviceType::parse(bad).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{bad:?}: {err}");
        }
        let long = "a".repeat(300);
        assert!(DeviceType::parse(&long).unwrap_err().to_string().contains("300 characters"));
        assert!(ThingName::parse(&long).is_err());
        assert!(ThingName::parse("../etc/passwd").is_err());
        assert!(ThingName::parse("pet feeder-01").is_err());
        assert!(ThingName::parse("").is_err());
        assert!(ThingName::parse(&"a".repeat(128)).is_ok());
        assert!(ThingGroupName::parse("Pet/Feeder").is_err());
        assert!(JobId::parse("a:b").is_err());
        assert!(JobId::parse(&"a".repeat(65)).is_err());
        assert!(JobId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn conventional_thing_names_split_into_type_and_number() {
        let t = ThingName::parse("pet_feeder-03").unwrap();
        assert_eq!(t.conventional_parts(), Some((DeviceType::parse("pet_feeder").unwrap(), 3)));
        assert_eq!(ThingName::parse("kitchen").unwrap().conventional_parts(), None);
    }

    fn device_type_strategy() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9]{0,6}(_[a-z0-9]{1,5}){0,6}"
    }

    proptest! {
        #[test]
        fn naming_convention_round_trips_for_every_valid_type(
            t in device_type_strategy(),
            acronyms in proptest::collection::vec("[a-z][a-z0-9]{0,3}", 0..6),
        ) {
            let t = DeviceType::parse(&t).unwrap();
            let mut n = NamingConvention::default();
            n.acronyms.extend(acronyms);
            let g = n.thing_group_of(&t);
            prop_assert!(ThingGroupName::parse(g.as_str()).is_ok());
            prop_assert_eq!(n.device_type_of(&g).unwrap(), t);
        }
    }
}
