//! The shared behaviour suite of every backend, run against the AWS backend on moto.

mod moto;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_backend_passes_the_conformance_suite_on_moto() {
    let Some(server) = moto::start() else { return };
    let server = Arc::new(server);
    let runs = Arc::new(AtomicUsize::new(0));
    let (s, n) = (server.clone(), runs.clone());
    ota_core::conformance::run_all(move || {
        let (server, runs) = (s.clone(), n.clone());
        async move {
            // One fresh, empty deployment per behaviour.
            server.reset().await;
            let i = runs.fetch_add(1, Ordering::SeqCst);
            let settings = server.settings(&format!("ota{i}"));
            let clients = server.clients().await;
            ota_aws::provision::create_resources(&clients, &settings).await.expect("bucket and tables");
            ota_aws::backend(&clients, &settings, Some(moto::ACCOUNT.into()))
        }
    })
    .await;
    assert!(runs.load(Ordering::SeqCst) >= 15, "the suite ran every behaviour");
}

/// The device management behaviours (attributes, health, state, telemetry, the `config`
/// named shadow, telemetry history on DynamoDB) against the AWS backend on moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_backend_passes_the_device_management_suite_on_moto() {
    let Some(server) = moto::start() else { return };
    let server = Arc::new(server);
    let runs = Arc::new(AtomicUsize::new(0));
    let (s, n) = (server.clone(), runs.clone());
    ota_core::conformance::run_device_management(move || {
        let (server, runs) = (s.clone(), n.clone());
        async move {
            server.reset().await;
            let i = runs.fetch_add(1, Ordering::SeqCst);
            let settings = server.settings(&format!("dm{i}"));
            let clients = server.clients().await;
            ota_aws::provision::create_resources(&clients, &settings).await.expect("bucket and tables");
            ota_aws::backend(&clients, &settings, Some(moto::ACCOUNT.into()))
        }
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 6, "the suite ran every behaviour");
}
