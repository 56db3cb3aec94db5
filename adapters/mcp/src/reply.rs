//! Tool outputs: structured content (the service's own types, serialized; lists wrapped in an
//! object so every client gets `structuredContent`) plus a readable summary. The content
//! blocks are the summary first, then the JSON, so a client that ignores structured content
//! still has every id and number.
//!
//! Every tool declares an output schema ([`output_schema`]): the JSON Schema of exactly what
//! its `structuredContent` holds on success (the types below, or the service's types, which
//! derive `JsonSchema` next to `Serialize`), or else the refusal `{ "error", "message" }`
//! ([`Refused`]), which a refused call carries with `isError: true`.

use ota_core::Error;
use ota_core::config::TypeConfig;
use ota_core::device::Device;
use ota_core::plan::Plan;
use ota_core::rollout::Rollout;
use ota_core::service::{DeviceTypeSummary, FirmwareEntry, FleetStatus, StartOutcome};
use rmcp::ErrorData;
use rmcp::handler::server::tool::IntoCallToolResult;
use rmcp::model::JsonObject;
use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// A successful tool result.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    value: Value,
    summary: String,
}

/// Why a call failed: a protocol error (malformed call, no caller, storage down) or the
/// service's refusal, returned as a tool result with `isError: true`.
#[derive(Debug, Clone)]
pub enum Failure {
    Protocol(ErrorData),
    Refused(Box<CallToolResult>),
}

/// What every tool returns.
pub type Outcome = Result<Reply, Failure>;

impl Reply {
    /// The structured value and the summary.
    pub fn into_parts(self) -> (Value, String) {
        (self.value, self.summary)
    }

    fn new(value: impl Serialize, summary: String) -> Self {
        Reply { value: serde_json::to_value(value).unwrap_or(Value::Null), summary }
    }
}

impl IntoCallToolResult for Reply {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        let mut result = CallToolResult::structured(self.value.clone());
        result.content = vec![ContentBlock::text(self.summary), ContentBlock::text(self.value.to_string())];
        Ok(result.into())
    }
}

impl IntoCallToolResult for Failure {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        match self {
            Failure::Protocol(e) => Err(e),
            Failure::Refused(r) => Ok((*r).into()),
        }
    }
}

/// Maps a service error: `Invalid` → invalid params, `Storage` → internal error, the rest →
/// a tool error result carrying the service's message.
pub fn tool_error(e: Error) -> Failure {
    match &e {
        Error::Invalid { .. } => Failure::Protocol(ErrorData::invalid_params(e.to_string(), None)),
        Error::Storage(_) => Failure::Protocol(ErrorData::internal_error(e.to_string(), None)),
        _ => {
            let kind = e.kind();
            let message = e.to_string();
            let refused = Refused { error: kind.to_string(), message: message.clone() };
            let mut result = CallToolResult::structured_error(json!(refused));
            result.content = vec![ContentBlock::text(message)];
            Failure::Refused(Box::new(result))
        }
    }
}

/// The structured content of a refused call (`isError: true`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Refused {
    /// What kind of refusal: `not_found`, `forbidden`, `refused`, `conflict`, `integrity`, ...
    pub error: String,
    /// The service's message: which role is needed, which versions exist, ...
    pub message: String,
}

/// What a tool's structured content is: its result, or the refusal of a refused call.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema only: replies serialize the inner values")]
enum OrRefused<T> {
    Ok(T),
    Refused(Refused),
}

/// The output schema of a tool whose successful structured content is a `T`: `T` or
/// [`Refused`]. The root says `"type": "object"`, as MCP clients require of an output schema.
pub fn output_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    let mut schema = rmcp::handler::server::tool::schema_for_output::<OrRefused<T>>().as_ref().clone();
    schema.insert("type".into(), json!("object"));
    Arc::new(schema)
}

/// `list_device_types`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeviceTypes {
    pub device_types: Vec<DeviceTypeSummary>,
}

/// `list_firmware`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FirmwareList {
    pub firmware: Vec<FirmwareEntry>,
}

/// `list_rollouts`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Rollouts {
    /// Newest first.
    pub rollouts: Vec<Rollout>,
}

