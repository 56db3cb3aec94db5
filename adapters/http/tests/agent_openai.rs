//! The chat assistant's agent loop end to end with a real OpenAI-compatible provider over HTTP:
//! `ota_openai::OpenAiChat` talks to a scripted chat-completions server (axum on 127.0.0.1, real
//! JSON), the tools are `ota_mcp::ChatTools` (the MCP server's tools in process), and the service
//! runs over the local backend (SQLite and a firmware folder in a temp dir) with the demo's
//! firmware and devices for three types.
//!
//! Each script answers by step (the number of completions asked so far) and may look at the
//! messages it received, the way a model reads tool results. The prompts are ones the intent
//! engine does not understand, so the model path is taken.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ota_core::agent::{AnsweredBy, Assistant, ChatReply, MemorySessions, PendingAction, ToolTrace};
use ota_core::auth::{Caller, Role};
use ota_core::rollout::{Rollout, RolloutQuery};
use ota_core::service::FleetManager;
use ota_mcp::{ChatTools, OtaMcp};
use ota_openai::{OpenAiChat, OpenAiConfig};
use serde_json::{Value, json};

/// A request the intent engine does not understand. (Questions it answers itself unless they
/// ask for reasons or advice, or name nothing: see `common_requests_skip_the_model…`.)
const PROMPT: &str = "my cat keeps complaining the feeder is slow, fix it for me";

/// What the scripted model answers at `step` (0-based), given the request body it received.
type Script = Arc<dyn Fn(usize, &Value) -> Value + Send + Sync>;

#[derive(Clone)]
struct ModelState {
    script: Script,
    received: Arc<Mutex<Vec<Value>>>,
}

/// A scripted OpenAI-compatible chat-completions server on 127.0.0.1.
struct FakeModel {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Value>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl FakeModel {
    async fn start(script: impl Fn(usize, &Value) -> Value + Send + Sync + 'static) -> FakeModel {
        async fn complete(State(state): State<ModelState>, body: Bytes) -> Response {
            let body: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return (StatusCode::BAD_REQUEST, format!("not JSON: {e}")).into_response(),
            };
            let step = {
                let mut r = state.received.lock().unwrap();
                r.push(body.clone());
                r.len() - 1
            };
            let answer = (state.script)(step, &body);
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], answer.to_string()).into_response()
        }
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = ModelState { script: Arc::new(script), received: received.clone() };
        let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        FakeModel { addr, received, stop: Some(stop) }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request body received, in order.
    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

/// A completion that calls tools: `(name, arguments JSON text)`, ids `call_{step}_{n}`.
fn tool_calls(step: usize, calls: &[(&str, &str)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(n, (name, args))| {
            json!({"id": format!("call_{step}_{n}"), "type": "function", "function": {"name": name, "arguments": args}})
        })
        .collect();
    json!({
        "id": format!("chatcmpl-{step}"), "object": "chat.completion", "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "tool_calls",
                     "message": {"role": "assistant", "content": null, "tool_calls": calls}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    })
}

