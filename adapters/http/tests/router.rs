//! The HTTP router over real sockets: the page and its configuration, 401 without a caller,
//! the chat's plan → confirm flow through `/api/plans/{id}/start`, roles on the button,
//! error shapes, and the Server-Sent Events progress stream (progress, then `end` when the
//! rollout is cancelled; `limit` when the stream's time limit comes first), `POST /api/ask`
//! (one answer for every plan, saying per item what happened), each device's execution in
//! `GET /api/rollouts/{id}`, and chat sessions that belong to their subject.
//!
//! The caller is attached by a test middleware from the `x-test-role` header, standing in for
//! the bearer verifier (tested in ota-auth and through `ota serve` in the CLI's tests).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Request;
use ota_core::agent::{Assistant, MemorySessions};
use ota_core::auth::{Caller, Role};
use ota_core::names::JobId;
use ota_core::rollout::RolloutQuery;
use ota_core::service::FleetManager;
use ota_http::{Counts, DeviceExecution, PageAuth, PageConfig, ProgressSource, Web};
use ota_local::SqliteStore;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
struct StoreCounts(Arc<SqliteStore>);

#[async_trait]
impl ProgressSource for StoreCounts {
    async fn counts(&self, id: &JobId) -> ota_core::Result<Option<Counts>> {
        let c = self.0.rollout_progress(id).await?.counts;
        Ok(Some(Counts {
            total: c.total,
            waiting: c.waiting,
            queued: c.queued,
            canceled: c.canceled,
            ..Default::default()
        }))
    }

    async fn executions(&self, id: &JobId) -> ota_core::Result<Option<Vec<DeviceExecution>>> {
        let executions = self.0.executions(id).await?;
        Ok(Some(
            executions
                .iter()
                .map(|e| DeviceExecution {
                    thing: e.thing.clone(),
                    status: e.status.as_str().to_string(),
                    reason: e.status_details.get("reason").and_then(Value::as_str).map(str::to_string),
                })
                .collect(),
        ))
    }
}

async fn attach_caller(mut req: Request<axum::body::Body>, next: axum::middleware::Next) -> axum::response::Response {
    let role = req.headers().get("x-test-role").and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(role) = role {
        let role = Role::parse(&role).unwrap();
        req.extensions_mut().insert(Caller::new(format!("test-{role}"), [role]));
    }
    next.run(req).await
}

