//! The local jobs engine: the async shell around the transitions in `sqlite::transitions`.
//!
//! One task owns the engine. It takes device messages (from the embedded endpoint or an
//! external broker, see [`crate::link`]) and clock ticks, runs each as one SQLite
//! transaction, and only after the commit hands the replies to a publishing task and the
//! events to subscribers. Handling messages one at a time keeps every transition ordered:
//! the policy's `admit` and `decide` always see the state the last transition left.
//!
//! When the policy aborts a rollout, operators hear of it three ways: a structured log line
//! on stderr, the rollout's event stream, and, when configured, a JSON POST to a webhook.
//!
//! Command runs go through the same loop: every tick times out, aborts, paces and completes
//! them and publishes the requests due; a device's answer is recorded, and one that ends its
//! execution sends the next at once. A run that ends is logged (`command_run_ended`).
//!
//! With a service (`EngineOptions::service`), the engine also asks it for the revert of an
//! aborted rollout whose policy says `revert_on_abort` ([`FleetManager::revert_after`]): at the
//! abort, whenever a rollout completes (a finished revert calls the next), and every few
//! seconds while the aborted rollout's devices may still report (devices already updating
//! finish after an abort, and a shadow can arrive after the job's status). One task runs
//! these one at a time; each is idempotent, so a restart or a repeat starts nothing twice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use ota_core::names::{DeviceType, JobId};
use ota_core::rollout::{RolloutQuery, RolloutStatus};
use ota_core::service::FleetManager;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use crate::sqlite::{EngineContext, Output, RolloutEvent, SqliteStore};

pub use crate::sqlite::DeviceInput;

/// Where the engine's replies to devices go.
#[async_trait]
pub trait DevicePublisher: Send + Sync + 'static {
    /// Publishes at QoS 1.
    async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String>;
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How often timeouts, admissions and completions are checked without device traffic.
    pub tick: Duration,
    /// Receives `{"event": "rollout_aborted", ...}` as a JSON POST on every abort (`http://` only).
    pub webhook: Option<String>,
    /// Log every device message (`OTA_TRACE_DEVICES=1`), for diagnosing a fleet.
    pub trace: bool,
    /// The service over the same store, for reverts on abort; `None`: no reverts.
    pub service: Option<Arc<FleetManager>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        let trace = std::env::var("OTA_TRACE_DEVICES").is_ok_and(|v| v == "1");
        EngineOptions { tick: Duration::from_millis(200), webhook: None, trace, service: None }
    }
}

/// The most device inputs committed in one transaction (group commit).
const MAX_BATCH: usize = 256;

/// How often aborted rollouts with `revert_on_abort` are looked at again.
const REVERT_RECHECK: Duration = Duration::from_secs(5);

/// The engine. Cheap to share; [`JobsEngine::run`] drives it.
#[derive(Debug)]
pub struct JobsEngine {
    store: Arc<SqliteStore>,
    ctx: EngineContext,
    options: EngineOptions,
    events: broadcast::Sender<RolloutEvent>,
}

