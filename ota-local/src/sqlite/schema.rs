//! Connection settings and the schema, versioned by `PRAGMA user_version`: migration `i`
//! (0-based) brings a database from version `i` to `i + 1`. Migrations are only ever
//! appended, never edited, so every existing file can be brought forward.

use std::time::Duration;

use ota_core::Error;
use rusqlite::{Connection, TransactionBehavior};

use super::{DbResult, StoreError};

/// How long a writer waits for another connection (another process on the same file)
/// before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// The writer's page cache, as `PRAGMA cache_size` takes it (negative: KiB): 64 MiB.
const WRITER_CACHE_KIB: i64 = -65_536;

/// Each reader's page cache: 16 MiB.
const READER_CACHE_KIB: i64 = -16_384;

/// Version 1: registry, config gate, rollouts, audit trail.
const V1: &str = "
CREATE TABLE devices (
    thing            TEXT PRIMARY KEY NOT NULL,
    device_type      TEXT NOT NULL,
    thing_group      TEXT NOT NULL,
    firmware_version TEXT,
    connected        INTEGER NOT NULL CHECK (connected IN (0, 1)),
    last_seen        TEXT
) WITHOUT ROWID;
-- Serves `list` by type already sorted by thing, and `device_types`.
CREATE INDEX devices_by_type ON devices (device_type, thing);

CREATE TABLE type_configs (
    device_type TEXT PRIMARY KEY NOT NULL,
    ota_enabled INTEGER NOT NULL CHECK (ota_enabled IN (0, 1)),
    policy      TEXT,            -- JSON RolloutPolicy; NULL: the default policy applies
    updated_by  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE rollouts (
    id            TEXT PRIMARY KEY NOT NULL,
    plan_id       TEXT NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('update', 'rollback')),
    device_type   TEXT NOT NULL,
    thing_group   TEXT NOT NULL,
    version       TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL CHECK (size >= 0),
    things        TEXT NOT NULL,  -- JSON array of thing names, sorted
    fleet_query   TEXT NOT NULL,
    policy        TEXT NOT NULL,  -- JSON RolloutPolicy
    status        TEXT NOT NULL CHECK (status IN ('IN_PROGRESS', 'COMPLETED', 'CANCELED', 'ABORTED')),
    status_reason TEXT,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
-- The backstop of 'one active rollout per device type': whatever writes to this file, a
-- second IN_PROGRESS row for a type cannot exist.
CREATE UNIQUE INDEX rollouts_one_active_per_type ON rollouts (device_type) WHERE status = 'IN_PROGRESS';
CREATE INDEX rollouts_newest_first ON rollouts (created_at DESC, id);
CREATE INDEX rollouts_by_type_newest_first ON rollouts (device_type, created_at DESC, id);

CREATE TABLE audit (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused
    at             TEXT NOT NULL,
    subject        TEXT NOT NULL,
    roles          TEXT NOT NULL,  -- JSON array of roles
    operation      TEXT NOT NULL,
    request        TEXT NOT NULL,  -- JSON
    plan           TEXT,           -- JSON
    outcome        TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'error')),
    outcome_detail TEXT NOT NULL
);
-- Append-only, enforced by the database itself and not just by the absence of an API.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// Version 2: the jobs engine. One execution per (rollout, device) with AWS IoT's execution
/// states, the device shadows, and the per-rollout event stream.
const V2: &str = "
CREATE TABLE executions (
    rollout_id       TEXT NOT NULL REFERENCES rollouts (id),
    thing            TEXT NOT NULL,
    -- Position in the rollout's queue: devices start in this order.
    position         INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN
                         ('QUEUED', 'IN_PROGRESS', 'SUCCEEDED', 'FAILED', 'REJECTED', 'TIMED_OUT', 'CANCELED', 'REMOVED')),
    -- 1 once the engine has offered the job to the device (AWS: the execution exists and
    -- the device was notified). Queued and not released: waiting for the policy's admit.
    released         INTEGER NOT NULL DEFAULT 0 CHECK (released IN (0, 1)),
    version_number   INTEGER NOT NULL DEFAULT 1,
    execution_number INTEGER NOT NULL DEFAULT 1,
    status_details   TEXT,            -- JSON object of strings
    queued_at        TEXT NOT NULL,
    started_at       TEXT,            -- when released
    in_progress_at   TEXT,
    deadline         TEXT,            -- in-progress timeout
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (rollout_id, thing)
) WITHOUT ROWID;
CREATE INDEX executions_by_rollout_status ON executions (rollout_id, status, released, position);
CREATE INDEX executions_by_thing ON executions (thing, status);

