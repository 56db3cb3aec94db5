//! The download server over real HTTP on 127.0.0.1: a catalog folder in a temp dir, served
//! on a bound listener by each transport in turn (the router through axum and hyper, and the
//! `sendfile` listener `ota serve` uses), every test against both, and requests written byte for byte (so paths
//! with `..` or percent-encoding reach the server exactly as sent). The last test downloads
//! with the device's own HTTP client, drops the connection part-way and resumes with Range
//! the way the agent does.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use embedded_svc::http::client::Connection;
use embedded_svc::http::{Headers, Method, Status};
use embedded_svc::io::Read;
use ota_core::names::DeviceType;
use ota_core::version::FirmwareVersion;
use ota_device::host::{HostHttp, HttpFaults};
use ota_local::download::{Downloads, EXPIRES_PARAM, SIGNATURE_PARAM, UrlSigner, router_with_clock};
use sha2::{Digest, Sha256};

/// The test's "now" in Unix seconds; the server reads it on every request.
const START: i64 = 1_800_000_000;
const IMAGE_LEN: usize = 300_001;
const SECRET: &str = "outside the catalog";

struct Server {
    addr: SocketAddr,
    now: Arc<AtomicI64>,
    signer: UrlSigner,
    image: Vec<u8>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn pseudo_random(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes one artifact folder of the layout: image and digest file.
fn publish(root: &Path, version: &str, device_type: &str, image: &[u8]) {
    let dir = root.join("firmwares").join(format!("v{version}")).join(device_type);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("firmware.bin"), image).unwrap();
    std::fs::write(dir.join("firmware.sha256"), format!("{}  firmware.bin\n", sha256_hex(image))).unwrap();
}

/// Which transport serves the downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `router_with_clock` under `axum::serve`: hyper, images from memory.
    Router,
    /// `Downloads::listener` under `axum::serve`: `sendfile`, as `ota serve` runs it.
    Sendfile,
}

impl Server {
    /// One server per transport, for a test to run against each.
    fn both() -> [Server; 2] {
        [Server::start(Transport::Router), Server::start(Transport::Sendfile)]
    }

    /// A catalog with pet_feeder 2.0.0 (the image under test) and 1.0.0, a secret file next to
    /// `firmwares/` and one next to the catalog root, served on a free port.
    fn start(transport: Transport) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root: PathBuf = dir.path().join("catalog");
        let image = pseudo_random(IMAGE_LEN, 0x9e37_79b9_7f4a_7c15);
        publish(&root, "2.0.0", "pet_feeder", &image);
        publish(&root, "1.0.0", "pet_feeder", &pseudo_random(1000, 7));
        std::fs::write(root.join("secret.txt"), SECRET).unwrap();
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();

        let now = Arc::new(AtomicI64::new(START));
        let signer = UrlSigner::new([42; 32], "http://placeholder").with_ttl(Duration::from_secs(600));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (clock_now, server_signer) = (now.clone(), signer.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let clock = move || DateTime::from_timestamp(clock_now.load(Ordering::SeqCst), 0).unwrap();
                let stop = async {
                    let _ = stop_rx.await;
                };
                match transport {
                    Transport::Router => {
                        let app = router_with_clock(root, server_signer, clock);
                        axum::serve(listener, app).with_graceful_shutdown(stop).await.unwrap();
                    }
                    Transport::Sendfile => {
                        let downloads = Downloads::with_clock(root, server_signer, clock);
                        let listener = downloads.listener(listener).unwrap();
                        axum::serve(listener, downloads.router()).with_graceful_shutdown(stop).await.unwrap();
                    }
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).expect("the server starts");
        // Links point at the real port; the key is the server's.
        let signer = UrlSigner::new([42; 32], format!("http://{addr}")).with_ttl(Duration::from_secs(600));
        Server { addr, now, signer, image, _dir: dir, stop: Some(stop_tx) }
    }

    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.now.load(Ordering::SeqCst), 0).unwrap()
    }

    fn url(&self, version: &str, device_type: &str) -> String {
        let version = FirmwareVersion::parse(version).unwrap();
        let device_type = DeviceType::parse(device_type).unwrap();
        self.signer.firmware_url(&version, &device_type, self.now())
    }

    /// The path and query of a URL, as a request target.
    fn target(&self, url: &str) -> String {
        url.strip_prefix(&format!("http://{}", self.addr)).unwrap().to_string()
    }

    fn get(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.addr, "GET", target, headers)
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection, sent exactly as given, read to the end.
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Reply { status, headers, body: raw[split + 4..].to_vec() }
}

