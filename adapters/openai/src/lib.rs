//! `ota-openai`: [`OpenAiChat`], the [`ChatModel`] port over the OpenAI-compatible
//! chat-completions API (`POST {base_url}/chat/completions`), which OpenAI, Ollama, vLLM, the
//! llama.cpp server and LM Studio all speak. Non-streaming, tools as `"type": "function"`.
//!
//! The wire mapping is a set of pure functions ([`request_body`], [`parse_response`],
//! [`status_error`]) so it is tested without a server; [`OpenAiChat`] only adds the HTTP call.
//! The API key goes into the `Authorization` header and nowhere else: not in `Debug`, not in
//! [`ChatModel::describe`], not in any error (a provider's message that quotes it is redacted).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use ota_core::agent::{ChatMessage, ChatModel, ChatRequest, ChatResponse, ModelError, ToolCall, Usage};
use ota_core::{Error, Result};
use serde::Deserialize;
use serde_json::{Value, json};

/// How long one completion may take when the configuration does not say (local models on a
/// CPU are slow).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest connection attempt, whatever the overall timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Characters of a provider's error text kept in a message.
const MAX_PROVIDER_MESSAGE: usize = 300;

/// Where an OpenAI-compatible provider is and which model to ask.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API root, up to and including the version: `http://127.0.0.1:11434/v1` (Ollama),
    /// `http://localhost:8000/v1` (vLLM, llama.cpp, LM Studio), `https://api.openai.com/v1`.
    /// A trailing slash is fine.
    pub base_url: String,
    /// The model name as the provider knows it (`gpt-4.1-mini`, `qwen3:8b`, ...).
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set; local servers usually need none.
    pub api_key: Option<String>,
    /// The longest one completion may take, connection and answer included.
    pub timeout: Duration,
}

impl OpenAiConfig {
    /// A configuration with no key and [`DEFAULT_TIMEOUT`].
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig { base_url: base_url.into(), model: model.into(), api_key: None, timeout: DEFAULT_TIMEOUT }
    }

    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A chat model behind an OpenAI-compatible chat-completions endpoint.
#[derive(Clone)]
pub struct OpenAiChat {
    /// The base URL without its trailing slash.
    base_url: String,
    endpoint: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
    client: reqwest::Client,
}

impl fmt::Debug for OpenAiChat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiChat")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OpenAiChat {
    /// Checks the configuration (an `http://` or `https://` base URL, a model name, a
    /// non-zero timeout) and builds the HTTP client. Nothing is sent yet.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let base_url = normalize_base_url(&config.base_url)?;
        let model = config.model.trim().to_string();
        if model.is_empty() {
            return Err(Error::invalid("model", "", "name the model the provider should run (e.g. gpt-4.1-mini)"));
        }
        if config.timeout.is_zero() {
            return Err(Error::invalid("timeout", "0s", "must be longer than zero"));
        }
        let api_key = config.api_key.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        if let Some(k) = &api_key
            && reqwest::header::HeaderValue::from_str(&format!("Bearer {k}")).is_err()
        {
            // Never echo the key, not even in this error.
            return Err(Error::invalid("api_key", "<redacted>", "contains characters an HTTP header cannot carry"));
        }
        // reqwest is built without a crypto provider of its own (see the workspace manifest):
        // ring becomes the process default unless one was installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| Error::storage(format!("cannot build the HTTP client for the model provider: {e}")))?;
        Ok(OpenAiChat {
            endpoint: format!("{base_url}/chat/completions"),
            base_url,
            model,
            api_key,
            timeout: config.timeout,
            client,
        })
    }

    /// The URL completions are posted to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn redact(&self, text: String) -> String {
        redact(text, self.api_key.as_deref())
    }
}

#[async_trait]
impl ChatModel for OpenAiChat {
    fn describe(&self) -> String {
        format!("openai:{} at {}", self.model, self.base_url)
    }

    async fn complete(&self, request: ChatRequest<'_>) -> std::result::Result<ChatResponse, ModelError> {
        let body = request_body(&self.model, &request);
        let mut http = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let response = http.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(status_error(status.as_u16(), &bytes, &self.base_url, self.api_key.as_deref()));
        }
        parse_response(&bytes).map_err(|e| match e {
            ModelError::Malformed(m) => ModelError::Malformed(self.redact(format!("{m} (from {})", self.base_url))),
            other => other,
        })
    }
}

