//! Firmware versions (semver), requests for a version ("2", "2.1", "latest") and filters on
//! the version a device runs ("1.x", "older than 2.0.0").

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A firmware version: semver, written `2.0.0` and stored in folders as `v2.0.0`.
///
/// Parsing accepts `v2.0.0`, `V2.0.0` and `2.0.0`. Build metadata (`+abc`) is rejected: two
/// builds differing only in metadata would compare equal, and a catalog must not hold both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FirmwareVersion(semver::Version);

impl FirmwareVersion {
    /// Parses `v2.0.0`, `V2.0.0` or `2.0.0`.
    pub fn parse(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        let bare = trimmed.strip_prefix(['v', 'V']).unwrap_or(trimmed);
        let v = semver::Version::parse(bare).map_err(|e| {
            Error::invalid("firmware version", s, format!("expected MAJOR.MINOR.PATCH such as 2.0.0 ({e})"))
        })?;
        if !v.build.is_empty() {
            return Err(Error::invalid("firmware version", s, "build metadata (+...) is not allowed"));
        }
        Ok(FirmwareVersion(v))
    }

    /// Builds `major.minor.patch`.
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        FirmwareVersion(semver::Version::new(major, minor, patch))
    }

    /// The catalog folder name, `v2.0.0`.
    pub fn folder_name(&self) -> String {
        format!("v{}", self.0)
    }

    /// The underlying semver value.
    pub fn semver(&self) -> &semver::Version {
        &self.0
    }

    /// Whether this is a pre-release (`3.0.0-rc.1`); "latest" never picks one.
    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for FirmwareVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<String> for FirmwareVersion {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<FirmwareVersion> for String {
    fn from(v: FirmwareVersion) -> String {
        v.to_string()
    }
}

/// The version a request asks for, before it is resolved against one type's versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum VersionRequest {
    /// The highest released (non-pre-release) version the type has.
    Latest,
    /// Exactly this version.
    Exact(FirmwareVersion),
    /// `2` or `2.1`: the highest released version with that prefix.
    Partial { major: u64, minor: Option<u64> },
}

impl VersionRequest {
    /// Parses `latest`, `2`, `v2.1`, `2.0.0`.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("latest") {
            return Ok(VersionRequest::Latest);
        }
        let bare = t.strip_prefix(['v', 'V']).unwrap_or(t);
        let parts: Vec<&str> = bare.split('.').collect();
        let num = |p: &str| -> Result<u64> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 18 {
                return Err(Error::invalid("firmware version", s, "expected 2, 2.1, 2.1.0 or latest"));
            }
            p.parse().map_err(|_| Error::invalid("firmware version", s, "number too large"))
        };
        match parts.as_slice() {
            [major] => Ok(VersionRequest::Partial { major: num(major)?, minor: None }),
            [major, minor] => Ok(VersionRequest::Partial { major: num(major)?, minor: Some(num(minor)?) }),
            _ => Ok(VersionRequest::Exact(FirmwareVersion::parse(t)?)),
        }
    }

    /// Picks the version this request means among `available` (any order).
    pub fn resolve<'a>(&self, available: impl IntoIterator<Item = &'a FirmwareVersion>) -> Option<FirmwareVersion> {
        let mut candidates = available.into_iter().filter(|v| match self {
            VersionRequest::Latest => !v.is_prerelease(),
            VersionRequest::Exact(want) => *v == want,
            VersionRequest::Partial { major, minor } => {
                !v.is_prerelease() && v.0.major == *major && minor.is_none_or(|m| v.0.minor == m)
            }
        });
        candidates.try_fold(None::<&FirmwareVersion>, |best, v| Some(Some(best.map_or(v, |b| b.max(v)))))?.cloned()
    }
}

impl fmt::Display for VersionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRequest::Latest => f.write_str("latest"),
            VersionRequest::Exact(v) => v.fmt(f),
            VersionRequest::Partial { major, minor: None } => write!(f, "{major}.x"),
            VersionRequest::Partial { major, minor: Some(m) } => write!(f, "{major}.{m}.x"),
        }
    }
}

/// A condition on the version a device currently runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum VersionFilter {
    /// Runs exactly this version.
    Exact(FirmwareVersion),
    /// Runs `major.x` or `major.minor.x`.
    Prefix { major: u64, minor: Option<u64> },
    /// Runs a version lower than this one.
    Below(FirmwareVersion),
}

