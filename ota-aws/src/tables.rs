//! The config gate and the audit trail on DynamoDB.
//!
//! Table layout (created by `deploy/template.yaml`, or by [`crate::provision`] in tests):
//!
//! | table              | key                                 | attributes |
//! |--------------------|-------------------------------------|------------|
//! | `{prefix}-config`  | `device_type` (S, hash)             | `ota_enabled` (BOOL), `policy` (S, JSON, absent for none), `updated_by` (S), `updated_at` (S, RFC 3339 with nanoseconds) |
//! | `{prefix}-audit`   | `log` (S, hash) = `audit`, `seq` (N, range) | `entry` (S, the entry as JSON) |
//! |                    | `log` = `counter`, `seq` = 0       | `next` (N): the last sequence number handed out |
//!
//! Appending first increments the counter atomically (`ADD next :1`), then writes the entry
//! with `attribute_not_exists(seq)`, so sequence numbers only grow and an entry is never
//! overwritten. A failed append leaves a gap, never a duplicate. Entries live in one
//! partition: reading the newest N is one `Query` in reverse order.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, SecondsFormat, Utc};
use ota_core::audit::AuditEntry;
use ota_core::config::TypeConfig;
use ota_core::names::DeviceType;
use ota_core::ports::{AuditLog, ConfigStore};
use ota_core::{Error, Result};

use crate::errors::{FailureKind, aws, fail};

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(crate) fn get_s<'a>(item: &'a Item, key: &str) -> Result<&'a str> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| Error::storage(format!("stored item lacks the text attribute {key:?}")))
}

pub(crate) fn parse_time(item: &Item, key: &str) -> Result<DateTime<Utc>> {
    let v = get_s(item, key)?;
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::storage(format!("stored {key} {v:?} is not a timestamp: {e}")))
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T> {
    serde_json::from_str(v).map_err(|e| Error::storage(format!("stored {what} does not parse: {e}")))
}

/// The config gate in `{prefix}-config`.
#[derive(Debug, Clone)]
pub struct DynamoConfigStore {
    db: Client,
    table: String,
}

impl DynamoConfigStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        DynamoConfigStore { db, table: table.into() }
    }
}

fn config_from(item: &Item) -> Result<TypeConfig> {
    let device_type = DeviceType::parse(get_s(item, "device_type")?)?;
    let policy = match item.get("policy").and_then(|v| v.as_s().ok()) {
        Some(p) => Some(parse_json("policy", p)?),
        None => None,
    };
    Ok(TypeConfig {
        device_type,
        ota_enabled: *item.get("ota_enabled").and_then(|v| v.as_bool().ok()).unwrap_or(&false),
        policy,
        updated_by: get_s(item, "updated_by")?.to_string(),
        updated_at: parse_time(item, "updated_at")?,
    })
}

#[async_trait]
impl ConfigStore for DynamoConfigStore {
    async fn get(&self, device_type: &DeviceType) -> Result<Option<TypeConfig>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("device_type", s(device_type.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(fail("dynamodb:GetItem"))?;
        out.item().map(config_from).transpose()
    }

    async fn put(&self, config: TypeConfig) -> Result<()> {
        let mut put = self
            .db
            .put_item()
            .table_name(&self.table)
            .item("device_type", s(config.device_type.as_str()))
            .item("ota_enabled", AttributeValue::Bool(config.ota_enabled))
            .item("updated_by", s(config.updated_by))
            .item("updated_at", s(timestamp(&config.updated_at)));
        if let Some(p) = &config.policy {
            let json = serde_json::to_string(p).map_err(Error::storage)?;
            put = put.item("policy", s(json));
        }
        put.send().await.map_err(fail("dynamodb:PutItem"))?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<TypeConfig>> {
        let mut out = Vec::new();
        let mut pages = self.db.scan().table_name(&self.table).consistent_read(true).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(fail("dynamodb:Scan"))?;
            for item in page.items() {
                out.push(config_from(item)?);
            }
        }
        out.sort_by(|a, b| a.device_type.cmp(&b.device_type));
        Ok(out)
    }
}

/// The audit trail in `{prefix}-audit`.
#[derive(Debug, Clone)]
pub struct DynamoAuditLog {
    db: Client,
    table: String,
}

const LOG: &str = "audit";
const COUNTER: &str = "counter";

impl DynamoAuditLog {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        DynamoAuditLog { db, table: table.into() }
    }

    async fn next_seq(&self) -> Result<u64> {
        let out = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("log", s(COUNTER))
            .key("seq", AttributeValue::N("0".into()))
            .update_expression("ADD #next :one")
            .expression_attribute_names("#next", "next")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(fail("dynamodb:UpdateItem"))?;
        let n = out
            .attributes()
            .and_then(|a| a.get("next"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| Error::storage("the audit counter did not return a number"))?;
        Ok(n)
    }
}

#[async_trait]
impl AuditLog for DynamoAuditLog {
    async fn append(&self, mut entry: AuditEntry) -> Result<u64> {
        let seq = self.next_seq().await?;
        entry.seq = seq;
        let json = serde_json::to_string(&entry).map_err(Error::storage)?;
        self.db
            .put_item()
            .table_name(&self.table)
            .item("log", s(LOG))
            .item("seq", AttributeValue::N(seq.to_string()))
            .item("entry", s(json))
            .condition_expression("attribute_not_exists(seq)")
            .send()
            .await
            .map_err(|e| match aws("dynamodb:PutItem")(e) {
                f if f.kind == FailureKind::ConditionFailed => {
                    Error::Conflict(format!("audit sequence number {seq} was already taken"))
                }
                f => f.into_error(),
            })?;
        Ok(seq)
    }

    async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        while out.len() < limit {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX).min(1000);
            let page = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("#log = :log")
                .expression_attribute_names("#log", "log")
                .expression_attribute_values(":log", s(LOG))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(fail("dynamodb:Query"))?;
            for item in page.items() {
                out.push(parse_json::<AuditEntry>("audit entry", get_s(item, "entry")?)?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}
