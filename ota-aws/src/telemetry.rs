//! Telemetry history on DynamoDB, written by an IoT topic rule and by ota itself.
//!
//! Table `{prefix}-telemetry`, hash key `thing` (S), range key `at` (N, epoch milliseconds),
//! with DynamoDB's TTL on `expires_at` (N, epoch seconds = `at` + the retention). One item
//! is one report, and carries the report's JSON exactly as it was published:
//! - written by the topic rule `dt/ota/+/telemetry` (deploy/template.yaml):
//!   `SELECT topic(3) AS thing, timestamp() AS at, floor(timestamp() / 1000) + {retention s}
//!   AS expires_at, encode(*, 'base64') AS payload_b64`: the broker's receive time, and the
//!   device's message in base64;
//! - written by [`TelemetryStore::append`]: `payload` (S), the JSON `{"values", "at"}` with the
//!   exact time.
//!
//! Either payload reads as [`TelemetryPoint::parse`] reads a device's message (metric ->
//! value, or `{"values", "at"}`), so numbers come back exactly as sent (DynamoDB's own
//! number type would turn `21.0` into `21`). A payload that is not telemetry (not a JSON
//! object, over [`ota_core::ports::MAX_TELEMETRY_BYTES`]: the rule cannot refuse it) is left
//! out of queries and expires with the rest.
//!
//! A point's time is the payload's `at` when it names one (ota's own items, to the
//! nanosecond), else the key's. Two reports of one device in the same millisecond are one
//! item: the later replaces the earlier. Queries read one device's partition in key order,
//! the key narrowing the range (`since` inclusive, `until` exclusive) and the point's time
//! deciding it; a metric is matched on the payload, so it costs the read of the range. `append` also deletes the device's points older than the retention
//! before the newest appended one, as every backend does; the TTL removes the rest within
//! days of their expiry (until then a query of an old range may still see them).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use chrono::{DateTime, Duration, Utc};
use ota_core::names::ThingName;
use ota_core::ports::{TelemetryPoint, TelemetryQuery, TelemetryStore, check_telemetry};
use ota_core::{Error, Result};
use serde_json::json;

use crate::errors::fail;
use crate::tables::{Item, s};

/// Items per BatchWriteItem (DynamoDB's limit).
const BATCH: usize = 25;
/// Rounds of resending what BatchWriteItem left unprocessed.
const BATCH_ROUNDS: u32 = 8;

/// Epoch milliseconds, rounded up: a point is before `t` only if its key is before `ceil_ms(t)`.
/// (Keys are the point's milliseconds, rounded down.)
fn ceil_ms(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) { ms } else { ms + 1 }
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn number(item: &Item, key: &str) -> Option<i64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// The telemetry history in `{prefix}-telemetry`.
#[derive(Debug, Clone)]
pub struct DynamoTelemetry {
    db: Client,
    table: String,
    retention: Duration,
}

impl DynamoTelemetry {
    /// A store keeping [`ota_core::ports::TELEMETRY_RETENTION_DAYS`] days.
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self::with_retention(db, table, Duration::days(ota_core::ports::TELEMETRY_RETENTION_DAYS))
    }

    /// A store keeping `retention` (what the topic rule's `expires_at` must also say).
    pub fn with_retention(db: Client, table: impl Into<String>, retention: Duration) -> Self {
        DynamoTelemetry { db, table: table.into(), retention }
    }

    fn item(&self, p: &TelemetryPoint) -> Item {
        let at = p.at.timestamp_millis();
        let payload = json!({"values": p.values, "at": p.at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)});
        HashMap::from([
            ("thing".to_string(), s(p.thing.as_str())),
            ("at".to_string(), n(at)),
            ("expires_at".to_string(), n((p.at + self.retention).timestamp())),
            ("payload".to_string(), s(payload.to_string())),
        ])
    }

    /// The point an item holds; `None` when its payload is not telemetry.
    fn point(&self, item: &Item) -> Result<Option<TelemetryPoint>> {
        let thing = ThingName::parse(
            item.get("thing")
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| Error::storage("a telemetry item lacks its thing"))?,
        )?;
        let at = number(item, "at")
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| Error::storage(format!("a telemetry item of {thing} lacks its time")))?;
        let payload: Vec<u8> = if let Some(p) = item.get("payload").and_then(|v| v.as_s().ok()) {
            p.as_bytes().to_vec()
        } else if let Some(b) = item.get("payload_b64").and_then(|v| v.as_s().ok()) {
            match aws_smithy_types::base64::decode(b) {
                Ok(bytes) => bytes,
                Err(_) => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        Ok(TelemetryPoint::parse(&thing, &payload, at).ok())
    }

    /// Writes requests in batches, resending what DynamoDB leaves unprocessed.
    async fn write(&self, requests: Vec<WriteRequest>) -> Result<()> {
        for chunk in requests.chunks(BATCH) {
            let mut pending = chunk.to_vec();
            let mut round = 0;
            while !pending.is_empty() {
                if round == BATCH_ROUNDS {
                    return Err(Error::storage(format!(
                        "dynamodb:BatchWriteItem left {} telemetry items unprocessed after {BATCH_ROUNDS} rounds; try again later",
                        pending.len()
                    )));
                }
                if round > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << round.min(6))).await;
                }
                let out = self
                    .db
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(fail("dynamodb:BatchWriteItem"))?;
                pending = out.unprocessed_items().and_then(|u| u.get(&self.table)).cloned().unwrap_or_default();
                round += 1;
            }
        }
        Ok(())
    }

    fn delete(keys: Vec<Item>) -> Result<Vec<WriteRequest>> {
        keys.into_iter()
            .map(|k| {
                let d = DeleteRequest::builder().set_key(Some(k)).build().map_err(Error::storage)?;
                Ok(WriteRequest::builder().delete_request(d).build())
            })
            .collect()
    }

    /// Whether an item read with [`KEY_AND_PAYLOAD`] holds a point before `t`: its key says
    /// so to the millisecond, its payload within the millisecond of `t`.
    fn before(&self, item: &Item, t: DateTime<Utc>) -> Result<bool> {
        let key = number(item, "at").unwrap_or(i64::MAX);
        if key != t.timestamp_millis() {
            return Ok(key < t.timestamp_millis());
        }
        Ok(self.point(item)?.is_none_or(|p| p.at < t))
    }

    /// The keys of `thing`'s points before `t`.
    async fn keys_before(&self, thing: &ThingName, t: DateTime<Utc>) -> Result<Vec<Item>> {
        let mut keys = Vec::new();
        let mut pages = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("#thing = :t AND #at <= :cut")
            .expression_attribute_names("#thing", "thing")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":t", s(thing.as_str()))
            .expression_attribute_values(":cut", n(t.timestamp_millis()))
            .projection_expression(KEY_AND_PAYLOAD)
            .expression_attribute_names("#payload", "payload")
            .expression_attribute_names("#payload_b64", "payload_b64")
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for item in page.map_err(fail("dynamodb:Query"))?.items() {
                if self.before(item, t)? {
                    keys.push(key_of(item));
                }
            }
        }
        Ok(keys)
    }
}

