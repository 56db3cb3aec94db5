//! Trust in firmware signatures, as configuration: which keys may sign (several at once, for
//! rotation), which are revoked, and whether an unsigned image may be deployed at all. The
//! service checks an artifact's signature at publish, at plan and at start (start re-hashes
//! the image and verifies again); a failure is an `Integrity` refusal naming the key and why.

use serde::{Deserialize, Serialize};

use super::FleetManager;
use crate::audit::AuditOutcome;
use crate::auth::Caller;
use crate::authz::{self, Resource};
use crate::catalog::{ArtifactRef, FirmwareMetadata, Sha256Digest};
use crate::error::{Error, Result};
use crate::integrity::VerifiedArtifact;
use crate::signing::{FirmwareSignature, FirmwareSigner, KeyId, KeyRing, SignatureError, TrustedKey};

/// `settings.json`'s `signing` section. Absent: nothing is required and no key is trusted,
/// so a data dir from before signing keeps working; `ota init` writes `require_signed: true`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningSettings {
    /// Refuse every artifact without a valid signature by a trusted key.
    pub require_signed: bool,
    pub trusted_keys: Vec<TrustedKeySetting>,
    /// Refused even when also trusted: revocation wins.
    pub revoked_keys: Vec<KeyId>,
}

/// One trusted public key. `key_id` is checked against the key when settings load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustedKeySetting {
    pub key_id: KeyId,
    /// A label for people (`ota keys list`), e.g. the key's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `-----BEGIN PUBLIC KEY-----` PEM.
    pub public_key: String,
}

impl SigningSettings {
    /// Every trusted key parses and has the id it is listed under.
    pub fn validate(&self) -> Result<()> {
        self.key_ring().map(|_| ())
    }

    /// The keys as a ring the verifier uses.
    pub fn key_ring(&self) -> Result<KeyRing> {
        let mut keys = Vec::new();
        for k in &self.trusted_keys {
            let key = TrustedKey::from_pem(&k.public_key)?;
            if key.id != k.key_id {
                return Err(Error::invalid(
                    "signing.trusted_keys",
                    k.key_id.to_hex(),
                    format!("the public key listed there has key id {}", key.id),
                ));
            }
            keys.push(key);
        }
        Ok(KeyRing::new(keys, self.revoked_keys.clone()))
    }
}

impl FleetManager {
    /// The signature check on an artifact whose three files already agree: `firmware.sig` and
    /// `metadata.json` must carry the same signature, and it must be the image's digest
    /// signed by a trusted, unrevoked key; an unsigned artifact passes only when signing is
    /// not required. Returns the artifact with the key that signed it.
    pub(crate) async fn check_trust(
        &self,
        mut verified: VerifiedArtifact,
        metadata: &FirmwareMetadata,
    ) -> Result<VerifiedArtifact> {
        let artifact = &verified.artifact;
        let fail = |detail: String| Error::Integrity { artifact: artifact.to_string(), detail };
        let sig_file = self.backend.catalog.read_signature(artifact).await?;
        let signing = &self.settings.signing;
        let Some(signature) = &metadata.signature else {
            if sig_file.is_some() {
                return Err(fail("firmware.sig is present but metadata.json names no signature".into()));
            }
            if signing.require_signed {
                return Err(fail(format!("{}; sign it with `ota firmware sign`", SignatureError::Missing)));
            }
            return Ok(verified);
        };
        match sig_file {
            None => {
                return Err(fail(format!("metadata.json names key {} but firmware.sig is missing", signature.key_id)));
            }
            Some(der) if Some(&der) != signature.der().as_ref() => {
                return Err(fail(format!(
                    "firmware.sig and metadata.json disagree on the signature by key {}",
                    signature.key_id
                )));
            }
            Some(_) => {}
        }
        let ring = signing.key_ring()?;
        let key = ring.verify(&verified.sha256, signature).map_err(|e| fail(signature_refusal(&e)))?;
        verified.signed_by = Some(key);
        verified.signature = Some(signature.clone());
        Ok(verified)
    }

    /// Signs a published artifact with `signer` (admin): the image is hashed and checked
    /// against its two files first, and the signer's key must be trusted. Signing again with
    /// the key that already signed it changes nothing; another key replaces the signature
    /// (rotation). Audited.
    pub async fn sign_firmware(
        &self,
        caller: &Caller,
        artifact: &ArtifactRef,
        signer: &dyn FirmwareSigner,
    ) -> Result<VerifiedArtifact> {
        let request = serde_json::json!({ "artifact": artifact, "key_id": signer.key_id() });
        let context = authz::Context { version: Some(artifact.version.to_string()), ..self.context() };
        let resource = Resource::device_type(artifact.device_type.as_str());
        self.require(caller, authz::Action::SignFirmware, "sign firmware", resource, context, &request).await?;
        let result = self.sign_checked(artifact, signer).await;
        let outcome = match &result {
            Ok((_, true)) => AuditOutcome::Ok(format!("signed {artifact} with key {}", signer.key_id())),
            Ok((_, false)) => AuditOutcome::Ok(format!("{artifact} was already signed by key {}", signer.key_id())),
            Err(e) => AuditOutcome::Refused(e.to_string()),
        };
        self.audit(caller, "sign_firmware", request, None, outcome).await?;
        result.map(|(v, _)| v)
    }