CREATE TABLE shadows (
    thing      TEXT PRIMARY KEY NOT NULL,
    version    INTEGER NOT NULL,
    reported   TEXT NOT NULL,  -- JSON object
    desired    TEXT NOT NULL,  -- JSON object
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE rollout_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    thing      TEXT,
    detail     TEXT NOT NULL   -- JSON
);
CREATE INDEX rollout_events_by_rollout ON rollout_events (rollout_id, seq);
";

/// Version 3: what the engine owes devices and remembers of them. `from_version` is the
/// firmware a device ran when its execution was created (a revert's target). `device_outbox`
/// holds the notices a finished rollout owes the devices it had offered its job to, written
/// in the transaction that canceled their executions (possibly by another process, the CLI)
/// and drained by the engine, so a crash between the two cannot lose one.
const V3: &str = "
ALTER TABLE executions ADD COLUMN from_version TEXT;

CREATE TABLE device_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    thing      TEXT NOT NULL,
    -- What caused the notice: the rollout whose offer was withdrawn.
    rollout_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
";

/// Version 4: what a rollout needs to revert itself on abort: the firmware each device ran
/// when it was planned, and the aborted rollout a revert rollout belongs to.
const V4: &str = "
ALTER TABLE rollouts ADD COLUMN from_versions TEXT NOT NULL DEFAULT '{}';
ALTER TABLE rollouts ADD COLUMN revert_of TEXT;
";

/// Version 5: what keeps the engine's cost per device flat as the fleet grows.
/// `execution_counts` holds each rollout's executions counted by (status, released), kept
/// by triggers in the transaction of every execution change, so the policy reads a handful
/// of rows instead of grouping all of a rollout's executions after every device report. The
/// partial index serves the tick's "in progress past its deadline" scan without reading the
/// executions of every rollout ever run; the other one, a rate-limited rollout's starts of
/// the last minute.
const V5: &str = "
CREATE TABLE execution_counts (
    rollout_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    released   INTEGER NOT NULL,
    n          INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (rollout_id, status, released)
) WITHOUT ROWID;
INSERT INTO execution_counts (rollout_id, status, released, n)
    SELECT rollout_id, status, released, COUNT(*) FROM executions GROUP BY rollout_id, status, released;
CREATE TRIGGER execution_counts_insert AFTER INSERT ON executions
BEGIN
    INSERT INTO execution_counts (rollout_id, status, released, n) VALUES (NEW.rollout_id, NEW.status, NEW.released, 1)
        ON CONFLICT (rollout_id, status, released) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER execution_counts_update AFTER UPDATE OF rollout_id, status, released ON executions
    WHEN OLD.rollout_id IS NOT NEW.rollout_id OR OLD.status IS NOT NEW.status OR OLD.released IS NOT NEW.released
BEGIN
    UPDATE execution_counts SET n = n - 1
        WHERE rollout_id = OLD.rollout_id AND status = OLD.status AND released = OLD.released;
    INSERT INTO execution_counts (rollout_id, status, released, n) VALUES (NEW.rollout_id, NEW.status, NEW.released, 1)
        ON CONFLICT (rollout_id, status, released) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER execution_counts_delete AFTER DELETE ON executions
BEGIN
    UPDATE execution_counts SET n = n - 1
        WHERE rollout_id = OLD.rollout_id AND status = OLD.status AND released = OLD.released;
END;
CREATE INDEX executions_in_progress_by_deadline ON executions (deadline) WHERE status = 'IN_PROGRESS';
CREATE INDEX executions_by_rollout_started ON executions (rollout_id, started_at) WHERE started_at IS NOT NULL;
";

/// Version 6: what a rollout verified at start and every job document of it carries: the
/// image's signature (JSON `{alg, key_id, value}`; NULL: unsigned, as every rollout of an
/// older file) and its security version.
const V6: &str = "
ALTER TABLE rollouts ADD COLUMN signature TEXT;
ALTER TABLE rollouts ADD COLUMN security_version INTEGER NOT NULL DEFAULT 0 CHECK (security_version >= 0);
";