impl JobsEngine {
    /// An engine over `store`, signing download links with `ctx`.
    pub fn new(store: Arc<SqliteStore>, ctx: EngineContext, options: EngineOptions) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(JobsEngine { store, ctx, options, events })
    }

    /// Every event of every rollout from now on. A subscriber that falls behind by more than
    /// 4096 events misses some (`Lagged`) and can catch up from the store.
    pub fn subscribe(&self) -> broadcast::Receiver<RolloutEvent> {
        self.events.subscribe()
    }

    /// The store the engine runs on.
    pub fn store(&self) -> &Arc<SqliteStore> {
        &self.store
    }

    /// Runs until `shutdown` turns true or the device input closes. Storage errors are logged
    /// and the engine carries on: the transition that failed was rolled back whole, and the
    /// device will repeat its request.
    pub async fn run(
        self: Arc<Self>,
        mut input: mpsc::Receiver<DeviceInput>,
        publisher: Arc<dyn DevicePublisher>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (out_tx, out_rx) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
        let publishing = tokio::spawn(publish_loop(out_rx, publisher));
        let (revert_tx, revert_rx) = mpsc::unbounded_channel::<RevertCheck>();
        let reverting = self.options.service.clone().map(|svc| tokio::spawn(revert_loop(svc, revert_rx)));
        if self.options.service.is_some() {
            // Aborts before a restart may still owe a revert.
            let _ = revert_tx.send(RevertCheck::Recover);
        }
        let mut last_recheck = tokio::time::Instant::now();
        // Offers made before a restart may never have reached their devices, and notices of
        // rollouts canceled meanwhile (by the CLI, or just before a crash) wait in the outbox.
        // Every tick drains the outbox again.
        match self.store.pending_offers(self.ctx.clone(), Utc::now()).await {
            Ok(out) => self.dispatch(out, &out_tx, &revert_tx),
            Err(e) => log("error", "engine_recovery_failed", json!({"error": e.to_string()})),
        }
        let mut ticker = tokio::time::interval(self.options.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = ticker.tick() => {
                    match self.store.engine_tick(self.ctx.clone(), Utc::now()).await {
                        Ok(out) => self.dispatch(out, &out_tx, &revert_tx),
                        Err(e) => log("error", "engine_tick_failed", json!({"error": e.to_string()})),
                    }
                    if last_recheck.elapsed() >= REVERT_RECHECK {
                        last_recheck = tokio::time::Instant::now();
                        let _ = revert_tx.send(RevertCheck::Recheck);
                    }
                }
                message = input.recv() => {
                    let Some(first) = message else { break };
                    // Group commit: whatever else has queued up while the last transaction
                    // ran goes into this one. No wait is added: under light traffic a batch
                    // is one message; under a burst, one commit serves many.
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match input.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    self.handle(batch, &out_tx, &revert_tx).await;
                }
            }
        }
        drop(out_tx);
        drop(revert_tx);
        let _ = publishing.await;
        if let Some(r) = reverting {
            let _ = r.await;
        }
    }

    async fn handle(
        &self,
        batch: Vec<DeviceInput>,
        out_tx: &mpsc::UnboundedSender<(String, Vec<u8>)>,
        revert_tx: &mpsc::UnboundedSender<RevertCheck>,
    ) {
        if self.options.trace {
            for input in &batch {
                log(
                    "debug",
                    "device_input",
                    json!({"input": format!("{input:?}").chars().take(400).collect::<String>()}),
                );
            }
        }
        match self.store.handle_device_batch(self.ctx.clone(), batch).await {
            Ok(outs) => {
                for out in outs {
                    match out {
                        Ok(out) => self.dispatch(out, out_tx, revert_tx),
                        Err(e) => log("error", "device_message_failed", json!({"error": e.to_string()})),
                    }
                }
            }
            // The whole batch was rolled back; each device repeats its request.
            Err(e) => log("error", "device_message_failed", json!({"error": e.to_string()})),
        }
    }

    fn dispatch(
        &self,
        out: Output,
        out_tx: &mpsc::UnboundedSender<(String, Vec<u8>)>,
        revert_tx: &mpsc::UnboundedSender<RevertCheck>,
    ) {
        for message in out.publish {
            if self.options.trace {
                let body = String::from_utf8_lossy(&message.1).chars().take(300).collect::<String>();
                log("debug", "device_output", json!({"topic": message.0, "payload": body}));
            }
            let _ = out_tx.send(message);
        }
        for event in out.events {
            let _ = self.events.send(event);
        }
        for (id, device_type, reason) in out.aborted {
            notify_abort(&id, &device_type, &reason, self.options.webhook.clone());
            let _ = revert_tx.send(RevertCheck::Ended(id));
        }
        for id in out.completed {
            let _ = revert_tx.send(RevertCheck::Ended(id));
        }
        for (id, status, reason) in out.commands_ended {
            let level = if status == ota_core::commands::CommandRunStatus::Aborted { "warn" } else { "info" };
            log(level, "command_run_ended", json!({"command_run": id, "status": status.as_str(), "reason": reason}));
        }
    }
}

/// What the revert task is asked to look at.
#[derive(Debug)]
enum RevertCheck {
    /// A rollout just ended (aborted or completed).
    Ended(JobId),
    /// Every aborted rollout still watched.
    Recheck,
    /// At start-up: recently aborted rollouts with `revert_on_abort`.
    Recover,
}

/// Runs revert checks one at a time, so two never race for the same type. An aborted rollout
/// is watched for its in-progress timeout after its abort: devices that were updating may
/// still succeed, and are then reverted too.
async fn revert_loop(svc: Arc<FleetManager>, mut rx: mpsc::UnboundedReceiver<RevertCheck>) {
    let mut watched: std::collections::BTreeMap<JobId, chrono::DateTime<Utc>> = Default::default();
    while let Some(check) = rx.recv().await {
        let now = Utc::now();
        let ids: Vec<JobId> = match check {
            RevertCheck::Ended(id) => vec![id],
            RevertCheck::Recheck => {
                watched.retain(|_, until| *until > now);
                watched.keys().cloned().collect()
            }
            RevertCheck::Recover => match svc.backend().rollouts.list(&RolloutQuery::default()).await {
                Ok(all) => all
                    .into_iter()
                    .filter(|r| r.status == RolloutStatus::Aborted && r.policy.revert_on_abort)
                    .filter(|r| r.updated_at + watch_window(r) > now)
                    .map(|r| r.id)
                    .collect(),
                Err(e) => {
                    log("error", "revert_recovery_failed", json!({"error": e.to_string()}));
                    Vec::new()
                }
            },
        };
        for id in ids {
            match svc.backend().rollouts.get(&id).await {
                Ok(r) if r.status == RolloutStatus::Aborted && r.policy.revert_on_abort => {
                    watched.entry(id.clone()).or_insert(r.updated_at + watch_window(&r));
                }
                _ => {}
            }
            match svc.revert_after(&id).await {
                Ok(Some(started)) => log(
                    "warn",
                    "rollout_reverting",
                    json!({"after": id.as_str(), "started": started.summary(),
                           "devices": started.rollouts.iter().map(|r| r.things.len()).sum::<usize>()}),
                ),
                Ok(None) => {}
                Err(e) => {
                    // Refused (a closed gate, a changed image): audited once by the service;
                    // retrying every few seconds would only repeat the refusal.
                    watched.remove(&id);
                    log("error", "revert_failed", json!({"after": id.as_str(), "error": e.to_string()}));
                }
            }
        }
    }
}

