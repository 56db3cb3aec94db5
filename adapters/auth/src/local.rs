//! The embedded default's token issuer: one ES256 key in the data dir signs the tokens that
//! `ota token create` prints, and its public half is what `ota serve` publishes as JWKS. Whoever
//! can read the data dir can mint tokens, exactly as they can already change the database, so the
//! key file is created owner-only and refused when others can read it.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ota_core::auth::Role;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::json;

use crate::{AuthError, JwtVerifier, VerifierConfig};

/// The signing key's file name inside the data dir.
pub const SIGNING_KEY_FILE: &str = "jwt-signing-key.pem";

/// Longest lifetime a local token may have: long-lived tokens belong in a real identity provider.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Signs tokens with the data dir's ES256 key.
pub struct LocalIssuer {
    key: EncodingKey,
    public: Jwk,
    kid: String,
    path: PathBuf,
}

impl fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIssuer").field("kid", &self.kid).field("path", &self.path).finish_non_exhaustive()
    }
}

impl LocalIssuer {
    /// The `iss` of local tokens.
    pub const ISSUER: &'static str = "ota-local";
    /// The `aud` of local tokens.
    pub const AUDIENCE: &'static str = "ota";
    /// The claim local tokens carry their role in.
    pub const ROLES_CLAIM: &'static str = "roles";

    /// Loads `<data_dir>/jwt-signing-key.pem`, creating the directory and a fresh key (mode 0600)
    /// on first use. Two processes starting at once end up with the same key: the file appears
    /// whole or not at all, and the first one written wins. A key file other users can read, or
    /// that is not a P-256 PKCS#8 key, is an error rather than silently replaced.
    pub fn load_or_create(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join(SIGNING_KEY_FILE);
        match fs::read(&path) {
            Ok(pem) => Self::from_file(&pem, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(data_dir)?;
                write_new_key(&path)?;
                let pem = fs::read(&path)?;
                Self::from_file(&pem, path)
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn from_file(pem: &[u8], path: PathBuf) -> io::Result<Self> {
        refuse_if_shared(&path)?;
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
        let key = EncodingKey::from_ec_pem(pem).map_err(|_| invalid("not a PKCS#8 PEM EC private key".into()))?;
        let mut public = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|_| invalid("not a P-256 key (ES256 needs P-256)".into()))?;
        // RFC 7638 thumbprint: stable across restarts and the same for every copy of the key.
        let kid = public.thumbprint(ThumbprintHash::SHA256).map_err(|e| invalid(e.to_string()))?;
        public.common.key_id = Some(kid.clone());
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        public.common.key_algorithm = Some(KeyAlgorithm::ES256);
        Ok(LocalIssuer { key, public, kid, path })
    }

    /// Signs a token for `subject` with `role`, valid from now for `ttl` (1 second to 366 days).
    pub fn issue(&self, subject: &str, role: Role, ttl: Duration) -> Result<String, AuthError> {
        if subject.trim().is_empty() || subject.chars().any(char::is_control) {
            return Err(AuthError::Issue("the subject must be a non-empty name without control characters".into()));
        }
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(AuthError::Issue("the lifetime must be between 1 second and 366 days".into()));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::Issue("the system clock is before 1970".into()))?
            .as_secs();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| AuthError::Issue(format!("no randomness: {e}")))?;
        let claims = json!({
            "iss": Self::ISSUER,
            "aud": Self::AUDIENCE,
            "sub": subject,
            Self::ROLES_CLAIM: [role.to_string()],
            "iat": now,
            "nbf": now,
            "exp": now + ttl.as_secs(),
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| AuthError::Issue(e.to_string()))
    }

    /// The public key as a JWK set (one key, with its `kid`), for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.public.clone()] }
    }

    /// The key id tokens carry: the key's RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// What local tokens say: issuer `ota-local`, audience `ota`, roles in `roles`.
    pub fn config() -> VerifierConfig {
        VerifierConfig {
            audience: Some(Self::AUDIENCE.to_string()),
            roles_claim: Self::ROLES_CLAIM.to_string(),
            ..VerifierConfig::new(Self::ISSUER)
        }
    }

    /// A verifier for this issuer's tokens.
    pub fn verifier(&self) -> JwtVerifier {
        JwtVerifier::new(Self::config(), self.jwks())
            .expect("the local key is one valid ES256 JWK and the config is set")
    }
}

/// Writes a fresh P-256 key to `path` unless one appears there first.
fn write_new_key(path: &Path) -> io::Result<()> {
    let secret = loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        // Fails only for zero or values above the group order: about 2^-128 of draws.
        if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
            break secret;
        }
    };
    let pem = secret.to_pkcs8_pem(LineEnding::LF).map_err(io::Error::other)?;
    // Unique per attempt, so concurrent creators (processes or threads) never share a temp file.
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(io::Error::other)?;
    let tmp = path.with_extension(format!("pem.tmp-{}-{}", std::process::id(), u64::from_le_bytes(nonce)));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(pem.as_bytes())?;
        file.sync_all()
    });
    // A hard link never replaces an existing file: if another process got there first, its key stays.
    let result = result.and_then(|()| match fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = fs::remove_file(&tmp);
    result.map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))
}

#[cfg(unix)]
fn refuse_if_shared(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is readable by other users (mode {:o}): anyone who reads it can mint tokens; run `chmod 600` on it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_if_shared(_path: &Path) -> io::Result<()> {
    Ok(())
}
