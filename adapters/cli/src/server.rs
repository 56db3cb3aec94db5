//! `ota serve`: the local server in one process. The device endpoint (embedded MQTT, or an
//! external broker with `--mqtt-url`), the jobs engine, signed firmware downloads and a JSON
//! HTTP API, all over the data dir's SQLite file and catalog folder.
//!
//! The server announces itself in `<data_dir>/server.json` so that `ota ask`, `ota sim` and
//! `ota rollouts watch` in other terminals find it without flags.
//!
//! Devices: the embedded endpoint listens for MQTT over mutual TLS (`--mqtts-listen`, default
//! `127.0.0.1:8883`; each device's certificate from the data dir's CA, `ota devices enroll`)
//! and for plain MQTT with passwords (`--mqtt-listen`; loopback peers only unless
//! `--remote-passwords`). The HTTP server (API, page, MCP, downloads) speaks HTTPS with the
//! same CA when it listens beyond loopback (`--plain-http` keeps it plain), and signs download
//! links for `--public-url` (required when listening on `0.0.0.0` or `[::]`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use ota_core::service::FleetManager;
use ota_core::{Error, Result};
use ota_local::download::UrlSigner;
use ota_local::jobs::{DeviceInput, DevicePublisher, EngineOptions, JobsEngine};
use ota_local::link::{DeviceCredentials, DeviceEvent, LinkHandle, LinkPublisher};
use ota_local::{EngineContext, SqliteStore};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// File in the data dir that says where a running server listens.
pub const SERVER_FILE: &str = "server.json";

/// Rollout progress from the engine's executions: the one progress port, for MCP's
/// `get_rollout` and `ota://rollouts/{id}`, the chat, the page and its progress stream.
#[derive(Debug)]
pub struct LocalProgress(pub Arc<SqliteStore>);

#[async_trait]
impl ota_http::ProgressSource for LocalProgress {
    async fn counts(&self, id: &ota_core::names::JobId) -> ota_core::Result<Option<ota_http::Counts>> {
        let c = self.0.rollout_progress(id).await?.counts;
        Ok(Some(ota_http::Counts {
            total: c.total,
            waiting: c.waiting,
            queued: c.queued,
            in_progress: c.in_progress,
            succeeded: c.succeeded,
            failed: c.failed,
            rejected: c.rejected,
            timed_out: c.timed_out,
            canceled: c.canceled,
            removed: c.removed,
        }))
    }

    async fn executions(
        &self,
        id: &ota_core::names::JobId,
    ) -> ota_core::Result<Option<Vec<ota_http::DeviceExecution>>> {
        Ok(Some(self.0.executions(id).await?.iter().map(crate::live::device_execution).collect()))
    }

    async fn events(&self, id: &ota_core::names::JobId, after: i64) -> ota_core::Result<Option<serde_json::Value>> {
        Ok(Some(serde_json::to_value(self.0.rollout_events(id, after).await?).unwrap_or_default()))
    }
}

/// An external OIDC issuer whose tokens `/mcp` accepts instead of the local key's.
#[derive(Debug, Clone)]
pub struct OidcOptions {
    pub issuer: String,
    pub jwks: PathBuf,
    pub audience: Option<String>,
    pub client_id: Option<String>,
    pub roles_claim: String,
    /// The issuer's hosted sign-in (`https://PREFIX.auth.REGION.amazoncognito.com`): the chat
    /// page signs in there (code + PKCE, as `client_id`) instead of asking for a token.
    pub page_signin: Option<String>,
}

/// Where the TLS device port listens unless `--mqtts-listen` says otherwise.
pub const DEFAULT_MQTTS_LISTEN: &str = "127.0.0.1:8883";

/// The device link's TLS, public address and limits (`ota serve` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// MQTT over TLS with device certificates (`ota devices enroll`) [default: 127.0.0.1:8883;
    /// if that port is taken, the server starts without it and says so].
    #[arg(long, value_name = "ADDR")]
    pub mqtts_listen: Option<SocketAddr>,
    /// The URL devices reach the HTTP server by (`http://ota.lan:8080`), for download links
    /// and the server certificate's name; needed when --listen is 0.0.0.0 or [::].
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Another host name or IP address for the server certificate (repeat for several).
    #[arg(long = "tls-name", value_name = "HOST")]
    pub tls_names: Vec<String>,
    /// Plain HTTP even when --listen is beyond loopback (default there: HTTPS).
    #[arg(long)]
    pub plain_http: bool,
    /// Offer password authentication on --mqtt-listen to peers that are not on loopback
    /// (passwords would cross the network in clear).
    #[arg(long)]
    pub remote_passwords: bool,
    /// Device connections open at once, authenticated or not.
    #[arg(long, default_value_t = 20_000)]
    pub max_connections: usize,
    /// Device sockets that have not completed CONNECT yet (the oldest gives way to a new one).
    #[arg(long, default_value_t = 1024)]
    pub max_unauthenticated: usize,
    /// Seconds a device socket has for its TLS handshake and CONNECT.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub connect_timeout: u64,
}

