//! Images served from memory: each image a download server is asked for is read once into a
//! shared buffer, and every response is a slice of it (no read, no copy, no trip to the
//! blocking pool per chunk). The buffers are bounded in total by an LRU limit; an image
//! larger than a quarter of the limit is streamed from its file instead, so one large image
//! cannot push every other one out.
//!
//! Each request checks the file's identity (length, modification time, inode) with one
//! `stat`: an image replaced or rewritten in the catalog folder is read again, never served
//! stale. What a response holds stays valid even if its buffer is evicted meanwhile (buffers
//! are reference-counted), so peak memory is the limit plus the images evicted while a
//! response still sends them.

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::body::Bytes;
use ota_core::catalog::parse_sha256_file;

/// What the server answers a download with: the image's bytes from memory, or its open file.
pub(super) struct OpenImage {
    pub len: u64,
    /// `"<sha256 hex>"` from `firmware.sha256`, when it is readable.
    pub etag: Option<String>,
    pub source: Source,
}

pub(super) enum Source {
    Memory(Bytes),
    /// Shared by concurrent responses of the `sendfile` path, which reads at explicit offsets
    /// and never moves the file's position; the hyper path gets a file of its own.
    File(Arc<std::fs::File>),
}

/// Which version of a file a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        FileId { len: meta.len(), modified: meta.modified().ok(), inode }
    }
}

struct Entry {
    id: FileId,
    bytes: Bytes,
    etag: Option<String>,
    used: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<PathBuf, Entry>,
    total: u64,
    clock: u64,
}

/// The images of one catalog folder in memory, at most `limit` bytes of them, and open files
/// of the images the `sendfile` path sends, at most [`MAX_OPEN_FILES`] of them.
pub(super) struct ImageCache {
    limit: u64,
    state: Mutex<State>,
    files: Mutex<HashMap<PathBuf, OpenFile>>,
}

/// Open image files kept for the `sendfile` path (a file descriptor each, no memory).
const MAX_OPEN_FILES: usize = 64;

struct OpenFile {
    id: FileId,
    file: Arc<std::fs::File>,
    etag: Option<String>,
}

impl ImageCache {
    pub(super) fn new(limit: u64) -> ImageCache {
        ImageCache { limit, state: Mutex::new(State::default()), files: Mutex::new(HashMap::new()) }
    }

    /// Bytes held now (for tests and reports).
    #[cfg(test)]
    fn held(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).total
    }

    /// The image at `image_path` (with its ETag from `sha_path`): from memory when the buffer
    /// still matches the file, else read (or opened, when too large to keep).
    pub(super) async fn open(&self, image_path: PathBuf, sha_path: PathBuf) -> io::Result<OpenImage> {
        // One stat of a file the kernel has cached, as nginx does in its event loop.
        let meta = std::fs::metadata(&image_path)?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
        }
        let id = FileId::of(&meta);
        if let Some(image) = self.hit(&image_path, id) {
            return Ok(image);
        }
        let keep = meta.len() <= self.limit / 4;
        let path = image_path.clone();
        let (id, image) = tokio::task::spawn_blocking(move || load(&path, &sha_path, keep))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        if let Source::Memory(bytes) = &image.source {
            self.insert(image_path, id, bytes.clone(), image.etag.clone());
        }
        Ok(image)
    }

    /// The image at `image_path` as its open file, whatever its size: for a transport that
    /// sends files itself (`sendfile`), which needs no buffer at all.
    /// The file stays open between requests while its identity holds (checked by one
    /// `stat`, as for buffers), so a download costs no open and no trip to the blocking pool.
    pub(super) async fn open_file(&self, image_path: PathBuf, sha_path: PathBuf) -> io::Result<OpenImage> {
        let meta = std::fs::metadata(&image_path)?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
        }
        let id = FileId::of(&meta);
        if let Some(open) = self.files.lock().unwrap_or_else(PoisonError::into_inner).get(&image_path)
            && open.id == id
        {
            return Ok(OpenImage { len: id.len, etag: open.etag.clone(), source: Source::File(open.file.clone()) });
        }
        let path = image_path.clone();
        let (id, image) = tokio::task::spawn_blocking(move || load(&path, &sha_path, false))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        if let Source::File(file) = &image.source {
            let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
            if files.len() >= MAX_OPEN_FILES && !files.contains_key(&image_path) {
                // Any one: reopening an image costs a few microseconds.
                if let Some(k) = files.keys().next().cloned() {
                    files.remove(&k);
                }
            }
            files.insert(image_path, OpenFile { id, file: file.clone(), etag: image.etag.clone() });
        }
        Ok(image)
    }

    fn hit(&self, path: &Path, id: FileId) -> Option<OpenImage> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.clock += 1;
        let now = state.clock;
        let entry = state.entries.get_mut(path).filter(|e| e.id == id)?;
        entry.used = now;
        Some(OpenImage { len: id.len, etag: entry.etag.clone(), source: Source::Memory(entry.bytes.clone()) })
    }

    fn insert(&self, path: PathBuf, id: FileId, bytes: Bytes, etag: Option<String>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.clock += 1;
        let used = state.clock;
        let len = bytes.len() as u64;
        if let Some(old) = state.entries.insert(path, Entry { id, bytes, etag, used }) {
            state.total -= old.bytes.len() as u64;
        }
        state.total += len;
        // Least recently used first, until the rest fits (a handful of entries: a scan).
        while state.total > self.limit {
            let Some(oldest) = state.entries.iter().min_by_key(|(_, e)| e.used).map(|(p, _)| p.clone()) else {
                break;
            };
            if let Some(gone) = state.entries.remove(&oldest) {
                state.total -= gone.bytes.len() as u64;
            }
        }
    }
}