impl OpenAiChat {
    /// A failure to reach the provider or to read its answer: always
    /// [`ModelError::Unavailable`], naming the base URL (never the key, which only travels
    /// in a header).
    fn transport_error(&self, e: &reqwest::Error) -> ModelError {
        let what = if e.is_timeout() {
            format!("no answer from {} within {}s", self.base_url, self.timeout.as_secs_f64())
        } else if e.is_connect() {
            format!("cannot connect to {}: {}", self.base_url, root_cause(e))
        } else if e.is_body() || e.is_decode() {
            format!("the answer from {} broke off: {}", self.base_url, root_cause(e))
        } else {
            format!("the request to {} failed: {}", self.base_url, root_cause(e))
        };
        ModelError::Unavailable(self.redact(what))
    }
}

/// The innermost cause of an error ("Connection refused (os error 111)"), which says more than
/// reqwest's own "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Checks and trims a base URL: `http(s)://host[:port][/path]`, trailing slashes removed.
pub fn normalize_base_url(base_url: &str) -> Result<String> {
    let trimmed = base_url.trim().trim_end_matches('/');
    let rest = trimmed.strip_prefix("http://").or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => {
            return Err(Error::invalid(
                "base_url",
                base_url,
                "an http:// or https:// URL such as http://127.0.0.1:11434/v1 or https://api.openai.com/v1",
            ));
        }
    }
    if trimmed.contains(['?', '#']) || trimmed.chars().any(char::is_whitespace) {
        return Err(Error::invalid(
            "base_url",
            base_url,
            "no spaces, query or fragment; /chat/completions is appended",
        ));
    }
    Ok(trimmed.to_string())
}

/// The chat-completions request body for `request`: the system prompt first, then the
/// conversation, then the tools (none: no `tools` and no `tool_choice`).
pub fn request_body(model: &str, request: &ChatRequest<'_>) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    messages.extend(request.messages.iter().map(message_json));
    let mut body = json!({"model": model, "messages": messages, "stream": false});
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
                })
            })
            .collect();
        body["tools"] = Value::Array(tools);
        body["tool_choice"] = json!("auto");
    }
    body
}

/// One conversation message on the wire.
pub fn message_json(message: &ChatMessage) -> Value {
    match message {
        ChatMessage::User { text } => json!({"role": "user", "content": text}),
        ChatMessage::Assistant { text, tool_calls } if tool_calls.is_empty() => {
            json!({"role": "assistant", "content": text})
        }
        ChatMessage::Assistant { text, tool_calls } => {
            let calls: Vec<Value> = tool_calls
                .iter()
                .map(
                    |c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}),
                )
                .collect();
            // OpenAI's own shape: no text next to tool calls is `null`, not "".
            let content = if text.is_empty() { Value::Null } else { json!(text) };
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        ChatMessage::Tool { call_id, content, is_error, .. } => {
            let content = if *is_error { format!("ERROR: {content}") } else { content.clone() };
            json!({"role": "tool", "tool_call_id": call_id, "content": content})
        }
    }
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Value,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// Reads a successful (HTTP 2xx) chat-completions answer: the first choice's text and tool
/// calls, and the usage (0 when not reported). Tool calls without an id get `call_{n}` (`n`
/// their index in the answer); arguments sent as a JSON object instead of JSON text become
/// that object's text.
pub fn parse_response(body: &[u8]) -> std::result::Result<ChatResponse, ModelError> {
    let wire: WireResponse = serde_json::from_slice(body).map_err(|e| {
        ModelError::Malformed(format!(
            "not a chat-completions answer ({e}): {}",
            snippet(&String::from_utf8_lossy(body))
        ))
    })?;
    let Some(choice) = wire.choices.and_then(|c| c.into_iter().next()) else {
        let why = wire.error.as_ref().and_then(error_text).map(|m| format!(": {m}")).unwrap_or_default();
        return Err(ModelError::Malformed(format!("the answer has no choices{why}")));
    };
    let text = content_text(&choice.message.content)?;
    let wire_calls = choice.message.tool_calls.unwrap_or_default();
    let given: Vec<String> = wire_calls.iter().filter_map(|c| c.id.clone()).collect();
    let tool_calls = wire_calls
        .into_iter()
        .enumerate()
        .map(|(n, c)| ToolCall {
            id: c.id.filter(|id| !id.is_empty()).unwrap_or_else(|| synthetic_id(n, &given)),
            name: c.function.name,
            arguments: match c.function.arguments {
                Value::String(s) => s,
                Value::Null => "{}".to_string(),
                other => other.to_string(),
            },
        })
        .collect();
    let usage = wire
        .usage
        .map(|u| Usage { input_tokens: u.prompt_tokens.unwrap_or(0), output_tokens: u.completion_tokens.unwrap_or(0) })
        .unwrap_or_default();
    Ok(ChatResponse { text, tool_calls, usage })
}

