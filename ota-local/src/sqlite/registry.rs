//! The device registry on the `devices` table.

use async_trait::async_trait;
use ota_core::Result;
use ota_core::device::{Device, DeviceQuery};
use ota_core::names::{DeviceType, ThingName};
use ota_core::ports::DeviceRegistry;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::{DbResult, SqliteStore, column, optional_column, timestamp};

const COLUMNS: &str = "thing, device_type, thing_group, firmware_version, connected, last_seen";

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        thing: column(row, 0)?,
        device_type: column(row, 1)?,
        thing_group: column(row, 2)?,
        firmware_version: optional_column(row, 3)?,
        connected: row.get(4)?,
        last_seen: optional_column(row, 5)?,
    })
}

/// Creates or replaces one device. An upsert rather than `INSERT OR REPLACE`: REPLACE
/// deletes the row first, which would cascade to rows that reference the device.
fn upsert(conn: &Connection, d: &Device) -> DbResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO devices (thing, device_type, thing_group, firmware_version, connected, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (thing) DO UPDATE SET
             device_type = excluded.device_type,
             thing_group = excluded.thing_group,
             firmware_version = excluded.firmware_version,
             connected = excluded.connected,
             last_seen = excluded.last_seen",
    )?;
    stmt.execute(params![
        d.thing.as_str(),
        d.device_type.as_str(),
        d.thing_group.as_str(),
        d.firmware_version.as_ref().map(|v| v.to_string()),
        d.connected,
        d.last_seen.as_ref().map(timestamp),
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

    async fn device_types(&self) -> Result<Vec<DeviceType>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT DISTINCT device_type FROM devices ORDER BY device_type")?;
            let types = stmt.query_map([], |row| column(row, 0))?.collect::<rusqlite::Result<Vec<DeviceType>>>()?;
            Ok(types)
        })
        .await
    }
}
