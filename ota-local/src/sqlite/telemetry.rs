//! Telemetry history on the `telemetry` table (schema 7): one row per report, read by device
//! and time through the `(thing, at)` index, each device's rows older than the retention
//! before its newest report dropped as it reports.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ota_core::Result;
use ota_core::ports::{TelemetryPoint, TelemetryQuery, TelemetryStore, check_telemetry};
use rusqlite::{Connection, params};

use super::{DbResult, SqliteStore, column, sql_limit, timestamp};

/// Stores one point and drops the device's points older than `retention` before it. The
/// caller has checked it ([`check_telemetry`]).
pub(super) fn insert_point(conn: &Connection, p: &TelemetryPoint, retention: chrono::Duration) -> DbResult<()> {
    conn.prepare_cached("INSERT INTO telemetry (thing, at, vals) VALUES (?1, ?2, ?3)")?.execute(params![
        p.thing.as_str(),
        timestamp(&p.at),
        serde_json::Value::Object(p.values.clone()).to_string()
    ])?;
    conn.prepare_cached("DELETE FROM telemetry WHERE thing = ?1 AND at < ?2")?
        .execute(params![p.thing.as_str(), timestamp(&(p.at - retention))])?;
    Ok(())
}

/// Records what a device reported as its last telemetry: the registry's record and the
/// history. Refused telemetry (too large, not an object) changes nothing.
pub(super) fn record_telemetry(conn: &Connection, p: &TelemetryPoint) -> DbResult<bool> {
    if check_telemetry(std::slice::from_ref(p)).is_err() {
        return Ok(false);
    }
    let last = ota_core::device::Telemetry { values: p.values.clone(), at: p.at };
    let updated = conn
        .prepare_cached("UPDATE devices SET telemetry = ?2 WHERE thing = ?1")?
        .execute(params![p.thing.as_str(), serde_json::to_string(&last).unwrap_or_default()])?;
    if updated == 0 {
        // Not a registered device: nothing of it is kept.
        return Ok(false);
    }
    insert_point(conn, p, chrono::Duration::days(ota_core::ports::TELEMETRY_RETENTION_DAYS))?;
    Ok(true)
}

