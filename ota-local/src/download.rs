//! Firmware downloads over HTTP straight from the catalog folder, for devices of the local
//! backend: the job document carries a link that [`UrlSigner::firmware_url`] signed, and
//! [`Downloads`] serves it. It plays the part S3 presigned URLs play on AWS, so the device agent
//! sees the same thing from both backends: a plain `GET` of one image that works for a while,
//! honours `Range` (a resumed download asks for `bytes=N-`) and needs no credentials.
//!
//! A link is `/firmwares/v{version}/{device_type}/firmware.bin?X-Ota-Expires={unix seconds}
//! &X-Ota-Signature={hex HMAC-SHA256}` under the signer's base URL. The HMAC covers
//! `"{path}\n{expires}"` with a 32-byte key kept in the data directory
//! ([`UrlSigner::load_or_create`]), so a link cannot be stretched in time or pointed at another
//! image, and the method is not signed: `HEAD` works with the `GET` link.
//!
//! Answers, in the order they are decided:
//! - a path that is not exactly an image of the layout (`..`, another file, a malformed version
//!   or type, percent-encoding) → 404; nothing outside the catalog is ever opened, because the
//!   file path is rebuilt from a validated [`ArtifactRef`], never from the request;
//! - a missing, malformed or wrong signature → 403; a valid one past its expiry → 403 saying
//!   when it expired;
//! - an image that is not in the catalog → 404;
//! - otherwise 200, or 206 for one satisfiable range, or 416 with `Content-Range: bytes */len`.
//!   Several ranges or a malformed `Range` get the whole image (RFC 9110 lets a server ignore
//!   `Range`), which a client that resumes handles as well as 206.
//!
//! Over HTTPS ([`Downloads::with_tls`], for a server that listens beyond loopback: a link is a
//! bearer credential and the image is worth keeping from onlookers), connections are TLS with
//! the data dir CA's server certificate ([`crate::pki::LocalCa::https_config`]) and every
//! request goes through hyper; the `sendfile` path ([`fast`]) is for plain HTTP only.
//!
//! Images are served from memory ([`cache`]): read once, then every response is a slice of
//! one shared buffer, within an LRU bound on the buffers' total ([`DEFAULT_CACHE_BYTES`]); an
//! image too large to keep is streamed from its file in fixed chunks. Either way, memory per
//! download does not grow with the image.

mod cache;
#[cfg(target_os = "linux")]
mod fast;

#[cfg(target_os = "linux")]
pub use fast::DownloadListener;

use std::fmt;
use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use ota_core::catalog::{ArtifactRef, CatalogFile, parse_catalog_key};
use ota_core::names::DeviceType;
use ota_core::version::FirmwareVersion;
use sha2::Sha256;
use tokio::io::AsyncReadExt as _;
use tokio_util::io::ReaderStream;

/// Query parameter holding the link's expiry, in Unix seconds.
pub const EXPIRES_PARAM: &str = "X-Ota-Expires";
/// Query parameter holding the hex HMAC-SHA256 of the path and the expiry.
pub const SIGNATURE_PARAM: &str = "X-Ota-Signature";
/// How long a link works unless [`UrlSigner::with_ttl`] says otherwise: long enough for a
/// rollout's devices to fetch the image, as with S3 presigned URLs in AWS IoT jobs.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Name of the key file inside the data directory.
pub const KEY_FILE: &str = "download-key";

/// Bytes read from the file per chunk of the response body, for images too large to keep
/// in memory (over a quarter of the cache).
const CHUNK: usize = 128 * 1024;

/// The most image bytes a download server keeps in memory. The demo catalog (64 images of
/// about 1.6 MB) fits whole; a larger catalog keeps its most recently downloaded images.
pub const DEFAULT_CACHE_BYTES: u64 = 128 * 1024 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// Signs download links and checks them; one key per data directory, shared by whatever
/// writes job documents and the server that answers the devices.
#[derive(Clone)]
pub struct UrlSigner {
    key: Arc<[u8; 32]>,
    base_url: String,
    ttl: Duration,
}

