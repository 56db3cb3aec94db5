//! The JWT check itself: pick the key by `kid`, insist on an allow-listed algorithm that fits that
//! key, verify the signature, then the claims, then map the roles claim to ota roles.
//!
//! The header is read here before jsonwebtoken sees the token, for two reasons: `alg: none` and
//! HS256 must be refused by name (jsonwebtoken would call the first a parse error), and the
//! algorithm is taken from the key, never from the token, so a token cannot choose how it is
//! checked (the classic HS256-with-the-public-key confusion).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ota_core::auth::{Caller, Role};
use serde_json::{Map, Value};

use crate::AuthError;

/// What a token must say to be accepted. One issuer per verifier: a server that trusts two
/// issuers runs two verifiers and says which in its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// The exact `iss` (for Cognito `https://cognito-idp.<region>.amazonaws.com/<pool id>`).
    pub issuer: String,
    /// When set, accepted if `aud` (a string or an array) contains it.
    pub audience: Option<String>,
    /// When set, accepted if the `client_id` claim equals it: Cognito access tokens carry the app
    /// client there and have no `aud`. With both set, either match is enough.
    pub client_id: Option<String>,
    /// The claim holding roles: an array of strings, or one string separated by spaces or commas.
    /// Values other than `viewer`, `operator` and `admin` become the caller's groups (for policies).
    pub roles_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl VerifierConfig {
    /// The defaults for an issuer: roles in `cognito:groups`, 30 s of leeway, no audience yet
    /// (set `audience` or `client_id` before building a verifier).
    pub fn new(issuer: impl Into<String>) -> Self {
        VerifierConfig {
            issuer: issuer.into(),
            audience: None,
            client_id: None,
            roles_claim: "cognito:groups".to_string(),
            leeway_secs: 30,
        }
    }

    fn validate(&self) -> Result<(), AuthError> {
        if self.issuer.trim().is_empty() {
            return Err(AuthError::Config("the issuer is empty".into()));
        }
        if self.audience.is_none() && self.client_id.is_none() {
            // Without one, any token of the issuer (every app in a Cognito user pool) would pass.
            return Err(AuthError::Config(
                "set an audience or a client id: without one, tokens the issuer made for other applications would be accepted"
                    .into(),
            ));
        }
        if self.roles_claim.trim().is_empty() {
            return Err(AuthError::Config("the roles claim name is empty".into()));
        }
        Ok(())
    }

    fn expected_audience(&self) -> String {
        match (&self.audience, &self.client_id) {
            (Some(a), Some(c)) => format!("aud `{a}` or client_id `{c}`"),
            (Some(a), None) => format!("aud `{a}`"),
            (None, Some(c)) => format!("client_id `{c}`"),
            (None, None) => "an audience".to_string(),
        }
    }
}

/// A verification key and the one algorithm it may be used with.
struct VerificationKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Checks bearer tokens against one issuer's keys. Cheap to share: wrap it in an `Arc`.
pub struct JwtVerifier {
    config: VerifierConfig,
    keys: HashMap<String, VerificationKey>,
    /// The key used for tokens without `kid`, when the set holds exactly one usable key.
    only_key: Option<String>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("JwtVerifier").field("config", &self.config).field("kids", &kids).finish()
    }
}

