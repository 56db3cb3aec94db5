//! Commands in the service: planned (each target and each refusal), confirmed by the plan's
//! id, started as one audited command run, then paced and followed by the backend
//! ([`crate::ports::CommandStore`]). Every rule is here: the command must be known or
//! declared by the firmware each device runs, settings are checked against its declared
//! bounds, offline devices are never sent a command (the operator is told instead), devices
//! in maintenance or retired are left out unless named one by one, and every device is
//! authorized by the policies (`SendCommand`, or `SetDeviceState` for `set_state`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{FleetManager, device_resource};
use crate::audit::AuditOutcome;
use crate::auth::Caller;
use crate::authz::{Action, Resource};
use crate::catalog::{ArtifactRef, FirmwareMetadata};
use crate::command::Capabilities;
use crate::commands::{
    CommandExecution, CommandPlan, CommandQuery, CommandRun, CommandRunStatus, CommandSpec, CommandTarget,
    ExecutionState, KNOWN_COMMANDS, SET_STATE, run_id, valid_command_name,
};
use crate::device::{Device, DeviceQuery, OperationalState};
use crate::error::{Error, Result};
use crate::names::{DeviceType, ThingName};
use crate::policy::RolloutPolicy;
use crate::targeting::Refusal;
use crate::version::FirmwareVersion;

/// What a start did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandStart {
    pub run: CommandRun,
    /// `false` when the run was already active (a repeated confirmation starts nothing).
    pub created: bool,
    pub message: String,
}

type Firmware = (DeviceType, FirmwareVersion);

impl FleetManager {
    /// Plans a command (operator): the devices it would go to and each device refused with
    /// why. Changes nothing. Bad requests (an unknown command, a `set_state` without a valid
    /// state, a timeout out of bounds, no target) are `Invalid`; a caller who may not send
    /// this command at all is `Forbidden`.
    pub async fn plan_command(&self, caller: &Caller, spec: &CommandSpec) -> Result<CommandPlan> {
        let (plan, _) = self.plan_command_inner(caller, spec).await?;
        Ok(plan)
    }

