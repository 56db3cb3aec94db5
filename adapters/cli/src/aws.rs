//! `--backend aws` and `--model bedrock`, behind the `aws` cargo feature. The AWS SDK takes
//! most of a release build on two cores and the embedded default never uses it, so the plain
//! build (the README's `cargo run --release -p ota-cli -- demo`) leaves it out; without the
//! feature these say exactly how to get a build that has it.

use std::sync::Arc;

use ota_core::Result;
use ota_core::plan::Plan;
use ota_core::ports::Backend;
use ota_core::service::Settings;

use crate::cli::{AwsCommand, Command};

/// What the rest of the CLI keeps of an AWS connection.
#[derive(Debug, Clone)]
pub struct AwsInfo {
    /// The service settings from `OTA_SETTINGS`.
    pub service: Settings,
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    expected_update_minutes: u32,
}

/// How to get an `ota` that speaks to AWS.
#[cfg(not(feature = "aws"))]
pub const HOW_TO_GET_AWS: &str = "this ota was built without the AWS backend (the `aws` feature, left out of the default build because the AWS SDK takes most of its build time): install one with `cargo install --path adapters/cli --features aws`, or run `cargo run --release -p ota-cli --features aws -- --backend aws ...`";

/// Connects to the resources the `OTA_AWS_*` variables name; `ota aws seed-demo
/// --create-resources` also creates them (for moto).
#[cfg(feature = "aws")]
pub async fn connect(command: &Command) -> Result<(Backend, AwsInfo)> {
    let settings = ota_aws::AwsSettings::from_env()?;
    let (clients, backend) = ota_aws::connect(&settings).await?;
    if let Command::Aws(AwsCommand::SeedDemo { create_resources: true }) = command {
        ota_aws::provision::create_resources(&clients, &settings).await?;
    }
    let info = AwsInfo { service: settings.service.clone(), expected_update_minutes: settings.expected_update_minutes };
    Ok((backend, info))
}

#[cfg(not(feature = "aws"))]
pub async fn connect(command: &Command) -> Result<(Backend, AwsInfo)> {
    let _ = matches!(command, Command::Aws(AwsCommand::SeedDemo { .. }));
    Err(ota_core::Error::invalid("backend", "aws", HOW_TO_GET_AWS))
}

/// IoT Jobs caps a start rate, not devices in flight: what each deployment's policy becomes.
#[cfg(feature = "aws")]
pub fn start_rates(plan: &Plan, info: &AwsInfo) -> Vec<String> {
    plan.deployments
        .iter()
        .map(|d| {
            let rate = ota_aws::job_spec::start_rate(&d.policy, info.expected_update_minutes);
            format!("On AWS ({}): {rate}", d.device_type)
        })
        .collect()
}

#[cfg(not(feature = "aws"))]
pub fn start_rates(_plan: &Plan, _info: &AwsInfo) -> Vec<String> {
    Vec::new()
}

/// The Bedrock Converse chat model.
#[cfg(feature = "aws")]
pub async fn bedrock(model_id: Option<String>) -> Result<Arc<dyn ota_core::agent::ChatModel>> {
    Ok(Arc::new(ota_aws::BedrockChat::from_default_chain(model_id).await))
}

#[cfg(not(feature = "aws"))]
pub async fn bedrock(_model_id: Option<String>) -> Result<Arc<dyn ota_core::agent::ChatModel>> {
    Err(ota_core::Error::invalid("model", "bedrock", HOW_TO_GET_AWS))
}

#[cfg(all(test, not(feature = "aws")))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_the_feature_aws_says_how_to_get_it() {
        let command = Command::Aws(AwsCommand::SeedDemo { create_resources: false });
        let err = connect(&command).await.unwrap_err().to_string();
        assert!(err.contains("cargo install --path adapters/cli --features aws"), "{err}");
        let Err(err) = bedrock(None).await else { panic!("no Bedrock without the feature") };
        let err = err.to_string();
        assert!(err.contains("--features aws"), "{err}");
    }
}
