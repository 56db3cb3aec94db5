//! What the engine sends devices, encoded as AWS IoT's MQTT APIs do: topics, rejections,
//! job documents with signed links, and the [`Output`] a transaction leaves to publish.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ota_core::names::{DeviceType, JobId, ThingName};
use ota_core::rollout::Rollout;
use ota_core::topics::{JobsTopic, Reply, ThingTopic};
use ota_core::version::FirmwareVersion;
use serde_json::{Value, json};

use super::events::RolloutEvent;

/// What a transition asks the outside world to do once it has committed.
#[derive(Debug, Default)]
pub struct Output {
    /// MQTT messages to devices: (topic, payload).
    pub publish: Vec<(String, Vec<u8>)>,
    /// Recorded events, in order.
    pub events: Vec<RolloutEvent>,
    /// Rollouts the policy aborted in this transition, with the reason: operators are told.
    pub aborted: Vec<(JobId, DeviceType, String)>,
    /// Rollouts that completed in this transition (a completed revert may call the next).
    pub completed: Vec<JobId>,
    /// Command runs that ended in this transition: (id, status, reason).
    pub commands_ended: Vec<(String, ota_core::commands::CommandRunStatus, Option<String>)>,
}

/// Signs the URL a device downloads `version` of `device_type` from, valid from `now`.
pub type FirmwareUrl = Arc<dyn Fn(&FirmwareVersion, &DeviceType, DateTime<Utc>) -> String + Send + Sync>;

/// What the engine needs besides the database: how to sign a download link.
#[derive(Clone)]
pub struct EngineContext {
    pub firmware_url: FirmwareUrl,
}

impl std::fmt::Debug for EngineContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineContext")
    }
}

pub(super) fn epoch(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// The job document a device receives, with a freshly signed download link (as AWS
/// replaces the pre-signed URL placeholder at delivery) and the signature verified when
/// the rollout started.
pub(super) fn job_document(ctx: Option<&EngineContext>, rollout: &Rollout, now: DateTime<Utc>) -> Value {
    let url = ctx.map(|c| (c.firmware_url)(&rollout.version, &rollout.device_type, now)).unwrap_or_default();
    rollout.job_document(url).to_value()
}

/// `topic` of `thing` (see [`ota_core::topics`]).
pub(super) fn topic(thing: &ThingName, topic: ThingTopic<'_>) -> String {
    topic.to_topic(thing.as_str())
}

/// `$aws/things/{thing}/jobs/notify-next`.
pub(super) fn notify_next_topic(thing: &ThingName) -> String {
    topic(thing, ThingTopic::Jobs(JobsTopic::NotifyNext))
}

pub(super) fn rejected(
    thing: &ThingName,
    what: ThingTopic<'_>,
    code: &str,
    message: &str,
    token: Option<&str>,
    now: DateTime<Utc>,
) -> (String, Vec<u8>) {
    rejected_with(thing, what, code, message, token, now, Value::Null)
}

/// [`rejected`] with one more field when `execution_state` is not null (a `VersionMismatch`
/// tells the device where its execution stands, as AWS does).
pub(super) fn rejected_with(
    thing: &ThingName,
    what: ThingTopic<'_>,
    code: &str,
    message: &str,
    token: Option<&str>,
    now: DateTime<Utc>,
    execution_state: Value,
) -> (String, Vec<u8>) {
    let mut body = json!({"code": code, "message": message, "timestamp": epoch(now)});
    if let Some(t) = token {
        body["clientToken"] = json!(t);
    }
    if !execution_state.is_null() {
        body["executionState"] = execution_state;
    }
    (topic(thing, what.with_reply(Reply::Rejected)), body.to_string().into_bytes())
}

pub(super) fn client_token(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(payload).ok()?.get("clientToken")?.as_str().map(str::to_string)
}