impl fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key: a signer ends up in logs through the structs that hold it.
        f.debug_struct("UrlSigner")
            .field("base_url", &self.base_url)
            .field("ttl", &self.ttl)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why a link was refused; the text is what the device (and whoever reads its logs) gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// No expiry or no signature in the query.
    #[error("the link is not signed (it needs {EXPIRES_PARAM} and {SIGNATURE_PARAM})")]
    Unsigned,
    /// The signature does not match the path and expiry (wrong key, edited link).
    #[error("the link's signature is not valid")]
    BadSignature,
    /// The signature is right but the link's time is over.
    #[error("the link expired at {}", .0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    Expired(DateTime<Utc>),
}

/// The base URL download links are signed for, as devices reach the server: `public_url`
/// when given (`--public-url`, for a server reached through a LAN name, a NAT or a proxy),
/// else `http://` or `https://` and the address the server is bound to. A bound address that
/// is unspecified (`0.0.0.0`, `[::]`) is no address a device can use, so it needs
/// `public_url`; so does nothing else. `public_url` must be `http` or `https` with a host
/// and no query or fragment; a path is kept (a proxy's prefix) and a trailing `/` dropped.
pub fn link_base_url(bound: std::net::SocketAddr, https: bool, public_url: Option<&str>) -> Result<String, String> {
    let Some(public) = public_url else {
        if bound.ip().is_unspecified() {
            return Err(format!(
                "the server listens on {bound}, which devices cannot be sent to: give the URL they reach it by \
                 (--public-url {}://HOST:{})",
                if https { "https" } else { "http" },
                bound.port()
            ));
        }
        return Ok(format!("{}://{bound}", if https { "https" } else { "http" }));
    };
    let url = reqwest::Url::parse(public).map_err(|e| format!("{public:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{public:?} must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{public:?} names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{public:?} must have no query, fragment or credentials"));
    }
    let mut base = public.trim().to_string();
    while base.ends_with('/') {
        base.pop();
    }
    Ok(base)
}

impl UrlSigner {
    /// A signer with `key` (32 secret bytes) whose links start with `base_url`, such as
    /// `http://127.0.0.1:8080`; a trailing `/` is dropped.
    pub fn new(key: [u8; 32], base_url: impl Into<String>) -> Self {
        let mut base_url = base_url.into();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        UrlSigner { key: Arc::new(key), base_url, ttl: DEFAULT_TTL }
    }

    /// The signer of `data_dir`: reads the key from `data_dir/download-key` (64 hex
    /// characters), or creates that file with a fresh random key, readable by its owner only,
    /// so that links survive restarts and every process of the same data directory agrees.
    /// A key file that is not 64 hex characters is an error, never silently replaced: that
    /// would invalidate every link already handed out.
    pub fn load_or_create(data_dir: &Path, base_url: impl Into<String>) -> io::Result<Self> {
        let key = crate::secret::load_or_create_secret(data_dir, KEY_FILE, "download signing key")?;
        Ok(UrlSigner::new(key, base_url))
    }

    /// Links valid for `ttl` instead of [`DEFAULT_TTL`].
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long links stay valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The base every link starts with, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A URL for one firmware image valid until `now` + the signer's time to live.
    pub fn firmware_url(&self, version: &FirmwareVersion, device_type: &DeviceType, now: DateTime<Utc>) -> String {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let expires = now.timestamp().saturating_add(ttl);
        let artifact = ArtifactRef::new(device_type.clone(), version.clone());
        self.url_for_path(&format!("/{}", artifact.key(CatalogFile::Image)), expires)
    }

    /// A signed URL for `path` (which starts with `/`) that expires at `expires` (Unix
    /// seconds). Tests use it to forge links the public API would never produce.
    pub fn url_for_path(&self, path: &str, expires: i64) -> String {
        let signature = hex::encode(self.mac(path, expires).finalize().into_bytes());
        format!("{}{path}?{EXPIRES_PARAM}={expires}&{SIGNATURE_PARAM}={signature}", self.base_url)
    }