/// A completion with text only.
fn text(step: usize, text: &str) -> Value {
    json!({
        "id": format!("chatcmpl-{step}"), "object": "chat.completion", "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    })
}

/// The messages of a request body.
fn messages(body: &Value) -> &Vec<Value> {
    body["messages"].as_array().expect("messages")
}

/// The `tool` messages of a request body, in order.
fn tool_results(body: &Value) -> Vec<&Value> {
    messages(body).iter().filter(|m| m["role"] == "tool").collect()
}

/// The last message of a request body.
fn last(body: &Value) -> &Value {
    messages(body).last().expect("a message")
}

fn assistant(svc: &Arc<FleetManager>, base_url: &str) -> Assistant {
    let model = OpenAiChat::new(
        OpenAiConfig::new(base_url, "scripted-model")
            .with_api_key("sk-agent-test")
            .with_timeout(Duration::from_secs(20)),
    )
    .unwrap();
    let tools = ChatTools::new(OtaMcp::new(svc.clone(), None));
    Assistant::new(svc.clone(), Arc::new(MemorySessions::default())).with_model(Arc::new(model), Arc::new(tools))
}

fn operator() -> Caller {
    Caller::new("olivia", [Role::Operator])
}

async fn rollouts(svc: &FleetManager) -> Vec<Rollout> {
    svc.backend().rollouts.list(&RolloutQuery::default()).await.unwrap()
}

fn trace(name: &str, ok: bool, executed: bool) -> ToolTrace {
    ToolTrace { name: name.to_string(), ok, executed }
}

fn assert_model_reply(r: &ChatReply) {
    assert_eq!(r.answered_by, AnsweredBy::Model, "{r:#?}");
}

/// The plan update for pet_feeder to its latest, as a model would write the arguments.
const PLAN_PET_FEEDER: &str = r#"{"device_types": ["pet_feeder"], "version": "latest"}"#;

#[tokio::test]
async fn the_model_looks_things_up_plans_and_the_person_confirms() {
    let (svc, _store, _dir) = common::world().await;
    let model = FakeModel::start(|step, body| match step {
        0 => tool_calls(step, &[("list_device_types", "{}")]),
        1 => {
            // The model reads the tool result before its next move.
            let result = last(body);
            assert_eq!(result["role"], "tool");
            assert_eq!(result["tool_call_id"], "call_0_0");
            tool_calls(step, &[("fleet_status", r#"{"device_type": "pet_feeder"}"#)])
        }
        2 => tool_calls(step, &[("plan_update", PLAN_PET_FEEDER)]),
        _ => {
            text(step, "Two pet feeders run 1.0.0 and one runs 2.0.0; I planned an update to 3.0.0. Confirm to start.")
        }
    })
    .await;
    let a = assistant(&svc, &model.base_url());
    let op = operator();

    let r = a.chat(&op, None, PROMPT).await.unwrap();
    assert_model_reply(&r);
    assert_eq!(r.model_calls, 4);
    assert_eq!(r.usage.input_tokens, 400);
    assert_eq!(r.usage.output_tokens, 40);
    assert_eq!(r.error, None);
    assert_eq!(
        r.tool_calls,
        [trace("list_device_types", true, true), trace("fleet_status", true, true), trace("plan_update", true, true)]
    );
    assert!(r.reply.contains("Confirm to start"), "{}", r.reply);
    let plan = r.plan.as_ref().expect("the plan is shown");
    assert_eq!(plan.deployments.len(), 1, "{plan:#?}");
    let d = &plan.deployments[0];
    assert_eq!(d.device_type.as_str(), "pet_feeder");
    assert_eq!(d.version.to_string(), "3.0.0");
    // -01 and -02 run 1.0.0, -03 2.0.0, -04 is already on the latest.
    assert_eq!(
        d.things.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        ["pet_feeder-01", "pet_feeder-02", "pet_feeder-03"]
    );
    let Some(PendingAction::Start { plan_id, .. }) = &r.pending else { panic!("a pending start: {:?}", r.pending) };
    assert_eq!(Some(plan_id), plan.plan_id.as_ref());
    assert!(r.rollouts.is_empty());
    assert!(rollouts(&svc).await.is_empty(), "nothing starts before the person confirms");

    // What the provider received: the system prompt, the person's words, the tools, and from
    // the second step on the real tool results.
    let got = model.received();
    assert_eq!(got.len(), 4);
    let first = &got[0];
    assert_eq!(first["model"], "scripted-model");
    assert_eq!(messages(first)[0]["role"], "system");
    assert!(messages(first)[0]["content"].as_str().unwrap().contains("olivia"));
    assert_eq!(last(first), &json!({"role": "user", "content": PROMPT}));
    let tool_names: Vec<&str> =
        first["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    for name in ["list_device_types", "fleet_status", "plan_update", "start_rollout", "list_firmware"] {
        assert!(tool_names.contains(&name), "{name} missing from {tool_names:?}");
    }
    let types_result = tool_results(&got[1])[0]["content"].as_str().unwrap();
    for t in common::TYPES {
        assert!(types_result.contains(t), "{t} missing from the list_device_types result: {types_result}");
    }
    // The assistant's tool-call turn is echoed back with its ids.
    let echoed = &messages(&got[1])[messages(&got[1]).len() - 2];
    assert_eq!(echoed["role"], "assistant");
    assert_eq!(echoed["tool_calls"][0]["id"], "call_0_0");
    assert_eq!(echoed["tool_calls"][0]["function"]["name"], "list_device_types");
    let status_result = tool_results(&got[2])[1]["content"].as_str().unwrap();
    assert!(status_result.contains("pet_feeder-03"), "{status_result}");
    let plan_result = tool_results(&got[3])[2]["content"].as_str().unwrap();
    assert!(plan_result.contains(plan_id.as_str()), "{plan_result}");

    // "yes" in the same session starts exactly that plan, with no model call.
    let yes = a.chat(&op, Some(&r.session_id), "yes").await.unwrap();
    assert_eq!(yes.answered_by, AnsweredBy::Confirmation, "{yes:#?}");
    assert_eq!(yes.model_calls, 0);
    assert_eq!(model.received().len(), 4);
    let started = rollouts(&svc).await;
    assert_eq!(started.len(), 1, "{started:#?}");
    assert_eq!(started[0].plan_id, *plan_id);
    assert_eq!(started[0].device_type.as_str(), "pet_feeder");
    assert_eq!(yes.rollouts.len(), 1);
}

#[tokio::test]
async fn malformed_tool_arguments_are_fed_back_and_the_model_corrects_itself() {
    let (svc, _store, _dir) = common::world().await;
    let model = FakeModel::start(|step, body| match step {
        0 => tool_calls(step, &[("plan_update", r#"{"device_type": "#)]),
        1 => {
            let result = last(body)["content"].as_str().unwrap();
            if result.contains("not valid JSON") {
                tool_calls(step, &[("list_firmware", r#"{"device_type": "pet_feeder"}"#)])
            } else {
                text(step, &format!("UNEXPECTED tool result: {result}"))
            }
        }
        _ => text(step, "pet_feeder firmware goes up to 3.0.0."),
    })
    .await;
    let a = assistant(&svc, &model.base_url());

    let r = a.chat(&operator(), None, PROMPT).await.unwrap();
    assert_model_reply(&r);
    assert_eq!(r.reply, "pet_feeder firmware goes up to 3.0.0.");
    assert_eq!(r.model_calls, 3);
    assert_eq!(r.tool_calls, [trace("plan_update", false, false), trace("list_firmware", true, true)]);
    let got = model.received();
    let fed_back = tool_results(&got[1])[0];
    assert_eq!(fed_back["tool_call_id"], "call_0_0");
    let content = fed_back["content"].as_str().unwrap();
    assert!(content.starts_with("ERROR: ") && content.contains("not valid JSON"), "{content}");
    // The malformed arguments are echoed back as written.
    assert_eq!(
        messages(&got[1])[messages(&got[1]).len() - 2]["tool_calls"][0]["function"]["arguments"],
        r#"{"device_type": "#
    );
    assert!(r.pending.is_none() && r.plan.is_none());
    assert!(rollouts(&svc).await.is_empty());
}

#[tokio::test]
async fn a_viewer_cannot_plan_or_start_whatever_the_model_asks() {
    let (svc, _store, _dir) = common::world().await;
    let model = FakeModel::start(|step, body| match step {
        0 => tool_calls(
            step,
            &[
                ("plan_update", PLAN_PET_FEEDER),
                (
                    "start_rollout",
                    r#"{"plan_id": "plan-0123456789abcdef", "device_types": ["pet_feeder"], "version": "latest"}"#,
                ),
            ],
        ),
        _ => {
            let results = tool_results(body);
            let all_refused = results.len() == 2
                && results.iter().all(|r| {
                    let c = r["content"].as_str().unwrap_or("");
                    c.contains("permission denied") && c.contains("operator")
                });
            text(step, if all_refused { "You need the operator role to plan or start updates." } else { "UNEXPECTED" })
        }
    })
    .await;
    let a = assistant(&svc, &model.base_url());
    let viewer = Caller::new("vic", [Role::Viewer]);

    let r = a.chat(&viewer, None, PROMPT).await.unwrap();
    assert_model_reply(&r);
    assert_eq!(
        r.reply,
        "You need the operator role to plan or start updates.",
        "tool results: {:#?}",
        model.received()
    );
    assert_eq!(r.model_calls, 2);
    assert_eq!(r.tool_calls.len(), 2);
    assert_eq!(r.tool_calls[0].name, "plan_update");
    assert!(!r.tool_calls[0].ok);
    assert_eq!(r.tool_calls[1], trace("start_rollout", false, false));
    assert!(r.pending.is_none(), "{:?}", r.pending);
    assert!(r.plan.is_none());
    assert!(rollouts(&svc).await.is_empty());

    // "yes" confirms nothing: there is nothing pending, and bare consent never goes to the model.
    let calls = model.received().len();
    let yes = a.chat(&viewer, Some(&r.session_id), "yes").await.unwrap();
    assert_eq!(yes.answered_by, AnsweredBy::Confirmation);
    assert_eq!(yes.model_calls, 0);
    assert!(yes.reply.contains("Nothing is waiting"), "{}", yes.reply);
    assert_eq!(model.received().len(), calls);
    assert!(rollouts(&svc).await.is_empty());
}

#[tokio::test]
async fn a_model_that_never_stops_calling_tools_hits_the_step_cap() {
    let (svc, _store, _dir) = common::world().await;
    let model = FakeModel::start(|step, _| tool_calls(step, &[("list_firmware", "{}")])).await;
    let a = assistant(&svc, &model.base_url());

    let r = a.chat(&operator(), None, PROMPT).await.unwrap();
    assert_model_reply(&r);
    assert_eq!(r.error.as_deref(), Some("step_cap"));
    let cap = ota_core::agent::AssistantOptions::default().max_steps;
    assert_eq!(r.model_calls as usize, cap);
    assert_eq!(model.received().len(), cap);
    assert_eq!(r.tool_calls, vec![trace("list_firmware", true, true); cap]);
    assert!(r.reply.contains("step cap") && r.reply.contains("Nothing was started or changed"), "{}", r.reply);
    assert!(r.pending.is_none());
    assert!(rollouts(&svc).await.is_empty());
}

#[tokio::test]
async fn a_provider_that_is_down_changes_nothing_and_says_so() {
    let (svc, _store, _dir) = common::world().await;
    // A port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let base = format!("http://{addr}/v1");
    let a = assistant(&svc, &base);

    let started = std::time::Instant::now();
    let r = a.chat(&operator(), None, PROMPT).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(r.answered_by, AnsweredBy::Fallback, "{r:#?}");
    assert_eq!(r.error.as_deref(), Some("model"));
    assert_eq!(r.model_calls, 1);
    assert!(r.reply.contains("the model provider is unavailable"), "{}", r.reply);
    assert!(r.reply.contains(&base), "{}", r.reply);
    assert!(r.reply.contains("Nothing was started or changed"), "{}", r.reply);
    assert!(!r.reply.contains("sk-agent-test"), "{}", r.reply);
    assert!(r.pending.is_none());
    assert!(rollouts(&svc).await.is_empty());
}

#[tokio::test]
async fn start_rollout_from_the_model_waits_for_the_persons_yes() {
    let (svc, _store, _dir) = common::world().await;
    let model = FakeModel::start(|step, body| match step {
        0 => tool_calls(step, &[("plan_update", PLAN_PET_FEEDER)]),
        1 => {
            // Take the plan_id from the plan_update result, as a model would, and try to start.
            let result = last(body)["content"].as_str().unwrap();
            let at = result.find("plan-").expect("a plan id in the result");
            let plan_id: String = result[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            let args = json!({"plan_id": plan_id, "device_types": ["pet_feeder"], "version": "latest"});
            tool_calls(step, &[("start_rollout", &args.to_string())])
        }
        _ => {
            let result = last(body)["content"].as_str().unwrap();
            text(
                step,
                if result.contains("NOT RUN YET") { "The update waits for your confirmation." } else { "UNEXPECTED" },
            )
        }
    })
    .await;
    let a = assistant(&svc, &model.base_url());
    let op = operator();

    let r = a.chat(&op, None, PROMPT).await.unwrap();
    assert_model_reply(&r);
    assert_eq!(r.reply, "The update waits for your confirmation.", "{:#?}", model.received().last());
    assert_eq!(r.model_calls, 3);
    assert_eq!(r.tool_calls, [trace("plan_update", true, true), trace("start_rollout", true, false)]);
    let plan = r.plan.as_ref().expect("the plan is shown");
    let Some(PendingAction::Start { plan_id, .. }) = &r.pending else { panic!("a pending start: {:?}", r.pending) };
    assert_eq!(Some(plan_id), plan.plan_id.as_ref());
    // The model asked for start_rollout with the right plan_id, and still nothing ran.
    let asked: Value = serde_json::from_str(
        messages(&model.received()[2]).iter().rev().find(|m| m["role"] == "assistant").unwrap()["tool_calls"][0]
            ["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(asked["plan_id"], json!(plan_id));
    assert!(r.rollouts.is_empty());
    assert!(rollouts(&svc).await.is_empty(), "start_rollout must not run on the model's word");

    let yes = a.chat(&op, Some(&r.session_id), "yes").await.unwrap();
    assert_eq!(yes.answered_by, AnsweredBy::Confirmation, "{yes:#?}");
    let started = rollouts(&svc).await;
    assert_eq!(started.len(), 1, "{started:#?}");
    assert_eq!(started[0].plan_id, *plan_id);
}

/// The intent engine answers what it understands without the model; an open question it would
/// answer only with the whole fleet's status goes to the model; a decline drops the plan.
#[tokio::test]
async fn common_requests_skip_the_model_and_open_questions_reach_it() {
    let (svc, _store, _dir) = common::world().await;
    let model =
        FakeModel::start(|step, _| text(step, "All 12 devices report in; 4 pet feeders could move to 3.0.0.")).await;
    let a = assistant(&svc, &model.base_url());
    let op = operator();

    let r = a.chat(&op, None, "Update all pet_feeder devices to the latest firmware").await.unwrap();
    assert_eq!((r.answered_by, r.model_calls), (AnsweredBy::Intent, 0), "{r:#?}");
    assert!(matches!(r.pending, Some(PendingAction::Start { .. })));
    let no = a.chat(&op, Some(&r.session_id), "no").await.unwrap();
    assert_eq!(no.answered_by, AnsweredBy::Confirmation);
    let yes = a.chat(&op, Some(&r.session_id), "yes").await.unwrap();
    assert!(yes.reply.contains("Nothing is waiting"), "a declined plan cannot be confirmed later: {}", yes.reply);
    let status = a.chat(&op, Some(&r.session_id), "Which pet_feeder devices are still on 1.x?").await.unwrap();
    assert_eq!((status.answered_by, status.model_calls), (AnsweredBy::Intent, 0), "{status:#?}");
    for common in [
        "Update all pet_feeder devices to 2.0.0",
        "Upgrade the whole fleet to the latest firmware",
        "Roll back pet_feeder-03 to 1.0.0",
        "How is the rollout going?",
        "Stop it",
        "List firmware",
        "Show fleet status",
        "Disable OTA for smart_plug",
    ] {
        let r = a.chat(&op, None, common).await.unwrap();
        assert_eq!(
            (r.answered_by, r.model_calls, r.usage.input_tokens),
            (AnsweredBy::Intent, 0, 0),
            "{common}: {r:#?}"
        );
    }
    assert!(model.received().is_empty(), "no model call so far");

    let open = a.chat(&op, Some(&r.session_id), "any advice?").await.unwrap();
    assert_model_reply(&open);
    assert_eq!(open.model_calls, 1);
    // The model sees the conversation so far, and never a pending plan it could confirm.
    let sent = model.received();
    let texts: Vec<String> =
        messages(&sent[0]).iter().filter_map(|m| m["content"].as_str().map(str::to_string)).collect();
    assert!(texts.iter().any(|t| t.contains("Which pet_feeder devices")), "{texts:#?}");
    assert!(rollouts(&svc).await.is_empty());
}

/// A slow model under a time budget (the Lambda's): no model call starts once the budget is
/// spent; the reply says so and nothing changed.
#[tokio::test]
async fn a_slow_model_runs_out_of_the_time_budget_and_changes_nothing() {
    let (svc, _store, _dir) = common::world().await;
    let model = FakeModel::start(|step, _| {
        std::thread::sleep(Duration::from_millis(250));
        tool_calls(step, &[("list_firmware", "{}")])
    })
    .await;
    let options = ota_core::agent::AssistantOptions {
        max_steps: 50,
        time_budget: Some(chrono::Duration::milliseconds(600)),
        ..Default::default()
    };
    let a = assistant(&svc, &model.base_url()).with_options(options);
    let r = a.chat(&operator(), None, PROMPT).await.unwrap();
    assert_eq!(r.error.as_deref(), Some("time_budget"), "{r:#?}");
    assert!(r.reply.contains("ran out of time"), "{}", r.reply);
    assert!((2..=5).contains(&r.model_calls), "stopped by the budget, not the cap: {}", r.model_calls);
    assert!(rollouts(&svc).await.is_empty());
}
