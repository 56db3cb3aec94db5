//! The `ChatModel` port: a conversation and tool specifications in, text or tool calls out.
//! Providers (Bedrock Converse in `ota-aws`, OpenAI-compatible chat completions in `ota-local`)
//! map these types to their wire formats; nothing here knows about HTTP.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One tool the model may call: the same name, description and JSON Schema as the MCP tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// A JSON Schema object (`{"type": "object", "properties": …}`).
    pub input_schema: Value,
    /// What calling it does; decides whether the assistant runs it or asks the person first.
    pub effect: ToolEffect,
}

/// What a tool call does to the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolEffect {
    /// Reads or plans; changes nothing. The assistant runs it when the model asks.
    Read,
    /// Starts, cancels or changes something. The assistant never runs it on the model's word:
    /// it becomes a pending action the person confirms.
    Change,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call, echoed in the result.
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: JSON text, possibly malformed.
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum ChatMessage {
    User {
        text: String,
    },
    Assistant {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, fed back to the model.
    Tool {
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
    },
}

impl ChatMessage {
    pub fn user(text: impl Into<String>) -> Self {
        ChatMessage::User { text: text.into() }
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        ChatMessage::Assistant { text: text.into(), tool_calls: Vec::new() }
    }
}

/// What the assistant sends the model each step.
#[derive(Debug, Clone, Copy)]
pub struct ChatRequest<'a> {
    pub system: &'a str,
    pub messages: &'a [ChatMessage],
    pub tools: &'a [ToolSpec],
}

/// Tokens a call used, as the provider reported them (0 when it reports none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
    }
}

/// The model's answer to one request: text, tool calls, or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// Why a model call failed. The message is shown to the person as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The provider could not be reached or did not answer (connection refused, timeout, 5xx).
    #[error("the model provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider answered with an error (bad key, unknown model, throttled, bad request).
    #[error("the model provider refused the request: {0}")]
    Rejected(String),
    /// The provider's answer could not be understood.
    #[error("the model provider's answer could not be read: {0}")]
    Malformed(String),
}

/// A language model with tool use.
#[async_trait]
pub trait ChatModel: Send + Sync + std::fmt::Debug {
    /// A short description for logs and replies: `"bedrock:amazon.nova-2-lite-v1:0"`.
    fn describe(&self) -> String;

    /// One completion: the system prompt, the conversation so far and the tools in; text
    /// and/or tool calls out.
    async fn complete(&self, request: ChatRequest<'_>) -> Result<ChatResponse, ModelError>;
}

/// Which chat model to use, as written in configuration (`--model`, `OTA_CHAT_MODEL`):
/// `bedrock` or `bedrock:MODEL_ID` (Amazon Bedrock Converse), `openai:MODEL` (any
/// OpenAI-compatible server: Ollama, vLLM, llama.cpp, LM Studio, OpenAI), or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// Bedrock Converse; `None` means the provider's default model.
    Bedrock { model_id: Option<String> },
    /// An OpenAI-compatible chat-completions server; its base URL is configured separately.
    OpenAi { model: String },
}

impl ModelSpec {
    /// Parses a spec; `none` or blank is `Ok(None)`.
    pub fn parse(s: &str) -> crate::Result<Option<Self>> {
        let s = s.trim();
        let (kind, rest) = s.split_once(':').map_or((s, ""), |(k, r)| (k, r.trim()));
        match kind.to_ascii_lowercase().as_str() {
            "" | "none" | "off" if rest.is_empty() => Ok(None),
            "bedrock" => Ok(Some(ModelSpec::Bedrock { model_id: (!rest.is_empty()).then(|| rest.to_string()) })),
            "openai" if !rest.is_empty() => Ok(Some(ModelSpec::OpenAi { model: rest.to_string() })),
            _ => Err(crate::Error::invalid(
                "chat model",
                s,
                "expected bedrock, bedrock:MODEL_ID, openai:MODEL (with a base URL) or none",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(ModelSpec::parse("none").unwrap(), None);
        assert_eq!(ModelSpec::parse(" ").unwrap(), None);
        assert_eq!(ModelSpec::parse("bedrock").unwrap(), Some(ModelSpec::Bedrock { model_id: None }));
        assert_eq!(
            ModelSpec::parse("bedrock:us.amazon.nova-2-lite-v1:0").unwrap(),
            Some(ModelSpec::Bedrock { model_id: Some("us.amazon.nova-2-lite-v1:0".into()) })
        );
        assert_eq!(ModelSpec::parse("openai:qwen3:8b").unwrap(), Some(ModelSpec::OpenAi { model: "qwen3:8b".into() }));
        for bad in ["openai", "openai:", "gpt-4", "claude:x"] {
            let e = ModelSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("openai:MODEL"), "{bad}: {e}");
        }
    }
}
