//! Rollouts on AWS IoT Jobs, with their record in DynamoDB.
//!
//! A rollout is two things: the **IoT job** that executes it (id = the rollout id, so a
//! repeated command finds it), and its **record** in `{prefix}-rollouts`, which holds what
//! IoT Jobs cannot (plan id, policy, planned things, creator, digest, the signature and security
//! version verified at start, which the job document carries, status reason) and makes
//! "one active rollout per type" atomic, which listing jobs could not.
//!
//! Table `{prefix}-rollouts`, hash key `id` (S):
//! - `kind = rollout`, `id` = the rollout id: `rollout` (S, the `Rollout` as JSON), `status`
//!   (S), `device_type` (S), `created_at` (S).
//! - `kind = lock`, `id` = `lock#{device_type}`: `rollout_id` (S), the type's active rollout.
//!   `#` never occurs in a rollout id, so the two kinds cannot collide.
//!
//! `create` writes the record and the lock in one transaction, each with
//! `attribute_not_exists(id)`, then creates the job; if the job cannot be created the record,
//! the lock and any dynamic group are removed again, so on error nothing is stored. `finish`
//! cancels the job first (a job that no longer exists, or already ended, is fine), deletes the
//! rollout's dynamic thing group if it has one, then moves the record out of `IN_PROGRESS` and
//! deletes the lock in one conditional transaction.
//!
//! **A deleted job.** The record, not the job, is the rollout: `get` and `list` read only
//! DynamoDB, so a rollout whose job was deleted outside ota still reads back. Cancelling it
//! succeeds (there is nothing left to stop, and failing would keep the type locked) and the
//! recorded reason says the job no longer existed; the rollout monitor records such a rollout
//! as aborted within a minute.
//!
//! **Dynamic groups.** A deployment of more than [`MAX_THING_TARGETS`] devices targets a
//! dynamic thing group `ota-{rollout id}` built from its fleet query. IoT Jobs needs it only
//! while the job runs, so `finish` deletes it before recording the end: a failed delete is an
//! error and leaves the rollout active, so the next cancel or monitor run tries again instead of
//! leaking the group.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client as Dynamo;
use aws_sdk_dynamodb::types::builders::PutBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use aws_sdk_iot::Client as Iot;
use aws_sdk_iot::types::TargetSelection;
use chrono::{DateTime, Utc};
use ota_core::names::{DeviceType, JobId};
use ota_core::ports::RolloutStore;
use ota_core::rollout::{Rollout, RolloutQuery, RolloutStatus};
use ota_core::{Error, Result};

use crate::errors::{FailureKind, aws, fail};
use crate::job_spec::{JobConfigs, MAX_THING_TARGETS, dynamic_group_name, job_configs, job_document};

/// What `CancelJob` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancelled {
    /// The job was running and is now cancelled.
    Now,
    /// The job had already ended (completed, cancelled, or being deleted).
    AlreadyEnded,
    /// No such job: it was deleted outside ota.
    Gone,
}

/// Whether `r` targets a dynamic thing group rather than thing ARNs.
fn uses_dynamic_group(r: &Rollout) -> bool {
    r.things.len() > MAX_THING_TARGETS
}
use crate::tables::{Item, get_s, parse_json, s, timestamp};

/// What the store needs to create jobs.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub bucket: String,
    pub region: String,
    /// Builds thing ARNs without a lookup; discovered from the first target thing when unset.
    pub account_id: Option<String>,
    pub presign_role_arn: Option<String>,
    pub url_expiry_seconds: i64,
    pub expected_update_minutes: u32,
}

/// Rollouts on IoT Jobs plus their DynamoDB record.
#[derive(Debug, Clone)]
pub struct JobsRolloutStore {
    iot: Iot,
    db: Dynamo,
    table: String,
    jobs: JobSettings,
}

fn lock_key(t: &DeviceType) -> String {
    format!("lock#{t}")
}

fn rollout_from(item: &Item) -> Result<Rollout> {
    parse_json("rollout", get_s(item, "rollout")?)
}

impl JobsRolloutStore {
    pub fn new(iot: Iot, db: Dynamo, table: impl Into<String>, jobs: JobSettings) -> Self {
        JobsRolloutStore { iot, db, table: table.into(), jobs }
    }

