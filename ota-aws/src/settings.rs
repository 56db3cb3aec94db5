//! Where the AWS backend finds its resources: a plain struct, filled from the environment by
//! [`AwsSettings::from_env`] (the CLI and the Lambdas) or built directly (tests).

use ota_core::names::NamingConvention;
use ota_core::service::Settings;
use ota_core::{Error, Result};

/// Resource names and connection settings of one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSettings {
    /// `OTA_AWS_REGION`, else `AWS_REGION` / the SDK's default chain.
    pub region: Option<String>,
    /// `OTA_AWS_ENDPOINT_URL`: one endpoint for every service (moto, LocalStack). Unset on AWS.
    pub endpoint_url: Option<String>,
    /// `OTA_AWS_BUCKET`: the firmware bucket (`firmwares/v{semver}/{type}/...`). Required.
    pub bucket: String,
    /// `OTA_AWS_TABLE_PREFIX` (default `ota`): tables `{prefix}-config`, `{prefix}-audit`,
    /// `{prefix}-rollouts`, `{prefix}-sessions`, `{prefix}-commands`, `{prefix}-telemetry`.
    pub table_prefix: String,
    /// `OTA_AWS_PRESIGN_ROLE_ARN`: the role IoT Jobs assumes to pre-sign firmware URLs; it can
    /// read only `firmwares/*` of the bucket. Required to start rollouts.
    pub presign_role_arn: Option<String>,
    /// `OTA_AWS_URL_EXPIRY_SECONDS` (default 3600, AWS allows 60–3600): lifetime of a pre-signed URL.
    pub url_expiry_seconds: i64,
    /// `OTA_AWS_EXPECTED_UPDATE_MINUTES` (default 5): how long one device takes to download,
    /// flash and reboot; turns `max_in_flight` into a start rate (see [`crate::job_spec::start_rate`]).
    pub expected_update_minutes: u32,
    /// `OTA_AWS_FLEET_INDEX` (default `on`): list devices through Fleet Indexing `SearchIndex`
    /// (one call per 250 devices, with connectivity). `off` walks the registry and reads each
    /// shadow, for accounts or emulators (moto) without indexing.
    pub fleet_index: bool,
    /// `OTA_AWS_SNS_TOPIC_ARN`: where the rollout monitor publishes aborts.
    pub alert_topic_arn: Option<String>,
    /// `OTA_AWS_JOBS_ENDPOINT`: the IoT jobs data endpoint StartCommandExecution goes to
    /// (`https://...`). Unset: the account's `iot:Jobs` endpoint, found once with
    /// DescribeEndpoint (or `endpoint_url` when that is set).
    pub jobs_endpoint: Option<String>,
    /// `OTA_AWS_TELEMETRY_RETENTION_DAYS` (default 7, 1 to 365): how long telemetry history is
    /// kept; the topic rule's `expires_at` says the same (the template's parameter).
    pub telemetry_retention_days: i64,
    /// `OTA_AWS_POLICIES_KEY` (default `policies/policies.cedar`): the object of the firmware
    /// bucket that holds the authorization policies (see [`crate::policies`]).
    pub policies_key: String,
    /// `OTA_AWS_MAX_ATTEMPTS` (default 3): attempts per request, including the SDK's retries
    /// with backoff for throttling and transient errors.
    pub max_attempts: u32,
    /// Maps device types to thing groups (`service.naming`, kept here for the ports).
    pub naming: NamingConvention,
    /// `OTA_SETTINGS`: the service settings as JSON, exactly the local `settings.json` (naming
    /// convention, gate, default rollout policy). The one place the CLI on AWS and both
    /// Lambdas read them from; validated when read, so a bad value stops the function at start.
    pub service: Settings,
}

impl AwsSettings {
    /// Settings for `bucket` with every default.
    pub fn new(bucket: impl Into<String>) -> Self {
        AwsSettings {
            region: None,
            endpoint_url: None,
            bucket: bucket.into(),
            table_prefix: "ota".into(),
            presign_role_arn: None,
            url_expiry_seconds: 3600,
            expected_update_minutes: 5,
            fleet_index: true,
            alert_topic_arn: None,
            jobs_endpoint: None,
            telemetry_retention_days: ota_core::ports::TELEMETRY_RETENTION_DAYS,
            policies_key: crate::policies::POLICIES_KEY.to_string(),
            max_attempts: 3,
            naming: NamingConvention::default(),
            service: Settings::default(),
        }
    }

