//! A firmware signer whose private key never leaves AWS KMS: the second
//! [`FirmwareSigner`] next to `ota_core::signing::LocalSigningKey`.
//!
//! The key must be an asymmetric `ECC_NIST_P256` key with usage `SIGN_VERIFY`
//! (`aws kms create-key --key-spec ECC_NIST_P256 --key-usage SIGN_VERIFY`). `Sign` with
//! `ECDSA_SHA_256` and `MessageType: DIGEST` over the image's SHA-256 returns a DER ECDSA
//! signature, which is exactly what `firmware.sig` holds, so an image signed here verifies
//! on the device like one signed with a local key. The key id is computed from the key's
//! public half (`GetPublicKey`, a DER `SubjectPublicKeyInfo`) by ota-core's rule, so the id
//! in `settings.json`'s `trusted_keys` is the same whether the key is local or in KMS:
//! `aws kms get-public-key --key-id K --query PublicKey --output text | base64 -d | sha256sum`,
//! first 32 hex characters.

use std::fmt;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use ota_core::catalog::Sha256Digest;
use ota_core::signing::{FirmwareSignature, FirmwareSigner, KeyId, KeyRing, TrustedKey};
use ota_core::{Error, Result};
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;

use crate::AwsSettings;
use crate::errors::{AwsFailure, aws};

/// Signs firmware digests with one KMS key. Built by [`KmsSigner::connect`], which checks the
/// key once; every signature is checked against the key's public half before it is returned.
#[derive(Clone)]
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    /// The key as `GetPublicKey` resolved it (its ARN on AWS; moto answers the bare key id):
    /// an alias given to [`KmsSigner::connect`] cannot be repointed under a running signer.
    arn: String,
    public: TrustedKey,
}

impl fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KmsSigner({} {})", self.public.id, self.arn)
    }
}

impl KmsSigner {
    /// Looks `key` up (a key id, key ARN, alias name or alias ARN) and refuses a key that is
    /// not `ECC_NIST_P256` with usage `SIGN_VERIFY`, saying what it is instead.
    pub async fn connect(client: aws_sdk_kms::Client, key: &str) -> Result<Self> {
        if key.trim().is_empty() {
            return Err(Error::invalid("KMS key", key, "expected a key id, key ARN or alias (alias/NAME)"));
        }
        let out =
            client.get_public_key().key_id(key).send().await.map_err(|e| kms_error(aws("kms:GetPublicKey")(e), key))?;
        // AWS answers both `KeySpec` and its deprecated twin `CustomerMasterKeySpec`; some
        // emulators (moto) only the latter, with the same values.
        #[allow(deprecated)]
        let legacy = out.customer_master_key_spec().map(|s| s.as_str());
        let spec = out.key_spec().map(KeySpec::as_str).or(legacy).unwrap_or("(no key spec)");
        let usage = out.key_usage().map(KeyUsageType::as_str).unwrap_or("(no key usage)");
        if spec != KeySpec::EccNistP256.as_str() || out.key_usage() != Some(&KeyUsageType::SignVerify) {
            return Err(Error::invalid(
                "KMS key",
                key,
                format!(
                    "is {spec} with usage {usage}; firmware is signed with ECDSA P-256, so the key must be \
                     ECC_NIST_P256 with usage SIGN_VERIFY (aws kms create-key --key-spec ECC_NIST_P256 \
                     --key-usage SIGN_VERIFY)"
                ),
            ));
        }
        let algorithms = out.signing_algorithms();
        if !algorithms.is_empty() && !algorithms.contains(&SigningAlgorithmSpec::EcdsaSha256) {
            return Err(Error::invalid("KMS key", key, "does not offer the ECDSA_SHA_256 signing algorithm"));
        }
        let der = out.public_key().map(Blob::as_ref).unwrap_or_default();
        let public = public_key_from_der(der).map_err(|reason| Error::invalid("KMS key", key, reason))?;
        let arn = out.key_id().unwrap_or(key).to_string();
        Ok(KmsSigner { client, arn, public })
    }

    /// [`KmsSigner::connect`] with a KMS client for `settings` (region, endpoint, retries as
    /// [`crate::AwsClients::load`] sets them): what `ota --backend aws firmware publish --sign
    /// kms:KEY` uses.
    pub async fn load(settings: &AwsSettings, key: &str) -> Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts));
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        Self::connect(aws_sdk_kms::Client::new(&loader.load().await), key).await
    }

    /// The key's ARN as [`KmsSigner::connect`] resolved it (the bare key id on moto).
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The public half, for `settings.json`'s `trusted_keys` and a device's key ring.
    pub fn trusted_key(&self) -> TrustedKey {
        self.public.clone()
    }

    /// The public key's PEM (`-----BEGIN PUBLIC KEY-----`), as `trusted_keys[].public_key` takes it.
    pub fn public_key_pem(&self) -> Result<String> {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        self.public
            .key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::storage(format!("cannot encode the KMS public key: {e}")))
    }
}

/// KMS says a missing key with its own code, `NotFoundException`.
fn kms_error(failure: AwsFailure, key: &str) -> Error {
    if failure.code == "NotFoundException" {
        return Error::not_found("KMS key", key);
    }
    failure.not_found("KMS key", key)
}

/// The trusted key a DER `SubjectPublicKeyInfo` holds, with its id by ota-core's rule.
pub fn public_key_from_der(der: &[u8]) -> std::result::Result<TrustedKey, String> {
    if der.is_empty() {
        return Err("GetPublicKey returned no public key".into());
    }
    let key = VerifyingKey::from_public_key_der(der)
        .map_err(|e| format!("its public key is not a P-256 SubjectPublicKeyInfo ({e})"))?;
    Ok(TrustedKey { id: KeyId::of(&key), key })
}

#[async_trait]
impl FirmwareSigner for KmsSigner {
    fn key_id(&self) -> KeyId {
        self.public.id
    }

    async fn sign(&self, digest: &Sha256Digest) -> Result<FirmwareSignature> {
        let out = self
            .client
            .sign()
            .key_id(&self.arn)
            .message(Blob::new(digest.0.to_vec()))
            .message_type(MessageType::Digest)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| kms_error(aws("kms:Sign")(e), &self.arn))?;
        let der = out.signature().map(Blob::as_ref).unwrap_or_default();
        let signature = FirmwareSignature::from_der(self.public.id, der);
        // A signature that does not verify with the key we computed the id from would be
        // refused by every device; say so here, naming the key, rather than publish it.
        KeyRing::new(vec![self.public.clone()], vec![]).verify(digest, &signature).map_err(|e| {
            Error::storage(format!("kms:Sign with {} returned a signature that does not verify: {e}", self.arn))
        })?;
        Ok(signature)
    }
}
