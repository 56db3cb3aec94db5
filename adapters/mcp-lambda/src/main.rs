//! The MCP server as a Lambda (`McpFunction` in `deploy/template.yaml`): the same `/mcp` router
//! as `ota serve` (streamable HTTP, stateless, JSON responses) on the AWS backend, behind API
//! Gateway's Cognito JWT authorizer. The caller of each request comes from the authorizer's
//! claims ([`ota_auth::apigw`]); the token itself was verified by API Gateway.
//!
//! Configuration (environment):
//! - `OTA_AWS_*`: the resources, as for `ota --backend aws` and the rollout monitor.
//! - `OTA_MCP_ALLOWED_HOSTS`: comma-separated `Host` values accepted (the API's domain and any
//!   custom domain). Unset in Lambda: no Host check (API Gateway only routes its own domains).
//!
//! `get_rollout` and `ota://rollouts/{id}` report progress from IoT Jobs (`DescribeJob`
//! counters and the job's executions, [`job_counts`]), as the page does.
//!
//! Without `AWS_LAMBDA_RUNTIME_API` (outside Lambda) it serves the same router with
//! `axum::serve` on `OTA_MCP_LISTEN` (default `127.0.0.1:8081`) for a smoke test of start-up
//! and the AWS wiring only: no request there carries an authorizer context, so every MCP call
//! is refused with 401. Use `ota serve` with `ota token create` to try the tools locally.

use std::sync::Arc;

use ota_auth::apigw;
use ota_mcp::OtaMcp;

mod job_counts;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let settings = ota_aws::AwsSettings::from_env()?;
    let (clients, backend) = ota_aws::connect(&settings).await?;
    // No data dir in Lambda: the service settings come from OTA_SETTINGS (validated), as for `ota --backend aws`.
    // The deployment's policies (s3://BUCKET/policies/policies.cedar) or the defaults; a file that
    // does not validate stops the function here.
    let svc = Arc::new(ota_aws::policies::service(&clients, &settings, backend).await?);
    let hosts = apigw::allowed_hosts(std::env::var("OTA_MCP_ALLOWED_HOSTS").ok().as_deref(), in_lambda);
    let router = OtaMcp::new(svc, Some(Arc::new(job_counts::JobCounts(clients))))
        .http_router(hosts)
        .layer(axum::middleware::from_fn(apigw::attach_caller));
    if in_lambda {
        return lambda_http::run(router).await;
    }
    let addr = std::env::var("OTA_MCP_LISTEN").unwrap_or_else(|_| "127.0.0.1:8081".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "ota-mcp: not in Lambda; smoke server on http://{}/mcp (every call gets 401: no API Gateway authorizer here)",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}