/// How long after an abort its devices may still report: the in-progress timeout.
fn watch_window(r: &ota_core::rollout::Rollout) -> chrono::Duration {
    chrono::Duration::minutes(i64::from(r.policy.in_progress_timeout_minutes))
}

async fn publish_loop(mut rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>, publisher: Arc<dyn DevicePublisher>) {
    while let Some((topic, payload)) = rx.recv().await {
        if let Err(e) = publisher.publish(topic.clone(), payload).await {
            log("warn", "publish_failed", json!({"topic": topic, "error": e}));
        }
    }
}

/// One structured log line on stderr.
pub(crate) fn log(level: &str, event: &str, mut fields: serde_json::Value) {
    fields["level"] = json!(level);
    fields["event"] = json!(event);
    fields["at"] = json!(Utc::now().to_rfc3339());
    eprintln!("{fields}");
}

fn notify_abort(id: &JobId, device_type: &DeviceType, reason: &str, webhook: Option<String>) {
    let body = json!({"event": "rollout_aborted", "rollout": id.as_str(), "device_type": device_type.as_str(),
                      "reason": reason, "at": Utc::now().to_rfc3339()});
    log("warn", "rollout_aborted", body.clone());
    if let Some(url) = webhook {
        tokio::spawn(async move {
            if let Err(e) = post_json(&url, &body.to_string()).await {
                log("error", "webhook_failed", json!({"url": url, "error": e}));
            }
        });
    }
}

/// A JSON POST to an `http://` webhook with a 10 s budget, over reqwest (the HTTP client the
/// workspace already has): no redirects followed and no proxy from the environment, so the
/// request goes to exactly the configured URL; a status outside 2xx is an error.
pub async fn post_json(url: &str, body: &str) -> Result<u16, String> {
    if !url.starts_with("http://") {
        return Err(format!("only http:// webhooks are supported: {url}"));
    }
    let work = async {
        // reqwest has no crypto provider of its own (see the workspace manifest), and builds
        // its TLS settings even for http://: ring, unless one was installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_title_case_headers()
            .build()
            .map_err(|e| e.to_string())?;
        let response = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) { Ok(status) } else { Err(format!("the webhook answered {status}")) }
    };
    tokio::time::timeout(Duration::from_secs(10), work).await.map_err(|_| "the webhook timed out".to_string())?
}

/// A helper for tests and tools: waits until the rollout has ended (any status but
/// `IN_PROGRESS`) and every execution is final, or `timeout` passes.
pub async fn wait_until_settled(
    store: &SqliteStore,
    id: &JobId,
    timeout: Duration,
) -> ota_core::Result<crate::sqlite::RolloutProgress> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let p = store.rollout_progress(id).await?;
        let settled = !p.rollout.status.is_active() && p.counts.queued == 0 && p.counts.in_progress == 0;
        if settled || tokio::time::Instant::now() >= deadline {
            return Ok(p);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A one-request HTTP server that answers `status` and hands back what it received.
    fn server(status: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/ota", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&request).contains("\"event\"") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
                .unwrap();
            String::from_utf8(request).unwrap()
        });
        (url, handle)
    }

    #[tokio::test]
    async fn the_abort_webhook_posts_json_and_reports_a_refusal() {
        let (url, received) = server("204 No Content");
        let body = r#"{"event":"rollout_aborted","rollout":"update-x-1_0_0-abc"}"#;
        assert_eq!(post_json(&url, body).await, Ok(204));
        let request = received.join().unwrap();
        assert!(request.starts_with("POST /hooks/ota HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Content-Type: application/json"), "{request}");
        assert!(request.ends_with(body), "{request}");

        let (url, _received) = server("500 Internal Server Error");
        assert_eq!(post_json(&url, body).await, Err("the webhook answered 500".to_string()));
        assert!(post_json("https://example.com/x", body).await.unwrap_err().contains("only http://"));
    }
}