    /// Checks the query of a request for `path` at `now`: the signature first (in constant
    /// time), then the expiry, so a forged link never learns anything about time.
    pub fn verify(&self, path: &str, query: Option<&str>, now: DateTime<Utc>) -> Result<(), LinkError> {
        let (expires, signature) = signed_params(query.unwrap_or(""))?;
        let expires: i64 = parse_digits(expires).and_then(|e| i64::try_from(e).ok()).ok_or(LinkError::BadSignature)?;
        let mut signature_bytes = [0u8; 32];
        hex::decode_to_slice(signature, &mut signature_bytes).map_err(|_| LinkError::BadSignature)?;
        self.mac(path, expires).verify_slice(&signature_bytes).map_err(|_| LinkError::BadSignature)?;
        if now.timestamp() > expires {
            let at = DateTime::from_timestamp(expires, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
            return Err(LinkError::Expired(at));
        }
        Ok(())
    }

    fn mac(&self, path: &str, expires: i64) -> HmacSha256 {
        // Any key length is valid for HMAC; 32 bytes cannot fail.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.key.as_slice()).expect("HMAC takes any key length");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }
}

/// The values of the two signing parameters; a parameter given twice is refused rather than
/// guessed at.
fn signed_params(query: &str) -> Result<(&str, &str), LinkError> {
    let (mut expires, mut signature) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            EXPIRES_PARAM => &mut expires,
            SIGNATURE_PARAM => &mut signature,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(LinkError::BadSignature);
        }
    }
    match (expires, signature) {
        (Some(e), Some(s)) => Ok((e, s)),
        _ => Err(LinkError::Unsigned),
    }
}

/// Digits only: `u64::from_str` would also take `+5`.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

struct Shared {
    root: PathBuf,
    signer: UrlSigner,
    clock: Clock,
    images: cache::ImageCache,
}

/// The download server's state, shared by its two transports: [`Downloads::router`] (hyper,
/// images from memory) and, on Linux, [`Downloads::listener`] (`sendfile`, for `ota serve`).
#[derive(Clone)]
pub struct Downloads(Arc<Shared>, Option<Arc<rustls::ServerConfig>>);

impl fmt::Debug for Downloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Downloads")
            .field("root", &self.0.root)
            .field("signer", &self.0.signer)
            .field("https", &self.1.is_some())
            .finish_non_exhaustive()
    }
}

/// How long a new HTTPS connection may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; further connections wait in the kernel's queue.
const TLS_HANDSHAKES: usize = 256;

impl Downloads {
    /// Downloads of `GET` and `HEAD` of `/firmwares/v{ver}/{type}/firmware.bin` with a signed
    /// query, answered from the catalog folder `catalog_root` (the folder that holds
    /// `firmwares/`, as for [`crate::FolderCatalog`]), with links signed by `signer`. See the
    /// module docs for every answer.
    pub fn new(catalog_root: PathBuf, signer: UrlSigner) -> Downloads {
        Downloads::with_clock(catalog_root, signer, Utc::now)
    }

    /// [`Downloads::new`] reading the time from `clock`, so tests can move past an expiry.
    pub fn with_clock(
        catalog_root: PathBuf,
        signer: UrlSigner,
        clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> Downloads {
        let images = cache::ImageCache::new(DEFAULT_CACHE_BYTES);
        Downloads(Arc::new(Shared { root: catalog_root, signer, clock: Arc::new(clock), images }), None)
    }

    /// The same, serving HTTPS with `config` (ALPN `http/1.1` if it names any protocol) in
    /// [`Downloads::serve`]. Links should then be signed for an `https://` base URL.
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Downloads {
        self.1 = Some(config);
        self
    }

    /// Whether [`Downloads::serve`] speaks HTTPS.
    pub fn is_https(&self) -> bool {
        self.1.is_some()
    }

    /// Serves `app` (which should include [`Downloads::router`]) on `listener` until
    /// `shutdown` resolves, as `axum::serve` does; on Linux, download connections are served
    /// with `sendfile` ([`Downloads::listener`]) and every other connection by `app`. With
    /// [`Downloads::with_tls`], every connection is HTTPS and served by `app`.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        app: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        if let Some(config) = &self.1 {
            let listener = TlsListener::new(listener, config.clone())?;
            return axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        }
        #[cfg(target_os = "linux")]
        {
            axum::serve(self.listener(listener)?, app).with_graceful_shutdown(shutdown).await
        }
        #[cfg(not(target_os = "linux"))]
        {
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
    }

