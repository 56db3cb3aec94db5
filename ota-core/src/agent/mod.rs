//! The chat assistant: plain words in, an answer, a plan to confirm or a started rollout out.
//!
//! - It answers from the intent engine when the engine understood the request (no model
//!   call, no tokens); otherwise it asks the configured [`ChatModel`] with the same tools as
//!   the MCP server, feeding tool results back, up to a step cap. With no model configured it
//!   says what it understood and gives examples.
//! - Every tool call runs as the authenticated caller through the service, so roles and
//!   safety rules hold whatever the model says.
//! - Nothing that changes the fleet runs on the model's word or on the first message: it
//!   becomes a pending action, shown with its plan, that only an explicit confirmation (the
//!   page's button or "yes" in the same session) runs.
//! - Conversations are bounded: a number of sessions, messages per session and an idle
//!   lifetime.

mod assistant;
mod model;
mod session;

pub use assistant::{
    AnsweredBy, Assistant, AssistantOptions, CHAT_INSTRUCTIONS, ChatReply, ToolTrace, is_confirmation, is_decline,
};
pub use model::{
    ChatMessage, ChatModel, ChatRequest, ChatResponse, ModelError, ModelSpec, ToolCall, ToolEffect, ToolSpec, Usage,
};
pub use session::{MemorySessions, PendingAction, Session, SessionLimits, SessionStore, not_yours};

use async_trait::async_trait;
use serde_json::Value;

use crate::auth::Caller;

/// The result of one tool call, as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// False when the service refused or the arguments were bad; `text` says why.
    pub ok: bool,
    /// A readable summary, then any ids and numbers the model needs.
    pub text: String,
    /// The structured result (the service's own types, serialized), `Null` when none.
    pub data: Value,
}

impl ToolOutput {
    /// A failed call with its reason.
    pub fn error(text: impl Into<String>) -> Self {
        ToolOutput { ok: false, text: text.into(), data: Value::Null }
    }
}

/// The tools the model may call. `ota-mcp` implements it with the MCP server's tools, so the
/// chat and MCP clients see exactly the same operations.
#[async_trait]
pub trait Toolbox: Send + Sync + std::fmt::Debug {
    /// Every tool, with its schema and effect.
    fn specs(&self) -> Vec<ToolSpec>;

    /// Runs tool `name` with `arguments` as `caller`. Unknown tools and malformed arguments
    /// are failed outputs, never panics.
    async fn call(&self, caller: &Caller, name: &str, arguments: &Value) -> ToolOutput;

    /// What a changing tool call would do, checked by the service as `caller` and changing
    /// nothing: the output for the model (a plan, the rollout to cancel, a refusal) and the
    /// action the person is asked to confirm (`None` when refused).
    async fn preview(&self, caller: &Caller, name: &str, arguments: &Value) -> (ToolOutput, Option<PendingAction>);
}
