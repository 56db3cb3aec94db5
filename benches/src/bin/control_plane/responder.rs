//! The broker-only baseline's cloud side: a trivial responder behind the same embedded MQTT
//! endpoint, with no SQLite and no engine. It keeps each device's execution in a map and
//! answers every device message with the reply the engine would send, in the engine's JSON
//! shapes (so the same number of messages of the same sizes cross the broker), and offers
//! the job to as many devices at once as the engine's policy would (`max_in_flight`).
//!
//! What it leaves out is exactly what the comparison is about: transactions, the policy's
//! statistics, the event log, registry and shadow writes, and a signed link per delivery.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use ota_core::names::ThingName;
use ota_local::link::{DeviceEvent, LinkPublisher};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// The job the responder hands out, as the engine's job document has it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub document: Value,
}

#[derive(Debug, Default)]
struct Execution {
    offered: bool,
    status: &'static str,
    details: Value,
    version: i64,
    started_at: i64,
    updated_at: i64,
}

/// Runs until the device events end. `start` offers the job; `done` fires with the instant
/// the last device's `SUCCEEDED` was answered.
pub async fn run(
    mut events: mpsc::Receiver<DeviceEvent>,
    publisher: LinkPublisher,
    job: Job,
    things: Vec<ThingName>,
    max_in_flight: usize,
    start: oneshot::Receiver<()>,
    done: oneshot::Sender<Instant>,
) {
    let queued_at = epoch();
    let mut executions: HashMap<ThingName, Execution> = things
        .iter()
        .map(|t| (t.clone(), Execution { status: "QUEUED", details: json!({}), version: 1, ..Default::default() }))
        .collect();
    let mut waiting: VecDeque<ThingName> = things.iter().cloned().collect();
    let mut shadows: HashMap<ThingName, i64> = HashMap::new();
    let mut in_flight = 0usize;
    let mut succeeded = 0usize;
    let total = things.len();
    let mut start = Some(start);
    let mut done = Some(done);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        tokio::select! {
            started = async { start.as_mut().expect("guarded").await }, if start.is_some() => {
                start = None;
                if started.is_ok() {
                    while in_flight < max_in_flight && let Some(thing) = waiting.pop_front() {
                        in_flight += 1;
                        offer(&mut executions, &thing, &job, queued_at, &mut out);
                    }
                }
            }
            event = events.recv() => {
                let Some(DeviceEvent::Message { thing, topic, payload }) = event else {
                    if event.is_none() { return; }
                    continue;
                };
                let now = epoch();
                let prefix = format!("$aws/things/{thing}/");
                let Some(rest) = topic.strip_prefix(&prefix) else { continue };
                let request: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                let token = request.get("clientToken").cloned();
                match rest {
                    "jobs/$next/get" => {
                        let mut body = json!({"timestamp": now});
                        if let Some(t) = token { body["clientToken"] = t; }
                        if let Some(e) = executions.get(&thing).filter(|e| e.offered && !terminal(e.status)) {
                            body["execution"] = execution_json(&thing, e, &job, queued_at);
                        }
                        out.push((format!("{prefix}jobs/$next/get/accepted"), body.to_string().into_bytes()));
                    }
                    "shadow/update" => {
                        let version = shadows.entry(thing.clone()).or_default();
                        *version += 1;
                        let state = request.get("state").cloned().unwrap_or(Value::Null);
                        let mut body = json!({"state": state, "version": *version, "timestamp": now});
                        if let Some(t) = token { body["clientToken"] = t; }
                        out.push((format!("{prefix}shadow/update/accepted"), body.to_string().into_bytes()));
                    }
                    _ => {
                        let Some(id) = rest.strip_prefix("jobs/").and_then(|r| r.strip_suffix("/update")) else {
                            continue;
                        };
                        let Some(e) = executions.get_mut(&thing).filter(|e| e.offered && id == job.id) else {
                            continue;
                        };
                        let status = match request.get("status").and_then(Value::as_str) {
                            Some("IN_PROGRESS") => "IN_PROGRESS",
                            Some("SUCCEEDED") => "SUCCEEDED",
                            Some("FAILED") => "FAILED",
                            Some("REJECTED") => "REJECTED",
                            _ => continue,
                        };
                        if terminal(e.status) {
                            continue;
                        }
                        e.status = status;
                        e.version += 1;
                        e.updated_at = now;
                        if let Some(d) = request.get("statusDetails") { e.details = d.clone(); }
                        let mut body = json!({
                            "executionState": {"status": status, "statusDetails": e.details, "versionNumber": e.version},
                            "timestamp": now,
                        });
                        if let Some(t) = token { body["clientToken"] = t; }
                        out.push((format!("{prefix}jobs/{id}/update/accepted"), body.to_string().into_bytes()));
                        if terminal(status) {
                            in_flight -= 1;
                            succeeded += usize::from(status == "SUCCEEDED");
                            if let Some(next) = waiting.pop_front() {
                                in_flight += 1;
                                offer(&mut executions, &next, &job, queued_at, &mut out);
                            }
                            let body = json!({"timestamp": now});
                            out.push((format!("{prefix}jobs/notify-next"), body.to_string().into_bytes()));
                        }
                    }
                }
            }
        }
        for (topic, payload) in out.drain(..) {
            let _ = publisher.publish(topic, payload).await;
        }
        if succeeded == total
            && let Some(done) = done.take()
        {
            let _ = done.send(Instant::now());
        }
    }
}

fn terminal(status: &str) -> bool {
    matches!(status, "SUCCEEDED" | "FAILED" | "REJECTED")
}

fn offer(
    executions: &mut HashMap<ThingName, Execution>,
    thing: &ThingName,
    job: &Job,
    queued_at: i64,
    out: &mut Vec<(String, Vec<u8>)>,
) {
    let Some(e) = executions.get_mut(thing) else { return };
    let now = epoch();
    e.offered = true;
    e.started_at = now;
    e.updated_at = now;
    let body = json!({"timestamp": now, "execution": execution_json(thing, e, job, queued_at)});
    out.push((format!("$aws/things/{thing}/jobs/notify-next"), body.to_string().into_bytes()));
}

/// The engine's `execution_json`, field for field.
fn execution_json(thing: &ThingName, e: &Execution, job: &Job, queued_at: i64) -> Value {
    json!({
        "jobId": job.id,
        "thingName": thing.as_str(),
        "status": e.status,
        "statusDetails": e.details,
        "queuedAt": queued_at,
        "lastUpdatedAt": e.updated_at,
        "versionNumber": e.version,
        "executionNumber": 1,
        "startedAt": e.started_at,
        "jobDocument": job.document,
    })
}

fn epoch() -> i64 {
    chrono::Utc::now().timestamp()
}