/// `call_{n}` for the `n`th call of an answer that came without an id, unless the server gave
/// that id to another call of the same answer.
fn synthetic_id(n: usize, given: &[String]) -> String {
    let id = format!("call_{n}");
    if !given.contains(&id) {
        return id;
    }
    (1..).map(|k| format!("call_{n}_{k}")).find(|id| !given.contains(id)).expect("a free id")
}

/// A message's `content`: a string, null, or (some servers) a list of `{"type":"text","text"}`
/// parts.
fn content_text(content: &Value) -> std::result::Result<String, ModelError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => Ok(parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                p => p.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join("")),
        other => Err(ModelError::Malformed(format!(
            "the message content is neither text nor null: {}",
            snippet(&other.to_string())
        ))),
    }
}

/// The error for a non-2xx answer: 5xx is [`ModelError::Unavailable`] (try again later), 4xx
/// [`ModelError::Rejected`] (something to fix: the key, the model name, the request), with the
/// provider's own message when it sent one. `api_key` is only used to redact it.
pub fn status_error(status: u16, body: &[u8], base_url: &str, api_key: Option<&str>) -> ModelError {
    let provider = provider_message(body);
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut text = format!("HTTP {status}{}{reason} from {base_url}", if reason.is_empty() { "" } else { " " });
    if let Some(m) = provider {
        text.push_str(": ");
        text.push_str(&m);
    }
    let hint = match status {
        401 => Some("check the API key"),
        403 => Some("check the API key and what it may access"),
        404 => Some("check the base URL (it usually ends in /v1) and the model name"),
        429 => Some("the provider is throttling requests or the quota is spent; try again later"),
        _ => None,
    };
    if let Some(h) = hint {
        text.push_str("; ");
        text.push_str(h);
    }
    let text = redact(text, api_key);
    match status {
        500..=599 => ModelError::Unavailable(text),
        400..=499 => ModelError::Rejected(text),
        _ => ModelError::Malformed(format!("unexpected status: {text}")),
    }
}

/// The provider's error text: `{"error": {"message"}}` (OpenAI, llama.cpp), `{"error": "…"}`
/// (Ollama), `{"message"}` (vLLM); else the start of a plain-text body.
fn provider_message(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let m = v
            .get("error")
            .and_then(error_text)
            .or_else(|| v.get("message").and_then(Value::as_str).map(str::to_string));
        return m.filter(|m| !m.trim().is_empty()).map(|m| snippet(m.trim()));
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty() && !text.starts_with('<')).then(|| snippet(text))
}

