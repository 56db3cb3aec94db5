//! `OpenAiChat` against a real HTTP server on 127.0.0.1: an axum router that records every
//! request (its JSON body and `Authorization` header) and answers scripted responses. JSON is
//! always parsed before comparing, never compared as text.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ota_core::agent::{ChatMessage, ChatModel, ChatRequest, ModelError, ToolCall, ToolEffect, ToolSpec, Usage};
use ota_openai::{OpenAiChat, OpenAiConfig};
use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Script {
    /// Answers in order; the last one repeats.
    answers: Vec<(StatusCode, String)>,
    received: Vec<Received>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Script>>);

struct Server {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Server {
    /// A server answering `answers` in order (the last repeats).
    async fn start(answers: Vec<(StatusCode, String)>) -> Server {
        let shared = Shared::default();
        shared.0.lock().unwrap().answers = answers;
        async fn handle(
            State(shared): State<Shared>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            let text = |h| headers.get(h).and_then(|v: &axum::http::HeaderValue| v.to_str().ok()).map(str::to_string);
            let body: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({"unparsable": true}));
            let mut s = shared.0.lock().unwrap();
            s.received.push(Received {
                path: uri.path().to_string(),
                authorization: text(header::AUTHORIZATION),
                content_type: text(header::CONTENT_TYPE),
                body,
            });
            let n = s.received.len() - 1;
            let (status, answer) = s.answers.get(n).or(s.answers.last()).cloned().expect("an answer");
            (status, [(header::CONTENT_TYPE, "application/json")], answer).into_response()
        }
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .fallback(|uri: axum::http::Uri| async move { (StatusCode::NOT_FOUND, format!("no route {uri}")) })
            .with_state(shared.clone());
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
        Server { addr, shared, stop: Some(stop) }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.shared.0.lock().unwrap().received.clone()
    }
}

fn ok(body: Value) -> (StatusCode, String) {
    (StatusCode::OK, body.to_string())
}

fn text_answer(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 101, "completion_tokens": 7, "total_tokens": 108}
    })
}

fn chat(base_url: &str, key: Option<&str>) -> OpenAiChat {
    let mut cfg = OpenAiConfig::new(base_url, "test-model").with_timeout(Duration::from_secs(10));
    if let Some(k) = key {
        cfg = cfg.with_api_key(k);
    }
    OpenAiChat::new(cfg).unwrap()
}

fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "list_device_types".into(),
            description: "Lists device types".into(),
            input_schema: json!({"type": "object", "properties": {}}),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "plan_update".into(),
            description: "Plans an update".into(),
            input_schema: json!({
                "type": "object",
                "properties": {"device_type": {"type": "string"}, "version": {"type": "string"}},
                "required": ["device_type"]
            }),
            effect: ToolEffect::Read,
        },
    ]
}

fn hello() -> Vec<ChatMessage> {
    vec![ChatMessage::user("hello")]
}

async fn complete(model: &OpenAiChat, messages: &[ChatMessage]) -> Result<ota_core::agent::ChatResponse, ModelError> {
    model.complete(ChatRequest { system: "You are a test.", messages, tools: &[] }).await
}