    /// The router serving downloads through hyper.
    pub fn router(&self) -> Router {
        // `get` answers HEAD too; the handler leaves the body out itself so HEAD opens no stream.
        Router::new().route("/firmwares/{*rest}", get(download)).fallback(not_found).with_state(self.0.clone())
    }
}

/// A listener for `axum::serve` that hands over connections once their TLS handshake is done.
/// Handshakes run on tasks of their own (at most [`TLS_HANDSHAKES`] at once, each within
/// [`TLS_HANDSHAKE_TIMEOUT`]), so a client that never finishes holds up no other connection.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
    _accept: tokio_util::sync::DropGuard,
}

impl TlsListener {
    fn new(tcp: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(TLS_HANDSHAKES);
        let stop = tokio_util::sync::CancellationToken::new();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(TLS_HANDSHAKES));
        let accepting = stop.clone();
        tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
                let accepted = tokio::select! {
                    _ = accepting.cancelled() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        log::warn!("HTTPS listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => log::info!("HTTPS: {peer} failed its TLS handshake: {e}"),
                        Err(_) => log::info!("HTTPS: {peer} did not finish its TLS handshake in time"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, _accept: stop.drop_guard() })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task never ends while this listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// [`Downloads::router`] of a new [`Downloads::with_clock`]: the hyper transport alone.
pub fn router_with_clock(
    catalog_root: PathBuf,
    signer: UrlSigner,
    clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
) -> Router {
    Downloads::with_clock(catalog_root, signer, clock).router()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such firmware image\n").into_response()
}

async fn download(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    decide(&shared, &method, uri.path(), uri.query(), &headers, Open::Shared).await.into_response()
}

/// How the image of a successful answer is opened: shared from memory (responses written
/// by hyper), or as its file (responses sent with `sendfile`, see [`fast`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Shared,
    File,
}

/// An answer, before any transport writes it: both paths decide through [`decide`], so they
/// answer every request alike.
struct Reply {
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    body: ReplyBody,
}

enum ReplyBody {
    Empty,
    Text(&'static str, String),
    Memory(axum::body::Bytes),
    File { file: Arc<std::fs::File>, start: u64, count: u64 },
}

impl Reply {
    fn text(status: StatusCode, text: String) -> Reply {
        Reply { status, headers: Vec::new(), body: ReplyBody::Text("text/plain; charset=utf-8", text) }
    }

    fn into_response(self) -> Response {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                builder = builder.header(name, v);
            }
        }
        let body = match self.body {
            ReplyBody::Empty => Body::empty(),
            ReplyBody::Text(content_type, text) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                Body::from(text)
            }
            ReplyBody::Memory(bytes) => Body::from(bytes),
            ReplyBody::File { file, start, count } => {
                // The hyper path's files are its own (never shared, see the cache).
                let Ok(mut file) = Arc::try_unwrap(file).or_else(|f| f.try_clone()) else {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the image\n").into_response();
                };
                // One lseek of an open file: no wait worth a trip to the blocking pool.
                if start > 0
                    && let Err(e) = std::io::Seek::seek(&mut file, SeekFrom::Start(start))
                {
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the image: {e}\n"))
                        .into_response();
                }
                let file = tokio::fs::File::from_std(file);
                Body::from_stream(ReaderStream::with_capacity(file.take(count), CHUNK))
            }
        };
        builder.body(body).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

/// Decides the answer to `method path?query` with `headers`: every rule of the module docs.
async fn decide(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    open: Open,
) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    // The raw path, not a decoded one: `%2e%2e` or `%2F` never become separators, and only
    // the canonical spelling of a key parses, which is also the spelling that was signed.
    let artifact = match path.strip_prefix('/').and_then(parse_catalog_key) {
        Some((artifact, CatalogFile::Image)) => artifact,
        _ => return Reply::text(StatusCode::NOT_FOUND, "no such firmware image\n".into()),
    };
    if let Err(e) = shared.signer.verify(path, query, (shared.clock)()) {
        return Reply::text(StatusCode::FORBIDDEN, format!("{e}\n"));
    }
    let image_path = file_path(&shared.root, &artifact, CatalogFile::Image);
    let sha_path = file_path(&shared.root, &artifact, CatalogFile::Sha256);
    let opened = match open {
        Open::Shared => shared.images.open(image_path, sha_path).await,
        Open::File => shared.images.open_file(image_path, sha_path).await,
    };
    let image = match opened {
        Ok(image) => image,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Reply::text(StatusCode::NOT_FOUND, format!("{artifact} is not in the catalog\n"));
        }
        Err(e) => return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read {artifact}: {e}\n")),
    };
    respond(image, method, headers)
}

