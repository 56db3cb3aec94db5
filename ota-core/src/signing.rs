//! Firmware signatures: ECDSA P-256 over the image's SHA-256, as AWS IoT code signing does, so
//! the digest a device computes while streaming the image is all it needs to check one.
//!
//! A signature names its key by [`KeyId`], the first 16 bytes of the SHA-256 of the public
//! key's DER `SubjectPublicKeyInfo` (`openssl pkey -pubin -in key.pub -outform DER | sha256sum`,
//! first 32 hex characters). The value is the DER signature `openssl dgst -sha256 -sign` writes,
//! so an image signed here verifies with `openssl dgst -sha256 -verify key.pub -signature
//! firmware.sig firmware.bin`, and one signed there verifies here.
//!
//! Both sides run [`KeyRing::verify`]: the service at publish, plan and start, and the device
//! (default features off) over the digest it computed before it switches the boot slot. It
//! allocates nothing, so a device's memory stays fixed.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::Sha256Digest;
use crate::error::{Error, Result};

/// The one algorithm: ECDSA on P-256 over SHA-256 (AWS code signing's `sig-sha256-ecdsa`).
pub const ALGORITHM: &str = "ecdsa-p256-sha256";

/// The DER prefix of a P-256 `SubjectPublicKeyInfo` before its 65-byte uncompressed point
/// (id-ecPublicKey, prime256v1, BIT STRING of 66 bytes). Fixed, so a key id needs no encoder.
const SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A signing key's name: 32 lowercase hex characters, a digest of its public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        let point = key.to_encoded_point(false);
        let mut h = Sha256::new();
        h.update(SPKI_PREFIX);
        h.update(point.as_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        KeyId(id)
    }

    /// Parses exactly 32 hex characters (either case).
    pub fn parse_hex(s: &str) -> Result<Self> {
        let mut out = [0u8; 16];
        if s.len() != 32 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(Error::invalid("key id", s, "expected 32 hex characters"));
        }
        Ok(KeyId(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

impl TryFrom<String> for KeyId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse_hex(&s)
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.to_hex()
    }
}

/// A signature as `metadata.json` (`signature {alg, key_id, value}`) and the job document
/// (`firmware.signature {alg, keyId, value}`) carry it; `value` is the DER signature in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FirmwareSignature {
    /// Always [`ALGORITHM`]; anything else is refused, never guessed.
    pub alg: String,
    #[serde(alias = "keyId")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub key_id: KeyId,
    /// The DER signature, base64 (standard alphabet, padded).
    pub value: String,
}

impl FirmwareSignature {
    /// The DER bytes of `value`, as `firmware.sig` holds them.
    pub fn der(&self) -> Option<Vec<u8>> {
        BASE64.decode(self.value.as_bytes()).ok()
    }

    /// A signature of `key_id` from DER bytes (`firmware.sig`).
    pub fn from_der(key_id: KeyId, der: &[u8]) -> Self {
        FirmwareSignature { alg: ALGORITHM.to_string(), key_id, value: BASE64.encode(der) }
    }

    /// The job document's spelling (`keyId`).
    pub fn to_job_json(&self) -> serde_json::Value {
        serde_json::json!({ "alg": self.alg, "keyId": self.key_id, "value": self.value })
    }
}

/// Why a signature does not let an image through. Each names the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("the image is not signed and signing is required")]
    Missing,
    #[error("signature algorithm {0:?} is not {ALGORITHM}")]
    UnsupportedAlgorithm(String),
    #[error("key {0} is revoked")]
    Revoked(KeyId),
    #[error("key {0} is not trusted")]
    UntrustedKey(KeyId),
    #[error("the signature by key {0} is not a DER ECDSA signature")]
    Malformed(KeyId),
    #[error("the signature by key {0} does not match the image's sha256")]
    Mismatch(KeyId),
}

impl SignatureError {
    /// The reason code a device reports (`statusDetails.reason`).
    pub const CODE: &'static str = "signature_invalid";

    /// The key the failure is about, if the signature named one.
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            SignatureError::Revoked(k)
            | SignatureError::UntrustedKey(k)
            | SignatureError::Malformed(k)
            | SignatureError::Mismatch(k) => Some(*k),
            SignatureError::Missing | SignatureError::UnsupportedAlgorithm(_) => None,
        }
    }
}

