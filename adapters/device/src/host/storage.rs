//! Key-value storage for the host: in memory (shared by clones, so it survives a simulated
//! reboot) or in a folder (one file per key, replaced atomically by rename).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use embedded_svc::storage::{RawStorage, StorageBase};

use super::power::{Power, PowerCut};

/// Errors of the host storages.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("power lost")]
    PowerLost,
    #[error("value of {len} bytes does not fit a {buf}-byte buffer")]
    TooSmall { len: usize, buf: usize },
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn copy_out<'a>(value: &[u8], buf: &'a mut [u8]) -> Result<&'a [u8], StorageError> {
    let room = buf.len();
    let out = buf.get_mut(..value.len()).ok_or(StorageError::TooSmall { len: value.len(), buf: room })?;
    out.copy_from_slice(value);
    Ok(out)
}

/// Storage in memory. Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    power: Power,
}

impl MemStorage {
    /// An empty store on `power`.
    pub fn new(power: Power) -> Self {
        MemStorage { map: Arc::default(), power }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stored value, for assertions.
    pub fn value(&self, name: &str) -> Option<Vec<u8>> {
        self.map().get(name).cloned()
    }
}

impl StorageBase for MemStorage {
    type Error = StorageError;

    fn contains(&self, name: &str) -> Result<bool, StorageError> {
        Ok(self.map().contains_key(name))
    }

    fn remove(&mut self, name: &str) -> Result<bool, StorageError> {
        self.power.check(PowerCut::BeforeRemove).map_err(|_| StorageError::PowerLost)?;
        Ok(self.map().remove(name).is_some())
    }
}

impl RawStorage for MemStorage {
    fn len(&self, name: &str) -> Result<Option<usize>, StorageError> {
        Ok(self.map().get(name).map(Vec::len))
    }

    fn get_raw<'a>(&self, name: &str, buf: &'a mut [u8]) -> Result<Option<&'a [u8]>, StorageError> {
        match self.map().get(name) {
            Some(v) => copy_out(v, buf).map(Some),
            None => Ok(None),
        }
    }

    fn set_raw(&mut self, name: &str, buf: &[u8]) -> Result<bool, StorageError> {
        self.power.check(PowerCut::BeforeStore).map_err(|_| StorageError::PowerLost)?;
        self.map().insert(name.to_string(), buf.to_vec());
        Ok(true)
    }
}

/// Storage in a folder: one file per key.
#[derive(Debug, Clone)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Storage in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(FileStorage { dir })
    }

    fn path(&self, name: &str) -> Result<PathBuf, StorageError> {
        // NVS keys: short, plain. Anything else could escape the folder.
        let ok = !name.is_empty() && name.len() <= 15 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok { Ok(self.dir.join(name)) } else { Err(StorageError::InvalidKey(name.to_string())) }
    }
}

impl StorageBase for FileStorage {
    type Error = StorageError;

    fn contains(&self, name: &str) -> Result<bool, StorageError> {
        Ok(self.path(name)?.exists())
    }

    fn remove(&mut self, name: &str) -> Result<bool, StorageError> {
        match std::fs::remove_file(self.path(name)?) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl RawStorage for FileStorage {
    fn len(&self, name: &str) -> Result<Option<usize>, StorageError> {
        match std::fs::metadata(self.path(name)?) {
            Ok(m) => Ok(Some(usize::try_from(m.len()).unwrap_or(usize::MAX))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn get_raw<'a>(&self, name: &str, buf: &'a mut [u8]) -> Result<Option<&'a [u8]>, StorageError> {
        match std::fs::read(self.path(name)?) {
            Ok(v) => copy_out(&v, buf).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn set_raw(&mut self, name: &str, buf: &[u8]) -> Result<bool, StorageError> {
        let path = self.path(name)?;
        // Write aside, then rename: a reader sees the old value or the new one, never half.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, buf)?;
        std::fs::rename(&tmp, &path)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_storage_round_trips_and_refuses_path_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStorage::open(dir.path()).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.get_raw("ota_pending", &mut buf).unwrap(), None);
        s.set_raw("ota_pending", b"hello").unwrap();
        assert_eq!(s.get_raw("ota_pending", &mut buf).unwrap(), Some(&b"hello"[..]));
        assert_eq!(s.len("ota_pending").unwrap(), Some(5));
        assert!(s.remove("ota_pending").unwrap());
        assert!(!s.contains("ota_pending").unwrap());
        assert!(s.set_raw("../x", b"no").is_err());
        assert!(matches!(s.get_raw("k", &mut [0u8; 2]), Ok(None)));
        s.set_raw("k", b"too long").unwrap();
        assert!(matches!(s.get_raw("k", &mut [0u8; 2]), Err(StorageError::TooSmall { .. })));
    }

    #[test]
    fn memory_storage_survives_clones_and_obeys_the_power() {
        let power = Power::new();
        let mut a = MemStorage::new(power.clone());
        a.set_raw("k", b"v").unwrap();
        let b = a.clone();
        assert_eq!(b.value("k").as_deref(), Some(&b"v"[..]));
        power.cut_at(PowerCut::BeforeStore);
        assert!(a.set_raw("k", b"w").is_err());
        assert!(power.is_off());
        assert_eq!(b.value("k").as_deref(), Some(&b"v"[..]), "nothing written after the cut");
    }
}
