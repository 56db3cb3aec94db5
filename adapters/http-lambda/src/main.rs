//! The HTTP API, chat assistant and chat page as a Lambda (`HttpFunction` in
//! `deploy/template.yaml`): the same `ota-http` router as `ota serve`, on the AWS backend,
//! behind API Gateway's Cognito JWT authorizer. The caller of each request comes from the
//! authorizer's claims (`ota_auth::apigw`), so a token is verified once, by API Gateway.
//!
//! Configuration (environment):
//! - `OTA_AWS_*`: the resources, as for `ota --backend aws` and the other functions.
//! - `OTA_CHAT_MODEL`: `bedrock` (Amazon Nova 2 Lite), `bedrock:MODEL_ID` or `none`. Default
//!   `bedrock`. OpenAI-compatible servers are for `ota serve`.
//! - `OTA_COGNITO_DOMAIN` (`https://PREFIX.auth.REGION.amazoncognito.com`) and
//!   `OTA_COGNITO_CLIENT_ID`: when both are set the page signs in with Cognito's hosted UI
//!   (authorization code + PKCE); otherwise it asks for a token.
//!
//! Progress comes from IoT Jobs' `DescribeJob` counters and executions (`JobCounts`, shared
//! with the MCP Lambda), for the page and the chat's `get_rollout` alike. API Gateway buffers responses, so the
//! page polls instead of streaming, and a stream ends after 25 s (Lambda's 30 s limit).
//! Conversations live in DynamoDB (`{prefix}-sessions`, `ota_aws::sessions`), so a typed
//! "yes" reaches the plan it confirms whichever instance answers; the page's Confirm button
//! also carries the plan, which the service re-plans and checks against the plan id.
//!
//! Without `AWS_LAMBDA_RUNTIME_API` it serves the router on `OTA_HTTP_LISTEN` (default
//! `127.0.0.1:8082`) as a smoke test of start-up and the AWS wiring: with no authorizer there,
//! every `/api` call but `health` gets 401.

use std::sync::Arc;
use std::time::Duration;

use ota_auth::apigw;
use ota_core::agent::{Assistant, AssistantOptions, ModelSpec, SessionLimits};
use ota_http::{PageAuth, PageConfig, ProgressSource, Web};
use ota_mcp::{ChatTools, OtaMcp};

// The progress port on AWS, the same one the MCP Lambda gives `get_rollout`.
#[path = "../../mcp-lambda/src/job_counts.rs"]
mod job_counts;
use job_counts::JobCounts;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let settings = ota_aws::AwsSettings::from_env()?;
    let (clients, backend) = ota_aws::connect(&settings).await?;
    // The deployment's policies (s3://BUCKET/policies/policies.cedar) or the defaults; a file that
    // does not validate stops the function here.
    let svc = Arc::new(ota_aws::policies::service(&clients, &settings, backend).await?);
    let progress: Arc<dyn ProgressSource> = Arc::new(JobCounts(clients.clone()));

    let sessions = ota_aws::sessions::DynamoSessions::new(
        clients.dynamodb.clone(),
        settings.table("sessions"),
        SessionLimits::default(),
    );
    // API Gateway gives an integration 30 s: no model call starts after 20 s.
    let options = AssistantOptions { time_budget: Some(chrono::Duration::seconds(20)), ..Default::default() };
    let mut assistant = Assistant::new(svc.clone(), Arc::new(sessions)).with_options(options);
    if let Some(ModelSpec::Bedrock { model_id }) = ModelSpec::parse(&env("OTA_CHAT_MODEL").unwrap_or("bedrock".into()))?
    {
        let model = Arc::new(ota_aws::BedrockChat::from_default_chain(model_id).await);
        assistant =
            assistant.with_model(model, Arc::new(ChatTools::new(OtaMcp::new(svc.clone(), Some(progress.clone())))));
    } else if env("OTA_CHAT_MODEL").is_some_and(|m| m.to_ascii_lowercase().starts_with("openai")) {
        return Err(
            "OTA_CHAT_MODEL: OpenAI-compatible models are for `ota serve`; on AWS use bedrock[:MODEL_ID]".into()
        );
    }
    let auth = match (env("OTA_COGNITO_DOMAIN"), env("OTA_COGNITO_CLIENT_ID")) {
        (Some(domain), Some(client_id)) => {
            PageAuth::Cognito { domain, client_id, scopes: "openid email profile".into() }
        }
        _ => PageAuth::Token,
    };
    let page = PageConfig { auth, model: assistant.model(), backend: "aws".into(), streaming: !in_lambda };
    let web = Web::new(assistant, Some(progress))
        .with_poll(Duration::from_secs(2))
        .with_stream_limit(Some(Duration::from_secs(25)));
    let router =
        ota_http::public_router(&page).merge(web.api_router().layer(axum::middleware::from_fn(apigw::attach_caller)));
    if in_lambda {
        return lambda_http::run(router).await;
    }
    let addr = env("OTA_HTTP_LISTEN").unwrap_or_else(|| "127.0.0.1:8082".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "ota-http: not in Lambda; smoke server on http://{}/ (API calls get 401: no authorizer here)",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}
