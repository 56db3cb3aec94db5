//! The OTA job as a device sees it: the job document delivered through the AWS IoT Jobs MQTT
//! API, its validation, and the status updates the device sends back.
//!
//! A document is validated completely before a single byte is written to flash: a device
//! must be able to refuse a job with a precise reason code (AWS's `REJECTED` status with
//! `statusDetails.reason`) instead of half-applying it. Codes are stable strings because the
//! jobs engine and operators match on them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::catalog::Sha256Digest;
use crate::names::{DeviceType, JobId};
use crate::signing::{FirmwareSignature, KeyId};
use crate::version::FirmwareVersion;

/// The only `operation` this device understands.
pub const OPERATION: &str = "ota_update";

/// Longest URL accepted. S3 pre-signed URLs with a session token run to about 1.5 KB.
pub const MAX_URL_LEN: usize = 4096;

/// A validated `ota_update` job: everything needed to fetch, check and install one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateJob {
    pub job_id: JobId,
    pub device_type: DeviceType,
    pub version: FirmwareVersion,
    /// The operator asked for an older version on purpose.
    pub rollback: bool,
    pub firmware: FirmwareSource,
}

/// Where the image is and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareSource {
    /// `http` or `https`; on AWS the pre-signed S3 URL that replaced the placeholder.
    pub url: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// ECDSA P-256 over `sha256`; verified over the digest the device computes, before the
    /// boot slot switches. `None`: unsigned (refused by a device that trusts any key).
    pub signature: Option<FirmwareSignature>,
    /// The image's anti-rollback counter (`firmware.securityVersion`, default 0).
    pub security_version: u32,
}

/// Why a job is refused before anything is written. [`Rejection::code`] is what goes into
/// `statusDetails.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("the job document is malformed: {0}")]
    Malformed(String),
    #[error("operation {0:?} is not {OPERATION:?}")]
    UnsupportedOperation(String),
    #[error("the job is for device type {job:?}, this device is {device}")]
    WrongDeviceType { job: String, device: DeviceType },
    #[error("version {0:?} is not a firmware version")]
    InvalidVersion(String),
    #[error("firmware.sha256 {0:?} is not 64 hex characters")]
    InvalidSha256(String),
    #[error("firmware.size must be greater than 0")]
    EmptyImage,
    #[error("the image has {size} bytes but the update slot holds {slot_size}")]
    TooLarge { size: u64, slot_size: u64 },
    #[error("firmware.url must be http or https: {0:?}")]
    UnsupportedUrl(String),
    #[error("version {target} is older than the running {running} and the job is not a rollback")]
    Downgrade { running: FirmwareVersion, target: FirmwareVersion },
    #[error("this device requires security version {floor} or higher; {version} has {image}")]
    SecurityVersionTooLow { floor: u32, version: FirmwareVersion, image: u32 },
}

impl Rejection {
    /// The stable reason code reported in `statusDetails.reason`.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed_document",
            Rejection::UnsupportedOperation(_) => "unsupported_operation",
            Rejection::WrongDeviceType { .. } => "wrong_device_type",
            Rejection::InvalidVersion(_) => "invalid_version",
            Rejection::InvalidSha256(_) => "invalid_sha256",
            Rejection::EmptyImage => "invalid_size",
            Rejection::TooLarge { .. } => "image_too_large",
            Rejection::UnsupportedUrl(_) => "unsupported_url",
            Rejection::Downgrade { .. } => "downgrade_not_allowed",
            Rejection::SecurityVersionTooLow { .. } => "security_version_too_low",
        }
    }
}

/// The job document as it travels: what the jobs engine (local) and AWS IoT Jobs (`ota-aws`)
/// send, and what a device parses before [`validate`] turns it into an [`UpdateJob`]. One
/// type for both directions, so the builders and the device cannot drift apart.
///
/// Strings stay strings here (each is checked by [`validate`] with its own reason code) and
/// borrow from the parsed [`serde_json::Value`] where they can, so the device copies only
/// what it keeps. Unknown fields are ignored so the cloud can add fields without breaking
/// devices in the field. `signature` and `securityVersion` are left out when absent or 0, so
/// an unsigned document is exactly what it was before they existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDocument<'a> {
    #[serde(borrow)]
    pub operation: Cow<'a, str>,
    #[serde(borrow)]
    pub device_type: Cow<'a, str>,
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// The operator asked for an older version on purpose.
    #[serde(default)]
    pub rollback: bool,
    #[serde(borrow)]
    pub firmware: JobFirmware<'a>,
}

