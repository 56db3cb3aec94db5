//! ota's firmware download server (`ota_local::download::Downloads`, served as `ota serve` serves it) on its own, for the
//! download measurement in `benches/download/run.sh`: serves a catalog folder on a port of
//! 127.0.0.1 and prints, as its first line, one signed URL for the image of a given version
//! and device type, so a load generator can fetch exactly what a device would.
//!
//! `cargo run --release -p ota-benches --bin download_server -- CATALOG_ROOT PORT VERSION DEVICE_TYPE`
//!
//! CATALOG_ROOT is the folder that holds `firmwares/`. Downloads are served as `ota serve`
//! serves them (`sendfile` on Linux); with `OTA_DOWNLOAD_ROUTER_ONLY=1`, through hyper alone
//! (images shared from memory), to compare the two. The signing key is fresh for each run
//! (the link only has to work for this process); links last the default hour.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use ota_core::names::DeviceType;
use ota_core::version::FirmwareVersion;
use ota_local::download::{Downloads, UrlSigner};

const USAGE: &str = "usage: download_server CATALOG_ROOT PORT VERSION DEVICE_TYPE";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("download_server: {e}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, port, version, device_type] = args.as_slice() else {
        return Err(format!("expected 4 arguments, got {}", args.len()));
    };
    let root = PathBuf::from(root);
    let port: u16 = port.parse().map_err(|e| format!("PORT {port:?}: {e}"))?;
    let version = FirmwareVersion::parse(version).map_err(|e| e.to_string())?;
    let device_type = DeviceType::parse(device_type).map_err(|e| e.to_string())?;
    let image = root.join("firmwares").join(version.folder_name()).join(device_type.as_str()).join("firmware.bin");
    if !image.is_file() {
        return Err(format!("no image at {}", image.display()));
    }

    // A throwaway key in a throwaway folder: the same code path as `ota serve` uses.
    let key_dir = std::env::temp_dir().join(format!("ota-download-bench-{}", std::process::id()));
    let base_url = format!("http://127.0.0.1:{port}");
    let signer = UrlSigner::load_or_create(&key_dir, &base_url).map_err(|e| format!("signing key: {e}"))?;
    let _ = std::fs::remove_dir_all(&key_dir);
    let url = signer.firmware_url(&version, &device_type, chrono::Utc::now());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        println!("{url}");
        let _ = std::io::stdout().flush();
        // As `ota serve` serves downloads: sendfile on Linux (`OTA_DOWNLOAD_ROUTER_ONLY=1`: hyper only).
        let downloads = Downloads::new(root, signer);
        if std::env::var_os("OTA_DOWNLOAD_ROUTER_ONLY").is_some() {
            axum::serve(listener, downloads.router()).await.map_err(|e| format!("server: {e}"))
        } else {
            downloads
                .serve(listener, downloads.router(), std::future::pending())
                .await
                .map_err(|e| format!("server: {e}"))
        }
    })
}
