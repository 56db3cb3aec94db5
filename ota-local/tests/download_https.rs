//! Firmware downloads over HTTPS with the data dir CA's server certificate, on a real socket
//! with a rustls (ring) client that trusts only that CA: the signed link works as over HTTP,
//! a bad signature is still refused, and plain HTTP on the HTTPS port gets no answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ota_core::names::DeviceType;
use ota_core::version::FirmwareVersion;
use ota_local::download::{Downloads, UrlSigner};
use ota_local::pki::LocalCa;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

fn publish(root: &Path, version: &str, device_type: &str, image: &[u8]) {
    let dir = root.join("firmwares").join(format!("v{version}")).join(device_type);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("firmware.bin"), image).unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(image));
    std::fs::write(dir.join("firmware.sha256"), format!("{digest}  firmware.bin\n")).unwrap();
}

/// One request on a new TLS connection; the raw response (head and body).
async fn https_get(port: u16, ca: &LocalCa, target: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(ServerName::try_from("localhost").unwrap(), tcp))
        .await
        .unwrap()
        .expect("the server's certificate is trusted through the CA");
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A peer that closes without close_notify is fine here: the body length is checked.
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response)).await.unwrap();
    response
}

fn split(response: &[u8]) -> (String, &[u8]) {
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    (String::from_utf8_lossy(&response[..at]).into_owned(), &response[at + 4..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_link_downloads_over_https_and_nothing_is_served_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let image: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    publish(dir.path(), "2.0.0", "pet_feeder", &image);
    let ca = LocalCa::load_or_create(dir.path()).unwrap();

    let listener = ota_local::listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let signer = UrlSigner::new([3; 32], format!("https://localhost:{port}"));
    let downloads = Downloads::new(dir.path().to_path_buf(), signer.clone()).with_tls(ca.https_config(&[]).unwrap());
    assert!(downloads.is_https());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = downloads.router();
    let server = tokio::spawn(async move {
        downloads
            .serve(listener, app, async {
                let _ = stop_rx.await;
            })
            .await
    });

    let url = signer.firmware_url(
        &FirmwareVersion::parse("2.0.0").unwrap(),
        &DeviceType::parse("pet_feeder").unwrap(),
        Utc::now(),
    );
    let target = url.strip_prefix(&format!("https://localhost:{port}")).expect("links are signed for HTTPS");
    let response = https_get(port, &ca, target).await;
    let (head, body) = split(&response);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, &image[..]);

    // The signature still decides.
    let forged = target.replace("X-Ota-Signature=", "X-Ota-Signature=00");
    let response = https_get(port, &ca, &forged).await;
    assert!(split(&response).0.starts_with("HTTP/1.1 403"), "{}", split(&response).0);

    // Plain HTTP on the HTTPS port: no HTTP answer, the connection is closed.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    raw.write_all(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut answer)).await.expect("the server closes");
    assert!(!answer.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&answer));

    let _ = stop_tx.send(());
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap().unwrap();
}
