//! The caller of a request that reached a Lambda (the `ota-mcp` and `ota-http` functions) through
//! API Gateway (HTTP API, payload 2.0) behind its JWT authorizer. API Gateway has already verified the bearer token (issuer,
//! audience, expiry, signature against the Cognito user pool) before the function runs, so here
//! the claims it passes in the request context are read, not verified again:
//! - subject: `username` (Cognito access tokens), else `cognito:username` (ID tokens), else `sub`;
//! - roles: `cognito:groups`. API Gateway flattens every claim to a string, so an array arrives
//!   as `[admin viewer]`; a comma list (`admin,viewer`) and a JSON array (`["admin","viewer"]`)
//!   are read too. Names that are not ota roles (other Cognito groups) are ignored.
//!
//! A request with no authorizer context (a route left without the authorizer, a Function URL,
//! the local smoke server) gets 401; a verified caller in no ota group gets 403. Neither ever
//! runs as an admin. Both answers are JSON `{ "error": kind, "message": text }`.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use ota_core::auth::{Caller, Role};

/// The claim that carries the roles: the Cognito groups `viewer`, `operator`, `admin`.
pub const ROLES_CLAIM: &str = "cognito:groups";

/// Subject claims, in the order they are tried.
const SUBJECT_CLAIMS: [&str; 3] = ["username", "cognito:username", "sub"];

/// Why a request gets no caller: the HTTP status and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn unauthenticated(message: &str) -> Self {
        Refusal { status: StatusCode::UNAUTHORIZED, message: message.to_string() }
    }

    /// The JSON error response for this refusal (`WWW-Authenticate: Bearer` on a 401, so
    /// clients know a bearer token is what is missing).
    pub fn into_response(self) -> Response {
        let kind = if self.status == StatusCode::UNAUTHORIZED { "unauthenticated" } else { "forbidden" };
        let body = serde_json::json!({ "error": kind, "message": self.message }).to_string();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The ota roles named in a `cognito:groups` claim as API Gateway passes it (`[a b]`, `a,b`,
/// `["a","b"]` or a single name); names that are not roles are ignored.
pub fn roles_from_claim(value: &str) -> BTreeSet<Role> {
    names_in_claim(value).filter_map(|t| Role::parse(t).ok()).collect()
}

/// The other names of that claim (groups such as `senior_operator`, for policies).
pub fn groups_from_claim(value: &str) -> BTreeSet<String> {
    names_in_claim(value).filter(|t| Role::parse(t).is_err()).map(str::to_string).collect()
}

fn names_in_claim(value: &str) -> impl Iterator<Item = &str> {
    let inner = value.trim();
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let inner = inner.strip_suffix(']').unwrap_or(inner);
    inner.split(|c: char| c == ',' || c.is_whitespace()).map(|t| t.trim().trim_matches('"')).filter(|t| !t.is_empty())
}

/// The caller of a request from the API Gateway v2 JWT authorizer's claims in `extensions`
/// (where `lambda_http` puts the request context).
pub fn caller_from_extensions(extensions: &axum::http::Extensions) -> Result<Caller, Refusal> {
    let claims = match extensions.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|j| &j.claims)
        }
        _ => None,
    }
    .ok_or_else(|| {
        Refusal::unauthenticated(
            "unauthenticated: this request carries no API Gateway JWT authorizer context; call /mcp through the \
             API with a bearer token from the Cognito user pool",
        )
    })?;
    let subject = SUBJECT_CLAIMS
        .iter()
        .filter_map(|k| claims.get(*k))
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .ok_or_else(|| {
            Refusal::unauthenticated("unauthenticated: the token has no subject (username, cognito:username or sub)")
        })?;
    let roles = claims.get(ROLES_CLAIM).map(|v| roles_from_claim(v)).unwrap_or_default();
    if roles.is_empty() {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "forbidden: {subject} is in no ota group; an administrator adds the user to the viewer, operator or \
                 admin group of the Cognito user pool"
            ),
        });
    }
    let groups = claims.get(ROLES_CLAIM).map(|v| groups_from_claim(v)).unwrap_or_default();
    Ok(Caller::new(subject, roles).with_groups(groups))
}