/// Opens the image and reads it whole when `keep`; the identity is the open file's, so a
/// file replaced while this runs is caught at the next request.
fn load(image_path: &Path, sha_path: &Path, keep: bool) -> io::Result<(FileId, OpenImage)> {
    let mut file = std::fs::File::open(image_path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
    }
    let id = FileId::of(&meta);
    let etag = read_small(sha_path)
        .ok()
        .and_then(|text| parse_sha256_file(&text).ok())
        .map(|digest| format!("\"{}\"", digest.to_hex()));
    let source = if keep {
        let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut buf)?;
        if buf.len() as u64 != meta.len() {
            return Err(io::Error::other("the image changed while it was read"));
        }
        Source::Memory(Bytes::from(buf))
    } else {
        Source::File(Arc::new(file))
    };
    Ok((id, OpenImage { len: meta.len(), etag, source }))
}

fn read_small(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?.take(4096).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(image: &OpenImage) -> &Bytes {
        match &image.source {
            Source::Memory(b) => b,
            Source::File(_) => panic!("expected the image from memory"),
        }
    }

    #[tokio::test]
    async fn an_image_is_read_once_and_read_again_when_its_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (image, sha) = (dir.path().join("firmware.bin"), dir.path().join("firmware.sha256"));
        std::fs::write(&image, b"first image").unwrap();
        let cache = ImageCache::new(1 << 20);
        let a = cache.open(image.clone(), sha.clone()).await.unwrap();
        let b = cache.open(image.clone(), sha.clone()).await.unwrap();
        assert_eq!(memory(&a).as_ptr(), memory(&b).as_ptr(), "the second download shares the first one's buffer");
        assert_eq!(a.etag, None, "no sha256 file, no ETag");
        // Replaced in the folder (a new file renamed over it): the next request reads it.
        let fresh = dir.path().join("new.bin");
        std::fs::write(&fresh, b"second image, longer").unwrap();
        std::fs::rename(&fresh, &image).unwrap();
        let c = cache.open(image.clone(), sha.clone()).await.unwrap();
        assert_eq!(&memory(&c)[..], b"second image, longer");
        assert_eq!(&memory(&a)[..], b"first image", "a response in flight keeps what it was sending");
        assert_eq!(cache.held(), 20, "the old buffer was replaced, not kept");
        // Rewritten in place to the same length: caught by its modification time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&image, b"third image, longer!").unwrap();
        let d = cache.open(image, sha).await.unwrap();
        assert_eq!(&memory(&d)[..], b"third image, longer!");
    }

    #[tokio::test]
    async fn the_cache_keeps_to_its_limit_least_recently_used_first_and_streams_large_images() {
        let dir = tempfile::tempdir().unwrap();
        let sha = dir.path().join("none.sha256");
        let path = |n: u32| dir.path().join(format!("{n}.bin"));
        for n in 0..4 {
            std::fs::write(path(n), vec![n as u8; 100]).unwrap();
        }
        let cache = ImageCache::new(400);
        cache.open(path(0), sha.clone()).await.unwrap();
        cache.open(path(1), sha.clone()).await.unwrap();
        cache.open(path(2), sha.clone()).await.unwrap();
        cache.open(path(0), sha.clone()).await.unwrap(); // 0 used again: 1 is now the oldest
        assert_eq!(cache.held(), 300);
        std::fs::write(path(3), vec![3u8; 100]).unwrap();
        cache.open(path(3), sha.clone()).await.unwrap();
        assert_eq!(cache.held(), 400);
        std::fs::write(path(4), vec![4u8; 100]).unwrap();
        cache.open(path(4), sha.clone()).await.unwrap();
        assert_eq!(cache.held(), 400, "never above the limit");
        let kept: Vec<bool> = {
            let state = cache.state.lock().unwrap();
            (0..5).map(|n| state.entries.contains_key(&path(n))).collect()
        };
        assert_eq!(kept, [true, false, true, true, true], "the least recently used went first");
        // Over a quarter of the limit: streamed from the file, never held.
        std::fs::write(path(9), vec![9u8; 101]).unwrap();
        let big = cache.open(path(9), sha).await.unwrap();
        assert!(matches!(big.source, Source::File(_)));
        assert_eq!(big.len, 101);
        assert_eq!(cache.held(), 400);
    }
}