#[tokio::test]
async fn the_request_carries_the_conversation_tool_results_and_tools() {
    let server = Server::start(vec![ok(text_answer("done"))]).await;
    let model = chat(&server.base_url(), Some("sk-test-123"));
    let messages = vec![
        ChatMessage::user("what's up with my feeders?"),
        ChatMessage::Assistant {
            text: String::new(),
            tool_calls: vec![
                ToolCall { id: "call_a".into(), name: "list_device_types".into(), arguments: "{}".into() },
                ToolCall {
                    id: "call_b".into(),
                    name: "plan_update".into(),
                    arguments: r#"{"device_type": "pet_feeder"}"#.into(),
                },
            ],
        },
        ChatMessage::Tool {
            call_id: "call_a".into(),
            name: "list_device_types".into(),
            content: "pet_feeder: 5 devices".into(),
            is_error: false,
        },
        ChatMessage::Tool {
            call_id: "call_b".into(),
            name: "plan_update".into(),
            content: "permission denied".into(),
            is_error: true,
        },
        ChatMessage::assistant("The plan was refused."),
        ChatMessage::user("ok, thanks"),
    ];
    let tools = specs();
    let r = model.complete(ChatRequest { system: "SYSTEM PROMPT", messages: &messages, tools: &tools }).await.unwrap();
    assert_eq!(r.text, "done");

    let got = server.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.authorization.as_deref(), Some("Bearer sk-test-123"));
    assert!(req.content_type.as_deref().unwrap_or("").starts_with("application/json"), "{:?}", req.content_type);
    let body = &req.body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], false);
    assert_eq!(body["tool_choice"], "auto");
    let expected_messages = json!([
        {"role": "system", "content": "SYSTEM PROMPT"},
        {"role": "user", "content": "what's up with my feeders?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "list_device_types", "arguments": "{}"}},
            {"id": "call_b", "type": "function",
             "function": {"name": "plan_update", "arguments": "{\"device_type\": \"pet_feeder\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "pet_feeder: 5 devices"},
        {"role": "tool", "tool_call_id": "call_b", "content": "ERROR: permission denied"},
        {"role": "assistant", "content": "The plan was refused."},
        {"role": "user", "content": "ok, thanks"}
    ]);
    assert_eq!(body["messages"], expected_messages);
    let tools_json = body["tools"].as_array().unwrap();
    assert_eq!(tools_json.len(), 2);
    assert_eq!(
        tools_json[0],
        json!({"type": "function", "function": {
            "name": "list_device_types", "description": "Lists device types",
            "parameters": {"type": "object", "properties": {}}
        }})
    );
    assert_eq!(tools_json[1]["function"]["name"], "plan_update");
    assert_eq!(tools_json[1]["function"]["parameters"]["required"], json!(["device_type"]));
    // Nothing else is sent.
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["messages", "model", "stream", "tool_choice", "tools"]);
}

#[tokio::test]
async fn a_text_reply_with_usage() {
    let server = Server::start(vec![ok(text_answer("Your feeders are fine."))]).await;
    let model = chat(&server.base_url(), None);
    let r = complete(&model, &hello()).await.unwrap();
    assert_eq!(r.text, "Your feeders are fine.");
    assert!(r.tool_calls.is_empty());
    assert_eq!(r.usage, Usage { input_tokens: 101, output_tokens: 7 });
    // No tools: neither "tools" nor "tool_choice" is sent.
    let body = &server.received()[0].body;
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none(), "{body}");
}

#[tokio::test]
async fn tool_call_replies_with_string_and_object_arguments() {
    let answer = json!({
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [
                {"id": "call_abc", "type": "function",
                 "function": {"name": "plan_update", "arguments": "{\"device_type\":\"pet_feeder\",\"version\":\"latest\"}"}},
                {"type": "function",
                 "function": {"name": "plan_update", "arguments": {"device_type": "air_quality_sensor"}}}
            ]
        }}]
    });
    let server = Server::start(vec![ok(answer)]).await;
    let model = chat(&server.base_url(), None);
    let tools = specs();
    let r = model.complete(ChatRequest { system: "s", messages: &hello(), tools: &tools }).await.unwrap();
    assert_eq!(r.text, "");
    // No usage reported: zeros.
    assert_eq!(r.usage, Usage::default());
    assert_eq!(r.tool_calls.len(), 2);
    assert_eq!(r.tool_calls[0].id, "call_abc");
    assert_eq!(r.tool_calls[0].name, "plan_update");
    let a0: Value = serde_json::from_str(&r.tool_calls[0].arguments).unwrap();
    assert_eq!(a0, json!({"device_type": "pet_feeder", "version": "latest"}));
    // The server sent no id and an object: an id is made up and the object becomes JSON text.
    assert_eq!(r.tool_calls[1].id, "call_1");
    let a1: Value = serde_json::from_str(&r.tool_calls[1].arguments).unwrap();
    assert_eq!(a1, json!({"device_type": "air_quality_sensor"}));
}