/// `firmware` of a [`JobDocument`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobFirmware<'a> {
    #[serde(borrow)]
    pub url: Cow<'a, str>,
    pub size: u64,
    /// 64 lowercase hex characters.
    #[serde(borrow)]
    pub sha256: Cow<'a, str>,
    /// `{alg, keyId, value}` (the job spelling; `key_id` is accepted too).
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "job_signature")]
    pub signature: Option<FirmwareSignature>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub security_version: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Writes a signature with the job document's `keyId` (metadata.json says `key_id`).
fn job_signature<S: serde::Serializer>(sig: &Option<FirmwareSignature>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Job<'a> {
        alg: &'a str,
        key_id: &'a KeyId,
        value: &'a str,
    }
    match sig {
        Some(sig) => Job { alg: &sig.alg, key_id: &sig.key_id, value: &sig.value }.serialize(s),
        None => s.serialize_none(),
    }
}

impl JobDocument<'static> {
    /// The `ota_update` document that installs `firmware` as `version` of `device_type`.
    pub fn update(
        device_type: &DeviceType,
        version: &FirmwareVersion,
        rollback: bool,
        firmware: FirmwareSource,
    ) -> Self {
        JobDocument {
            operation: Cow::Borrowed(OPERATION),
            device_type: Cow::Owned(device_type.as_str().to_string()),
            version: Cow::Owned(version.to_string()),
            rollback,
            firmware: JobFirmware {
                url: Cow::Owned(firmware.url),
                size: firmware.size,
                sha256: Cow::Owned(firmware.sha256.to_hex()),
                signature: firmware.signature,
                security_version: firmware.security_version,
            },
        }
    }
}

impl JobDocument<'_> {
    /// The document as JSON (what goes into `jobDocument`).
    pub fn to_value(&self) -> serde_json::Value {
        // Plain strings, numbers and a map: serializing cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Validates a job document for a device of type `own_type` whose update slot holds
/// `slot_size` bytes. Checks run in a fixed order so the reason is predictable.
pub fn validate(
    job_id: JobId,
    document: &serde_json::Value,
    own_type: &DeviceType,
    slot_size: u64,
) -> Result<UpdateJob, Rejection> {
    let raw = JobDocument::deserialize(document).map_err(|e| Rejection::Malformed(e.to_string()))?;
    if raw.operation != OPERATION {
        return Err(Rejection::UnsupportedOperation(raw.operation.into_owned()));
    }
    if raw.device_type != own_type.as_str() {
        return Err(Rejection::WrongDeviceType { job: raw.device_type.into_owned(), device: own_type.clone() });
    }
    let version =
        FirmwareVersion::parse(&raw.version).map_err(|_| Rejection::InvalidVersion(raw.version.to_string()))?;
    let sha256 = Sha256Digest::parse_hex(&raw.firmware.sha256)
        .map_err(|_| Rejection::InvalidSha256(raw.firmware.sha256.to_string()))?;
    let size = raw.firmware.size;
    if size == 0 {
        return Err(Rejection::EmptyImage);
    }
    if size > slot_size {
        return Err(Rejection::TooLarge { size, slot_size });
    }
    check_url(&raw.firmware.url)?;
    Ok(UpdateJob {
        job_id,
        device_type: own_type.clone(),
        version,
        rollback: raw.rollback,
        firmware: FirmwareSource {
            url: raw.firmware.url.into_owned(),
            size,
            sha256,
            signature: raw.firmware.signature,
            security_version: raw.firmware.security_version,
        },
    })
}

/// Accepts `http://host...` and `https://host...` only. `file:`, `ftp:` and friends would
/// let a job point the device at something other than a web server.
fn check_url(url: &str) -> Result<(), Rejection> {
    let bad = || Rejection::UnsupportedUrl(truncate(url));
    if url.len() > MAX_URL_LEN || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad());
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(bad());
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// One job execution as the Jobs API delivers it on `notify-next` and `$next/get/accepted`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobExecution {
    pub job_id: JobId,
    /// `QUEUED` or `IN_PROGRESS` (a device that lost power mid-update sees its own job again).
    pub status: String,
    /// The raw document; [`validate`] turns it into an [`UpdateJob`].
    pub document: serde_json::Value,
}