/// `get_rollout` and `cancel_rollout`: the rollout, and its progress when the backend reports
/// it (`null` otherwise, and always after a cancel).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RolloutReply {
    pub rollout: Rollout,
    #[schemars(with = "Option<Progress>")]
    pub progress: Option<Value>,
}

/// What [`crate::progress::report`] writes: devices per execution state, and each device's
/// execution where the backend lists them (`null` where it does not).
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only")]
struct Progress {
    counts: Counts,
    devices: Option<Vec<Execution>>,
}

/// [`crate::Counts`] as serialized.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only")]
struct Counts {
    total: u32,
    waiting: u32,
    queued: u32,
    in_progress: u32,
    succeeded: u32,
    failed: u32,
    rejected: u32,
    timed_out: u32,
    canceled: u32,
    removed: u32,
}

/// [`crate::DeviceExecution`] as serialized.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only")]
struct Execution {
    thing: ota_core::names::ThingName,
    /// The Jobs state: `QUEUED`, `IN_PROGRESS`, `SUCCEEDED`, `FAILED`, `REJECTED`, `TIMED_OUT`,
    /// `CANCELED` or `REMOVED`.
    status: String,
    /// The reason code the device reported, when it gave one.
    reason: Option<String>,
}

/// `rollback` and `ask`: a plan (nothing started), or what a start did.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema only: replies serialize the plan or the outcome itself")]
pub enum PlanOrStarted {
    Plan(Plan),
    Started(StartOutcome),
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub fn device_types(types: Vec<DeviceTypeSummary>) -> Reply {
    let lines: Vec<String> = types
        .iter()
        .map(|t| {
            let versions: Vec<String> = t.versions.iter().map(ToString::to_string).collect();
            format!(
                "- {} (group {}): OTA {}, {} device{}, versions {}",
                t.device_type,
                t.thing_group,
                if t.ota_enabled { "enabled" } else { "DISABLED" },
                t.devices,
                plural(t.devices),
                if versions.is_empty() { "none".to_string() } else { versions.join(", ") }
            )
        })
        .collect();
    let summary = format!("{} device type{}:\n{}", types.len(), plural(types.len()), lines.join("\n"));
    Reply::new(DeviceTypes { device_types: types }, summary)
}

pub fn firmware(entries: Vec<FirmwareEntry>) -> Reply {
    let lines: Vec<String> = entries
        .iter()
        .map(|f| match (&f.metadata, &f.problem) {
            (Some(m), _) => format!("- {} {}: {} bytes, {}", f.device_type, f.version, m.size, m.release_notes),
            (None, Some(p)) => format!("- {} {}: unreadable metadata ({p})", f.device_type, f.version),
            (None, None) => format!("- {} {}", f.device_type, f.version),
        })
        .collect();
    let summary = format!("{} firmware{}:\n{}", entries.len(), plural(entries.len()), lines.join("\n"));
    Reply::new(FirmwareList { firmware: entries }, summary)
}

pub fn fleet(status: FleetStatus) -> Reply {
    let lines: Vec<String> = status
        .summary
        .iter()
        .map(|s| {
            let by: Vec<String> = s.by_version.iter().map(|(v, n)| format!("{n} on {v}")).collect();
            format!(
                "- {}: {} device{} ({} connected): {}",
                s.device_type,
                s.total,
                plural(s.total),
                s.connected,
                by.join(", ")
            )
        })
        .collect();
    let summary = format!(
        "{} device{} match:\n{}",
        status.devices.len(),
        plural(status.devices.len()),
        if lines.is_empty() { "(none)".to_string() } else { lines.join("\n") }
    );
    Reply::new(&status, summary)
}

pub fn device(d: Device) -> Reply {
    let summary = format!(
        "{} ({}, group {}) runs {}, {}.",
        d.thing,
        d.device_type,
        d.thing_group,
        d.firmware_version.as_ref().map_or_else(|| "an unknown version".to_string(), ToString::to_string),
        if d.connected { "connected" } else { "offline" }
    );
    Reply::new(&d, summary)
}

/// A plan, with what to do next when it can be started.
pub fn plan(p: Plan, next: &str) -> Reply {
    let mut lines = vec![p.message.clone()];
    for d in &p.deployments {
        lines.push(format!(
            "- {} → {}: {} device{} ({}), rollout id {}",
            d.device_type,
            d.version,
            d.things.len(),
            plural(d.things.len()),
            d.things.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "),
            d.rollout_id
        ));
    }
    for r in &p.refusals {
        lines.push(format!("- refused {}: {}", r.target, r.reason));
    }
    if let Some(id) = &p.plan_id {
        lines.push(format!(
            "plan_id {id}. Nothing has changed yet: show this plan to the person; to run it, call {next} with the same arguments and plan_id \"{id}\"."
        ));
    }
    Reply::new(&p, lines.join("\n"))
}

/// What a start did, item by item, in the service's words ("started X (type)", "already
/// running X (type), started at …", "refused X (type), nothing changed for it: …").
pub fn started(o: StartOutcome) -> Reply {
    let mut lines = Vec::new();
    if o.nothing_changed() {
        lines.push("Refused, nothing changed:".to_string());
    }
    for item in &o.items {
        let on = match o.rollouts.iter().find(|r| r.id == item.rollout_id) {
            Some(r) => {
                format!(": {} → {} on {} device{}", r.device_type, r.version, r.things.len(), plural(r.things.len()))
            }
            None => String::new(),
        };
        lines.push(format!("- {}{on}", item.summary()));
    }
    for r in &o.plan.refusals {
        lines.push(format!("- not planned {}: {}", r.target, r.reason));
    }
    if !o.rollouts.is_empty() {
        lines.push("Watch with get_rollout; cancel_rollout stops devices that have not started.".to_string());
    }
    Reply::new(&o, lines.join("\n"))
}

pub fn rollout(r: Rollout, progress: Option<Value>) -> Reply {
    let mut summary = format!(
        "Rollout {}: {} {} → {} on {} device{}, status {}{}.",
        r.id,
        r.action.as_str(),
        r.device_type,
        r.version,
        r.things.len(),
        plural(r.things.len()),
        r.status.as_str(),
        r.status_reason.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
    );
    if let Some(p) = &progress {
        summary.push_str(&format!(" Progress: {p}"));
    }
    Reply::new(RolloutReply { rollout: r, progress }, summary)
}

pub fn rollouts(rs: Vec<Rollout>) -> Reply {
    let lines: Vec<String> = rs
        .iter()
        .map(|r| {
            format!("- {} {} {} → {} ({} devices)", r.id, r.status.as_str(), r.device_type, r.version, r.things.len())
        })
        .collect();
    let summary = if rs.is_empty() { "No rollouts match.".to_string() } else { lines.join("\n") };
    Reply::new(Rollouts { rollouts: rs }, summary)
}

pub fn config(c: TypeConfig) -> Reply {
    let summary = format!(
        "OTA is now {} for {} (by {}).",
        if c.ota_enabled { "enabled" } else { "disabled" },
        c.device_type,
        c.updated_by
    );
    Reply::new(&c, summary)
}

/// `get_device_status`: the device's whole status, and a line that says it all.
pub fn device_status(s: ota_core::service::DeviceStatus) -> Reply {
    let mut lines = vec![s.summary.clone()];
    if let Some(t) = &s.telemetry {
        lines.push(format!("Last telemetry at {}: {}", t.at.to_rfc3339(), Value::Object(t.values.clone())));
    }
    if !s.config.reported.is_empty() || !s.config.desired.is_empty() {
        lines.push(format!(
            "Configuration reported {}, desired {}.",
            Value::Object(s.config.reported.clone()),
            Value::Object(s.config.desired.clone())
        ));
    }
    if !s.connected {
        lines.push("It is offline: commands are never sent to it; tell the person instead.".to_string());
    }
    Reply::new(&s, lines.join("\n"))
}

/// `list_devices`: the devices matching, one line each, and the per-type summary.
pub fn devices(status: FleetStatus) -> Reply {
    let lines: Vec<String> = status
        .devices
        .iter()
        .map(|d| {
            let mut line = format!(
                "- {} ({}) {}, runs {}",
                d.thing,
                d.device_type,
                if d.connected { "online" } else { "offline" },
                d.firmware_version.as_ref().map_or_else(|| "an unknown version".to_string(), ToString::to_string)
            );
            if let Some(l) = d.location() {
                line.push_str(&format!(", at {l}"));
            }
            match &d.health {
                Some(h) if h.message.is_empty() => line.push_str(&format!(", health {}", h.status)),
                Some(h) => line.push_str(&format!(", health {} ({})", h.status, h.message)),
                None => line.push_str(", health not reported"),
            }
            line.push_str(&format!(", {}", d.state));
            line
        })
        .collect();
    let n = status.devices.len();
    let summary = format!(
        "{n} device{} match{}",
        plural(n),
        if lines.is_empty() { ".".to_string() } else { format!(":\n{}", lines.join("\n")) }
    );
    Reply::new(&status, summary)
}

/// `send_command`: a command plan (nothing sent), or what a start did.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema only: replies serialize the plan or the start itself")]
pub enum CommandPlanOrStart {
    Plan(ota_core::commands::CommandPlan),
    Started(ota_core::service::CommandStart),
}

/// A command plan, with what to do next when it can be sent.
pub fn command_plan(p: ota_core::commands::CommandPlan) -> Reply {
    let mut lines = vec![p.message.clone()];
    for t in &p.targets {
        lines.push(format!(
            "- {} ({}, firmware {}, {}{})",
            t.thing,
            t.device_type,
            t.firmware_version.as_deref().unwrap_or("unknown"),
            t.state,
            t.location.as_deref().map(|l| format!(", at {l}")).unwrap_or_default()
        ));
    }
    for r in &p.refusals {
        lines.push(format!("- refused {}: {}", r.target, r.reason));
    }
    match (&p.plan_id, &p.running) {
        (Some(_), Some(run)) => {
            lines.push(format!("Exactly this command runs already as {run}: watch it with get_command."));
        }
        (Some(id), None) => lines.push(format!(
            "plan_id {id}. Nothing has been sent: show this plan to the person (and any refused device, such as an offline one); to send it, call send_command with the same arguments and plan_id \"{id}\"."
        )),
        (None, _) => lines.push("Nothing can be sent: tell the person why, from the refusals.".to_string()),
    }
    Reply::new(&p, lines.join("\n"))
}

/// What a confirmed command did: started, or already running.
pub fn command_started(s: ota_core::service::CommandStart) -> Reply {
    let mut lines = vec![s.message.clone()];
    for r in &s.run.refusals {
        lines.push(format!("- not sent to {}: {}", r.target, r.reason));
    }
    if s.run.is_active() {
        lines.push(format!("Watch it with get_command (id \"{}\").", s.run.id));
    }
    Reply::new(&s, lines.join("\n"))
}

/// `get_command`: the run and each device's execution.
pub fn command_run(r: ota_core::commands::CommandRun) -> Reply {
    let mut lines = vec![r.summary()];
    for e in &r.executions {
        let mut line = format!("- {} {}", e.thing, e.state);
        if let Some(reason) = &e.reason {
            line.push_str(&format!(": {reason}"));
        }
        if let Some(result) = &e.result {
            line.push_str(&format!(" (result {})", Value::Object(result.clone())));
        }
        lines.push(line);
    }
    for f in &r.refusals {
        lines.push(format!("- not sent to {}: {}", f.target, f.reason));
    }
    Reply::new(&r, lines.join("\n"))
}

/// `get_telemetry`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TelemetryReply {
    pub thing: ota_core::names::ThingName,
    /// Oldest first.
    pub points: Vec<ota_core::ports::TelemetryPoint>,
}

pub fn telemetry(thing: ota_core::names::ThingName, points: Vec<ota_core::ports::TelemetryPoint>) -> Reply {
    let n = points.len();
    let mut summary = format!("{n} telemetry point{} from {thing}", plural(n));
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        summary.push_str(&format!(
            ", {} to {}; the newest: {}",
            first.at.to_rfc3339(),
            last.at.to_rfc3339(),
            Value::Object(last.values.clone())
        ));
    }
    summary.push('.');
    Reply::new(TelemetryReply { thing, points }, summary)
}
