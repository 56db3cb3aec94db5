//! Command runs on SQLite (schema 8): one row per run in `command_runs`, one row per device in
//! `command_executions`, and each run's executions counted by state in
//! `command_execution_counts` (kept by triggers). A device's answer changes its one row; the
//! pacing reads the counts and, for a rate-limited run, the sends of the last minute, so the
//! cost of an answer does not grow with the run.
//!
//! The rules are `ota_core::commands`': [`pace`] decides abort, send or complete from the
//! counts; [`CommandRun::respond`] and [`CommandRun::advance`] decide an answer and a timeout,
//! applied here to a run holding only the execution concerned. Everything runs inside the
//! caller's transaction (the engine's, or the port method's own).

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use ota_core::command::CommandResponse;
use ota_core::commands::{
    CANCELED_CODE, CommandExecution, CommandQuery, CommandRun, CommandRunStatus, Dispatch, ExecutionCounts,
    ExecutionState, Pace, pace,
};
use ota_core::names::ThingName;
use ota_core::ports::CommandStore;
use ota_core::topics::{CommandTopic, Reply};
use ota_core::{Error, Result};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::{Value, json};

use super::wire::{Output, epoch};
use super::{
    BoxError, DbResult, SqliteStore, StoreError, Stored, column, json_column, optional_column, optional_json_column,
    sql_limit, timestamp, to_i64, to_json,
};

/// Why an execution not sent yet ends with its run: the words of `ota_core::commands`
/// (`CommandRun`'s end of a run), which the conformance suite checks both backends give.
const ABORTED_BEFORE_SENT: &str = "the command run aborted before this device was sent it";
const CANCELED_BEFORE_SENT: &str = "the command run was canceled before this device was sent it";

impl Stored for ExecutionState {
    fn from_stored(s: &str) -> std::result::Result<Self, BoxError> {
        ExecutionState::parse(s).ok_or_else(|| format!("unknown command execution state {s:?}").into())
    }
}

impl Stored for CommandRunStatus {
    fn from_stored(s: &str) -> std::result::Result<Self, BoxError> {
        CommandRunStatus::parse(s).ok_or_else(|| format!("unknown command run status {s:?}").into())
    }
}

const RUN_COLUMNS: &str = "id, plan_id, command, parameters, created_by, created_at, status, reason, ended_at, policy, timeout_seconds, refusals";

const EXECUTION_COLUMNS: &str =
    "execution_id, thing, device_type, state, reason_code, reason, result, sent_at, updated_at, run_id";

/// A run's row, without its executions.
fn run_from_row(row: &Row<'_>) -> rusqlite::Result<CommandRun> {
    let timeout: i64 = row.get(10)?;
    Ok(CommandRun {
        id: row.get(0)?,
        plan_id: row.get(1)?,
        command: row.get(2)?,
        parameters: json_column(row, 3)?,
        created_by: row.get(4)?,
        created_at: column(row, 5)?,
        status: column(row, 6)?,
        reason: row.get(7)?,
        ended_at: optional_column(row, 8)?,
        policy: json_column(row, 9)?,
        timeout_seconds: u64::try_from(timeout).map_err(|e| super::conversion_error(10, e))?,
        executions: Vec::new(),
        refusals: json_column(row, 11)?,
    })
}

fn execution_from_row(row: &Row<'_>) -> rusqlite::Result<CommandExecution> {
    Ok(CommandExecution {
        execution_id: row.get(0)?,
        thing: column(row, 1)?,
        device_type: column(row, 2)?,
        state: column(row, 3)?,
        reason_code: row.get(4)?,
        reason: row.get(5)?,
        result: optional_json_column(row, 6)?,
        sent_at: optional_column(row, 7)?,
        updated_at: column(row, 8)?,
    })
}

/// The run's row, without executions; `None` for an unknown id.
fn select_header(conn: &Connection, id: &str) -> DbResult<Option<CommandRun>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM command_runs WHERE id = ?1"))?
        .query_row([id], run_from_row)
        .optional()?)
}