#[test]
fn a_full_download_is_the_file_byte_for_byte() {
    for server in Server::both() {
        a_full_download_is_the_file_byte_for_byte_on(server);
    }
}

fn a_full_download_is_the_file_byte_for_byte_on(server: Server) {
    let url = server.url("2.0.0", "pet_feeder");
    let reply = server.get(&server.target(&url), &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.body.len(), IMAGE_LEN);
    assert!(reply.body == server.image, "the body is the file");
    assert_eq!(sha256_hex(&reply.body), sha256_hex(&server.image));
    assert_eq!(reply.header("content-length"), Some(IMAGE_LEN.to_string().as_str()));
    assert_eq!(reply.header("content-type"), Some("application/octet-stream"));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert_eq!(reply.header("etag"), Some(format!("\"{}\"", sha256_hex(&server.image)).as_str()));
}

#[test]
fn single_ranges_get_206_and_the_right_bytes() {
    for server in Server::both() {
        single_ranges_get_206_and_the_right_bytes_on(server);
    }
}

fn single_ranges_get_206_and_the_right_bytes_on(server: Server) {
    let target = server.target(&server.url("2.0.0", "pet_feeder"));
    let len = IMAGE_LEN as u64;
    let cases = [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, len - 1),
        ("bytes=-500", len - 500, len - 1),
        ("bytes=250000-999999", 250_000, len - 1),
        ("bytes=-999999", 0, len - 1),
        ("bytes=300000-300000", 300_000, 300_000),
    ];
    for (range, start, end) in cases {
        let reply = server.get(&target, &[("Range", range)]);
        assert_eq!(reply.status, 206, "{range}: {}", reply.text());
        assert_eq!(reply.header("content-range"), Some(format!("bytes {start}-{end}/{len}").as_str()), "{range}");
        assert_eq!(reply.header("content-length"), Some((end - start + 1).to_string().as_str()), "{range}");
        assert!(reply.body == server.image[start as usize..=end as usize], "{range}: the requested bytes");
    }
}

#[test]
fn a_range_past_the_end_is_416_and_odd_ranges_get_the_whole_image() {
    for server in Server::both() {
        a_range_past_the_end_is_416_and_odd_ranges_get_the_whole_image_on(server);
    }
}

fn a_range_past_the_end_is_416_and_odd_ranges_get_the_whole_image_on(server: Server) {
    let target = server.target(&server.url("2.0.0", "pet_feeder"));
    for range in
        [format!("bytes={IMAGE_LEN}-"), format!("bytes={}-{}", IMAGE_LEN + 5, IMAGE_LEN + 10), "bytes=-0".into()]
    {
        let reply = server.get(&target, &[("Range", &range)]);
        assert_eq!(reply.status, 416, "{range}");
        assert_eq!(reply.header("content-range"), Some(format!("bytes */{IMAGE_LEN}").as_str()), "{range}");
    }
    for range in ["bytes=0-1,5-9", "bytes=9-3", "bytes=abc", "pages=0-10", "bytes=+5-"] {
        let reply = server.get(&target, &[("Range", range)]);
        assert_eq!(reply.status, 200, "{range}");
        assert_eq!(reply.header("content-range"), None, "{range}");
        assert!(reply.body == server.image, "{range}: the whole image");
    }
}

#[test]
fn if_range_keeps_the_range_only_for_the_same_image() {
    for server in Server::both() {
        if_range_keeps_the_range_only_for_the_same_image_on(server);
    }
}

fn if_range_keeps_the_range_only_for_the_same_image_on(server: Server) {
    let target = server.target(&server.url("2.0.0", "pet_feeder"));
    let etag = format!("\"{}\"", sha256_hex(&server.image));
    let same = server.get(&target, &[("Range", "bytes=10-19"), ("If-Range", &etag)]);
    assert_eq!((same.status, same.body.len()), (206, 10));
    let other = format!("\"{}\"", sha256_hex(b"another image"));
    let changed = server.get(&target, &[("Range", "bytes=10-19"), ("If-Range", &other)]);
    assert_eq!((changed.status, changed.body.len()), (200, IMAGE_LEN));
}

