//! The jobs engine's transitions on SQLite: a device's message (a job status update, a job
//! or next-job request, a classic or `config` shadow request, a command execution's answer,
//! telemetry) and a clock tick (timeouts, then every active rollout evaluated, then every
//! command run advanced and the config deltas owed sent), each run inside one transaction
//! opened by its caller.
//!
//! A transition (a device's status update, the abort it triggers, the devices it releases,
//! the events it records) is committed whole or not at all. A server killed at any instant
//! restarts from a consistent file: nothing is lost and nothing is started twice.
//!
//! The functions are synchronous and pure over the connection and `now`; the async shell in
//! [`crate::jobs`] feeds them device messages and clock ticks and publishes what they return.
//! The other engine modules: `executions` (the per-device rows and their counts),
//! `admission` (abort, admit, complete), `shadow`, `events` and `wire` (what devices receive).

use chrono::{DateTime, Duration, Utc};
use ota_core::names::{JobId, ThingName};
use ota_core::rollout::Rollout;
use ota_core::topics::{
    self, CONFIG_SHADOW, CommandTopic, JobsTopic, NEXT_JOB, Reply, ShadowOp, ShadowTopic, ThingTopic,
};
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::admission::{ENGINE_SUBJECT, audit_engine, drain_outbox, evaluate, rollout_of};
use super::events::record;
use super::executions::{ExecutionStatus, execution, execution_json, next_execution, notify_next};
use super::shadow::{config_get, config_update, drain_config_outbox, shadow_get, shadow_update};
use super::wire::{
    EngineContext, Output, client_token, epoch, job_document, notify_next_topic, rejected, rejected_with, topic,
};
use super::{DbResult, SqliteStore, column, timestamp};

/// What devices did, as the engine consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceInput {
    Connected(ThingName),
    Disconnected(ThingName),
    /// A publish under `$aws/things/{thing}/`; the transport has checked the thing's identity.
    Message {
        thing: ThingName,
        topic: String,
        payload: Vec<u8>,
    },
}

fn set_connected(conn: &Connection, thing: &ThingName, connected: bool, now: DateTime<Utc>) -> DbResult<()> {
    conn.prepare_cached("UPDATE devices SET connected = ?2, last_seen = ?3 WHERE thing = ?1")?.execute(params![
        thing.as_str(),
        connected,
        timestamp(&now)
    ])?;
    Ok(())
}

/// One device input as one transition (the caller holds the transaction).
fn apply_input(conn: &Connection, ctx: &EngineContext, input: &DeviceInput, now: DateTime<Utc>) -> DbResult<Output> {
    match input {
        DeviceInput::Connected(thing) => set_connected(conn, thing, true, now).map(|()| Output::default()),
        DeviceInput::Disconnected(thing) => set_connected(conn, thing, false, now).map(|()| Output::default()),
        DeviceInput::Message { thing, topic, payload } => handle_message(conn, Some(ctx), thing, topic, payload, now),
    }
}

/// Handles `inputs` in order, each in a savepoint of one `BEGIN IMMEDIATE` transaction and at
/// the time `now` gives when it is reached, then commits: a failed input is rolled back alone.
fn commit_batch(
    conn: &mut Connection,
    ctx: &EngineContext,
    inputs: Vec<DeviceInput>,
    mut now: impl FnMut() -> DateTime<Utc>,
) -> DbResult<Vec<ota_core::Result<Output>>> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outs = Vec::with_capacity(inputs.len());
    for input in inputs {
        let at = now();
        let sp = tx.savepoint()?;
        match apply_input(&sp, ctx, &input, at) {
            Ok(out) => {
                sp.commit()?;
                outs.push(Ok(out));
            }
            // Dropping the savepoint rolls back this input's changes only.
            Err(e) => outs.push(Err(ota_core::Error::from(e))),
        }
    }
    tx.commit()?;
    Ok(outs)
}

