//! The MCP server of ota: the fleet's operations as Model Context Protocol tools, so Claude
//! Code, Kiro CLI or any MCP client can list firmware, plan, start, watch, cancel and roll back
//! rollouts, read a device's status and telemetry, and plan, confirm and follow commands. Each
//! tool is a thin call into [`FleetManager`] with the caller of the request: every safety rule
//! and every role is enforced by the service, never here.
//!
//! `tools/list` shows each caller only the tools the policies in force can allow it (each tool's
//! actions decided by Cedar on the fleet, now; module `visible`), as AgentCore Gateway narrows
//! tools with Cedar: a viewer does not see `send_command` or `start_rollout`. A hidden tool
//! called anyway is still refused by the service, with the policy's reason.
//!
//! Besides tools it serves resources (`ota://firmware`, `ota://fleet`, the template
//! `ota://rollouts/{id}`; each read runs as the request's caller) and prompts (`safe_rollout`,
//! `rollback`), in the module `resources`. Rollout progress comes from one port, [`ProgressSource`],
//! which the page (`ota-http`) and the chat share.
//!
//! Every tool declares an `outputSchema` (JSON Schema 2020-12, root `"type": "object"`): the
//! schema of what its `structuredContent` holds, generated from the very types the reply
//! serializes (`ota-core`'s, with its feature `schema`, and the small wrappers in `reply`), or
//! else the refusal `{ "error", "message" }` below. Clients that validate structured content
//! (the TypeScript SDK does, results and refusals alike) can rely on it.
//!
//! Two transports:
//! - stdio ([`OtaMcp::serve_stdio`]): every call runs as one fixed caller, the local user who
//!   owns the data dir (the person who started `ota mcp`).
//! - streamable HTTP ([`OtaMcp::http_router`]), stateless with JSON responses, so the same
//!   router runs under `ota serve` and as a Lambda. The caller of each request is read from the
//!   HTTP request's extensions, where an authentication middleware (written elsewhere) put a
//!   verified [`Caller`]. A request without one is refused; it is never treated as an admin.
//!   As a Lambda (binary `ota-mcp`), that middleware is `ota_auth::apigw`'s: the caller comes
//!   from API Gateway's JWT authorizer claims.
//!
//! Errors, decided here:
//! - [`Error::Invalid`] (a bad name, version or filter) is a JSON-RPC `invalid params` error:
//!   the call itself was malformed.
//! - A request with no verified caller is a JSON-RPC `invalid request` error.
//! - [`Error::Storage`] is a JSON-RPC `internal error`.
//! - Everything else the service refuses (a missing role, an unknown device or version, a
//!   disabled type, a stale plan id, an active rollout) is a tool result with `isError: true`
//!   whose text is the service's message (which role is needed, which versions exist, ...),
//!   and whose structured content is `{ "error": kind, "message": text }`. MCP clients show
//!   such results to the model, which can then act on them (plan again, ask an admin).

mod args;
mod chat;
mod progress;
mod reply;
mod resources;
mod visible;

use std::sync::Arc;

use ota_core::auth::Caller;
use ota_core::commands::CommandSpec;
use ota_core::device::{DeviceQuery, HealthStatus, OperationalState};
use ota_core::names::{DeviceType, JobId, ThingName};
use ota_core::rollout::RolloutQuery;
use ota_core::service::FleetManager;
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{VersionFilter, VersionRequest};
use ota_core::{Error, Result};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CacheScope, ErrorCode, ErrorData, Extensions, GetPromptRequestParams, GetPromptResponse, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};

pub use args::{
    AskArgs, CancelArgs, DeviceTypeArgs, FleetStatusArgs, GetCommandArgs, GetDeviceArgs, GetRolloutArgs,
    ListDevicesArgs, ListRolloutsArgs, RollbackArgs, SendCommandArgs, SetOtaArgs, StartArgs, TelemetryArgs, UpdateArgs,
};
pub use chat::ChatTools;
use reply::{Failure, Outcome, tool_error};

/// The former name of [`ProgressSource`], kept while callers move to it.
pub use progress::ProgressSource as RolloutProgress;
pub use progress::{Counts, DeviceExecution, ProgressSource};
pub use resources::{
    FIRMWARE_URI, FLEET_URI, ROLLBACK as ROLLBACK_PROMPT, ROLLOUT_TEMPLATE, SAFE_ROLLOUT as SAFE_ROLLOUT_PROMPT,
};