    async fn sign_checked(
        &self,
        artifact: &ArtifactRef,
        signer: &dyn FirmwareSigner,
    ) -> Result<(VerifiedArtifact, bool)> {
        let (verified, mut metadata) = self.verify_files(artifact).await?;
        if let Ok(v) = self.check_trust(verified.clone(), &metadata).await
            && v.signed_by == Some(signer.key_id())
        {
            return Ok((v, false));
        }
        let signature = self.sign_trusted(artifact, &verified.sha256, signer).await?;
        let der =
            signature.der().ok_or_else(|| Error::storage("the signer returned a signature that is not base64"))?;
        metadata.signature = Some(signature);
        self.backend.catalog.write_signature(artifact, der, metadata.to_json()).await?;
        let verified = self.check_trust(verified, &metadata).await?;
        Ok((verified, true))
    }

    /// Signs `digest` and checks the result against the trusted keys before anything is
    /// written, so an untrusted or revoked signer is refused up front.
    pub(crate) async fn sign_trusted(
        &self,
        artifact: &ArtifactRef,
        digest: &Sha256Digest,
        signer: &dyn FirmwareSigner,
    ) -> Result<FirmwareSignature> {
        let signature = signer.sign(digest).await?;
        self.settings.signing.key_ring()?.verify(digest, &signature).map_err(|e| Error::Integrity {
            artifact: artifact.to_string(),
            detail: format!("refusing to sign: {}", signature_refusal(&e)),
        })?;
        Ok(signature)
    }
}

/// The refusal's wording: the reason, which names the key, and what to do about it.
fn signature_refusal(e: &SignatureError) -> String {
    let hint = match e {
        SignatureError::UntrustedKey(_) => "; add it to signing.trusted_keys in the settings to trust it",
        SignatureError::Revoked(_) => "; sign the image with a trusted key",
        SignatureError::Mismatch(_) | SignatureError::Malformed(_) => "; the image or its signature was altered",
        _ => "",
    };
    format!("signature_invalid: {e}{hint}")
}

impl FleetManager {
    /// Anti-rollback: the first devices of `things` whose security floor is above the image's
    /// `security_version`, as a refusal ("pet_feeder-03 requires security version 2 or
    /// higher; 1.0.0 has 1"). A device's floor is the security version of the firmware it
    /// runs (ESP-IDF raises its eFuse counter to that when the image is confirmed). Cheap
    /// when no version of the type has a higher security version: devices are not read.
    pub(crate) async fn security_floor_refusal(
        &self,
        things: &[crate::names::ThingName],
        verified: &VerifiedArtifact,
    ) -> Result<Option<String>> {
        let device_type = &verified.artifact.device_type;
        let floors = self.security_versions(device_type).await?;
        if floors.values().all(|&s| s <= verified.security_version) {
            return Ok(None);
        }
        let query = crate::device::DeviceQuery { device_type: Some(device_type.clone()), ..Default::default() };
        let wanted: std::collections::BTreeSet<_> = things.iter().collect();
        let mut blocked = Vec::new();
        for d in self.backend.registry.list(&query).await? {
            let floor = d.firmware_version.as_ref().and_then(|v| floors.get(v)).copied().unwrap_or(0);
            if floor > verified.security_version && wanted.contains(&d.thing) {
                blocked.push(format!("{} requires security version {floor} or higher", d.thing));
            }
        }
        if blocked.is_empty() {
            return Ok(None);
        }
        let more = if blocked.len() > 3 { format!(" (and {} more)", blocked.len() - 3) } else { String::new() };
        blocked.truncate(3);
        Ok(Some(format!(
            "{}{more}; {} has {}",
            blocked.join(", "),
            verified.artifact.version,
            verified.security_version
        )))
    }

    /// Each catalog version of `device_type` with its `security_version` (0 when its
    /// metadata cannot be read: such a version cannot be deployed anyway).
    pub async fn security_versions(
        &self,
        device_type: &crate::names::DeviceType,
    ) -> Result<std::collections::BTreeMap<crate::version::FirmwareVersion, u32>> {
        let mut out = std::collections::BTreeMap::new();
        for v in self.backend.catalog.versions(device_type).await? {
            let a = ArtifactRef::new(device_type.clone(), v.clone());
            let sv = match self.backend.catalog.read_metadata(&a).await {
                Ok(bytes) => FirmwareMetadata::parse(&a, &bytes).map(|m| m.security_version).unwrap_or(0),
                Err(_) => 0,
            };
            out.insert(v, sv);
        }
        Ok(out)
    }
}