/// A public key trusted to sign firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub id: KeyId,
    pub key: VerifyingKey,
}

impl TrustedKey {
    /// A key from its `-----BEGIN PUBLIC KEY-----` PEM (what `ota keys export` prints).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| Error::invalid("public key", preview(pem), format!("not a P-256 public key PEM ({e})")))?;
        Ok(TrustedKey { id: KeyId::of(&key), key })
    }

    /// A key from its SEC1 encoding (65 bytes uncompressed or 33 compressed), as a device
    /// built with its keys in flash holds them.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self> {
        let key = VerifyingKey::from_sec1_bytes(bytes)
            .map_err(|_| Error::invalid("public key", hex::encode(bytes), "not a P-256 SEC1 point"))?;
        Ok(TrustedKey { id: KeyId::of(&key), key })
    }

    /// Every key of a file of concatenated `PUBLIC KEY` PEM blocks (a device's built-in or
    /// provisioned trust list; text outside the blocks, such as comments, is ignored). A
    /// block that is not a P-256 key is an error, never skipped: a device must not run with
    /// fewer keys than its builder meant.
    pub fn all_from_pem(text: &str) -> Result<Vec<Self>> {
        const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
        const END: &str = "-----END PUBLIC KEY-----";
        let mut keys = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(BEGIN) {
            let block = &rest[start..];
            let Some(end) = block.find(END) else {
                return Err(Error::invalid("public key", preview(block), "a PEM block without its END line"));
            };
            keys.push(TrustedKey::from_pem(&block[..end + END.len()])?);
            rest = &block[end + END.len()..];
        }
        Ok(keys)
    }
}

fn preview(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The keys that may sign firmware, and those that no longer may. Several trusted keys at
/// once is how a key is rotated: trust the new one, sign with it, then revoke the old one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    trusted: Vec<TrustedKey>,
    revoked: Vec<KeyId>,
}

impl KeyRing {
    /// A ring of `trusted` keys less every `revoked` id (revocation wins over trust).
    pub fn new(trusted: Vec<TrustedKey>, revoked: Vec<KeyId>) -> Self {
        KeyRing { trusted, revoked }
    }

    /// The trusted keys, revoked ones included (they are refused by [`KeyRing::verify`]).
    pub fn trusted(&self) -> &[TrustedKey] {
        &self.trusted
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.contains(id)
    }

    /// Checks that `signature` is `digest` signed by a trusted, unrevoked key, and names the
    /// key. Checks run in a fixed order: algorithm, revocation, trust, encoding, the math.
    pub fn verify(&self, digest: &Sha256Digest, signature: &FirmwareSignature) -> Result<KeyId, SignatureError> {
        let id = signature.key_id;
        if signature.alg != ALGORITHM {
            return Err(SignatureError::UnsupportedAlgorithm(signature.alg.clone()));
        }
        if self.is_revoked(&id) {
            return Err(SignatureError::Revoked(id));
        }
        let key = self.trusted.iter().find(|k| k.id == id).ok_or(SignatureError::UntrustedKey(id))?;
        // A DER ECDSA P-256 signature is at most 72 bytes: decode on the stack.
        let mut der = [0u8; 80];
        let n = BASE64.decode_slice(signature.value.as_bytes(), &mut der).map_err(|_| SignatureError::Malformed(id))?;
        let sig = Signature::from_der(&der[..n]).map_err(|_| SignatureError::Malformed(id))?;
        key.key.verify_prehash(&digest.0, &sig).map_err(|_| SignatureError::Mismatch(id))?;
        Ok(id)
    }
}

/// A private signing key held in memory (loaded from the data dir). Signing is deterministic
/// (RFC 6979), so signing the same image twice gives the same signature.
#[derive(Clone)]
pub struct LocalSigningKey {
    key: SigningKey,
    id: KeyId,
}

impl fmt::Debug for LocalSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        write!(f, "LocalSigningKey({})", self.id)
    }
}

impl LocalSigningKey {
    /// A key from 32 secret bytes (a scalar in range); `None` for the rare out-of-range draw.
    pub fn from_bytes(secret: &[u8; 32]) -> Option<Self> {
        let key = SigningKey::from_slice(secret).ok()?;
        let id = KeyId::of(key.verifying_key());
        Some(LocalSigningKey { key, id })
    }