    async fn item(&self, id: &str) -> Result<Option<Item>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(fail("dynamodb:GetItem"))?;
        Ok(out.item().cloned())
    }

    fn put_record(&self, r: &Rollout) -> Result<PutBuilder> {
        let json = serde_json::to_string(r).map_err(Error::storage)?;
        Ok(Put::builder()
            .table_name(&self.table)
            .item("id", s(r.id.as_str()))
            .item("kind", s("rollout"))
            .item("rollout", s(json))
            .item("status", s(r.status.as_str()))
            .item("device_type", s(r.device_type.as_str()))
            .item("created_at", s(timestamp(&r.created_at))))
    }

    /// Why a create transaction was cancelled: the id is taken, or the type is locked.
    async fn create_refusal(&self, r: &Rollout) -> Result<Error> {
        if self.item(r.id.as_str()).await?.is_some() {
            return Ok(Error::already_exists("rollout", r.id.as_str()));
        }
        let lock = self.item(&lock_key(&r.device_type)).await?;
        let active = lock.as_ref().and_then(|l| get_s(l, "rollout_id").ok()).unwrap_or("another rollout");
        Ok(Error::active_rollout(&active, &r.device_type))
    }

    async fn remove_record(&self, r: &Rollout) -> Result<()> {
        let items = [r.id.to_string(), lock_key(&r.device_type)].map(|id| {
            Delete::builder()
                .table_name(&self.table)
                .key("id", s(id))
                .build()
                .map(|d| TransactWriteItem::builder().delete(d).build())
        });
        let items = items.into_iter().collect::<Result<Vec<_>, _>>().map_err(Error::storage)?;
        self.db
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(fail("dynamodb:TransactWriteItems"))?;
        Ok(())
    }

    async fn thing_arn_prefix(&self, r: &Rollout) -> Result<String> {
        if let Some(account) = &self.jobs.account_id {
            return Ok(format!("arn:aws:iot:{}:{account}:thing/", self.jobs.region));
        }
        let first = r.things.first().ok_or_else(|| Error::invalid("rollout", r.id.as_str(), "targets no device"))?;
        let d = self
            .iot
            .describe_thing()
            .thing_name(first.as_str())
            .send()
            .await
            .map_err(|e| aws("iot:DescribeThing")(e).not_found("thing", first.as_str()))?;
        let arn = d.thing_arn().unwrap_or_default();
        arn.strip_suffix(first.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::storage(format!("unexpected thing ARN {arn:?} for {first}")))
    }

    /// The job's targets: the planned things, or a dynamic group from the fleet query when
    /// there are more than IoT Jobs accepts.
    async fn targets(&self, r: &Rollout) -> Result<Vec<String>> {
        if !uses_dynamic_group(r) {
            let prefix = self.thing_arn_prefix(r).await?;
            return Ok(r.things.iter().map(|t| format!("{prefix}{t}")).collect());
        }
        let group = self
            .iot
            .create_dynamic_thing_group()
            .thing_group_name(dynamic_group_name(r))
            .query_string(&r.fleet_query)
            .send()
            .await
            .map_err(fail("iot:CreateDynamicThingGroup"))?;
        Ok(vec![group.thing_group_arn().unwrap_or_default().to_string()])
    }

    async fn create_job(&self, r: &Rollout) -> Result<()> {
        let role = self.jobs.presign_role_arn.as_deref().ok_or_else(|| {
            Error::invalid(
                "AWS settings",
                "OTA_AWS_PRESIGN_ROLE_ARN",
                "is not set; rollouts need the presign role of the deployment",
            )
        })?;
        let c = job_configs(&r.policy, self.jobs.expected_update_minutes, role, self.jobs.url_expiry_seconds)?;
        let targets = self.targets(r).await?;
        if let Err(e) = self.send_create_job(r, c, targets).await {
            // The group was made for this job alone.
            self.delete_dynamic_group(r).await?;
            return Err(e);
        }
        Ok(())
    }

    async fn send_create_job(&self, r: &Rollout, c: JobConfigs, targets: Vec<String>) -> Result<()> {
        let document = job_document(r, &self.jobs.bucket).to_string();
        let description = format!("ota {} {} to {} ({})", r.action.as_str(), r.device_type, r.version, r.plan_id);
        self.iot
            .create_job()
            .job_id(r.id.as_str())
            .set_targets(Some(targets))
            .document(document)
            .description(description.chars().take(2028).collect::<String>())
            .target_selection(TargetSelection::Snapshot)
            .presigned_url_config(c.presigned_url)
            .job_executions_rollout_config(c.rollout)
            .abort_config(c.abort)
            .timeout_config(c.timeout)
            .set_job_executions_retry_config(c.retry)
            .send()
            .await
            .map_err(|e| match aws("iot:CreateJob")(e) {
                f if f.kind == FailureKind::AlreadyExists => Error::already_exists("rollout", r.id.as_str()),
                f => f.into_error(),
            })?;
        Ok(())
    }

    async fn cancel_job(&self, id: &JobId, status: RolloutStatus, reason: &str) -> Result<Cancelled> {
        let comment: String = reason.chars().filter(|c| !c.is_control()).take(2028).collect();
        let mut req = self.iot.cancel_job().job_id(id.as_str()).reason_code(status.as_str());
        if !comment.is_empty() {
            req = req.comment(comment);
        }
        match req.send().await {
            Ok(_) => Ok(Cancelled::Now),
            Err(e) => match aws("iot:CancelJob")(e) {
                // A deleted job, or one that already ended: nothing left to stop.
                f if f.kind == FailureKind::NotFound => Ok(Cancelled::Gone),
                f if f.kind == FailureKind::InvalidState => Ok(Cancelled::AlreadyEnded),
                f => Err(f.into_error()),
            },
        }
    }

    /// Deletes the rollout's dynamic thing group, if it has one; one already gone is fine.
    async fn delete_dynamic_group(&self, r: &Rollout) -> Result<()> {
        if !uses_dynamic_group(r) {
            return Ok(());
        }
        let name = dynamic_group_name(r);
        match self.iot.delete_dynamic_thing_group().thing_group_name(&name).send().await {
            Ok(_) => Ok(()),
            Err(e) => match aws("iot:DeleteDynamicThingGroup")(e) {
                f if f.kind == FailureKind::NotFound => Ok(()),
                f => Err(Error::storage(format!(
                    "rollout {} is still active: its dynamic thing group {name} could not be deleted: {}",
                    r.id,
                    f.into_error()
                ))),
            },
        }
    }
}