impl JwtVerifier {
    /// Builds a verifier from the issuer's key set. Keys this verifier would never use (HMAC,
    /// EdDSA, other curves, encryption keys, keys declaring another algorithm) are left out; a set
    /// with no usable key at all is an error, as is a configuration without audience or client id.
    pub fn new(config: VerifierConfig, jwks: JwkSet) -> Result<Self, AuthError> {
        config.validate()?;
        let mut keys = HashMap::new();
        let mut without_kid = 0usize;
        for jwk in &jwks.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
                _ => continue,
            };
            let declared_fits = match jwk.common.key_algorithm {
                None => true,
                Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
                Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
                Some(_) => false,
            };
            if !declared_fits {
                continue;
            }
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| AuthError::Config(format!("JWKS key {:?} is unusable: {e}", jwk.common.key_id)))?;
            let kid = match &jwk.common.key_id {
                Some(kid) => kid.clone(),
                None => {
                    without_kid += 1;
                    String::new()
                }
            };
            if keys.insert(kid.clone(), VerificationKey { algorithm, key }).is_some() {
                return Err(AuthError::Config(format!("the JWKS holds two usable keys with kid `{kid}`")));
            }
        }
        if without_kid > 1 {
            return Err(AuthError::Config("the JWKS holds more than one usable key without a kid".into()));
        }
        if keys.is_empty() {
            return Err(AuthError::Config("the JWKS holds no RS256 or ES256 (P-256) signing key".into()));
        }
        let only_key = (keys.len() == 1).then(|| keys.keys().next().cloned()).flatten();
        Ok(JwtVerifier { config, keys, only_key })
    }

    /// Builds a verifier from the JWKS document as fetched from the issuer (for Cognito
    /// `<issuer>/.well-known/jwks.json`). Fetching is the deployment's job; see the crate docs.
    pub fn from_jwks_json(config: VerifierConfig, jwks_json: &str) -> Result<Self, AuthError> {
        let jwks: JwkSet = serde_json::from_str(jwks_json)
            .map_err(|e| AuthError::Config(format!("the JWKS is not a valid JWK set: {e}")))?;
        Self::new(config, jwks)
    }

    /// What tokens must say to pass.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Verifies signature (key chosen by `kid`, algorithm fixed by the key type and
    /// allow-listed), `iss`, `aud`/`client_id`, `exp` and `nbf` (with leeway), and that at least
    /// one known role is present. The subject is `username`, else `cognito:username`, else `sub`.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = read_header(token)?;
        let named = header.get("alg").and_then(Value::as_str).ok_or_else(|| malformed("the header has no `alg`"))?;
        let algorithm = match named {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => return Err(AuthError::UnsupportedAlgorithm(printable(other))),
        };
        if header.contains_key("crit") {
            return Err(malformed("critical header extensions (`crit`) are not supported"));
        }
        let kid = match header.get("kid") {
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(malformed("`kid` is not a string")),
            None => self.only_key.as_deref(),
        };
        let key = kid.and_then(|kid| self.keys.get(kid)).ok_or(AuthError::UnknownKey)?;
        if key.algorithm != algorithm {
            return Err(AuthError::UnsupportedAlgorithm(format!("{named} with a {:?} key", key.algorithm)));
        }

        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Checked below: jsonwebtoken knows nothing of Cognito's `client_id`.
        validation.validate_aud = false;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| self.map_error(e.into_kind()))?
            .claims;

        self.check_audience(&claims)?;
        let (roles, groups) = self.roles(&claims)?;
        let subject = ["username", "cognito:username", "sub"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .ok_or_else(|| malformed("no subject: none of `username`, `cognito:username`, `sub`"))?;
        Ok(Caller::new(subject, roles).with_groups(groups))
    }

    fn map_error(&self, kind: ErrorKind) -> AuthError {
        match kind {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer { expected: self.config.issuer.clone() },
            ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
                AuthError::BadSignature
            }
            ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::UnsupportedAlgorithm("outside RS256 and ES256".into())
            }
            ErrorKind::MissingRequiredClaim(c) => malformed(&format!("the `{c}` claim is missing")),
            ErrorKind::InvalidClaimFormat(c) => malformed(&format!("the `{c}` claim is not a number of seconds")),
            // Parser messages can quote the token's content: say only where it failed.
            ErrorKind::Base64(_) => malformed("a part is not base64url"),
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => malformed("a part is not JSON"),
            _ => malformed("it is not a signed JWT"),
        }
    }

    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), AuthError> {
        let aud_ok = self.config.audience.as_deref().is_some_and(|want| match claims.get("aud") {
            Some(Value::String(aud)) => aud == want,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(want)),
            _ => false,
        });
        let client_ok = self
            .config
            .client_id
            .as_deref()
            .is_some_and(|want| claims.get("client_id").and_then(Value::as_str) == Some(want));
        if aud_ok || client_ok {
            Ok(())
        } else {
            Err(AuthError::WrongAudience { expected: self.config.expected_audience() })
        }
    }

    /// The ota roles in the roles claim, and its other values (groups such as
    /// `senior_operator`, which policies may use). A token with groups but no role is refused
    /// as before: a group alone makes no one a caller of ota.
    fn roles(&self, claims: &Map<String, Value>) -> Result<(BTreeSet<Role>, BTreeSet<String>), AuthError> {
        let values: Vec<String> = match claims.get(&self.config.roles_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(Value::String(s)) => s.split([' ', ',']).filter(|v| !v.is_empty()).map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let roles: BTreeSet<Role> = values.iter().filter_map(|v| Role::parse(v).ok()).collect();
        if roles.is_empty() {
            // Group names of a verified token, not the token: short and printable only.
            let found: HashSet<String> = values.iter().take(8).map(|v| printable(v)).collect();
            let mut found: Vec<String> = found.into_iter().collect();
            found.sort();
            return Err(AuthError::NoRole { claim: self.config.roles_claim.clone(), found });
        }
        let groups = values.into_iter().filter(|v| Role::parse(v).is_err()).collect();
        Ok((roles, groups))
    }
}

fn malformed(why: &str) -> AuthError {
    AuthError::Malformed(why.to_string())
}

/// The decoded JOSE header, read without trusting anything in it yet.
fn read_header(token: &str) -> Result<Map<String, Value>, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("expected three dot-separated parts (header.payload.signature)"));
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed("the header is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(malformed("the header is not a JSON object")),
    }
}

/// Text from a token, safe to put in a message or a header: printable ASCII, at most 32 chars.
fn printable(s: &str) -> String {
    let clean: String =
        s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').filter(|c| *c != '"' && *c != '\\').take(32).collect();
    if clean.len() < s.len() { format!("{clean}…") } else { clean }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_in_messages_is_short_and_printable() {
        assert_eq!(printable("none"), "none");
        assert_eq!(printable("a\"b\\c\u{7}d"), "abcd…");
        assert_eq!(printable(&"x".repeat(100)), format!("{}…", "x".repeat(32)));
    }

    #[test]
    fn the_header_must_be_a_json_object_in_the_first_of_three_parts() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k"}"#);
        assert_eq!(read_header(&format!("{header}.e30.sig")).unwrap()["kid"], "k");
        assert!(read_header(&format!("{header}.e30")).is_err());
        assert!(read_header("W10.e30.sig").is_err(), "an array is not a header");
        assert!(read_header("%%%.e30.sig").is_err());
    }

    #[test]
    fn config_names_what_audience_it_expects() {
        let both =
            VerifierConfig { audience: Some("ota".into()), client_id: Some("abc".into()), ..VerifierConfig::new("i") };
        assert_eq!(both.expected_audience(), "aud `ota` or client_id `abc`");
        assert_eq!(VerifierConfig::new("i").roles_claim, "cognito:groups");
        assert_eq!(VerifierConfig::new("i").leeway_secs, 30);
    }
}
