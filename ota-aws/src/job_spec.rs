//! What a rollout becomes on AWS IoT Jobs, as pure functions: the job document, the start
//! rate that stands in for `max_in_flight`, and the rollout, abort, timeout and retry
//! configurations. [`crate::rollouts`] sends them; tests read them back.
//!
//! **`max_in_flight` on IoT Jobs.** IoT Jobs cannot cap how many devices update at once; it
//! can only cap how many it *starts* per minute (`maximumPerMinute`). If one device takes
//! `expected_update_minutes` (download, flash, reboot, report), starting
//! `ceil(max_in_flight / expected_update_minutes)` per minute keeps about `max_in_flight` in
//! flight at steady state. It is a rate, not a cap: devices slower than expected pile up, up
//! to `rate × in_progress_timeout_minutes` in the worst case, which [`StartRate`] reports so
//! the operator sees it. The local engine caps concurrency exactly.
//!
//! **Abort rules.** `abortConfig` expresses the percentage rule (`failureType: ALL` counts
//! FAILED, REJECTED and TIMED_OUT; `minNumberOfExecutedThings`). The absolute rule
//! (`max_failures`) and the operator alert have no IoT equivalent: the rollout monitor
//! ([`crate::monitor`]) applies them.

use aws_sdk_iot::types::{
    AbortAction, AbortConfig, AbortCriteria, ExponentialRolloutRate, JobExecutionFailureType, JobExecutionsRetryConfig,
    JobExecutionsRolloutConfig, PresignedUrlConfig, RateIncreaseCriteria, RetryCriteria, RetryableFailureType,
    TimeoutConfig,
};
use ota_core::catalog::{ArtifactRef, CatalogFile};
use ota_core::policy::{RampCriterion, RolloutPolicy};
use ota_core::rollout::Rollout;
use ota_core::{Error, Result};
use serde::Serialize;

/// IoT Jobs accepts at most this many targets on one job; larger deployments target a
/// dynamic thing group built from the deployment's Fleet Indexing query.
pub const MAX_THING_TARGETS: usize = 100;

/// How `max_in_flight` maps onto IoT Jobs' start rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StartRate {
    /// `jobExecutionsRolloutConfig.maximumPerMinute` (1–1000).
    pub maximum_per_minute: u32,
    /// Devices in flight at steady state when each takes the expected time.
    pub expected_in_flight: u32,
    /// Devices in flight if every one runs until its in-progress timeout.
    pub worst_case_in_flight: u32,
}

impl std::fmt::Display for StartRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AWS IoT Jobs starts at most {} devices per minute (about {} in flight; up to {} if every device runs to its timeout)",
            self.maximum_per_minute, self.expected_in_flight, self.worst_case_in_flight
        )
    }
}

/// The start rate for `policy` when one update takes `expected_update_minutes`.
pub fn start_rate(policy: &RolloutPolicy, expected_update_minutes: u32) -> StartRate {
    let minutes = expected_update_minutes.max(1);
    let mut rate = policy.max_in_flight.div_ceil(minutes).clamp(1, 1000);
    if let Some(m) = policy.max_per_minute {
        rate = rate.min(m.max(1));
    }
    StartRate {
        maximum_per_minute: rate,
        expected_in_flight: rate.saturating_mul(minutes),
        worst_case_in_flight: rate.saturating_mul(policy.in_progress_timeout_minutes.max(1)),
    }
}

/// The IoT presigned-URL placeholder for an object of `bucket`; IoT replaces it with a
/// pre-signed GET URL, signed by the presign role, when it delivers the document.
pub fn presigned_url_placeholder(bucket: &str, key: &str) -> String {
    format!("${{aws:iot:s3-presigned-url-v2:https://s3.amazonaws.com/{bucket}/{key}}}")
}

/// The job document a device receives (`ota_core::job::JobDocument`), with the signature
/// and security version verified when the rollout started; IoT replaces the URL placeholder
/// at delivery.
pub fn job_document(rollout: &Rollout, bucket: &str) -> serde_json::Value {
    let key = ArtifactRef::new(rollout.device_type.clone(), rollout.version.clone()).key(CatalogFile::Image);
    rollout.job_document(presigned_url_placeholder(bucket, &key)).to_value()
}

