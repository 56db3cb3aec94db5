//! Device shadows (the classic, unnamed one), as AWS IoT's shadow MQTT API serves them, and
//! the firmware a device runs as far as this file knows.

use chrono::{DateTime, Utc};
use ota_core::names::ThingName;
use ota_core::topics::{Reply, ShadowOp, ShadowReply, ShadowTopic, ThingTopic};
use ota_core::version::FirmwareVersion;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value, json};

use super::wire::{Output, client_token, epoch, rejected, topic};
use super::{DbResult, SqliteStore, timestamp};

/// The classic shadow's requests this engine serves, and the delta it publishes.
const UPDATE: ThingTopic<'static> = ThingTopic::Shadow(ShadowTopic::classic(ShadowOp::Update));
const GET: ThingTopic<'static> = ThingTopic::Shadow(ShadowTopic::classic(ShadowOp::Get));
const UPDATE_DELTA: ThingTopic<'static> =
    ThingTopic::Shadow(ShadowTopic { name: None, op: ShadowOp::Update, reply: Some(ShadowReply::Delta) });

/// The firmware a device runs as far as this file knows: the registry's record (kept from
/// the shadow's reports), else the shadow's own `firmwareVersion`.
pub(super) fn running_version(conn: &Connection, thing: &ThingName) -> DbResult<Option<FirmwareVersion>> {
    let registered: Option<Option<String>> = conn
        .prepare_cached("SELECT firmware_version FROM devices WHERE thing = ?1")?
        .query_row([thing.as_str()], |row| row.get(0))
        .optional()?;
    if let Some(v) = registered.flatten().and_then(|v| FirmwareVersion::parse(&v).ok()) {
        return Ok(Some(v));
    }
    Ok(read_shadow(conn, thing)?.and_then(|(_, reported, _)| {
        reported.get("firmwareVersion").and_then(Value::as_str).and_then(|v| FirmwareVersion::parse(v).ok())
    }))
}

/// A device's stored shadow: (version, reported, desired); `None` before its first update.
pub(super) fn read_shadow(conn: &Connection, thing: &ThingName) -> DbResult<Option<(i64, Value, Value)>> {
    let row: Option<(i64, String, String)> = conn
        .prepare_cached("SELECT version, reported, desired FROM shadows WHERE thing = ?1")?
        .query_row([thing.as_str()], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    let object = |text: &str| serde_json::from_str(text).unwrap_or_else(|_| json!({}));
    Ok(row.map(|(v, r, d)| (v, object(&r), object(&d))))
}

/// Applies `state.reported` (a `null` deletes a key), answers accepted or rejected, sends a
/// delta when desired and reported differ, and copies the firmware version and liveness to
/// the registry.
pub(super) fn shadow_update(
    conn: &Connection,
    thing: &ThingName,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let token = client_token(payload);
    let body: Value = match serde_json::from_slice(payload) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let (t, p) = rejected(thing, UPDATE, "400", "Payload contains invalid json", token.as_deref(), now);
            out.publish.push((t, p));
            return Ok(());
        }
    };
    let (version, mut reported, mut desired) = read_shadow(conn, thing)?.unwrap_or((0, json!({}), json!({})));
    if let Some(expected) = body.get("version").and_then(Value::as_i64)
        && expected != version
    {
        out.publish.push(rejected(thing, UPDATE, "409", "Version conflict", token.as_deref(), now));
        return Ok(());
    }
    let state = body.get("state").cloned().unwrap_or(Value::Null);
    let merge = |target: &mut Value, patch: Option<&Value>| {
        if let (Some(Value::Object(patch)), Value::Object(t)) = (patch, target) {
            for (k, v) in patch {
                if v.is_null() {
                    t.remove(k);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    };
    merge(&mut reported, state.get("reported"));
    merge(&mut desired, state.get("desired"));
    let version = version + 1;
    conn.prepare_cached(
        "INSERT INTO shadows (thing, version, reported, desired, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (thing) DO UPDATE SET version = excluded.version, reported = excluded.reported,
             desired = excluded.desired, updated_at = excluded.updated_at",
    )?
    .execute(params![thing.as_str(), version, reported.to_string(), desired.to_string(), timestamp(&now)])?;
    let mut accepted = json!({"state": state, "version": version, "timestamp": epoch(now)});
    if let Some(t) = &token {
        accepted["clientToken"] = json!(t);
    }
    out.publish.push((topic(thing, UPDATE.with_reply(Reply::Accepted)), accepted.to_string().into_bytes()));
    if let Value::Object(d) = &desired {
        let delta: Map<String, Value> = d
            .iter()
            .filter(|(k, v)| reported.get(k.as_str()) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !delta.is_empty() {
            let body = json!({"state": delta, "version": version, "timestamp": epoch(now)});
            out.publish.push((topic(thing, UPDATE_DELTA), body.to_string().into_bytes()));
        }
    }
    let firmware = reported.get("firmwareVersion").and_then(Value::as_str).and_then(|v| FirmwareVersion::parse(v).ok());
    conn.prepare_cached(
        "UPDATE devices SET firmware_version = COALESCE(?2, firmware_version), connected = 1, last_seen = ?3 WHERE thing = ?1",
    )?
    .execute(params![thing.as_str(), firmware.map(|v| v.to_string()), timestamp(&now)])?;
    // Health and the last telemetry, when this update reports them (`null` clears health).
    if let Some(patch) = state.get("reported") {
        match patch.get("health") {
            Some(Value::Null) => {
                conn.prepare_cached("UPDATE devices SET health = NULL WHERE thing = ?1")?.execute([thing.as_str()])?;
            }
            Some(h) => {
                if let Some(health) = ota_core::device::Health::from_reported(h) {
                    conn.prepare_cached("UPDATE devices SET health = ?2 WHERE thing = ?1")?
                        .execute(params![thing.as_str(), serde_json::to_string(&health).unwrap_or_default()])?;
                }
            }
            None => {}
        }
        if let Some(t) = patch.get("telemetry")
            && let Ok(point) = ota_core::ports::TelemetryPoint::parse(thing, t.to_string().as_bytes(), now)
        {
            super::telemetry::record_telemetry(conn, &point)?;
        }
    }
    Ok(())
}

pub(super) fn shadow_get(
    conn: &Connection,
    thing: &ThingName,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let token = client_token(payload);
    match read_shadow(conn, thing)? {
        Some((version, reported, desired)) => {
            let mut body = json!({"state": {"reported": reported, "desired": desired}, "version": version, "timestamp": epoch(now)});
            if let Some(t) = &token {
                body["clientToken"] = json!(t);
            }
            out.publish.push((topic(thing, GET.with_reply(Reply::Accepted)), body.to_string().into_bytes()));
        }
        None => out.publish.push(rejected(
            thing,
            GET,
            "404",
            &format!("No shadow exists with name: '{thing}'"),
            token.as_deref(),
            now,
        )),
    }
    Ok(())
}

impl SqliteStore {
    /// The stored shadow document of a device (`reported`, `desired`, `version`).
    pub async fn shadow(&self, thing: &ThingName) -> ota_core::Result<Option<Value>> {
        let thing = thing.clone();
        self.read(move |conn| {
            Ok(read_shadow(conn, &thing)?.map(
                |(v, reported, desired)| json!({"state": {"reported": reported, "desired": desired}, "version": v}),
            ))
        })
        .await
    }
}
