//! SQLite-specific behaviour the generic conformance suite cannot see: persistence across
//! reopening, WAL, several connections on one file, the database-level backstops, and rows
//! edited outside ota.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{at, audit_entry, config, device, job, rollout, thing, ty, version};
use ota_core::Error;
use ota_core::audit::AuditOutcome;
use ota_core::device::DeviceQuery;
use ota_core::ports::{AuditLog, ConfigStore, DeviceRegistry, RolloutStore};
use ota_core::rollout::{RolloutQuery, RolloutStatus};
use ota_core::version::VersionFilter;
use ota_local::SqliteStore;

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[tokio::test]
async fn reopening_the_file_keeps_registry_config_rollouts_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let devices = vec![device("pet_feeder", 1, Some("1.0.0")), device("pet_feeder", 2, None)];
    let finished;
    {
        let store = SqliteStore::open(&path).unwrap();
        store.upsert_many(devices.clone()).await.unwrap();
        ConfigStore::put(&store, config("pet_feeder", true)).await.unwrap();
        ConfigStore::put(&store, config("vision_ai_face_detector", false)).await.unwrap();
        store.create(&rollout("r1", "pet_feeder", RolloutStatus::InProgress, at(10))).await.unwrap();
        finished = store.finish(&job("r1"), RolloutStatus::Canceled, "operator stopped it", at(20)).await.unwrap();
        store.create(&rollout("r2", "pet_feeder", RolloutStatus::InProgress, at(30))).await.unwrap();
        assert_eq!(store.append(audit_entry("plan", AuditOutcome::Ok("12 devices".into()))).await.unwrap(), 1);
        assert_eq!(
            store.append(audit_entry("start", AuditOutcome::Refused("OTA is disabled".into()))).await.unwrap(),
            2
        );
    }

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(DeviceRegistry::list(&store, &DeviceQuery::default()).await.unwrap(), devices);
    let configs = ConfigStore::list(&store).await.unwrap();
    assert_eq!(configs, [config("pet_feeder", true), config("vision_ai_face_detector", false)]);
    assert_eq!(RolloutStore::get(&store, &job("r1")).await.unwrap(), finished);
    assert_eq!(finished.status_reason.as_deref(), Some("operator stopped it"));
    let active = RolloutStore::list(&store, &RolloutQuery { active_only: true, ..Default::default() }).await.unwrap();
    assert_eq!(active, [rollout("r2", "pet_feeder", RolloutStatus::InProgress, at(30))]);
    // The active rollout still holds its type after a restart.
    let err = store.create(&rollout("r3", "pet_feeder", RolloutStatus::InProgress, at(40))).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("rollout r2 is already active for pet_feeder")), "{err}");

    let recent = store.recent(10).await.unwrap();
    assert_eq!(recent.iter().map(|e| (e.seq, e.operation.as_str())).collect::<Vec<_>>(), [(2, "start"), (1, "plan")]);
    let mut expected = audit_entry("plan", AuditOutcome::Ok("12 devices".into()));
    expected.seq = 1;
    assert_eq!(recent[1], expected);
    assert_eq!(
        store.append(audit_entry("cancel", AuditOutcome::Ok(String::new()))).await.unwrap(),
        3,
        "numbering goes on"
    );
}

#[tokio::test]
async fn the_file_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let _store = SqliteStore::open(&path).unwrap();
    // WAL is a property of the file, so a fresh connection that asks for nothing sees it.
    let mode: String = raw(&path).query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_write_concurrently_without_lock_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    // Two stores are two connections, as `ota serve` and a CLI would be.
    let stores = [Arc::new(SqliteStore::open(&path).unwrap()), Arc::new(SqliteStore::open(&path).unwrap())];
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store.append(audit_entry(&format!("op{i}"), AuditOutcome::Ok(String::new()))).await
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>(), "every append got its own number");
    assert_eq!(stores[0].recent(100).await.unwrap().len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_creates_from_two_connections_leave_one_active_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let stores = [Arc::new(SqliteStore::open(&path).unwrap()), Arc::new(SqliteStore::open(&path).unwrap())];
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                let id = format!("r{i}");
                (id.clone(), store.create(&rollout(&id, "pet_feeder", RolloutStatus::InProgress, at(i as i64))).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut conflicts = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (id, Ok(())) => winners.push(id),
            (_, Err(Error::Conflict(m))) => conflicts.push(m),
            (_, Err(e)) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(conflicts.len(), 11);
    let expected =
        format!("rollout {} is already active for pet_feeder; cancel it or wait for it to finish", winners[0]);
    assert!(conflicts.iter().all(|m| *m == expected), "{conflicts:?}");
    let all = RolloutStore::list(&*stores[1], &RolloutQuery::default()).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(), winners, "losers stored nothing");
}