/// One run with its executions in order.
fn select_run(conn: &Connection, id: &str) -> DbResult<Option<CommandRun>> {
    let Some(mut run) = select_header(conn, id)? else { return Ok(None) };
    run.executions = conn
        .prepare_cached(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM command_executions WHERE run_id = ?1 ORDER BY position"
        ))?
        .query_map([id], execution_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(run))
}

fn get_run(conn: &Connection, id: &str) -> DbResult<CommandRun> {
    select_run(conn, id)?.ok_or_else(|| StoreError::Domain(Error::not_found("command run", id)))
}

fn insert_run(conn: &Connection, run: &CommandRun) -> DbResult<()> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM command_runs WHERE id = ?1")?
        .query_row([&run.id], |r| r.get(0))
        .optional()?;
    if exists.is_some() {
        return Err(StoreError::Domain(Error::AlreadyExists {
            what: "command run",
            name: run.id.clone(),
            hint: String::new(),
        }));
    }
    conn.prepare_cached(&format!(
        "INSERT INTO command_runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?
    .execute(params![
        run.id,
        run.plan_id,
        run.command,
        to_json("command parameters", &run.parameters)?,
        run.created_by,
        timestamp(&run.created_at),
        run.status.as_str(),
        run.reason,
        run.ended_at.as_ref().map(timestamp),
        to_json("command policy", &run.policy)?,
        to_i64("command timeout", run.timeout_seconds)?,
        to_json("command refusals", &run.refusals)?,
    ])?;
    let mut insert = conn.prepare_cached(&format!(
        "INSERT INTO command_executions ({EXECUTION_COLUMNS}, position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?;
    for (position, e) in run.executions.iter().enumerate() {
        let result = e.result.as_ref().map(|r| to_json("command result", r)).transpose()?;
        let inserted = insert.execute(params![
            e.execution_id,
            e.thing.as_str(),
            e.device_type.as_str(),
            e.state.as_str(),
            e.reason_code,
            e.reason,
            result,
            e.sent_at.as_ref().map(timestamp),
            timestamp(&e.updated_at),
            run.id,
            to_i64("execution position", position as u64)?,
        ]);
        if let Err(rusqlite::Error::SqliteFailure(f, _)) = &inserted
            && f.code == rusqlite::ErrorCode::ConstraintViolation
        {
            return Err(StoreError::Domain(Error::AlreadyExists {
                what: "command execution",
                name: e.execution_id.clone(),
                hint: String::new(),
            }));
        }
        inserted?;
    }
    Ok(())
}

/// Writes back what a transition changed of one execution.
fn update_execution(conn: &Connection, e: &CommandExecution) -> DbResult<()> {
    let result = e.result.as_ref().map(|r| to_json("command result", r)).transpose()?;
    conn.prepare_cached(
        "UPDATE command_executions SET state = ?2, reason_code = ?3, reason = ?4, result = ?5, sent_at = ?6,
             updated_at = ?7
         WHERE execution_id = ?1",
    )?
    .execute(params![
        e.execution_id,
        e.state.as_str(),
        e.reason_code,
        e.reason,
        result,
        e.sent_at.as_ref().map(timestamp),
        timestamp(&e.updated_at),
    ])?;
    Ok(())
}

/// A run holding only `execution`, for the pure transitions that concern one execution.
fn with_only(header: &CommandRun, execution: CommandExecution) -> CommandRun {
    CommandRun { executions: vec![execution], refusals: Vec::new(), ..header.clone() }
}

/// A run's executions counted by state, from the counters.
pub(super) fn counts(conn: &Connection, run_id: &str) -> DbResult<ExecutionCounts> {
    let mut c = ExecutionCounts::default();
    let mut stmt = conn.prepare_cached("SELECT state, n FROM command_execution_counts WHERE run_id = ?1 AND n > 0")?;
    let rows = stmt.query_map([run_id], |row| {
        let n: i64 = row.get(1)?;
        Ok((column::<ExecutionState>(row, 0)?, u32::try_from(n).unwrap_or(u32::MAX)))
    })?;
    for row in rows {
        let (state, n) = row?;
        c.add(state, n);
    }
    Ok(c)
}

/// The same counts by grouping every execution (what the counters must always equal).
#[cfg(test)]
pub(super) fn counts_by_grouping(conn: &Connection, run_id: &str) -> DbResult<ExecutionCounts> {
    let mut c = ExecutionCounts::default();
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM command_executions WHERE run_id = ?1 GROUP BY state")?;
    let rows = stmt.query_map([run_id], |row| {
        let n: i64 = row.get(1)?;
        Ok((column::<ExecutionState>(row, 0)?, u32::try_from(n).unwrap_or(u32::MAX)))
    })?;
    for row in rows {
        let (state, n) = row?;
        c.add(state, n);
    }
    Ok(c)
}

/// Ends a run: its status, reason and end, and every execution not sent yet `CANCELED`.
fn end_run(
    conn: &Connection,
    run_id: &str,
    status: CommandRunStatus,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> DbResult<()> {
    conn.prepare_cached("UPDATE command_runs SET status = ?2, reason = ?3, ended_at = ?4 WHERE id = ?1")?
        .execute(params![run_id, status.as_str(), reason, timestamp(&now)])?;
    let why = match status {
        CommandRunStatus::Aborted => ABORTED_BEFORE_SENT,
        _ => CANCELED_BEFORE_SENT,
    };
    conn.prepare_cached(
        "UPDATE command_executions SET state = 'CANCELED', reason_code = ?2, reason = ?3, updated_at = ?4
         WHERE run_id = ?1 AND state = 'QUEUED'",
    )?
    .execute(params![run_id, CANCELED_CODE, why, timestamp(&now)])?;
    Ok(())
}

/// Executions of `run` sent `run.timeout_seconds` ago or longer and not answered become
/// `TIMED_OUT` (the rule of [`CommandRun::advance`], applied to each alone).
fn time_out(conn: &Connection, run: &CommandRun, now: DateTime<Utc>) -> DbResult<()> {
    let timeout = Duration::seconds(i64::try_from(run.timeout_seconds).unwrap_or(i64::MAX / 1000));
    let due: Vec<CommandExecution> = conn
        .prepare_cached(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM command_executions
             WHERE run_id = ?1 AND state IN ('CREATED', 'IN_PROGRESS') AND sent_at <= ?2"
        ))?
        .query_map(params![run.id, timestamp(&(now - timeout))], execution_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    for e in due {
        // An ended run only times out; it sends nothing.
        let mut alone = CommandRun { status: CommandRunStatus::Completed, ..with_only(run, e) };
        alone.advance(now);
        let e = &alone.executions[0];
        if e.state == ExecutionState::TimedOut {
            update_execution(conn, e)?;
        }
    }
    Ok(())
}

/// The sends of the last minute, read only when the run's policy limits its rate.
fn recent_sends(conn: &Connection, run: &CommandRun, now: DateTime<Utc>) -> DbResult<Vec<DateTime<Utc>>> {
    if run.policy.max_per_minute.is_none() && run.policy.exponential_ramp.is_none() {
        return Ok(Vec::new());
    }
    Ok(conn
        .prepare_cached(
            "SELECT sent_at FROM command_executions WHERE run_id = ?1 AND sent_at IS NOT NULL AND sent_at > ?2",
        )?
        .query_map(params![run.id, timestamp(&(now - Duration::minutes(1)))], |row| column(row, 0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// One run at `now`, as [`CommandRun::advance`]: timeouts, then (while it is active) abort,
/// send what the policy admits, or complete. Adds to `out` what is now due to be sent, and
/// the run if it ended in this step.
fn advance_run(conn: &Connection, run: &CommandRun, now: DateTime<Utc>, out: &mut Advanced) -> DbResult<()> {
    time_out(conn, run, now)?;
    if !run.is_active() {
        return Ok(());
    }
    let counts = counts(conn, &run.id)?;
    match pace(&run.policy, &counts, recent_sends(conn, run, now)?, now) {
        Pace::Abort(reason) => {
            end_run(conn, &run.id, CommandRunStatus::Aborted, Some(&reason), now)?;
            out.ended.push((run.id.clone(), CommandRunStatus::Aborted, Some(reason)));
        }
        Pace::Complete => {
            end_run(conn, &run.id, CommandRunStatus::Completed, None, now)?;
            out.ended.push((run.id.clone(), CommandRunStatus::Completed, None));
        }
        Pace::Send(0) => {}
        Pace::Send(n) => {
            let due: Vec<(String, ThingName)> = conn
                .prepare_cached(
                    "SELECT execution_id, thing FROM command_executions
                     WHERE run_id = ?1 AND state = 'QUEUED' ORDER BY position LIMIT ?2",
                )?
                .query_map(params![run.id, i64::from(n)], |row| Ok((row.get(0)?, column(row, 1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut send = conn.prepare_cached(
                "UPDATE command_executions SET state = 'CREATED', sent_at = ?2, updated_at = ?2 WHERE execution_id = ?1",
            )?;
            for (execution_id, thing) in due {
                send.execute(params![execution_id, timestamp(&now)])?;
                out.dispatches.push(Dispatch {
                    run_id: run.id.clone(),
                    execution_id,
                    thing,
                    command: run.command.clone(),
                    parameters: run.parameters.clone(),
                    timeout_seconds: run.timeout_seconds,
                });
            }
        }
    }
    Ok(())
}

/// What one advance of every run did.
#[derive(Debug, Default)]
pub(super) struct Advanced {
    pub(super) dispatches: Vec<Dispatch>,
    /// Runs that ended in this step: (id, status, reason).
    pub(super) ended: Vec<(String, CommandRunStatus, Option<String>)>,
}

/// The runs an advance looks at: the active ones (a partial index) and those with executions
/// out (the partial index of executions in flight, named: on a small table the planner would
/// rather scan a covering index of every execution ever sent).
const ADVANCED_RUNS_SQL: &str = "SELECT id FROM command_runs WHERE status = 'IN_PROGRESS'
     UNION
     SELECT run_id FROM command_executions INDEXED BY command_executions_in_flight
         WHERE state IN ('CREATED', 'IN_PROGRESS')
     ORDER BY 1";

/// Every run that is active or still has executions out, in id order, at `now`.
pub(super) fn advance_all(conn: &Connection, now: DateTime<Utc>) -> DbResult<Advanced> {
    let ids: Vec<String> =
        conn.prepare_cached(ADVANCED_RUNS_SQL)?.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
    let mut out = Advanced::default();
    for id in ids {
        if let Some(run) = select_header(conn, &id)? {
            advance_run(conn, &run, now, &mut out)?;
        }
    }
    Ok(out)
}

/// Records `thing`'s answer to `execution_id` ([`CommandRun::respond`]): whether it changed
/// the execution, and the execution as it now is with its run. `NotFound` for an unknown
/// execution or one of another device.
fn respond(
    conn: &Connection,
    thing: &ThingName,
    execution_id: &str,
    response: &CommandResponse,
    now: DateTime<Utc>,
) -> DbResult<(bool, CommandRun)> {
    let found = conn
        .prepare_cached(&format!("SELECT {EXECUTION_COLUMNS} FROM command_executions WHERE execution_id = ?1"))?
        .query_row([execution_id], |row| Ok((execution_from_row(row)?, row.get::<_, String>(9)?)))
        .optional()?;
    let not_found = || StoreError::Domain(Error::not_found("command execution", format!("{execution_id} of {thing}")));
    let Some((execution, run_id)) = found.filter(|(e, _)| &e.thing == thing) else { return Err(not_found()) };
    let header = select_header(conn, &run_id)?.ok_or_else(not_found)?;
    let mut alone = with_only(&header, execution);
    let changed = alone.respond(execution_id, response, now)?;
    if changed {
        update_execution(conn, &alone.executions[0])?;
    }
    Ok((changed, alone))
}

/// Re-sends, after a restart, the requests sent and not answered yet (`CREATED`): a device
/// answers an execution id once, so a request it had is ignored.
pub(super) fn unanswered_requests(conn: &Connection) -> DbResult<Vec<Dispatch>> {
    let rows: Vec<(String, String, ThingName)> = conn
        .prepare_cached(
            "SELECT run_id, execution_id, thing FROM command_executions INDEXED BY command_executions_in_flight
             WHERE state IN ('CREATED', 'IN_PROGRESS') AND state = 'CREATED' ORDER BY run_id, position",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, column(row, 2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    let mut header: Option<CommandRun> = None;
    for (run_id, execution_id, thing) in rows {
        if header.as_ref().is_none_or(|h| h.id != run_id) {
            header = select_header(conn, &run_id)?;
        }
        let Some(run) = &header else { continue };
        out.push(Dispatch {
            run_id,
            execution_id,
            thing,
            command: run.command.clone(),
            parameters: run.parameters.clone(),
            timeout_seconds: run.timeout_seconds,
        });
    }
    Ok(out)
}

/// The request a dispatch is published as.
pub(super) fn request_message(d: &Dispatch) -> (String, Vec<u8>) {
    (CommandTopic::Request.to_topic(d.thing.as_str(), &d.execution_id), d.payload().into_bytes())
}

/// Puts what an advance did into the engine's output: the requests, and the runs that ended.
pub(super) fn publish_advanced(advanced: Advanced, out: &mut Output) {
    out.publish.extend(advanced.dispatches.iter().map(request_message));
    out.commands_ended.extend(advanced.ended);
}

/// A device's `.../executions/{id}/response/json`: recorded, answered on
/// `response/accepted/json`, or on `response/rejected/json` with `{"error", "errorMessage",
/// "executionId"}` (the shape of the Commands API's rejections) when it is not a response, the
/// execution is unknown or another device's, or it is already over (a late answer after a
/// timeout, a repeated answer: nothing changes). An answer that ends an execution frees a
/// slot: the run is advanced at once.
pub(super) fn device_response(
    conn: &Connection,
    thing: &ThingName,
    execution_id: &str,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Output,
) -> DbResult<()> {
    let reply = |kind: Reply, body: Value| {
        (CommandTopic::ResponseReply(kind).to_topic(thing.as_str(), execution_id), body.to_string().into_bytes())
    };
    let reject = |code: &str, message: String| {
        reply(Reply::Rejected, json!({"error": code, "errorMessage": message, "executionId": execution_id}))
    };
    let response = match CommandResponse::parse(payload) {
        Ok(r) => r,
        Err(e) => {
            out.publish.push(reject("InvalidRequest", format!("not a command execution response: {e}")));
            return Ok(());
        }
    };
    match respond(conn, thing, execution_id, &response, now) {
        Ok((true, run)) => {
            let e = &run.executions[0];
            out.publish.push(reply(
                Reply::Accepted,
                json!({"executionId": execution_id, "status": e.state.as_str(), "timestamp": epoch(now)}),
            ));
            if e.state.is_terminal() {
                // The header as it is now (the run may have ended since it was read).
                if let Some(current) = select_header(conn, &run.id)? {
                    let mut advanced = Advanced::default();
                    advance_run(conn, &current, now, &mut advanced)?;
                    publish_advanced(advanced, out);
                }
            }
        }
        Ok((false, run)) => {
            let state = run.executions[0].state;
            let message = format!("the command execution is already {state}; the answer changes nothing");
            out.publish.push(reject("TerminalStateReached", message));
        }
        Err(StoreError::Domain(Error::NotFound { .. })) => {
            out.publish.push(reject("ResourceNotFound", format!("no command execution {execution_id} for {thing}")));
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

impl SqliteStore {
    async fn write<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> DbResult<T> + Send + 'static) -> Result<T> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// A run's executions counted from the counters and by grouping every row (tests).
    #[cfg(test)]
    pub(super) async fn command_counts_both_ways(&self, id: &str) -> Result<(ExecutionCounts, ExecutionCounts)> {
        let id = id.to_string();
        self.read(move |conn| Ok((counts(conn, &id)?, counts_by_grouping(conn, &id)?))).await
    }
}

#[async_trait]
impl CommandStore for SqliteStore {
    async fn create(&self, run: &CommandRun) -> Result<()> {
        let run = run.clone();
        self.write(move |conn| insert_run(conn, &run)).await
    }

    async fn get(&self, id: &str) -> Result<CommandRun> {
        let id = id.to_string();
        self.read(move |conn| get_run(conn, &id)).await
    }

    async fn list(&self, query: &CommandQuery) -> Result<Vec<CommandRun>> {
        let q = query.clone();
        self.read(move |conn| {
            let ids: Vec<String> = conn
                .prepare_cached(
                    "SELECT id FROM command_runs
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR plan_id = ?2)
                       AND (?3 IS NULL OR id IN (SELECT run_id FROM command_executions WHERE thing = ?3))
                     ORDER BY created_at DESC, id LIMIT ?4",
                )?
                .query_map(
                    params![
                        q.status.map(CommandRunStatus::as_str),
                        q.plan_id,
                        q.thing.as_ref().map(ThingName::as_str),
                        sql_limit(q.limit)
                    ],
                    |row| row.get(0),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let run = get_run(conn, &id)?;
                // The domain's rule decides (the SQL only narrows).
                if q.matches(&run) {
                    out.push(run);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn cancel(&self, id: &str, reason: &str, at: DateTime<Utc>) -> Result<CommandRun> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.write(move |conn| {
            let mut header =
                select_header(conn, &id)?.ok_or_else(|| StoreError::Domain(Error::not_found("command run", &id)))?;
            // The rule (an ended run cannot be canceled, and its words) is the domain's.
            header.cancel(&reason, at)?;
            end_run(conn, &id, CommandRunStatus::Canceled, Some(&reason), at)?;
            get_run(conn, &id)
        })
        .await
    }

    async fn advance(&self, now: DateTime<Utc>) -> Result<Vec<Dispatch>> {
        self.write(move |conn| Ok(advance_all(conn, now)?.dispatches)).await
    }

    async fn respond(
        &self,
        thing: &ThingName,
        execution_id: &str,
        response: &CommandResponse,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (thing, execution_id, response) = (thing.clone(), execution_id.to_string(), response.clone());
        self.write(move |conn| Ok(respond(conn, &thing, &execution_id, &response, at)?.0)).await
    }
}

#[cfg(test)]
mod tests {
    use ota_core::command::ExecutionStatus;
    use ota_core::names::DeviceType;
    use ota_core::policy::RolloutPolicy;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn run(n: usize, policy: RolloutPolicy) -> CommandRun {
        let ty = DeviceType::parse("smart_plug").unwrap();
        CommandRun {
            id: "cmd-abc-1".into(),
            plan_id: "cplan-abc".into(),
            command: "reboot".into(),
            parameters: serde_json::Map::new(),
            created_by: "alice".into(),
            created_at: t(0),
            status: CommandRunStatus::InProgress,
            reason: None,
            ended_at: None,
            policy,
            timeout_seconds: 60,
            executions: (0..n)
                .map(|i| {
                    let thing = ThingName::parse(&format!("smart_plug-{i:02}")).unwrap();
                    CommandExecution::queued(format!("cmd-abc-1-{i}"), thing, ty.clone(), t(0))
                })
                .collect(),
            refusals: Vec::new(),
        }
    }

    fn answer(status: ExecutionStatus) -> CommandResponse {
        CommandResponse { status, status_reason: None, result: None }
    }

    /// The SQL transitions and the pure ones, step by step on the same run, agree exactly.
    #[tokio::test]
    async fn every_step_agrees_with_the_pure_run_and_the_counters_with_the_rows() {
        let abort = ota_core::policy::AbortRule { failure_percent: 100.0, min_executed: 1, max_failures: None };
        let policy = RolloutPolicy { max_in_flight: 3, max_per_minute: Some(4), abort, ..Default::default() };
        let store = SqliteStore::open_in_memory().unwrap();
        let mut pure = run(9, policy);
        store.create(&pure).await.unwrap();
        let check = async |pure: &CommandRun, what: &str| {
            assert_eq!(&store.get(&pure.id).await.unwrap(), pure, "after {what}");
            let (fast, slow) = store.command_counts_both_ways(&pure.id).await.unwrap();
            assert_eq!(fast, slow, "after {what}");
            assert_eq!(fast, pure.counts(), "after {what}");
        };
        let mut clock = 0;
        for step in 0..40 {
            clock += 7;
            let now = t(clock);
            assert_eq!(store.advance(now).await.unwrap(), pure.advance(now), "step {step}");
            check(&pure, "an advance").await;
            // The first execution sent and not answered gets an answer, one in three fails.
            let next = pure.executions.iter().find(|e| e.state.in_flight() && e.execution_id != "cmd-abc-1-4");
            if let Some(e) = next.cloned() {
                let status = if step % 3 == 2 { ExecutionStatus::Failed } else { ExecutionStatus::Succeeded };
                let a = store.respond(&e.thing, &e.execution_id, &answer(status), now).await.unwrap();
                assert_eq!(a, pure.respond(&e.execution_id, &answer(status), now).unwrap());
                check(&pure, "an answer").await;
            }
        }
        assert!(!pure.is_active(), "{}", pure.summary());
        assert_eq!(pure.executions[4].state, ExecutionState::TimedOut, "the one never answered");
    }

    #[tokio::test]
    async fn an_answer_reads_and_writes_one_execution_not_the_run() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create(&run(3, RolloutPolicy::default())).await.unwrap();
        let plans = store
            .call(|c| {
                let plan = |sql: &str| -> DbResult<String> {
                    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows = stmt.query_map([], |row| row.get::<_, String>(3))?;
                    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
                };
                Ok([
                    plan("SELECT * FROM command_executions WHERE execution_id = 'x'")?,
                    plan("SELECT state, n FROM command_execution_counts WHERE run_id = 'r' AND n > 0")?,
                    plan(
                        "SELECT execution_id FROM command_executions WHERE run_id = 'r' AND state = 'QUEUED' ORDER BY position LIMIT 2",
                    )?,
                    plan(ADVANCED_RUNS_SQL)?,
                    plan(
                        "SELECT sent_at FROM command_executions WHERE run_id = 'r' AND sent_at IS NOT NULL AND sent_at > 'x'",
                    )?,
                ])
            })
            .await
            .unwrap();
        assert!(plans[0].contains("PRIMARY KEY") && !plans[0].contains("SCAN"), "{}", plans[0]);
        assert!(plans[1].contains("PRIMARY KEY") && !plans[1].contains("SCAN"), "{}", plans[1]);
        assert!(plans[2].contains("command_executions_by_run_state") && !plans[2].contains("TEMP"), "{}", plans[2]);
        assert!(
            plans[3].contains("command_executions_in_flight") && plans[3].contains("command_runs_active"),
            "{}",
            plans[3]
        );
        assert!(plans[4].contains("command_executions_by_run_sent"), "{}", plans[4]);
    }
}