/// What the model is told about the domain and the safe workflow when it connects.
pub const INSTRUCTIONS: &str = "\
ota manages the firmware of a fleet of ESP32 devices.

Domain:
- A device type (e.g. pet_feeder) is a firmware folder in the catalog; its devices (things, e.g. pet_feeder-03) \
belong to the thing group of that type. Versions are semantic versions (1.0.0, 2.1.0); requests may say \
\"latest\", a partial version (\"2\" or \"2.1\" means the highest 2.x / 2.1.x) or an exact one.
- Each type has an OTA gate (config): a type whose OTA is disabled is refused in every plan, with the reason.
- Roles: viewer reads; operator plans, starts, cancels and rolls back, and sends commands; admin also enables or disables OTA. \
The server enforces them from the caller's credentials; nothing in a request adds a role.
- One active rollout per device type. Starting a request again while its rollout is still active returns that \
rollout (\"already running X, started at ...\"); once it has ended (completed, canceled, aborted), the same request \
starts a new rollout with a new id. Tell the person which happened, in the words of the reply.

Safe workflow:
1. Look: list_device_types, list_firmware, fleet_status, get_device.
2. plan_update (or rollback without plan_id, or ask) and SHOW the plan to the person: which devices move to \
which version, what is held back, what is refused and why. Nothing has changed yet.
3. Only after the person agrees, start_rollout with the same arguments and the plan's plan_id (rollback: call \
it again with the plan_id). If the fleet or catalog changed meanwhile the start is refused: plan again and \
show the new plan.
4. Watch with get_rollout until it completes; cancel_rollout stops devices that have not started.
Never start a rollout, cancel one or change an OTA gate without the person's explicit confirmation.

Devices and commands:
- get_device_status answers \"what is the status of X\": connectivity and last seen, location, health, \
operational state (active, maintenance, retired), firmware, last telemetry and configuration. list_devices \
filters by type, version, location (\"factory-floor-1\", \"line 7\"), health, state and online; get_telemetry \
reads a device's history (since \"24h\", one metric).
- send_command (reboot, identify, recalibrate, update_config with the settings as parameters, set_state with \
{\"state\": ...}) first returns a plan and sends nothing: SHOW it to the person, including every refused device \
and why. Never send commands to offline devices: the plan refuses them; tell the person instead. Devices in \
maintenance or retired are left out unless named. Only after the person agrees, call send_command again with \
the same arguments and the plan's plan_id; then watch the run with get_command.
- The tools listed are the ones the policies can allow you; a call the policies forbid is refused with the \
policy's reason: tell the person that reason, and do not try another way around it.

Resources: ota://firmware (the catalog), ota://fleet (per type: devices by version, connected, latest, OTA gate) \
and ota://rollouts/{id} (one rollout with its progress). Prompts: safe_rollout and rollback walk this workflow.";

/// The MCP server: the service, an optional progress source, and (over stdio) the fixed
/// caller every call runs as.
#[derive(Clone)]
pub struct OtaMcp {
    svc: Arc<FleetManager>,
    progress: Option<Arc<dyn ProgressSource>>,
    /// Set over stdio; over HTTP the caller comes from each request.
    fixed_caller: Option<Caller>,
}

impl std::fmt::Debug for OtaMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtaMcp")
            .field("progress", &self.progress.is_some())
            .field("fixed_caller", &self.fixed_caller)
            .finish_non_exhaustive()
    }
}

impl OtaMcp {
    /// A server over `svc`; `progress` adds per-device progress to `get_rollout` when the
    /// backend has it.
    pub fn new(svc: Arc<FleetManager>, progress: Option<Arc<dyn ProgressSource>>) -> Self {
        OtaMcp { svc, progress, fixed_caller: None }
    }

    /// Serves MCP over stdin/stdout until the client disconnects. Every call runs as
    /// `caller`: the local user who owns the data dir.
    pub async fn serve_stdio(self, caller: Caller) -> std::io::Result<()> {
        let (stdin, stdout) = rmcp::transport::stdio();
        self.serve_io(caller, stdin, stdout).await
    }

    /// Serves MCP over any byte stream pair (stdio, a pipe, an in-memory duplex) until the
    /// peer disconnects, every call running as `caller`.
    pub async fn serve_io<R, W>(self, caller: Caller, read: R, write: W) -> std::io::Result<()>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
        W: tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let server = OtaMcp { fixed_caller: Some(caller), ..self };
        let running = server.serve((read, write)).await.map_err(std::io::Error::other)?;
        running.waiting().await.map_err(std::io::Error::other)?;
        Ok(())
    }

    /// Streamable HTTP at `/mcp`: stateless, JSON responses. The caller of each request is the
    /// [`Caller`] in the request's extensions (put there by the authentication middleware);
    /// without one every tool call is refused. `allowed_hosts` are the `Host` values accepted
    /// (DNS-rebinding protection); `None` keeps rmcp's default, loopback only.
    pub fn http_router(self, allowed_hosts: Option<Vec<String>>) -> axum::Router {
        let mut config = StreamableHttpServerConfig::default().with_json_response(true).with_legacy_session_mode(false);
        if let Some(hosts) = allowed_hosts {
            config = config.with_allowed_hosts(hosts);
        }
        let server = OtaMcp { fixed_caller: None, ..self };
        let service =
            StreamableHttpService::new(move || Ok(server.clone()), Arc::new(NeverSessionManager::default()), config);
        axum::Router::new().nest_service("/mcp", service)
    }

    /// The caller of this call: the fixed one over stdio, else the verified one the HTTP
    /// middleware attached to the request.
    fn caller(&self, ext: &Extensions) -> std::result::Result<Caller, Failure> {
        self.caller_data(ext).map_err(Failure::Protocol)
    }

    /// [`Self::caller`] for requests other than tool calls (resource reads).
    fn caller_data(&self, ext: &Extensions) -> std::result::Result<Caller, ErrorData> {
        if let Some(c) = &self.fixed_caller {
            return Ok(c.clone());
        }
        ext.get::<axum::http::request::Parts>().and_then(|p| p.extensions.get::<Caller>()).cloned().ok_or_else(|| {
            ErrorData::new(
                ErrorCode::INVALID_REQUEST,
                "unauthenticated: this request carries no verified caller; send a valid bearer token",
                None,
            )
        })
    }

    /// Progress of rollout `id` from the progress port, when there is one.
    async fn progress_of(&self, id: &JobId) -> Result<Option<serde_json::Value>> {
        match &self.progress {
            Some(p) => progress::report(p.as_ref(), id).await,
            None => Ok(None),
        }
    }

    /// Builds the typed request from tool arguments. Exclusions name device types or things;
    /// a name that is neither is refused (a typo must not update a device meant to be spared).
    async fn update_request(&self, caller: &Caller, a: &UpdateArgs, action: UpdateAction) -> Result<UpdateRequest> {
        let device_types = a.device_types.iter().map(|t| DeviceType::parse(t)).collect::<Result<_>>()?;
        let things = a.things.iter().map(|t| ThingName::parse(t)).collect::<Result<_>>()?;
        let mut filters = Filters {
            current_version: a.only_from_version.as_deref().map(VersionFilter::parse).transpose()?,
            only_connected: a.only_online,
            ..Default::default()
        };
        if !a.exclude.is_empty() {
            let known: Vec<DeviceType> =
                self.svc.device_types(caller).await?.into_iter().map(|s| s.device_type).collect();
            for name in &a.exclude {
                match DeviceType::parse(name) {
                    Ok(t) if known.contains(&t) => {
                        filters.exclude_types.insert(t);
                    }
                    _ => {
                        let thing = ThingName::parse(name)?;
                        self.svc.device(caller, &thing).await.map_err(|e| match e {
                            Error::NotFound { hint, .. } => Error::invalid(
                                "exclusion",
                                name.clone(),
                                format!(
                                    "names no device type or thing{}",
                                    if hint.is_empty() { String::new() } else { format!("; {hint}") }
                                ),
                            ),
                            e => e,
                        })?;
                        filters.exclude_things.insert(thing);
                    }
                }
            }
        }
        let action = if a.rollback.unwrap_or(false) { UpdateAction::Rollback } else { action };
        Ok(UpdateRequest {
            action,
            version: VersionRequest::parse(&a.version)?,
            target: Target { whole_fleet: a.whole_fleet, device_types, things },
            filters,
            revert_on_abort: a.revert_on_abort,
        })
    }
}

