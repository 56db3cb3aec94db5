//! The MCP server's tools as the chat assistant's [`Toolbox`]: the same names, descriptions,
//! schemas and code paths, called in process as the chat's authenticated caller.
//!
//! Which tools change the fleet comes from their MCP annotations: a tool not marked
//! read-only is [`ToolEffect::Change`], which the assistant never runs on the model's word.
//! For those, [`Toolbox::preview`] asks the service what the call would do (planning, the
//! rollout to cancel, the gate to flip), with the caller's role checked and nothing changed,
//! and returns the action the person is asked to confirm.

use async_trait::async_trait;
use ota_core::agent::{PendingAction, ToolEffect, ToolOutput, ToolSpec, Toolbox};
use ota_core::auth::Caller;
use ota_core::names::{DeviceType, JobId};
use ota_core::plan::{Action, Plan};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::Extensions;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::reply::{Failure, Outcome};
use crate::{AskArgs, OtaMcp, RollbackArgs, SendCommandArgs, StartArgs};

/// The MCP tools for the chat assistant.
#[derive(Debug, Clone)]
pub struct ChatTools {
    mcp: OtaMcp,
    specs: Vec<ToolSpec>,
}

impl ChatTools {
    /// The tools of `mcp` (built with [`OtaMcp::new`]).
    pub fn new(mcp: OtaMcp) -> Self {
        let specs = OtaMcp::tool_router()
            .list_all()
            .into_iter()
            .map(|t| ToolSpec {
                name: t.name.to_string(),
                description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                input_schema: Value::Object((*t.input_schema).clone()),
                effect: if t.annotations.and_then(|a| a.read_only_hint) == Some(true) {
                    ToolEffect::Read
                } else {
                    ToolEffect::Change
                },
            })
            .collect();
        ChatTools { mcp, specs }
    }

    fn as_caller(&self, caller: &Caller) -> OtaMcp {
        OtaMcp { fixed_caller: Some(caller.clone()), ..self.mcp.clone() }
    }
}

fn args<T: DeserializeOwned>(name: &str, v: &Value) -> Result<Parameters<T>, ToolOutput> {
    serde_json::from_value(v.clone()).map(Parameters).map_err(|e| {
        ToolOutput::error(format!("Invalid arguments for {name}: {e}. Call it again following its schema."))
    })
}

/// A tool outcome as the model reads it: the summary, then the JSON.
fn output(outcome: Outcome) -> ToolOutput {
    match outcome {
        Ok(reply) => {
            let (value, summary) = reply.into_parts();
            ToolOutput { ok: true, text: format!("{summary}\n{value}"), data: value }
        }
        Err(Failure::Protocol(e)) => ToolOutput::error(e.message.to_string()),
        Err(Failure::Refused(result)) => {
            let text: Vec<String> =
                result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>();
            ToolOutput { ok: false, text: text.join("\n"), data: result.structured_content.clone().unwrap_or_default() }
        }
    }
}

/// The start of a plan in a tool output, when it can be started.
fn start_of(out: &ToolOutput) -> Option<PendingAction> {
    let plan: Plan = serde_json::from_value(out.data.clone()).ok()?;
    if !matches!(plan.action, Action::Update | Action::Rollback) || plan.deployments.is_empty() {
        return None;
    }
    PendingAction::start_of(&plan)
}

fn refused(e: ota_core::Error) -> ToolOutput {
    ToolOutput { ok: false, text: e.to_string(), data: json!({ "error": e.to_string() }) }
}

#[async_trait]
impl Toolbox for ChatTools {
    fn specs(&self) -> Vec<ToolSpec> {
        self.specs.clone()
    }

    async fn call(&self, caller: &Caller, name: &str, a: &Value) -> ToolOutput {
        let mcp = self.as_caller(caller);
        let ext = Extensions::default();
        let outcome = match name {
            "list_device_types" => mcp.list_device_types(ext).await,
            "list_firmware" => match args(name, a) {
                Ok(p) => mcp.list_firmware(ext, p).await,
                Err(e) => return e,
            },
            "fleet_status" => match args(name, a) {
                Ok(p) => mcp.fleet_status(ext, p).await,
                Err(e) => return e,
            },
            "get_device" => match args(name, a) {
                Ok(p) => mcp.get_device(ext, p).await,
                Err(e) => return e,
            },
            "plan_update" => match args(name, a) {
                Ok(p) => mcp.plan_update(ext, p).await,
                Err(e) => return e,
            },
            "get_rollout" => match args(name, a) {
                Ok(p) => mcp.get_rollout(ext, p).await,
                Err(e) => return e,
            },
            "list_rollouts" => match args(name, a) {
                Ok(p) => mcp.list_rollouts(ext, p).await,
                Err(e) => return e,
            },
            "get_device_status" => match args(name, a) {
                Ok(p) => mcp.get_device_status(ext, p).await,
                Err(e) => return e,
            },
            "list_devices" => match args(name, a) {
                Ok(p) => mcp.list_devices(ext, p).await,
                Err(e) => return e,
            },
            "get_command" => match args(name, a) {
                Ok(p) => mcp.get_command(ext, p).await,
                Err(e) => return e,
            },
            "get_telemetry" => match args(name, a) {
                Ok(p) => mcp.get_telemetry(ext, p).await,
                Err(e) => return e,
            },
            // Changing tools run only through `preview` and a confirmation.
            _ if self.specs.iter().any(|s| s.name == name) => {
                return ToolOutput::error(format!("{name} changes the fleet; it runs only after the person confirms."));
            }
            _ => return ToolOutput::error(format!("There is no tool named {name:?}.")),
        };
        output(outcome)
    }

