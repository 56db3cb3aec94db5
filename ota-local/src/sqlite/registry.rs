//! The device registry on the `devices` table.

use async_trait::async_trait;
use ota_core::Result;
use ota_core::device::{Device, DeviceQuery, OperationalState};
use ota_core::names::{DeviceType, ThingName};
use ota_core::ports::DeviceRegistry;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::{DbResult, SqliteStore, column, optional_column, timestamp};

const COLUMNS: &str = "thing, device_type, thing_group, firmware_version, connected, last_seen, attributes, health, state, telemetry, config";

/// A JSON column; a value that does not parse (written by another tool) reads as the default
/// rather than hiding the device.
fn json_column<T: serde::de::DeserializeOwned + Default>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: Option<String> = row.get(i)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default())
}

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<Device> {
    let state: String = row.get(8)?;
    Ok(Device {
        firmware_version: optional_column(row, 3)?,
        connected: row.get(4)?,
        last_seen: optional_column(row, 5)?,
        attributes: json_column(row, 6)?,
        health: json_column(row, 7)?,
        state: OperationalState::parse(&state).unwrap_or_default(),
        telemetry: json_column(row, 9)?,
        config: json_column(row, 10)?,
        ..Device::new(column(row, 0)?, column(row, 1)?, column(row, 2)?)
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// Creates or replaces one device. An upsert rather than `INSERT OR REPLACE`: REPLACE
/// deletes the row first, which would cascade to rows that reference the device.
fn upsert(conn: &Connection, d: &Device) -> DbResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO devices (thing, device_type, thing_group, firmware_version, connected, last_seen,
                              attributes, health, state, telemetry, config)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (thing) DO UPDATE SET
             device_type = excluded.device_type,
             thing_group = excluded.thing_group,
             firmware_version = excluded.firmware_version,
             connected = excluded.connected,
             last_seen = excluded.last_seen,
             attributes = excluded.attributes,
             health = excluded.health,
             state = excluded.state,
             telemetry = excluded.telemetry,
             config = excluded.config",
    )?;
    stmt.execute(params![
        d.thing.as_str(),
        d.device_type.as_str(),
        d.thing_group.as_str(),
        d.firmware_version.as_ref().map(|v| v.to_string()),
        d.connected,
        d.last_seen.as_ref().map(timestamp),
        to_json(&d.attributes),
        d.health.as_ref().map(to_json),
        d.state.as_str(),
        d.telemetry.as_ref().map(to_json),
        to_json(&d.config),
    ])?;
    Ok(())
}

impl SqliteStore {
    /// Creates or replaces many devices in one transaction: all of them or none, and far
    /// faster than one commit per device when loading a fleet.
    pub async fn upsert_many(&self, devices: Vec<Device>) -> Result<()> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            for d in &devices {
                upsert(&tx, d)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl DeviceRegistry for SqliteStore {
    async fn list(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        let query = query.clone();
        self.read(move |conn| {
            // SQL narrows by the indexed columns; `DeviceQuery::matches` then applies the whole
            // query (the version filter included), so the semantics are exactly the domain's.
            let mut sql = format!("SELECT {COLUMNS} FROM devices");
            let mut clauses = Vec::new();
            let mut values = Vec::new();
            if let Some(t) = &query.device_type {
                clauses.push("device_type = ?");
                values.push(Value::Text(t.to_string()));
            }
            if let Some(c) = query.connected {
                clauses.push("connected = ?");
                values.push(Value::Integer(c.into()));
            }
            if let Some(s) = query.state {
                clauses.push("state = ?");
                values.push(Value::Text(s.as_str().into()));
            }
            if !clauses.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&clauses.join(" AND "));
            }
            sql.push_str(" ORDER BY thing");
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut out = Vec::new();
            for device in stmt.query_map(params_from_iter(values), device_from_row)? {
                let device = device?;
                if query.matches(&device) {
                    out.push(device);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get(&self, thing: &ThingName) -> Result<Option<Device>> {
        let thing = thing.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM devices WHERE thing = ?1"))?;
            Ok(stmt.query_row([thing.as_str()], device_from_row).optional()?)
        })
        .await
    }

    async fn upsert(&self, device: Device) -> Result<()> {
        self.call(move |conn| upsert(conn, &device)).await
    }

    async fn upsert_many(&self, devices: Vec<Device>) -> Result<()> {
        SqliteStore::upsert_many(self, devices).await
    }

    async fn set_state(&self, thing: &ThingName, state: OperationalState) -> Result<Device> {
        let thing = thing.clone();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let n = tx
                .prepare_cached("UPDATE devices SET state = ?2 WHERE thing = ?1")?
                .execute(params![thing.as_str(), state.as_str()])?;
            if n == 0 {
                return Err(super::StoreError::Domain(ota_core::Error::not_found("device", thing.as_str())));
            }
            let d = tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM devices WHERE thing = ?1"))?
                .query_row([thing.as_str()], device_from_row)?;
            tx.commit()?;
            Ok(d)
        })
        .await
    }

    async fn device_types(&self) -> Result<Vec<DeviceType>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT DISTINCT device_type FROM devices ORDER BY device_type")?;
            let types = stmt.query_map([], |row| column(row, 0))?.collect::<rusqlite::Result<Vec<DeviceType>>>()?;
            Ok(types)
        })
        .await
    }
}
