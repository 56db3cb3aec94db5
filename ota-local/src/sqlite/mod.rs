//! One SQLite file holding the device registry, the config gate, the rollouts, the command
//! runs and the audit trail. rusqlite is synchronous, so every call runs on tokio's blocking pool. Writes go
//! through one writer connection behind a mutex, which orders them (the jobs engine is the
//! busiest writer); queries (the registry, rollouts, events and shadows that HTTP, SSE, MCP
//! and planning read) run on reader connections of their own, which WAL lets read the last
//! commit while the writer writes, so no reader waits behind an engine transaction. Writes
//! that check before they change (`create`, `finish`) run in `BEGIN IMMEDIATE` transactions,
//! which also serialise them against other processes opening the same file.
//!
//! Queried fields are typed columns; nested values (policies, thing lists, requests) are JSON.

mod admission;
mod audit;
mod commands;
mod config;
mod events;
mod executions;
mod registry;
mod rollout_store;
mod rollouts;
mod schema;
mod shadow;
mod telemetry;
mod transitions;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, SecondsFormat, Utc};
use ota_core::catalog::Sha256Digest;
use ota_core::names::{DeviceType, JobId, ThingGroupName, ThingName};
use ota_core::rollout::RolloutStatus;
use ota_core::targeting::UpdateAction;
use ota_core::version::FirmwareVersion;
use ota_core::{Error, Result};
use rusqlite::types::Type;
use rusqlite::{Connection, Row};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::blocking;

pub use events::RolloutEvent;
pub use executions::{Execution, ExecutionCounts, ExecutionStatus, RolloutProgress};
pub use transitions::DeviceInput;
pub use wire::{EngineContext, Output};

/// The registry, config gate, rollouts, command runs, telemetry and audit trail in one SQLite
/// database. Implements [`ota_core::ports::DeviceRegistry`], [`ota_core::ports::ConfigStore`],
/// [`ota_core::ports::RolloutStore`], [`ota_core::ports::CommandStore`],
/// [`ota_core::ports::TelemetryStore`] and [`ota_core::ports::AuditLog`].
pub struct SqliteStore {
    /// The writer: every write, in order.
    conn: Arc<Mutex<Connection>>,
    /// Query-only connections to the same file; empty for an in-memory database (whose
    /// connections cannot share it), where queries use the writer.
    readers: Arc<[Mutex<Connection>]>,
    next_reader: AtomicUsize,
    /// `None` for an in-memory database.
    path: Option<PathBuf>,
}

/// Reader connections per store: one per core of the machines ota targets is plenty, as a
/// query holds its connection only while it runs.
const READERS: usize = 2;

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating when missing) the database file at `path`, in WAL mode, and brings its
    /// schema up to date. The folder must exist. Fails when the file was written by a newer
    /// version of ota whose schema this build does not know.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let open = || {
            Connection::open(path)
                .map_err(|e| Error::storage(format!("cannot open the database {}: {e}", path.display())))
        };
        let mut store = Self::with_connection(open()?, Some(path.to_path_buf()))?;
        // Opened after the writer has brought the schema up to date.
        let readers = (0..READERS)
            .map(|_| {
                let conn = open()?;
                schema::configure_reader(&conn)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>>>()?;
        store.readers = readers.into();
        Ok(store)
    }

    /// A private, empty in-memory database (for tests); gone when the store is dropped.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory().map_err(StoreError::Db)?;
        Self::with_connection(conn, None)
    }

    fn with_connection(mut conn: Connection, path: Option<PathBuf>) -> Result<SqliteStore> {
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new([]),
            next_reader: AtomicUsize::new(0),
            path,
        })
    }

    /// The database file, `None` when in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` with the connection on the blocking pool; the one place where this module's
    /// errors become [`ota_core::Error`]s.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        blocking("database", move || {
            // A panic mid-call leaves no open transaction behind (rusqlite rolls back on
            // drop), so the connection is still sound: keep serving.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn).map_err(Error::from)
        })
        .await
    }

    /// Runs the query `f` on a reader connection (the writer for an in-memory database). It
    /// sees the database as of the last commit: every write this store has returned from.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> DbResult<T> + Send + 'static) -> Result<T> {
        if self.readers.is_empty() {
            return self.call(move |conn| f(conn)).await;
        }
        let readers = self.readers.clone();
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        blocking("database", move || {
            // A free reader if there is one, else wait for the next in turn.
            let n = readers.len();
            let conn = (0..n)
                .find_map(|i| readers[(first + i) % n].try_lock().ok())
                .unwrap_or_else(|| readers[first % n].lock().unwrap_or_else(PoisonError::into_inner));
            f(&conn).map_err(Error::from)
        })
        .await
    }
}

/// A failure inside a database call: SQLite's own, or a domain error decided there.
#[derive(Debug)]
enum StoreError {
    Db(rusqlite::Error),
    Domain(Error),
}

type DbResult<T> = std::result::Result<T, StoreError>;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError::Domain(e)
    }
}