#[tokio::test]
async fn the_database_itself_refuses_a_second_active_rollout_for_a_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let store = SqliteStore::open(&path).unwrap();
    store.create(&rollout("r1", "pet_feeder", RolloutStatus::InProgress, at(0))).await.unwrap();
    // A writer that bypasses `create` (a future bug, a hand-made SQL fix) copies r1's row.
    let copy = |id: &str, status: &str| {
        raw(&path).execute(
            "INSERT INTO rollouts (id, plan_id, action, device_type, thing_group, version, sha256, size, things,
                 fleet_query, policy, status, status_reason, created_by, created_at, updated_at)
             SELECT ?1, plan_id, action, device_type, thing_group, version, sha256, size, things,
                 fleet_query, policy, ?2, status_reason, created_by, created_at, updated_at
             FROM rollouts WHERE id = 'r1'",
            [id, status],
        )
    };
    let err = copy("r2", "IN_PROGRESS").unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    copy("r3", "COMPLETED").expect("ended rollouts of the type are fine");
    let active = RolloutStore::list(&store, &RolloutQuery { active_only: true, ..Default::default() }).await.unwrap();
    assert_eq!(active.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r1"]);
}

#[tokio::test]
async fn the_audit_trail_cannot_be_rewritten_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let store = SqliteStore::open(&path).unwrap();
    store.append(audit_entry("start", AuditOutcome::Ok("started r1".into()))).await.unwrap();
    let conn = raw(&path);
    let update = conn.execute("UPDATE audit SET subject = 'someone else'", []).unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = conn.execute("DELETE FROM audit", []).unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
    assert_eq!(store.recent(5).await.unwrap()[0].subject, "operator@example.com");
}

#[tokio::test]
async fn a_bulk_load_is_queried_by_type_version_and_connection() {
    let store = SqliteStore::open_in_memory().unwrap();
    // The demo world's shape: several types, mixed versions, half of them connected.
    let mut fleet = Vec::new();
    for n in 1..=52 {
        fleet.push(device("pet_feeder", n, Some(if n % 4 == 0 { "2.0.0" } else { "1.1.0" })));
        fleet.push(device("vision_ai_face_detector", n, (n % 13 != 0).then_some("1.0.0")));
    }
    fleet.reverse(); // insertion order must not leak into results
    store.upsert_many(fleet).await.unwrap();
    assert_eq!(DeviceRegistry::list(&store, &DeviceQuery::default()).await.unwrap().len(), 104);
    assert_eq!(store.device_types().await.unwrap(), [ty("pet_feeder"), ty("vision_ai_face_detector")]);

    let on_1x = DeviceQuery {
        device_type: Some(ty("pet_feeder")),
        version: Some(VersionFilter::parse("1.x").unwrap()),
        connected: Some(true),
        ..Default::default()
    };
    let found = DeviceRegistry::list(&store, &on_1x).await.unwrap();
    let names: Vec<String> = found.iter().map(|d| d.thing.to_string()).collect();
    // Even numbers are connected; multiples of 4 already run 2.0.0.
    let expected: Vec<String> =
        (1..=52).filter(|n| n % 2 == 0 && n % 4 != 0).map(|n| format!("pet_feeder-{n:02}")).collect();
    assert_eq!(names, expected);

    // Devices that never reported a version never match a version filter.
    let below = DeviceQuery { version: Some(VersionFilter::parse("<2.0.0").unwrap()), ..Default::default() };
    let found = DeviceRegistry::list(&store, &below).await.unwrap();
    assert_eq!(found.len(), 39 + 48);
    assert!(found.iter().all(|d| { d.firmware_version.as_ref().is_some_and(|v| *v < version("2.0.0")) }));

    // A later upsert (a shadow report) replaces the record instead of adding one.
    let mut reported = device("pet_feeder", 2, Some("2.0.0"));
    reported.connected = false;
    store.upsert(reported.clone()).await.unwrap();
    assert_eq!(DeviceRegistry::get(&store, &thing("pet_feeder-02")).await.unwrap(), Some(reported));
    assert_eq!(DeviceRegistry::list(&store, &DeviceQuery::default()).await.unwrap().len(), 104);
}

#[tokio::test]
async fn a_file_from_a_newer_ota_is_refused_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    drop(SqliteStore::open(&path).unwrap());
    raw(&path).pragma_update(None, "user_version", 999).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(&err, Error::Storage(m) if m.contains("999") && m.contains("upgrade ota")), "{err}");
    let v: i64 = raw(&path).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 999);
}

#[tokio::test]
async fn a_row_edited_into_an_invalid_name_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.db");
    let store = SqliteStore::open(&path).unwrap();
    store.upsert(device("pet_feeder", 1, Some("1.0.0"))).await.unwrap();
    raw(&path).execute("UPDATE devices SET device_type = '../etc'", []).unwrap();
    let err = DeviceRegistry::list(&store, &DeviceQuery::default()).await.unwrap_err();
    assert!(matches!(&err, Error::Storage(m) if m.contains("../etc")), "{err}");
}