    /// A key from its PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as `openssl genpkey` writes).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| Error::invalid("private key", "(not shown)", format!("not a P-256 PKCS#8 PEM ({e})")))?;
        let id = KeyId::of(key.verifying_key());
        Ok(LocalSigningKey { key, id })
    }

    /// The PKCS#8 PEM of the secret, for the owner-only key file.
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| Error::storage(format!("cannot encode the private key: {e}")))
    }

    /// The public key's PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> Result<String> {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::storage(format!("cannot encode the public key: {e}")))
    }

    /// The key's id.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The public half, as a trusted key.
    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey { id: self.id, key: *self.key.verifying_key() }
    }

    /// Signs an image's digest.
    pub fn sign_digest(&self, digest: &Sha256Digest) -> Result<FirmwareSignature> {
        let sig: Signature =
            self.key.sign_prehash(&digest.0).map_err(|e| Error::storage(format!("signing failed: {e}")))?;
        Ok(FirmwareSignature::from_der(self.id, sig.to_der().as_bytes()))
    }
}

/// Who signs images for the service: a key in the data dir ([`LocalSigningKey`]) or, as a
/// second implementation, a key that never leaves AWS KMS (`Sign` with `ECDSA_SHA_256` over
/// `MessageType: DIGEST` returns exactly this DER signature).
#[cfg(feature = "service")]
#[async_trait::async_trait]
pub trait FirmwareSigner: Send + Sync + fmt::Debug {
    /// The id of the key that signs.
    fn key_id(&self) -> KeyId;
    /// Signs the SHA-256 of an image.
    async fn sign(&self, digest: &Sha256Digest) -> Result<FirmwareSignature>;
}

