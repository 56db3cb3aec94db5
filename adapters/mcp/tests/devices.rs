//! The device-management tools through rmcp's own client over streamable HTTP (a test-only
//! middleware turns `x-test-role` and `x-test-groups` into the Caller, standing in for the
//! token verifier): `get_device_status`, `list_devices` with its filters, `send_command` (a
//! plan, confirmed by its plan_id), `get_command` and `get_telemetry`, each result checked
//! against the tool's output schema; and `tools/list`, which shows each caller only the tools
//! the policies in force can allow it (the default role matrix, the senior_operator example,
//! a policy that hides a tool by group), while a hidden tool called anyway is refused with the
//! policy's reason.
//!
//! The world: the in-memory backend with four types of the demo (four devices each, at the
//! demo's locations, air_quality_monitor-03 warning of PM2.5 drift), mailbox_notifier-04
//! offline, and a week of hourly telemetry for air_quality_monitor-01.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, Request};
use ota_core::auth::{Caller, Role};
use ota_core::authz::Authorizer;
use ota_core::demo;
use ota_core::device::OperationalState;
use ota_core::names::{DeviceType, ThingName};
use ota_core::service::{FleetManager, Settings};
use ota_mcp::OtaMcp;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorCode};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const TYPES: [&str; 4] = ["pet_feeder", "air_quality_monitor", "smart_plug", "mailbox_notifier"];

const DEFAULT_POLICIES: &str = ota_core::authz::DEFAULT_POLICIES;
const SENIOR_OPERATOR_REBOOT: &str = include_str!("../../../examples/senior_operator_reboot.cedar");

/// What a viewer sees: the reads (and `ask`, which plans or answers for a viewer).
const VIEWER_TOOLS: [&str; 11] = [
    "ask",
    "fleet_status",
    "get_command",
    "get_device",
    "get_device_status",
    "get_rollout",
    "get_telemetry",
    "list_device_types",
    "list_devices",
    "list_firmware",
    "list_rollouts",
];

/// What an operator sees besides the viewer's tools.
const OPERATOR_TOOLS: [&str; 5] = ["cancel_rollout", "plan_update", "rollback", "send_command", "start_rollout"];

async fn world(policies: Option<&str>) -> Arc<FleetManager> {
    let mut svc = FleetManager::new(ota_core::memory::backend(), Settings::default()).expect("valid settings");
    if let Some(text) = policies {
        svc = svc.with_authorizer(Arc::new(Authorizer::from_text(text, "test.cedar").expect("the policies validate")));
    }
    let admin = Caller::new("root", [Role::Admin]);
    demo::seed(&svc, &admin, &TYPES, 4, |t, v| format!("image {t} {v}").into_bytes()).await.unwrap();
    let registry = &svc.backend().registry;
    let thing = ThingName::parse("mailbox_notifier-04").unwrap();
    let mut offline = registry.get(&thing).await.unwrap().unwrap();
    offline.connected = false;
    offline.last_seen = Some(svc.now() - std::time::Duration::from_secs(11 * 3600));
    registry.upsert(offline).await.unwrap();
    let aq = DeviceType::parse("air_quality_monitor").unwrap();
    let history = demo::telemetry_history(&aq, &ThingName::parse("air_quality_monitor-01").unwrap(), svc.now());
    svc.backend().telemetry.append(history).await.unwrap();
    Arc::new(svc)
}

/// Serves the router on 127.0.0.1 behind a middleware that turns `x-test-role` (and the
/// comma-separated `x-test-groups`) into a Caller.
async fn serve_http(svc: Arc<FleetManager>) -> String {
    async fn attach_caller(
        mut req: Request<axum::body::Body>,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let headers = req.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (role, groups) = (header("x-test-role"), header("x-test-groups").unwrap_or_default());
        if let Some(role) = role {
            let roles: Vec<Role> = if role == "none" { Vec::new() } else { vec![Role::parse(&role).unwrap()] };
            let groups = groups.split(',').filter(|g| !g.is_empty()).map(str::to_string).collect::<Vec<_>>();
            req.extensions_mut().insert(Caller::new(format!("test-{role}"), roles).with_groups(groups));
        }
        next.run(req).await
    }
    let router = OtaMcp::new(svc, None).http_router(None).layer(axum::middleware::from_fn(attach_caller));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/mcp")
}