#[derive(Deserialize)]
struct RawExecutionMessage {
    #[serde(default)]
    execution: Option<RawExecution>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExecution {
    job_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    job_document: serde_json::Value,
}

/// Parses a `notify-next` or `$next/get/accepted` payload. `Ok(None)`: no pending job.
/// An execution whose job id is invalid is an error: the device could not even answer it.
pub fn parse_execution(payload: &[u8]) -> Result<Option<JobExecution>, String> {
    let msg: RawExecutionMessage = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let Some(exec) = msg.execution else { return Ok(None) };
    let job_id = JobId::parse(&exec.job_id).map_err(|e| e.to_string())?;
    Ok(Some(JobExecution { job_id, status: exec.status, document: exec.job_document }))
}

/// A job execution status a device may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    InProgress,
    Succeeded,
    Failed,
    Rejected,
}

impl JobStatus {
    /// The Jobs API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::InProgress => "IN_PROGRESS",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Rejected => "REJECTED",
        }
    }

    /// Whether the job execution ends with this status.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::InProgress)
    }
}

/// The payload of `$aws/things/{thing}/jobs/{jobId}/update`. `statusDetails` values are
/// strings because AWS refuses anything else there.
pub fn status_update_payload(status: JobStatus, details: &[(&str, String)]) -> String {
    let details: serde_json::Map<String, serde_json::Value> =
        details.iter().map(|(k, v)| ((*k).to_string(), serde_json::Value::String(v.clone()))).collect();
    serde_json::json!({ "status": status.as_str(), "statusDetails": details }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ty() -> DeviceType {
        DeviceType::parse("pet_feeder").unwrap()
    }

    fn doc() -> serde_json::Value {
        json!({
            "operation": "ota_update",
            "deviceType": "pet_feeder",
            "version": "2.0.0",
            "rollback": false,
            "firmware": { "url": "https://bucket.s3.amazonaws.com/v2.0.0/pet_feeder/firmware.bin?X-Amz-Signature=ab",
                          "size": 1000, "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }
        })
    }

    fn check(d: &serde_json::Value) -> Result<UpdateJob, Rejection> {
        validate(JobId::parse("job-1").unwrap(), d, &ty(), 4096)
    }

    #[test]
    fn a_good_document_validates() {
        let job = check(&doc()).unwrap();
        assert_eq!(job.version, FirmwareVersion::new(2, 0, 0));
        assert_eq!(job.firmware.size, 1000);
        assert!(!job.rollback);
        assert_eq!((job.firmware.signature, job.firmware.security_version), (None, 0));
        let mut d = doc();
        d["firmware"]["securityVersion"] = json!(3);
        d["firmware"]["signature"] =
            json!({"alg": "ecdsa-p256-sha256", "keyId": "00112233445566778899aabbccddeeff", "value": "MEUCIQ=="});
        let job = check(&d).unwrap();
        assert_eq!(job.firmware.security_version, 3);
        assert_eq!(job.firmware.signature.unwrap().key_id.to_hex(), "00112233445566778899aabbccddeeff");
        let mut d = doc();
        d["firmware"]["url"] = json!("http://127.0.0.1:8080/firmware.bin");
        d["extraField"] = json!({"ignored": true});
        assert!(check(&d).is_ok());
    }

    #[test]
    fn a_built_document_validates_back_to_what_was_built() {
        let signature: FirmwareSignature = serde_json::from_value(
            json!({"alg": "ecdsa-p256-sha256", "key_id": "00112233445566778899aabbccddeeff", "value": "MEUCIQ=="}),
        )
        .unwrap();
        let source = FirmwareSource {
            url: "https://h/fw.bin".into(),
            size: 1000,
            sha256: Sha256Digest([7; 32]),
            signature: Some(signature),
            security_version: 2,
        };
        let built = JobDocument::update(&ty(), &FirmwareVersion::new(1, 2, 3), true, source.clone()).to_value();
        assert_eq!(built["firmware"]["signature"]["keyId"], "00112233445566778899aabbccddeeff", "{built}");
        assert_eq!(built["firmware"]["securityVersion"], 2);
        let job = check(&built).unwrap();
        assert_eq!((job.version, job.rollback, job.firmware), (FirmwareVersion::new(1, 2, 3), true, source.clone()));
        // Parsed from bytes (escapes cannot borrow) and from a value, the same document.
        let text = built.to_string();
        let from_text: JobDocument<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(from_text, JobDocument::deserialize(&built).unwrap());

        // Unsigned and at security version 0: the document of before signatures, field for field.
        let plain = FirmwareSource { signature: None, security_version: 0, ..source };
        let built = JobDocument::update(&ty(), &FirmwareVersion::new(2, 0, 0), false, plain).to_value();
        let old = json!({
            "operation": "ota_update", "deviceType": "pet_feeder", "version": "2.0.0", "rollback": false,
            "firmware": {"url": "https://h/fw.bin", "size": 1000, "sha256": Sha256Digest([7; 32]).to_hex()},
        });
        assert_eq!(built.to_string(), old.to_string());
    }

    #[test]
    fn each_defect_has_its_reason_code() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("operation", json!("format_disk"), "unsupported_operation"),
            ("deviceType", json!("smart_plug"), "wrong_device_type"),
            ("deviceType", json!("../etc"), "wrong_device_type"),
            ("version", json!("two"), "invalid_version"),
            ("version", json!(2), "malformed_document"),
        ];
        for (field, value, code) in cases {
            let mut d = doc();
            d[field] = value.clone();
            assert_eq!(check(&d).unwrap_err().code(), code, "{field} = {value}");
        }
        let fw_cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("sha256", json!("abc"), "invalid_sha256"),
            ("sha256", json!("zz".repeat(32)), "invalid_sha256"),
            ("size", json!(0), "invalid_size"),
            ("size", json!(4097), "image_too_large"),
            ("size", json!(-1), "malformed_document"),
            ("signature", json!("c2lnbmF0dXJl"), "malformed_document"),
            ("signature", json!({"alg": "ecdsa-p256-sha256", "keyId": "short", "value": ""}), "malformed_document"),
            ("securityVersion", json!(-1), "malformed_document"),
            ("url", json!("ftp://example.com/fw.bin"), "unsupported_url"),
            ("url", json!("file:///etc/passwd"), "unsupported_url"),
            ("url", json!("https://"), "unsupported_url"),
            ("url", json!("https://host/a b"), "unsupported_url"),
            ("url", json!("example.com/fw.bin"), "unsupported_url"),
        ];
        for (field, value, code) in fw_cases {
            let mut d = doc();
            d["firmware"][field] = value.clone();
            assert_eq!(check(&d).unwrap_err().code(), code, "firmware.{field} = {value}");
        }
        assert_eq!(check(&json!("not an object")).unwrap_err().code(), "malformed_document");
        assert_eq!(check(&json!({"operation": "ota_update"})).unwrap_err().code(), "malformed_document");
    }

    #[test]
    fn executions_parse_with_and_without_a_job() {
        let msg = json!({"timestamp": 1, "execution": {"jobId": "update-pet_feeder-2_0_0-ab", "status": "QUEUED",
                         "versionNumber": 1, "jobDocument": doc()}});
        let exec = parse_execution(msg.to_string().as_bytes()).unwrap().unwrap();
        assert_eq!(exec.job_id.as_str(), "update-pet_feeder-2_0_0-ab");
        assert_eq!(exec.status, "QUEUED");
        assert_eq!(exec.document, doc());
        assert_eq!(parse_execution(br#"{"timestamp":1}"#).unwrap(), None);
        assert!(parse_execution(br#"{"execution":{"jobId":"bad id!"}}"#).is_err());
        assert!(parse_execution(b"not json").is_err());
    }

    #[test]
    fn status_details_are_strings() {
        let p = status_update_payload(JobStatus::Failed, &[("reason", "sha256_mismatch".into()), ("n", 5.to_string())]);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["status"], "FAILED");
        assert!(v["statusDetails"].as_object().unwrap().values().all(|v| v.is_string()), "{p}");
        assert!(JobStatus::Rejected.is_terminal() && !JobStatus::InProgress.is_terminal());
    }
}