    async fn plan_command_inner(&self, caller: &Caller, spec: &CommandSpec) -> Result<(CommandPlan, Vec<Device>)> {
        let command = spec.command.trim();
        if !valid_command_name(command) {
            return Err(Error::invalid(
                "command",
                command,
                format!("a command is a lower-case name such as {}", KNOWN_COMMANDS.join(", ")),
            ));
        }
        let timeout_seconds = spec.timeout()?;
        let set_state = command == SET_STATE;
        let parameters = canonical(&spec.parameters);
        if set_state {
            state_parameter(&parameters)?;
        }
        let action = if set_state { Action::SetDeviceState } else { Action::SendCommand };
        let context = self.context().command(command, Value::Object(parameters.clone()));
        self.authorize(caller, action, &format!("send {command}"), &Resource::Fleet, &context)?;

        // Who is asked for: devices named one by one, and those the query selects.
        if spec.things.is_empty() && spec.query.is_none() {
            return Err(Error::invalid("command targets", "none", "name devices or select them (type, location, ...)"));
        }
        let mut refusals: Vec<Refusal> = Vec::new();
        let mut chosen: BTreeMap<ThingName, (Device, bool)> = BTreeMap::new();
        for thing in &spec.things {
            match self.backend.registry.get(thing).await? {
                Some(d) => {
                    chosen.insert(thing.clone(), (d, true));
                }
                None => refusals.push(Refusal { target: thing.to_string(), reason: "unknown device".into() }),
            }
        }
        if let Some(q) = &spec.query {
            if let Some(t) = &q.device_type
                && !self.known_types().await?.contains(t)
            {
                return Err(self.unknown_type(t).await);
            }
            for d in self.backend.registry.list(q).await? {
                chosen.entry(d.thing.clone()).or_insert((d, false));
            }
            if chosen.is_empty() && refusals.is_empty() {
                refusals.push(Refusal { target: describe_query(q), reason: "no device matches".into() });
            }
        }

        // What each device's firmware declares (one metadata read per type and version).
        let mut declared: HashMap<Firmware, Option<Capabilities>> = HashMap::new();
        if !set_state {
            let firmwares: BTreeSet<Firmware> = chosen
                .values()
                .filter_map(|(d, _)| Some((d.device_type.clone(), d.firmware_version.clone()?)))
                .collect();
            for fw in firmwares {
                let caps = self.capabilities_of(&fw).await;
                declared.insert(fw, caps);
            }
            let anyone_declares = declared.values().flatten().any(|c| c.supports(command));
            if !KNOWN_COMMANDS.contains(&command) && !anyone_declares {
                return Err(Error::invalid(
                    "command",
                    command,
                    format!(
                        "not a command ota knows ({}) nor one the firmware of these devices declares",
                        KNOWN_COMMANDS.join(", ")
                    ),
                ));
            }
        }

        let mut targets = Vec::new();
        let mut devices = Vec::new();
        for (thing, (d, named)) in chosen {
            let refuse = |reason: String| Refusal { target: thing.to_string(), reason };
            if let Some(why) = d.state.hold_back_reason()
                && !named
            {
                refusals.push(refuse(format!("{why}; name it to include it")));
                continue;
            }
            if !set_state && !d.connected {
                let seen = d.last_seen.map_or_else(
                    || "never seen".to_string(),
                    |t| format!("last seen {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                );
                refusals.push(refuse(format!("offline ({seen}): commands are never sent to offline devices")));
                continue;
            }
            if !set_state {
                let fw = d.firmware_version.clone().map(|v| (d.device_type.clone(), v));
                let caps = fw.as_ref().and_then(|f| declared.get(f).cloned().flatten());
                let Some(caps) = caps else {
                    let why = match &d.firmware_version {
                        None => "its firmware version is not reported, so what it supports is unknown".to_string(),
                        Some(v) => format!("its firmware {v} is not in the catalog, so what it supports is unknown"),
                    };
                    refusals.push(refuse(why));
                    continue;
                };
                let version = d.firmware_version.as_ref().map(ToString::to_string).unwrap_or_default();
                if !caps.supports(command) {
                    let list = if caps.commands.is_empty() { "none".to_string() } else { caps.commands.join(", ") };
                    refusals.push(refuse(format!(
                        "{command} is not declared by its firmware {version} (it declares: {list})"
                    )));
                    continue;
                }
                if command == crate::command::UPDATE_CONFIG
                    && let Err(e) = caps.check_config(&parameters)
                {
                    refusals.push(refuse(format!("{e} (firmware {version})")));
                    continue;
                }
            }
            let context = self.context().command(command, Value::Object(parameters.clone()));
            let decision = self.authorizer.is_authorized(caller, action, &device_resource(&d), &context);
            if let Err(e) = decision.into_result(caller, action, &format!("send {command} to {thing}")) {
                refusals.push(refuse(format!("forbidden by policy: {e}")));
                continue;
            }
            targets.push(CommandTarget {
                thing: d.thing.clone(),
                device_type: d.device_type.clone(),
                firmware_version: d.firmware_version.as_ref().map(ToString::to_string),
                location: d.location().map(str::to_string),
                state: d.state.as_str().to_string(),
            });
            devices.push(d);
        }
        refusals.sort_by(|a, b| a.target.cmp(&b.target));

        // The pacing: the type's rollout policy when all targets share one, else the default.
        let types: BTreeSet<&DeviceType> = targets.iter().map(|t| &t.device_type).collect();
        let policy = match types.iter().next() {
            Some(t) if types.len() == 1 => self.policy_for(t).await?,
            _ => self.settings.gate.default_policy.clone(),
        };
        let mut plan = CommandPlan {
            plan_id: None,
            command: command.to_string(),
            parameters,
            targets,
            refusals,
            policy,
            timeout_seconds,
            message: String::new(),
            running: None,
        };
        if !plan.targets.is_empty() {
            let id = plan.digest();
            let active = CommandQuery {
                plan_id: Some(id.clone()),
                status: Some(CommandRunStatus::InProgress),
                ..Default::default()
            };
            plan.running = self.backend.commands.list(&active).await?.into_iter().next().map(|r| r.id);
            plan.plan_id = Some(id);
        }
        plan.message = plan_message(&plan);
        Ok((plan, devices))
    }

    /// The capabilities a firmware declares, `None` when its metadata cannot be read.
    async fn capabilities_of(&self, fw: &Firmware) -> Option<Capabilities> {
        let artifact = ArtifactRef { device_type: fw.0.clone(), version: fw.1.clone() };
        let bytes = self.backend.catalog.read_metadata(&artifact).await.ok()?;
        FirmwareMetadata::parse(&artifact, &bytes).ok().map(|m| m.capabilities())
    }

    /// Starts a command (operator). With `expected_plan_id`, what runs must be the plan that
    /// was shown; a repeat while its run is active returns that run and starts nothing; once
    /// it ended, the same plan confirmed again runs again (a new generation). Nothing to send
    /// (every target refused) is `Refused`, naming each reason. Audited, refusals included.
    pub async fn start_command(
        &self,
        caller: &Caller,
        spec: &CommandSpec,
        expected_plan_id: Option<&str>,
    ) -> Result<CommandStart> {
        let request = serde_json::to_value(spec).unwrap_or(Value::Null);
        let what = "start a command";
        let (plan, devices) = match self.plan_command_inner(caller, spec).await {
            Ok(p) => p,
            Err(e) => return self.refuse(caller, what, &request, e).await,
        };
        if let Some(expected) = expected_plan_id
            && plan.plan_id.as_deref() != Some(expected)
        {
            return self.refuse(caller, what, &request, Error::Conflict(format!(
                "what would run differs from command plan {expected} as it was shown (the devices, their firmware, a policy or the runs changed; it is now {}); plan again and confirm the new plan",
                plan.plan_id.as_deref().unwrap_or("empty")
            )))
            .await;
        }
        let Some(plan_id) = plan.plan_id.clone() else {
            let reasons: Vec<String> = plan.refusals.iter().map(|r| format!("{}: {}", r.target, r.reason)).collect();
            let e = Error::Refused(format!("nothing to send {}: {}", plan.command, reasons.join("; ")));
            return self.refuse(caller, what, &request, e).await;
        };
        if let Some(id) = &plan.running {
            let run = self.backend.commands.get(id).await?;
            let message = format!("already running: {}", run.summary());
            self.audit(caller, what, request, Some(json!({"plan_id": plan_id})), AuditOutcome::Ok(message.clone()))
                .await?;
            return Ok(CommandStart { run, created: false, message });
        }
        let generation = self
            .backend
            .commands
            .list(&CommandQuery { plan_id: Some(plan_id.clone()), ..Default::default() })
            .await?
            .len() as u32
            + 1;
        let id = run_id(&plan_id, generation);
        let now = self.now();
        let executions = plan
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| CommandExecution::queued(format!("{id}-{i}"), t.thing.clone(), t.device_type.clone(), now))
            .collect();
        let mut run = CommandRun {
            id: id.clone(),
            plan_id: plan_id.clone(),
            command: plan.command.clone(),
            parameters: plan.parameters.clone(),
            created_by: caller.subject.clone(),
            created_at: now,
            status: CommandRunStatus::InProgress,
            reason: None,
            ended_at: None,
            policy: plan.policy.clone(),
            timeout_seconds: plan.timeout_seconds,
            executions,
            refusals: plan.refusals.clone(),
        };
        let plan_json = serde_json::to_value(&plan).ok();
        if plan.command == SET_STATE {
            // No device round trip: the registry is the device's state.
            self.apply_set_state(&mut run, &devices).await;
        }
        if let Err(e) = self.backend.commands.create(&run).await {
            self.audit(caller, what, request, plan_json, AuditOutcome::Error(e.to_string())).await?;
            return Err(e);
        }
        if plan.command == crate::command::UPDATE_CONFIG {
            self.record_desired_config(&devices, &plan.parameters).await?;
        }
        if self.backend.commands.delivers_itself() {
            self.backend.commands.advance(now).await?;
            run = self.backend.commands.get(&id).await?;
        }
        let message = format!("started {}", run.summary());
        self.audit(caller, what, request, plan_json, AuditOutcome::Ok(message.clone())).await?;
        Ok(CommandStart { run, created: true, message })
    }

    async fn refuse<T>(&self, caller: &Caller, what: &str, request: &Value, e: Error) -> Result<T> {
        self.audit(caller, what, request.clone(), None, AuditOutcome::Refused(e.to_string())).await?;
        Err(e)
    }

    async fn apply_set_state(&self, run: &mut CommandRun, devices: &[Device]) {
        let state = state_parameter(&run.parameters).unwrap_or(OperationalState::Active);
        let now = self.now();
        for (e, d) in run.executions.iter_mut().zip(devices) {
            let (s, reason) = if d.state == state {
                (ExecutionState::Succeeded, format!("already {state}"))
            } else {
                match self.backend.registry.set_state(&d.thing, state).await {
                    Ok(_) => (ExecutionState::Succeeded, format!("{} -> {state}", d.state)),
                    Err(err) => (ExecutionState::Failed, err.to_string()),
                }
            };
            e.state = s;
            e.reason = Some(reason);
            e.updated_at = now;
        }
        run.status = CommandRunStatus::Completed;
        run.ended_at = Some(now);
    }

    /// Records the settings asked for as each device's desired configuration.
    async fn record_desired_config(&self, devices: &[Device], changes: &Map<String, Value>) -> Result<()> {
        for d in devices {
            if let Some(mut current) = self.backend.registry.get(&d.thing).await? {
                current.config.desired.extend(changes.clone());
                self.backend.registry.upsert(current).await?;
            }
        }
        Ok(())
    }

    /// One command run with its executions (viewer). On a backend that delivers its own
    /// executions (AWS), reading a run also advances it. `NotFound` for an unknown id.
    pub async fn command_run(&self, caller: &Caller, id: &str) -> Result<CommandRun> {
        self.allow(caller, Action::ReadCommand, "read a command run", Resource::Fleet)?;
        if self.backend.commands.delivers_itself() {
            self.backend.commands.advance(self.now()).await?;
        }
        self.backend.commands.get(id).await
    }

    /// Command runs, newest first (viewer).
    pub async fn list_commands(&self, caller: &Caller, query: &CommandQuery) -> Result<Vec<CommandRun>> {
        self.allow(caller, Action::ReadCommand, "list command runs", Resource::Fleet)?;
        self.backend.commands.list(query).await
    }

    /// Cancels an active run (operator), audited: executions not sent are never sent.
    /// `NotFound` for an unknown id, `Conflict` when it already ended.
    pub async fn cancel_command(&self, caller: &Caller, id: &str, reason: &str) -> Result<CommandRun> {
        let request = json!({ "command_run": id, "reason": reason });
        let what = "cancel a command run";
        self.require(caller, Action::CancelCommand, what, Resource::Fleet, self.context(), &request).await?;
        let reason =
            if reason.trim().is_empty() { format!("canceled by {}", caller.subject) } else { reason.trim().into() };
        let result = self.backend.commands.cancel(id, &reason, self.now()).await;
        let outcome = match &result {
            Ok(r) => AuditOutcome::Ok(r.summary()),
            Err(e @ (Error::NotFound { .. } | Error::Conflict(_))) => AuditOutcome::Refused(e.to_string()),
            Err(e) => AuditOutcome::Error(e.to_string()),
        };
        self.audit(caller, what, request, None, outcome).await?;
        result
    }
}

/// The parameters with keys sorted (a JSON map is a `BTreeMap` without `preserve_order`;
/// built again so the digest never depends on the order given).
fn canonical(p: &Map<String, Value>) -> Map<String, Value> {
    let sorted: BTreeMap<&String, &Value> = p.iter().collect();
    sorted.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The state a `set_state` command asks for.
fn state_parameter(p: &Map<String, Value>) -> Result<OperationalState> {
    let extra: Vec<&String> = p.keys().filter(|k| *k != "state").collect();
    if !extra.is_empty() {
        return Err(Error::invalid(
            "set_state parameters",
            format!("{extra:?}"),
            "set_state takes one parameter: state (active, maintenance or retired)",
        ));
    }
    match p.get("state").and_then(Value::as_str) {
        Some(s) => OperationalState::parse(s),
        None => Err(Error::invalid("set_state parameters", "no state", "give state: active, maintenance or retired")),
    }
}

fn describe_query(q: &DeviceQuery) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &q.device_type {
        parts.push(format!("type {t}"));
    }
    if let Some(l) = &q.location {
        parts.push(format!("location {l}"));
    }
    if let Some(h) = &q.health {
        parts.push(format!("health {}", h.as_str()));
    }
    if let Some(s) = &q.state {
        parts.push(format!("state {s}"));
    }
    if let Some(c) = q.connected {
        parts.push(if c { "online".into() } else { "offline".into() });
    }
    if parts.is_empty() { "every device".into() } else { parts.join(", ") }
}

fn plan_message(plan: &CommandPlan) -> String {
    let n = plan.targets.len();
    let mut s = if n == 0 {
        format!("nothing to send: no device can take {}", plan.command)
    } else {
        let params = if plan.parameters.is_empty() {
            String::new()
        } else {
            format!(" {}", Value::Object(plan.parameters.clone()))
        };
        let mut s = format!("{}{params} to {n} device{}", plan.command, if n == 1 { "" } else { "s" });
        if plan.command != SET_STATE {
            s.push_str(&format!(
                " ({}, abort above {} % failures, answer within {} s)",
                paced(&plan.policy),
                plan.policy.abort.failure_percent,
                plan.timeout_seconds
            ));
        }
        s
    };
    if !plan.refusals.is_empty() {
        s.push_str(&format!("; {} refused", plan.refusals.len()));
    }
    if let Some(r) = &plan.running {
        s.push_str(&format!("; already running as {r}"));
    }
    s
}

fn paced(p: &RolloutPolicy) -> String {
    match p.max_per_minute {
        Some(m) => format!("at most {} at a time, {m}/min", p.max_in_flight),
        None => format!("at most {} at a time", p.max_in_flight),
    }
}
