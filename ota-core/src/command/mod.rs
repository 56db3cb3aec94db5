//! The device's commands, configuration and telemetry, sans-IO in the update machine's
//! style: events in, actions out ([`CommandMachine::handle`], [`CommandMachine::poll_action`]).
//!
//! The protocol is AWS IoT Device Management's Commands API: the cloud publishes a command
//! execution on `$aws/commands/things/{thing}/executions/{id}/request/json`, the device
//! answers on `.../response/json` with `{"status", "statusReason": {"reasonCode",
//! "reasonDescription"}, "result"?}` ([`CommandResponse`]). AWS leaves the request payload
//! to the command's author; ota's is `{"command": "reboot", "parameters": {...}}`
//! ([`CommandRequest`]). Configuration lives in the named shadow `config` (desired written
//! by the service, reported by the device, a delta when they differ); health and the last
//! telemetry in the classic shadow's reported state, telemetry on `dt/ota/{thing}/telemetry`.
//!
//! What a firmware supports is what it declares ([`Capabilities`], `metadata.json`'s
//! `commands` and `settings`): anything else is REJECTED `UNSUPPORTED_COMMAND`, a setting
//! that is unknown, of the wrong type or out of bounds is REJECTED naming the key and what
//! it accepts, and nothing is stored. `reboot` is refused (`UPDATE_IN_PROGRESS`) while the
//! update machine is anywhere but idle. An execution id is answered once: a redelivery of
//! the same request does nothing.

pub mod settings;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use settings::{Capabilities, SAMPLE_RATE, SettingError, SettingSpec, SettingType, UPDATE_CONFIG};

use crate::names::ThingName;
use crate::topics::{self, CONFIG_SHADOW, CommandTopic, ShadowOp, ShadowReply, ShadowTopic, ThingTopic, WILDCARD};
use crate::update::Phase;

/// The storage key of the stored configuration (NVS keys are at most 15 characters).
pub const CONFIG_KEY: &str = "ota_config";

/// The largest telemetry message a device publishes (the service refuses larger ones too).
pub const MAX_TELEMETRY_LEN: usize = 2048;

/// Telemetry interval when no `sample_rate_seconds` is declared or set.
pub const DEFAULT_SAMPLE_RATE_SECONDS: u64 = 60;

/// How many execution ids a device remembers, to answer each once.
const REMEMBERED_EXECUTIONS: usize = 32;

/// A command execution's status (the Commands API's `CommandExecutionStatus`). A device
/// sends the first four; `TimedOut` is the cloud's, for an execution not finished in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    InProgress,
    Succeeded,
    Failed,
    Rejected,
    TimedOut,
}

impl ExecutionStatus {
    /// As the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::InProgress => "IN_PROGRESS",
            ExecutionStatus::Succeeded => "SUCCEEDED",
            ExecutionStatus::Failed => "FAILED",
            ExecutionStatus::Rejected => "REJECTED",
            ExecutionStatus::TimedOut => "TIMED_OUT",
        }
    }

    /// Whether the execution is over.
    pub fn is_terminal(self) -> bool {
        self != ExecutionStatus::InProgress
    }
}

/// The Commands API's `StatusReason`: `reasonCode` matches `[A-Z0-9_-]+` (at most 64),
/// `reasonDescription` is free text (at most 1024).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReason {
    pub reason_code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason_description: String,
}

/// What a device publishes on `.../response/json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResponse {
    pub status: ExecutionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<StatusReason>,
    /// Named results; on AWS each value is a `CommandExecutionResult` (one string, boolean
    /// or binary value). ota's device machine sends none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Map<String, Value>>,
}

impl CommandResponse {
    /// A status with a reason.
    pub fn new(status: ExecutionStatus, code: &str, description: impl Into<String>) -> Self {
        let reason = StatusReason { reason_code: code.to_string(), reason_description: description.into() };
        CommandResponse { status, status_reason: Some(reason), result: None }
    }

    /// The JSON a device publishes.
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a response (the cloud side).
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    }
}

/// ota's command payload: `{"command": "update_config", "parameters": {"log_level": "debug"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    pub command: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

impl CommandRequest {
    /// The JSON the cloud publishes.
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a request; the error says what is wrong with it.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    }
}

/// Health as the device reports it (`state.reported.health` of its classic shadow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Warning,
    Error,
}

impl HealthStatus {
    /// `ok`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Warning => "warning",
            HealthStatus::Error => "error",
        }
    }

    /// Parses `ok`, `warning` (or `warn`, `warnings`) or `error` (or `errors`), any case.
    pub fn parse(s: &str) -> crate::error::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ok" | "healthy" => Ok(HealthStatus::Ok),
            "warning" | "warnings" | "warn" => Ok(HealthStatus::Warning),
            "error" | "errors" => Ok(HealthStatus::Error),
            _ => Err(crate::error::Error::invalid("health", s, "one of ok, warning, error")),
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device's health report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    pub status: HealthStatus,
    #[serde(default)]
    pub message: String,
}

