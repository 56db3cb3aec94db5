//! The rollout monitor: what IoT Jobs' `abortConfig` cannot express. It applies the absolute
//! failure limit (`max_failures`) with the same [`RolloutPolicy::decide`] every jobs engine
//! uses, records jobs that ended in IoT (completed, or cancelled by the percentage rule),
//! and publishes an SNS alert on every abort.
//!
//! [`assess`] is the pure decision over one rollout and its job's counters; [`check_active`]
//! does the I/O: it reads every active rollout, `DescribeJob`s it, and acts. The Lambda in
//! `adapters/monitor-lambda` (binary `rollout-monitor`) runs it on an EventBridge schedule
//! (every minute), so an abort lands within a minute of the failure that crossed the limit.
//!
//! The same tick advances command runs on a store that delivers its own executions (AWS IoT
//! Commands: [`crate::AwsCommandStore`]): without it a paced run would move only when someone
//! starts or reads one, so its next executions are sent, and its answers and timeouts
//! recorded, within a minute.
//!
//! [`RolloutPolicy::decide`]: ota_core::policy::RolloutPolicy::decide

use aws_sdk_iot::types::{JobProcessDetails, JobStatus};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ota_core::audit::{AuditEntry, AuditOutcome};
use ota_core::policy::{Decision, RolloutStats};
use ota_core::ports::Backend;
use ota_core::rollout::{Rollout, RolloutQuery, RolloutStatus};
use ota_core::service::FleetManager;
use ota_core::{Error, Result};
use serde::Serialize;
use serde_json::json;

use crate::errors::{FailureKind, aws, fail};

/// Who the monitor acts as in the audit trail.
pub const SUBJECT: &str = "rollout-monitor";

/// The state of one job as IoT reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Completed,
    /// Cancelled in IoT (its `abortConfig`, or someone outside ota), or being deleted.
    Canceled,
    /// The job no longer exists.
    Gone,
}

/// What the monitor does about one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum MonitorAction {
    Continue,
    Complete,
    Abort { reason: String },
}

/// Counters of `DescribeJob`'s `jobProcessDetails`, as the policy's statistics.
pub fn stats_of(d: &JobProcessDetails) -> RolloutStats {
    let n = |v: Option<i32>| u32::try_from(v.unwrap_or(0)).unwrap_or(0);
    let mut s = RolloutStats {
        queued: n(d.number_of_queued_things()),
        in_progress: n(d.number_of_in_progress_things()),
        succeeded: n(d.number_of_succeeded_things()),
        failed: n(d.number_of_failed_things()),
        rejected: n(d.number_of_rejected_things()),
        timed_out: n(d.number_of_timed_out_things()),
        canceled: n(d.number_of_canceled_things()) + n(d.number_of_removed_things()),
        ..Default::default()
    };
    s.total = s.queued + s.in_progress + s.executed() + s.canceled;
    s.started = s.in_progress + s.executed();
    s
}

/// The decision for an active rollout whose job is in `state` with `stats`.
pub fn assess(rollout: &Rollout, state: JobState, stats: &RolloutStats) -> MonitorAction {
    match state {
        JobState::Completed => MonitorAction::Complete,
        JobState::Canceled => MonitorAction::Abort {
            reason: format!(
                "AWS IoT cancelled job {} ({} of {} executed devices failed): its abort rule, or a cancel outside ota",
                rollout.id,
                stats.failures(),
                stats.executed()
            ),
        },
        JobState::Gone => MonitorAction::Abort { reason: format!("job {} no longer exists in AWS IoT", rollout.id) },
        JobState::Running => match rollout.policy.decide(stats) {
            Decision::Continue => MonitorAction::Continue,
            Decision::Abort { reason } => MonitorAction::Abort { reason },
        },
    }
}

/// What one check did to one rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checked {
    pub rollout: String,
    pub action: MonitorAction,
    pub alerted: bool,
    /// The revert started after this rollout (see `FleetManager::revert_after`), in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverting: Option<String>,
}

/// Where the monitor reads jobs and sends alerts.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub backend: Backend,
    pub iot: aws_sdk_iot::Client,
    pub sns: aws_sdk_sns::Client,
    pub topic_arn: Option<String>,
    /// The service over the same backend, for reverts on abort (`revert_on_abort`); `None`:
    /// no reverts.
    pub service: Option<Arc<FleetManager>>,
}

/// The state and execution counters of rollout `id`'s IoT job (`Gone` with zero counters when
/// the job no longer exists). The monitor decides on them; the chat page draws them.
pub async fn job_state(iot: &aws_sdk_iot::Client, id: &ota_core::names::JobId) -> Result<(JobState, RolloutStats)> {
    let out = match iot.describe_job().job_id(id.as_str()).send().await {
        Ok(out) => out,
        Err(e) => {
            return match aws("iot:DescribeJob")(e) {
                f if f.kind == FailureKind::NotFound => Ok((JobState::Gone, RolloutStats::default())),
                f => Err(f.into_error()),
            };
        }
    };
    let job = out.job();
    let stats = job.and_then(|j| j.job_process_details()).map(stats_of).unwrap_or_default();
    let state = match job.and_then(|j| j.status()) {
        Some(JobStatus::Completed) => JobState::Completed,
        Some(JobStatus::Canceled | JobStatus::DeletionInProgress) => JobState::Canceled,
        _ => JobState::Running,
    };
    Ok((state, stats))
}

