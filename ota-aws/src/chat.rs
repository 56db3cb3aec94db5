//! The [`ChatModel`] port on Amazon Bedrock's Converse API, with tool use.
//!
//! The conversation maps onto Converse's strictly alternating user/assistant turns: tool
//! results go back as `toolResult` blocks in a **user** message, and consecutive messages of
//! one role (several tool results, the user's next words after them) are merged into one
//! message. Tool arguments and schemas travel as smithy [`Document`]s, converted from and to
//! `serde_json::Value` here ([`value_to_document`], [`document_to_value`]).
//!
//! Errors read the way the person can act on them: access denied names `bedrock:InvokeModel`
//! and model access, an unknown or invalid model names the configured model id, throttling
//! and the service's own 5xx say to try again.

use async_trait::async_trait;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput as ConverseResponse};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, InferenceConfiguration, Message, StopReason, SystemContentBlock,
    Tool, ToolConfiguration, ToolInputSchema, ToolResultBlock, ToolResultContentBlock, ToolResultStatus,
    ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::error::operation::BuildError;
use aws_smithy_types::{Document, Number};
use ota_core::agent::{ChatMessage, ChatModel, ChatRequest, ChatResponse, ModelError, ToolCall, ToolSpec, Usage};
use serde_json::Value;

/// Amazon Nova 2 Lite through its **global** cross-Region inference profile.
///
/// Nova 2 Lite has no in-Region on-demand model id: the Nova 2 user guide lists only the
/// inference profiles `global.amazon.nova-2-lite-v1:0` and `us.amazon.nova-2-lite-v1:0`
/// (calling the bare `amazon.nova-2-lite-v1:0` on demand is a `ValidationException`). The
/// global profile can be called from any Region that offers global cross-Region inference,
/// whatever Region the deployment runs in; the `us.` profile works only from US Regions but
/// keeps requests inside the US. Any Converse model id, inference profile id or ARN works as
/// configuration instead (for example `us.amazon.nova-2-lite-v1:0` where data must stay in
/// the US).
pub const DEFAULT_MODEL_ID: &str = "global.amazon.nova-2-lite-v1:0";

/// A [`ChatModel`] that calls Bedrock's Converse API on one model or inference profile.
#[derive(Debug, Clone)]
pub struct BedrockChat {
    client: Client,
    model_id: String,
    max_tokens: Option<i32>,
}

impl BedrockChat {
    /// A chat model over `client` (credentials and Region are the client's).
    pub fn new(client: Client, model_id: impl Into<String>) -> Self {
        BedrockChat { client, model_id: model_id.into(), max_tokens: None }
    }

    /// A chat model with a Bedrock Runtime client from a loaded SDK config. An endpoint URL in
    /// the config (moto, LocalStack) applies to Bedrock too.
    pub fn from_conf(config: &aws_config::SdkConfig, model_id: impl Into<String>) -> Self {
        Self::new(Client::new(config), model_id)
    }

    /// A chat model with credentials and Region from the default chain (environment, profile,
    /// the Lambda or ECS role); `model_id` `None` is [`DEFAULT_MODEL_ID`].
    pub async fn from_default_chain(model_id: Option<String>) -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        Self::from_conf(&config, model_id.unwrap_or_else(|| DEFAULT_MODEL_ID.to_string()))
    }

    /// Caps the tokens of each answer (`inferenceConfig.maxTokens`); unset, the model's default.
    pub fn with_max_tokens(mut self, max_tokens: i32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// The model id or inference profile every request names.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }
}

#[async_trait]
impl ChatModel for BedrockChat {
    fn describe(&self) -> String {
        format!("bedrock:{}", self.model_id)
    }

    async fn complete(&self, request: ChatRequest<'_>) -> Result<ChatResponse, ModelError> {
        let mut call = self
            .client
            .converse()
            .model_id(&self.model_id)
            .set_messages(Some(converse_messages(request.messages)?))
            .set_tool_config(tool_config(request.tools)?);
        if !request.system.trim().is_empty() {
            call = call.system(SystemContentBlock::Text(request.system.to_string()));
        }
        if let Some(max) = self.max_tokens {
            call = call.inference_config(InferenceConfiguration::builder().max_tokens(max).build());
        }
        let output = call.send().await.map_err(|e| converse_error(&self.model_id, e))?;
        chat_response(output)
    }
}

