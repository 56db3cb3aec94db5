//! The Bedrock Converse chat model on the exact requests it sends and the answers Bedrock
//! gives (aws-smithy-mocks): the conversation and tool mapping, tool use in the answer, token
//! usage, and the errors a person sees.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::http::HttpResponse;
use aws_sdk_bedrockruntime::error::ErrorMetadata;
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseInput, ConverseOutput};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput as Output, Message, StopReason, SystemContentBlock, TokenUsage,
    ToolInputSchema, ToolResultContentBlock, ToolResultStatus, ToolUseBlock,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_types::body::SdkBody;
use ota_aws::chat::{BedrockChat, DEFAULT_MODEL_ID, document_to_value, value_to_document};
use ota_core::agent::{ChatMessage, ChatModel, ChatRequest, ModelError, ToolCall, ToolEffect, ToolSpec, Usage};
use serde_json::json;

fn list_devices() -> ToolSpec {
    ToolSpec {
        name: "list_devices".into(),
        description: "Lists devices of a type with their firmware versions.".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"device_type": {"type": "string"}, "limit": {"type": "integer", "maximum": 250}},
            "required": ["device_type"]
        }),
        effect: ToolEffect::Read,
    }
}

fn request<'a>(messages: &'a [ChatMessage], tools: &'a [ToolSpec]) -> ChatRequest<'a> {
    ChatRequest { system: "You manage a fleet.", messages, tools }
}

fn answer(content: Vec<ContentBlock>, stop: StopReason) -> ConverseOutput {
    ConverseOutput::builder()
        .output(Output::Message(
            Message::builder().role(ConversationRole::Assistant).set_content(Some(content)).build().unwrap(),
        ))
        .stop_reason(stop)
        .usage(TokenUsage::builder().input_tokens(120).output_tokens(30).total_tokens(150).build().unwrap())
        .build()
        .unwrap()
}

fn http(status: u16, headers: &[(&str, &str)], body: &'static str) -> HttpResponse {
    let mut response = HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body));
    for (name, value) in headers {
        response.headers_mut().insert(name.to_string(), value.to_string());
    }
    response
}