fn build_error(e: impl std::fmt::Display) -> Error {
    Error::invalid("job configuration", "", e.to_string())
}

fn i32_of(what: &'static str, v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid(what, v.to_string(), "too large for AWS IoT Jobs"))
}

/// Every configuration of the job for `policy`.
#[derive(Debug, Clone)]
pub struct JobConfigs {
    pub rollout: JobExecutionsRolloutConfig,
    pub abort: AbortConfig,
    pub timeout: TimeoutConfig,
    /// `None` when the policy retries nothing (AWS rejects an empty criteria list).
    pub retry: Option<JobExecutionsRetryConfig>,
    pub presigned_url: PresignedUrlConfig,
    pub start_rate: StartRate,
}

/// Maps a validated policy onto IoT Jobs' configurations.
pub fn job_configs(
    policy: &RolloutPolicy,
    expected_update_minutes: u32,
    presign_role_arn: &str,
    url_expiry_seconds: i64,
) -> Result<JobConfigs> {
    let rate = start_rate(policy, expected_update_minutes);
    let mut rollout =
        JobExecutionsRolloutConfig::builder().maximum_per_minute(i32_of("maximumPerMinute", rate.maximum_per_minute)?);
    if let Some(ramp) = &policy.exponential_ramp {
        let criteria = match ramp.increase_after {
            RampCriterion::Notified(n) => {
                RateIncreaseCriteria::builder().number_of_notified_things(i32_of("numberOfNotifiedThings", n)?)
            }
            RampCriterion::Succeeded(n) => {
                RateIncreaseCriteria::builder().number_of_succeeded_things(i32_of("numberOfSucceededThings", n)?)
            }
        }
        .build();
        rollout = rollout.exponential_rate(
            ExponentialRolloutRate::builder()
                .base_rate_per_minute(i32_of("baseRatePerMinute", ramp.base_rate_per_minute)?)
                .increment_factor(ramp.increment_factor)
                .rate_increase_criteria(criteria)
                .build()
                .map_err(build_error)?,
        );
    }
    let abort = AbortConfig::builder()
        .criteria_list(
            AbortCriteria::builder()
                .failure_type(JobExecutionFailureType::All)
                .action(AbortAction::Cancel)
                // AWS accepts two decimals.
                .threshold_percentage((policy.abort.failure_percent * 100.0).round() / 100.0)
                .min_number_of_executed_things(i32_of("minNumberOfExecutedThings", policy.abort.min_executed)?)
                .build()
                .map_err(build_error)?,
        )
        .build()
        .map_err(build_error)?;
    let timeout =
        TimeoutConfig::builder().in_progress_timeout_in_minutes(i64::from(policy.in_progress_timeout_minutes)).build();
    let mut retry_criteria = Vec::new();
    for (kind, n) in [
        (RetryableFailureType::Failed, policy.retries.failed),
        (RetryableFailureType::TimedOut, policy.retries.timed_out),
    ] {
        if n > 0 {
            retry_criteria.push(
                RetryCriteria::builder()
                    .failure_type(kind)
                    .number_of_retries(i32::from(n))
                    .build()
                    .map_err(build_error)?,
            );
        }
    }
    let retry = if retry_criteria.is_empty() {
        None
    } else {
        Some(JobExecutionsRetryConfig::builder().set_criteria_list(Some(retry_criteria)).build().map_err(build_error)?)
    };
    let presigned_url =
        PresignedUrlConfig::builder().role_arn(presign_role_arn).expires_in_sec(url_expiry_seconds).build();
    Ok(JobConfigs { rollout: rollout.build(), abort, timeout, retry, presigned_url, start_rate: rate })
}

