//! The integrity check as the service runs it: read `firmware.sha256` and `metadata.json`,
//! stream `firmware.bin` through the verifier, require all three to agree, then check the
//! signature against the trusted keys (`trust.rs`).

use futures::StreamExt;

use super::{FleetManager, VerifyReport};
use crate::auth::Caller;
use crate::authz::{Action, Resource};
use crate::catalog::{ArtifactRef, FirmwareMetadata, parse_sha256_file};
use crate::error::{Error, Result};
use crate::integrity::{Sha256Verifier, VerifiedArtifact, check_artifact};

impl FleetManager {
    /// Hashes the image and checks it against `firmware.sha256` and `metadata.json`.
    pub async fn verify_firmware(&self, caller: &Caller, artifact: &ArtifactRef) -> Result<VerifiedArtifact> {
        let resource = Resource::device_type(artifact.device_type.as_str());
        self.allow(caller, Action::VerifyFirmware, "verify firmware", resource)?;
        self.verify_uncached(artifact).await
    }

    /// Verifies every artifact of the catalog (optionally one type).
    pub async fn verify_catalog(
        &self,
        caller: &Caller,
        device_type: Option<&crate::names::DeviceType>,
    ) -> Result<Vec<VerifyReport>> {
        self.allow(caller, Action::VerifyFirmware, "verify firmware", super::type_resource(device_type))?;
        let mut out = Vec::new();
        for a in self.backend.catalog.artifacts().await? {
            if device_type.is_some_and(|t| *t != a.device_type) {
                continue;
            }
            let r = self.verify_uncached(&a).await;
            out.push(VerifyReport { artifact: a, error: r.as_ref().err().map(ToString::to_string), verified: r.ok() });
        }
        Ok(out)
    }

    /// Verification for planning: cached by the content of the two small files and the
    /// image's fingerprint (S3 ETag, file size and time), so a plan over a large catalog does
    /// not re-hash every image, and an image replaced in place is hashed again. `start`
    /// never uses this.
    pub(crate) async fn verify_for_plan(&self, artifact: &ArtifactRef) -> Result<VerifiedArtifact> {
        let sha = self.read_sha_file(artifact).await?;
        let meta = self.read_meta_file(artifact).await?;
        let fingerprint = self.backend.catalog.image_fingerprint(artifact).await?;
        let key = (artifact.clone(), sha, meta, fingerprint);
        if let Some(v) = super::lock(&self.verified).get(&key) {
            return Ok(v.clone());
        }
        let v = self.verify_uncached(artifact).await?;
        super::lock(&self.verified).insert(key, v.clone());
        Ok(v)
    }

    /// The full check, hashing the image and verifying its signature.
    pub(crate) async fn verify_uncached(&self, artifact: &ArtifactRef) -> Result<VerifiedArtifact> {
        let (verified, metadata) = self.verify_files(artifact).await?;
        self.check_trust(verified, &metadata).await
    }

    /// The three files agree (the image hashed); the signature is not looked at.
    pub(crate) async fn verify_files(&self, artifact: &ArtifactRef) -> Result<(VerifiedArtifact, FirmwareMetadata)> {
        let sha_text = self.read_sha_file(artifact).await?;
        let declared = parse_sha256_file(&sha_text).map_err(|e| Error::Integrity {
            artifact: artifact.to_string(),
            detail: format!("firmware.sha256 is malformed ({e})"),
        })?;
        let metadata = FirmwareMetadata::parse(artifact, &self.read_meta_file(artifact).await?)?;
        let mut stream = self.backend.catalog.open(artifact).await.map_err(|e| missing(artifact, "firmware.bin", e))?;
        let mut verifier = Sha256Verifier::new();
        while let Some(chunk) = stream.next().await {
            verifier.update(&chunk?);
        }
        let (computed, size) = verifier.finish();
        let verified = check_artifact(artifact, &declared, &metadata, &computed, size)?;
        Ok((verified, metadata))
    }

    async fn read_sha_file(&self, artifact: &ArtifactRef) -> Result<String> {
        self.backend.catalog.read_sha256(artifact).await.map_err(|e| missing(artifact, "firmware.sha256", e))
    }

    async fn read_meta_file(&self, artifact: &ArtifactRef) -> Result<Vec<u8>> {
        self.backend.catalog.read_metadata(artifact).await.map_err(|e| missing(artifact, "metadata.json", e))
    }
}

/// A missing file of an artifact is an integrity failure of that artifact.
fn missing(artifact: &ArtifactRef, file: &str, e: Error) -> Error {
    match e {
        Error::NotFound { .. } => {
            Error::Integrity { artifact: artifact.to_string(), detail: format!("{file} is missing") }
        }
        other => other,
    }
}
