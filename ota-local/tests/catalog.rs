//! Folder-specific behaviour of the catalog that the generic conformance suite cannot see:
//! what lies on disk, stray folders, staging folders and races between publishers.

mod common;

use std::sync::Arc;

use common::{artifact, tree, ty, version};
use futures::TryStreamExt;
use ota_core::Error;
use ota_core::ports::FirmwareCatalog;
use ota_local::FolderCatalog;

fn files_of(n: usize) -> (Vec<u8>, String, Vec<u8>) {
    (format!("image {n}").into_bytes(), format!("sha of {n}\n"), format!("{{\"n\":{n}}}").into_bytes())
}

async fn publish(catalog: &FolderCatalog, device_type: &str, v: &str, n: usize) -> ota_core::Result<()> {
    let (image, sha, meta) = files_of(n);
    catalog.publish(&artifact(device_type, v), image, sha, meta).await
}

fn write(root: &std::path::Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[tokio::test]
async fn publish_writes_exactly_the_bucket_layout() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = FolderCatalog::new(dir.path());
    publish(&catalog, "pet_feeder", "2.0.0", 1).await.unwrap();
    publish(&catalog, "vision_ai_face_detector", "2.0.0", 2).await.unwrap();
    publish(&catalog, "pet_feeder", "1.0.0-rc.1", 3).await.unwrap();

    assert_eq!(
        tree(dir.path()),
        [
            "firmwares/",
            "firmwares/v1.0.0-rc.1/",
            "firmwares/v1.0.0-rc.1/pet_feeder/",
            "firmwares/v1.0.0-rc.1/pet_feeder/firmware.bin",
            "firmwares/v1.0.0-rc.1/pet_feeder/firmware.sha256",
            "firmwares/v1.0.0-rc.1/pet_feeder/metadata.json",
            "firmwares/v2.0.0/",
            "firmwares/v2.0.0/pet_feeder/",
            "firmwares/v2.0.0/pet_feeder/firmware.bin",
            "firmwares/v2.0.0/pet_feeder/firmware.sha256",
            "firmwares/v2.0.0/pet_feeder/metadata.json",
            "firmwares/v2.0.0/vision_ai_face_detector/",
            "firmwares/v2.0.0/vision_ai_face_detector/firmware.bin",
            "firmwares/v2.0.0/vision_ai_face_detector/firmware.sha256",
            "firmwares/v2.0.0/vision_ai_face_detector/metadata.json",
        ],
        "the folder must hold the bucket layout and nothing else (no staging folders)"
    );
    let read = |rel: &str| std::fs::read_to_string(dir.path().join(rel)).unwrap();
    assert_eq!(read("firmwares/v2.0.0/vision_ai_face_detector/firmware.bin"), "image 2");
    assert_eq!(read("firmwares/v2.0.0/vision_ai_face_detector/firmware.sha256"), "sha of 2\n");
    assert_eq!(read("firmwares/v2.0.0/vision_ai_face_detector/metadata.json"), "{\"n\":2}");
}

#[tokio::test]
async fn a_catalog_copied_from_a_bucket_is_read_as_is() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "firmwares/v1.0.0/pet_feeder/firmware.bin", "old image");
    write(dir.path(), "firmwares/v1.0.0/pet_feeder/firmware.sha256", "abc  firmware.bin\n");
    write(dir.path(), "firmwares/v1.0.0/pet_feeder/metadata.json", "{}");
    let catalog = FolderCatalog::new(dir.path());
    assert_eq!(catalog.artifacts().await.unwrap(), [artifact("pet_feeder", "1.0.0")]);
    assert_eq!(catalog.read_sha256(&artifact("pet_feeder", "1.0.0")).await.unwrap(), "abc  firmware.bin\n");
    assert_eq!(catalog.read_metadata(&artifact("pet_feeder", "1.0.0")).await.unwrap(), b"{}");
}