type Client = RunningService<RoleClient, ()>;

async fn client(url: &str, role: &str, groups: &[&str]) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = HashMap::new();
    headers.insert(HeaderName::from_static("x-test-role"), HeaderValue::from_str(role).unwrap());
    headers.insert(HeaderName::from_static("x-test-groups"), HeaderValue::from_str(&groups.join(",")).unwrap());
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_string()).custom_headers(headers);
    ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap()
}

async fn names(c: &Client) -> BTreeSet<String> {
    c.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn call(c: &Client, tool: &str, args: Value) -> Result<CallToolResult, ServiceError> {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    c.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args)).await
}

fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

/// Every tool's output schema, from an admin's list (who sees them all).
async fn validators(c: &Client) -> HashMap<String, jsonschema::Validator> {
    c.list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            let schema = Value::Object(t.output_schema.as_ref().expect("an output schema").as_ref().clone());
            let v = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
            (t.name.to_string(), v)
        })
        .collect()
}

/// Calls `tool`, checks its structured content against the tool's output schema, returns it
/// with whether the call was refused (`isError`).
async fn checked(c: &Client, s: &HashMap<String, jsonschema::Validator>, tool: &str, args: Value) -> (bool, Value) {
    let r = call(c, tool, args).await.unwrap_or_else(|e| panic!("{tool} failed: {e}"));
    assert!(!text(&r).is_empty(), "{tool} has no text");
    let content = r.structured_content.clone().unwrap_or_else(|| panic!("{tool}: no structured content"));
    let errors: Vec<String> = s[tool].iter_errors(&content).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{tool}: structuredContent does not match its outputSchema: {errors:?}\n{content:#}");
    (r.is_error == Some(true), content)
}

async fn ok(c: &Client, s: &HashMap<String, jsonschema::Validator>, tool: &str, args: Value) -> Value {
    let (refused, v) = checked(c, s, tool, args).await;
    assert!(!refused, "{tool} was refused: {v}");
    v
}

/// A refused call's structured content (`error`, `message`).
async fn refused(c: &Client, s: &HashMap<String, jsonschema::Validator>, tool: &str, args: Value) -> Value {
    let (refused, v) = checked(c, s, tool, args).await;
    assert!(refused, "{tool} should have been refused: {v}");
    v
}

async fn invalid_params(c: &Client, tool: &str, args: Value) -> String {
    match call(c, tool, args).await {
        Err(ServiceError::McpError(e)) => {
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{tool}: {e:?}");
            e.message.to_string()
        }
        other => panic!("{tool}: expected invalid params, got {other:?}"),
    }
}

fn things(v: &Value, key: &str) -> Vec<String> {
    v[key].as_array().unwrap().iter().map(|d| d["thing"].as_str().unwrap().to_string()).collect()
}

fn refusal<'a>(plan: &'a Value, target: &str) -> &'a str {
    plan["refusals"].as_array().unwrap().iter().find(|r| r["target"] == target).unwrap_or_else(|| panic!("{plan}"))
        ["reason"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn tools_list_shows_each_role_what_the_default_policies_allow() {
    let url = serve_http(world(None).await).await;
    let viewer = client(&url, "viewer", &[]).await;
    let operator = client(&url, "operator", &[]).await;
    let admin = client(&url, "admin", &[]).await;
    let nobody = client(&url, "none", &[]).await;
    assert_eq!(names(&viewer).await, set(&VIEWER_TOOLS));
    let mut op = set(&VIEWER_TOOLS);
    op.extend(set(&OPERATOR_TOOLS));
    assert_eq!(names(&operator).await, op);
    let mut all = op.clone();
    all.insert("set_ota_enabled".into());
    assert_eq!(names(&admin).await, all);
    assert!(names(&nobody).await.is_empty(), "a caller with no role sees no tool");

    // A hidden tool called anyway is refused by the service, which says why.
    let s = validators(&admin).await;
    let send = json!({ "command": "identify", "things": ["pet_feeder-01"] });
    let r = refused(&viewer, &s, "send_command", send.clone()).await;
    assert_eq!(r["error"], "forbidden", "{r}");
    assert!(r["message"].as_str().unwrap().contains("needs the operator role"), "{r}");
    let r = refused(&operator, &s, "set_ota_enabled", json!({ "device_type": "smart_plug", "enabled": false })).await;
    assert!(r["message"].as_str().unwrap().contains("admin"), "{r}");
    let r = refused(&nobody, &s, "get_device_status", json!({ "thing": "pet_feeder-01" })).await;
    assert_eq!(r["error"], "forbidden", "{r}");
    for c in [viewer, operator, admin, nobody] {
        c.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn tools_list_follows_the_policies_loaded() {
    // The example: only a senior_operator may reboot. Every operator still sees send_command
    // (other commands are theirs); reboot is refused with the policy's reason unless senior.
    let url = serve_http(world(Some(SENIOR_OPERATOR_REBOOT)).await).await;
    let operator = client(&url, "operator", &[]).await;
    let senior = client(&url, "operator", &["senior_operator"]).await;
    let senior_viewer = client(&url, "viewer", &["senior_operator"]).await;
    let admin = client(&url, "admin", &[]).await;
    let s = validators(&admin).await;
    let mut op = set(&VIEWER_TOOLS);
    op.extend(set(&OPERATOR_TOOLS));
    assert_eq!(names(&operator).await, op);
    assert_eq!(names(&senior).await, op);
    assert_eq!(names(&senior_viewer).await, set(&VIEWER_TOOLS), "the group alone grants nothing");
    let reboot = json!({ "command": "reboot", "things": ["pet_feeder-03"] });
    let r = refused(&operator, &s, "send_command", reboot.clone()).await;
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("only a senior_operator may reboot a device"), "{r}");
    assert!(message.contains("reboot-needs-senior-operator"), "{r}");
    let r = refused(&admin, &s, "send_command", reboot.clone()).await;
    assert!(r["message"].as_str().unwrap().contains("only a senior_operator"), "an admin is not senior either: {r}");
    let identify =
        ok(&operator, &s, "send_command", json!({ "command": "identify", "things": ["pet_feeder-03"] })).await;
    assert!(identify["plan_id"].is_string(), "{identify}");
    let plan = ok(&senior, &s, "send_command", reboot.clone()).await;
    assert_eq!(things(&plan, "targets"), ["pet_feeder-03"]);
    let started = ok(
        &senior,
        &s,
        "send_command",
        json!({ "command": "reboot", "things": ["pet_feeder-03"], "plan_id": plan["plan_id"] }),
    )
    .await;
    assert_eq!(started["created"], true, "{started}");
    let r = refused(&senior_viewer, &s, "send_command", reboot).await;
    assert!(r["message"].as_str().unwrap().contains("operator role"), "{r}");
    for c in [operator, senior, senior_viewer, admin] {
        c.cancel().await.unwrap();
    }

    // A policy that forbids commands to all but field engineers hides send_command from the
    // other operators (and only that tool); the call is refused with its reason.
    let field = format!(
        "{DEFAULT_POLICIES}\n@id(\"commands-field-engineers\")\n@reason(\"commands are for field engineers\")\nforbid (principal, action in [Action::\"SendCommand\", Action::\"SetDeviceState\"], resource)\nunless {{ principal.groups.contains(\"field_engineer\") }};\n"
    );
    let url = serve_http(world(Some(&field)).await).await;
    let operator = client(&url, "operator", &[]).await;
    let engineer = client(&url, "operator", &["field_engineer"]).await;
    let admin = client(&url, "admin", &["field_engineer"]).await;
    let s = validators(&admin).await;
    let seen = names(&operator).await;
    assert!(!seen.contains("send_command") && seen.contains("start_rollout"), "{seen:?}");
    assert_eq!(seen.len(), op.len() - 1);
    assert!(names(&engineer).await.contains("send_command"));
    let r = refused(&operator, &s, "send_command", json!({ "command": "identify", "things": ["pet_feeder-01"] })).await;
    assert!(r["message"].as_str().unwrap().contains("commands are for field engineers"), "{r}");
    ok(&engineer, &s, "send_command", json!({ "command": "identify", "things": ["pet_feeder-01"] })).await;
    for c in [operator, engineer, admin] {
        c.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn device_status_list_devices_and_telemetry_answer_a_viewer() {
    let url = serve_http(world(None).await).await;
    let viewer = client(&url, "viewer", &[]).await;
    let admin = client(&url, "admin", &[]).await;
    let s = validators(&admin).await;

    let st = ok(&viewer, &s, "get_device_status", json!({ "thing": "air_quality_monitor-03" })).await;
    assert_eq!(st["health"]["status"], "warning", "{st}");
    assert_eq!(st["health"]["message"], "PM2.5 sensor drift");
    assert_eq!(st["location"], "factory-floor-2");
    assert_eq!(st["state"], "active");
    assert_eq!(st["connectivity"], "online");
    let off = call(&viewer, "get_device_status", json!({ "thing": "mailbox_notifier-04" })).await.unwrap();
    assert!(text(&off).contains("offline") && text(&off).contains("never sent"), "{}", text(&off));
    let r = refused(&viewer, &s, "get_device_status", json!({ "thing": "pet_feeder-3" })).await;
    assert_eq!(r["error"], "not_found");
    assert!(r["message"].as_str().unwrap().contains("pet_feeder-03"), "close matches: {r}");
    assert!(invalid_params(&viewer, "get_device_status", json!({ "thing": "../x" })).await.contains("thing name"));

    let line7 = ok(&viewer, &s, "list_devices", json!({ "location": "line 7" })).await;
    assert_eq!(
        things(&line7, "devices"),
        ["air_quality_monitor-01", "mailbox_notifier-01", "pet_feeder-01", "smart_plug-01"]
    );
    let warn = ok(&viewer, &s, "list_devices", json!({ "health": "warning" })).await;
    assert_eq!(things(&warn, "devices"), ["air_quality_monitor-03"]);
    let offline = ok(&viewer, &s, "list_devices", json!({ "online": false })).await;
    assert_eq!(things(&offline, "devices"), ["mailbox_notifier-04"]);
    let r = call(&viewer, "list_devices", json!({ "online": false })).await.unwrap();
    assert!(text(&r).contains("mailbox_notifier-04 (mailbox_notifier) offline"), "{}", text(&r));
    let floor =
        ok(&viewer, &s, "list_devices", json!({ "location": "factory-floor-1", "device_type": "pet_feeder" })).await;
    assert_eq!(things(&floor, "devices"), ["pet_feeder-01", "pet_feeder-02"]);
    let none = ok(&viewer, &s, "list_devices", json!({ "state": "maintenance" })).await;
    assert!(things(&none, "devices").is_empty());
    assert_eq!(things(&ok(&viewer, &s, "list_devices", json!({})).await, "devices").len(), 16);
    assert!(
        invalid_params(&viewer, "list_devices", json!({ "health": "poorly" })).await.contains("ok, warning, error")
    );
    assert!(invalid_params(&viewer, "list_devices", json!({ "state": "asleep" })).await.contains("maintenance"));
    assert!(invalid_params(&viewer, "list_devices", json!({ "location": "/" })).await.contains("location"));
    assert_eq!(refused(&viewer, &s, "list_devices", json!({ "device_type": "toaster" })).await["error"], "not_found");

    let day = ok(
        &viewer,
        &s,
        "get_telemetry",
        json!({ "thing": "air_quality_monitor-01", "metric": "pm2_5_ugm3", "since": "24h" }),
    )
    .await;
    let points = day["points"].as_array().unwrap();
    assert!((24..=25).contains(&points.len()), "{}", points.len());
    assert!(points.iter().all(|p| p["values"].as_object().unwrap().keys().eq(["pm2_5_ugm3"])), "{day}");
    let week = ok(&viewer, &s, "get_telemetry", json!({ "thing": "air_quality_monitor-01" })).await;
    assert_eq!(week["points"].as_array().unwrap().len(), 7 * 24);
    let last = ok(&viewer, &s, "get_telemetry", json!({ "thing": "air_quality_monitor-01", "limit": 2 })).await;
    assert_eq!(last["points"][1], week["points"][7 * 24 - 1], "the newest points, oldest first");
    let empty = ok(&viewer, &s, "get_telemetry", json!({ "thing": "pet_feeder-01" })).await;
    assert!(empty["points"].as_array().unwrap().is_empty());
    for since in ["yesterday", "24", "0h"] {
        let msg =
            invalid_params(&viewer, "get_telemetry", json!({ "thing": "air_quality_monitor-01", "since": since }))
                .await;
        assert!(msg.contains("since"), "{since}: {msg}");
    }
    assert_eq!(refused(&viewer, &s, "get_telemetry", json!({ "thing": "pet_feeder-09" })).await["error"], "not_found");
    viewer.cancel().await.unwrap();
    admin.cancel().await.unwrap();
}

#[tokio::test]
async fn send_command_plans_then_sends_only_the_confirmed_plan() {
    let svc = world(None).await;
    let url = serve_http(svc.clone()).await;
    let op = client(&url, "operator", &[]).await;
    let admin = client(&url, "admin", &[]).await;
    let s = validators(&admin).await;

    let args = json!({ "command": "identify", "device_type": "pet_feeder", "location": "factory-floor-1" });
    let plan = ok(&op, &s, "send_command", args.clone()).await;
    assert_eq!(things(&plan, "targets"), ["pet_feeder-01", "pet_feeder-02"]);
    let plan_id = plan["plan_id"].as_str().unwrap().to_string();
    let r = call(&op, "send_command", args.clone()).await.unwrap();
    assert!(text(&r).contains("Nothing has been sent") && text(&r).contains(&plan_id), "{}", text(&r));
    let admin_caller = Caller::new("root", [Role::Admin]);
    assert!(svc.list_commands(&admin_caller, &Default::default()).await.unwrap().is_empty(), "a plan sends nothing");

    let mut confirm = args.clone();
    confirm["plan_id"] = json!(plan_id);
    let started = ok(&op, &s, "send_command", confirm.clone()).await;
    assert_eq!(started["created"], true, "{started}");
    let run_id = started["run"]["id"].as_str().unwrap().to_string();
    let again = ok(&op, &s, "send_command", confirm.clone()).await;
    assert_eq!(again["created"], false, "{again}");
    assert!(again["message"].as_str().unwrap().contains("already running"), "{again}");
    assert_eq!(again["run"]["id"], run_id.as_str());
    let mut stale = args.clone();
    stale["plan_id"] = json!("cplan-000000000000");
    assert_eq!(refused(&op, &s, "send_command", stale).await["error"], "conflict");

    let viewer = client(&url, "viewer", &[]).await;
    let run = ok(&viewer, &s, "get_command", json!({ "id": run_id })).await;
    assert_eq!(run["status"], "IN_PROGRESS");
    assert_eq!(things(&run, "executions"), ["pet_feeder-01", "pet_feeder-02"]);
    assert!(run["executions"].as_array().unwrap().iter().all(|e| e["state"] == "QUEUED"), "{run}");
    assert_eq!(refused(&viewer, &s, "get_command", json!({ "id": "cmd-000000000000-1" })).await["error"], "not_found");
    assert_eq!(svc.list_commands(&admin_caller, &Default::default()).await.unwrap().len(), 1);

    // Offline: refused in the plan, which has nothing to send.
    let off = ok(&op, &s, "send_command", json!({ "command": "reboot", "things": ["mailbox_notifier-04"] })).await;
    assert!(refusal(&off, "mailbox_notifier-04").contains("never sent to offline devices"), "{off}");
    assert!(off.get("plan_id").is_none(), "{off}");
    let r = call(&op, "send_command", json!({ "command": "reboot", "things": ["mailbox_notifier-04"] })).await.unwrap();
    assert!(text(&r).contains("Nothing can be sent"), "{}", text(&r));
    // A device in maintenance is left out of a selection.
    svc.set_device_state(
        &admin_caller,
        &ThingName::parse("smart_plug-02").unwrap(),
        OperationalState::Maintenance,
        "test",
    )
    .await
    .unwrap();
    let plugs = ok(&op, &s, "send_command", json!({ "command": "reboot", "device_type": "smart_plug" })).await;
    assert_eq!(things(&plugs, "targets"), ["smart_plug-01", "smart_plug-03", "smart_plug-04"]);
    assert!(refusal(&plugs, "smart_plug-02").contains("in maintenance"), "{plugs}");
    // Settings: undeclared, out of bounds; and a good one.
    let cfg = |p: Value| json!({ "command": "update_config", "things": ["smart_plug-01"], "parameters": p });
    let bad = ok(&op, &s, "send_command", cfg(json!({ "brightness": 3 }))).await;
    assert!(refusal(&bad, "smart_plug-01").contains("unknown setting \"brightness\""), "{bad}");
    let bad = ok(&op, &s, "send_command", cfg(json!({ "sample_rate_seconds": 0 }))).await;
    assert!(refusal(&bad, "smart_plug-01").contains("out of bounds"), "{bad}");
    let good = ok(&op, &s, "send_command", cfg(json!({ "sample_rate_seconds": 10, "log_level": "debug" }))).await;
    assert_eq!(things(&good, "targets"), ["smart_plug-01"]);
    // Malformed requests are invalid params.
    let unknown =
        invalid_params(&op, "send_command", json!({ "command": "frobnicate", "things": ["pet_feeder-01"] })).await;
    assert!(unknown.contains("not a command ota knows"), "{unknown}");
    let none = invalid_params(&op, "send_command", json!({ "command": "reboot" })).await;
    assert!(none.contains("targets"), "{none}");
    let t = invalid_params(
        &op,
        "send_command",
        json!({ "command": "reboot", "things": ["pet_feeder-01"], "timeout_seconds": 0 }),
    )
    .await;
    assert!(t.contains("86400"), "{t}");
    // Nothing else was started by any of it.
    assert_eq!(svc.list_commands(&admin_caller, &Default::default()).await.unwrap().len(), 1);
    for c in [op, admin, viewer] {
        c.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn the_chat_reads_devices_and_only_previews_commands() {
    use ota_core::agent::{ToolEffect, Toolbox};
    let svc = world(None).await;
    let tools = ota_mcp::ChatTools::new(OtaMcp::new(svc.clone(), None));
    let effect = |name: &str| tools.specs().into_iter().find(|s| s.name == name).map(|s| s.effect);
    assert_eq!(effect("send_command"), Some(ToolEffect::Change));
    for read in ["get_device_status", "list_devices", "get_command", "get_telemetry"] {
        assert_eq!(effect(read), Some(ToolEffect::Read), "{read}");
    }
    let viewer = Caller::new("vic", [Role::Viewer]);
    let operator = Caller::new("ana", [Role::Operator]);
    let status = tools.call(&viewer, "get_device_status", &json!({ "thing": "air_quality_monitor-03" })).await;
    assert!(status.ok && status.text.contains("PM2.5 sensor drift"), "{}", status.text);
    let offline = tools.call(&viewer, "list_devices", &json!({ "online": false })).await;
    assert!(offline.ok && offline.text.contains("mailbox_notifier-04"), "{}", offline.text);
    let send = json!({ "command": "identify", "things": ["pet_feeder-01"] });
    assert!(!tools.call(&operator, "send_command", &send).await.ok, "a change never runs through call");
    let mut confirm = send.clone();
    confirm["plan_id"] = json!("cplan-000000000000");
    let (out, pending) = tools.preview(&operator, "send_command", &confirm).await;
    assert!(out.ok && out.data["plan_id"].is_string() && pending.is_none(), "{}", out.text);
    let admin = Caller::new("root", [Role::Admin]);
    assert!(svc.list_commands(&admin, &Default::default()).await.unwrap().is_empty(), "a preview sends nothing");
}