#[cfg(feature = "service")]
#[async_trait::async_trait]
impl FirmwareSigner for LocalSigningKey {
    fn key_id(&self) -> KeyId {
        self.id
    }
    async fn sign(&self, digest: &Sha256Digest) -> Result<FirmwareSignature> {
        self.sign_digest(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::EncodePublicKey;
    use proptest::prelude::*;

    fn key(seed: u8) -> LocalSigningKey {
        LocalSigningKey::from_bytes(&[seed.max(1); 32]).unwrap()
    }

    fn digest(data: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(data).into())
    }

    #[test]
    fn key_id_is_the_digest_of_the_public_key_der() {
        let k = key(7);
        let der = k.key.verifying_key().to_public_key_der().unwrap();
        let full = hex::encode(Sha256::digest(der.as_bytes()));
        assert_eq!(k.key_id().to_hex(), full[..32]);
        assert_eq!(KeyId::parse_hex(&full[..32]).unwrap(), k.key_id());
        assert!(KeyId::parse_hex(&full[..31]).is_err() && KeyId::parse_hex(&"z".repeat(32)).is_err());
        let pem = k.public_key_pem().unwrap();
        assert_eq!(TrustedKey::from_pem(&pem).unwrap(), k.trusted_key());
        let sec1 = k.key.verifying_key().to_encoded_point(true);
        assert_eq!(TrustedKey::from_sec1(sec1.as_bytes()).unwrap().id, k.key_id());
    }

    #[test]
    fn a_trust_file_yields_every_key_and_refuses_a_broken_block() {
        let (a, b) = (key(3), key(4));
        let file =
            format!("# release keys\n{}\n# rotation\n{}", a.public_key_pem().unwrap(), b.public_key_pem().unwrap());
        let ids: Vec<KeyId> = TrustedKey::all_from_pem(&file).unwrap().into_iter().map(|k| k.id).collect();
        assert_eq!(ids, vec![a.key_id(), b.key_id()]);
        assert!(TrustedKey::all_from_pem("no keys here").unwrap().is_empty());
        let truncated = &file[..file.rfind("-----END").unwrap()];
        assert!(TrustedKey::all_from_pem(truncated).is_err());
        let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(TrustedKey::all_from_pem(garbage).is_err());
    }

    #[test]
    fn each_failure_names_its_key_and_reason() {
        let (good, other) = (key(1), key(2));
        let d = digest(b"image");
        let sig = good.sign_digest(&d).unwrap();
        let ring = KeyRing::new(vec![good.trusted_key()], vec![]);
        assert_eq!(ring.verify(&d, &sig), Ok(good.key_id()));
        assert_eq!(ring.verify(&digest(b"imagf"), &sig), Err(SignatureError::Mismatch(good.key_id())));
        let by_other = other.sign_digest(&d).unwrap();
        assert_eq!(ring.verify(&d, &by_other), Err(SignatureError::UntrustedKey(other.key_id())));
        // A signature by one key relabelled as the trusted key's does not pass either.
        let relabelled = FirmwareSignature { key_id: good.key_id(), ..by_other };
        assert_eq!(ring.verify(&d, &relabelled), Err(SignatureError::Mismatch(good.key_id())));
        let revoked = KeyRing::new(vec![good.trusted_key()], vec![good.key_id()]);
        assert_eq!(revoked.verify(&d, &sig), Err(SignatureError::Revoked(good.key_id())));
        let bad_alg = FirmwareSignature { alg: "rsa".into(), ..sig.clone() };
        assert!(matches!(ring.verify(&d, &bad_alg), Err(SignatureError::UnsupportedAlgorithm(_))));
        let junk = FirmwareSignature { value: "not base64!".into(), ..sig.clone() };
        assert_eq!(ring.verify(&d, &junk), Err(SignatureError::Malformed(good.key_id())));
        let long = FirmwareSignature { value: BASE64.encode([0u8; 200]), ..sig.clone() };
        assert_eq!(ring.verify(&d, &long), Err(SignatureError::Malformed(good.key_id())));
        let msg = SignatureError::Revoked(good.key_id()).to_string();
        assert!(msg.contains(&good.key_id().to_hex()), "{msg}");
    }

    #[test]
    fn rotation_trusts_several_keys() {
        let (old, new) = (key(3), key(4));
        let d = digest(b"image");
        let ring = KeyRing::new(vec![old.trusted_key(), new.trusted_key()], vec![]);
        assert!(ring.verify(&d, &old.sign_digest(&d).unwrap()).is_ok());
        assert!(ring.verify(&d, &new.sign_digest(&d).unwrap()).is_ok());
        let ring = KeyRing::new(vec![old.trusted_key(), new.trusted_key()], vec![old.key_id()]);
        assert!(ring.verify(&d, &old.sign_digest(&d).unwrap()).is_err());
        assert!(ring.verify(&d, &new.sign_digest(&d).unwrap()).is_ok());
    }

    #[test]
    fn pem_round_trip_and_metadata_spelling() {
        let k = key(5);
        let again = LocalSigningKey::from_pkcs8_pem(&k.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(again.key_id(), k.key_id());
        assert!(!format!("{k:?}").contains("PRIVATE"));
        let d = digest(b"x");
        let sig = k.sign_digest(&d).unwrap();
        assert_eq!(sig, again.sign_digest(&d).unwrap(), "RFC 6979 signatures are deterministic");
        let meta: FirmwareSignature = serde_json::from_value(serde_json::to_value(&sig).unwrap()).unwrap();
        let job: FirmwareSignature = serde_json::from_value(sig.to_job_json()).unwrap();
        assert_eq!((meta, job), (sig.clone(), sig.clone()));
        assert_eq!(FirmwareSignature::from_der(sig.key_id, &sig.der().unwrap()), sig);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn only_the_signed_digest_verifies(data in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<usize>()) {
            let k = key(9);
            let d = digest(&data);
            let sig = k.sign_digest(&d).unwrap();
            let ring = KeyRing::new(vec![k.trusted_key()], vec![]);
            prop_assert!(ring.verify(&d, &sig).is_ok());
            let mut other = d;
            other.0[flip % 32] ^= 1 << (flip % 8);
            prop_assert_eq!(ring.verify(&other, &sig), Err(SignatureError::Mismatch(k.key_id())));
            let mut der = sig.der().unwrap();
            let i = flip % der.len();
            der[i] ^= 1 << (flip % 8);
            let tampered = FirmwareSignature::from_der(k.key_id(), &der);
            prop_assert!(ring.verify(&d, &tampered).is_err());
        }
    }
}