/// The conversation as Converse messages: roles alternate, tool results are user content.
///
/// Blank text is left out (Converse refuses blank text blocks) and so is a message with
/// nothing left; consecutive messages of one role become one message.
pub fn converse_messages(messages: &[ChatMessage]) -> Result<Vec<Message>, ModelError> {
    let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message {
            ChatMessage::User { text } => (ConversationRole::User, text_block(text).into_iter().collect()),
            ChatMessage::Assistant { text, tool_calls } => {
                let mut blocks: Vec<ContentBlock> = text_block(text).into_iter().collect();
                for call in tool_calls {
                    let input = tool_input(&call.arguments);
                    let block = ToolUseBlock::builder()
                        .tool_use_id(&call.id)
                        .name(&call.name)
                        .input(input)
                        .build()
                        .map_err(unbuildable)?;
                    blocks.push(ContentBlock::ToolUse(block));
                }
                (ConversationRole::Assistant, blocks)
            }
            ChatMessage::Tool { call_id, name: _, content, is_error } => {
                // Converse refuses a blank text block here too.
                let content = if content.trim().is_empty() { "(no output)" } else { content.as_str() };
                let block = ToolResultBlock::builder()
                    .tool_use_id(call_id)
                    .content(ToolResultContentBlock::Text(content.to_string()))
                    .status(if *is_error { ToolResultStatus::Error } else { ToolResultStatus::Success })
                    .build()
                    .map_err(unbuildable)?;
                (ConversationRole::User, vec![ContentBlock::ToolResult(block)])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, content)| Message::builder().role(role).set_content(Some(content)).build().map_err(unbuildable))
        .collect()
}

/// The tools as a Converse tool configuration; `None` without tools (Converse refuses an
/// empty tool list).
pub fn tool_config(tools: &[ToolSpec]) -> Result<Option<ToolConfiguration>, ModelError> {
    if tools.is_empty() {
        return Ok(None);
    }
    let mut config = ToolConfiguration::builder();
    for tool in tools {
        let mut spec = ToolSpecification::builder()
            .name(&tool.name)
            .input_schema(ToolInputSchema::Json(value_to_document(&tool.input_schema)));
        if !tool.description.trim().is_empty() {
            spec = spec.description(&tool.description);
        }
        config = config.tools(Tool::ToolSpec(spec.build().map_err(unbuildable)?));
    }
    config.build().map(Some).map_err(unbuildable)
}

/// The model's answer: its text blocks joined, its tool uses as calls with JSON arguments,
/// and the token counts. Reasoning and other blocks are left out.
pub fn chat_response(output: ConverseResponse) -> Result<ChatResponse, ModelError> {
    match output.stop_reason() {
        StopReason::MalformedToolUse | StopReason::MalformedModelOutput => {
            return Err(ModelError::Malformed(format!(
                "Bedrock stopped the answer because the model's output was malformed ({})",
                output.stop_reason().as_str()
            )));
        }
        StopReason::ModelContextWindowExceeded => {
            return Err(ModelError::Rejected(
                "the conversation is longer than the model's context window; start a new conversation".into(),
            ));
        }
        _ => {}
    }
    let usage = output
        .usage()
        .map(|u| Usage {
            input_tokens: u64::try_from(u.input_tokens()).unwrap_or(0),
            output_tokens: u64::try_from(u.output_tokens()).unwrap_or(0),
        })
        .unwrap_or_default();
    let message = match output.output {
        Some(ConverseOutput::Message(message)) => message,
        Some(other) => {
            return Err(ModelError::Malformed(format!("Converse answered with {other:?}, not a message")));
        }
        None => return Err(ModelError::Malformed("Converse answered without an output message".into())),
    };
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            ContentBlock::Text(text) if !text.is_empty() => texts.push(text),
            ContentBlock::ToolUse(tool_use) => tool_calls.push(ToolCall {
                arguments: document_to_value(tool_use.input()).to_string(),
                id: tool_use.tool_use_id,
                name: tool_use.name,
            }),
            _ => {}
        }
    }
    Ok(ChatResponse { text: texts.join("\n"), tool_calls, usage })
}

