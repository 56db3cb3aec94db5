//! The per-type config gate on the `type_configs` table.

use async_trait::async_trait;
use ota_core::Result;
use ota_core::config::TypeConfig;
use ota_core::names::DeviceType;
use ota_core::ports::ConfigStore;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteStore, column, optional_json_column, timestamp, to_json};

const COLUMNS: &str = "device_type, ota_enabled, policy, updated_by, updated_at";

fn config_from_row(row: &Row<'_>) -> rusqlite::Result<TypeConfig> {
    Ok(TypeConfig {
        device_type: column(row, 0)?,
        ota_enabled: row.get(1)?,
        policy: optional_json_column(row, 2)?,
        updated_by: row.get(3)?,
        updated_at: column(row, 4)?,
    })
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn get(&self, device_type: &DeviceType) -> Result<Option<TypeConfig>> {
        let device_type = device_type.clone();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM type_configs WHERE device_type = ?1"))?;
            Ok(stmt.query_row([device_type.as_str()], config_from_row).optional()?)
        })
        .await
    }

    async fn put(&self, config: TypeConfig) -> Result<()> {
        self.call(move |conn| {
            let policy = config.policy.as_ref().map(|p| to_json("policy", p)).transpose()?;
            conn.prepare_cached(
                "INSERT INTO type_configs (device_type, ota_enabled, policy, updated_by, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (device_type) DO UPDATE SET
                     ota_enabled = excluded.ota_enabled,
                     policy = excluded.policy,
                     updated_by = excluded.updated_by,
                     updated_at = excluded.updated_at",
            )?
            .execute(params![
                config.device_type.as_str(),
                config.ota_enabled,
                policy,
                config.updated_by,
                timestamp(&config.updated_at),
            ])?;
            Ok(())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<TypeConfig>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM type_configs ORDER BY device_type"))?;
            let configs = stmt.query_map([], config_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(configs)
        })
        .await
    }
}
