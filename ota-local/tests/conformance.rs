//! The shared behaviour suite of every backend, run against the local one.

use std::sync::{Arc, Mutex};

use ota_local::open_backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_backend_passes_the_conformance_suite() {
    // Each behaviour gets its own data directory; they live until the suite ends.
    let dirs: Arc<Mutex<Vec<tempfile::TempDir>>> = Arc::default();
    let keep = dirs.clone();
    ota_core::conformance::run_all(move || {
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = open_backend(dir.path()).expect("local backend opens");
        keep.lock().expect("not poisoned").push(dir);
        async move { backend }
    })
    .await;
    assert!(!dirs.lock().unwrap().is_empty(), "the suite ran no behaviour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_backend_passes_the_device_management_suite() {
    let dirs: Arc<Mutex<Vec<tempfile::TempDir>>> = Arc::default();
    let keep = dirs.clone();
    ota_core::conformance::run_device_management(move || {
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = open_backend(dir.path()).expect("local backend opens");
        keep.lock().expect("not poisoned").push(dir);
        async move { backend }
    })
    .await;
    assert!(!dirs.lock().unwrap().is_empty(), "the suite ran no behaviour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_backend_passes_the_command_suite() {
    let dirs: Arc<Mutex<Vec<tempfile::TempDir>>> = Arc::default();
    let keep = dirs.clone();
    ota_core::conformance::run_commands(move || {
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = open_backend(dir.path()).expect("local backend opens");
        keep.lock().expect("not poisoned").push(dir);
        async move { backend }
    })
    .await;
    assert!(!dirs.lock().unwrap().is_empty(), "the suite ran no behaviour");
}
