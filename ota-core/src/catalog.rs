//! The firmware catalog's layout and files, identical in an S3 bucket and a local folder:
//!
//! ```text
//! firmwares/v{semver}/{device_type}/firmware.bin
//! firmwares/v{semver}/{device_type}/firmware.sha256   # 64 hex chars, optionally "  firmware.bin"
//! firmwares/v{semver}/{device_type}/metadata.json
//! firmwares/v{semver}/{device_type}/firmware.sig      # optional: the DER ECDSA signature
//! ```
//!
//! A new device type is a new folder; nothing else changes.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::DeviceType;
use crate::signing::FirmwareSignature;
use crate::version::FirmwareVersion;

/// Top-level prefix of the catalog.
pub const CATALOG_PREFIX: &str = "firmwares";
/// The image inside an artifact folder.
pub const IMAGE_FILE: &str = "firmware.bin";
/// The digest file inside an artifact folder.
pub const SHA256_FILE: &str = "firmware.sha256";
/// The metadata file inside an artifact folder.
pub const METADATA_FILE: &str = "metadata.json";
/// The signature file inside an artifact folder (optional; `metadata.json` names its key).
pub const SIGNATURE_FILE: &str = "firmware.sig";

/// One firmware build for one device type: the folder `firmwares/v{version}/{device_type}/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub device_type: DeviceType,
    pub version: FirmwareVersion,
}

impl ArtifactRef {
    /// Names the artifact of `device_type` at `version`.
    pub fn new(device_type: DeviceType, version: FirmwareVersion) -> Self {
        ArtifactRef { device_type, version }
    }

    /// `firmwares/v2.0.0/pet_feeder`, with `/` separators (an S3 prefix or a relative path).
    pub fn folder(&self) -> String {
        format!("{CATALOG_PREFIX}/{}/{}", self.version.folder_name(), self.device_type)
    }

    /// The key of one of the artifact's files.
    pub fn key(&self, file: CatalogFile) -> String {
        format!("{}/{}", self.folder(), file.file_name())
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.device_type, self.version)
    }
}

/// The files of an artifact: three it must have, and the signature it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CatalogFile {
    Image,
    Sha256,
    Metadata,
    Signature,
}

impl CatalogFile {
    /// Every file an artifact must have.
    pub const ALL: [CatalogFile; 3] = [CatalogFile::Image, CatalogFile::Sha256, CatalogFile::Metadata];

    /// The file's name inside the artifact folder.
    pub fn file_name(self) -> &'static str {
        match self {
            CatalogFile::Image => IMAGE_FILE,
            CatalogFile::Sha256 => SHA256_FILE,
            CatalogFile::Metadata => METADATA_FILE,
            CatalogFile::Signature => SIGNATURE_FILE,
        }
    }
}

/// Parses a catalog key such as `firmwares/v2.0.0/pet_feeder/metadata.json`. Keys outside the
/// layout (other prefixes, malformed versions or types, unknown files) give `None`, so a
/// stray object in a bucket never becomes a device type.
pub fn parse_catalog_key(key: &str) -> Option<(ArtifactRef, CatalogFile)> {
    let mut parts = key.split('/');
    let (prefix, version, ty, file) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || prefix != CATALOG_PREFIX || !version.starts_with('v') {
        return None;
    }
    let file = CatalogFile::ALL.into_iter().chain([CatalogFile::Signature]).find(|f| f.file_name() == file)?;
    let artifact = ArtifactRef::new(DeviceType::parse(ty).ok()?, FirmwareVersion::parse(version).ok()?);
    // `V2.0.0` and `v02.0.0` parse but are not the canonical folder; ignore them.
    (artifact.version.folder_name() == version).then_some((artifact, file))
}

/// A SHA-256 digest, printed as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Parses exactly 64 hex characters (either case).
    pub fn parse_hex(s: &str) -> Result<Self> {
        if s.len() != 64 {
            return Err(Error::invalid("sha256", s, format!("expected 64 hex characters, got {}", s.len())));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| Error::invalid("sha256", s, "expected 64 hex characters"))?;
        Ok(Sha256Digest(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse_hex(&s)
    }
}

impl From<Sha256Digest> for String {
    fn from(d: Sha256Digest) -> String {
        d.to_hex()
    }
}

/// Parses the content of `firmware.sha256`: 64 hex characters, optionally followed by
/// whitespace and one file name (`sha256sum` output, with or without its `*` binary marker),
/// and an optional final newline. Anything else is an error.
pub fn parse_sha256_file(content: &str) -> Result<Sha256Digest> {
    const WHAT: &str = "firmware.sha256";
    let body = content.strip_suffix('\n').unwrap_or(content);
    let body = body.strip_suffix('\r').unwrap_or(body);
    if body.contains('\n') {
        return Err(Error::invalid(WHAT, preview(content), "must hold one line"));
    }
    let hex_part =
        body.get(..64).ok_or_else(|| Error::invalid(WHAT, preview(content), "must start with 64 hex characters"))?;
    let digest = Sha256Digest::parse_hex(hex_part)
        .map_err(|_| Error::invalid(WHAT, preview(content), "must start with 64 hex characters"))?;
    let rest = &body[64..];
    if rest.is_empty() {
        return Ok(digest);
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(Error::invalid(
            WHAT,
            preview(content),
            "the digest must be followed by whitespace and a file name, or nothing",
        ));
    }
    let name = rest.trim_start_matches([' ', '\t']);
    let name = name.strip_prefix('*').unwrap_or(name);
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(Error::invalid(WHAT, preview(content), "expected one file name after the digest"));
    }
    Ok(digest)
}

