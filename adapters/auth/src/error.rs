//! Why a token was refused. Each message says what to do about it and never repeats the token:
//! the messages reach logs and `WWW-Authenticate` headers.

/// A refused token, or a verifier that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token at all: the client has to sign in first.
    #[error("no bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    /// Not a JWT this verifier can read (wrong shape, bad base64 or JSON, missing claims).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `exp` is past (beyond the allowed clock skew).
    #[error("token expired: sign in again or create a new token")]
    Expired,
    /// `nbf` is in the future (beyond the allowed clock skew).
    #[error("token not valid yet: check the clock of the machine that issued it")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token from the wrong issuer: expected tokens from `{expected}`")]
    WrongIssuer { expected: String },
    /// Neither `aud` nor `client_id` names this server.
    #[error("token was issued for another audience: expected {expected}")]
    WrongAudience { expected: String },
    /// The signature does not match the key named by `kid`.
    #[error("bad token signature")]
    BadSignature,
    /// The header asks for an algorithm outside the allow-list (RS256, ES256), or one that does not
    /// fit the type of the key it names.
    #[error("unsupported token algorithm `{0}`: only RS256 and ES256 are accepted")]
    UnsupportedAlgorithm(String),
    /// The header names a key (or no key) that the issuer's JWKS does not hold.
    #[error("token signed by an unknown key: the issuer may have rotated keys, reload its JWKS")]
    UnknownKey,
    /// The token is genuine but carries no ota role in the configured claim.
    #[error("token carries no ota role in claim `{claim}` (expected viewer, operator or admin{})", found_suffix(.found))]
    NoRole { claim: String, found: Vec<String> },
    /// The verifier's configuration or key set cannot work.
    #[error("auth configuration: {0}")]
    Config(String),
    /// A token could not be issued (bad subject or lifetime, or the signing failed).
    #[error("cannot issue a token: {0}")]
    Issue(String),
}

fn found_suffix(found: &[String]) -> String {
    if found.is_empty() { String::new() } else { format!("; found {}", found.join(", ")) }
}

impl AuthError {
    /// Whether a token was presented at all. RFC 6750 adds `error="invalid_token"` only then.
    pub fn token_was_given(&self) -> bool {
        !matches!(self, AuthError::Missing)
    }
}
