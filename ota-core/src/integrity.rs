//! Firmware integrity: a streaming SHA-256 verifier with fixed memory, and the catalog check
//! that the computed digest, `firmware.sha256` and `metadata.json` all agree.
//!
//! The same verifier runs on the operator side (before any job is created) and on the device
//! (while the image streams into the inactive slot).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{ArtifactRef, FirmwareMetadata, Sha256Digest};
use crate::error::{Error, Result};
use crate::signing::{FirmwareSignature, KeyId};

/// Hashes bytes as they stream past; memory use does not depend on the image size.
#[derive(Debug, Clone, Default)]
pub struct Sha256Verifier {
    hasher: Sha256,
    bytes: u64,
}

impl Sha256Verifier {
    /// A verifier that has seen no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    /// Bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest and byte count of everything fed.
    pub fn finish(self) -> (Sha256Digest, u64) {
        let out = self.hasher.finalize();
        let mut d = [0u8; 32];
        d.copy_from_slice(&out);
        (Sha256Digest(d), self.bytes)
    }

    /// Compares what was fed with an expected digest and size.
    pub fn verify(self, expected: &Sha256Digest, expected_size: u64) -> Result<(), Mismatch> {
        let (actual, size) = self.finish();
        if size != expected_size {
            return Err(Mismatch::Size { expected: expected_size, actual: size });
        }
        if actual != *expected {
            return Err(Mismatch::Digest { expected: *expected, actual });
        }
        Ok(())
    }
}

impl std::io::Write for Sha256Verifier {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a streamed image does not match what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("expected sha256 {expected} but the image hashes to {actual}")]
    Digest { expected: Sha256Digest, actual: Sha256Digest },
    #[error("expected {expected} bytes but the image has {actual}")]
    Size { expected: u64, actual: u64 },
}

/// An artifact whose three files agreed when it was checked. Only a value of this type can
/// become a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedArtifact {
    pub artifact: ArtifactRef,
    pub sha256: Sha256Digest,
    pub size: u64,
    /// The trusted key whose signature over `sha256` was verified; `None`: unsigned (allowed
    /// only where configuration does not require signing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<KeyId>,
    /// The signature that was verified (set with `signed_by`): what a rollout started from
    /// this artifact puts in its job documents. Not in the JSON form, which names the key.
    #[serde(skip)]
    pub signature: Option<FirmwareSignature>,
    /// `metadata.json`'s `security_version`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub security_version: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Checks that `metadata.json`, `firmware.sha256` and the digest computed over `firmware.bin`
/// agree on the artifact's identity, digest and size. Errors name both digests.
pub fn check_artifact(
    artifact: &ArtifactRef,
    sha256_file: &Sha256Digest,
    metadata: &FirmwareMetadata,
    computed: &Sha256Digest,
    computed_size: u64,
) -> Result<VerifiedArtifact> {
    let fail = |detail: String| Error::Integrity { artifact: artifact.to_string(), detail };
    if metadata.device_type != artifact.device_type || metadata.version != artifact.version {
        return Err(fail(format!(
            "metadata.json describes {} {}, not the folder it is in",
            metadata.device_type, metadata.version
        )));
    }
    if computed != sha256_file {
        return Err(fail(format!("firmware.bin hashes to {computed} but firmware.sha256 says {sha256_file}")));
    }
    if metadata.sha256 != *sha256_file {
        return Err(fail(format!(
            "metadata.json says sha256 {} but firmware.sha256 says {sha256_file}",
            metadata.sha256
        )));
    }
    if metadata.size != computed_size {
        return Err(fail(format!("metadata.json says {} bytes but firmware.bin has {computed_size}", metadata.size)));
    }
    Ok(VerifiedArtifact {
        artifact: artifact.clone(),
        sha256: *computed,
        size: computed_size,
        signed_by: None,
        signature: None,
        security_version: metadata.security_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::DeviceType;
    use crate::version::FirmwareVersion;
    use std::io::Write;

    fn digest(data: &[u8]) -> Sha256Digest {
        let mut v = Sha256Verifier::new();
        v.update(data);
        v.finish().0
    }

    #[test]
    fn streaming_in_chunks_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut v = Sha256Verifier::new();
        for chunk in data.chunks(4093) {
            v.write_all(chunk).unwrap();
        }
        assert_eq!(v.bytes(), 100_000);
        assert_eq!(v.finish().0, digest(&data));
        assert_eq!(digest(b"test").to_hex(), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    }

    #[test]
    fn verify_reports_size_and_digest_mismatches() {
        let good = digest(b"abc");
        let mut v = Sha256Verifier::new();
        v.update(b"abd");
        assert!(matches!(v.verify(&good, 3), Err(Mismatch::Digest { .. })));
        let mut v = Sha256Verifier::new();
        v.update(b"abc");
        assert!(matches!(v.verify(&good, 4), Err(Mismatch::Size { expected: 4, actual: 3 })));
    }

    #[test]
    fn check_names_both_digests() {
        let a = ArtifactRef::new(DeviceType::parse("pet_feeder").unwrap(), FirmwareVersion::new(1, 0, 0));
        let real = digest(b"image");
        let other = digest(b"other");
        let meta = FirmwareMetadata {
            version: a.version.clone(),
            device_type: a.device_type.clone(),
            size: 5,
            sha256: real,
            built_at: chrono::DateTime::UNIX_EPOCH,
            release_notes: String::new(),
            signature: None,
            security_version: 0,
            commands: Vec::new(),
            settings: Default::default(),
            extra: Default::default(),
        };
        assert!(check_artifact(&a, &real, &meta, &real, 5).is_ok());
        let err = check_artifact(&a, &other, &meta, &real, 5).unwrap_err().to_string();
        assert!(err.contains(&real.to_hex()) && err.contains(&other.to_hex()), "{err}");
        let mut m2 = meta.clone();
        m2.sha256 = other;
        let err = check_artifact(&a, &real, &m2, &real, 5).unwrap_err().to_string();
        assert!(err.contains(&real.to_hex()) && err.contains(&other.to_hex()), "{err}");
        assert!(check_artifact(&a, &real, &meta, &real, 6).unwrap_err().to_string().contains("5 bytes"));
        let mut m3 = meta.clone();
        m3.version = FirmwareVersion::new(2, 0, 0);
        assert!(check_artifact(&a, &real, &m3, &real, 5).is_err());
    }
}