/// A device's status update, as the Jobs MQTT API receives it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateRequest {
    status: Option<String>,
    #[serde(default)]
    status_details: Option<Map<String, Value>>,
    #[serde(default)]
    expected_version: Option<Value>,
    #[serde(default)]
    client_token: Option<String>,
    #[serde(default)]
    include_job_document: bool,
}

/// Handles one message a device published under its own `$aws/things/{thing}/`.
fn handle_message(
    conn: &Connection,
    ctx: Option<&EngineContext>,
    thing: &ThingName,
    topic_name: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> DbResult<Output> {
    let mut out = Output::default();
    // `dt/ota/{thing}/telemetry`: history and the last value; anything refused (too large,
    // not a JSON object) changes nothing.
    if topic_name.strip_prefix("dt/ota/").and_then(|r| r.strip_suffix("/telemetry")) == Some(thing.as_str()) {
        match ota_core::ports::TelemetryPoint::parse(thing, payload, now) {
            Ok(point) => {
                super::telemetry::record_telemetry(conn, &point)?;
            }
            Err(e) => log::warn!("telemetry from {thing} refused: {e}"),
        }
        return Ok(out);
    }
    // `$aws/commands/things/{thing}/executions/{id}/response/json`: the device's answer.
    if let Some((who, id, kind)) = topics::parse_command(topic_name) {
        if who == thing.as_str() && kind == CommandTopic::Response {
            super::commands::device_response(conn, thing, id, payload, now, &mut out)?;
        }
        return Ok(out);
    }
    let Some(request) = topics::parse_for(thing.as_str(), topic_name) else { return Ok(out) };
    match request {
        ThingTopic::Jobs(JobsTopic::Get(NEXT_JOB, None)) => {
            let next = next_execution(conn, thing)?;
            let mut body = json!({"timestamp": epoch(now)});
            if let Some(t) = client_token(payload) {
                body["clientToken"] = json!(t);
            }
            if let Some(e) = &next {
                body["execution"] = execution_json(conn, e, ctx, now, true)?;
            }
            out.publish.push((topic(thing, request.with_reply(Reply::Accepted)), body.to_string().into_bytes()));
        }
        ThingTopic::Shadow(ShadowTopic { name: None, op: ShadowOp::Update, reply: None }) => {
            shadow_update(conn, thing, payload, now, &mut out)?;
        }
        ThingTopic::Shadow(ShadowTopic { name: None, op: ShadowOp::Get, reply: None }) => {
            shadow_get(conn, thing, payload, now, &mut out)?;
        }
        ThingTopic::Shadow(ShadowTopic { name: Some(CONFIG_SHADOW), op: ShadowOp::Update, reply: None }) => {
            config_update(conn, thing, payload, now, &mut out)?;
        }
        ThingTopic::Shadow(ShadowTopic { name: Some(CONFIG_SHADOW), op: ShadowOp::Get, reply: None }) => {
            config_get(conn, thing, payload, now, &mut out)?;
        }
        ThingTopic::Jobs(JobsTopic::Update(id, None)) => job_update(conn, ctx, thing, id, payload, now, &mut out)?,
        ThingTopic::Jobs(JobsTopic::Get(id, None)) => {
            let token = client_token(payload);
            match execution(conn, id, thing)?.filter(|e| e.released) {
                Some(e) => {
                    let mut body =
                        json!({"timestamp": epoch(now), "execution": execution_json(conn, &e, ctx, now, true)?});
                    if let Some(t) = token {
                        body["clientToken"] = json!(t);
                    }
                    out.publish
                        .push((topic(thing, request.with_reply(Reply::Accepted)), body.to_string().into_bytes()));
                }
                None => out.publish.push(rejected(
                    thing,
                    request,
                    "ResourceNotFound",
                    &format!("no job execution {id} for {thing}"),
                    token.as_deref(),
                    now,
                )),
            }
        }
        // Answers, notifications, deletes and other named shadows are not requests the
        // engine serves.
        _ => {}
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn job_update(
    conn: &Connection,
    ctx: Option<&EngineContext>,
    thing: &ThingName,
    id: &str,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let what = ThingTopic::Jobs(JobsTopic::Update(id, None));
    let request: UpdateRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            out.publish.push(rejected(
                thing,
                what,
                "InvalidJson",
                &format!("the update is not valid JSON: {e}"),
                None,
                now,
            ));
            return Ok(());
        }
    };
    let token = request.client_token.as_deref();
    let Some(current) = execution(conn, id, thing)?.filter(|e| e.released) else {
        out.publish.push(rejected(
            thing,
            what,
            "ResourceNotFound",
            &format!("no job execution {id} for {thing}"),
            token,
            now,
        ));
        return Ok(());
    };
    let Some(status) = request.status.as_deref().and_then(ExecutionStatus::parse).filter(|s| {
        matches!(
            s,
            ExecutionStatus::InProgress
                | ExecutionStatus::Succeeded
                | ExecutionStatus::Failed
                | ExecutionStatus::Rejected
        )
    }) else {
        out.publish.push(rejected(
            thing,
            what,
            "InvalidRequest",
            "status must be IN_PROGRESS, SUCCEEDED, FAILED or REJECTED",
            token,
            now,
        ));
        return Ok(());
    };
    if let Some(expected) = &request.expected_version {
        let expected = expected.as_i64().or_else(|| expected.as_str().and_then(|s| s.parse().ok()));
        if expected != Some(current.version_number) {
            let state = json!({"status": current.status.as_str(), "statusDetails": current.status_details,
                               "versionNumber": current.version_number});
            let message = "expectedVersion does not match";
            out.publish.push(rejected_with(thing, what, "VersionMismatch", message, token, now, state));
            return Ok(());
        }
    }
    if current.status.is_terminal() {
        out.publish.push(rejected(
            thing,
            what,
            "InvalidStateTransition",
            &format!("the job execution is already {}", current.status.as_str()),
            token,
            now,
        ));
        return Ok(());
    }
    let Some(rollout) = rollout_of(conn, &current.rollout_id)? else { return Ok(()) };
    let details = request.status_details.unwrap_or_else(|| current.status_details.clone());
    let version = current.version_number + 1;
    let deadline = now + Duration::minutes(i64::from(rollout.policy.in_progress_timeout_minutes));
    conn.prepare_cached(
        "UPDATE executions SET status = ?3, status_details = ?4, version_number = ?5, updated_at = ?6,
             in_progress_at = COALESCE(in_progress_at, CASE WHEN ?3 = 'IN_PROGRESS' THEN ?6 END),
             deadline = COALESCE(deadline, CASE WHEN ?3 = 'IN_PROGRESS' THEN ?7 END)
         WHERE rollout_id = ?1 AND thing = ?2",
    )?
    .execute(params![
        id,
        thing.as_str(),
        status.as_str(),
        Value::Object(details.clone()).to_string(),
        version,
        timestamp(&now),
        timestamp(&deadline)
    ])?;
    let mut accepted = json!({
        "executionState": {"status": status.as_str(), "statusDetails": details, "versionNumber": version},
        "timestamp": epoch(now),
    });
    if let Some(t) = token {
        accepted["clientToken"] = json!(t);
    }
    if request.include_job_document {
        accepted["jobDocument"] = job_document(ctx, &rollout, now);
    }
    out.publish.push((topic(thing, what.with_reply(Reply::Accepted)), accepted.to_string().into_bytes()));
    if status != current.status || status.is_terminal() {
        record(
            conn,
            &mut out.events,
            &rollout.id,
            now,
            "execution",
            Some(thing),
            json!({"status": status.as_str(), "details": details}),
        )?;
    }
    if status.is_terminal() {
        ended(conn, ctx, &rollout, thing, status, now, out)?;
    }
    Ok(())
}

/// An execution reached an end state: retry it when the policy allows, tell the device its
/// next job, and let the policy decide what the rollout does next.
fn ended(
    conn: &Connection,
    ctx: Option<&EngineContext>,
    rollout: &Rollout,
    thing: &ThingName,
    status: ExecutionStatus,
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let retries = match status {
        ExecutionStatus::Failed => i64::from(rollout.policy.retries.failed),
        ExecutionStatus::TimedOut => i64::from(rollout.policy.retries.timed_out),
        _ => 0,
    };
    if retries > 0 && rollout.status.is_active() {
        // AWS creates a new execution number for a retry; the device sees it as a new offer.
        let retried = conn
            .prepare_cached(
                "UPDATE executions SET status = 'QUEUED', released = 0, started_at = NULL, in_progress_at = NULL,
                     deadline = NULL, execution_number = execution_number + 1, version_number = 1, updated_at = ?3
                 WHERE rollout_id = ?1 AND thing = ?2 AND execution_number <= ?4",
            )?
            .execute(params![rollout.id.as_str(), thing.as_str(), timestamp(&now), retries])?;
        if retried > 0 {
            record(conn, &mut out.events, &rollout.id, now, "retry", Some(thing), json!({"after": status.as_str()}))?;
        }
    }
    let fresh = rollout_of(conn, &rollout.id)?.unwrap_or_else(|| rollout.clone());
    evaluate(conn, ctx, &fresh, now, out)?;
    // The device's next job changed; unless the evaluation just offered it one, say so.
    let notify = notify_next_topic(thing);
    if !out.publish.iter().any(|(t, _)| *t == notify) {
        let next = next_execution(conn, thing)?;
        out.publish.push(notify_next(conn, thing, next.as_ref(), now, ctx)?);
    }
    Ok(())
}

/// Executions in progress past their deadline (`?1`).
const EXPIRED_SQL: &str = "SELECT rollout_id, thing FROM executions WHERE status = 'IN_PROGRESS' AND deadline < ?1";

/// Times out executions in progress past their deadline, then evaluates every active rollout,
/// then sends the notices other transactions (an operator's cancel) left in the outbox.
fn tick(conn: &Connection, ctx: Option<&EngineContext>, now: DateTime<Utc>) -> DbResult<Output> {
    let mut out = Output::default();
    // Sorted here, not by SQL: an ORDER BY over the primary key would tempt the planner into
    // scanning every execution ever created instead of the in-progress deadline index.
    let mut expired: Vec<(JobId, ThingName)> = conn
        .prepare_cached(EXPIRED_SQL)?
        .query_map([timestamp(&now)], |row| Ok((column(row, 0)?, column(row, 1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    expired.sort();
    if !expired.is_empty() {
        // One entry per tick that timed executions out, naming each rollout and its devices.
        let mut by_rollout: Vec<(&JobId, Vec<&str>)> = Vec::new();
        for (id, thing) in &expired {
            match by_rollout.last_mut() {
                Some((last, things)) if *last == id => things.push(thing.as_str()),
                _ => by_rollout.push((id, vec![thing.as_str()])),
            }
        }
        let detail =
            by_rollout.iter().map(|(id, things)| format!("{id}: {}", things.join(", "))).collect::<Vec<_>>().join("; ");
        let request = json!({"timed_out": by_rollout.iter()
            .map(|(id, things)| json!({"rollout": id.as_str(), "things": things}))
            .collect::<Vec<_>>()});
        let detail = format!("{} executions timed out in progress: {detail}", expired.len());
        audit_engine(conn, now, "timeout", request, detail)?;
    }
    for (id, thing) in expired {
        conn.prepare_cached(
            "UPDATE executions SET status = 'TIMED_OUT', version_number = version_number + 1, updated_at = ?3
             WHERE rollout_id = ?1 AND thing = ?2",
        )?
        .execute(params![id.as_str(), thing.as_str(), timestamp(&now)])?;
        record(conn, &mut out.events, &id, now, "execution", Some(&thing), json!({"status": "TIMED_OUT"}))?;
        if let Some(rollout) = rollout_of(conn, &id)? {
            ended(conn, ctx, &rollout, &thing, ExecutionStatus::TimedOut, now, &mut out)?;
        }
    }
    let active: Vec<JobId> = conn
        .prepare_cached("SELECT id FROM rollouts WHERE status = 'IN_PROGRESS' ORDER BY created_at")?
        .query_map([], |row| column(row, 0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in active {
        if let Some(rollout) = rollout_of(conn, &id)? {
            evaluate(conn, ctx, &rollout, now, &mut out)?;
        }
    }
    drain_outbox(conn, ctx, now, &mut out)?;
    // Command runs: timeouts, aborts, sends, completions; then the config deltas owed.
    super::commands::publish_advanced(super::commands::advance_all(conn, now)?, &mut out);
    drain_config_outbox(conn, now, &mut out)?;
    Ok(out)
}

impl SqliteStore {
    /// The subject of the engine's own audit entries (`abort`, `complete`, `timeout`).
    pub const ENGINE_SUBJECT: &'static str = ENGINE_SUBJECT;

    /// Handles one message a device published under its own `$aws/things/{thing}/` at `now`,
    /// through the same transaction code as [`Self::handle_device_batch`] (a batch of one).
    /// The caller publishes `Output::publish` once this returns.
    pub async fn handle_device_message(
        &self,
        ctx: EngineContext,
        thing: ThingName,
        topic: String,
        payload: Vec<u8>,
        now: DateTime<Utc>,
    ) -> ota_core::Result<Output> {
        let input = DeviceInput::Message { thing, topic, payload };
        let mut outs = self.call(move |conn| commit_batch(conn, &ctx, vec![input], || now)).await?;
        outs.pop().unwrap_or_else(|| Ok(Output::default()))
    }

    /// Group commit: handles `inputs` in order, each as its own transition inside a savepoint,
    /// all in one transaction, so a burst of device messages costs one commit (one fsync)
    /// instead of one each. Returns each input's output (or why it failed: a failed input is
    /// rolled back alone and the others still commit), in order, once the commit is done; the
    /// caller publishes nothing before this returns. Each input is handled at the time it is
    /// reached, so a transition sees the clock as it would alone.
    pub async fn handle_device_batch(
        &self,
        ctx: EngineContext,
        inputs: Vec<DeviceInput>,
    ) -> ota_core::Result<Vec<ota_core::Result<Output>>> {
        self.call(move |conn| commit_batch(conn, &ctx, inputs, Utc::now)).await
    }

    /// One clock tick of the engine: timeouts, aborts, admissions, completions.
    pub async fn engine_tick(&self, ctx: EngineContext, now: DateTime<Utc>) -> ota_core::Result<Output> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = tick(&tx, Some(&ctx), now)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// What the engine sends when it starts. Offers of jobs made before a restart whose
    /// notification may have been lost: each such device is told its next job again (a device
    /// ignores a repeated offer). And the notices still in the outbox (a rollout canceled
    /// while no engine ran, or just before a crash): those devices are told their next job,
    /// or that they have none, and the outbox is emptied in the same transaction. And the
    /// command requests sent and not answered yet, sent again.
    pub async fn pending_offers(&self, ctx: EngineContext, now: DateTime<Utc>) -> ota_core::Result<Output> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Output::default();
            let things: Vec<ThingName> = tx
                .prepare_cached(
                    "SELECT DISTINCT thing FROM executions WHERE released = 1 AND status = 'QUEUED' ORDER BY thing",
                )?
                .query_map([], |row| column(row, 0))?
                .collect::<rusqlite::Result<_>>()?;
            for thing in things {
                let next = next_execution(&tx, &thing)?;
                out.publish.push(notify_next(&tx, &thing, next.as_ref(), now, Some(&ctx))?);
            }
            drain_outbox(&tx, Some(&ctx), now, &mut out)?;
            // Command requests sent before a restart and not answered may never have reached
            // their devices: sent again (a device answers an execution id once).
            let requests = super::commands::unanswered_requests(&tx)?;
            out.publish.extend(requests.iter().map(super::commands::request_message));
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// How many device notices wait in the outbox for the engine (0 once it has drained them).
    pub async fn outbox_len(&self) -> ota_core::Result<u64> {
        self.read(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM device_outbox", [], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ota_core::catalog::Sha256Digest;
    use ota_core::device::Device;
    use ota_core::names::DeviceType;
    use ota_core::names::NamingConvention;
    use ota_core::policy::RolloutPolicy;
    use ota_core::ports::RolloutStore;
    use ota_core::rollout::RolloutStatus;
    use ota_core::targeting::UpdateAction;
    use ota_core::version::FirmwareVersion;

    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_323_045 + seconds, 0).unwrap()
    }

    fn ctx() -> EngineContext {
        EngineContext {
            firmware_url: Arc::new(|v, ty, _| format!("http://127.0.0.1:1/firmwares/v{v}/{ty}/firmware.bin")),
        }
    }

    fn thing(n: u32) -> ThingName {
        ThingName::parse(&format!("pet_feeder-{n:02}")).unwrap()
    }

    async fn store_with(n: u32, policy: RolloutPolicy) -> (SqliteStore, JobId) {
        let store = SqliteStore::open_in_memory().unwrap();
        let ty = DeviceType::parse("pet_feeder").unwrap();
        let group = NamingConvention::default().thing_group_of(&ty);
        let devices = (1..=n)
            .map(|i| Device {
                firmware_version: Some(FirmwareVersion::new(1, 0, 0)),
                connected: true,
                last_seen: None,
                ..Device::new(thing(i), ty.clone(), group.clone())
            })
            .collect();
        store.upsert_many(devices).await.unwrap();
        let rollout = Rollout {
            id: JobId::parse("update-pet_feeder-2_0_0-abc").unwrap(),
            plan_id: "plan".into(),
            action: UpdateAction::Update,
            fleet_query: format!("thingGroupNames:{group}"),
            thing_group: group,
            device_type: ty,
            version: FirmwareVersion::new(2, 0, 0),
            sha256: Sha256Digest([0xab; 32]),
            size: 1000,
            things: (1..=n).map(thing).collect(),
            policy,
            status: RolloutStatus::InProgress,
            status_reason: None,
            created_by: "operator".into(),
            created_at: t(0),
            updated_at: t(0),
            from_versions: Default::default(),
            revert_of: None,
            signature: None,
            security_version: 0,
        };
        store.create(&rollout).await.unwrap();
        (store, rollout.id)
    }

    fn offered(out: &Output) -> usize {
        out.publish
            .iter()
            .filter(|(topic, p)| {
                // Parsed, not matched as text: key order depends on serde_json's features,
                // which the whole workspace's build may change.
                topic.ends_with("/notify-next")
                    && serde_json::from_slice::<Value>(p).is_ok_and(|v| v.get("execution").is_some())
            })
            .count()
    }

    async fn report(store: &SqliteStore, n: u32, id: &JobId, status: &str, now: DateTime<Utc>) -> Output {
        let topic = format!("$aws/things/{}/jobs/{id}/update", thing(n));
        let body = json!({"status": status}).to_string().into_bytes();
        store.handle_device_message(ctx(), thing(n), topic, body, now).await.unwrap()
    }

    #[tokio::test]
    async fn transitions_never_read_the_rollouts_device_list() {
        let (store, id) = store_with(3, RolloutPolicy::default()).await;
        // The engine works from the executions; a device list it cannot even parse must not
        // matter (with 10,000 devices, parsing it on every message was most of the cost).
        store.call(|c| Ok(c.execute("UPDATE rollouts SET things = 'not a list'", [])?)).await.unwrap();
        assert_eq!(offered(&store.engine_tick(ctx(), t(1)).await.unwrap()), 3);
        for n in 1..=3 {
            let out = report(&store, n, &id, "IN_PROGRESS", t(2)).await;
            assert!(out.publish[0].0.ends_with("/update/accepted"), "{out:?}");
            let out = report(&store, n, &id, "SUCCEEDED", t(3)).await;
            assert!(out.publish[0].0.ends_with("/update/accepted"), "{out:?}");
        }
        let kinds: Vec<String> = store.rollout_events(&id, 0).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds.last().map(String::as_str), Some("completed"), "{kinds:?}");
    }

    #[tokio::test]
    async fn a_start_rate_limit_still_counts_the_starts_of_the_last_minute() {
        let policy = RolloutPolicy { max_in_flight: 10, max_per_minute: Some(2), ..Default::default() };
        let (store, id) = store_with(5, policy).await;
        assert_eq!(offered(&store.engine_tick(ctx(), t(0)).await.unwrap()), 2);
        assert_eq!(offered(&store.engine_tick(ctx(), t(30)).await.unwrap()), 0, "2 started within the minute");
        // A finished device frees a slot, not the rate: nobody new is offered within the minute.
        report(&store, 1, &id, "SUCCEEDED", t(31)).await;
        assert_eq!(offered(&store.engine_tick(ctx(), t(40)).await.unwrap()), 0);
        assert_eq!(offered(&store.engine_tick(ctx(), t(61)).await.unwrap()), 2, "the minute has passed");
    }

    async fn check_counts(store: &SqliteStore, id: &JobId, what: &str) -> crate::sqlite::ExecutionCounts {
        let id = id.clone();
        let (fast, slow) = store
            .call(move |c| {
                Ok((super::super::executions::counts(c, &id)?, super::super::executions::counts_by_grouping(c, &id)?))
            })
            .await
            .unwrap();
        assert_eq!(fast, slow, "after {what}");
        fast
    }

    #[tokio::test]
    async fn the_counters_always_equal_a_count_of_the_executions() {
        let policy = RolloutPolicy {
            max_in_flight: 4,
            retries: ota_core::policy::RetryPolicy { failed: 1, timed_out: 1 },
            in_progress_timeout_minutes: 1,
            ..Default::default()
        };
        let (store, id) = store_with(8, policy).await;
        check_counts(&store, &id, "create").await;
        store.engine_tick(ctx(), t(1)).await.unwrap();
        assert_eq!(check_counts(&store, &id, "release").await.queued, 4);
        report(&store, 1, &id, "IN_PROGRESS", t(2)).await;
        report(&store, 2, &id, "IN_PROGRESS", t(2)).await;
        report(&store, 3, &id, "IN_PROGRESS", t(2)).await;
        check_counts(&store, &id, "in progress").await;
        report(&store, 1, &id, "SUCCEEDED", t(3)).await;
        report(&store, 2, &id, "FAILED", t(3)).await;
        assert_eq!(check_counts(&store, &id, "a failure retried").await.failed, 0, "the failure was retried");
        // Device 3 stays in progress past its one-minute deadline.
        store.engine_tick(ctx(), t(200)).await.unwrap();
        check_counts(&store, &id, "a timeout").await;
        report(&store, 4, &id, "REJECTED", t(201)).await;
        check_counts(&store, &id, "a rejection").await;
        store.finish(&id, RolloutStatus::Canceled, "operator", t(202)).await.unwrap();
        let end = check_counts(&store, &id, "the cancel").await;
        assert_eq!(end.total, 8);
        assert!(end.canceled > 0, "{end:?}");
    }

    #[tokio::test]
    async fn the_engine_reads_counters_and_indexes_not_every_execution() {
        let (store, _id) = store_with(2, RolloutPolicy::default()).await;
        let plans = store
            .call(|c| {
                let plan = |sql: &str| -> DbResult<String> {
                    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows = stmt.query_map([], |row| row.get::<_, String>(3))?;
                    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
                };
                Ok([
                    plan(&EXPIRED_SQL.replace("?1", "'x'"))?,
                    plan("SELECT status, released, n FROM execution_counts WHERE rollout_id = 'r' AND n > 0")?,
                    plan("SELECT started_at FROM executions WHERE rollout_id = 'r' AND started_at IS NOT NULL AND started_at > 'x'")?,
                ])
            })
            .await
            .unwrap();
        assert!(plans[0].contains("executions_in_progress_by_deadline"), "{}", plans[0]);
        assert!(plans[1].contains("PRIMARY KEY") && !plans[1].contains("SCAN"), "{}", plans[1]);
        assert!(plans[2].contains("executions_by_rollout_started"), "{}", plans[2]);
    }
}