/// Version 7: device management. What the registry keeps of each device besides firmware and
/// connectivity (attributes such as `location`, the health it reports, the operational state
/// operators set, its last telemetry and the named shadow `config`), and the telemetry
/// history, read by device and time (the index) and pruned by time.
const V7: &str = "
ALTER TABLE devices ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';  -- JSON object of strings
ALTER TABLE devices ADD COLUMN health TEXT;                            -- JSON {status, message}
ALTER TABLE devices ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'maintenance', 'retired'));
ALTER TABLE devices ADD COLUMN telemetry TEXT;                         -- JSON {values, at}
ALTER TABLE devices ADD COLUMN config TEXT NOT NULL DEFAULT '{}';      -- JSON {reported, desired}

CREATE TABLE telemetry (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    thing  TEXT NOT NULL,
    at     TEXT NOT NULL,
    vals   TEXT NOT NULL   -- JSON object: metric -> value
);
CREATE INDEX telemetry_by_thing_at ON telemetry (thing, at);
CREATE INDEX telemetry_by_at ON telemetry (at);
";

/// Version 8: remote commands and the named shadow `config`. A command run is one row; its
/// executions are one row each (a run can have 10,000), so a device's answer changes one row
/// and reads a handful: `command_execution_counts`, kept by triggers as `execution_counts`
/// is for rollouts, gives the pacing its counts; the partial indexes serve the tick's
/// in-flight scan (timeouts, and runs that ended with executions still out) and a
/// rate-limited run's sends of the last minute. `config_version` is the `config` shadow's
/// version (bumped by every change of the device's configuration, whoever writes it), and
/// `config_outbox` the devices whose desired configuration changed (the service writes it
/// through the registry, possibly from another process) and which the engine owes a delta.
const V8: &str = "
CREATE TABLE command_runs (
    id              TEXT PRIMARY KEY NOT NULL,
    plan_id         TEXT NOT NULL,
    command         TEXT NOT NULL,
    parameters      TEXT NOT NULL,            -- JSON object
    created_by      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('IN_PROGRESS', 'COMPLETED', 'ABORTED', 'CANCELED')),
    reason          TEXT,
    ended_at        TEXT,
    policy          TEXT NOT NULL,            -- JSON RolloutPolicy
    timeout_seconds INTEGER NOT NULL CHECK (timeout_seconds > 0),
    refusals        TEXT NOT NULL DEFAULT '[]' -- JSON array of {target, reason}
) WITHOUT ROWID;
CREATE INDEX command_runs_newest_first ON command_runs (created_at DESC, id);
CREATE INDEX command_runs_by_plan ON command_runs (plan_id, created_at DESC, id);
CREATE INDEX command_runs_active ON command_runs (id) WHERE status = 'IN_PROGRESS';

CREATE TABLE command_executions (
    execution_id TEXT PRIMARY KEY NOT NULL,
    run_id       TEXT NOT NULL REFERENCES command_runs (id),
    -- Position in the run (its executions sorted by thing): sent in this order.
    position     INTEGER NOT NULL,
    thing        TEXT NOT NULL,
    device_type  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN
                     ('QUEUED', 'CREATED', 'IN_PROGRESS', 'SUCCEEDED', 'FAILED', 'REJECTED', 'TIMED_OUT', 'CANCELED')),
    reason_code  TEXT,
    reason       TEXT,
    result       TEXT,                        -- JSON object
    sent_at      TEXT,
    updated_at   TEXT NOT NULL,
    UNIQUE (run_id, position)
) WITHOUT ROWID;
CREATE INDEX command_executions_by_run_state ON command_executions (run_id, state, position);
CREATE INDEX command_executions_by_thing ON command_executions (thing, run_id);
CREATE INDEX command_executions_in_flight ON command_executions (run_id, sent_at)
    WHERE state IN ('CREATED', 'IN_PROGRESS');
CREATE INDEX command_executions_by_run_sent ON command_executions (run_id, sent_at) WHERE sent_at IS NOT NULL;

