//! The bearer layer and the well-known routes, in memory (`oneshot`) and over a real socket on
//! 127.0.0.1: 401 with the RFC 9728 pointer for a missing or bad token, the caller reaching the
//! handler for a good one, and the metadata and JWKS as JSON.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Extension;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use common::Local;
use ota_auth::{RESOURCE_METADATA_PATH, require_bearer, well_known_router};
use ota_core::auth::{Caller, Role};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const METADATA_URL: &str = "https://ota.example/.well-known/oauth-protected-resource";

/// A protected `/mcp` that echoes the caller it was given, next to the public well-known routes.
fn app(local: &Local) -> Router {
    let protected = Router::new()
        .route("/mcp", get(|Extension(caller): Extension<Caller>| async move { Json(caller) }))
        .layer(require_bearer(Arc::new(local.issuer.verifier()), METADATA_URL.to_string()));
    protected.merge(well_known_router(
        "https://ota.example/mcp".into(),
        vec!["https://ota.example".into()],
        Some(local.issuer.jwks()),
    ))
}

async fn call(app: &Router, path: &str, authorization: Option<&str>) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::get(path);
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let challenge = response.headers().get(WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, challenge, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn a_request_without_a_token_gets_401_pointing_at_the_metadata() {
    let local = Local::new();
    let (status, challenge, body) = call(&app(&local), "/mcp", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.unwrap(), format!("Bearer resource_metadata=\"{METADATA_URL}\""));
    assert_eq!(body["error"], "missing_token");
    assert!(body["message"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
}

#[tokio::test]
async fn a_bad_token_gets_401_with_invalid_token_and_a_reason() {
    let local = Local::new();
    let app = app(&local);
    let mut expired = local.claims();
    expired["exp"] = json!(common::now() - 3600);
    let expired = local.sign(&expired);
    let attacker = Local::new().issuer.issue("mallory", Role::Admin, Duration::from_secs(600)).unwrap();
    for (token, reason) in [(expired.as_str(), "expired"), (attacker.as_str(), "unknown key"), ("garbage", "malformed")]
    {
        let (status, challenge, body) = call(&app, "/mcp", Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let challenge = challenge.unwrap();
        assert!(
            challenge.starts_with(&format!(
                "Bearer resource_metadata=\"{METADATA_URL}\", error=\"invalid_token\", error_description=\""
            )),
            "{challenge}"
        );
        assert!(challenge.contains(reason), "{challenge}");
        assert!(!challenge.contains(token) && !body.to_string().contains(token), "the token is echoed");
        assert_eq!(body["error"], "invalid_token");
    }
    // Another scheme is a bad credential too, not a missing one.
    let (status, challenge, _) = call(&app, "/mcp", Some("Basic YW5hOnB3")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains("invalid_token"));
}

#[tokio::test]
async fn a_good_token_reaches_the_handler_with_its_caller() {
    let local = Local::new();
    let app = app(&local);
    let token = local.issuer.issue("ana", Role::Operator, Duration::from_secs(600)).unwrap();
    for scheme in ["Bearer", "bearer"] {
        let (status, challenge, body) = call(&app, "/mcp", Some(&format!("{scheme} {token}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(challenge.is_none());
        assert_eq!(body, json!({"subject": "ana", "roles": ["operator"]}));
    }
}

#[tokio::test]
async fn the_well_known_routes_answer_json_without_a_token() {
    let local = Local::new();
    let app = app(&local);
    for path in [RESOURCE_METADATA_PATH.to_string(), format!("{RESOURCE_METADATA_PATH}/mcp")] {
        let (status, _, body) = call(&app, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(
            body,
            json!({
                "resource": "https://ota.example/mcp",
                "authorization_servers": ["https://ota.example"],
                "bearer_methods_supported": ["header"],
                "scopes_supported": [],
            })
        );
    }
    let (status, _, body) = call(&app, "/.well-known/jwks.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["keys"][0]["kid"], local.issuer.kid());
    // Without a local issuer there is no JWKS to publish.
    let bare = well_known_router("https://ota.example/mcp".into(), vec![], None);
    let response = bare.oneshot(Request::get("/.well-known/jwks.json").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// One HTTP/1.1 exchange over a real TCP connection.
async fn raw_get(addr: std::net::SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn over_a_real_socket_the_layer_refuses_and_admits() {
    let local = Local::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, app(&local)).into_future());

    let (status, head, _) = raw_get(addr, "/mcp", None).await;
    assert_eq!(status, 401);
    assert!(head.contains(&format!("www-authenticate: bearer resource_metadata=\"{METADATA_URL}\"")), "{head}");

    let (status, head, _) = raw_get(addr, "/mcp", Some("Bearer not.a.token")).await;
    assert_eq!(status, 401);
    assert!(head.contains("error=\"invalid_token\""), "{head}");

    let token = local.issuer.issue("ana", Role::Admin, Duration::from_secs(600)).unwrap();
    let (status, _, body) = raw_get(addr, "/mcp", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"subject": "ana", "roles": ["admin"]}));

    let (status, head, body) = raw_get(addr, RESOURCE_METADATA_PATH, None).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["resource"], "https://ota.example/mcp");
    server.abort();
}
