//! The rollout lifecycle model (see `ota_core::conformance::lifecycle_model`) on the memory
//! backend: at least 10,000 seeded random steps per run. `OTA_MODEL_SEED` replays one seed,
//! `OTA_MODEL_STEPS` changes the length.

#[tokio::test]
async fn the_rollout_lifecycle_keeps_its_promises_over_random_sequences() {
    let steps: usize = std::env::var("OTA_MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(2_500);
    let seeds: Vec<u64> = match std::env::var("OTA_MODEL_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => vec![1, 2, 3, 4],
    };
    let mut total = std::collections::BTreeMap::new();
    for seed in seeds {
        for (kind, n) in ota_core::conformance::lifecycle_model(ota_core::memory::backend(), seed, steps).await {
            *total.entry(kind).or_insert(0usize) += n;
        }
    }
    println!("steps by kind: {total:?}");
    // The run must have exercised what it checks, not idled.
    for kind in
        ["started", "already running", "conflict", "complete", "abort", "cancel", "policy race", "repeat", "revert"]
    {
        assert!(total.get(kind).copied().unwrap_or(0) > 0, "no '{kind}' step ran: {total:?}");
    }
}