/// What deciding a deletion reads: the key, and the payload for the boundary millisecond.
const KEY_AND_PAYLOAD: &str = "#thing, #at, #payload, #payload_b64";

fn key_of(item: &Item) -> Item {
    item.iter().filter(|(k, _)| *k == "thing" || *k == "at").map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[async_trait]
impl TelemetryStore for DynamoTelemetry {
    async fn append(&self, points: Vec<TelemetryPoint>) -> Result<()> {
        check_telemetry(&points)?;
        let mut newest: BTreeMap<ThingName, DateTime<Utc>> = BTreeMap::new();
        // One item per (thing, millisecond): the later report replaces the earlier, and a batch
        // may not name one key twice.
        let mut items: BTreeMap<(ThingName, i64), Item> = BTreeMap::new();
        for p in &points {
            let n = newest.entry(p.thing.clone()).or_insert(p.at);
            *n = (*n).max(p.at);
            items.insert((p.thing.clone(), p.at.timestamp_millis()), self.item(p));
        }
        let puts = items
            .into_values()
            .map(|item| {
                let put = PutRequest::builder().set_item(Some(item)).build().map_err(Error::storage)?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.write(puts).await?;
        for (thing, at) in newest {
            let old = self.keys_before(&thing, at - self.retention).await?;
            self.write(Self::delete(old)?).await?;
        }
        Ok(())
    }

    async fn query(&self, query: &TelemetryQuery) -> Result<Vec<TelemetryPoint>> {
        let lo = query.since.map(|t| t.timestamp_millis());
        let hi = query.until.map(|u| ceil_ms(u) - 1);
        if let (Some(lo), Some(hi)) = (lo, hi)
            && lo > hi
        {
            return Ok(Vec::new());
        }
        let condition = match (lo, hi) {
            (Some(_), Some(_)) => "#thing = :t AND #at BETWEEN :lo AND :hi",
            (Some(_), None) => "#thing = :t AND #at >= :lo",
            (None, Some(_)) => "#thing = :t AND #at <= :hi",
            (None, None) => "#thing = :t",
        };
        let mut req = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .expression_attribute_names("#thing", "thing")
            .expression_attribute_values(":t", s(query.thing.as_str()))
            .consistent_read(true)
            // Newest first when only the newest are wanted.
            .scan_index_forward(query.limit.is_none());
        if condition.contains("#at") {
            req = req.expression_attribute_names("#at", "at");
        }
        if let Some(lo) = lo {
            req = req.expression_attribute_values(":lo", n(lo));
        }
        if let Some(hi) = hi {
            req = req.expression_attribute_values(":hi", n(hi));
        }
        let mut out = Vec::new();
        let mut pages = req.into_paginator().send();
        'pages: while let Some(page) = pages.next().await {
            for item in page.map_err(fail("dynamodb:Query"))?.items() {
                let Some(p) = self.point(item)? else { continue };
                if !query.selects(&p) {
                    continue;
                }
                out.push(query.narrow(p));
                if query.limit.is_some_and(|l| out.len() >= l) {
                    break 'pages;
                }
            }
        }
        if query.limit.is_some() {
            out.reverse();
        }
        Ok(out)
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut keys = Vec::new();
        let mut pages = self
            .db
            .scan()
            .table_name(&self.table)
            .filter_expression("#at <= :cut")
            .expression_attribute_names("#thing", "thing")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":cut", n(before.timestamp_millis()))
            .projection_expression(KEY_AND_PAYLOAD)
            .expression_attribute_names("#payload", "payload")
            .expression_attribute_names("#payload_b64", "payload_b64")
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for item in page.map_err(fail("dynamodb:Scan"))?.items() {
                if self.before(item, before)? {
                    keys.push(key_of(item));
                }
            }
        }
        let count = keys.len() as u64;
        self.write(Self::delete(keys)?).await?;
        Ok(count)
    }

    fn retention(&self) -> Duration {
        self.retention
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_up_only_when_there_is_a_fraction() {
        let t = DateTime::from_timestamp_millis(1_000).unwrap();
        assert_eq!(ceil_ms(t), 1_000);
        assert_eq!(ceil_ms(t + Duration::nanoseconds(1)), 1_001);
        assert_eq!(ceil_ms(t - Duration::nanoseconds(1)), 1_000);
    }
}