/// One device's execution of a job, as the front doors list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobExecution {
    pub thing: ota_core::names::ThingName,
    /// AWS's spelling: QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, TIMED_OUT, CANCELED, REMOVED.
    pub status: String,
    /// `statusDetails.reason` the device reported; read for ended-badly executions only.
    pub reason: Option<String>,
}

/// At most this many reasons are read per listing (one `DescribeJobExecution` each).
const REASONS_READ: usize = 50;

/// Each device's execution of job `id` (`ListJobExecutionsForJob`, every page), with the
/// reason devices gave for the first [`REASONS_READ`] that failed, were rejected or timed out
/// (`DescribeJobExecution`: the listing carries no status details). `None` when the job no
/// longer exists.
pub async fn job_executions(
    iot: &aws_sdk_iot::Client,
    id: &ota_core::names::JobId,
) -> Result<Option<Vec<JobExecution>>> {
    use aws_sdk_iot::types::JobExecutionStatus as S;
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = match iot
            .list_job_executions_for_job()
            .job_id(id.as_str())
            .max_results(250)
            .set_next_token(next.clone())
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) => {
                return match aws("iot:ListJobExecutionsForJob")(e) {
                    f if f.kind == FailureKind::NotFound => Ok(None),
                    f => Err(f.into_error()),
                };
            }
        };
        for s in page.execution_summaries() {
            // arn:aws:iot:region:account:thing/NAME
            let Some(name) = s.thing_arn().and_then(|a| a.rsplit_once('/')).map(|(_, n)| n) else { continue };
            let Ok(thing) = ota_core::names::ThingName::parse(name) else { continue };
            let status = s.job_execution_summary().and_then(|j| j.status()).map_or("QUEUED", |s| s.as_str());
            out.push(JobExecution { thing, status: status.to_string(), reason: None });
        }
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    let bad = [S::Failed.as_str(), S::Rejected.as_str(), S::TimedOut.as_str()];
    for e in out.iter_mut().filter(|e| bad.contains(&e.status.as_str())).take(REASONS_READ) {
        let described = iot
            .describe_job_execution()
            .job_id(id.as_str())
            .thing_name(e.thing.as_str())
            .send()
            .await
            .map_err(fail("iot:DescribeJobExecution"))?;
        e.reason = described
            .execution()
            .and_then(|x| x.status_details())
            .and_then(|d| d.details_map())
            .and_then(|m| m.get("reason"))
            .cloned();
    }
    out.sort_by(|a, b| a.thing.cmp(&b.thing));
    Ok(Some(out))
}

impl Monitor {
    async fn job(&self, rollout: &Rollout) -> Result<(JobState, RolloutStats)> {
        job_state(&self.iot, &rollout.id).await
    }

    async fn cancel_job(&self, rollout: &Rollout, reason: &str) -> Result<()> {
        let comment: String = reason.chars().filter(|c| !c.is_control()).take(2028).collect();
        match self.iot.cancel_job().job_id(rollout.id.as_str()).reason_code("ABORTED").comment(comment).send().await {
            Ok(_) => Ok(()),
            Err(e) => match aws("iot:CancelJob")(e) {
                f if matches!(f.kind, FailureKind::NotFound | FailureKind::InvalidState) => Ok(()),
                f => Err(f.into_error()),
            },
        }
    }

    async fn alert(&self, rollout: &Rollout, reason: &str) -> Result<bool> {
        let Some(topic) = &self.topic_arn else { return Ok(false) };
        let message = json!({
            "rollout": rollout.id, "device_type": rollout.device_type, "version": rollout.version,
            "status": "ABORTED", "reason": reason, "plan_id": rollout.plan_id, "created_by": rollout.created_by,
        });
        self.sns
            .publish()
            .topic_arn(topic)
            .subject(format!("ota rollout {} aborted", rollout.id).chars().take(100).collect::<String>())
            .message(message.to_string())
            .send()
            .await
            .map_err(fail("sns:Publish"))?;
        Ok(true)
    }