impl Default for LinkArgs {
    fn default() -> Self {
        LinkArgs {
            mqtts_listen: None,
            public_url: None,
            tls_names: Vec::new(),
            plain_http: false,
            remote_passwords: false,
            max_connections: 20_000,
            max_unauthenticated: 1024,
            connect_timeout: 10,
        }
    }
}

impl LinkArgs {
    fn limits(&self) -> Result<ota_local::link::EndpointLimits> {
        let positive = |flag: &'static str, v: u64| {
            if v == 0 { Err(Error::invalid(flag, "0", "must be at least 1")) } else { Ok(()) }
        };
        positive("--max-connections", self.max_connections as u64)?;
        positive("--max-unauthenticated", self.max_unauthenticated as u64)?;
        positive("--connect-timeout", self.connect_timeout)?;
        Ok(ota_local::link::EndpointLimits {
            max_connections: self.max_connections,
            max_unauthenticated: self.max_unauthenticated,
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout),
        })
    }

    /// The host of --public-url, if any.
    fn public_host(&self) -> Option<String> {
        let url = self.public_url.as_deref()?;
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        (!host.is_empty()).then(|| host.to_string())
    }

    /// The names the server certificate carries besides loopback's: the public host, the
    /// addresses listened on when they are specific, and --tls-name.
    fn tls_names(&self, listening: &[SocketAddr]) -> Vec<String> {
        let mut names: Vec<String> = self.public_host().into_iter().collect();
        for addr in listening {
            if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
                names.push(addr.ip().to_string());
            }
        }
        names.extend(self.tls_names.iter().cloned());
        names.dedup();
        names
    }
}

/// Where the server listens and which broker it uses.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub oidc: Option<OidcOptions>,
    /// `Host` header values `/mcp` accepts besides loopback (a deployment behind a domain).
    pub allowed_hosts: Option<Vec<String>>,
    pub listen: SocketAddr,
    pub mqtt_listen: SocketAddr,
    /// An external broker (`mqtt://user:password@host:port`) instead of the embedded endpoint.
    pub mqtt_url: Option<String>,
    pub webhook: Option<String>,
    /// The chat model for requests the intent engine does not understand; `None`: the
    /// intent engine only.
    pub model: Option<Arc<dyn ota_core::agent::ChatModel>>,
    /// The device link's TLS, public URL and limits.
    pub link: LinkArgs,
}

/// What `server.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub pid: u32,
    /// `http://host:port` of the API and downloads.
    pub http: String,
    /// MQTT host and port devices connect to.
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// `mqtts://HOST:PORT` of the TLS device port as devices should be told it (what
    /// `ota devices enroll` writes); absent when the server has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtts: Option<String>,
    pub started_at: chrono::DateTime<Utc>,
}