#[tokio::test]
async fn a_base_url_with_a_trailing_slash_posts_to_the_same_path() {
    let server = Server::start(vec![ok(text_answer("hi"))]).await;
    let model = chat(&format!("{}/", server.base_url()), None);
    assert_eq!(model.describe(), format!("openai:test-model at {}", server.base_url()));
    assert_eq!(complete(&model, &hello()).await.unwrap().text, "hi");
    assert_eq!(server.received()[0].path, "/v1/chat/completions");
}

#[tokio::test]
async fn without_a_key_no_authorization_header_is_sent() {
    let server = Server::start(vec![ok(text_answer("hi"))]).await;
    let model = chat(&server.base_url(), None);
    complete(&model, &hello()).await.unwrap();
    assert_eq!(server.received()[0].authorization, None);
}

#[tokio::test]
async fn http_401_is_rejected_and_says_to_check_the_key_without_showing_it() {
    let body = json!({"error": {"message": "Incorrect API key provided: sk-wrong-key-42.", "type": "invalid_request_error",
                                "code": "invalid_api_key"}});
    let server = Server::start(vec![(StatusCode::UNAUTHORIZED, body.to_string())]).await;
    let model = chat(&server.base_url(), Some("sk-wrong-key-42"));
    let e = complete(&model, &hello()).await.unwrap_err();
    let ModelError::Rejected(m) = &e else { panic!("{e:?}") };
    assert!(m.contains("401") && m.contains("check the API key") && m.contains("Incorrect API key provided"), "{m}");
    assert!(m.contains(&server.base_url()), "{m}");
    assert!(!e.to_string().contains("sk-wrong-key-42"), "{e}");
    assert!(!format!("{model:?}").contains("sk-wrong-key-42"));
}

#[tokio::test]
async fn http_500_is_unavailable_with_the_providers_message() {
    let body = json!({"error": {"message": "the model is loading", "type": "server_error"}});
    let server = Server::start(vec![(StatusCode::INTERNAL_SERVER_ERROR, body.to_string())]).await;
    let model = chat(&server.base_url(), None);
    let e = complete(&model, &hello()).await.unwrap_err();
    let ModelError::Unavailable(m) = &e else { panic!("{e:?}") };
    assert!(m.contains("500") && m.contains("the model is loading"), "{m}");
}

#[tokio::test]
async fn a_garbage_body_or_no_choices_is_malformed() {
    let server = Server::start(vec![
        (StatusCode::OK, "this is not json {".to_string()),
        ok(json!({"choices": []})),
        ok(json!({"object": "list", "data": []})),
    ])
    .await;
    let model = chat(&server.base_url(), None);
    for _ in 0..3 {
        let e = complete(&model, &hello()).await.unwrap_err();
        assert!(matches!(e, ModelError::Malformed(_)), "{e:?}");
    }
}

#[tokio::test]
async fn a_closed_port_is_unavailable_quickly() {
    // Bind a port, then free it: nothing listens there any more.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let base = format!("http://{addr}/v1");
    let model = chat(&base, Some("sk-closed"));
    let started = Instant::now();
    let e = complete(&model, &hello()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let ModelError::Unavailable(m) = &e else { panic!("{e:?}") };
    assert!(m.contains("cannot connect to") && m.contains(&base), "{m}");
    assert!(!m.contains("sk-closed"), "{m}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_unavailable() {
    // Accepts connections and reads, but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let base = format!("http://{addr}/v1");
    let model = OpenAiChat::new(OpenAiConfig::new(&base, "m").with_timeout(Duration::from_millis(300))).unwrap();
    let started = Instant::now();
    let e = complete(&model, &hello()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let ModelError::Unavailable(m) = &e else { panic!("{e:?}") };
    assert!(m.contains("no answer") && m.contains(&base), "{m}");
}