    async fn preview(&self, caller: &Caller, name: &str, a: &Value) -> (ToolOutput, Option<PendingAction>) {
        let mcp = self.as_caller(caller);
        let ext = Extensions::default();
        let out = match name {
            "start_rollout" => {
                let Parameters(start): Parameters<StartArgs> = match args(name, a) {
                    Ok(p) => p,
                    Err(e) => return (e, None),
                };
                let mut out = output(mcp.plan_update(ext, Parameters(start.request)).await);
                if let Some(PendingAction::Start { plan_id, .. }) = start_of(&out)
                    && plan_id != start.plan_id
                {
                    out.text = format!(
                        "The plan changed since plan_id {}; this is the current plan ({plan_id}), which is what the person would confirm.\n{}",
                        start.plan_id, out.text
                    );
                }
                out
            }
            "rollback" => {
                let Parameters(mut rb): Parameters<RollbackArgs> = match args(name, a) {
                    Ok(p) => p,
                    Err(e) => return (e, None),
                };
                rb.plan_id = None;
                output(mcp.rollback(ext, Parameters(rb)).await)
            }
            "ask" => {
                let Parameters(mut ask): Parameters<AskArgs> = match args(name, a) {
                    Ok(p) => p,
                    Err(e) => return (e, None),
                };
                ask.execute = Some(false);
                output(mcp.ask(ext, Parameters(ask)).await)
            }
            // The plan only (nothing is sent); the chat has no confirmation for commands yet.
            "send_command" => {
                let Parameters(mut send): Parameters<SendCommandArgs> = match args(name, a) {
                    Ok(p) => p,
                    Err(e) => return (e, None),
                };
                send.plan_id = None;
                output(mcp.send_command(ext, Parameters(send)).await)
            }
            "cancel_rollout" => {
                let id = match a.get("id").and_then(Value::as_str).map(JobId::parse) {
                    Some(Ok(id)) => id,
                    Some(Err(e)) => return (refused(e), None),
                    None => return (ToolOutput::error("Invalid arguments for cancel_rollout: missing id."), None),
                };
                return match self.mcp.svc.preview_cancel(caller, &id).await {
                    Ok(r) => (
                        ToolOutput {
                            ok: true,
                            text: format!(
                                "Would cancel rollout {} ({} → {}, {} devices); queued devices would not start.",
                                r.id,
                                r.device_type,
                                r.version,
                                r.things.len()
                            ),
                            data: serde_json::to_value(&r).unwrap_or_default(),
                        },
                        Some(PendingAction::Cancel { rollouts: vec![r.id] }),
                    ),
                    Err(e) => (refused(e), None),
                };
            }
            "set_ota_enabled" => {
                let (t, enabled) = match (
                    a.get("device_type").and_then(Value::as_str).map(DeviceType::parse),
                    a.get("enabled").and_then(Value::as_bool),
                ) {
                    (Some(Ok(t)), Some(e)) => (t, e),
                    (Some(Err(e)), _) => return (refused(e), None),
                    _ => {
                        return (
                            ToolOutput::error("Invalid arguments for set_ota_enabled: needs device_type and enabled."),
                            None,
                        );
                    }
                };
                return match self.mcp.svc.preview_set_ota(caller, &t, enabled).await {
                    Ok(now) => (
                        ToolOutput {
                            ok: true,
                            text: format!(
                                "Would {} OTA for {t} (now {}).",
                                if enabled { "enable" } else { "disable" },
                                if now { "enabled" } else { "disabled" }
                            ),
                            data: json!({ "device_type": t, "ota_enabled": now, "requested": enabled }),
                        },
                        Some(PendingAction::SetOta { device_types: vec![t], enabled }),
                    ),
                    Err(e) => (refused(e), None),
                };
            }
            _ => return (self.call(caller, name, a).await, None),
        };
        let pending = if out.ok { start_of(&out) } else { None };
        (out, pending)
    }
}