impl Health {
    /// Healthy, no message.
    pub fn ok() -> Self {
        Health { status: HealthStatus::Ok, message: String::new() }
    }

    /// Reads `{"status": "...", "message": "..."}` as a device reports it; `None` when it is
    /// not that shape.
    pub fn from_reported(v: &serde_json::Value) -> Option<Self> {
        let status = HealthStatus::parse(v.get("status")?.as_str()?).ok()?;
        let message = v.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_string();
        Some(Health { status, message })
    }
}

/// Whether `id` is a Commands API execution id (`[a-zA-Z0-9_-]{1,64}`).
pub fn valid_execution_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Identifies an action whose outcome the machine waits for ([`CommandEvent::Done`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Task(u32);

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandEvent<'a> {
    /// The MQTT session is up.
    Connected {
        now_ms: u64,
    },
    Disconnected,
    /// A command execution for this device; `phase` is the update machine's, now.
    Request {
        execution_id: &'a str,
        payload: &'a [u8],
        phase: Phase,
    },
    /// The `config` shadow's delta (`.../update/delta`: `{"state": {...}}`) or document
    /// (`.../get/accepted`: `{"state": {"delta": {...}}}`).
    ConfigDelta {
        payload: &'a [u8],
    },
    /// Time passes (any monotonic origin); telemetry falls due.
    Tick {
        now_ms: u64,
    },
    /// The application's reading, after [`CommandAction::Sample`].
    Sampled {
        metrics: Map<String, Value>,
        health: Health,
    },
    /// The outcome of a [`CommandAction::PersistConfig`] or [`CommandAction::Run`].
    Done {
        task: Task,
        error: Option<String>,
    },
}

/// What the device should do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandAction {
    Subscribe {
        topic: String,
    },
    Publish {
        topic: String,
        payload: String,
    },
    /// Store `bytes` under [`CONFIG_KEY`], then report [`CommandEvent::Done`].
    PersistConfig {
        task: Task,
        bytes: Vec<u8>,
    },
    /// Restart the device (the response is already queued).
    Reboot,
    /// Run an application command (`identify`, `recalibrate`, or another the firmware
    /// declares), then report [`CommandEvent::Done`].
    Run {
        task: Task,
        command: String,
        parameters: Map<String, Value>,
    },
    /// Read the application's telemetry and health, then report [`CommandEvent::Sampled`].
    Sample,
}

#[derive(Debug)]
struct Pending {
    task: Task,
    /// `None`: a config delta, no execution to answer.
    execution_id: Option<String>,
    /// The configuration once stored (PersistConfig only).
    config: Option<Map<String, Value>>,
}

/// One device's commands, configuration and telemetry.
#[derive(Debug)]
pub struct CommandMachine {
    thing: String,
    capabilities: Capabilities,
    config: Map<String, Value>,
    /// Recent execution ids, oldest first.
    seen: VecDeque<String>,
    pending: Vec<Pending>,
    next_task: u32,
    connected: bool,
    next_sample_ms: Option<u64>,
    actions: VecDeque<CommandAction>,
}