fn file_path(root: &Path, artifact: &ArtifactRef, file: CatalogFile) -> PathBuf {
    let mut path = root.to_path_buf();
    path.extend(artifact.key(file).split('/'));
    path
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAsk {
    /// No usable range: the whole image with 200.
    Full,
    /// Bytes `start..=end` with 206.
    Part { start: u64, end: u64 },
    /// Nothing of the image is in the range: 416.
    Unsatisfiable,
}

/// Reads one `Range` value against an image of `len` bytes. Only single byte ranges are
/// served; several ranges or anything malformed yield [`RangeAsk::Full`], which RFC 9110
/// allows (a server may ignore `Range`).
fn parse_range(value: &str, len: u64) -> RangeAsk {
    let value = value.trim();
    let Some(spec) = value.get(..6).filter(|unit| unit.eq_ignore_ascii_case("bytes=")).map(|_| &value[6..]) else {
        return RangeAsk::Full;
    };
    if spec.contains(',') {
        return RangeAsk::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        // `bytes=-n`: the last n bytes; the whole image when n is larger.
        let Some(n) = parse_digits(last) else { return RangeAsk::Full };
        if n == 0 || len == 0 {
            return RangeAsk::Unsatisfiable;
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let Some(start) = parse_digits(first) else { return RangeAsk::Full };
        let end = if last.is_empty() {
            u64::MAX
        } else {
            match parse_digits(last) {
                Some(end) if end >= start => end,
                _ => return RangeAsk::Full,
            }
        };
        if start >= len {
            return RangeAsk::Unsatisfiable;
        }
        (start, end.min(len - 1))
    };
    RangeAsk::Part { start, end }
}

fn respond(image: cache::OpenImage, method: &Method, headers: &HeaderMap) -> Reply {
    let cache::OpenImage { source, len, etag } = image;
    let ask = requested_range(headers, len, etag.as_deref());
    let mut out = vec![
        (header::ACCEPT_RANGES, "bytes".to_string()),
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
    ];
    if let Some(etag) = etag {
        out.push((header::ETAG, etag));
    }
    let (status, start, count) = match ask {
        RangeAsk::Full => (StatusCode::OK, 0, len),
        RangeAsk::Part { start, end } => {
            out.push((header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeAsk::Unsatisfiable => {
            let mut reply = Reply::text(StatusCode::RANGE_NOT_SATISFIABLE, "the range is outside the image\n".into());
            reply.headers =
                vec![(header::ACCEPT_RANGES, "bytes".into()), (header::CONTENT_RANGE, format!("bytes */{len}"))];
            return reply;
        }
    };
    out.push((header::CONTENT_LENGTH, count.to_string()));
    let body = if method == Method::HEAD || count == 0 {
        ReplyBody::Empty
    } else {
        match source {
            // A slice of the shared buffer: no copy, no read.
            cache::Source::Memory(bytes) => {
                let (start, count) =
                    (usize::try_from(start).unwrap_or(usize::MAX), usize::try_from(count).unwrap_or(0));
                match bytes.get(start..start.saturating_add(count)) {
                    Some(_) => ReplyBody::Memory(bytes.slice(start..start + count)),
                    None => return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, "the image changed\n".into()),
                }
            }
            cache::Source::File(file) => ReplyBody::File { file, start, count },
        }
    };
    Reply { status, headers: out, body }
}

fn requested_range(headers: &HeaderMap, len: u64, etag: Option<&str>) -> RangeAsk {
    let mut ranges = headers.get_all(header::RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return RangeAsk::Full;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        // Only a strong ETag match keeps the range; a date or another tag gets the whole image.
        if etag.is_none_or(|etag| if_range.as_bytes() != etag.as_bytes()) {
            return RangeAsk::Full;
        }
    }
    range.to_str().map_or(RangeAsk::Full, |v| parse_range(v, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_signed_for_the_public_url_or_a_reachable_bound_address() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(link_base_url(addr("127.0.0.1:8080"), false, None).unwrap(), "http://127.0.0.1:8080");
        assert_eq!(link_base_url(addr("192.168.1.20:8443"), true, None).unwrap(), "https://192.168.1.20:8443");
        let err = link_base_url(addr("0.0.0.0:8080"), false, None).unwrap_err();
        assert!(err.contains("--public-url http://HOST:8080"), "{err}");
        assert!(link_base_url(addr("[::]:8080"), true, None).unwrap_err().contains("--public-url https://"));
        let public = |u: &str| link_base_url(addr("0.0.0.0:8080"), false, Some(u));
        assert_eq!(public("http://ota.lan:8080/").unwrap(), "http://ota.lan:8080");
        assert_eq!(public("https://fleet.example.com/ota").unwrap(), "https://fleet.example.com/ota");
        assert!(public("ftp://ota.lan").is_err());
        assert!(public("ota.lan:8080").is_err());
        assert!(public("http://ota.lan/?x=1").is_err());
        assert!(public("http://user:pw@ota.lan").is_err());
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeAsk::*;
        let len = 1000;
        let cases = [
            ("bytes=0-99", Part { start: 0, end: 99 }),
            ("bytes=100-", Part { start: 100, end: 999 }),
            ("bytes=990-5000", Part { start: 990, end: 999 }),
            ("bytes=-10", Part { start: 990, end: 999 }),
            ("bytes=-5000", Part { start: 0, end: 999 }),
            ("BYTES=5-5", Part { start: 5, end: 5 }),
            ("bytes=1000-", Unsatisfiable),
            ("bytes=1000-2000", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=0-1,5-6", Full),
            ("bytes=9-3", Full),
            ("bytes=+3-", Full),
            ("bytes=a-b", Full),
            ("bytes=-", Full),
            ("items=0-1", Full),
            ("bytes=5", Full),
            ("", Full),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_range(value, len), expected, "{value:?}");
        }
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
    }

    #[test]
    fn a_signed_link_verifies_only_for_its_path_and_time() {
        let signer = UrlSigner::new([7; 32], "http://h:1/");
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let url = signer.url_for_path("/a", 1_000_100);
        let query = url.split_once('?').unwrap().1;
        assert!(url.starts_with("http://h:1/a?"), "{url}");
        assert_eq!(signer.verify("/a", Some(query), now), Ok(()));
        assert_eq!(signer.verify("/b", Some(query), now), Err(LinkError::BadSignature));
        let later = DateTime::from_timestamp(1_000_101, 0).unwrap();
        assert!(matches!(signer.verify("/a", Some(query), later), Err(LinkError::Expired(_))));
        let other_key = UrlSigner::new([8; 32], "http://h:1");
        assert_eq!(other_key.verify("/a", Some(query), now), Err(LinkError::BadSignature));
        assert_eq!(signer.verify("/a", None, now), Err(LinkError::Unsigned));
        let twice = format!("{query}&{EXPIRES_PARAM}=2000000");
        assert_eq!(signer.verify("/a", Some(&twice), now), Err(LinkError::BadSignature));
        let stretched = query.replace("1000100", "1000200");
        assert_eq!(signer.verify("/a", Some(&stretched), now), Err(LinkError::BadSignature));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let text = format!("{:?}", UrlSigner::new([0xab; 32], "http://h"));
        assert!(!text.contains("ab, ") && !text.contains("abab") && !text.contains("171"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }

    #[test]
    fn the_key_file_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = UrlSigner::load_or_create(&data, "http://h").unwrap();
        let again = UrlSigner::load_or_create(&data, "http://h").unwrap();
        assert_eq!(first.key, again.key, "the same key after a restart");
        assert_ne!(*first.key, [0u8; 32]);
        let path = data.join(KEY_FILE);
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex\n").unwrap();
        let e = UrlSigner::load_or_create(&data, "http://h").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("64 hex characters"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not hex\n", "a bad key file is left alone");
    }
}