    /// Checks every active rollout once, at `now`, then advances the command runs (see the
    /// module's documentation). A failure of the latter is returned after every rollout was
    /// handled.
    pub async fn check_active(&self, now: DateTime<Utc>) -> Result<Vec<Checked>> {
        let active = self.backend.rollouts.list(&RolloutQuery { active_only: true, ..Default::default() }).await?;
        let mut out = Vec::new();
        for rollout in active {
            let (state, stats) = self.job(&rollout).await?;
            let action = assess(&rollout, state, &stats);
            let (status, reason) = match &action {
                MonitorAction::Continue => {
                    out.push(Checked { rollout: rollout.id.to_string(), action, alerted: false, reverting: None });
                    continue;
                }
                MonitorAction::Complete => (RolloutStatus::Completed, "every device finished".to_string()),
                MonitorAction::Abort { reason } => (RolloutStatus::Aborted, reason.clone()),
            };
            if state == JobState::Running && status == RolloutStatus::Aborted {
                // Stop the job here, whatever store records the rollout: queued devices must
                // not start once the limit is crossed.
                self.cancel_job(&rollout, &reason).await?;
            }
            match self.backend.rollouts.finish(&rollout.id, status, &reason, now).await {
                Ok(_) => {}
                // An operator cancelled it between the list and now: nothing left to do.
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
            let alerted = if status == RolloutStatus::Aborted { self.alert(&rollout, &reason).await? } else { false };
            self.backend
                .audit
                .append(AuditEntry {
                    seq: 0,
                    at: now,
                    subject: SUBJECT.into(),
                    roles: Vec::new(),
                    operation: if status == RolloutStatus::Aborted { "abort".into() } else { "complete".into() },
                    request: json!({ "rollout": rollout.id, "stats": stats }),
                    plan: None,
                    outcome: AuditOutcome::Ok(format!("{} {}: {reason}", rollout.id, status.as_str())),
                })
                .await?;
            let reverting = self.revert_after(&rollout.id).await;
            out.push(Checked { rollout: rollout.id.to_string(), action, alerted, reverting });
        }
        // Devices still updating when a rollout aborted may succeed later (IoT lets them
        // finish): aborted rollouts are looked at again for their in-progress timeout.
        if self.service.is_some() {
            let ended = self.backend.rollouts.list(&RolloutQuery { limit: Some(50), ..Default::default() }).await?;
            for r in ended.iter().filter(|r| r.status == RolloutStatus::Aborted && r.policy.revert_on_abort) {
                let window = chrono::Duration::minutes(i64::from(r.policy.in_progress_timeout_minutes));
                if r.updated_at + window > now
                    && !out.iter().any(|c| c.rollout == r.id.as_str())
                    && let Some(started) = self.revert_after(&r.id).await
                {
                    out.push(Checked {
                        rollout: r.id.to_string(),
                        action: MonitorAction::Continue,
                        alerted: false,
                        reverting: Some(started),
                    });
                }
            }
        }
        if self.backend.commands.delivers_itself() {
            self.backend.commands.advance(now).await?;
        }
        Ok(out)
    }

    /// Asks the service for the next revert after `id` ended; a failure is logged and
    /// audited by the service, never stops the other checks.
    async fn revert_after(&self, id: &ota_core::names::JobId) -> Option<String> {
        let svc = self.service.as_ref()?;
        match svc.revert_after(id).await {
            Ok(started) => started.map(|s| s.summary()),
            Err(e) => {
                eprintln!(
                    "{}",
                    json!({"level": "error", "event": "revert_failed", "after": id, "error": e.to_string()})
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_core::policy::RolloutPolicy;

    fn rollout() -> Rollout {
        serde_json::from_value(json!({
            "id": "update-pet_feeder-2_0_0-abc", "plan_id": "plan-1", "action": "update", "device_type": "pet_feeder",
            "thing_group": "PetFeederAWSDevice", "version": "2.0.0", "sha256": "00".repeat(32), "size": 1,
            "things": [], "fleet_query": "", "policy": RolloutPolicy::default(), "status": "IN_PROGRESS",
            "status_reason": null, "created_by": "op", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn the_absolute_limit_aborts_where_the_percentage_would_not() {
        let r = rollout();
        // 11 failures of 400 executed: 2.75 %, under the 5 % rule, over the limit of 10.
        let stats = RolloutStats { succeeded: 389, failed: 6, rejected: 2, timed_out: 3, ..Default::default() };
        match assess(&r, JobState::Running, &stats) {
            MonitorAction::Abort { reason } => assert!(reason.contains("11 devices failed"), "{reason}"),
            other => panic!("expected an abort, got {other:?}"),
        }
        let ten = RolloutStats { succeeded: 390, failed: 10, ..Default::default() };
        assert_eq!(assess(&r, JobState::Running, &ten), MonitorAction::Continue);
    }

    #[test]
    fn jobs_that_ended_in_iot_are_recorded() {
        let r = rollout();
        assert_eq!(assess(&r, JobState::Completed, &RolloutStats::default()), MonitorAction::Complete);
        assert!(matches!(assess(&r, JobState::Canceled, &RolloutStats::default()), MonitorAction::Abort { .. }));
        assert!(matches!(assess(&r, JobState::Gone, &RolloutStats::default()), MonitorAction::Abort { .. }));
    }

    #[test]
    fn process_details_become_policy_stats() {
        let d = JobProcessDetails::builder()
            .number_of_succeeded_things(5)
            .number_of_failed_things(2)
            .number_of_timed_out_things(1)
            .number_of_queued_things(3)
            .number_of_in_progress_things(4)
            .build();
        let s = stats_of(&d);
        assert_eq!((s.failures(), s.executed(), s.total, s.started), (3, 8, 15, 12));
    }
}