/// Serves the page and the API on 127.0.0.1; returns its address.
async fn serve(svc: Arc<FleetManager>, store: Arc<SqliteStore>, auth: PageAuth, limit: Option<Duration>) -> String {
    let assistant = Assistant::new(svc, Arc::new(MemorySessions::default()));
    let page = PageConfig { auth, model: assistant.model(), backend: "local".into(), streaming: true };
    let web = Web::new(assistant, Some(Arc::new(StoreCounts(store))))
        .with_poll(Duration::from_millis(50))
        .with_stream_limit(limit);
    let router = ota_http::public_router(&page).merge(web.api_router().layer(axum::middleware::from_fn(attach_caller)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn request(method: &str, path: &str, role: Option<&str>, body: Option<&Value>) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(role) = role {
        r.push_str(&format!("x-test-role: {role}\r\n"));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    if !body.is_empty() {
        r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r + &body
}

/// One request; (status, head, body).
async fn http(addr: &str, method: &str, path: &str, role: Option<&str>, body: Option<&Value>) -> (u16, String, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(request(method, path, role, body).as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

async fn json_call(addr: &str, method: &str, path: &str, role: &str, body: Option<Value>) -> (u16, Value) {
    let (status, _, body) = http(addr, method, path, Some(role), body.as_ref()).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

#[tokio::test]
async fn the_page_is_public_and_every_api_route_needs_a_caller() {
    let (svc, store, _dir) = common::world().await;
    let cognito = PageAuth::Cognito {
        domain: "https://fleet.auth.eu-west-1.amazoncognito.com".into(),
        client_id: "abc123".into(),
        scopes: "openid email profile".into(),
    };
    let addr = serve(svc, store, cognito, None).await;
    let (status, head, page) = http(&addr, "GET", "/", None, None).await;
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("text/html"), "{head}");
    assert!(head.contains("connect-src 'self' https://fleet.auth.eu-west-1.amazoncognito.com"), "{head}");
    let config = page.split(r#"<script id="ota-config" type="application/json">"#).nth(1).unwrap();
    let config: Value = serde_json::from_str(config.split("</script>").next().unwrap()).unwrap();
    assert_eq!(config["auth"]["kind"], "cognito");
    assert_eq!(config["auth"]["client_id"], "abc123");
    assert_eq!(config["model"], Value::Null);
    assert_eq!(http(&addr, "GET", "/api/health", None, None).await.0, 200);
    for (method, path) in [
        ("GET", "/api/whoami"),
        ("GET", "/api/devices"),
        ("GET", "/api/rollouts"),
        ("POST", "/api/chat"),
        ("POST", "/api/plans/plan-1/start"),
        ("GET", "/api/rollouts/x/stream"),
    ] {
        let (status, head, body) = http(&addr, method, path, None, Some(&json!({"message": "hi"}))).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "unauthenticated");
    }
}

#[tokio::test]
async fn the_confirm_button_starts_exactly_the_plan_shown_and_only_for_an_operator() {
    let (svc, store, _dir) = common::world().await;
    let addr = serve(svc.clone(), store, PageAuth::Token, None).await;
    let ask = json!({"message": "Update all pet_feeder devices to the latest firmware"});
    let (status, reply) = json_call(&addr, "POST", "/api/chat", "operator", Some(ask)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["answered_by"], "intent");
    assert_eq!(reply["model_calls"], 0);
    assert_eq!(reply["pending"]["kind"], "start", "{reply}");
    let session = reply["session_id"].as_str().unwrap().to_string();
    let plan_id = reply["plan"]["plan_id"].as_str().unwrap().to_string();
    let request = reply["plan"]["request"].clone();
    let admin = Caller::new("root", [Role::Admin]);
    let rollouts = || async { svc.list_rollouts(&admin, &RolloutQuery::default()).await.unwrap() };
    assert!(rollouts().await.is_empty(), "planning starts nothing");

    // An id that is not this session's pending plan, with no plan in the body: nothing to run.
    let (status, err) =
        json_call(&addr, "POST", "/api/plans/plan-0000/start", "operator", Some(json!({"session_id": session}))).await;
    assert_eq!(status, 404, "{err}");
    // The page's plan under another id: the service re-plans and refuses the mismatch.
    let (status, refused) =
        json_call(&addr, "POST", "/api/plans/plan-0000/start", "operator", Some(json!({"request": request.clone()})))
            .await;
    assert_eq!(status, 200, "{refused}");
    assert!(refused["error"].is_string(), "{refused}");
    assert!(rollouts().await.is_empty());
    // A viewer's click is refused by the service.
    let (_, refused) = json_call(
        &addr,
        "POST",
        &format!("/api/plans/{plan_id}/start"),
        "viewer",
        Some(json!({"request": request.clone()})),
    )
    .await;
    assert_eq!(refused["error"], "forbidden", "{refused}");
    assert!(rollouts().await.is_empty());
    // The operator's click in the session starts it.
    let (status, started) = json_call(
        &addr,
        "POST",
        &format!("/api/plans/{plan_id}/start"),
        "operator",
        Some(json!({"session_id": session})),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["answered_by"], "confirmation");
    assert_eq!(started["rollouts"].as_array().map(Vec::len), Some(1), "{started}");
    assert_eq!(rollouts().await.len(), 1);
    // "yes" afterwards has nothing to confirm and starts nothing new.
    let (_, yes) =
        json_call(&addr, "POST", "/api/chat", "operator", Some(json!({"message": "yes", "session_id": session}))).await;
    assert!(yes["reply"].as_str().unwrap().contains("Nothing is waiting"), "{yes}");
    assert_eq!(rollouts().await.len(), 1);
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let (svc, store, _dir) = common::world().await;
    let addr = serve(svc, store, PageAuth::Token, None).await;
    let (status, _, body) = http(&addr, "POST", "/api/chat", Some("operator"), None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "invalid");
    let (status, err) = json_call(&addr, "POST", "/api/chat", "operator", Some(json!({"message": "   "}))).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid")), "{err}");
    let (status, err) =
        json_call(&addr, "POST", "/api/chat", "operator", Some(json!({"message": "hi", "session_id": "../x"}))).await;
    assert_eq!(status, 400, "{err}");
    let long = "a".repeat(5_000);
    let (status, _) = json_call(&addr, "POST", "/api/chat", "operator", Some(json!({"message": long}))).await;
    assert_eq!(status, 400);
    let (status, err) = json_call(&addr, "GET", "/api/devices?type=Not-A-Type", "viewer", None).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = json_call(&addr, "GET", "/api/rollouts/update-nope", "viewer", None).await;
    assert_eq!(status, 404, "{err}");
}

/// Reads SSE events from an open stream until `stop` is seen; returns (event, data) pairs.
async fn read_events(conn: &mut TcpStream, stop: &str) -> Vec<(String, Value)> {
    let mut raw = String::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(n) => n.unwrap(),
            Err(_) => panic!("no `{stop}` event in time; read so far: {raw}"),
        };
        if n == 0 {
            break;
        }
        raw.push_str(&String::from_utf8_lossy(&buf[..n]));
        let marker = format!("event: {stop}\n");
        if raw.find(&marker).is_some_and(|at| raw[at..].contains("\n\n")) {
            break;
        }
    }
    let mut events = Vec::new();
    let mut name = String::new();
    for line in raw.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            events.push((std::mem::take(&mut name), serde_json::from_str(d).unwrap()));
        }
    }
    events
}

async fn start_pet_feeders(addr: &str) -> String {
    let ask = json!({"message": "Update all pet_feeder devices to the latest firmware"});
    let (_, reply) = json_call(addr, "POST", "/api/chat", "operator", Some(ask)).await;
    let session = reply["session_id"].as_str().unwrap().to_string();
    let (_, started) =
        json_call(addr, "POST", "/api/chat", "operator", Some(json!({"message": "confirm", "session_id": session})))
            .await;
    started["rollouts"][0]["id"].as_str().unwrap_or_else(|| panic!("{started}")).to_string()
}

#[tokio::test]
async fn the_progress_stream_reports_changes_and_ends_with_the_rollout() {
    let (svc, store, _dir) = common::world().await;
    let addr = serve(svc, store, PageAuth::Token, None).await;
    let id = start_pet_feeders(&addr).await;
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let path = format!("/api/rollouts/{id}/stream");
    conn.write_all(request("GET", &path, Some("viewer"), None).as_bytes()).await.unwrap();
    let first = read_events(&mut conn, "progress").await;
    assert_eq!(first[0].0, "progress", "{first:?}");
    assert_eq!(first[0].1["status"], "IN_PROGRESS");
    assert_eq!(first[0].1["counts"]["total"], 3, "{first:?}");
    let (status, cancelled) =
        json_call(&addr, "POST", &format!("/api/rollouts/{id}/cancel"), "operator", Some(json!({"reason": "test"})))
            .await;
    assert_eq!(status, 200, "{cancelled}");
    let rest = read_events(&mut conn, "end").await;
    let (name, last) = rest.last().unwrap();
    assert_eq!(name, "end", "{rest:?}");
    assert_eq!(last["status"], "CANCELED");
    assert_eq!(last["status_reason"], "test");
    assert_eq!(last["counts"]["canceled"], 3, "{last}");
}

#[tokio::test]
async fn a_stream_past_its_time_limit_says_so_and_the_rollout_goes_on() {
    let (svc, store, _dir) = common::world().await;
    let addr = serve(svc, store, PageAuth::Token, Some(Duration::from_millis(300))).await;
    let id = start_pet_feeders(&addr).await;
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(request("GET", &format!("/api/rollouts/{id}/stream"), Some("viewer"), None).as_bytes())
        .await
        .unwrap();
    let events = read_events(&mut conn, "limit").await;
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "limit", "{events:?}");
    assert_eq!(last["status"], "IN_PROGRESS");
}

#[tokio::test]
async fn ask_answers_every_plan_the_same_way_and_says_what_happened_to_each_item() {
    let (svc, store, _dir) = common::world().await;
    let addr = serve(svc, store, PageAuth::Token, None).await;
    // Nothing to start (the gate is closed): the plan, 200, `started: null`, never a 422.
    let refused = json!({"prompt": "Update all beehive_scale devices to the latest firmware", "execute": true});
    let (status, answer) = json_call(&addr, "POST", "/api/ask", "operator", Some(refused)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["started"], Value::Null, "{answer}");
    assert_eq!(answer["items"], json!([]), "{answer}");
    assert_eq!(answer["plan"]["refusals"][0]["target"], "beehive_scale", "{answer}");
    assert_eq!(answer["summary"], answer["plan"]["message"]);
    // Without execute it only plans.
    let prompt = "Update all pet_feeder devices to the latest firmware";
    let (status, planned) = json_call(&addr, "POST", "/api/ask", "operator", Some(json!({"prompt": prompt}))).await;
    assert_eq!((status, &planned["started"]), (200, &Value::Null), "{planned}");
    let plan_id = planned["plan"]["plan_id"].as_str().unwrap().to_string();
    // Started, bound to the plan shown.
    let start = json!({"prompt": prompt, "execute": true, "plan_id": plan_id});
    let (status, started) = json_call(&addr, "POST", "/api/ask", "operator", Some(start)).await;
    assert_eq!(status, 200, "{started}");
    let id = started["items"][0]["rollout_id"].as_str().unwrap().to_string();
    assert_eq!(started["items"][0]["result"], "started", "{started}");
    assert_eq!(started["summary"], format!("started {id} (pet_feeder)"));
    assert_eq!(started["started"]["rollouts"][0]["id"], id.as_str());
    // Again while it runs: the same rollout, said to be already running since it started.
    let again = json!({"prompt": prompt, "execute": true});
    let (_, running) = json_call(&addr, "POST", "/api/ask", "operator", Some(again.clone())).await;
    assert_eq!(running["items"][0]["result"], "already_running", "{running}");
    assert_eq!(running["items"][0]["rollout_id"], id.as_str());
    assert!(
        running["summary"].as_str().unwrap().starts_with(&format!("already running {id} (pet_feeder), started at "))
    );
    // Each device's execution, with the reason it reported (none yet).
    let (status, shown) = json_call(&addr, "GET", &format!("/api/rollouts/{id}"), "viewer", None).await;
    assert_eq!(status, 200, "{shown}");
    let executions = shown["executions"].as_array().unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(executions.len(), 3, "{shown}");
    assert_eq!(executions[0], json!({"thing": "pet_feeder-01", "status": "QUEUED", "reason": null}));
    // Once it ended, the same words start a new rollout with a new id.
    let (status, _) = json_call(&addr, "POST", &format!("/api/rollouts/{id}/cancel"), "operator", None).await;
    assert_eq!(status, 200);
    let (_, next) = json_call(&addr, "POST", "/api/ask", "operator", Some(again)).await;
    assert_eq!(next["items"][0]["result"], "started", "{next}");
    assert_eq!(next["items"][0]["rollout_id"], format!("{id}-2"), "{next}");
}

#[tokio::test]
async fn a_session_of_another_subject_is_refused_and_the_owners_confirmation_survives() {
    let (svc, store, _dir) = common::world().await;
    let addr = serve(svc.clone(), store, PageAuth::Token, None).await;
    let ask = json!({"message": "Update all pet_feeder devices to the latest firmware"});
    let (_, reply) = json_call(&addr, "POST", "/api/chat", "operator", Some(ask)).await;
    assert_eq!(reply["pending"]["kind"], "start", "{reply}");
    let session = reply["session_id"].as_str().unwrap().to_string();
    // Another subject (the viewer) naming that session is neither answered nor saved.
    let hello = json!({"message": "hello", "session_id": session});
    let (status, err) = json_call(&addr, "POST", "/api/chat", "viewer", Some(hello)).await;
    assert_eq!((status, err["error"].as_str()), (409, Some("conflict")), "{err}");
    let no = json!({"message": "no", "session_id": session});
    assert_eq!(json_call(&addr, "POST", "/api/chat", "admin", Some(no)).await.0, 409);
    // The owner's "yes" still finds the plan it was shown, and says what it started.
    let yes = json!({"message": "yes", "session_id": session});
    let (status, started) = json_call(&addr, "POST", "/api/chat", "operator", Some(yes)).await;
    assert_eq!(status, 200, "{started}");
    let id = started["rollouts"][0]["id"].as_str().unwrap_or_else(|| panic!("{started}")).to_string();
    assert_eq!(started["items"][0]["result"], "started", "{started}");
    assert_eq!(started["reply"], format!("Started {id} (pet_feeder). Progress follows below."), "{started}");
    // Asked again while it runs: the plan says so and there is nothing to confirm.
    let ask = json!({"message": "Update all pet_feeder devices to the latest firmware", "session_id": session});
    let (_, again) = json_call(&addr, "POST", "/api/chat", "operator", Some(ask)).await;
    assert!(again.get("pending").is_none(), "{again}");
    let text = again["reply"].as_str().unwrap();
    assert!(text.contains(&id) && text.contains("Nothing new would start"), "{text}");
}

/// Device cards, command plans with their confirmation and telemetry charts come with their
/// plan in the chat's answer; the command card's confirm goes through `POST /api/ask` with the
/// plan id, and `GET /api/commands/{id}` follows the run.
#[tokio::test]
async fn the_chat_answers_device_questions_commands_and_telemetry_with_their_plans() {
    let (svc, store, _dir) = common::world().await;
    let t = ota_core::names::DeviceType::parse("smart_plug").unwrap();
    let thing = ota_core::names::ThingName::parse("smart_plug-01").unwrap();
    svc.backend().telemetry.append(ota_core::demo::telemetry_history(&t, &thing, svc.now())).await.unwrap();
    let addr = serve(svc.clone(), store, PageAuth::Token, None).await;
    let chat = |message: &str| json!({ "message": message });

    let (status, reply) = json_call(&addr, "POST", "/api/chat", "viewer", Some(chat("Is pet_feeder-03 online?"))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["answered_by"], "intent");
    assert_eq!(reply["plan"]["action"], "device_status", "{reply}");
    assert_eq!(reply["plan"]["devices"][0]["thing"], "pet_feeder-03", "{reply}");
    assert_eq!(reply["plan"]["devices"][0]["location"], "factory-floor-2", "{reply}");

    let (_, reply) = json_call(&addr, "POST", "/api/chat", "viewer", Some(chat("telemetry of smart_plug-01"))).await;
    assert_eq!(reply["plan"]["action"], "telemetry", "{reply}");
    let series = reply["plan"]["telemetry"].as_array().unwrap();
    assert_eq!(series.iter().map(|s| s["metric"].as_str().unwrap()).collect::<Vec<_>>(), ["energy_kwh", "power_w"]);
    assert!(series[0]["points"].as_array().unwrap().len() >= 24, "{reply}");

    // A viewer may not plan a command: refused, no card.
    let (_, refused) = json_call(&addr, "POST", "/api/chat", "viewer", Some(chat("Reboot pet_feeder-03"))).await;
    assert_eq!(refused["error"], "forbidden", "{refused}");
    assert!(refused.get("plan").is_none(), "{refused}");

    let (_, reply) = json_call(&addr, "POST", "/api/chat", "operator", Some(chat("Reboot pet_feeder-03"))).await;
    let plan = &reply["plan"];
    assert_eq!(plan["action"], "command", "{reply}");
    assert_eq!(plan["commands"], json!([{"thing": "pet_feeder-03", "command": "reboot", "parameters": {}}]));
    let plan_id = plan["plan_id"].as_str().unwrap().to_string();
    let admin = Caller::new("root", [Role::Admin]);
    let runs = || async { svc.list_commands(&admin, &Default::default()).await.unwrap() };
    assert!(runs().await.is_empty(), "planning sends nothing");

    // Another plan id, or a viewer: refused, nothing sent.
    let confirm = |id: &str| json!({"prompt": "Reboot pet_feeder-03", "execute": true, "plan_id": id});
    let (status, err) = json_call(&addr, "POST", "/api/ask", "operator", Some(confirm("cplan-000000000000"))).await;
    assert_eq!((status, &err["error"]), (409, &json!("conflict")), "{err}");
    let (status, err) = json_call(&addr, "POST", "/api/ask", "viewer", Some(confirm(&plan_id))).await;
    assert_eq!((status, &err["error"]), (403, &json!("forbidden")), "{err}");
    assert!(runs().await.is_empty());
    let (status, sent) = json_call(&addr, "POST", "/api/ask", "operator", Some(confirm(&plan_id))).await;
    assert_eq!(status, 200, "{sent}");
    let run = &sent["command"]["run"];
    assert_eq!(run["plan_id"], plan_id.as_str(), "{sent}");
    assert_eq!(run["executions"][0]["thing"], "pet_feeder-03", "{sent}");
    let id = run["id"].as_str().unwrap();
    let (status, shown) = json_call(&addr, "GET", &format!("/api/commands/{id}"), "viewer", None).await;
    assert_eq!((status, &shown["id"]), (200, &json!(id)), "{shown}");
    assert_eq!(runs().await.len(), 1);
    let (status, _) = json_call(&addr, "GET", "/api/commands/cmd-000000000000-1", "viewer", None).await;
    assert_eq!(status, 404);
}