    /// Reads the `OTA_AWS_*` variables; `OTA_AWS_BUCKET` is required.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`Self::from_env`] over any lookup, so it is testable without touching the process env.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bucket = get("OTA_AWS_BUCKET").ok_or_else(|| {
            Error::invalid(
                "AWS settings",
                "OTA_AWS_BUCKET",
                "is not set; export the firmware bucket of the deployment (the stack output FirmwareBucket)",
            )
        })?;
        let mut s = AwsSettings::new(bucket);
        s.region = get("OTA_AWS_REGION");
        s.endpoint_url = get("OTA_AWS_ENDPOINT_URL");
        if let Some(p) = get("OTA_AWS_TABLE_PREFIX") {
            s.table_prefix = p;
        }
        s.presign_role_arn = get("OTA_AWS_PRESIGN_ROLE_ARN");
        s.alert_topic_arn = get("OTA_AWS_SNS_TOPIC_ARN");
        if let Some(v) = get("OTA_AWS_URL_EXPIRY_SECONDS") {
            s.url_expiry_seconds = number("OTA_AWS_URL_EXPIRY_SECONDS", &v, 60, 3600)?;
        }
        if let Some(v) = get("OTA_AWS_EXPECTED_UPDATE_MINUTES") {
            s.expected_update_minutes = number("OTA_AWS_EXPECTED_UPDATE_MINUTES", &v, 1, 10_080)?;
        }
        s.jobs_endpoint = get("OTA_AWS_JOBS_ENDPOINT");
        if let Some(k) = get("OTA_AWS_POLICIES_KEY") {
            if k.starts_with("firmwares/") || k.starts_with('/') {
                return Err(Error::invalid(
                    "AWS settings",
                    "OTA_AWS_POLICIES_KEY",
                    "the policies live outside firmwares/ (which the presigning role can read), as a relative key",
                ));
            }
            s.policies_key = k;
        }
        if let Some(v) = get("OTA_AWS_TELEMETRY_RETENTION_DAYS") {
            s.telemetry_retention_days = number("OTA_AWS_TELEMETRY_RETENTION_DAYS", &v, 1, 365)?;
        }
        if let Some(v) = get("OTA_AWS_MAX_ATTEMPTS") {
            s.max_attempts = number("OTA_AWS_MAX_ATTEMPTS", &v, 1, 20)?;
        }
        if let Some(v) = get("OTA_AWS_FLEET_INDEX") {
            s.fleet_index = match v.to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                _ => return Err(Error::invalid("OTA_AWS_FLEET_INDEX", v, "use on or off")),
            };
        }
        if let Some(v) = get("OTA_SETTINGS") {
            s.service = Settings::from_json(v.as_bytes(), "OTA_SETTINGS")?;
            s.naming = s.service.naming.clone();
        }
        Ok(s)
    }

    /// The DynamoDB table holding `name` (`config`, `audit`, `rollouts`, `sessions`,
    /// `commands`, `telemetry`).
    pub fn table(&self, name: &str) -> String {
        format!("{}-{name}", self.table_prefix)
    }
}

fn number<T: TryFrom<i64>>(what: &'static str, v: &str, lo: i64, hi: i64) -> Result<T> {
    let n: i64 = v.trim().parse().map_err(|_| Error::invalid(what, v, "expected a whole number"))?;
    if !(lo..=hi).contains(&n) {
        return Err(Error::invalid(what, v, format!("must be between {lo} and {hi}")));
    }
    T::try_from(n).map_err(|_| Error::invalid(what, v, "out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_needs_a_bucket_and_checks_numbers() {
        let err = AwsSettings::from_lookup(|_| None).unwrap_err();
        assert!(err.to_string().contains("OTA_AWS_BUCKET"), "{err}");
        let s = AwsSettings::from_lookup(|k| match k {
            "OTA_AWS_BUCKET" => Some("fw".into()),
            "OTA_AWS_TABLE_PREFIX" => Some("prod-ota".into()),
            "OTA_AWS_FLEET_INDEX" => Some("off".into()),
            "OTA_AWS_TELEMETRY_RETENTION_DAYS" => Some("30".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((s.telemetry_retention_days, s.table("telemetry").as_str()), (30, "prod-ota-telemetry"));
        assert_eq!((s.bucket.as_str(), s.table("audit"), s.fleet_index), ("fw", "prod-ota-audit".into(), false));
        let bad = AwsSettings::from_lookup(|k| match k {
            "OTA_AWS_BUCKET" => Some("fw".into()),
            "OTA_AWS_URL_EXPIRY_SECONDS" => Some("7200".into()),
            _ => None,
        });
        assert!(bad.is_err());
        let no_history = AwsSettings::from_lookup(|k| match k {
            "OTA_AWS_BUCKET" => Some("fw".into()),
            "OTA_AWS_TELEMETRY_RETENTION_DAYS" => Some("0".into()),
            _ => None,
        });
        assert!(no_history.unwrap_err().to_string().contains("between 1 and 365"));
        let with = |json: &'static str| {
            AwsSettings::from_lookup(move |k| match k {
                "OTA_AWS_BUCKET" => Some("fw".into()),
                "OTA_SETTINGS" => Some(json.into()),
                _ => None,
            })
        };
        let s = with(
            r#"{"naming":{"acronyms":["ai"],"suffix":"Dev","overrides":{}},"gate":{"enabled_without_record":true,"default_policy":{"max_in_flight":5,"max_per_minute":null,"exponential_ramp":null,"abort":{"failure_percent":5.0,"min_executed":10,"max_failures":10},"in_progress_timeout_minutes":30,"retries":{"failed":0,"timed_out":0}}}}"#,
        );
        let s = s.unwrap();
        assert!(s.service.gate.enabled_without_record);
        assert_eq!(s.service.gate.default_policy.max_in_flight, 5);
        assert_eq!(s.naming, s.service.naming);
        let err = with(r#"{"naming":{"acronyms":[],"suffix":"AWSDevice","overrides":{}},"gate":{"enabled_without_record":false,"default_policy":{"max_in_flight":0,"max_per_minute":null,"exponential_ramp":null,"abort":{"failure_percent":5.0,"min_executed":10,"max_failures":10},"in_progress_timeout_minutes":30,"retries":{"failed":0,"timed_out":0}}}}"#).unwrap_err();
        assert!(err.to_string().contains("OTA_SETTINGS") && err.to_string().contains("max_in_flight"), "{err}");
    }
}
