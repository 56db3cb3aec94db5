//! Who is calling, proven by a bearer JWT. One verifier serves every HTTP front door (the MCP
//! server and the chatbot's HTTP API), so a token means the same thing everywhere: signature by a
//! key from the issuer's JWKS (RS256 or ES256 only), the exact issuer, the audience or client id,
//! expiry and not-before, and at least one ota role. The result is an [`ota_core::auth::Caller`];
//! the service checks roles from there and trusts nothing else in the token.
//!
//! Two sources of keys:
//! - an OIDC issuer such as Amazon Cognito: the deployment fetches the issuer's JWKS and passes it
//!   to [`JwtVerifier::new`] or [`JwtVerifier::from_jwks_json`]. This crate deliberately has no
//!   HTTP(S) client: pulling a TLS stack into every build for one GET at start-up is not worth it,
//!   and the AWS deployment already has the JWKS at hand (it is a public document per user pool).
//! - the embedded default, [`LocalIssuer`]: an ES256 key in the data dir signs tokens for
//!   `ota token create`, and `ota serve` publishes its JWKS.
//!
//! [`require_bearer`] puts the check in front of an axum router and answers 401 with the RFC 9728
//! pointer clients use to find the authorization server; [`well_known_router`] serves that
//! metadata and the local JWKS.
//!
//! Feature `apigw` (the two Lambda binaries turn it on) adds [`apigw`]: the caller from API
//! Gateway's JWT-authorizer claims, where API Gateway has verified the token.

#[cfg(feature = "apigw")]
pub mod apigw;
mod error;
mod http;
mod local;
mod verifier;

pub use error::AuthError;
pub use http::{
    BearerLayer, BearerService, RESOURCE_METADATA_PATH, require_bearer, resource_metadata_url, well_known_router,
};
pub use local::{LocalIssuer, SIGNING_KEY_FILE};
pub use verifier::{JwtVerifier, VerifierConfig};

/// Re-exported so callers name the same JWKS type this crate takes.
pub use jsonwebtoken::jwk::JwkSet;