fn error_text(error: &Value) -> Option<String> {
    match error {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// At most [`MAX_PROVIDER_MESSAGE`] characters of `text`.
fn snippet(text: &str) -> String {
    if text.chars().count() <= MAX_PROVIDER_MESSAGE {
        text.to_string()
    } else {
        text.chars().take(MAX_PROVIDER_MESSAGE).collect::<String>() + "…"
    }
}

/// `text` with every occurrence of the key replaced.
fn redact(text: String, api_key: Option<&str>) -> String {
    match api_key {
        Some(k) if !k.is_empty() && text.contains(k) => text.replace(k, "[redacted]"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use ota_core::agent::{ToolEffect, ToolSpec};

    use super::*;

    fn spec() -> ToolSpec {
        ToolSpec {
            name: "plan_update".into(),
            description: "Plans an update".into(),
            input_schema: json!({"type": "object", "properties": {"device_type": {"type": "string"}}}),
            effect: ToolEffect::Read,
        }
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(normalize_base_url("http://127.0.0.1:11434/v1/").unwrap(), "http://127.0.0.1:11434/v1");
        assert_eq!(normalize_base_url(" https://api.openai.com/v1 ").unwrap(), "https://api.openai.com/v1");
        assert_eq!(normalize_base_url("http://localhost:8000/v1//").unwrap(), "http://localhost:8000/v1");
        for bad in
            ["", "localhost:8000/v1", "ftp://x/v1", "http://", "http:///v1", "http://x/v1?key=1", "http://x y/v1"]
        {
            assert!(normalize_base_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_whole_conversation_maps_to_openai_messages() {
        let messages = vec![
            ChatMessage::user("what's up?"),
            ChatMessage::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "plan_update".into(),
                    arguments: r#"{"device_type":"pet_feeder"}"#.into(),
                }],
            },
            ChatMessage::Tool {
                call_id: "c1".into(),
                name: "plan_update".into(),
                content: "plan p-1".into(),
                is_error: false,
            },
            ChatMessage::Tool {
                call_id: "c2".into(),
                name: "x".into(),
                content: "no such tool".into(),
                is_error: true,
            },
            ChatMessage::assistant("Here is the plan."),
        ];
        let tools = [spec()];
        let body = request_body("m1", &ChatRequest { system: "be brief", messages: &messages, tools: &tools });
        assert_eq!(body["model"], "m1");
        assert_eq!(body["stream"], false);
        assert_eq!(body["tool_choice"], "auto");
        let m = body["messages"].as_array().unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1], json!({"role": "user", "content": "what's up?"}));
        assert_eq!(
            m[2],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "plan_update", "arguments": "{\"device_type\":\"pet_feeder\"}"}}
            ]})
        );
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "c1", "content": "plan p-1"}));
        assert_eq!(m[4], json!({"role": "tool", "tool_call_id": "c2", "content": "ERROR: no such tool"}));
        assert_eq!(m[5], json!({"role": "assistant", "content": "Here is the plan."}));
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {
                "name": "plan_update",
                "description": "Plans an update",
                "parameters": {"type": "object", "properties": {"device_type": {"type": "string"}}},
            }}])
        );
    }

    #[test]
    fn no_tools_means_no_tools_and_no_tool_choice() {
        let messages = [ChatMessage::user("hi")];
        let body = request_body("m", &ChatRequest { system: "", messages: &messages, tools: &[] });
        assert!(body.get("tools").is_none());
        assert!(body.get("tool_choice").is_none());
        // An empty system prompt is not sent.
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn assistant_text_with_tool_calls_keeps_both() {
        let m = message_json(&ChatMessage::Assistant {
            text: "Looking.".into(),
            tool_calls: vec![ToolCall { id: "a".into(), name: "t".into(), arguments: "{}".into() }],
        });
        assert_eq!(m["content"], "Looking.");
        assert_eq!(m["tool_calls"][0]["id"], "a");
    }

    #[test]
    fn a_text_answer_and_its_usage() {
        let r = parse_response(
            br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"All fine."},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        )
        .unwrap();
        assert_eq!(r.text, "All fine.");
        assert!(r.tool_calls.is_empty());
        assert_eq!(r.usage, Usage { input_tokens: 12, output_tokens: 3 });
    }

    #[test]
    fn tool_calls_with_string_object_or_missing_arguments_and_ids() {
        let r = parse_response(
            br#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[
                {"id":"call_abc","type":"function","function":{"name":"a","arguments":"{\"x\":1}"}},
                {"type":"function","function":{"name":"b","arguments":{"device_type":"pet_feeder"}}},
                {"id":"","function":{"name":"c"}},
                {"id":"k","function":{"name":"d","arguments":"{\"device_type\": "}}
            ]}}]}"#,
        )
        .unwrap();
        assert_eq!(r.text, "");
        assert_eq!(r.usage, Usage::default());
        let calls: Vec<(&str, &str, &str)> =
            r.tool_calls.iter().map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str())).collect();
        assert_eq!(calls[0], ("call_abc", "a", r#"{"x":1}"#));
        assert_eq!((calls[1].0, calls[1].1), ("call_1", "b"));
        let args: Value = serde_json::from_str(calls[1].2).unwrap();
        assert_eq!(args, json!({"device_type": "pet_feeder"}));
        assert_eq!(calls[2], ("call_2", "c", "{}"));
        // Malformed arguments are passed on as written: the agent loop tells the model.
        assert_eq!(calls[3], ("k", "d", r#"{"device_type": "#));
    }

    #[test]
    fn made_up_ids_never_take_an_id_the_server_gave() {
        let r = parse_response(
            br#"{"choices":[{"message":{"tool_calls":[
                {"id":"call_1","function":{"name":"a","arguments":"{}"}},
                {"function":{"name":"b","arguments":"{}"}}
            ]}}]}"#,
        )
        .unwrap();
        assert_eq!(r.tool_calls[0].id, "call_1");
        assert_eq!(r.tool_calls[1].id, "call_1_1");
    }

    #[test]
    fn content_parts_and_null_lists_are_tolerated() {
        let r = parse_response(
            br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"tool_calls":null}}],
                "usage":{"prompt_tokens":null}}"#,
        )
        .unwrap();
        assert_eq!(r.text, "ab");
        assert!(r.tool_calls.is_empty());
        assert_eq!(r.usage, Usage::default());
    }

    #[test]
    fn answers_that_are_not_chat_completions_are_malformed() {
        for body in [
            &b"<html>gateway</html>"[..],
            b"",
            b"{}",
            b"{\"choices\":[]}",
            b"{\"choices\":null}",
            b"[1,2]",
            b"{\"choices\":[{\"message\":{\"content\":42}}]}",
            b"{\"choices\":[{\"message\":{\"tool_calls\":[{\"function\":{}}]}}]}",
        ] {
            let e = parse_response(body).unwrap_err();
            assert!(matches!(e, ModelError::Malformed(_)), "{:?} → {e:?}", String::from_utf8_lossy(body));
        }
        let e = parse_response(br#"{"error":{"message":"model overloaded"}}"#).unwrap_err();
        assert_eq!(e, ModelError::Malformed("the answer has no choices: model overloaded".into()));
    }

    #[test]
    fn statuses_map_to_errors_with_the_providers_message() {
        let base = "https://api.openai.com/v1";
        let e = status_error(
            401,
            br#"{"error":{"message":"Incorrect API key provided: sk-secret"}}"#,
            base,
            Some("sk-secret"),
        );
        let ModelError::Rejected(m) = &e else { panic!("{e:?}") };
        assert!(m.contains("401") && m.contains("check the API key") && m.contains(base), "{m}");
        assert!(m.contains("Incorrect API key provided: [redacted]"), "{m}");
        assert!(!m.contains("sk-secret"), "{m}");

        let e = status_error(404, br#"{"error":"model \"qwen9\" not found"}"#, base, None);
        let ModelError::Rejected(m) = &e else { panic!("{e:?}") };
        assert!(m.contains("model \"qwen9\" not found") && m.contains("model name"), "{m}");

        let e = status_error(400, br#"{"object":"error","message":"bad tools","type":"BadRequestError"}"#, base, None);
        assert!(matches!(&e, ModelError::Rejected(m) if m.contains("HTTP 400 Bad Request") && m.contains("bad tools")));

        let e = status_error(429, b"slow down", base, None);
        assert!(matches!(&e, ModelError::Rejected(m) if m.contains("slow down") && m.contains("throttling")));

        let e = status_error(503, br#"{"error":{"message":"loading model"}}"#, base, None);
        assert!(matches!(&e, ModelError::Unavailable(m) if m.contains("503") && m.contains("loading model")), "{e:?}");

        let e = status_error(502, b"<html>bad gateway</html>", base, None);
        assert_eq!(e, ModelError::Unavailable(format!("HTTP 502 Bad Gateway from {base}")));
    }

    #[test]
    fn config_checks_and_debug_never_shows_the_key() {
        let cfg = OpenAiConfig::new("http://127.0.0.1:11434/v1/", "qwen3:8b").with_api_key("sk-very-secret");
        assert!(!format!("{cfg:?}").contains("sk-very-secret"));
        let chat = OpenAiChat::new(cfg.clone()).unwrap();
        let shown = format!("{chat:?}");
        assert!(!shown.contains("sk-very-secret") && shown.contains("redacted"), "{shown}");
        assert_eq!(chat.describe(), "openai:qwen3:8b at http://127.0.0.1:11434/v1");
        assert_eq!(chat.endpoint(), "http://127.0.0.1:11434/v1/chat/completions");

        assert!(OpenAiChat::new(OpenAiConfig::new("127.0.0.1:11434", "m")).is_err());
        assert!(OpenAiChat::new(OpenAiConfig::new("http://h/v1", " ")).is_err());
        assert!(OpenAiChat::new(OpenAiConfig::new("http://h/v1", "m").with_timeout(Duration::ZERO)).is_err());
        let e = OpenAiChat::new(OpenAiConfig::new("http://h/v1", "m").with_api_key("sk\nsecret")).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