/// The caller of a request (any body type): see [`caller_from_extensions`].
pub fn caller_from_request<B>(req: &axum::http::Request<B>) -> Result<Caller, Refusal> {
    caller_from_extensions(req.extensions())
}

/// Axum middleware (`axum::middleware::from_fn(attach_caller)`): puts the request's [`Caller`]
/// in its extensions for the service behind it, or answers the [`Refusal`] without calling it.
pub async fn attach_caller(mut req: Request, next: Next) -> Response {
    match caller_from_request(&req) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// The `allowed_hosts` for `ota_mcp::OtaMcp::http_router` from `OTA_MCP_ALLOWED_HOSTS`
/// (comma-separated). Unset or blank: in Lambda, no Host check (`Some(vec![])`), because API
/// Gateway only routes requests addressed to the API's own domains and every one carries a
/// verified token, so DNS rebinding cannot reach it; outside Lambda, rmcp's loopback default.
pub fn allowed_hosts(var: Option<&str>, in_lambda: bool) -> Option<Vec<String>> {
    let hosts: Vec<String> =
        var.unwrap_or("").split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect();
    if !hosts.is_empty() {
        Some(hosts)
    } else if in_lambda {
        Some(Vec::new())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
    use lambda_http::tower::ServiceExt;

    /// A request context as API Gateway sends it (payload 2.0), with these JWT claims.
    fn context(claims: serde_json::Value) -> RequestContext {
        let ctx: ApiGatewayV2httpRequestContext = serde_json::from_value(serde_json::json!({
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "requestId": "r-1",
            "routeKey": "ANY /mcp",
            "stage": "$default",
            "timeEpoch": 1_700_000_000_000i64,
            "authorizer": { "jwt": { "claims": claims, "scopes": null } },
            "http": { "method": "POST", "path": "/mcp", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "t" }
        }))
        .expect("a payload 2.0 request context");
        RequestContext::ApiGatewayV2(ctx)
    }

    fn request(ctx: Option<RequestContext>) -> lambda_http::Request {
        let req = lambda_http::http::Request::builder()
            .method("POST")
            .uri("https://abc123.execute-api.eu-west-1.amazonaws.com/mcp")
            .body(lambda_http::Body::Empty)
            .expect("request");
        match ctx {
            Some(c) => req.with_request_context(c),
            None => req,
        }
    }

    fn caller(claims: serde_json::Value) -> Result<Caller, Refusal> {
        caller_from_request(&request(Some(context(claims))))
    }

    #[test]
    fn groups_in_every_shape_api_gateway_sends() {
        let both = BTreeSet::from([Role::Viewer, Role::Admin]);
        assert_eq!(roles_from_claim("[admin viewer]"), both);
        assert_eq!(roles_from_claim("admin,viewer"), both);
        assert_eq!(roles_from_claim(" admin , viewer "), both);
        assert_eq!(roles_from_claim(r#"["admin","viewer"]"#), both);
        assert_eq!(roles_from_claim(r#"["admin", "viewer"]"#), both);
        assert_eq!(roles_from_claim("operator"), BTreeSet::from([Role::Operator]));
        assert_eq!(roles_from_claim("[Operator]"), BTreeSet::from([Role::Operator]));
        assert_eq!(roles_from_claim("[billing ops-admin]"), BTreeSet::new());
        assert_eq!(roles_from_claim("[]"), BTreeSet::new());
        assert_eq!(
            groups_from_claim("[admin senior_operator, Viewer]"),
            BTreeSet::from(["senior_operator".to_string()])
        );
        assert_eq!(groups_from_claim(r#"["a","b"]"#), BTreeSet::from(["a".to_string(), "b".to_string()]));
        assert_eq!(roles_from_claim(""), BTreeSet::new());
    }

    #[test]
    fn subject_and_roles_from_access_token_claims() {
        let c = caller(serde_json::json!({
            "sub": "6f1c-uuid", "username": "ana", "cognito:groups": "[operator billing]",
            "token_use": "access", "client_id": "client"
        }))
        .unwrap();
        assert_eq!(c, Caller::new("ana", [Role::Operator]).with_groups(["billing"]));
    }

    #[test]
    fn subject_falls_back_to_cognito_username_then_sub() {
        let c = caller(serde_json::json!({ "sub": "6f1c", "cognito:username": "bo", "cognito:groups": "viewer" }));
        assert_eq!(c.unwrap().subject, "bo");
        let c = caller(serde_json::json!({ "sub": "6f1c", "cognito:groups": "[admin]" })).unwrap();
        assert_eq!(c, Caller::new("6f1c", [Role::Admin]));
    }

    #[test]
    fn no_ota_group_is_forbidden() {
        for groups in [None, Some("[]"), Some("[billing]")] {
            let mut claims = serde_json::json!({ "username": "ana" });
            if let Some(g) = groups {
                claims["cognito:groups"] = g.into();
            }
            let r = caller(claims).unwrap_err();
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{groups:?}");
            assert!(r.message.contains("ana") && r.message.contains("group"), "{}", r.message);
        }
    }

    #[test]
    fn no_subject_or_no_authorizer_is_unauthenticated() {
        let r = caller(serde_json::json!({ "cognito:groups": "[admin]" })).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = caller(serde_json::json!({ "username": " ", "cognito:groups": "[admin]" })).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        // No request context at all (the local smoke server), and a context without an authorizer.
        assert_eq!(caller_from_request(&request(None)).unwrap_err().status, StatusCode::UNAUTHORIZED);
        let RequestContext::ApiGatewayV2(mut ctx) = context(serde_json::json!({})) else { unreachable!() };
        ctx.authorizer = None;
        let r = caller_from_request(&request(Some(RequestContext::ApiGatewayV2(ctx)))).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }

    /// The middleware in front of a handler that echoes the caller it was given.
    fn app() -> axum::Router {
        async fn echo(req: Request) -> String {
            let c = req.extensions().get::<Caller>().expect("the middleware attached a caller");
            format!("{} {:?}", c.subject, c.roles)
        }
        axum::Router::new().route("/mcp", post(echo)).layer(axum::middleware::from_fn(attach_caller))
    }

    async fn send(ctx: Option<RequestContext>) -> (StatusCode, Option<String>, String) {
        let resp = app().oneshot(request(ctx)).await.expect("infallible");
        let status = resp.status();
        let www = resp.headers().get(header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        (status, www, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn middleware_attaches_the_caller_or_answers_json_errors() {
        let (status, _, body) =
            send(Some(context(serde_json::json!({ "username": "ana", "cognito:groups": "[admin viewer]" })))).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ana {Viewer, Admin}"));

        let (status, www, body) = send(None).await;
        assert_eq!((status, www.as_deref()), (StatusCode::UNAUTHORIZED, Some("Bearer")));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "unauthenticated");

        let (status, www, body) = send(Some(context(serde_json::json!({ "username": "ana" })))).await;
        assert_eq!((status, www), (StatusCode::FORBIDDEN, None));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "forbidden");
    }

    #[test]
    fn allowed_hosts_from_the_variable() {
        assert_eq!(
            allowed_hosts(Some("api.example.com, mcp.example.com:443,"), true).unwrap(),
            ["api.example.com", "mcp.example.com:443"]
        );
        assert_eq!(allowed_hosts(Some("api.example.com"), false).unwrap(), ["api.example.com"]);
        assert_eq!(allowed_hosts(None, true), Some(vec![]));
        assert_eq!(allowed_hosts(Some(" "), true), Some(vec![]));
        assert_eq!(allowed_hosts(None, false), None);
    }
}
