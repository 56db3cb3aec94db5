//! `ota-aws` implements ota's ports on AWS, on exactly the conventions of the embedded
//! backend: the firmware catalog is an S3 bucket with the `firmwares/v{semver}/{type}/`
//! layout ([`S3Catalog`]), devices are IoT things in thing groups named by the naming
//! convention with their version in the device shadow ([`IotRegistry`]), the config gate and
//! the audit trail are DynamoDB tables ([`DynamoConfigStore`], [`DynamoAuditLog`]), and a
//! rollout is an IoT job with its rollout, abort, timeout and retry configuration plus a
//! DynamoDB record ([`JobsRolloutStore`]), a command run is IoT Commands executions plus its
//! DynamoDB record ([`AwsCommandStore`]), and the telemetry history is a DynamoDB table with a
//! TTL that an IoT topic rule fills ([`DynamoTelemetry`]). The rollout monitor ([`monitor`]) adds what IoT
//! Jobs cannot express: the absolute failure limit and an SNS alert on every abort. The chat
//! assistant's model port runs on Bedrock's Converse API ([`BedrockChat`]).
//!
//! It holds no safety rule of its own: `ota-core`'s service enforces them all, and the
//! conformance suite checks that this backend keeps every guarantee the ports document.
//! AWS errors become `ota_core::Error` in one place ([`errors`]).
//!
//! Architecture Invariant: the AWS SDK crates are used here and nowhere else; adapters call
//! [`connect`] and get a plain [`ota_core::ports::Backend`].

pub mod catalog;
pub mod chat;
pub mod commands;
pub mod enroll;
pub mod errors;
pub mod job_spec;
pub mod kms;
pub mod monitor;
pub mod policies;
pub mod provision;
pub mod registry;
pub mod rollouts;
pub mod sessions;
pub mod settings;
pub mod tables;
pub mod telemetry;

use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use ota_core::Result;
use ota_core::ports::Backend;

pub use catalog::S3Catalog;
pub use chat::BedrockChat;
pub use commands::AwsCommandStore;
pub use registry::IotRegistry;
pub use rollouts::{JobSettings, JobsRolloutStore};
pub use settings::AwsSettings;
pub use tables::{DynamoAuditLog, DynamoConfigStore};
pub use telemetry::DynamoTelemetry;

/// The SDK clients of one deployment, built once from [`AwsSettings`].
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub iot: aws_sdk_iot::Client,
    pub iot_data: aws_sdk_iotdataplane::Client,
    /// The jobs data plane (StartCommandExecution), at `OTA_AWS_JOBS_ENDPOINT` or the shared
    /// endpoint URL when one is set; otherwise [`backend`] finds the account's endpoint.
    pub iot_jobs: aws_sdk_iotjobsdataplane::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sns: aws_sdk_sns::Client,
    pub region: String,
}

impl AwsClients {
    /// Loads credentials and region from the SDK's default chain, overridden by `settings`.
    /// With an endpoint URL (moto, LocalStack) every client talks to it, S3 with path-style
    /// addressing.
    pub async fn load(settings: &AwsSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts));
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        let region = shared.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        let mut clients = Self::from_shared(&shared, settings.endpoint_url.is_some(), region);
        if let Some(url) = settings.jobs_endpoint.as_deref().filter(|_| settings.endpoint_url.is_none()) {
            let config = aws_sdk_iotjobsdataplane::config::Builder::from(&shared).endpoint_url(url).build();
            clients.iot_jobs = aws_sdk_iotjobsdataplane::Client::from_conf(config);
        }
        clients
    }

    /// Clients from an already loaded SDK config (tests pass static credentials).
    pub fn from_shared(shared: &aws_config::SdkConfig, path_style: bool, region: String) -> Self {
        let s3_config = aws_sdk_s3::config::Builder::from(shared).force_path_style(path_style).build();
        AwsClients {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            iot: aws_sdk_iot::Client::new(shared),
            iot_data: aws_sdk_iotdataplane::Client::new(shared),
            iot_jobs: aws_sdk_iotjobsdataplane::Client::new(shared),
            dynamodb: aws_sdk_dynamodb::Client::new(shared),
            sns: aws_sdk_sns::Client::new(shared),
            region,
        }
    }
}

/// Every port on AWS for `settings`, over `clients`.
pub fn backend(clients: &AwsClients, settings: &AwsSettings, account_id: Option<String>) -> Backend {
    let jobs = JobSettings {
        bucket: settings.bucket.clone(),
        region: clients.region.clone(),
        account_id: account_id.clone(),
        presign_role_arn: settings.presign_role_arn.clone(),
        url_expiry_seconds: settings.url_expiry_seconds,
        expected_update_minutes: settings.expected_update_minutes,
    };
    Backend {
        catalog: Arc::new(S3Catalog::new(clients.s3.clone(), &settings.bucket)),
        registry: Arc::new(IotRegistry::new(
            clients.iot.clone(),
            clients.iot_data.clone(),
            settings.naming.clone(),
            settings.fleet_index,
        )),
        config: Arc::new(DynamoConfigStore::new(clients.dynamodb.clone(), settings.table("config"))),
        rollouts: Arc::new(JobsRolloutStore::new(
            clients.iot.clone(),
            clients.dynamodb.clone(),
            settings.table("rollouts"),
            jobs,
        )),
        audit: Arc::new(DynamoAuditLog::new(clients.dynamodb.clone(), settings.table("audit"))),
        commands: Arc::new(command_store(clients, settings, account_id)),
        telemetry: Arc::new(DynamoTelemetry::with_retention(
            clients.dynamodb.clone(),
            settings.table("telemetry"),
            chrono::Duration::days(settings.telemetry_retention_days),
        )),
    }
}

/// The command store: StartCommandExecution through the configured endpoint (an emulator's,
/// or `OTA_AWS_JOBS_ENDPOINT`), else through the account's `iot:Jobs` endpoint found once.
fn command_store(clients: &AwsClients, settings: &AwsSettings, account_id: Option<String>) -> AwsCommandStore {
    let (iot, jobs, db, table) =
        (clients.iot.clone(), clients.iot_jobs.clone(), clients.dynamodb.clone(), settings.table("commands"));
    if settings.endpoint_url.is_some() || settings.jobs_endpoint.is_some() {
        AwsCommandStore::new(iot, jobs, db, table, clients.region.clone(), account_id)
    } else {
        AwsCommandStore::discovering_endpoint(iot, jobs, db, table, clients.region.clone(), account_id)
    }
}

/// Connects to the deployment `settings` names (`OTA_AWS_ACCOUNT_ID` spares a lookup when
/// building thing ARNs).
pub async fn connect(settings: &AwsSettings) -> Result<(AwsClients, Backend)> {
    let clients = AwsClients::load(settings).await;
    let account = std::env::var("OTA_AWS_ACCOUNT_ID").ok().filter(|a| !a.is_empty());
    let b = backend(&clients, settings, account);
    Ok((clients, b))
}
