//! `--backend aws` and `--model bedrock`, behind the `aws` cargo feature. The AWS SDK takes
//! most of a release build on two cores and the embedded default never uses it, so the plain
//! build (the README's `cargo run --release -p ota-cli -- demo`) leaves it out; without the
//! feature these say exactly how to get a build that has it.

use std::collections::BTreeMap;
use std::sync::Arc;

use ota_core::Result;
use ota_core::names::{DeviceType, ThingName};
use ota_core::plan::Plan;
use ota_core::ports::Backend;
use ota_core::service::Settings;
use ota_core::signing::FirmwareSigner;

use crate::cli::{AwsCommand, Command};

/// What the rest of the CLI keeps of an AWS connection.
#[derive(Debug, Clone)]
pub struct AwsInfo {
    /// The service settings from `OTA_SETTINGS`.
    pub service: Settings,
    /// The deployment's policies (`s3://BUCKET/policies/policies.cedar`), `None` for the defaults.
    pub policies: Option<std::sync::Arc<ota_core::authz::Authorizer>>,
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
    // The policies every AWS front door decides by; one that does not validate stops here.
    let policies = ota_aws::policies::load(&clients, &settings).await?;
    let info = AwsInfo {
        service: settings.service.clone(),
        policies,
        expected_update_minutes: settings.expected_update_minutes,
    };
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

/// The KMS key `ota firmware publish --sign kms:KEY` names (a key id, key ARN or
/// `alias/NAME`); `None` for a key of the data dir.
pub fn kms_key(sign: &str) -> Option<&str> {
    sign.strip_prefix("kms:")
}

/// A signer whose key never leaves KMS, for `ota --backend aws firmware publish --sign
/// kms:KEY`: the key must be ECC_NIST_P256 / SIGN_VERIFY and, like any key, trusted in
/// `OTA_SETTINGS`' `signing.trusted_keys` (its id is printed in the refusal otherwise). In
/// main.rs's publish arm:
/// `let kms = match sign.as_deref().and_then(aws::kms_key) { Some(k) => Some(aws::kms_signer(k).await?), None => None };`
/// then load a data-dir key only when `kms` is `None`, and pass `kms.as_deref()` or the key.
#[cfg(feature = "aws")]
pub async fn kms_signer(key: &str) -> Result<Box<dyn FirmwareSigner>> {
    let settings = ota_aws::AwsSettings::from_env()?;
    Ok(Box::new(ota_aws::kms::KmsSigner::load(&settings, key).await?))
}

#[cfg(not(feature = "aws"))]
pub async fn kms_signer(key: &str) -> Result<Box<dyn FirmwareSigner>> {
    Err(ota_core::Error::invalid("signing key", format!("kms:{key}"), HOW_TO_GET_AWS))
}

/// What `ota --backend aws devices enroll` writes for the firmware: `ca.pem`, `cert.pem`,
/// `key.pem` (the private key: owner-only, never printed) and `mqtt_url` for NVS.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub struct AwsEnrollment {
    /// Amazon Root CA 1, the root of the ATS endpoint's server certificate.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub mqtt_url: String,
    pub certificate_id: String,
}

impl std::fmt::Debug for AwsEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsEnrollment({} {})", self.mqtt_url, self.certificate_id)
    }
}

/// Enrolls `thing` on AWS IoT (`ota_aws::enroll`): the thing with its type and attributes in
/// its type's group, an active certificate, the shared device policy.
#[cfg(feature = "aws")]
pub async fn enroll_on_aws(
    thing: &ThingName,
    device_type: &DeviceType,
    attributes: &BTreeMap<String, String>,
) -> Result<AwsEnrollment> {
    let b = enroller().await?.enroll(thing, device_type, attributes).await?;
    let mqtt_url = b.mqtt_url();
    Ok(AwsEnrollment {
        ca_pem: b.ca_pem.unwrap_or_else(|| ota_aws::enroll::AMAZON_ROOT_CA_1.to_string()),
        cert_pem: b.cert_pem,
        key_pem: b.key_pem,
        mqtt_url,
        certificate_id: b.certificate_id,
    })
}

/// Revokes `thing`'s certificates on AWS IoT (INACTIVE, detached); the ARNs revoked.
#[cfg(feature = "aws")]
pub async fn revoke_on_aws(thing: &ThingName) -> Result<Vec<String>> {
    Ok(enroller().await?.revoke(thing).await?.certificates)
}

#[cfg(feature = "aws")]
async fn enroller() -> Result<ota_aws::enroll::Enroller> {
    let settings = ota_aws::AwsSettings::from_env()?;
    let clients = ota_aws::AwsClients::load(&settings).await;
    let account = std::env::var("OTA_AWS_ACCOUNT_ID").ok().filter(|a| !a.is_empty());
    Ok(ota_aws::enroll::Enroller::new(&clients, &settings, account))
}

#[cfg(not(feature = "aws"))]
pub async fn enroll_on_aws(
    thing: &ThingName,
    _device_type: &DeviceType,
    _attributes: &BTreeMap<String, String>,
) -> Result<AwsEnrollment> {
    Err(ota_core::Error::invalid("backend", format!("aws (enrolling {thing})"), HOW_TO_GET_AWS))
}

#[cfg(not(feature = "aws"))]
pub async fn revoke_on_aws(thing: &ThingName) -> Result<Vec<String>> {
    Err(ota_core::Error::invalid("backend", format!("aws (revoking {thing})"), HOW_TO_GET_AWS))
}

#[cfg(test)]
mod kms_tests {
    use super::*;

    #[test]
    fn kms_keys_are_named_by_their_prefix() {
        assert_eq!(kms_key("kms:alias/firmware"), Some("alias/firmware"));
        assert_eq!(kms_key("kms:arn:aws:kms:eu-west-1:1:key/k"), Some("arn:aws:kms:eu-west-1:1:key/k"));
        assert_eq!(kms_key("release-2026"), None);
    }
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
        let err = kms_signer("alias/firmware").await.unwrap_err().to_string();
        assert!(err.contains("kms:alias/firmware") && err.contains("--features aws"), "{err}");
        let thing = ThingName::parse("pet_feeder-05").unwrap();
        let ty = DeviceType::parse("pet_feeder").unwrap();
        let err = enroll_on_aws(&thing, &ty, &BTreeMap::new()).await.unwrap_err().to_string();
        assert!(err.contains("pet_feeder-05") && err.contains("--features aws"), "{err}");
        assert!(revoke_on_aws(&thing).await.unwrap_err().to_string().contains("--features aws"));
    }
}