#[tokio::test]
async fn the_conversation_alternates_roles_with_tool_results_as_user_content() {
    let seen: Arc<Mutex<Option<ConverseInput>>> = Arc::default();
    let stash = seen.clone();
    let converse = mock!(Client::converse)
        .match_requests(move |r| {
            *stash.lock().unwrap() = Some(r.clone());
            true
        })
        .then_output(|| answer(vec![ContentBlock::Text("Two feeders are behind.".into())], StopReason::EndTurn));
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&converse]);
    let model = BedrockChat::new(client, "us.amazon.nova-2-lite-v1:0");

    let messages = [
        ChatMessage::user("which pet feeders are behind?"),
        ChatMessage::Assistant {
            text: String::new(),
            tool_calls: vec![
                ToolCall {
                    id: "tooluse_1".into(),
                    name: "list_devices".into(),
                    arguments: r#"{"device_type":"pet_feeder","limit":50}"#.into(),
                },
                ToolCall { id: "tooluse_2".into(), name: "list_devices".into(), arguments: "{oops".into() },
            ],
        },
        ChatMessage::Tool {
            call_id: "tooluse_1".into(),
            name: "list_devices".into(),
            content: "2 of 5 devices run 1.0.0".into(),
            is_error: false,
        },
        ChatMessage::Tool {
            call_id: "tooluse_2".into(),
            name: "list_devices".into(),
            content: "the arguments are not valid JSON".into(),
            is_error: true,
        },
        ChatMessage::user("and which ones are online?"),
    ];
    let tools = [list_devices()];
    let response = model.complete(request(&messages, &tools)).await.unwrap();
    assert_eq!(response.text, "Two feeders are behind.");

    let input = seen.lock().unwrap().take().expect("one Converse request");
    assert_eq!(input.model_id(), Some("us.amazon.nova-2-lite-v1:0"));
    assert_eq!(input.system(), [SystemContentBlock::Text("You manage a fleet.".into())]);
    assert!(input.inference_config().is_none(), "no token cap unless configured");

    let roles: Vec<_> = input.messages().iter().map(|m| m.role().clone()).collect();
    assert_eq!(roles, [ConversationRole::User, ConversationRole::Assistant, ConversationRole::User]);

    let assistant = input.messages()[1].content();
    assert_eq!(assistant.len(), 2, "no text block for empty text: {assistant:?}");
    let first = assistant[0].as_tool_use().unwrap();
    assert_eq!((first.tool_use_id(), first.name()), ("tooluse_1", "list_devices"));
    assert_eq!(document_to_value(first.input()), json!({"device_type": "pet_feeder", "limit": 50}));
    assert_eq!(first.input(), &value_to_document(&json!({"device_type": "pet_feeder", "limit": 50})));
    assert_eq!(document_to_value(assistant[1].as_tool_use().unwrap().input()), json!({}), "malformed arguments");

    let user = input.messages()[2].content();
    assert_eq!(user.len(), 3, "both tool results and the next question in one user message: {user:?}");
    let ok = user[0].as_tool_result().unwrap();
    assert_eq!(ok.tool_use_id(), "tooluse_1");
    assert_eq!(ok.status(), Some(&ToolResultStatus::Success));
    assert_eq!(ok.content(), [ToolResultContentBlock::Text("2 of 5 devices run 1.0.0".into())]);
    let failed = user[1].as_tool_result().unwrap();
    assert_eq!(failed.tool_use_id(), "tooluse_2");
    assert_eq!(failed.status(), Some(&ToolResultStatus::Error));
    assert_eq!(user[2], ContentBlock::Text("and which ones are online?".into()));

    let config = input.tool_config().expect("a tool config with tools");
    let spec = config.tools()[0].as_tool_spec().unwrap();
    assert_eq!(spec.name(), "list_devices");
    assert_eq!(spec.description(), Some("Lists devices of a type with their firmware versions."));
    let Some(ToolInputSchema::Json(schema)) = spec.input_schema() else { panic!("{spec:?}") };
    assert_eq!(document_to_value(schema), list_devices().input_schema);
}

#[tokio::test]
async fn without_tools_there_is_no_tool_config_and_max_tokens_is_sent() {
    let seen: Arc<Mutex<Option<ConverseInput>>> = Arc::default();
    let stash = seen.clone();
    let converse = mock!(Client::converse)
        .match_requests(move |r| {
            *stash.lock().unwrap() = Some(r.clone());
            true
        })
        .then_output(|| answer(vec![ContentBlock::Text("Hello.".into())], StopReason::EndTurn));
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&converse]);
    let model = BedrockChat::new(client, DEFAULT_MODEL_ID).with_max_tokens(512);
    assert_eq!(model.describe(), "bedrock:global.amazon.nova-2-lite-v1:0");

    let messages = [ChatMessage::user("hi")];
    model.complete(request(&messages, &[])).await.unwrap();
    let input = seen.lock().unwrap().take().unwrap();
    assert_eq!(input.model_id(), Some(DEFAULT_MODEL_ID));
    assert!(input.tool_config().is_none(), "Converse refuses an empty tool list");
    assert_eq!(input.inference_config().and_then(|c| c.max_tokens()), Some(512));
}