impl VersionFilter {
    /// Parses `1.0.0` (exact), `1.x`, `1`, `1.0`, `1.0.x` (prefix), `<2.0.0` (below).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if let Some(rest) = t.strip_prefix('<') {
            return Ok(VersionFilter::Below(FirmwareVersion::parse(rest)?));
        }
        let bare = t.strip_prefix(['v', 'V']).unwrap_or(t);
        let bare = bare.strip_suffix(".x").or_else(|| bare.strip_suffix(".*")).unwrap_or(bare);
        match VersionRequest::parse(bare)? {
            VersionRequest::Exact(v) => Ok(VersionFilter::Exact(v)),
            VersionRequest::Partial { major, minor } => Ok(VersionFilter::Prefix { major, minor }),
            VersionRequest::Latest => Err(Error::invalid("version filter", s, "expected 1.0.0, 1.x or <2.0.0")),
        }
    }

    /// Whether a device running `v` passes. A device that reports no version never passes.
    pub fn matches(&self, v: Option<&FirmwareVersion>) -> bool {
        let Some(v) = v else { return false };
        match self {
            VersionFilter::Exact(want) => v == want,
            VersionFilter::Prefix { major, minor } => v.0.major == *major && minor.is_none_or(|m| v.0.minor == m),
            VersionFilter::Below(limit) => v < limit,
        }
    }
}

impl fmt::Display for VersionFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionFilter::Exact(v) => v.fmt(f),
            VersionFilter::Prefix { major, minor: None } => write!(f, "{major}.x"),
            VersionFilter::Prefix { major, minor: Some(m) } => write!(f, "{major}.{m}.x"),
            VersionFilter::Below(v) => write!(f, "<{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> FirmwareVersion {
        FirmwareVersion::parse(s).unwrap()
    }

    #[test]
    fn accepts_v_prefix_in_either_case() {
        assert_eq!(v("v2.0.0"), v("2.0.0"));
        assert_eq!(v("V2.0.0"), v("2.0.0"));
        assert_eq!(v("2.0.0").folder_name(), "v2.0.0");
        assert_eq!(v("2.0.0-rc.1").to_string(), "2.0.0-rc.1");
    }

    #[test]
    fn rejects_malformed_versions() {
        for bad in ["", "2", "2.0", "two", "2.0.0.0", "v", "../2.0.0", "2.0.0+build5", "2.0.0 beta"] {
            assert!(FirmwareVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partial_requests_resolve_to_the_highest_match() {
        let have = [v("1.0.0"), v("2.0.0"), v("2.1.0"), v("3.0.0-rc.1"), v("2.1.3")];
        assert_eq!(VersionRequest::parse("2").unwrap().resolve(&have), Some(v("2.1.3")));
        assert_eq!(VersionRequest::parse("2.0").unwrap().resolve(&have), Some(v("2.0.0")));
        assert_eq!(VersionRequest::parse("v1").unwrap().resolve(&have), Some(v("1.0.0")));
        assert_eq!(VersionRequest::parse("4").unwrap().resolve(&have), None);
        assert_eq!(VersionRequest::parse("latest").unwrap().resolve(&have), Some(v("2.1.3")));
        assert_eq!(VersionRequest::parse("3.0.0-rc.1").unwrap().resolve(&have), Some(v("3.0.0-rc.1")));
        assert_eq!(VersionRequest::parse("2.0.1").unwrap().resolve(&have), None);
        assert!(VersionRequest::parse("2.x.0").is_err());
    }

    #[test]
    fn filters_match_what_devices_run() {
        let f = VersionFilter::parse("1.x").unwrap();
        assert!(f.matches(Some(&v("1.1.0"))));
        assert!(!f.matches(Some(&v("2.0.0"))));
        assert!(!f.matches(None));
        assert!(VersionFilter::parse("1.0.0").unwrap().matches(Some(&v("1.0.0"))));
        assert!(!VersionFilter::parse("1.0.0").unwrap().matches(Some(&v("1.0.1"))));
        assert!(VersionFilter::parse("1.0").unwrap().matches(Some(&v("1.0.7"))));
        assert!(VersionFilter::parse("<2.0.0").unwrap().matches(Some(&v("1.9.0"))));
        assert!(!VersionFilter::parse("<2.0.0").unwrap().matches(Some(&v("2.0.0"))));
        assert_eq!(VersionFilter::parse("1.x").unwrap().to_string(), "1.x");
    }
}