fn preview(s: &str) -> String {
    s.chars().take(80).collect()
}

/// `metadata.json`. Unknown fields are kept (`extra`) and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FirmwareMetadata {
    pub version: FirmwareVersion,
    pub device_type: DeviceType,
    /// Size of `firmware.bin` in bytes.
    pub size: u64,
    pub sha256: Sha256Digest,
    pub built_at: DateTime<Utc>,
    #[serde(default)]
    pub release_notes: String,
    /// The image's signature; `None` for an unsigned artifact (readable; whether it may be
    /// deployed is configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<FirmwareSignature>,
    /// The anti-rollback counter (ESP-IDF's `secure_version`): a device that ran an image of
    /// security version N refuses every image below N.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub security_version: u32,
    /// The commands this firmware answers (`reboot`, `identify`, `recalibrate`, ...); omitted
    /// when none, so metadata written before declarations existed reads and writes unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// The settings it takes: name -> type, bounds or allowed values, default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, serde_json::Value>"))]
    pub settings: BTreeMap<String, crate::command::settings::SettingSpec>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl FirmwareMetadata {
    /// Parses `metadata.json`, naming the artifact in the error.
    pub fn parse(artifact: &ArtifactRef, json: &[u8]) -> Result<Self> {
        serde_json::from_slice(json).map_err(|e| Error::Integrity {
            artifact: artifact.to_string(),
            detail: format!("{METADATA_FILE} is not valid: {e}"),
        })
    }

    /// What the firmware declares it supports.
    pub fn capabilities(&self) -> crate::command::settings::Capabilities {
        crate::command::settings::Capabilities { commands: self.commands.clone(), settings: self.settings.clone() }
    }

    /// Moves `commands` and `settings` given among the extra fields (a publish request's
    /// `extra`) into their fields, when they have the declared shape; otherwise they stay
    /// extra fields, written back as given.
    pub fn lift_declarations(&mut self) {
        if let Some(c) = self.extra.get("commands").and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
        {
            self.commands = c;
            self.extra.remove("commands");
        }
        if let Some(s) = self.extra.get("settings").and_then(|v| serde_json::from_value(v.clone()).ok()) {
            self.settings = s;
            self.extra.remove("settings");
        }
    }

    /// Pretty JSON with a final newline, as published.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The line written to `firmware.sha256` on publish (`sha256sum` format).
pub fn sha256_file_content(digest: &Sha256Digest) -> String {
    format!("{digest}  {IMAGE_FILE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn sha256_file_accepts_the_documented_forms() {
        for ok in [
            HEX.to_string(),
            format!("{HEX}\n"),
            format!("{HEX}  firmware.bin\n"),
            format!("{HEX} *firmware.bin"),
            format!("{HEX}\tfirmware.bin\r\n"),
            HEX.to_uppercase(),
        ] {
            assert_eq!(parse_sha256_file(&ok).unwrap().to_hex(), HEX, "{ok:?}");
        }
    }

    #[test]
    fn sha256_file_rejects_everything_else() {
        for bad in [
            String::new(),
            "abc".to_string(),
            HEX[..63].to_string(),
            format!("{HEX}0"),
            format!("{HEX}  firmware.bin extra"),
            format!("{HEX}\n{HEX}\n"),
            format!(" {HEX}"),
            format!("{}zz", &HEX[..62]),
            format!("{HEX}  "),
        ] {
            assert!(parse_sha256_file(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn catalog_keys_parse_only_inside_the_layout() {
        let (a, f) = parse_catalog_key("firmwares/v2.0.0/pet_feeder/metadata.json").unwrap();
        assert_eq!(a.key(f), "firmwares/v2.0.0/pet_feeder/metadata.json");
        for bad in [
            "firmwares/2.0.0/pet_feeder/metadata.json",
            "firmwares/v2.0/pet_feeder/metadata.json",
            "firmwares/v2.0.0/Pet Feeder/metadata.json",
            "firmwares/v2.0.0/pet_feeder/readme.txt",
            "other/v2.0.0/pet_feeder/firmware.bin",
            "firmwares/v2.0.0/pet_feeder/x/firmware.bin",
            "firmwares/V2.0.0/pet_feeder/firmware.bin",
        ] {
            assert!(parse_catalog_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn metadata_keeps_optional_fields() {
        let a = ArtifactRef::new(DeviceType::parse("pet_feeder").unwrap(), FirmwareVersion::new(2, 0, 0));
        let json = format!(
            r#"{{"version":"2.0.0","device_type":"pet_feeder","size":10,"sha256":"{HEX}","built_at":"2026-01-02T03:04:05Z","board":"xiao_esp32s3"}}"#
        );
        let m = FirmwareMetadata::parse(&a, json.as_bytes()).unwrap();
        assert_eq!(m.extra["board"], "xiao_esp32s3");
        assert_eq!(m.release_notes, "");
        let back = FirmwareMetadata::parse(&a, &m.to_json()).unwrap();
        assert_eq!(back, m);
        assert!(FirmwareMetadata::parse(&a, b"{\"version\":\"2.0.0\"}").is_err());
    }
}