impl From<StoreError> for Error {
    /// SQLite failures (busy, I/O, corrupt rows) are storage errors and say nothing more;
    /// every other variant was decided by domain logic.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db(e) => Error::Storage(e.to_string()),
            StoreError::Domain(e) => e,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A domain value stored as text. Reading validates it again, so a row edited by hand into
/// something invalid fails as a storage error instead of entering the domain.
trait Stored: Sized {
    fn from_stored(s: &str) -> std::result::Result<Self, BoxError>;
}

macro_rules! stored_by_parse {
    ($($t:ty),*) => {$(
        impl Stored for $t {
            fn from_stored(s: &str) -> std::result::Result<Self, BoxError> {
                Ok(<$t>::parse(s)?)
            }
        }
    )*};
}
stored_by_parse!(DeviceType, ThingName, ThingGroupName, JobId, FirmwareVersion);

impl Stored for Sha256Digest {
    fn from_stored(s: &str) -> std::result::Result<Self, BoxError> {
        Ok(Sha256Digest::parse_hex(s)?)
    }
}

impl Stored for RolloutStatus {
    fn from_stored(s: &str) -> std::result::Result<Self, BoxError> {
        RolloutStatus::parse(s).ok_or_else(|| format!("unknown rollout status {s:?}").into())
    }
}

impl Stored for UpdateAction {
    fn from_stored(s: &str) -> std::result::Result<Self, BoxError> {
        [UpdateAction::Update, UpdateAction::Rollback]
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown update action {s:?}").into())
    }
}

impl Stored for DateTime<Utc> {
    fn from_stored(s: &str) -> std::result::Result<Self, BoxError> {
        Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
    }
}

/// How instants are stored: RFC 3339 in UTC with all nine fractional digits. Fixed width,
/// so text order is time order (`ORDER BY created_at` works) and values round-trip exactly.
fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn conversion_error(idx: usize, e: impl Into<BoxError>) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into())
}

/// Column `idx` as a domain value.
fn column<T: Stored>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    T::from_stored(&text).map_err(|e| conversion_error(idx, e))
}

/// Nullable column `idx` as a domain value.
fn optional_column<T: Stored>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| T::from_stored(&t).map_err(|e| conversion_error(idx, e))).transpose()
}

/// JSON column `idx`.
fn json_column<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| conversion_error(idx, e))
}

/// Nullable JSON column `idx`.
fn optional_json_column<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| conversion_error(idx, e))).transpose()
}

/// A value as JSON text for a JSON column.
fn to_json<T: Serialize>(what: &str, value: &T) -> DbResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Domain(Error::storage(format!("cannot encode {what}: {e}"))))
}

/// SQLite integers are signed 64-bit; counts and sizes beyond that cannot be stored.
fn to_i64(what: &'static str, n: u64) -> DbResult<i64> {
    i64::try_from(n).map_err(|_| StoreError::Domain(Error::invalid(what, n.to_string(), "is too large to store")))
}

/// A limit for SQL `LIMIT`; anything beyond `i64::MAX` means "all" anyway.
fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use ota_core::config::TypeConfig;
    use ota_core::policy::RolloutPolicy;
    use ota_core::ports::ConfigStore;

    use super::*;

    #[test]
    fn stored_timestamps_sort_as_text_in_time_order_and_round_trip() {
        let base = DateTime::from_timestamp(1_767_323_045, 0).unwrap();
        // Whole seconds, sub-microsecond steps and a year boundary: all the same width.
        let instants = [
            DateTime::from_timestamp(0, 0).unwrap(),
            base,
            base + Duration::nanoseconds(1),
            base + Duration::milliseconds(500),
            base + Duration::seconds(1),
            base + Duration::days(3650),
        ];
        let texts: Vec<String> = instants.iter().map(timestamp).collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1] && w[0].len() == w[1].len()), "{texts:?}");
        for (t, text) in instants.iter().zip(&texts) {
            assert_eq!(DateTime::<Utc>::from_stored(text).unwrap(), *t);
        }
    }

    #[tokio::test]
    async fn policies_round_trip_exactly_through_json() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut policy = RolloutPolicy::default();
        // serde_json's default float parser reads this back one ULP off (as it does ~9 % of
        // random doubles); the `float_roundtrip` feature makes it exact.
        policy.abort.failure_percent = 99.414_142_347_266_25;
        let config = TypeConfig {
            device_type: DeviceType::parse("pet_feeder").unwrap(),
            ota_enabled: true,
            policy: Some(policy),
            updated_by: "admin".into(),
            updated_at: DateTime::from_timestamp(1_767_323_045, 987_654_321).unwrap(),
        };
        store.put(config.clone()).await.unwrap();
        assert_eq!(store.get(&config.device_type).await.unwrap(), Some(config));
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        schema::migrate(&mut conn).expect("an up-to-date database needs no migration");
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, i64::try_from(schema::SCHEMA_VERSION).unwrap());
    }

    #[tokio::test]
    async fn queries_do_not_wait_for_the_writer_and_see_its_last_commit() {
        use ota_core::device::{Device, DeviceQuery};
        use ota_core::names::NamingConvention;
        use ota_core::ports::DeviceRegistry;

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ota.db")).unwrap();
        let ty = DeviceType::parse("pet_feeder").unwrap();
        let device = |n: u32| Device {
            firmware_version: Some(FirmwareVersion::new(1, 0, 0)),
            connected: true,
            last_seen: None,
            ..Device::new(
                ThingName::parse(&format!("pet_feeder-{n:02}")).unwrap(),
                ty.clone(),
                NamingConvention::default().thing_group_of(&ty),
            )
        };
        store.upsert(device(1)).await.unwrap();
        // The writer is busy (as in a long engine transaction): a query still answers, with
        // everything committed before.
        let writer = store.conn.clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _held = writer.lock().unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        locked_rx.recv().unwrap();
        let listed = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            DeviceRegistry::list(&store, &DeviceQuery::default()),
        )
        .await;
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        let listed = listed.expect("a query waited for the writer").unwrap();
        assert_eq!(listed.len(), 1);
        store.upsert(device(2)).await.unwrap();
        assert_eq!(
            DeviceRegistry::list(&store, &DeviceQuery::default()).await.unwrap().len(),
            2,
            "a reader sees the last commit"
        );
        // Readers cannot write, whatever a caller passes them.
        let err = store.read(|c| Ok(c.execute("DELETE FROM devices", [])?)).await.unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }
}