CREATE TABLE command_execution_counts (
    run_id TEXT NOT NULL,
    state  TEXT NOT NULL,
    n      INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (run_id, state)
) WITHOUT ROWID;
CREATE TRIGGER command_execution_counts_insert AFTER INSERT ON command_executions
BEGIN
    INSERT INTO command_execution_counts (run_id, state, n) VALUES (NEW.run_id, NEW.state, 1)
        ON CONFLICT (run_id, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER command_execution_counts_update AFTER UPDATE OF run_id, state ON command_executions
    WHEN OLD.run_id IS NOT NEW.run_id OR OLD.state IS NOT NEW.state
BEGIN
    UPDATE command_execution_counts SET n = n - 1 WHERE run_id = OLD.run_id AND state = OLD.state;
    INSERT INTO command_execution_counts (run_id, state, n) VALUES (NEW.run_id, NEW.state, 1)
        ON CONFLICT (run_id, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER command_execution_counts_delete AFTER DELETE ON command_executions
BEGIN
    UPDATE command_execution_counts SET n = n - 1 WHERE run_id = OLD.run_id AND state = OLD.state;
END;

ALTER TABLE devices ADD COLUMN config_version INTEGER NOT NULL DEFAULT 0;
CREATE TABLE config_outbox (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    thing TEXT NOT NULL
);
CREATE TRIGGER devices_config_changed AFTER UPDATE OF config ON devices
    WHEN OLD.config IS NOT NEW.config
BEGIN
    UPDATE devices SET config_version = config_version + 1 WHERE thing = NEW.thing;
    INSERT INTO config_outbox (thing) SELECT NEW.thing
        WHERE (CASE WHEN json_valid(OLD.config) THEN json_extract(OLD.config, '$.desired') END)
              IS NOT (CASE WHEN json_valid(NEW.config) THEN json_extract(NEW.config, '$.desired') END);
END;
CREATE TRIGGER devices_config_inserted AFTER INSERT ON devices
    WHEN json_valid(NEW.config) AND COALESCE(json_extract(NEW.config, '$.desired'), '{}') <> '{}'
BEGIN
    INSERT INTO config_outbox (thing) VALUES (NEW.thing);
END;
";

/// Every migration, in order. Append only.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Per-connection settings. WAL lets readers (a CLI) run while `ota serve` writes; foreign
/// keys are on for the tables later migrations add (job executions reference rollouts).
pub(super) fn configure(conn: &Connection) -> DbResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The engine alone runs some 30 distinct statements; with rusqlite's default of 16 cached,
    // most device messages re-parsed a statement or two.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // SQLite's default page cache is 2 MB; a rollout of 10,000 devices writes more than that
    // (executions, events, their indexes), and the engine then re-reads evicted pages.
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // An in-memory database answers "memory" and stays so; only files can use WAL.
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    Ok(())
}

/// Settings of a reader connection: it waits for locks like the writer and cannot write.
pub(super) fn configure_reader(conn: &Connection) -> DbResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`]. Runs under a write lock, so two processes
/// opening a new file at once apply each migration exactly once.
pub(super) fn migrate(conn: &mut Connection) -> DbResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if usize::try_from(current).map_or(true, |v| v > SCHEMA_VERSION) {
        return Err(StoreError::Domain(Error::storage(format!(
            "the database has schema version {current}, which this build of ota does not know (it knows up to {SCHEMA_VERSION}); upgrade ota"
        ))));
    }
    for (version, sql) in (1i64..).zip(MIGRATIONS).skip(usize::try_from(current).unwrap_or(0)) {
        tx.execute_batch(sql)?;
        // `user_version` lives in the file header and commits with the migration's tables.
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_2_file_with_executions_migrates_to_the_outbox_and_from_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        // A bare execution row, without the rollout it would belong to.
        conn.pragma_update(None, "foreign_keys", false).unwrap();
        conn.execute_batch(
            "INSERT INTO executions (rollout_id, thing, position, status, queued_at, updated_at)
             VALUES ('r', 'pet_feeder-01', 0, 'QUEUED', 't', 't');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version as usize, SCHEMA_VERSION);
        let from: Option<String> = conn.query_row("SELECT from_version FROM executions", [], |r| r.get(0)).unwrap();
        assert_eq!(from, None, "executions created before version 3 do not know it");
        let owed: i64 = conn.query_row("SELECT COUNT(*) FROM device_outbox", [], |r| r.get(0)).unwrap();
        assert_eq!(owed, 0);
    }

    #[test]
    fn a_version_4_file_migrates_with_its_executions_counted() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.pragma_update(None, "foreign_keys", false).unwrap();
        conn.execute_batch(
            "INSERT INTO executions (rollout_id, thing, position, status, released, queued_at, updated_at) VALUES
                 ('r', 'pet_feeder-01', 0, 'SUCCEEDED', 1, 't', 't'),
                 ('r', 'pet_feeder-02', 1, 'SUCCEEDED', 1, 't', 't'),
                 ('r', 'pet_feeder-03', 2, 'QUEUED', 0, 't', 't');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let counted: Vec<(String, i64, i64)> = conn
            .prepare("SELECT status, released, n FROM execution_counts WHERE rollout_id = 'r' ORDER BY status")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(counted, [("QUEUED".to_string(), 0, 1), ("SUCCEEDED".to_string(), 1, 2)]);
        // And the triggers keep counting from there.
        conn.execute_batch("UPDATE executions SET status = 'CANCELED' WHERE thing = 'pet_feeder-03'").unwrap();
        let n: i64 = conn
            .query_row("SELECT SUM(n) FROM execution_counts WHERE rollout_id = 'r' AND status = 'CANCELED'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1);
    }

    /// A file written by the previous release (schema 5), with a rollout in it, opened by
    /// this one: upgraded in place, the rollout reads back unsigned, and a signed rollout
    /// stored afterwards keeps its signature.
    #[tokio::test]
    async fn a_version_5_file_upgrades_in_place_and_its_rollouts_read_back() {
        use ota_core::ports::RolloutStore;
        use ota_core::rollout::RolloutQuery;
        use ota_core::signing::LocalSigningKey;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ota.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute_batch(
                r#"INSERT INTO rollouts (id, plan_id, action, device_type, thing_group, version, sha256, size, things,
                       fleet_query, policy, status, status_reason, created_by, created_at, updated_at, from_versions)
                   VALUES ('update-pet_feeder-2_0_0-0123456789', 'plan-1', 'update', 'pet_feeder',
                       'PetFeederAWSDevice', '2.0.0', '0101010101010101010101010101010101010101010101010101010101010101',
                       10, '["pet_feeder-01"]', 'thingName:pet_feeder-01', '{}', 'COMPLETED', NULL, 'tester',
                       '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', '{}');"#,
            )
            .unwrap();
        }
        let store = super::super::SqliteStore::open(&path).unwrap();
        let version: i64 =
            Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version as usize, SCHEMA_VERSION);
        let old = store.list(&RolloutQuery::default()).await.unwrap();
        assert_eq!(old.len(), 1, "{old:?}");
        assert_eq!(old[0].id.as_str(), "update-pet_feeder-2_0_0-0123456789");
        assert_eq!(old[0].things.len(), 1);
        assert_eq!((old[0].signature.as_ref(), old[0].security_version), (None, 0), "recorded before signatures");

        let key = LocalSigningKey::from_bytes(&[9; 32]).unwrap();
        let mut signed = old[0].clone();
        signed.id = ota_core::names::JobId::parse("update-pet_feeder-2_0_0-0123456789-2").unwrap();
        signed.status = ota_core::rollout::RolloutStatus::InProgress;
        signed.signature = Some(key.sign_digest(&signed.sha256).unwrap());
        signed.security_version = 4;
        store.create(&signed).await.unwrap();
        drop(store);
        let reopened = super::super::SqliteStore::open(&path).unwrap();
        assert_eq!(RolloutStore::get(&reopened, &signed.id).await.unwrap(), signed);
    }
    /// A file of the previous release (schema 6) with a device in it: upgraded in place, the
    /// device reads back active with no attributes, health or telemetry, and the telemetry
    /// history exists with its index.
    #[tokio::test]
    async fn a_version_6_file_upgrades_in_place_and_its_devices_read_back_active() {
        use ota_core::device::OperationalState;
        use ota_core::ports::DeviceRegistry;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ota.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            conn.execute_batch(
                "INSERT INTO devices (thing, device_type, thing_group, firmware_version, connected, last_seen)
                 VALUES ('pet_feeder-01', 'pet_feeder', 'PetFeederAWSDevice', '1.0.0', 1, NULL);",
            )
            .unwrap();
        }
        let store = super::super::SqliteStore::open(&path).unwrap();
        let thing = ota_core::names::ThingName::parse("pet_feeder-01").unwrap();
        let d = store.get(&thing).await.unwrap().expect("the device survives the upgrade");
        assert_eq!(d.firmware_version.map(|v| v.to_string()).as_deref(), Some("1.0.0"));
        assert_eq!(d.state, OperationalState::Active);
        assert!(d.attributes.is_empty() && d.health.is_none() && d.telemetry.is_none());
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version as usize, SCHEMA_VERSION);
        let index: String = conn
            .query_row("SELECT sql FROM sqlite_master WHERE name = 'telemetry_by_thing_at'", [], |r| r.get(0))
            .unwrap();
        assert!(index.contains("(thing, at)"), "{index}");
    }

    /// A file of the previous release (schema 7) with a device and its configuration:
    /// upgraded in place, the device reads back as it was, its `config` shadow starts at
    /// version 0, and from then on a change of its desired configuration (the service writes
    /// it through the registry) bumps the version and leaves the engine a delta to send;
    /// command runs can be stored.
    #[tokio::test]
    async fn a_version_7_file_upgrades_in_place_and_its_configuration_changes_are_tracked() {
        use ota_core::commands::{CommandExecution, CommandRun, CommandRunStatus};
        use ota_core::ports::{CommandStore, DeviceRegistry};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ota.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..7] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 7).unwrap();
            conn.execute_batch(
                r#"INSERT INTO devices (thing, device_type, thing_group, firmware_version, connected, last_seen, config)
                   VALUES ('co2_monitor-01', 'co2_monitor', 'Co2MonitorAWSDevice', '1.0.0', 1, NULL,
                           '{"reported":{"sample_rate_seconds":60},"desired":{}}');"#,
            )
            .unwrap();
        }
        let store = super::super::SqliteStore::open(&path).unwrap();
        let thing = ota_core::names::ThingName::parse("co2_monitor-01").unwrap();
        let mut d = DeviceRegistry::get(&store, &thing).await.unwrap().expect("the device survives the upgrade");
        assert_eq!(d.config.reported.get("sample_rate_seconds"), Some(&serde_json::json!(60)));
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version as usize, SCHEMA_VERSION);
        let tracked = |conn: &Connection| -> (i64, i64) {
            let v = conn.query_row("SELECT config_version FROM devices", [], |r| r.get(0)).unwrap();
            let owed = conn.query_row("SELECT COUNT(*) FROM config_outbox", [], |r| r.get(0)).unwrap();
            (v, owed)
        };
        assert_eq!(tracked(&conn), (0, 0));

        // Rewriting the same record changes nothing; a new desired value is tracked.
        store.upsert(d.clone()).await.unwrap();
        assert_eq!(tracked(&conn), (0, 0), "an unchanged configuration");
        d.config.desired.insert("sample_rate_seconds".into(), serde_json::json!(10));
        store.upsert(d.clone()).await.unwrap();
        assert_eq!(tracked(&conn), (1, 1), "a desired change: a new version and a delta owed");
        d.config.reported.insert("sample_rate_seconds".into(), serde_json::json!(10));
        store.upsert(d).await.unwrap();
        assert_eq!(tracked(&conn), (2, 1), "a reported change: a new version, no delta owed");

        let ty = ota_core::names::DeviceType::parse("co2_monitor").unwrap();
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let run = CommandRun {
            id: "cmd-0123456789ab-1".into(),
            plan_id: "cplan-0123456789ab".into(),
            command: "identify".into(),
            parameters: Default::default(),
            created_by: "operator".into(),
            created_at: at,
            status: CommandRunStatus::InProgress,
            reason: None,
            ended_at: None,
            policy: Default::default(),
            timeout_seconds: 300,
            executions: vec![CommandExecution::queued("cmd-0123456789ab-1-0".into(), thing, ty, at)],
            refusals: Vec::new(),
        };
        store.create(&run).await.unwrap();
        assert_eq!(CommandStore::get(&store, &run.id).await.unwrap(), run);
    }
}