#[tool_router]
impl OtaMcp {
    #[tool(
        output_schema = reply::output_schema::<reply::DeviceTypes>(),
        description = "List every device type (firmware folder) with its thing group, OTA gate (enabled or not), available versions (highest first), latest version and device count.",
        annotations(title = "List device types", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_device_types(&self, ext: Extensions) -> Outcome {
        let caller = self.caller(&ext)?;
        let types = self.svc.device_types(&caller).await.map_err(tool_error)?;
        Ok(reply::device_types(types))
    }

    #[tool(
        output_schema = reply::output_schema::<reply::FirmwareList>(),
        description = "List published firmware (device type, version, size, sha256, release notes), optionally for one device type.",
        annotations(title = "List firmware", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_firmware(&self, ext: Extensions, Parameters(a): Parameters<DeviceTypeArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let t = a.device_type.as_deref().map(DeviceType::parse).transpose().map_err(tool_error)?;
        let entries = self.svc.list_firmware(&caller, t.as_ref()).await.map_err(tool_error)?;
        Ok(reply::firmware(entries))
    }

    #[tool(
        output_schema = reply::output_schema::<ota_core::service::FleetStatus>(),
        description = "Devices and a per-type, per-version summary, optionally for one device type and/or devices whose current version matches a filter (\"1.x\", \"<2.0.0\", \"2.0.0\").",
        annotations(title = "Fleet status", read_only_hint = true, open_world_hint = false)
    )]
    async fn fleet_status(&self, ext: Extensions, Parameters(a): Parameters<FleetStatusArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let query = DeviceQuery {
            device_type: a.device_type.as_deref().map(DeviceType::parse).transpose().map_err(tool_error)?,
            version: a.version.as_deref().map(VersionFilter::parse).transpose().map_err(tool_error)?,
            ..Default::default()
        };
        let status = self.svc.fleet_status(&caller, &query).await.map_err(tool_error)?;
        Ok(reply::fleet(status))
    }

