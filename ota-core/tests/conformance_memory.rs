//! The in-memory backend runs the shared conformance suite.

#[tokio::test]
async fn memory_backend_passes_the_conformance_suite() {
    ota_core::conformance::run_all(|| async { ota_core::memory::backend() }).await;
    ota_core::conformance::run_device_management(|| async { ota_core::memory::backend() }).await;
    ota_core::conformance::run_commands(|| async { ota_core::memory::backend() }).await;
}
