//! ota's HTTP front door: the JSON API, the chat assistant endpoint, a Server-Sent Events
//! stream of rollout progress, and the chat page. One axum router, run inside `ota serve`
//! locally and under `lambda_http::run` on AWS (binary `ota-http`).
//!
//! Authentication is not done here: the composer puts a verified [`Caller`] in each
//! request's extensions (locally `ota_auth::require_bearer` with the JWT verifier; on AWS the
//! API Gateway JWT authorizer's claims). A request under `/api` without one gets 401. The page
//! (`/`) and `/api/health` need no caller: the page holds no data and signs in itself.
//!
//! Every route calls `ota-core`'s service or assistant as that caller, so the config gate,
//! roles, integrity check and policy bounds hold here as everywhere.
//!
//! Routes under `/api` (JSON; errors are `{"error": kind, "message"}` with a fitting status):
//! - `GET whoami`, `GET device-types`, `GET firmware?type=`, `GET devices?type=&version=`,
//!   `GET rollouts?type=&active=`, `GET rollouts/{id}` (`{"rollout", "progress", "executions"}`:
//!   each device's execution as `{"thing", "status", "reason"}`, `null` where the backend
//!   does not list them),
//!   `GET rollouts/{id}/events?after=` (when the backend keeps events),
//!   `GET rollouts/{id}/stream` (SSE: `progress` events on every change, a final `end` when
//!   the rollout is over, or `limit` when the stream's time limit ends it first),
//!   `POST rollouts/{id}/cancel` (`{"reason"?}`);
//! - `POST chat` (`{"message", "session_id"?}` → [`ChatReply`]);
//! - `POST plans/{plan_id}/start` (`{"session_id"?, "request"?}` → [`ChatReply`]): the
//!   confirmation button of a plan card;
//! - `POST ask` (`{"prompt", "execute"?, "plan_id"?}` → `{"plan", "started", "items",
//!   "summary"}`): [`FleetManager::ask`], which plans a plain-language request and with `execute`
//!   starts it (only if it still plans to `plan_id` when given). A plan with nothing to start is
//!   200 with `started: null` and `items: []`; `summary` is the service's words for each item
//!   ("started X (type)", "already running X (type), started at …") or the plan's message. A
//!   command plan ("Reboot pet_feeder-03") started this way adds `"command"`: the command run
//!   (`{"run", "created", "message"}`); the chat page's command cards confirm through here;
//! - `GET commands/{id}`: one command run with each device's execution (the page follows a
//!   confirmed command with it).
//!
//! `POST chat` answers device questions, command plans and telemetry with their plan (its
//! `devices`, `commands` or `telemetry`), which the page shows as device cards, a command card
//! with its confirm button, or a time-series chart.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::Stream;
use ota_core::Error;
use ota_core::agent::{AnsweredBy, Assistant, ChatReply};
use ota_core::auth::Caller;
use ota_core::device::DeviceQuery;
use ota_core::intent::Intent;
use ota_core::names::{DeviceType, JobId};
use ota_core::rollout::{Rollout, RolloutQuery};
use ota_core::service::FleetManager;
use ota_core::targeting::UpdateRequest;
use ota_core::version::VersionFilter;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The page, embedded: no build step, no files to ship.
pub const PAGE: &str = include_str!("../assets/index.html");

/// The progress port (counts per state, each device's execution, events), shared with MCP's
/// `get_rollout` and the chat: defined in `ota-mcp`, which this crate builds on.
pub use ota_mcp::{Counts, DeviceExecution, ProgressSource};

/// How the page signs people in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PageAuth {
    /// Paste a bearer token (`ota token create --role operator`).
    Token,
    /// Cognito's hosted UI, authorization code with PKCE, for a public app client.
    Cognito { domain: String, client_id: String, scopes: String },
}

/// What the page is told about this server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageConfig {
    pub auth: PageAuth,
    /// The configured chat model, described; `None`: the intent engine only.
    pub model: Option<String>,
    /// `local` or `aws`.
    pub backend: String,
    /// Whether `/api/rollouts/{id}/stream` streams (false where responses are buffered, as
    /// behind API Gateway; the page polls instead).
    pub streaming: bool,
}