impl ServerInfo {
    /// The running server of `data_dir`, if its process is alive.
    pub fn read(data_dir: &Path) -> Option<ServerInfo> {
        let info: ServerInfo = serde_json::from_slice(&std::fs::read(data_dir.join(SERVER_FILE)).ok()?).ok()?;
        let alive = Path::new(&format!("/proc/{}", info.pid)).exists() || !Path::new("/proc/self").exists();
        alive.then_some(info)
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub info: ServerInfo,
    data_dir: PathBuf,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    link: LinkHandle,
}

struct Publisher(LinkPublisher);

#[async_trait]
impl DevicePublisher for Publisher {
    async fn publish(&self, topic: String, payload: Vec<u8>) -> std::result::Result<(), String> {
        self.0.publish(topic, payload).await.map_err(|e| e.to_string())
    }
}

fn io(what: &str, e: impl std::fmt::Display) -> Error {
    Error::storage(format!("{what}: {e}"))
}

/// Starts everything and returns once it listens.
pub async fn start(
    data_dir: &Path,
    svc: Arc<FleetManager>,
    store: Arc<SqliteStore>,
    options: ServeOptions,
) -> Result<Server> {
    let link_args = &options.link;
    let limits = link_args.limits()?;
    let http = ota_local::listen(options.listen)
        .await
        .map_err(|e| Error::invalid("--listen", options.listen.to_string(), e.to_string()))?;
    let http_addr = http.local_addr().map_err(|e| io("listener", e))?;
    let https = !http_addr.ip().is_loopback() && !link_args.plain_http;
    let base_url =
        ota_local::download::link_base_url(http_addr, https, link_args.public_url.as_deref()).map_err(|e| {
            Error::invalid("--public-url", link_args.public_url.clone().unwrap_or_else(|| "(none)".into()), e)
        })?;
    let signer = UrlSigner::load_or_create(data_dir, base_url.clone()).map_err(|e| io("download key", e))?;
    let credentials = DeviceCredentials::load_or_create(data_dir).map_err(|e| io("device secret", e))?;
    // The TLS device port: the one asked for, else the default unless something holds it.
    let mqtts_listen = match link_args.mqtts_listen {
        Some(addr) => Some(addr),
        None if options.mqtt_url.is_some() => None,
        None => {
            let addr: SocketAddr = DEFAULT_MQTTS_LISTEN.parse().expect("a socket address");
            // With SO_REUSEADDR as the endpoint binds, so a restart's TIME_WAIT does not count.
            match ota_local::listen(addr).await {
                Ok(probe) => {
                    drop(probe);
                    Some(addr)
                }
                Err(e) => {
                    eprintln!(
                        "warning: no MQTT over TLS: {addr} is not free ({e}); devices with certificates cannot \
                         connect (pass --mqtts-listen ADDR)"
                    );
                    None
                }
            }
        }
    };
    let names = link_args.tls_names(&[Some(http_addr), mqtts_listen].into_iter().flatten().collect::<Vec<_>>());
    let ca = if https || mqtts_listen.is_some() {
        Some(ota_local::pki::LocalCa::load_or_create(data_dir).map_err(|e| io("the device CA", e))?)
    } else {
        None
    };

    let (link, mqtt_host, mqtt_port, mqtts) = match &options.mqtt_url {
        None => {
            let mut endpoint = ota_local::link::EndpointOptions::plain(options.mqtt_listen, Arc::new(credentials));
            endpoint.limits = limits;
            endpoint.remote_passwords = link_args.remote_passwords;
            if let (Some(addr), Some(ca)) = (mqtts_listen, &ca) {
                let tls =
                    ca.device_tls(&names).map_err(|e| Error::invalid("--tls-name", names.join(","), e.to_string()))?;
                endpoint.tls = Some((addr, tls));
            }
            let (link, addrs) = ota_local::link::embedded_endpoint(endpoint).await.map_err(|e| {
                let flags =
                    format!("{} / {}", options.mqtt_listen, mqtts_listen.map(|a| a.to_string()).unwrap_or_default());
                Error::invalid("--mqtt-listen / --mqtts-listen", flags, e.to_string())
            })?;
            let plain = addrs.plain.expect("a plain listener was asked for");
            let mqtts = addrs.tls.map(|tls| {
                let host = link_args.public_host().unwrap_or_else(|| {
                    if tls.ip().is_unspecified() { "localhost".to_string() } else { tls.ip().to_string() }
                });
                let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
                format!("mqtts://{host}:{}", tls.port())
            });
            (link, plain.ip().to_string(), plain.port(), mqtts)
        }
        Some(url) => {
            let link = ota_local::link::external(url, &format!("ota-cloud-{}", std::process::id()))
                .await
                .map_err(|e| Error::invalid("--mqtt-url", redact(url), e.to_string()))?;
            let (host, port) = broker_address(url);
            (link, host, port, None)
        }
    };
    let ota_local::link::DeviceLink { mut events, publisher, handle } = link;

    let sign = signer.clone();
    let ctx = EngineContext { firmware_url: Arc::new(move |v, t, now| sign.firmware_url(v, t, now)) };
    // The engine asks the service for reverts on abort (`revert_on_abort`).
    let engine_options =
        EngineOptions { webhook: options.webhook.clone(), service: Some(svc.clone()), ..Default::default() };
    let engine = JobsEngine::new(store.clone(), ctx, engine_options);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (input_tx, input_rx) = mpsc::channel(4096);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let input = match event {
                DeviceEvent::Connected { thing } => DeviceInput::Connected(thing),
                DeviceEvent::Disconnected { thing } => DeviceInput::Disconnected(thing),
                DeviceEvent::Message { thing, topic, payload } => DeviceInput::Message { thing, topic, payload },
            };
            if input_tx.send(input).await.is_err() {
                break;
            }
        }
    }));
    tasks.push(tokio::spawn(engine.clone().run(input_rx, Arc::new(Publisher(publisher)), shutdown_rx.clone())));

    // MCP over streamable HTTP, behind bearer JWTs signed by the data dir's local key
    // (`ota token create`); clients find the authorization details at the RFC 9728 URL.
    let issuer = ota_auth::LocalIssuer::load_or_create(data_dir).map_err(|e| io("the local token signing key", e))?;
    let (verifier, authorization_server) = match &options.oidc {
        None => (issuer.verifier(), base_url.clone()),
        Some(o) => {
            let jwks = std::fs::read_to_string(&o.jwks)
                .map_err(|e| Error::invalid("--oidc-jwks", o.jwks.display().to_string(), e.to_string()))?;
            let mut config = ota_auth::VerifierConfig::new(o.issuer.clone());
            config.audience = o.audience.clone();
            config.client_id = o.client_id.clone();
            config.roles_claim = o.roles_claim.clone();
            let verifier = ota_auth::JwtVerifier::from_jwks_json(config, &jwks)
                .map_err(|e| Error::invalid("--oidc-issuer", o.issuer.clone(), e.to_string()))?;
            (verifier, o.issuer.clone())
        }
    };
    let verifier = Arc::new(verifier);
    let progress = Arc::new(LocalProgress(store.clone()));
    let mcp_server = ota_mcp::OtaMcp::new(svc.clone(), Some(progress.clone()));
    let bearer = ota_auth::require_bearer(verifier, ota_auth::resource_metadata_url(&base_url));
    let mcp = mcp_server.clone().http_router(options.allowed_hosts.clone()).layer(bearer.clone());
    let well_known =
        ota_auth::well_known_router(format!("{base_url}/mcp"), vec![authorization_server], Some(issuer.jwks()));
    // The chat page and the JSON API, behind the same bearer tokens as MCP. The model (when
    // configured) gets exactly the MCP tools.
    let sessions = Arc::new(ota_core::agent::MemorySessions::default());
    let mut assistant = ota_core::agent::Assistant::new(svc.clone(), sessions);
    if let Some(model) = options.model.clone() {
        assistant = assistant.with_model(model, Arc::new(ota_mcp::ChatTools::new(mcp_server)));
    }
    let page = ota_http::PageConfig {
        auth: match options.oidc.as_ref().and_then(|o| o.page_signin.clone().zip(o.client_id.clone())) {
            Some((domain, client_id)) => {
                ota_http::PageAuth::Cognito { domain, client_id, scopes: "openid email profile".into() }
            }
            None => ota_http::PageAuth::Token,
        },
        model: assistant.model(),
        backend: "local".into(),
        streaming: true,
    };
    let web = ota_http::Web::new(assistant, Some(progress));
    // Firmware downloads: sent with sendfile on their own connections, the rest through axum.
    let mut downloads = ota_local::download::Downloads::new(data_dir.to_path_buf(), signer);
    if let (true, Some(ca)) = (https, &ca) {
        let config = ca.https_config(&names).map_err(|e| io("the HTTPS certificate", e))?;
        downloads = downloads.with_tls(config);
    }
    let app = ota_http::public_router(&page)
        .merge(web.api_router().layer(bearer))
        .merge(downloads.router())
        .merge(mcp)
        .merge(well_known);
    let mut stop = shutdown_rx;
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = downloads.serve(http, app, stop).await {
            eprintln!("error: the HTTP server stopped: {e}");
        }
    }));

    let info =
        ServerInfo { pid: std::process::id(), http: base_url, mqtt_host, mqtt_port, mqtts, started_at: Utc::now() };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| io("server.json", e))?;
    std::fs::write(data_dir.join(SERVER_FILE), json).map_err(|e| io("server.json", e))?;
    Ok(Server { info, data_dir: data_dir.to_path_buf(), shutdown, tasks, link: handle })
}

impl Server {
    /// Stops the engine, the HTTP server and the device link, and removes `server.json`.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.link.shutdown().await;
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        let _ = std::fs::remove_file(self.data_dir.join(SERVER_FILE));
    }
}

/// The broker's host and port from `mqtt://[user:pass@]host[:port]`.
fn broker_address(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.rsplit_once('@').map_or(rest, |(_, a)| a).split('/').next().unwrap_or("");
    match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(1883)),
        None => (authority.to_string(), 1883),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, rest)), Some((_, host))) if rest.contains('@') => {
            let user = rest.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_give_host_and_port_and_never_print_the_password() {
        assert_eq!(broker_address("mqtt://cloud:s3cret@127.0.0.1:18830"), ("127.0.0.1".into(), 18830));
        assert_eq!(broker_address("mqtt://broker.local"), ("broker.local".into(), 1883));
        assert_eq!(redact("mqtt://cloud:s3cret@127.0.0.1:1883"), "mqtt://cloud:***@127.0.0.1:1883");
        assert_eq!(redact("mqtt://127.0.0.1:1883"), "mqtt://127.0.0.1:1883");
    }
}
