//! The firmware catalog as a folder with exactly the bucket layout, so a catalog can be
//! copied to or from S3 unchanged:
//!
//! ```text
//! <root>/firmwares/v{semver}/{device_type}/{firmware.bin, firmware.sha256, metadata.json}
//! ```
//!
//! Every path is built from a validated [`ArtifactRef`] through [`ArtifactRef::key`], never
//! from raw strings, so nothing outside the layout can be read or written.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ota_core::catalog::{ArtifactRef, CATALOG_PREFIX, CatalogFile, parse_catalog_key};
use ota_core::ports::{ByteStream, FirmwareCatalog};
use ota_core::{Error, Result};
use tokio::io::AsyncReadExt;

use crate::blocking;

/// Size of the chunks [`FirmwareCatalog::open`] yields: memory stays fixed whatever the image size.
const CHUNK: usize = 64 * 1024;

/// Prefix of the folders a publish writes into before its atomic rename. It never parses as
/// a version folder (those start with `v`), so listings ignore it.
const STAGING_PREFIX: &str = ".staging-";

/// A firmware catalog in a local folder; see the module docs for the layout.
#[derive(Debug, Clone)]
pub struct FolderCatalog {
    root: PathBuf,
}

impl FolderCatalog {
    /// A catalog whose files live under `<root>/firmwares/`. Nothing is created until the
    /// first publish; a missing folder is an empty catalog.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FolderCatalog { root: root.into() }
    }

    /// The folder that holds `firmwares/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn catalog_dir(&self) -> PathBuf {
        self.root.join(CATALOG_PREFIX)
    }

    /// Maps a catalog key (`firmwares/v2.0.0/pet_feeder/...`) onto the folder, segment by
    /// segment, so the layout on disk is the one `ota-core` defines for buckets.
    fn path_of(&self, key: &str) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(key.split('/'));
        path
    }

    fn artifact_dir(&self, artifact: &ArtifactRef) -> PathBuf {
        self.path_of(&artifact.folder())
    }

    fn file_path(&self, artifact: &ArtifactRef, file: CatalogFile) -> PathBuf {
        self.path_of(&artifact.key(file))
    }

    async fn read(&self, artifact: &ArtifactRef, file: CatalogFile) -> Result<Vec<u8>> {
        tokio::fs::read(self.file_path(artifact, file)).await.map_err(|e| file_error(e, artifact, file))
    }
}

/// The one place file errors become domain errors: a missing file names the file and its
/// key; anything else is a storage failure.
fn file_error(e: io::Error, artifact: &ArtifactRef, file: CatalogFile) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::not_found(file.file_name(), artifact.key(file))
    } else {
        Error::storage(format!("cannot read {}: {e}", artifact.key(file)))
    }
}

fn storage_io(action: &str, path: &Path, e: io::Error) -> Error {
    Error::storage(format!("cannot {action} {}: {e}", path.display()))
}

