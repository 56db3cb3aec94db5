//! `ota-local` implements ota's ports on one machine, so `ota serve` works with no cloud
//! account: the firmware catalog is a folder with exactly the bucket layout
//! (`firmwares/v{semver}/{device_type}/...`, see [`FolderCatalog`]), and the registry, the
//! config gate, the rollouts, the command runs, the telemetry history and the audit trail
//! live in one SQLite file ([`SqliteStore`]).
//! It holds no safety rule of its own: `ota-core`'s service enforces them all, and the
//! conformance suite checks that this backend keeps every guarantee the ports document.
//! [`download`] serves the catalog's images to devices over signed, expiring HTTP links
//! (the local counterpart of S3 presigned URLs).
//!
//! Architecture Invariant: this crate depends on `ota-core` only and knows nothing of the
//! adapters; adapters call [`open_backend`] and get a plain [`ota_core::ports::Backend`].

mod catalog;
pub mod download;
pub mod jobs;
pub mod link;
pub mod pki;
mod secret;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use ota_core::ports::Backend;
use ota_core::{Error, Result};

pub use catalog::FolderCatalog;
pub use secret::load_or_create_secret;
pub use sqlite::{
    EngineContext, Execution, ExecutionCounts, ExecutionStatus, Output, RolloutEvent, RolloutProgress, SqliteStore,
};

/// File name of the SQLite database inside the data directory.
pub const DATABASE_FILE: &str = "ota.db";

/// Opens (creating when needed) the local backend kept in `data_dir`: the catalog in
/// `<data_dir>/firmwares/` and everything else in `<data_dir>/ota.db`. Several processes may
/// open the same directory (a CLI next to `ota serve`): SQLite serialises their writes and a
/// publish is one atomic rename.
pub fn open_backend(data_dir: &Path) -> Result<Backend> {
    Ok(open_local(data_dir)?.0)
}

/// [`open_backend`], also returning the SQLite store itself, which the jobs engine and the
/// progress views need beyond the ports.
pub fn open_local(data_dir: &Path) -> Result<(Backend, Arc<SqliteStore>)> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::storage(format!("cannot create the data directory {}: {e}", data_dir.display())))?;
    let store = Arc::new(SqliteStore::open(&data_dir.join(DATABASE_FILE))?);
    let backend = Backend {
        catalog: Arc::new(FolderCatalog::new(data_dir)),
        registry: store.clone(),
        config: store.clone(),
        rollouts: store.clone(),
        audit: store.clone(),
        commands: store.clone(),
        telemetry: store.clone(),
    };
    Ok((backend, store))
}

/// Runs blocking work (files, SQLite) off the async threads. `what` names the work in the
/// rare error where the task could not finish.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        // A panic is a bug: let it surface as the panic it is, not as a storage error.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::storage(format!("{what} task did not finish: {e}"))),
    }
}

/// A listening socket with `SO_REUSEADDR`, so a server restarted right after a crash can
/// bind its port again while the old connections linger in `TIME_WAIT`.
pub async fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