impl CommandMachine {
    /// A machine for `thing` running a firmware that declares `capabilities`, with the
    /// configuration stored under [`CONFIG_KEY`] (if any). Stored values the firmware no
    /// longer accepts are dropped for the defaults; a record that does not parse counts
    /// as none.
    pub fn new(thing: &ThingName, capabilities: Capabilities, stored: Option<&[u8]>) -> Self {
        let mut config = capabilities.defaults();
        if let Some(Ok(Value::Object(stored))) = stored.map(serde_json::from_slice::<Value>) {
            for (key, value) in stored {
                if capabilities.settings.get(&key).is_some_and(|spec| spec.check(&key, &value).is_ok()) {
                    config.insert(key, value);
                }
            }
        }
        CommandMachine {
            thing: thing.as_str().to_string(),
            capabilities,
            config,
            seen: VecDeque::new(),
            pending: Vec::new(),
            next_task: 0,
            connected: false,
            next_sample_ms: None,
            actions: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Map<String, Value> {
        &self.config
    }

    /// What the firmware declares.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The telemetry interval in force, from `sample_rate_seconds`.
    pub fn sample_rate_ms(&self) -> u64 {
        let secs = self.config.get(SAMPLE_RATE).and_then(Value::as_u64).unwrap_or(DEFAULT_SAMPLE_RATE_SECONDS);
        secs.max(1).saturating_mul(1000)
    }

    /// The next action to execute, in order.
    pub fn poll_action(&mut self) -> Option<CommandAction> {
        self.actions.pop_front()
    }

    /// The topics this machine subscribes to once connected.
    pub fn subscriptions(&self) -> [String; 3] {
        [
            CommandTopic::Request.to_topic(&self.thing, WILDCARD),
            self.config_topic(ShadowOp::Update, Some(ShadowReply::Delta)),
            self.config_topic(ShadowOp::Get, Some(ShadowReply::Accepted)),
        ]
    }

    fn config_topic(&self, op: ShadowOp, reply: Option<ShadowReply>) -> String {
        ThingTopic::Shadow(ShadowTopic { reply, ..ShadowTopic::named(CONFIG_SHADOW, op) }).to_topic(&self.thing)
    }

    /// Parses an MQTT message and handles it. False for a topic that is not this machine's
    /// (the update machine's, another thing's), which is left alone.
    pub fn handle_message(&mut self, topic: &str, payload: &[u8], phase: Phase) -> bool {
        if let Some((thing, id, CommandTopic::Request)) = topics::parse_command(topic) {
            if thing != self.thing {
                return false;
            }
            self.handle(CommandEvent::Request { execution_id: id, payload, phase });
            return true;
        }
        match topics::parse_for(&self.thing, topic) {
            Some(ThingTopic::Shadow(ShadowTopic { name: Some(CONFIG_SHADOW), op, reply }))
                if matches!(
                    (op, reply),
                    (ShadowOp::Update, Some(ShadowReply::Delta)) | (ShadowOp::Get, Some(ShadowReply::Accepted))
                ) =>
            {
                self.handle(CommandEvent::ConfigDelta { payload });
                true
            }
            _ => false,
        }
    }

    /// Advances the machine by one event.
    pub fn handle(&mut self, event: CommandEvent<'_>) {
        match event {
            CommandEvent::Connected { now_ms } => self.on_connected(now_ms),
            CommandEvent::Disconnected => self.connected = false,
            CommandEvent::Request { execution_id, payload, phase } => self.on_request(execution_id, payload, phase),
            CommandEvent::ConfigDelta { payload } => self.on_delta(payload),
            CommandEvent::Tick { now_ms } => {
                if self.connected && self.next_sample_ms.is_none_or(|due| now_ms >= due) {
                    self.next_sample_ms = Some(now_ms.saturating_add(self.sample_rate_ms()));
                    self.actions.push_back(CommandAction::Sample);
                }
            }
            CommandEvent::Sampled { metrics, health } => self.on_sampled(metrics, health),
            CommandEvent::Done { task, error } => self.on_done(task, error),
        }
    }

    fn publish(&mut self, topic: String, payload: String) {
        self.actions.push_back(CommandAction::Publish { topic, payload });
    }

    fn respond(&mut self, execution_id: &str, response: &CommandResponse) {
        self.publish(CommandTopic::Response.to_topic(&self.thing, execution_id), response.to_payload());
    }

    fn reject(&mut self, execution_id: &str, code: &str, description: impl Into<String>) {
        self.respond(execution_id, &CommandResponse::new(ExecutionStatus::Rejected, code, description));
    }

    fn task(&mut self) -> Task {
        self.next_task = self.next_task.wrapping_add(1);
        Task(self.next_task)
    }

    fn on_connected(&mut self, now_ms: u64) {
        self.connected = true;
        for topic in self.subscriptions() {
            self.actions.push_back(CommandAction::Subscribe { topic });
        }
        self.report_config();
        // A change desired while the device was away is in the document, not a delta.
        self.publish(self.config_topic(ShadowOp::Get, None), "{}".to_string());
        // Health and telemetry right away, then at the interval.
        self.next_sample_ms = Some(now_ms);
        self.handle(CommandEvent::Tick { now_ms });
    }

    fn report_config(&mut self) {
        let payload = json!({"state": {"reported": self.config}}).to_string();
        self.publish(self.config_topic(ShadowOp::Update, None), payload);
    }

    fn on_request(&mut self, execution_id: &str, payload: &[u8], phase: Phase) {
        if !valid_execution_id(execution_id) || self.seen.iter().any(|s| s == execution_id) {
            // Not an execution this device can answer, or one it already has: a
            // redelivery is answered once.
            return;
        }
        if self.seen.len() == REMEMBERED_EXECUTIONS {
            self.seen.pop_front();
        }
        self.seen.push_back(execution_id.to_string());
        let request = match CommandRequest::parse(payload) {
            Ok(r) => r,
            Err(e) => return self.reject(execution_id, "INVALID_REQUEST", format!("not a command request: {e}")),
        };
        if !self.capabilities.supports(&request.command) {
            let mut declared = self.capabilities.commands.clone();
            if !self.capabilities.settings.is_empty() && !declared.iter().any(|c| c == UPDATE_CONFIG) {
                declared.push(UPDATE_CONFIG.to_string());
            }
            let description =
                format!("this firmware does not support {:?}; it supports: {}", request.command, declared.join(", "));
            return self.reject(execution_id, "UNSUPPORTED_COMMAND", description);
        }
        match request.command.as_str() {
            "reboot" => {
                if phase != Phase::Idle {
                    let description = format!("an update is in progress ({phase:?}); reboot once it has ended");
                    return self.reject(execution_id, "UPDATE_IN_PROGRESS", description);
                }
                let response = CommandResponse::new(ExecutionStatus::Succeeded, "REBOOTING", "rebooting now");
                self.respond(execution_id, &response);
                self.actions.push_back(CommandAction::Reboot);
            }
            UPDATE_CONFIG => match self.capabilities.check_config(&request.parameters) {
                Err(e) => self.reject(execution_id, e.code(), e.to_string()),
                Ok(()) => self.persist(Some(execution_id.to_string()), request.parameters),
            },
            _ => {
                let task = self.task();
                self.pending.push(Pending { task, execution_id: Some(execution_id.to_string()), config: None });
                self.actions.push_back(CommandAction::Run {
                    task,
                    command: request.command,
                    parameters: request.parameters,
                });
            }
        }
    }

    fn persist(&mut self, execution_id: Option<String>, changes: Map<String, Value>) {
        let mut config = self.config.clone();
        config.extend(changes);
        let task = self.task();
        let bytes = serde_json::to_vec(&config).unwrap_or_default();
        self.pending.push(Pending { task, execution_id, config: Some(config) });
        self.actions.push_back(CommandAction::PersistConfig { task, bytes });
    }

    fn on_delta(&mut self, payload: &[u8]) {
        let Ok(document) = serde_json::from_slice::<Value>(payload) else { return };
        // `update/delta` carries the differences in `state`; `get/accepted` in `state.delta`.
        let state = document.get("state");
        let delta = state.and_then(|s| s.get("delta")).or(state);
        let Some(Value::Object(delta)) = delta else { return };
        if delta.contains_key("desired") || delta.contains_key("reported") {
            // A whole document without a delta: reported and desired agree.
            return;
        }
        let changes: Map<String, Value> = delta
            .iter()
            .filter(|(k, v)| self.config.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if changes.is_empty() {
            return self.report_config();
        }
        match self.capabilities.check_config(&changes) {
            Ok(()) => self.persist(None, changes),
            // Nothing changes; the configuration in force stays reported, so the delta
            // (and the service's view of it) stays until an operator corrects it.
            Err(_) => self.report_config(),
        }
    }

    fn on_done(&mut self, task: Task, error: Option<String>) {
        let Some(i) = self.pending.iter().position(|p| p.task == task) else { return };
        let Pending { execution_id, config, .. } = self.pending.swap_remove(i);
        let response = match (error, config) {
            (None, Some(config)) => {
                self.config = config;
                self.report_config();
                CommandResponse::new(ExecutionStatus::Succeeded, "CONFIG_APPLIED", "stored and reported")
            }
            (None, None) => CommandResponse { status: ExecutionStatus::Succeeded, status_reason: None, result: None },
            (Some(e), Some(_)) => CommandResponse::new(
                ExecutionStatus::Failed,
                "STORAGE_ERROR",
                format!("cannot store the configuration: {e}"),
            ),
            (Some(e), None) => CommandResponse::new(ExecutionStatus::Failed, "ACTION_FAILED", e),
        };
        if let Some(id) = execution_id {
            self.respond(&id, &response);
        }
    }

    fn on_sampled(&mut self, metrics: Map<String, Value>, mut health: Health) {
        let telemetry = Value::Object(metrics);
        let len = telemetry.to_string().len();
        let mut reported = Map::new();
        if len > MAX_TELEMETRY_LEN {
            health = Health {
                status: HealthStatus::Warning,
                message: format!("telemetry of {len} bytes not sent (at most {MAX_TELEMETRY_LEN})"),
            };
        } else {
            self.publish(topics::telemetry_topic(&self.thing), telemetry.to_string());
            reported.insert("telemetry".to_string(), telemetry);
        }
        reported.insert("health".to_string(), json!(health));
        let payload = json!({"state": {"reported": reported}}).to_string();
        let shadow = ThingTopic::Shadow(ShadowTopic::classic(ShadowOp::Update)).to_topic(&self.thing);
        self.publish(shadow, payload);
    }
}