#[async_trait]
impl TelemetryStore for SqliteStore {
    async fn append(&self, points: Vec<TelemetryPoint>) -> Result<()> {
        check_telemetry(&points)?;
        let retention = self.retention();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            for p in &points {
                insert_point(&tx, p, retention)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn query(&self, query: &TelemetryQuery) -> Result<Vec<TelemetryPoint>> {
        let q = query.clone();
        self.read(move |conn| {
            // Newest first with the limit, then reversed: the limit keeps the newest points.
            let mut stmt = conn.prepare_cached(
                "SELECT thing, at, vals FROM telemetry
                 WHERE thing = ?1 AND at >= ?2 AND at < ?3
                   AND (?4 IS NULL OR json_type(vals, '$.' || json_quote(?4)) IS NOT NULL)
                 ORDER BY at DESC, seq DESC LIMIT ?5",
            )?;
            let since = q.since.as_ref().map_or_else(String::new, timestamp);
            let until = q.until.as_ref().map_or_else(|| "~".to_string(), timestamp);
            let rows = stmt.query_map(
                params![q.thing.as_str(), since, until, q.metric.as_deref(), sql_limit(q.limit)],
                |row| {
                    let vals: String = row.get(2)?;
                    let at: DateTime<Utc> = column(row, 1)?;
                    Ok((column(row, 0)?, at, vals))
                },
            )?;
            let mut out = Vec::new();
            for r in rows {
                let (thing, at, vals) = r?;
                let values = match serde_json::from_str(&vals) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => continue,
                };
                let p = TelemetryPoint { thing, at, values };
                // The domain's rule decides (the SQL only narrows).
                if q.selects(&p) {
                    out.push(q.narrow(p));
                }
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        self.call(move |conn| {
            let n = conn.prepare_cached("DELETE FROM telemetry WHERE at < ?1")?.execute([timestamp(&before)])?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ota_core::device::{Device, HealthStatus};
    use ota_core::names::{DeviceType, NamingConvention, ThingName};
    use ota_core::ports::{DeviceRegistry, MAX_TELEMETRY_BYTES, TelemetryQuery, TelemetryStore};

    use super::super::{EngineContext, SqliteStore};

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_323_045 + seconds, 0).unwrap()
    }
    use chrono::{DateTime, Utc};

    fn ctx() -> EngineContext {
        EngineContext {
            firmware_url: Arc::new(|v, ty, _| format!("http://127.0.0.1:1/firmwares/v{v}/{ty}/firmware.bin")),
        }
    }

    async fn store() -> (SqliteStore, ThingName) {
        let store = SqliteStore::open_in_memory().unwrap();
        let ty = DeviceType::parse("co2_monitor").unwrap();
        let thing = ThingName::parse("co2_monitor-01").unwrap();
        let d = Device {
            connected: true,
            ..Device::new(thing.clone(), ty.clone(), NamingConvention::default().thing_group_of(&ty))
        };
        store.upsert(d).await.unwrap();
        (store, thing)
    }

    async fn send(store: &SqliteStore, thing: &ThingName, topic: &str, payload: &[u8], at: i64) {
        store.handle_device_message(ctx(), thing.clone(), topic.to_string(), payload.to_vec(), t(at)).await.unwrap();
    }

    #[tokio::test]
    async fn the_telemetry_topic_records_history_and_the_last_value() {
        let (store, thing) = store().await;
        send(&store, &thing, "dt/ota/co2_monitor-01/telemetry", br#"{"co2_ppm": 612}"#, 0).await;
        send(&store, &thing, "dt/ota/co2_monitor-01/telemetry", br#"{"co2_ppm": 640, "temperature_c": 21.5}"#, 60)
            .await;
        let history = store.query(&TelemetryQuery::of(thing.clone())).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].at, t(60));
        let d = store.get(&thing).await.unwrap().unwrap();
        let last = d.telemetry.expect("the last telemetry is on the record");
        assert_eq!((last.at, last.values.get("co2_ppm").and_then(|v| v.as_i64())), (t(60), Some(640)));
    }

    #[tokio::test]
    async fn oversized_or_malformed_telemetry_changes_nothing() {
        let (store, thing) = store().await;
        send(&store, &thing, "dt/ota/co2_monitor-01/telemetry", br#"{"co2_ppm": 612}"#, 0).await;
        let before = store.get(&thing).await.unwrap();
        let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(MAX_TELEMETRY_BYTES));
        for bad in [big.as_bytes(), b"[1, 2, 3]".as_slice(), b"42", b"{not json"] {
            send(&store, &thing, "dt/ota/co2_monitor-01/telemetry", bad, 30).await;
        }
        // Another thing's telemetry topic, sent as this thing, is not this thing's telemetry.
        send(&store, &thing, "dt/ota/co2_monitor-02/telemetry", br#"{"co2_ppm": 1}"#, 40).await;
        assert_eq!(store.query(&TelemetryQuery::of(thing.clone())).await.unwrap().len(), 1, "no new history");
        assert_eq!(store.get(&thing).await.unwrap(), before, "the record is unchanged");
        let other = ThingName::parse("co2_monitor-02").unwrap();
        assert!(store.query(&TelemetryQuery::of(other)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_classic_shadow_reports_health_and_telemetry_into_the_registry() {
        let (store, thing) = store().await;
        let update = br#"{"state": {"reported": {"firmwareVersion": "1.0.0",
            "health": {"status": "warning", "message": "PM2.5 sensor drift"},
            "telemetry": {"co2_ppm": 700}}}}"#;
        send(&store, &thing, "$aws/things/co2_monitor-01/shadow/update", update, 10).await;
        let d = store.get(&thing).await.unwrap().unwrap();
        let health = d.health.expect("health reported");
        assert_eq!((health.status, health.message.as_str()), (HealthStatus::Warning, "PM2.5 sensor drift"));
        assert_eq!(d.telemetry.map(|t| t.at), Some(t(10)));
        assert_eq!(store.query(&TelemetryQuery::of(thing.clone())).await.unwrap().len(), 1);
        // A later update without health keeps it; `null` clears it.
        send(&store, &thing, "$aws/things/co2_monitor-01/shadow/update", br#"{"state": {"reported": {"x": 1}}}"#, 20)
            .await;
        assert!(store.get(&thing).await.unwrap().unwrap().health.is_some());
        send(
            &store,
            &thing,
            "$aws/things/co2_monitor-01/shadow/update",
            br#"{"state": {"reported": {"health": null}}}"#,
            30,
        )
        .await;
        assert!(store.get(&thing).await.unwrap().unwrap().health.is_none());
    }
}
