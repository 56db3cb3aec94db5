//! The local server's JSON HTTP API: firmware, devices and rollouts, with live progress.
//! Every call goes through `ota-core`'s service, so the gate, the integrity check and the
//! policy bounds hold here exactly as on the command line.
//!
//! Authentication: `Authorization: Bearer <token>`, where the token is the content of
//! `<data_dir>/api-token` (created with mode 0600 on first start). Whoever can read the data
//! dir is its local admin, as for the CLI; signed per-role tokens arrive with the MCP issue.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ota_core::Error;
use ota_core::auth::Caller;
use ota_core::device::DeviceQuery;
use ota_core::names::{DeviceType, JobId};
use ota_core::plan::Action;
use ota_core::rollout::RolloutQuery;
use ota_core::service::FleetManager;
use ota_local::SqliteStore;
use serde::Deserialize;
use serde_json::{Value, json};

/// File holding the local API token.
pub const TOKEN_FILE: &str = "api-token";

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    svc: Arc<FleetManager>,
    store: Arc<SqliteStore>,
    token: Arc<String>,
    caller: Caller,
}

impl std::fmt::Debug for ApiState {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("caller", &self.caller).finish_non_exhaustive()
    }
}

impl ApiState {
    pub fn new(svc: Arc<FleetManager>, store: Arc<SqliteStore>, data_dir: &Path) -> ota_core::Result<Self> {
        let token = load_or_create_token(data_dir)?;
        Ok(ApiState { svc, store, token: Arc::new(token), caller: crate::local_caller() })
    }
}

/// The API token of `data_dir`, created when missing (a data-dir secret, like the device
/// secret and the download key).
pub fn load_or_create_token(data_dir: &Path) -> ota_core::Result<String> {
    let secret = ota_local::load_or_create_secret(data_dir, TOKEN_FILE, "local API token")
        .map_err(|e| Error::storage(format!("the API token: {e}")))?;
    Ok(hex::encode(secret))
}

/// The API's routes under `/api`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/health", get(|| async { Json(json!({"ok": true})) }))
        .route("/api/firmware", get(firmware))
        .route("/api/devices", get(devices))
        .route("/api/rollouts", get(rollouts))
        .route("/api/rollouts/{id}", get(rollout))
        .route("/api/rollouts/{id}/events", get(events))
        .route("/api/rollouts/{id}/cancel", post(cancel))
        .route("/api/ask", post(ask))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn authenticate(State(state): State<ApiState>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), state.token.as_bytes()) {
        let body =
            Json(json!({"error": "unauthorized", "message": "send Authorization: Bearer <the data dir's api-token>"}));
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An `ota_core::Error` as an HTTP answer a person can act on.
struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::AlreadyExists { .. } | Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Refused(_) | Error::Integrity { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[derive(Deserialize)]
struct TypeFilter {
    #[serde(rename = "type")]
    device_type: Option<String>,
}

async fn firmware(State(s): State<ApiState>, Query(q): Query<TypeFilter>) -> ApiResult {
    let t = q.device_type.as_deref().map(DeviceType::parse).transpose()?;
    Ok(Json(to_value(&s.svc.list_firmware(&s.caller, t.as_ref()).await?)))
}

async fn devices(State(s): State<ApiState>, Query(q): Query<TypeFilter>) -> ApiResult {
    let query =
        DeviceQuery { device_type: q.device_type.as_deref().map(DeviceType::parse).transpose()?, ..Default::default() };
    Ok(Json(to_value(&s.svc.fleet_status(&s.caller, &query).await?)))
}

async fn rollouts(State(s): State<ApiState>) -> ApiResult {
    Ok(Json(to_value(&s.svc.list_rollouts(&s.caller, &RolloutQuery::default()).await?)))
}

async fn rollout(State(s): State<ApiState>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let id = JobId::parse(&id)?;
    // Read through the service first: it applies the caller's role.
    s.svc.rollout(&s.caller, &id).await?;
    let progress = s.store.rollout_progress(&id).await?;
    let executions = s.store.executions(&id).await?;
    Ok(Json(json!({"rollout": progress.rollout, "counts": progress.counts, "executions": executions})))
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: i64,
}

async fn events(State(s): State<ApiState>, UrlPath(id): UrlPath<String>, Query(q): Query<After>) -> ApiResult {
    let id = JobId::parse(&id)?;
    s.svc.rollout(&s.caller, &id).await?;
    Ok(Json(to_value(&s.store.rollout_events(&id, q.after).await?)))
}

#[derive(Deserialize)]
struct CancelBody {
    #[serde(default)]
    reason: String,
}

async fn cancel(State(s): State<ApiState>, UrlPath(id): UrlPath<String>, body: Option<Json<CancelBody>>) -> ApiResult {
    let reason = body.map(|b| b.0.reason).unwrap_or_default();
    Ok(Json(to_value(&s.svc.cancel(&s.caller, &JobId::parse(&id)?, &reason).await?)))
}

#[derive(Deserialize)]
struct AskBody {
    prompt: String,
    /// Start what the prompt plans; otherwise only plan.
    #[serde(default)]
    execute: bool,
    /// Start only if the plan is still exactly this one.
    #[serde(default)]
    plan_id: Option<String>,
}

async fn ask(State(s): State<ApiState>, Json(body): Json<AskBody>) -> ApiResult {
    let plan = s.svc.plan_prompt(&s.caller, &body.prompt).await?;
    if !body.execute {
        return Ok(Json(json!({"plan": plan})));
    }
    let Some(request) = plan.request.clone().filter(|_| matches!(plan.action, Action::Update | Action::Rollback))
    else {
        return Err(Error::Refused(format!("nothing to start: {}", plan.message)).into());
    };
    let started = s.svc.start(&s.caller, &request, body.plan_id.as_deref()).await?;
    Ok(Json(json!({"plan": started.plan, "rollouts": started.rollouts, "existing": started.existing})))
}