    #[tool(
        output_schema = reply::output_schema::<ota_core::device::Device>(),
        description = "One device (thing): its type, thing group, reported firmware version, whether it is connected and when it was last seen. Unknown names get close matches.",
        annotations(title = "Get device", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_device(&self, ext: Extensions, Parameters(a): Parameters<GetDeviceArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let thing = ThingName::parse(&a.thing).map_err(tool_error)?;
        let device = self.svc.device(&caller, &thing).await.map_err(tool_error)?;
        Ok(reply::device(device))
    }

    #[tool(
        output_schema = reply::output_schema::<ota_core::plan::Plan>(),
        description = "Plan an update (or rollback) WITHOUT changing anything: which devices of which types move to which verified firmware, which are held back or already current, and what is refused and why (unknown version, OTA disabled for the type, ...). Returns a plan_id; show the plan to the person, then call start_rollout with the same arguments and that plan_id. Needs the operator role.",
        annotations(title = "Plan an update", read_only_hint = true, open_world_hint = false)
    )]
    async fn plan_update(&self, ext: Extensions, Parameters(a): Parameters<UpdateArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let req = self.update_request(&caller, &a, UpdateAction::Update).await.map_err(tool_error)?;
        let plan = self.svc.plan_update(&caller, &req).await.map_err(tool_error)?;
        Ok(reply::plan(plan, "start_rollout"))
    }

    #[tool(
        output_schema = reply::output_schema::<ota_core::service::StartOutcome>(),
        description = "Start the rollout of a plan the person has seen and approved: pass the same arguments as plan_update and the plan_id it returned. The server plans again (re-verifying every firmware image) and starts only if the plan is still exactly plan_id; otherwise it refuses and you must plan again. While its rollout is active, starting the same plan again returns it (already running); once it ended, the same request starts a new rollout with a new id. The reply says, per device type, started, already running (since when) or refused. Needs the operator role.",
        annotations(
            title = "Start a rollout",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn start_rollout(&self, ext: Extensions, Parameters(a): Parameters<StartArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let req = self.update_request(&caller, &a.request, UpdateAction::Update).await.map_err(tool_error)?;
        let started = self.svc.start(&caller, &req, Some(&a.plan_id)).await.map_err(tool_error)?;
        Ok(reply::started(started))
    }

    #[tool(
        output_schema = reply::output_schema::<reply::PlanOrStarted>(),
        description = "Roll devices back to an earlier version, in two calls. Without plan_id it only plans the rollback and returns the plan with its plan_id: show it to the person. Called again with the same arguments and that plan_id, it starts exactly that rollback (refused if the plan changed). Needs the operator role.",
        annotations(
            title = "Roll back",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn rollback(&self, ext: Extensions, Parameters(a): Parameters<RollbackArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let args = UpdateArgs {
            device_types: a.device_types,
            things: a.things,
            whole_fleet: false,
            version: a.version,
            only_from_version: a.only_from_version,
            exclude: a.exclude,
            rollback: Some(true),
            only_online: a.only_online,
            revert_on_abort: false,
        };
        let req = self.update_request(&caller, &args, UpdateAction::Rollback).await.map_err(tool_error)?;
        match a.plan_id {
            None => {
                let plan = self.svc.plan_update(&caller, &req).await.map_err(tool_error)?;
                Ok(reply::plan(plan, "rollback"))
            }
            Some(id) => {
                let started = self.svc.start(&caller, &req, Some(&id)).await.map_err(tool_error)?;
                Ok(reply::started(started))
            }
        }
    }

    #[tool(
        output_schema = reply::output_schema::<reply::RolloutReply>(),
        description = "One rollout: status, version, target devices, policy, who started it, and per-device progress when the backend reports it. Poll it to watch a rollout until it is COMPLETED, CANCELED or ABORTED.",
        annotations(title = "Get rollout", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_rollout(&self, ext: Extensions, Parameters(a): Parameters<GetRolloutArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let id = JobId::parse(&a.id).map_err(tool_error)?;
        let rollout = self.svc.rollout(&caller, &id).await.map_err(tool_error)?;
        let progress = self.progress_of(&id).await.map_err(tool_error)?;
        Ok(reply::rollout(rollout, progress))
    }

    #[tool(
        output_schema = reply::output_schema::<reply::Rollouts>(),
        description = "Rollouts, newest first, optionally for one device type and/or only the active (IN_PROGRESS) ones.",
        annotations(title = "List rollouts", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_rollouts(&self, ext: Extensions, Parameters(a): Parameters<ListRolloutsArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let query = RolloutQuery {
            device_type: a.device_type.as_deref().map(DeviceType::parse).transpose().map_err(tool_error)?,
            active_only: a.active_only.unwrap_or(false),
            limit: None,
        };
        let rollouts = self.svc.list_rollouts(&caller, &query).await.map_err(tool_error)?;
        Ok(reply::rollouts(rollouts))
    }

    #[tool(
        output_schema = reply::output_schema::<reply::RolloutReply>(),
        description = "Cancel an active rollout: devices that have not started stay where they are; devices already updating finish. Ask the person first. Needs the operator role.",
        annotations(
            title = "Cancel a rollout",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn cancel_rollout(&self, ext: Extensions, Parameters(a): Parameters<CancelArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let id = JobId::parse(&a.id).map_err(tool_error)?;
        let rollout = self.svc.cancel(&caller, &id, a.reason.as_deref().unwrap_or("")).await.map_err(tool_error)?;
        Ok(reply::rollout(rollout, None))
    }

    #[tool(
        output_schema = reply::output_schema::<ota_core::config::TypeConfig>(),
        description = "Open or close the OTA gate of a device type. While closed, every plan refuses the type. Ask the person first. Needs the admin role.",
        annotations(
            title = "Enable or disable OTA",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn set_ota_enabled(&self, ext: Extensions, Parameters(a): Parameters<SetOtaArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let t = DeviceType::parse(&a.device_type).map_err(tool_error)?;
        let config = self.svc.set_ota_enabled(&caller, &t, a.enabled).await.map_err(tool_error)?;
        Ok(reply::config(config))
    }

    #[tool(
        output_schema = reply::output_schema::<reply::PlanOrStarted>(),
        description = "A plain-language request (\"Update all pet_feeder devices to 2.0.0\", \"Roll back pet_feeder-03 to 1.0.0\", \"Which pet_feeder devices are still on 1.x?\", \"How is the rollout going?\"). By default it only plans or answers and changes nothing. With execute=true an update or rollback it planned is started at once, so only set it after the person approved that exact plan, and pass its plan_id so that nothing else starts; the reply says per device type started, already running (since when) or refused. Several updates and rollbacks in one request, each naming its own devices and version (\"Update pet_feeder to 3.0.0 and roll back smart_plug-04 to 2.0.0\"), are one plan with one plan_id (its `requests` holds each change): execute=true with the same prompt and that plan_id starts all of them. A plan with nothing to start is returned as the plan, whose message says why. Cancel and OTA gate requests are never executed here (use cancel_rollout or set_ota_enabled).",
        annotations(
            title = "Ask in plain language",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn ask(&self, ext: Extensions, Parameters(a): Parameters<AskArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let asked = self
            .svc
            .ask(&caller, &a.prompt, a.execute.unwrap_or(false), a.plan_id.as_deref())
            .await
            .map_err(tool_error)?;
        Ok(match asked.started {
            Some(started) => reply::started(started),
            None => reply::plan(asked.plan, "ask with execute=true"),
        })
    }
    #[tool(
        output_schema = reply::output_schema::<ota_core::service::DeviceStatus>(),
        description = "The whole status of one device (thing): online or offline and when it was last seen, location, health (ok, warning or error, with the device's message), operational state (active, maintenance, retired), firmware version, the last telemetry, and its configuration as the device reports it and as operators want it. The answer's summary is one line for the person.",
        annotations(title = "Get device status", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_device_status(&self, ext: Extensions, Parameters(a): Parameters<GetDeviceArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let thing = ThingName::parse(&a.thing).map_err(tool_error)?;
        match self.svc.device_status(&caller, &thing).await {
            Ok(status) => Ok(reply::device_status(status)),
            // The plain read names close matches ("did you mean pet_feeder-03?").
            Err(Error::NotFound { .. }) => {
                self.svc.device(&caller, &thing).await.map_err(tool_error)?;
                Err(tool_error(Error::not_found("device", thing.as_str())))
            }
            Err(e) => Err(tool_error(e)),
        }
    }

    #[tool(
        output_schema = reply::output_schema::<ota_core::service::FleetStatus>(),
        description = "Devices that match every filter given (none: the whole fleet), each with its connectivity, firmware, location, health and state, plus a per-type summary. Answers \"which devices are offline?\" (online=false), \"show devices with warnings\" (health=\"warning\"), \"list the devices on factory-floor-1\" (location), \"what is in maintenance?\" (state).",
        annotations(title = "List devices", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_devices(&self, ext: Extensions, Parameters(a): Parameters<ListDevicesArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let query = device_query(&a).map_err(tool_error)?;
        let status = self.svc.fleet_status(&caller, &query).await.map_err(tool_error)?;
        Ok(reply::devices(status))
    }

    #[tool(
        output_schema = reply::output_schema::<reply::CommandPlanOrStart>(),
        description = "Send a command to devices, in two calls. Without plan_id it only plans and sends nothing: the devices it would go to, and each device refused with why (offline: commands are never sent to offline devices; in maintenance or retired and not named; its firmware does not declare the command; a setting unknown or out of bounds; forbidden by policy). Show the plan to the person. Called again with the same arguments and the plan's plan_id, it sends exactly that plan (refused if anything changed); while that run is active, confirming again returns it (already running). Commands: reboot, identify, recalibrate, update_config (parameters: the settings, e.g. {\"sample_rate_seconds\": 10}), set_state (parameters: {\"state\": \"maintenance\"}), or one the firmware declares. Needs the operator role; the policies may forbid some commands (for example reboot to all but senior operators).",
        annotations(
            title = "Send a command",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn send_command(&self, ext: Extensions, Parameters(a): Parameters<SendCommandArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let spec = command_spec(&a).map_err(tool_error)?;
        match a.plan_id.as_deref() {
            None => Ok(reply::command_plan(self.svc.plan_command(&caller, &spec).await.map_err(tool_error)?)),
            Some(id) => {
                let started = self.svc.start_command(&caller, &spec, Some(id)).await.map_err(tool_error)?;
                Ok(reply::command_started(started))
            }
        }
    }

    #[tool(
        output_schema = reply::output_schema::<ota_core::commands::CommandRun>(),
        description = "One command run: its status (IN_PROGRESS, COMPLETED, ABORTED, CANCELED), and each device's execution with its state (QUEUED, CREATED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, TIMED_OUT, CANCELED), the device's reason and result. Poll it to follow a command until the run ends.",
        annotations(title = "Get command run", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_command(&self, ext: Extensions, Parameters(a): Parameters<GetCommandArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let run = self.svc.command_run(&caller, a.id.trim()).await.map_err(tool_error)?;
        Ok(reply::command_run(run))
    }

    #[tool(
        output_schema = reply::output_schema::<reply::TelemetryReply>(),
        description = "A device's telemetry history, oldest first: each point's time and its metrics (CO2 in ppm, temperature, soil moisture %, power in W, ...). since narrows it to the last \"24h\", \"7d\", \"90m\" (or from an RFC 3339 time); metric keeps only one metric. History is kept 7 days.",
        annotations(title = "Get telemetry", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_telemetry(&self, ext: Extensions, Parameters(a): Parameters<TelemetryArgs>) -> Outcome {
        let caller = self.caller(&ext)?;
        let thing = ThingName::parse(&a.thing).map_err(tool_error)?;
        let since = a.since.as_deref().map(|s| visible::since(s, self.svc.now())).transpose().map_err(tool_error)?;
        if a.limit == Some(0) {
            return Err(tool_error(Error::invalid("limit", "0", "at least 1")));
        }
        let metric = a.metric.as_deref().map(str::trim).filter(|m| !m.is_empty()).map(str::to_string);
        let query = ota_core::ports::TelemetryQuery {
            metric,
            since,
            limit: Some(a.limit.unwrap_or(DEFAULT_TELEMETRY_POINTS)),
            ..ota_core::ports::TelemetryQuery::of(thing.clone())
        };
        let points = self.svc.telemetry(&caller, &query).await.map_err(tool_error)?;
        Ok(reply::telemetry(thing, points))
    }
}

/// How many telemetry points `get_telemetry` returns unless asked for another limit.
pub const DEFAULT_TELEMETRY_POINTS: usize = 500;

/// A location filter with something in it.
fn location(l: Option<&str>) -> Result<Option<String>> {
    match l {
        Some(l) if ota_core::device::normalize_location(l).is_empty() => {
            Err(Error::invalid("location", l, "name a location, for example factory-floor-1 or \"line 7\""))
        }
        l => Ok(l.map(str::to_string)),
    }
}

fn device_query(a: &ListDevicesArgs) -> Result<DeviceQuery> {
    Ok(DeviceQuery {
        device_type: a.device_type.as_deref().map(DeviceType::parse).transpose()?,
        version: a.version.as_deref().map(VersionFilter::parse).transpose()?,
        connected: a.online,
        location: location(a.location.as_deref())?,
        health: a.health.as_deref().map(HealthStatus::parse).transpose()?,
        state: a.state.as_deref().map(OperationalState::parse).transpose()?,
    })
}

fn command_spec(a: &SendCommandArgs) -> Result<CommandSpec> {
    let query = DeviceQuery {
        device_type: a.device_type.as_deref().map(DeviceType::parse).transpose()?,
        location: location(a.location.as_deref())?,
        health: a.health.as_deref().map(HealthStatus::parse).transpose()?,
        ..Default::default()
    };
    Ok(CommandSpec {
        command: a.command.clone(),
        parameters: a.parameters.clone(),
        things: a.things.iter().map(|t| ThingName::parse(t)).collect::<Result<_>>()?,
        query: (query != DeviceQuery::default()).then_some(query),
        timeout_seconds: a.timeout_seconds,
    })
}

#[tool_handler]
impl ServerHandler for OtaMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().enable_prompts().build())
            .with_server_info(rmcp::model::Implementation::new("ota", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    /// The tools the policies can allow this caller (see `visible`); a request without a
    /// verified caller is refused, as every other request is.
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListToolsResult, ErrorData> {
        let caller = self.caller_data(&context.extensions)?;
        let mut result =
            ListToolsResult::with_all_items(visible::for_caller(&self.svc, &caller, Self::tool_router().list_all()));
        // The list depends on who asks (and on the policies, which may change): never shared,
        // never fresh for long.
        if context.protocol_version().is_some_and(|v| v >= ProtocolVersion::V_2026_07_28) {
            result = result.with_ttl_ms(0);
            result.cache_scope = Some(CacheScope::Private);
        }
        Ok(result)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::list()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(resources::templates()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<ReadResourceResponse, ErrorData> {
        self.read(&request.uri, &context.extensions).await.map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(resources::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<GetPromptResponse, ErrorData> {
        resources::get(&request.name, &request.arguments).map(Into::into)
    }
}