#[async_trait]
impl RolloutStore for JobsRolloutStore {
    async fn create(&self, rollout: &Rollout) -> Result<()> {
        let record = self
            .put_record(rollout)?
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(Error::storage)?;
        let lock = Put::builder()
            .table_name(&self.table)
            .item("id", s(lock_key(&rollout.device_type)))
            .item("kind", s("lock"))
            .item("rollout_id", s(rollout.id.as_str()))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(Error::storage)?;
        let sent = self
            .db
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(record).build())
            .transact_items(TransactWriteItem::builder().put(lock).build())
            .send()
            .await;
        if let Err(e) = sent {
            let f = aws("dynamodb:TransactWriteItems")(e);
            return Err(if f.kind == FailureKind::ConditionFailed {
                self.create_refusal(rollout).await?
            } else {
                f.into_error()
            });
        }
        if let Err(e) = self.create_job(rollout).await {
            // Nothing may stay stored when the job does not exist.
            self.remove_record(rollout).await?;
            return Err(e);
        }
        Ok(())
    }

    async fn get(&self, id: &JobId) -> Result<Rollout> {
        let item = self.item(id.as_str()).await?.ok_or_else(|| Error::not_found("rollout", id.as_str()))?;
        rollout_from(&item)
    }

    async fn list(&self, query: &RolloutQuery) -> Result<Vec<Rollout>> {
        let mut out = Vec::new();
        let mut pages = self
            .db
            .scan()
            .table_name(&self.table)
            .filter_expression("#kind = :rollout")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":rollout", s("rollout"))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(fail("dynamodb:Scan"))?;
            for item in page.items() {
                let r = rollout_from(item)?;
                if query.matches(&r) {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        if let Some(limit) = query.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    async fn finish(&self, id: &JobId, status: RolloutStatus, reason: &str, at: DateTime<Utc>) -> Result<Rollout> {
        let mut r = self.get(id).await?;
        if !r.status.is_active() {
            return Err(Error::Conflict(format!("rollout {id} already ended ({})", r.status.as_str())));
        }
        if status.is_active() {
            return Err(Error::invalid(
                "rollout status",
                status.as_str(),
                "a rollout can only finish as COMPLETED, CANCELED or ABORTED",
            ));
        }
        let mut reason = reason.to_string();
        if status != RolloutStatus::Completed
            && self.cancel_job(id, status, &reason).await? == Cancelled::Gone
            // The monitor's aborts already say why; an operator's cancel should say it too.
            && status == RolloutStatus::Canceled
        {
            reason.push_str(" (its AWS IoT job no longer existed; nothing was left to stop)");
        }
        self.delete_dynamic_group(&r).await?;
        r.status = status;
        r.status_reason = Some(reason);
        r.updated_at = at;
        let record = self
            .put_record(&r)?
            .condition_expression("#status = :active")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s(RolloutStatus::InProgress.as_str()))
            .build()
            .map_err(Error::storage)?;
        let unlock = Delete::builder()
            .table_name(&self.table)
            .key("id", s(lock_key(&r.device_type)))
            .condition_expression("attribute_not_exists(id) OR rollout_id = :id")
            .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
            .build()
            .map_err(Error::storage)?;
        let sent = self
            .db
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(record).build())
            .transact_items(TransactWriteItem::builder().delete(unlock).build())
            .send()
            .await;
        if let Err(e) = sent {
            let f = aws("dynamodb:TransactWriteItems")(e);
            if f.kind == FailureKind::ConditionFailed {
                let now = self.get(id).await?;
                return Err(Error::Conflict(format!("rollout {id} already ended ({})", now.status.as_str())));
            }
            return Err(f.into_error());
        }
        Ok(r)
    }
}
