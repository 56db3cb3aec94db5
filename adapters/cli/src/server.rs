//! `ota serve`: the local server in one process. The device endpoint (embedded MQTT, or an
//! external broker with `--mqtt-url`), the jobs engine, signed firmware downloads and a JSON
//! HTTP API, all over the data dir's SQLite file and catalog folder.
//!
//! The server announces itself in `<data_dir>/server.json` so that `ota ask`, `ota sim` and
//! `ota rollouts watch` in other terminals find it without flags.

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
    let http = ota_local::listen(options.listen)
        .await
        .map_err(|e| Error::invalid("--listen", options.listen.to_string(), e.to_string()))?;
    let http_addr = http.local_addr().map_err(|e| io("listener", e))?;
    let base_url = format!("http://{http_addr}");
    let signer = UrlSigner::load_or_create(data_dir, base_url.clone()).map_err(|e| io("download key", e))?;
    let credentials = DeviceCredentials::load_or_create(data_dir).map_err(|e| io("device secret", e))?;

    let (link, mqtt_host, mqtt_port) = match &options.mqtt_url {
        None => {
            let (link, addr) = ota_local::link::embedded(options.mqtt_listen, Arc::new(credentials))
                .await
                .map_err(|e| Error::invalid("--mqtt-listen", options.mqtt_listen.to_string(), e.to_string()))?;
            (link, addr.ip().to_string(), addr.port())
        }
        Some(url) => {
            let link = ota_local::link::external(url, &format!("ota-cloud-{}", std::process::id()))
                .await
                .map_err(|e| Error::invalid("--mqtt-url", redact(url), e.to_string()))?;
            let (host, port) = broker_address(url);
            (link, host, port)
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
    let downloads = ota_local::download::Downloads::new(data_dir.to_path_buf(), signer);
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

    let info = ServerInfo { pid: std::process::id(), http: base_url, mqtt_host, mqtt_port, started_at: Utc::now() };
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