#[test]
fn head_answers_the_headers_of_get_without_a_body() {
    for server in Server::both() {
        head_answers_the_headers_of_get_without_a_body_on(server);
    }
}

fn head_answers_the_headers_of_get_without_a_body_on(server: Server) {
    let target = server.target(&server.url("2.0.0", "pet_feeder"));
    let reply = request(server.addr, "HEAD", &target, &[]);
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("content-length"), Some(IMAGE_LEN.to_string().as_str()));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert_eq!(reply.header("etag"), Some(format!("\"{}\"", sha256_hex(&server.image)).as_str()));
    let ranged = request(server.addr, "HEAD", &target, &[("Range", "bytes=100-")]);
    assert_eq!(ranged.status, 206);
    assert!(ranged.body.is_empty());
    assert_eq!(ranged.header("content-length"), Some((IMAGE_LEN - 100).to_string().as_str()));
}

#[test]
fn a_link_works_until_its_expiry_and_then_says_when_it_expired() {
    for server in Server::both() {
        a_link_works_until_its_expiry_and_then_says_when_it_expired_on(server);
    }
}

fn a_link_works_until_its_expiry_and_then_says_when_it_expired_on(server: Server) {
    let target = server.target(&server.url("2.0.0", "pet_feeder"));
    let ttl = 600;
    server.now.store(START + ttl, Ordering::SeqCst);
    assert_eq!(server.get(&target, &[]).status, 200, "still valid at its expiry second");
    server.now.store(START + ttl + 1, Ordering::SeqCst);
    let reply = server.get(&target, &[]);
    assert_eq!(reply.status, 403);
    let expiry = DateTime::from_timestamp(START + ttl, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(reply.text().trim(), format!("the link expired at {expiry}"));
    assert_eq!(request(server.addr, "HEAD", &target, &[]).status, 403, "HEAD is checked the same way");
}

#[test]
fn a_missing_or_wrong_signature_is_refused() {
    for server in Server::both() {
        a_missing_or_wrong_signature_is_refused_on(server);
    }
}

fn a_missing_or_wrong_signature_is_refused_on(server: Server) {
    let target = server.target(&server.url("2.0.0", "pet_feeder"));
    let (path, query) = target.split_once('?').unwrap();
    let signature = query.split_once(&format!("{SIGNATURE_PARAM}=")).unwrap().1;
    let flipped = {
        let mut s = signature.to_string();
        let last = if s.ends_with('0') { '1' } else { '0' };
        s.pop();
        s.push(last);
        s
    };
    let expires = START + 600;
    let other_key = UrlSigner::new([43; 32], "");
    let cases = [
        path.to_string(),
        format!("{path}?{EXPIRES_PARAM}={expires}"),
        format!("{path}?{SIGNATURE_PARAM}={signature}"),
        target.replace(signature, &flipped),
        target.replace(signature, &signature[..62]),
        target.replace(signature, "zz"),
        // Stretching the expiry breaks the signature.
        target.replace(&expires.to_string(), &(expires + 86_400).to_string()),
        other_key.url_for_path(path, expires),
        // A second, forged signature is not tried in turn.
        format!("{target}&{SIGNATURE_PARAM}={flipped}"),
    ];
    for target in cases {
        let reply = server.get(&target, &[]);
        assert_eq!(reply.status, 403, "{target}");
        assert!(!reply.body.starts_with(&server.image[..16]), "{target}: no image bytes");
    }
    assert_eq!(server.get(&target, &[]).status, 200, "the genuine link still works");
}

#[test]
fn a_signature_is_valid_for_its_own_image_only() {
    for server in Server::both() {
        a_signature_is_valid_for_its_own_image_only_on(server);
    }
}

fn a_signature_is_valid_for_its_own_image_only_on(server: Server) {
    let target = server.target(&server.url("2.0.0", "pet_feeder"));
    let query = target.split_once('?').unwrap().1;
    // 1.0.0 exists: the refusal is the signature's, not a missing file's.
    for path in ["/firmwares/v1.0.0/pet_feeder/firmware.bin", "/firmwares/v2.0.0/camera/firmware.bin"] {
        let reply = server.get(&format!("{path}?{query}"), &[]);
        assert_eq!(reply.status, 403, "{path}");
        assert_eq!(reply.text().trim(), "the link's signature is not valid");
    }
}

#[test]
fn paths_outside_the_layout_are_404_and_never_read_a_file() {
    for server in Server::both() {
        paths_outside_the_layout_are_404_and_never_read_a_file_on(server);
    }
}

fn paths_outside_the_layout_are_404_and_never_read_a_file_on(server: Server) {
    let expires = START + 600;
    let paths = [
        "/secret.txt",
        "/firmwares/../secret.txt",
        "/firmwares/v2.0.0/pet_feeder/../../../secret.txt",
        "/firmwares/v2.0.0/pet_feeder/../../../../secret.txt",
        "/firmwares/v2.0.0/../../secret.txt",
        "/firmwares/%2e%2e/secret.txt",
        "/firmwares/v2.0.0/pet_feeder%2F..%2F..%2F..%2Fsecret.txt",
        "/firmwares/v2.0.0/%2e%2e/%2e%2e/secret.txt/firmware.bin",
        "/firmwares/v2.0.0/pet_feeder/firmware.bin/..",
        "/firmwares/v2.0.0/pet_feeder/./firmware.bin",
        "/firmwares/v2.0.0//pet_feeder/firmware.bin",
        "/firmwares/v2.0.0/pet_feeder/firmware.sha256",
        "/firmwares/v2.0.0/pet_feeder/metadata.json",
        "/firmwares/V2.0.0/pet_feeder/firmware.bin",
        "/firmwares/2.0.0/pet_feeder/firmware.bin",
        "/firmwares/v2.0.0/Pet_Feeder/firmware.bin",
        "/firmwares/v2.0.0/pet_feeder/firmware.bin%00",
        "//secret.txt",
    ];
    for path in paths {
        // Signed with the server's key, so nothing but the path decides the answer.
        let target = server.target(&server.signer.url_for_path(path, expires));
        let reply = server.get(&target, &[]);
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
        assert!(!reply.text().contains(SECRET), "{path}");
        let unsigned = server.get(path, &[]);
        assert_eq!(unsigned.status, 404, "{path} unsigned");
    }
}

#[test]
fn a_signed_link_to_an_image_that_is_not_there_is_404() {
    for server in Server::both() {
        a_signed_link_to_an_image_that_is_not_there_is_404_on(server);
    }
}

fn a_signed_link_to_an_image_that_is_not_there_is_404_on(server: Server) {
    for (version, device_type) in [("3.0.0", "pet_feeder"), ("2.0.0", "camera")] {
        let reply = server.get(&server.target(&server.url(version, device_type)), &[]);
        assert_eq!(reply.status, 404, "{version} {device_type}");
        assert!(reply.text().contains("not in the catalog"), "{}", reply.text());
    }
}

/// What one download attempt of the device ended with.
#[derive(Debug, PartialEq, Eq)]
struct Attempt {
    offset: u64,
    status: u16,
    content_range: Option<String>,
    dropped: bool,
}

/// Downloads `url` with the device's HTTP client, resuming from the bytes already received
/// after each failure exactly as the agent does (`Range: bytes=N-`, 206 expected to start
/// at N); gives up after `max_attempts`.
fn device_download(http: &mut HostHttp, url: &str, max_attempts: usize) -> (Vec<u8>, Vec<Attempt>) {
    let mut received = Vec::new();
    let mut attempts = Vec::new();
    let mut buf = [0u8; 4096];
    while attempts.len() < max_attempts {
        let offset = received.len() as u64;
        let range = format!("bytes={offset}-");
        let headers = [("Range", range.as_str()), ("Accept-Encoding", "identity")];
        let headers: &[(&str, &str)] = if offset > 0 { &headers } else { &headers[1..] };
        http.initiate_request(Method::Get, url, headers).expect("request");
        http.initiate_response().expect("response head");
        let status = http.status();
        let content_range = http.header("Content-Range").map(str::to_string);
        let mut left = http.content_len().expect("a Content-Length");
        assert!(status == 200 && offset == 0 || status == 206, "status {status} at {offset}");
        let mut dropped = false;
        while left > 0 {
            match http.read(&mut buf[..(left as usize).min(4096)]) {
                Ok(0) | Err(_) => {
                    dropped = true;
                    break;
                }
                Ok(n) => {
                    received.extend_from_slice(&buf[..n]);
                    left -= n as u64;
                }
            }
        }
        attempts.push(Attempt { offset, status, content_range, dropped });
        if !dropped {
            break;
        }
    }
    (received, attempts)
}

#[test]
fn the_devices_client_resumes_a_dropped_download_with_range() {
    for server in Server::both() {
        the_devices_client_resumes_a_dropped_download_with_range_on(server);
    }
}

fn the_devices_client_resumes_a_dropped_download_with_range_on(server: Server) {
    let url = server.url("2.0.0", "pet_feeder");
    let drop_at = 123_457;
    let faults = Arc::new(Mutex::new(HttpFaults { drop_at: Some(drop_at), ..HttpFaults::default() }));
    let mut http = HostHttp::new(Duration::from_secs(30), faults.clone());
    let (image, attempts) = device_download(&mut http, &url, 3);
    let len = IMAGE_LEN as u64;
    let expected = [
        Attempt { offset: 0, status: 200, content_range: None, dropped: true },
        Attempt {
            offset: drop_at,
            status: 206,
            content_range: Some(format!("bytes {drop_at}-{}/{len}", len - 1)),
            dropped: false,
        },
    ];
    assert_eq!(attempts, expected);
    assert_eq!(faults.lock().unwrap().drop_at, None, "the drop happened");
    assert_eq!(image.len(), IMAGE_LEN);
    assert_eq!(sha256_hex(&image), sha256_hex(&server.image), "the resumed image hashes right");
}

/// Reads one response (head and a `content-length` body) from a kept-alive connection.
fn read_response(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the connection closed mid-head");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let mut lines = head.trim_end().split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).unwrap().1.parse().unwrap();
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    Reply { status, headers, body }
}

#[test]
fn downloads_share_a_kept_alive_connection_even_pipelined() {
    for server in Server::both() {
        downloads_share_a_kept_alive_connection_even_pipelined_on(server);
    }
}

fn downloads_share_a_kept_alive_connection_even_pipelined_on(server: Server) {
    let target = server.target(&server.url("2.0.0", "pet_feeder"));
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let host = server.addr;
    // Two requests in one write: the second waits in the server's buffer behind the first.
    let two = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nRange: bytes=0-9\r\n\r\nGET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    stream.write_all(two.as_bytes()).unwrap();
    let first = read_response(&mut stream);
    assert_eq!((first.status, &first.body[..]), (206, &server.image[..10]));
    let second = read_response(&mut stream);
    assert_eq!(second.status, 200);
    assert!(second.body == server.image, "the whole image after the range");
    // And a third, after the others, on the same connection; then a refused one.
    stream.write_all(format!("HEAD {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        raw.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw));
    let unsigned = target.split('?').next().unwrap().to_string();
    stream.write_all(format!("GET {unsigned} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    let refused = read_response(&mut stream);
    assert_eq!(refused.status, 403, "{}", refused.text());
}

#[test]
fn an_empty_body_is_accepted_and_a_body_is_refused() {
    for server in Server::both() {
        an_empty_body_is_accepted_and_a_body_is_refused_on(server);
    }
}

fn an_empty_body_is_accepted_and_a_body_is_refused_on(server: Server) {
    let target = server.target(&server.url("2.0.0", "pet_feeder"));
    let reply = server.get(&target, &[("Content-Length", "0")]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.body == server.image);
    // A GET with a body: refused, never read as the next request.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let host = server.addr;
    stream
        .write_all(
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
                .as_bytes(),
        )
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let head = String::from_utf8_lossy(&raw);
    // hyper reads and drops the body and answers; the sendfile path refuses the request.
    assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(head.matches("HTTP/1.1 ").count(), 1, "one answer, and nothing read from the body: {head}");
}