/// The error for a failed Converse call on `model_id`.
pub fn converse_error<R: std::fmt::Debug>(model_id: &str, err: SdkError<ConverseError, R>) -> ModelError {
    let service = match err {
        SdkError::ServiceError(service) => service.into_err(),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            return ModelError::Unavailable(format!("Bedrock could not be reached: {}", DisplayErrorContext(&err)));
        }
        SdkError::ResponseError(_) => {
            return ModelError::Malformed(format!("Bedrock's answer could not be read: {}", DisplayErrorContext(&err)));
        }
        other => {
            return ModelError::Rejected(format!(
                "the Converse request could not be sent: {}",
                DisplayErrorContext(&other)
            ));
        }
    };
    let message = service.message().map(str::to_string).unwrap_or_else(|| DisplayErrorContext(&service).to_string());
    match &service {
        ConverseError::AccessDeniedException(_) => ModelError::Rejected(format!(
            "Bedrock denied bedrock:InvokeModel on {model_id}: {message}; the role ota runs as needs \
             bedrock:InvokeModel on the model (for an inference profile: on the profile and on its foundation \
             model in every Region it routes to), and access to the model must be enabled in the Bedrock console"
        )),
        ConverseError::ResourceNotFoundException(_) => ModelError::Rejected(format!(
            "Bedrock does not know the model id {model_id} in this Region: {message}; configure a Converse model id \
             or inference profile that is offered here"
        )),
        ConverseError::ValidationException(_) => ModelError::Rejected(format!(
            "Bedrock refused the request for model {model_id}: {message} (check that the model id is right and \
             supports Converse with tool use; some models can only be called through an inference profile such as \
             {DEFAULT_MODEL_ID})"
        )),
        ConverseError::ThrottlingException(_) => ModelError::Rejected(format!(
            "Bedrock throttled the request to {model_id} and the SDK's retries were exhausted: {message}; try again \
             later or raise the account's Bedrock quota"
        )),
        ConverseError::ModelErrorException(_) => {
            ModelError::Rejected(format!("the model {model_id} failed to process the request: {message}"))
        }
        ConverseError::ServiceUnavailableException(_)
        | ConverseError::InternalServerException(_)
        | ConverseError::ModelNotReadyException(_)
        | ConverseError::ModelTimeoutException(_) => ModelError::Unavailable(format!(
            "Bedrock could not answer for {model_id} ({}): {message}; try again later",
            service.code().unwrap_or("error")
        )),
        _ => match service.code() {
            Some(code) => {
                ModelError::Rejected(format!("Bedrock refused the request for {model_id} ({code}): {message}"))
            }
            None => ModelError::Rejected(format!("Bedrock refused the request for {model_id}: {message}")),
        },
    }
}

/// A JSON value as a smithy document. Integers stay integers (`PosInt` for non-negative,
/// `NegInt` for negative), other numbers are floats.
pub fn value_to_document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(value_to_document).collect()),
        Value::Object(map) => Document::Object(map.iter().map(|(k, v)| (k.clone(), value_to_document(v))).collect()),
    }
}

/// A smithy document as a JSON value. A float JSON cannot hold (NaN, infinity) becomes `null`.
pub fn document_to_value(document: &Document) -> Value {
    match document {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Document::String(s) => Value::String(s.clone()),
        Document::Array(items) => Value::Array(items.iter().map(document_to_value).collect()),
        Document::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), document_to_value(v))).collect()),
    }
}

/// A tool call's arguments as a document: the JSON the model wrote, or an empty object when
/// it is not valid JSON (Converse needs a document; the tool already got the error).
fn tool_input(arguments: &str) -> Document {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value) => value_to_document(&value),
        Err(_) => Document::Object(Default::default()),
    }
}

fn text_block(text: &str) -> Option<ContentBlock> {
    (!text.trim().is_empty()).then(|| ContentBlock::Text(text.to_string()))
}