/// Everything the API routes share.
#[derive(Clone)]
pub struct Web {
    svc: Arc<FleetManager>,
    assistant: Assistant,
    progress: Option<Arc<dyn ProgressSource>>,
    /// How often the stream looks for changes.
    poll: Duration,
    /// A stream ends after this long even if the rollout goes on (Lambda's time limit); the
    /// page then reconnects or polls.
    stream_limit: Option<Duration>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("model", &self.assistant.model())
            .field("progress", &self.progress.is_some())
            .field("poll", &self.poll)
            .field("stream_limit", &self.stream_limit)
            .finish_non_exhaustive()
    }
}

impl Web {
    pub fn new(assistant: Assistant, progress: Option<Arc<dyn ProgressSource>>) -> Self {
        Web {
            svc: assistant.service().clone(),
            assistant,
            progress,
            poll: Duration::from_millis(500),
            stream_limit: None,
        }
    }

    /// Polling interval of the progress stream.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The longest a progress stream stays open.
    pub fn with_stream_limit(mut self, limit: Option<Duration>) -> Self {
        self.stream_limit = limit;
        self
    }

    /// The `/api` routes. Each needs a [`Caller`] in the request's extensions.
    pub fn api_router(self) -> Router {
        Router::new()
            .route("/api/whoami", get(whoami))
            .route("/api/chat", post(chat))
            .route("/api/plans/{id}/start", post(start_plan))
            .route("/api/ask", post(ask))
            .route("/api/device-types", get(device_types))
            .route("/api/firmware", get(firmware))
            .route("/api/devices", get(devices))
            .route("/api/rollouts", get(rollouts))
            .route("/api/rollouts/{id}", get(rollout))
            .route("/api/rollouts/{id}/events", get(events))
            .route("/api/rollouts/{id}/stream", get(stream))
            .route("/api/rollouts/{id}/cancel", post(cancel))
            .route("/api/commands/{id}", get(command_run))
            .with_state(self)
    }
}

/// The page (`/`) and `/api/health`, which need no caller.
pub fn public_router(config: &PageConfig) -> Router {
    let page = Arc::new((render_page(config), content_security_policy(config)));
    Router::new()
        .route("/", get(move || async move { page_response(page) }))
        .route("/api/health", get(|| async { Json(json!({"ok": true})) }))
}

/// The page with its configuration in place of `<!--OTA_CONFIG-->`.
pub fn render_page(config: &PageConfig) -> String {
    // `</` inside a script element would end it; JSON allows `<\/`.
    let json = serde_json::to_string(config).unwrap_or_else(|_| "{}".into()).replace("</", "<\\/");
    PAGE.replacen(
        "<!--OTA_CONFIG-->",
        &format!(r#"<script id="ota-config" type="application/json">{json}</script>"#),
        1,
    )
}

/// The page's content security policy: its own origin, plus the sign-in domain when there is
/// one (the token exchange is a `fetch` to it).
fn content_security_policy(config: &PageConfig) -> String {
    let signin = match &config.auth {
        PageAuth::Cognito { domain, .. } => {
            let origin: String =
                domain.trim_end_matches('/').chars().filter(|c| !c.is_whitespace() && *c != ';').collect();
            format!(" {origin}")
        }
        PageAuth::Token => String::new(),
    };
    format!(
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'{signin}; frame-ancestors 'none'; form-action 'self'{signin}; base-uri 'none'"
    )
}

fn page_response(page: Arc<(String, String)>) -> Response {
    let mut r = Html(page.0.clone()).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    if let Ok(v) = header::HeaderValue::from_str(&page.1) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// An error as JSON with a status a client can act on.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind, message: message.into() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::AlreadyExists { .. } | Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Refused(_) | Error::Integrity { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        };
        ApiError::new(status, e.kind(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({"error": self.kind, "message": self.message}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type ApiResult<T = Value> = Result<Json<T>, ApiError>;

/// The verified caller of the request, or 401.
fn caller(c: Option<Extension<Caller>>) -> Result<Caller, ApiError> {
    c.map(|Extension(c)| c).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "send Authorization: Bearer <a valid token>")
    })
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Body parsing with our error shape instead of axum's plain-text rejection.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text())),
        }
    }
}

/// An optional JSON body: empty means the default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("the JSON body: {e}")))
}

async fn whoami(c: Option<Extension<Caller>>) -> ApiResult {
    let c = caller(c)?;
    Ok(Json(json!({"subject": c.subject, "roles": c.roles})))
}

#[derive(Deserialize)]
struct ChatBody {
    message: String,
    #[serde(default)]
    session_id: Option<String>,
}

