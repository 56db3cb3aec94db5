//! The rollout lifecycle model (`ota_core::conformance::lifecycle_model`) on the local
//! backend: SQLite for the registry, config, rollouts and audit, a firmware folder for the
//! catalog. The same invariants as on the memory backend, over fewer steps (every step is a
//! few SQLite transactions and, on start, a re-hash of the image).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_lifecycle_keeps_its_promises_on_sqlite() {
    let steps: usize = std::env::var("OTA_MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_500);
    let mut total = std::collections::BTreeMap::new();
    for seed in [11, 12] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = ota_local::open_backend(dir.path()).expect("local backend opens");
        for (kind, n) in ota_core::conformance::lifecycle_model(backend, seed, steps).await {
            *total.entry(kind).or_insert(0usize) += n;
        }
    }
    println!("steps by kind: {total:?}");
    for kind in [
        "started",
        "already running",
        "conflict",
        "complete",
        "abort",
        "cancel",
        "policy race",
        "revert",
        "reverted chain",
    ] {
        assert!(total.get(kind).copied().unwrap_or(0) > 0, "no '{kind}' step ran: {total:?}");
    }
}
