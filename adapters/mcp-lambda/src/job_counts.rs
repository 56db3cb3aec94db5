//! The progress port on AWS, shared by both Lambdas (`ota-mcp` includes this file, `ota-http`
//! includes it by path): IoT Jobs' `DescribeJob` counters and the job's executions. MCP's
//! `get_rollout`, the chat and the page all read progress through it.

use async_trait::async_trait;
use ota_core::names::JobId;
use ota_mcp::{Counts, DeviceExecution, ProgressSource};

/// Execution counters and executions from IoT Jobs.
#[derive(Debug)]
pub struct JobCounts(pub ota_aws::AwsClients);

#[async_trait]
impl ProgressSource for JobCounts {
    async fn counts(&self, id: &JobId) -> ota_core::Result<Option<Counts>> {
        let (state, s) = ota_aws::monitor::job_state(&self.0.iot, id).await?;
        if state == ota_aws::monitor::JobState::Gone {
            return Ok(None);
        }
        Ok(Some(Counts {
            total: s.total,
            waiting: 0,
            queued: s.queued,
            in_progress: s.in_progress,
            succeeded: s.succeeded,
            failed: s.failed,
            rejected: s.rejected,
            timed_out: s.timed_out,
            canceled: s.canceled,
            removed: 0,
        }))
    }

    async fn executions(&self, id: &JobId) -> ota_core::Result<Option<Vec<DeviceExecution>>> {
        let listed = ota_aws::monitor::job_executions(&self.0.iot, id).await?;
        Ok(listed.map(|all| {
            all.into_iter().map(|e| DeviceExecution { thing: e.thing, status: e.status, reason: e.reason }).collect()
        }))
    }
}