/// The entries of a folder as UTF-8 names; a missing folder has none. Names that are not
/// UTF-8 cannot be part of the layout and are skipped.
fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(storage_io("list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| storage_io("list", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Whether a folder exists and holds anything at all (a file, or a stray folder).
fn is_non_empty_dir(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(false),
        Err(e) => Err(storage_io("list", dir, e)),
    }
}

impl FolderCatalog {
    fn list_artifacts(&self) -> Result<Vec<ArtifactRef>> {
        let catalog = self.catalog_dir();
        let mut found = Vec::new();
        for version in dir_names(&catalog)? {
            for device_type in dir_names(&catalog.join(&version))? {
                // Parsing a key of the layout validates both names at once, exactly as the
                // bucket backend does; `latest`, `2.0.0`, `V2.0.0` or `Bad Name` give None.
                let key = format!("{CATALOG_PREFIX}/{version}/{device_type}/{}", CatalogFile::Image.file_name());
                let Some((artifact, _)) = parse_catalog_key(&key) else {
                    continue;
                };
                if CatalogFile::ALL.into_iter().any(|f| self.file_path(&artifact, f).is_file()) {
                    found.push(artifact);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    fn publish_blocking(&self, artifact: &ArtifactRef, files: [(CatalogFile, &[u8]); 3]) -> Result<()> {
        let target = self.artifact_dir(artifact);
        // Early answer for the common case; the rename below is what decides a race.
        if is_non_empty_dir(&target)? {
            return Err(ota_core::Error::published_is_immutable(artifact));
        }
        let catalog = self.catalog_dir();
        fs::create_dir_all(&catalog).map_err(|e| storage_io("create", &catalog, e))?;
        let staging = create_staging_dir(&catalog)?;
        let result = self.stage_and_rename(artifact, &staging, &target, files);
        if result.is_err() {
            // Best effort: a leftover staging folder is ignored by listings, only wasted space.
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    fn stage_and_rename(
        &self,
        artifact: &ArtifactRef,
        staging: &Path,
        target: &Path,
        files: [(CatalogFile, &[u8]); 3],
    ) -> Result<()> {
        for (file, content) in files {
            let path = staging.join(file.file_name());
            let mut f = fs::File::create_new(&path).map_err(|e| storage_io("create", &path, e))?;
            f.write_all(content).map_err(|e| storage_io("write", &path, e))?;
            // Flushed before the rename, so a crash never leaves a renamed artifact whose
            // files are still empty on disk.
            f.sync_all().map_err(|e| storage_io("sync", &path, e))?;
        }
        let version_dir = target.parent().unwrap_or(target);
        fs::create_dir_all(version_dir).map_err(|e| storage_io("create", version_dir, e))?;
        // rename(2) of a folder is atomic and fails when the target holds anything, so of two
        // concurrent publishes exactly one wins, and readers see all three files or none.
        if let Err(e) = fs::rename(staging, target) {
            return Err(if is_non_empty_dir(target)? {
                ota_core::Error::published_is_immutable(artifact)
            } else {
                storage_io("publish into", target, e)
            });
        }
        // Persist the new folder entry; not every platform can sync a directory, and the
        // artifact is already visible, so a failure here is not worth failing the publish.
        if let Ok(dir) = fs::File::open(version_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Creates a fresh `firmwares/.staging-*` folder. `create_dir` fails on an existing name, so
/// two publishers never share one, even across processes.
fn create_staging_dir(catalog: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut last_error = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = catalog.join(format!("{STAGING_PREFIX}{}-{nanos}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(storage_io("create", &dir, e)),
        }
    }
    let e = last_error.unwrap_or_else(|| io::Error::other("no free name"));
    Err(storage_io("create a staging folder in", catalog, e))
}

#[async_trait]
impl FirmwareCatalog for FolderCatalog {
    async fn artifacts(&self) -> Result<Vec<ArtifactRef>> {
        let this = self.clone();
        blocking("catalog", move || this.list_artifacts()).await
    }

    async fn read_sha256(&self, artifact: &ArtifactRef) -> Result<String> {
        let bytes = self.read(artifact, CatalogFile::Sha256).await?;
        String::from_utf8(bytes).map_err(|_| Error::Integrity {
            artifact: artifact.to_string(),
            detail: format!("{} is not text", CatalogFile::Sha256.file_name()),
        })
    }

    async fn read_metadata(&self, artifact: &ArtifactRef) -> Result<Vec<u8>> {
        self.read(artifact, CatalogFile::Metadata).await
    }

    async fn image_fingerprint(&self, artifact: &ArtifactRef) -> Result<Option<String>> {
        let path = self.file_path(artifact, CatalogFile::Image);
        let meta = tokio::fs::metadata(&path).await.map_err(|e| file_error(e, artifact, CatalogFile::Image))?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        Ok(modified.map(|m| format!("{}/{}", meta.len(), m.as_nanos())))
    }

    async fn open(&self, artifact: &ArtifactRef) -> Result<ByteStream> {
        let file = tokio::fs::File::open(self.file_path(artifact, CatalogFile::Image))
            .await
            .map_err(|e| file_error(e, artifact, CatalogFile::Image))?;
        let artifact = artifact.clone();
        // State: the open file, or None once the end or an error was reached.
        let stream = futures::stream::unfold(Some(file), move |state| {
            let artifact = artifact.clone();
            async move {
                let mut file = state?;
                match read_chunk(&mut file).await {
                    Ok(chunk) if chunk.is_empty() => None,
                    Ok(chunk) => Some((Ok(chunk), Some(file))),
                    Err(e) => Some((Err(file_error(e, &artifact, CatalogFile::Image)), None)),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn read_signature(&self, artifact: &ArtifactRef) -> Result<Option<Vec<u8>>> {
        match self.read(artifact, CatalogFile::Signature).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::NotFound { .. }) if self.artifact_dir(artifact).is_dir() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write_signature(&self, artifact: &ArtifactRef, signature: Vec<u8>, metadata: Vec<u8>) -> Result<()> {
        let this = self.clone();
        let artifact = artifact.clone();
        blocking("catalog", move || {
            if !this.artifact_dir(&artifact).is_dir() {
                return Err(Error::not_found("artifact", artifact.folder()));
            }
            // Each file is written whole beside its target and renamed over it, so a reader
            // sees the old file or the new one, never a torn one.
            for (file, content) in [(CatalogFile::Signature, &signature), (CatalogFile::Metadata, &metadata)] {
                let target = this.file_path(&artifact, file);
                let tmp = target.with_extension("tmp-sign");
                let mut f = fs::File::create(&tmp).map_err(|e| storage_io("create", &tmp, e))?;
                f.write_all(content).map_err(|e| storage_io("write", &tmp, e))?;
                f.sync_all().map_err(|e| storage_io("sync", &tmp, e))?;
                fs::rename(&tmp, &target).map_err(|e| storage_io("rename into", &target, e))?;
            }
            Ok(())
        })
        .await
    }

    async fn publish(
        &self,
        artifact: &ArtifactRef,
        image: Vec<u8>,
        sha256_file: String,
        metadata: Vec<u8>,
    ) -> Result<()> {
        let this = self.clone();
        let artifact = artifact.clone();
        blocking("catalog", move || {
            let files = [
                (CatalogFile::Image, image.as_slice()),
                (CatalogFile::Sha256, sha256_file.as_bytes()),
                (CatalogFile::Metadata, metadata.as_slice()),
            ];
            this.publish_blocking(&artifact, files)
        })
        .await
    }
}

/// Fills one chunk of up to [`CHUNK`] bytes, so every chunk but the last is full; empty at
/// the end of the file.
async fn read_chunk(file: &mut tokio::fs::File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    while filled < CHUNK {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(buf)
}