async fn chat(State(w): State<Web>, c: Option<Extension<Caller>>, Body(b): Body<ChatBody>) -> ApiResult<ChatReply> {
    let c = caller(c)?;
    let mut reply = w.assistant.chat(&c, b.session_id.as_deref(), &b.message).await?;
    // Device questions, command plans and telemetry are shown as cards (a command's with its
    // confirm button, which goes through `POST /api/ask` with the plan id): the intent
    // engine's answer carries its words only, so the plan is made here for the page.
    if reply.plan.is_none() && reply.answered_by == AnsweredBy::Intent && reply.error.is_none() {
        let device_intent = matches!(
            w.svc.understand(&c, &b.message).await,
            Ok(Intent::DeviceStatus { .. } | Intent::Command(_) | Intent::Telemetry { .. })
        );
        if device_intent && let Ok(plan) = w.svc.plan_prompt(&c, &b.message).await {
            reply.plan = Some(plan);
        }
    }
    Ok(Json(reply))
}

#[derive(Deserialize, Default)]
struct StartBody {
    #[serde(default)]
    session_id: Option<String>,
    /// The plan's request, as the page was shown it; the service re-plans it and starts only
    /// if the new plan's id is the one in the URL.
    #[serde(default)]
    request: Option<UpdateRequest>,
    /// Each change of a plan of several (the pending start's `requests`), re-planned together
    /// and checked against the one plan id; when given, `request` is not used.
    #[serde(default)]
    requests: Vec<UpdateRequest>,
}

async fn start_plan(
    State(w): State<Web>,
    c: Option<Extension<Caller>>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<ChatReply> {
    let c = caller(c)?;
    let b: StartBody = optional_body(&body)?;
    let requests = if b.requests.is_empty() { b.request.into_iter().collect() } else { b.requests };
    Ok(Json(w.assistant.start_plan(&c, b.session_id.as_deref(), &id, requests).await?))
}

#[derive(Deserialize)]
struct AskBody {
    prompt: String,
    #[serde(default)]
    execute: bool,
    #[serde(default)]
    plan_id: Option<String>,
}

async fn ask(State(w): State<Web>, c: Option<Extension<Caller>>, Body(b): Body<AskBody>) -> ApiResult {
    let c = caller(c)?;
    let asked = w.svc.ask(&c, &b.prompt, b.execute, b.plan_id.as_deref()).await?;
    Ok(Json(match (asked.started, asked.command) {
        (Some(o), _) => json!({
            "plan": o.plan,
            "summary": o.summary(),
            "items": o.items,
            "started": {"rollouts": o.rollouts, "existing": o.existing, "items": o.items},
        }),
        (None, Some(start)) => json!({
            "plan": asked.plan,
            "summary": start.message,
            "items": [],
            "started": null,
            "command": start,
        }),
        (None, None) => json!({"plan": asked.plan, "summary": asked.plan.message, "items": [], "started": null}),
    }))
}

async fn command_run(State(w): State<Web>, c: Option<Extension<Caller>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let c = caller(c)?;
    Ok(Json(to_value(&w.svc.command_run(&c, &id).await?)))
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default, rename = "type")]
    device_type: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    active: Option<bool>,
}

impl Filter {
    fn device_type(&self) -> ota_core::Result<Option<DeviceType>> {
        self.device_type.as_deref().filter(|t| !t.is_empty()).map(DeviceType::parse).transpose()
    }
}

async fn device_types(State(w): State<Web>, c: Option<Extension<Caller>>) -> ApiResult {
    let c = caller(c)?;
    Ok(Json(to_value(&w.svc.device_types(&c).await?)))
}

async fn firmware(State(w): State<Web>, c: Option<Extension<Caller>>, Query(q): Query<Filter>) -> ApiResult {
    let c = caller(c)?;
    Ok(Json(to_value(&w.svc.list_firmware(&c, q.device_type()?.as_ref()).await?)))
}

async fn devices(State(w): State<Web>, c: Option<Extension<Caller>>, Query(q): Query<Filter>) -> ApiResult {
    let c = caller(c)?;
    let query = DeviceQuery {
        device_type: q.device_type()?,
        version: q.version.as_deref().filter(|v| !v.is_empty()).map(VersionFilter::parse).transpose()?,
        ..Default::default()
    };
    Ok(Json(to_value(&w.svc.fleet_status(&c, &query).await?)))
}

async fn rollouts(State(w): State<Web>, c: Option<Extension<Caller>>, Query(q): Query<Filter>) -> ApiResult {
    let c = caller(c)?;
    let query = RolloutQuery { device_type: q.device_type()?, active_only: q.active.unwrap_or(false), limit: None };
    Ok(Json(to_value(&w.svc.list_rollouts(&c, &query).await?)))
}

