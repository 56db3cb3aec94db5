//! Device shadows as AWS IoT's shadow MQTT API serves them: the classic (unnamed) one, and
//! the named shadow `config`, whose document is the registry's `config` of the device
//! (`reported` by the device here, `desired` written by the service through the registry);
//! and the firmware a device runs as far as this file knows.

use chrono::{DateTime, Utc};
use ota_core::device::DeviceConfig;
use ota_core::names::ThingName;
use ota_core::topics::{CONFIG_SHADOW, Reply, ShadowOp, ShadowReply, ShadowTopic, ThingTopic};
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

/// The named shadow `config`'s requests and the delta it publishes.
const CONFIG_UPDATE: ThingTopic<'static> = ThingTopic::Shadow(ShadowTopic::named(CONFIG_SHADOW, ShadowOp::Update));
const CONFIG_GET: ThingTopic<'static> = ThingTopic::Shadow(ShadowTopic::named(CONFIG_SHADOW, ShadowOp::Get));
const CONFIG_DELTA: ThingTopic<'static> = ThingTopic::Shadow(ShadowTopic {
    name: Some(CONFIG_SHADOW),
    op: ShadowOp::Update,
    reply: Some(ShadowReply::Delta),
});

/// A registered device's configuration and the `config` shadow's version; `None` for a
/// device the registry does not know.
fn read_config(conn: &Connection, thing: &ThingName) -> DbResult<Option<(DeviceConfig, i64)>> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT config, config_version FROM devices WHERE thing = ?1")?
        .query_row([thing.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    // A value another tool wrote that does not parse reads as empty, as the registry reads it.
    Ok(row.map(|(c, v)| (serde_json::from_str(&c).unwrap_or_default(), v)))
}

/// The desired keys whose value differs from the reported one (AWS's delta).
fn config_delta(config: &DeviceConfig) -> Map<String, Value> {
    config
        .desired
        .iter()
        .filter(|(k, v)| config.reported.get(k.as_str()) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn delta_message(thing: &ThingName, delta: Map<String, Value>, version: i64, now: DateTime<Utc>) -> (String, Vec<u8>) {
    let body = json!({"state": delta, "version": version, "timestamp": epoch(now)});
    (topic(thing, CONFIG_DELTA), body.to_string().into_bytes())
}

/// `$aws/things/{thing}/shadow/name/config/update`: `state.reported` (and `state.desired`, as
/// AWS allows) merged into the device's configuration, a `null` deleting a key (or, for a whole
/// section, all of it); answered on `update/accepted`, then, when the update changed the
/// document and desired still differs from reported, the keys that differ on `update/delta`.
/// Rejected (and nothing changes) when the payload is not a JSON object with a `state`
/// object (400), its `version` is not the document's (409), or the device is not registered
/// (404).
pub(super) fn config_update(
    conn: &Connection,
    thing: &ThingName,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let token = client_token(payload);
    let reject = |code: &str, message: &str| rejected(thing, CONFIG_UPDATE, code, message, token.as_deref(), now);
    let Ok(body @ Value::Object(_)) = serde_json::from_slice::<Value>(payload) else {
        out.publish.push(reject("400", "Payload contains invalid json"));
        return Ok(());
    };
    let Some(state @ Value::Object(_)) = body.get("state") else {
        out.publish.push(reject("400", "Missing required node: state"));
        return Ok(());
    };
    let Some((current, version)) = read_config(conn, thing)? else {
        out.publish
            .push(reject("404", &format!("No shadow exists with name: '{CONFIG_SHADOW}' ({thing} is not registered)")));
        return Ok(());
    };
    if let Some(expected) = body.get("version").and_then(Value::as_i64)
        && expected != version
    {
        out.publish.push(reject("409", "Version conflict"));
        return Ok(());
    }
    let merge = |target: &mut Map<String, Value>, patch: Option<&Value>| match patch {
        Some(Value::Null) => target.clear(),
        Some(Value::Object(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    target.remove(k);
                } else {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        _ => {}
    };
    let mut next = current.clone();
    merge(&mut next.reported, state.get("reported"));
    merge(&mut next.desired, state.get("desired"));
    let changed = next != current;
    let version = if changed {
        // The schema's trigger bumps the version (as it does for the service's writes).
        conn.prepare_cached("UPDATE devices SET config = ?2 WHERE thing = ?1")?
            .execute(params![thing.as_str(), serde_json::to_string(&next).unwrap_or_else(|_| "{}".into())])?;
        version + 1
    } else {
        version
    };
    let mut accepted = json!({"state": state, "version": version, "timestamp": epoch(now)});
    if let Some(t) = &token {
        accepted["clientToken"] = json!(t);
    }
    out.publish.push((topic(thing, CONFIG_UPDATE.with_reply(Reply::Accepted)), accepted.to_string().into_bytes()));
    let delta = config_delta(&next);
    // Only a change is followed by a delta: a device that reports, unchanged, a configuration
    // it cannot take (a desired value out of its bounds) is not sent the same delta forever.
    if changed && !delta.is_empty() {
        out.publish.push(delta_message(thing, delta, version, now));
    }
    Ok(())
}

/// The `config` shadow's document as `get/accepted` carries it: the non-empty sections of
/// `desired` and `reported`, and `delta` when they differ.
fn config_document(config: &DeviceConfig, version: i64, now: DateTime<Utc>) -> Value {
    let mut state = Map::new();
    if !config.desired.is_empty() {
        state.insert("desired".into(), Value::Object(config.desired.clone()));
    }
    if !config.reported.is_empty() {
        state.insert("reported".into(), Value::Object(config.reported.clone()));
    }
    let delta = config_delta(config);
    if !delta.is_empty() {
        state.insert("delta".into(), Value::Object(delta));
    }
    json!({"state": state, "version": version, "timestamp": epoch(now)})
}

/// `$aws/things/{thing}/shadow/name/config/get`: the document on `get/accepted` (the device
/// reads a change desired while it was away from its `delta`), or 404 on `get/rejected`
/// while the device has no configuration on record.
pub(super) fn config_get(
    conn: &Connection,
    thing: &ThingName,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let token = client_token(payload);
    match read_config(conn, thing)?.filter(|(c, _)| !(c.desired.is_empty() && c.reported.is_empty())) {
        Some((config, version)) => {
            let mut body = config_document(&config, version, now);
            if let Some(t) = &token {
                body["clientToken"] = json!(t);
            }
            out.publish.push((topic(thing, CONFIG_GET.with_reply(Reply::Accepted)), body.to_string().into_bytes()));
        }
        None => out.publish.push(rejected(
            thing,
            CONFIG_GET,
            "404",
            &format!("No shadow exists with name: '{CONFIG_SHADOW}'"),
            token.as_deref(),
            now,
        )),
    }
    Ok(())
}

/// Sends the deltas owed to devices whose desired configuration changed (the service's
/// `update_config`, written through the registry by whichever process), and empties the
/// outbox in the same transaction.
pub(super) fn drain_config_outbox(conn: &Connection, now: DateTime<Utc>, out: &mut Output) -> DbResult<()> {
    let things: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT thing FROM config_outbox")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if things.is_empty() {
        return Ok(());
    }
    for name in things {
        let Ok(thing) = ThingName::parse(&name) else { continue };
        if let Some((config, version)) = read_config(conn, &thing)? {
            let delta = config_delta(&config);
            if !delta.is_empty() {
                out.publish.push(delta_message(&thing, delta, version, now));
            }
        }
    }
    conn.prepare_cached("DELETE FROM config_outbox")?.execute([])?;
    Ok(())
}

impl SqliteStore {
    /// The `config` shadow of a device as `get` answers it (`desired`, `reported`, `delta`,
    /// `version`); `None` while it has no configuration on record.
    pub async fn config_shadow(&self, thing: &ThingName) -> ota_core::Result<Option<Value>> {
        let thing = thing.clone();
        self.read(move |conn| {
            Ok(read_config(conn, &thing)?
                .filter(|(c, _)| !(c.desired.is_empty() && c.reported.is_empty()))
                .map(|(c, v)| config_document(&c, v, Utc::now())))
        })
        .await
    }

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