#[tokio::test]
async fn tool_use_becomes_tool_calls_with_json_arguments_and_usage_is_reported() {
    let converse = mock!(Client::converse).then_output(|| {
        answer(
            vec![
                ContentBlock::Text("Checking the fleet.".into()),
                ContentBlock::ToolUse(
                    ToolUseBlock::builder()
                        .tool_use_id("tooluse_abc")
                        .name("list_devices")
                        .input(value_to_document(&json!({"device_type": "pet_feeder", "limit": 10, "ratio": 0.5})))
                        .build()
                        .unwrap(),
                ),
            ],
            StopReason::ToolUse,
        )
    });
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&converse]);
    let model = BedrockChat::new(client, DEFAULT_MODEL_ID);
    let messages = [ChatMessage::user("which pet feeders are behind?")];
    let response = model.complete(request(&messages, &[list_devices()])).await.unwrap();

    assert_eq!(response.text, "Checking the fleet.");
    assert_eq!(response.usage, Usage { input_tokens: 120, output_tokens: 30 });
    assert_eq!(response.tool_calls.len(), 1);
    let call = &response.tool_calls[0];
    assert_eq!((call.id.as_str(), call.name.as_str()), ("tooluse_abc", "list_devices"));
    let arguments: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(arguments, json!({"device_type": "pet_feeder", "limit": 10, "ratio": 0.5}));
}

#[tokio::test]
async fn a_tool_use_answer_on_the_wire_is_read() {
    let converse = mock!(Client::converse).then_http_response(|| {
        http(
            200,
            &[("content-type", "application/json")],
            r#"{"output":{"message":{"role":"assistant","content":[
                {"reasoningContent":{"reasoningText":{"text":"[REDACTED]"}}},
                {"toolUse":{"toolUseId":"tooluse_w1","name":"list_devices","input":{"device_type":"pet_feeder","limit":-1}}}
            ]}},"stopReason":"tool_use","usage":{"inputTokens":7,"outputTokens":3,"totalTokens":10},
            "metrics":{"latencyMs":12}}"#,
        )
    });
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&converse]);
    let response = BedrockChat::new(client, DEFAULT_MODEL_ID)
        .complete(request(&[ChatMessage::user("go")], &[list_devices()]))
        .await
        .unwrap();
    assert_eq!(response.text, "", "reasoning is not part of the answer");
    assert_eq!(response.usage, Usage { input_tokens: 7, output_tokens: 3 });
    assert_eq!(response.tool_calls[0].id, "tooluse_w1");
    let arguments: serde_json::Value = serde_json::from_str(&response.tool_calls[0].arguments).unwrap();
    assert_eq!(arguments, json!({"device_type": "pet_feeder", "limit": -1}));
}

#[tokio::test]
async fn access_denied_names_bedrock_invoke_model_and_model_access() {
    let denied = mock!(Client::converse).then_http_response(|| {
        http(
            403,
            &[("content-type", "application/json"), ("x-amzn-errortype", "AccessDeniedException")],
            r#"{"message":"User: arn:aws:sts::111122223333:assumed-role/ota/x is not authorized to perform: bedrock:InvokeModel"}"#,
        )
    });
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&denied]);
    let err = BedrockChat::new(client, DEFAULT_MODEL_ID)
        .complete(request(&[ChatMessage::user("hi")], &[]))
        .await
        .unwrap_err();
    let ModelError::Rejected(text) = &err else { panic!("{err:?}") };
    assert!(text.contains("bedrock:InvokeModel on global.amazon.nova-2-lite-v1:0"), "{text}");
    assert!(text.contains("access to the model must be enabled"), "{text}");
    assert!(text.contains("is not authorized to perform"), "the service's message is kept: {text}");
}