impl Web {
    async fn counts(&self, id: &JobId) -> ota_core::Result<Option<Counts>> {
        match &self.progress {
            Some(p) => p.counts(id).await,
            None => Ok(None),
        }
    }

    async fn executions(&self, id: &JobId) -> ota_core::Result<Option<Vec<DeviceExecution>>> {
        match &self.progress {
            Some(p) => p.executions(id).await,
            None => Ok(None),
        }
    }
}

async fn rollout(State(w): State<Web>, c: Option<Extension<Caller>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let c = caller(c)?;
    let id = JobId::parse(&id)?;
    // Read through the service first: it applies the caller's role.
    let rollout = w.svc.rollout(&c, &id).await?;
    Ok(Json(json!({"rollout": rollout, "progress": w.counts(&id).await?, "executions": w.executions(&id).await?})))
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: i64,
}

async fn events(
    State(w): State<Web>,
    c: Option<Extension<Caller>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<After>,
) -> ApiResult {
    let c = caller(c)?;
    let id = JobId::parse(&id)?;
    w.svc.rollout(&c, &id).await?;
    let events = match &w.progress {
        Some(p) => p.events(&id, q.after).await?,
        None => None,
    };
    events.map(Json).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "this backend keeps no per-rollout events; use /stream")
    })
}

#[derive(Deserialize, Default)]
struct CancelBody {
    #[serde(default)]
    reason: String,
}

async fn cancel(
    State(w): State<Web>,
    c: Option<Extension<Caller>>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let c = caller(c)?;
    let reason = optional_body::<CancelBody>(&body)?.reason;
    Ok(Json(to_value(&w.svc.cancel(&c, &JobId::parse(&id)?, &reason).await?)))
}

/// One sample of a rollout's progress, as streamed.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Sample {
    id: JobId,
    status: String,
    status_reason: Option<String>,
    counts: Option<Counts>,
    at: chrono::DateTime<chrono::Utc>,
}

impl Sample {
    fn of(r: &Rollout, counts: Option<Counts>, at: chrono::DateTime<chrono::Utc>) -> Self {
        Sample {
            id: r.id.clone(),
            status: r.status.as_str().to_string(),
            status_reason: r.status_reason.clone(),
            counts,
            at,
        }
    }

    fn same_state(&self, o: &Sample) -> bool {
        self.status == o.status && self.counts == o.counts
    }
}

/// `text/event-stream` of a rollout: a `progress` event now and on every change, and an
/// `end` event once the rollout is no longer in progress (or the stream limit is reached).
async fn stream(
    State(w): State<Web>,
    c: Option<Extension<Caller>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let c = caller(c)?;
    let id = JobId::parse(&id)?;
    let first = w.svc.rollout(&c, &id).await?;
    let started = tokio::time::Instant::now();
    struct St {
        w: Web,
        c: Caller,
        id: JobId,
        last: Option<Sample>,
        first: Option<Rollout>,
        done: bool,
    }
    let st = St { w, c, id, last: None, first: Some(first), done: false };
    let events = futures::stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let rollout = match st.first.take() {
                Some(r) => Ok(r),
                None => {
                    tokio::time::sleep(st.w.poll).await;
                    st.w.svc.rollout(&st.c, &st.id).await
                }
            };
            let rollout = match rollout {
                Ok(r) => r,
                Err(e) => {
                    st.done = true;
                    let ev = Event::default().event("error").data(json!({"message": e.to_string()}).to_string());
                    return Some((Ok(ev), st));
                }
            };
            let counts = st.w.counts(&st.id).await.ok().flatten();
            let sample = Sample::of(&rollout, counts, st.w.svc.now());
            if !rollout.status.is_active() {
                st.done = true;
                let ev = Event::default().event("end").data(to_value(&sample).to_string());
                return Some((Ok(ev), st));
            }
            if st.w.stream_limit.is_some_and(|l| started.elapsed() >= l) {
                // The rollout goes on; the client reconnects (or polls).
                st.done = true;
                let ev = Event::default().event("limit").data(to_value(&sample).to_string());
                return Some((Ok(ev), st));
            }
            if st.last.as_ref().is_some_and(|l| l.same_state(&sample)) {
                continue;
            }
            let ev = Event::default().event("progress").data(to_value(&sample).to_string());
            st.last = Some(sample);
            return Some((Ok(ev), st));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