fn unbuildable(e: BuildError) -> ModelError {
    ModelError::Rejected(format!("the Converse request could not be built: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool_result(id: &str, content: &str, is_error: bool) -> ChatMessage {
        ChatMessage::Tool { call_id: id.into(), name: "tool".into(), content: content.into(), is_error }
    }

    fn call(id: &str, arguments: &str) -> ToolCall {
        ToolCall { id: id.into(), name: "list_devices".into(), arguments: arguments.into() }
    }

    #[test]
    fn json_values_round_trip_through_documents() {
        let value = json!({
            "s": "text", "t": true, "f": false, "n": null,
            "pos": 42, "big": u64::MAX, "neg": -7, "min": i64::MIN, "float": 1.5, "tiny": -0.25,
            "list": [1, "two", [3.0], {"four": 4}], "empty": {}, "none": []
        });
        let doc = value_to_document(&value);
        assert_eq!(document_to_value(&doc), value);
        let Document::Object(map) = &doc else { panic!("{doc:?}") };
        assert_eq!(map["pos"], Document::Number(Number::PosInt(42)));
        assert_eq!(map["big"], Document::Number(Number::PosInt(u64::MAX)));
        assert_eq!(map["neg"], Document::Number(Number::NegInt(-7)));
        assert_eq!(map["float"], Document::Number(Number::Float(1.5)));
        assert_eq!(
            map["list"],
            Document::Array(vec![
                Document::Number(Number::PosInt(1)),
                Document::String("two".into()),
                Document::Array(vec![Document::Number(Number::Float(3.0))]),
                Document::Object([("four".to_string(), Document::Number(Number::PosInt(4)))].into()),
            ])
        );
    }

    #[test]
    fn documents_json_cannot_hold_become_null() {
        assert_eq!(document_to_value(&Document::Number(Number::Float(f64::NAN))), Value::Null);
        assert_eq!(document_to_value(&Document::Number(Number::Float(f64::INFINITY))), Value::Null);
        assert_eq!(document_to_value(&Document::Number(Number::NegInt(-3))), json!(-3));
    }

    #[test]
    fn malformed_tool_arguments_become_an_empty_object() {
        assert_eq!(tool_input("{\"a\": 1"), Document::Object(Default::default()));
        assert_eq!(tool_input(""), Document::Object(Default::default()));
        assert_eq!(tool_input("{\"a\": [1]}"), value_to_document(&json!({"a": [1]})));
    }

    #[test]
    fn roles_alternate_with_tool_results_merged_into_one_user_message() {
        let messages = [
            ChatMessage::user("which devices are behind?"),
            ChatMessage::Assistant {
                text: "Let me look.".into(),
                tool_calls: vec![call("t1", "{\"type\":\"pet_feeder\"}"), call("t2", "not json")],
            },
            tool_result("t1", "3 devices", false),
            tool_result("t2", "", true),
            ChatMessage::user("and the rest?"),
            ChatMessage::assistant(""),
            ChatMessage::assistant("Two more."),
            ChatMessage::user("  "),
        ];
        let out = converse_messages(&messages).unwrap();
        let roles: Vec<_> = out.iter().map(|m| m.role().clone()).collect();
        assert_eq!(
            roles,
            [ConversationRole::User, ConversationRole::Assistant, ConversationRole::User, ConversationRole::Assistant]
        );
        assert_eq!(out[0].content(), [ContentBlock::Text("which devices are behind?".into())]);

        let assistant = out[1].content();
        assert_eq!(assistant.len(), 3);
        assert_eq!(assistant[0], ContentBlock::Text("Let me look.".into()));
        let use1 = assistant[1].as_tool_use().unwrap();
        assert_eq!((use1.tool_use_id(), use1.name()), ("t1", "list_devices"));
        assert_eq!(document_to_value(use1.input()), json!({"type": "pet_feeder"}));
        assert_eq!(assistant[2].as_tool_use().unwrap().input(), &Document::Object(Default::default()));

        let user = out[2].content();
        assert_eq!(user.len(), 3, "both results and the next question in one user turn: {user:?}");
        let r1 = user[0].as_tool_result().unwrap();
        assert_eq!(r1.tool_use_id(), "t1");
        assert_eq!(r1.status(), Some(&ToolResultStatus::Success));
        assert_eq!(r1.content(), [ToolResultContentBlock::Text("3 devices".into())]);
        let r2 = user[1].as_tool_result().unwrap();
        assert_eq!(r2.status(), Some(&ToolResultStatus::Error));
        assert_eq!(r2.content(), [ToolResultContentBlock::Text("(no output)".into())]);
        assert_eq!(user[2], ContentBlock::Text("and the rest?".into()));

        assert_eq!(out[3].content(), [ContentBlock::Text("Two more.".into())], "blank text is left out");
    }

    #[test]
    fn tools_become_a_tool_config_and_none_without_tools() {
        assert_eq!(tool_config(&[]).unwrap(), None);
        let schema = json!({"type": "object", "properties": {"limit": {"type": "integer", "minimum": 1}}});
        let tools = [
            ToolSpec {
                name: "list_devices".into(),
                description: "Lists devices.".into(),
                input_schema: schema.clone(),
                effect: ota_core::agent::ToolEffect::Read,
            },
            ToolSpec {
                name: "noop".into(),
                description: String::new(),
                input_schema: json!({"type": "object"}),
                effect: ota_core::agent::ToolEffect::Change,
            },
        ];
        let config = tool_config(&tools).unwrap().unwrap();
        let specs: Vec<_> = config.tools().iter().map(|t| t.as_tool_spec().unwrap()).collect();
        assert_eq!(specs[0].name(), "list_devices");
        assert_eq!(specs[0].description(), Some("Lists devices."));
        let Some(ToolInputSchema::Json(doc)) = specs[0].input_schema() else { panic!("{:?}", specs[0]) };
        assert_eq!(document_to_value(doc), schema);
        assert_eq!(specs[1].description(), None, "an empty description is left out");
    }
}
