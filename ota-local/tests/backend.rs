//! `open_backend`: one data directory holds the catalog folder and the database.

mod common;

use common::{artifact, device, thing};
use ota_local::open_backend;

#[tokio::test]
async fn a_data_directory_holds_the_catalog_and_the_database_across_restarts() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("not/yet/there");
    let a = artifact("pet_feeder", "2.0.0");
    {
        let backend = open_backend(&data_dir).unwrap();
        backend.catalog.publish(&a, b"image".to_vec(), "sha\n".into(), b"{}".to_vec()).await.unwrap();
        backend.registry.upsert(device("pet_feeder", 1, Some("1.0.0"))).await.unwrap();
    }
    assert!(data_dir.join("ota.db").is_file());
    assert_eq!(std::fs::read(data_dir.join("firmwares/v2.0.0/pet_feeder/firmware.bin")).unwrap(), b"image");

    let backend = open_backend(&data_dir).unwrap();
    assert_eq!(backend.catalog.artifacts().await.unwrap(), [a]);
    assert_eq!(
        backend.registry.get(&thing("pet_feeder-01")).await.unwrap(),
        Some(device("pet_feeder", 1, Some("1.0.0")))
    );
}

#[test]
fn a_data_directory_that_is_a_file_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = open_backend(file.path()).unwrap_err();
    assert!(matches!(&err, ota_core::Error::Storage(m) if m.contains("data directory")), "{err}");
}