#[tokio::test]
async fn stray_folders_and_files_never_become_types_or_versions() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = FolderCatalog::new(dir.path());
    publish(&catalog, "pet_feeder", "1.0.0", 1).await.unwrap();
    for stray in [
        "firmwares/latest/pet_feeder/firmware.bin",
        "firmwares/v2.0/x/firmware.bin",
        "firmwares/v1.0.0/Bad Name/firmware.bin",
        "firmwares/2.0.0/pet_feeder/firmware.bin",
        "firmwares/V2.0.0/pet_feeder/firmware.bin",
        "firmwares/v02.0.0/pet_feeder/firmware.bin",
        "firmwares/.staging-123-4-5/firmware.bin",
        "firmwares/v3.0.0/pet_feeder/readme.txt",
        "firmwares/v3.0.0/pet_feeder/nested/firmware.bin",
        "firmwares/v3.0.0/notes.txt",
        "firmwares/README.md",
        "other/v4.0.0/pet_feeder/firmware.bin",
    ] {
        write(dir.path(), stray, "stray");
    }
    assert_eq!(catalog.artifacts().await.unwrap(), [artifact("pet_feeder", "1.0.0")]);
    assert_eq!(catalog.versions(&ty("pet_feeder")).await.unwrap(), [version("1.0.0")]);
    assert!(catalog.versions(&ty("x")).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_folder_missing_files_is_listed_and_reads_name_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "firmwares/v1.0.0/pet_feeder/firmware.bin", "image only");
    let catalog = FolderCatalog::new(dir.path());
    let a = artifact("pet_feeder", "1.0.0");
    assert_eq!(catalog.artifacts().await.unwrap(), std::slice::from_ref(&a));
    let Err(Error::NotFound { what, name, .. }) = catalog.read_sha256(&a).await else { panic!("expected NotFound") };
    assert_eq!((what, name.as_str()), ("firmware.sha256", "firmwares/v1.0.0/pet_feeder/firmware.sha256"));
    let Err(Error::NotFound { what, .. }) = catalog.read_metadata(&a).await else { panic!("expected NotFound") };
    assert_eq!(what, "metadata.json");
    // An artifact with no folder at all, and an empty catalog folder, read the same way.
    let Err(Error::NotFound { what, .. }) = catalog.open(&artifact("pet_feeder", "9.9.9")).await.map(|_| ()) else {
        panic!("expected NotFound")
    };
    assert_eq!(what, "firmware.bin");
    assert!(FolderCatalog::new(dir.path().join("nowhere")).artifacts().await.unwrap().is_empty());
}

#[tokio::test]
async fn open_streams_the_image_in_64_kib_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = FolderCatalog::new(dir.path());
    let image: Vec<u8> = (0..3 * 65_536 + 5).map(|i| (i % 251) as u8).collect();
    let a = artifact("pet_feeder", "2.0.0");
    catalog.publish(&a, image.clone(), "sha\n".into(), b"{}".to_vec()).await.unwrap();
    let chunks: Vec<Vec<u8>> = catalog.open(&a).await.unwrap().try_collect().await.unwrap();
    assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [65_536, 65_536, 65_536, 5]);
    assert_eq!(chunks.concat(), image);
}

#[tokio::test]
async fn publish_over_an_artifact_keeps_its_files_and_leaves_no_staging_folder() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = FolderCatalog::new(dir.path());
    publish(&catalog, "pet_feeder", "2.0.0", 1).await.unwrap();
    let before = tree(dir.path());
    let err = publish(&catalog, "pet_feeder", "2.0.0", 2).await.unwrap_err();
    assert_eq!(
        err,
        Error::AlreadyExists {
            what: "firmware",
            name: "pet_feeder 2.0.0".into(),
            hint: "published versions are immutable; publish a new version".into(),
        }
    );
    assert_eq!(tree(dir.path()), before);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("firmwares/v2.0.0/pet_feeder/firmware.bin")).unwrap(),
        "image 1"
    );
}

#[tokio::test]
async fn a_folder_holding_any_file_is_published_already_but_an_empty_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = FolderCatalog::new(dir.path());
    // A half-copied artifact (only its metadata) must not be completed by a publish.
    write(dir.path(), "firmwares/v2.0.0/pet_feeder/metadata.json", "hand-written");
    assert!(matches!(publish(&catalog, "pet_feeder", "2.0.0", 1).await, Err(Error::AlreadyExists { .. })));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("firmwares/v2.0.0/pet_feeder/metadata.json")).unwrap(),
        "hand-written"
    );
    assert!(!dir.path().join("firmwares/v2.0.0/pet_feeder/firmware.bin").exists());
    // An empty folder (say, made by hand ahead of time) holds no version yet.
    std::fs::create_dir_all(dir.path().join("firmwares/v3.0.0/pet_feeder")).unwrap();
    publish(&catalog, "pet_feeder", "3.0.0", 3).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("firmwares/v3.0.0/pet_feeder/firmware.bin")).unwrap(),
        "image 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_publishes_of_one_artifact_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    // Separate catalog values on one folder behave like separate processes.
    let catalogs: Vec<Arc<FolderCatalog>> = (0..16).map(|_| Arc::new(FolderCatalog::new(dir.path()))).collect();
    let tasks: Vec<_> = catalogs
        .into_iter()
        .enumerate()
        .map(|(n, c)| tokio::spawn(async move { (n, publish(&c, "pet_feeder", "2.0.0", n).await) }))
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (n, Ok(())) => winners.push(n),
            (_, Err(Error::AlreadyExists { what: "firmware", .. })) => {}
            (_, Err(e)) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    // All three files come from the winner: no mix of two publishes.
    let (image, sha, meta) = files_of(winners[0]);
    let base = dir.path().join("firmwares/v2.0.0/pet_feeder");
    assert_eq!(std::fs::read(base.join("firmware.bin")).unwrap(), image);
    assert_eq!(std::fs::read_to_string(base.join("firmware.sha256")).unwrap(), sha);
    assert_eq!(std::fs::read(base.join("metadata.json")).unwrap(), meta);
    let staging: Vec<String> = tree(dir.path()).into_iter().filter(|p| p.contains(".staging-")).collect();
    assert!(staging.is_empty(), "leftover staging folders: {staging:?}");
}