/// The name of the dynamic thing group a large deployment targets.
pub fn dynamic_group_name(rollout: &Rollout) -> String {
    format!("ota-{}", rollout.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_core::policy::RetryPolicy;
    use serde_json::json;

    #[test]
    fn max_in_flight_becomes_a_start_rate_with_its_worst_case() {
        let p = RolloutPolicy::default();
        let r = start_rate(&p, 5);
        assert_eq!((r.maximum_per_minute, r.expected_in_flight, r.worst_case_in_flight), (2, 10, 60));
        assert_eq!(start_rate(&p, 1).maximum_per_minute, 10);
        assert_eq!(start_rate(&RolloutPolicy { max_in_flight: 1, ..p.clone() }, 30).maximum_per_minute, 1);
        let capped = RolloutPolicy { max_in_flight: 1000, max_per_minute: Some(7), ..p };
        assert_eq!(start_rate(&capped, 1).maximum_per_minute, 7, "the policy's own rate limit wins");
        assert!(r.to_string().contains("at most 2 devices per minute"), "{r}");
    }

    fn rollout(extra: serde_json::Value) -> Rollout {
        let mut r = json!({
            "id": "update-pet_feeder-2_0_0-abc", "plan_id": "plan-1", "action": "rollback", "device_type": "pet_feeder",
            "thing_group": "PetFeederAWSDevice", "version": "2.0.0", "sha256": "ab".repeat(32), "size": 1234,
            "things": [], "fleet_query": "", "policy": RolloutPolicy::default(), "status": "IN_PROGRESS",
            "status_reason": null, "created_by": "t", "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        });
        r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(r).unwrap()
    }

    #[test]
    fn the_document_carries_the_signature_verified_at_start() {
        let signed = rollout(json!({
            "signature": {"alg": "ecdsa-p256-sha256", "key_id": "00112233445566778899aabbccddeeff", "value": "MEUCIQ=="},
            "security_version": 3,
        }));
        let doc = job_document(&signed, "fw-bucket");
        assert_eq!(
            doc["firmware"]["signature"],
            json!({"alg": "ecdsa-p256-sha256", "keyId": "00112233445566778899aabbccddeeff", "value": "MEUCIQ=="}),
            "the job spelling: keyId"
        );
        assert_eq!(doc["firmware"]["securityVersion"], 3);
        assert!(doc["firmware"]["url"].as_str().unwrap().starts_with("${aws:iot:s3-presigned-url-v2:"), "{doc}");
        // What a device parses (IoT has replaced the placeholder by then) is what was recorded.
        let mut delivered = doc.clone();
        delivered["firmware"]["url"] = json!("https://fw-bucket.s3.amazonaws.com/firmware.bin?X-Amz-Signature=ab");
        let job = ota_core::job::validate(signed.id.clone(), &delivered, &signed.device_type, u64::MAX).unwrap();
        assert_eq!(job.firmware.signature, signed.signature);
        assert_eq!((job.firmware.security_version, job.rollback), (3, true));

        // Unsigned: exactly the document of before signatures.
        let unsigned = rollout(json!({}));
        let key = ArtifactRef::new(unsigned.device_type.clone(), unsigned.version.clone()).key(CatalogFile::Image);
        let url = presigned_url_placeholder("fw-bucket", &key);
        assert_eq!(
            job_document(&unsigned, "fw-bucket").to_string(),
            json!({
                "operation": "ota_update", "deviceType": "pet_feeder", "version": "2.0.0", "rollback": true,
                "firmware": {"url": url, "size": 1234, "sha256": "ab".repeat(32)},
            })
            .to_string()
        );
    }

    #[test]
    fn retries_appear_only_when_asked_for() {
        let p = RolloutPolicy::default();
        let c = job_configs(&p, 5, "arn:aws:iam::1:role/presign", 3600).unwrap();
        assert!(c.retry.is_none());
        let p = RolloutPolicy { retries: RetryPolicy { failed: 2, timed_out: 0 }, ..p };
        let c = job_configs(&p, 5, "arn:aws:iam::1:role/presign", 3600).unwrap();
        let criteria = c.retry.unwrap().criteria_list().to_vec();
        assert_eq!(criteria.len(), 1);
        assert_eq!((criteria[0].failure_type(), criteria[0].number_of_retries()), (&RetryableFailureType::Failed, 2));
    }
}
