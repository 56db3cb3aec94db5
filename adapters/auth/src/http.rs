//! The HTTP edge: a tower layer that turns `Authorization: Bearer <jwt>` into a [`Caller`] in the
//! request extensions (handlers take `Extension<Caller>`), and the RFC 9728 metadata that tells a
//! client refused with 401 where to get a token. Used by the MCP endpoint and the HTTP API alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::JwkSet;
use ota_core::auth::Caller;
use serde_json::{Value, json};
use tower::{Layer, Service};

use crate::{AuthError, JwtVerifier};

/// Where RFC 9728 puts the protected-resource metadata.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The metadata URL for a server reachable at `public_base_url` (e.g. `https://ota.example`), as
/// [`require_bearer`] wants it.
pub fn resource_metadata_url(public_base_url: &str) -> String {
    format!("{}{RESOURCE_METADATA_PATH}", public_base_url.trim_end_matches('/'))
}

/// Requires a valid bearer token on every request of the router it wraps: verified requests
/// reach the handler with their [`Caller`] in the extensions; others get 401 with a
/// `WWW-Authenticate: Bearer resource_metadata="..."` challenge (plus `error="invalid_token"` and
/// a description when a token was sent) and a JSON body `{"error": ..., "message": ...}`.
///
/// `resource_metadata_url` is the absolute URL of [`RESOURCE_METADATA_PATH`] as clients reach it
/// (behind a proxy, the public one). Use it with `Router::layer` or `Router::route_layer`.
pub fn require_bearer(verifier: Arc<JwtVerifier>, resource_metadata_url: String) -> BearerLayer {
    BearerLayer { verifier, resource_metadata_url: resource_metadata_url.into() }
}

/// The layer [`require_bearer`] returns.
#[derive(Debug, Clone)]
pub struct BearerLayer {
    verifier: Arc<JwtVerifier>,
    resource_metadata_url: Arc<str>,
}

impl<S> Layer<S> for BearerLayer {
    type Service = BearerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerService {
            inner,
            verifier: self.verifier.clone(),
            resource_metadata_url: self.resource_metadata_url.clone(),
        }
    }
}

/// The service [`BearerLayer`] wraps around a router or handler.
#[derive(Debug, Clone)]
pub struct BearerService<S> {
    inner: S,
    verifier: Arc<JwtVerifier>,
    resource_metadata_url: Arc<str>,
}

impl<S> Service<Request> for BearerService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match bearer_token(&request).and_then(|token| self.verifier.verify(token)) {
            Ok(caller) => {
                request.extensions_mut().insert::<Caller>(caller);
                // The clone that was polled ready is the one that must be called.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { ready.call(request).await })
            }
            Err(error) => {
                let response = unauthorized(&self.resource_metadata_url, &error);
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme in any case, per RFC 7235).
fn bearer_token(request: &Request) -> Result<&str, AuthError> {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed("the Authorization header is not text".into()))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("expected `Authorization: Bearer <token>`".into()));
    }
    match token.trim() {
        "" => Err(AuthError::Missing),
        token => Ok(token),
    }
}

/// The 401 answer: the challenge points at the metadata, the body says what to do.
fn unauthorized(resource_metadata_url: &str, error: &AuthError) -> Response {
    let message = error.to_string();
    let mut challenge = format!("Bearer resource_metadata=\"{}\"", header_safe(resource_metadata_url));
    let code = if error.token_was_given() {
        challenge.push_str(&format!(", error=\"invalid_token\", error_description=\"{}\"", header_safe(&message)));
        "invalid_token"
    } else {
        "missing_token"
    };
    let challenge = HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer"));
    (StatusCode::UNAUTHORIZED, [(WWW_AUTHENTICATE, challenge)], Json(json!({"error": code, "message": message})))
        .into_response()
}

/// Text that fits in a quoted header parameter: visible ASCII, no quotes or backslashes.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

/// The public routes that go next to a protected router (outside its [`require_bearer`] layer):
/// `GET /.well-known/oauth-protected-resource` (RFC 9728; also under `.../<resource path>`, where
/// MCP clients look first for a resource such as `https://host/mcp`), and, when `jwks` is given,
/// `GET /.well-known/jwks.json` with the local issuer's public key.
///
/// `resource` is the protected resource's URL (for MCP the `/mcp` endpoint);
/// `authorization_servers` the issuers clients get tokens from.
pub fn well_known_router(resource: String, authorization_servers: Vec<String>, jwks: Option<JwkSet>) -> Router {
    let metadata: Arc<Value> = Arc::new(json!({
        "resource": resource,
        "authorization_servers": authorization_servers,
        "bearer_methods_supported": ["header"],
        "scopes_supported": [],
    }));
    let serve_metadata = move || {
        let metadata = metadata.clone();
        async move { Json(metadata.as_ref().clone()) }
    };
    let mut router = Router::new()
        .route(RESOURCE_METADATA_PATH, get(serve_metadata.clone()))
        .route(&format!("{RESOURCE_METADATA_PATH}/{{*resource_path}}"), get(serve_metadata));
    if let Some(jwks) = jwks {
        let jwks = Arc::new(jwks);
        router = router.route(
            "/.well-known/jwks.json",
            get(move || {
                let jwks = jwks.clone();
                async move { Json(jwks.as_ref().clone()) }
            }),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&[u8]>) -> Request {
        let mut builder = Request::builder().uri("/");
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn the_bearer_token_is_read_from_the_header_in_any_case_of_scheme() {
        assert_eq!(bearer_token(&request(Some(b"Bearer abc.def.ghi"))), Ok("abc.def.ghi"));
        assert_eq!(bearer_token(&request(Some(b"BEARER   abc "))), Ok("abc"));
        assert_eq!(bearer_token(&request(None)), Err(AuthError::Missing));
        assert_eq!(bearer_token(&request(Some(b"Bearer "))), Err(AuthError::Missing));
        assert!(matches!(bearer_token(&request(Some(b"Basic YTpi"))), Err(AuthError::Malformed(_))));
        assert!(matches!(bearer_token(&request(Some(b"Bearer \xff"))), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn the_metadata_url_joins_the_base_without_double_slashes() {
        assert_eq!(
            resource_metadata_url("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn header_parameters_cannot_be_broken_out_of() {
        assert_eq!(header_safe("a \"quoted\" \\ é\r\n"), "a 'quoted' ' ???");
    }
}