#[tokio::test]
async fn an_unknown_model_or_invalid_request_names_the_model_id() {
    let missing = mock!(Client::converse).then_error(|| {
        ConverseError::ResourceNotFoundException(
            aws_sdk_bedrockruntime::types::error::ResourceNotFoundException::builder()
                .message("Model not found.")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&missing]);
    let err = BedrockChat::new(client, "amazon.nova-9-v1:0").complete(request(&[ChatMessage::user("hi")], &[])).await;
    let Err(ModelError::Rejected(text)) = err else { panic!("{err:?}") };
    assert!(text.contains("amazon.nova-9-v1:0") && text.contains("Model not found."), "{text}");

    let invalid = mock!(Client::converse).then_error(|| {
        ConverseError::ValidationException(
            aws_sdk_bedrockruntime::types::error::ValidationException::builder()
                .message("Invocation of model ID amazon.nova-2-lite-v1:0 with on-demand throughput isn't supported.")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&invalid]);
    let err =
        BedrockChat::new(client, "amazon.nova-2-lite-v1:0").complete(request(&[ChatMessage::user("hi")], &[])).await;
    let Err(ModelError::Rejected(text)) = err else { panic!("{err:?}") };
    assert!(text.contains("model amazon.nova-2-lite-v1:0") && text.contains("inference profile"), "{text}");
}

#[tokio::test]
async fn throttling_is_rejected_after_the_sdk_retries() {
    let throttled = mock!(Client::converse)
        .sequence()
        .error(|| {
            ConverseError::ThrottlingException(
                aws_sdk_bedrockruntime::types::error::ThrottlingException::builder()
                    .message("Too many requests, please wait before trying again.")
                    .meta(ErrorMetadata::builder().code("ThrottlingException").build())
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&throttled], |c| c.retry_config(
        aws_sdk_bedrockruntime::config::retry::RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(1))
    ));
    let err = BedrockChat::new(client, DEFAULT_MODEL_ID).complete(request(&[ChatMessage::user("hi")], &[])).await;
    let Err(ModelError::Rejected(text)) = err else { panic!("{err:?}") };
    assert!(text.contains("throttled") && text.contains("Too many requests"), "{text}");
    assert_eq!(throttled.num_calls(), 3, "the SDK retried before giving up");
}

#[tokio::test]
async fn service_unavailable_and_model_timeouts_are_unavailable() {
    let down = mock!(Client::converse).then_error(|| {
        ConverseError::ModelTimeoutException(
            aws_sdk_bedrockruntime::types::error::ModelTimeoutException::builder()
                .message("Model has timed out in processing the request.")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&down]);
    let err = BedrockChat::new(client, DEFAULT_MODEL_ID).complete(request(&[ChatMessage::user("hi")], &[])).await;
    let Err(ModelError::Unavailable(text)) = err else { panic!("{err:?}") };
    assert!(text.contains("timed out") && text.contains("try again later"), "{text}");
}

#[tokio::test]
async fn an_answer_that_is_not_a_message_is_malformed() {
    // A union member this SDK does not know deserializes as `Unknown`.
    let unknown = mock!(Client::converse).then_http_response(|| {
        http(
            200,
            &[("content-type", "application/json")],
            r#"{"output":{"somethingNew":{"x":1}},"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2},"metrics":{"latencyMs":1}}"#,
        )
    });
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&unknown]);
    let err = BedrockChat::new(client, DEFAULT_MODEL_ID).complete(request(&[ChatMessage::user("hi")], &[])).await;
    assert!(matches!(&err, Err(ModelError::Malformed(m)) if m.contains("not a message")), "{err:?}");

    let empty = mock!(Client::converse)
        .then_output(|| ConverseOutput::builder().stop_reason(StopReason::EndTurn).build().unwrap());
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&empty]);
    let err = BedrockChat::new(client, DEFAULT_MODEL_ID).complete(request(&[ChatMessage::user("hi")], &[])).await;
    assert!(matches!(err, Err(ModelError::Malformed(_))), "{err:?}");

    let bad_tool_use = mock!(Client::converse).then_output(|| answer(vec![], StopReason::MalformedToolUse));
    let client = mock_client!(aws_sdk_bedrockruntime, RuleMode::MatchAny, &[&bad_tool_use]);
    let err = BedrockChat::new(client, DEFAULT_MODEL_ID).complete(request(&[ChatMessage::user("hi")], &[])).await;
    assert!(matches!(err, Err(ModelError::Malformed(_))), "{err:?}");
}
