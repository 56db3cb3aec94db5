//! Plain-language requests: the intent engine turns words into a typed request, this module
//! resolves the names it found against the registry and plans it with the same code as a
//! typed request. Roles come from the caller only; words never add one.

use std::collections::{BTreeMap, BTreeSet};

use super::FleetManager;
use crate::auth::Caller;
use crate::authz::{Action as Op, Resource};
use crate::commands::CommandSpec;
use crate::device::{Device, DeviceQuery, OperationalState};
use crate::error::Result;
use crate::intent::{
    CommandIntent, DeviceSelection, Intent, RolloutRef, SettingWords, ThingMatch, UpdateIntent, is_open_question,
    parse, resolve_thing,
};
use crate::names::{DeviceType, ThingName};
use crate::plan::{Action, DeviceSummary, MAX_SERIES_POINTS, Plan, PlannedCommand, TelemetryReading, TelemetrySeries};
use crate::ports::TelemetryQuery;
use crate::rollout::{Rollout, RolloutQuery};
use crate::service::DeviceStatus;
use crate::targeting::{Filters, Refusal, Target, UpdateAction, UpdateRequest};
use crate::version::VersionRequest;

const EXAMPLES: &str = "Try: \"Update all pet_feeder devices to 2.0.0\", \"Upgrade the whole fleet to the latest firmware\", \"Roll back pet_feeder-03 to 1.0.0\", \"Which pet_feeder devices are still on 1.x?\", \"List firmware\", \"How is the rollout going?\".";

impl FleetManager {
    /// Understands a plain-language request and plans it. Nothing changes: starting,
    /// cancelling and gate changes are separate, confirmed calls.
    pub async fn plan_prompt(&self, caller: &Caller, text: &str) -> Result<Plan> {
        Ok(self.plan_prompt_and_command(caller, text).await?.0)
    }

    /// What the intent engine makes of `text`, planning nothing (any role that may ask). A
    /// front door that shows device plans its own way (the chat page's device cards) reads
    /// the kind of request here first.
    pub async fn understand(&self, caller: &Caller, text: &str) -> Result<Intent> {
        self.allow(caller, Op::Ask, "ask", Resource::Fleet)?;
        Ok(parse(text, &self.vocabulary().await?))
    }

    /// [`FleetManager::plan_prompt`], and for a command plan with devices to send to, the
    /// typed command a confirmation starts ([`FleetManager::start_command`] with the plan's id).
    pub(super) async fn plan_prompt_and_command(
        &self,
        caller: &Caller,
        text: &str,
    ) -> Result<(Plan, Option<CommandSpec>)> {
        self.allow(caller, Op::Ask, "ask", Resource::Fleet)?;
        let vocab = self.vocabulary().await?;
        match parse(text, &vocab) {
            Intent::Command(c) => self.plan_command_intent(caller, c).await,
            intent => Ok((self.plan_intent(caller, intent).await?, None)),
        }
    }

    /// [`FleetManager::plan_prompt`], and whether `text` is a question the intent engine can
    /// answer only with a listing (see [`crate::intent::is_open_question`]): one parse and one
    /// read of the vocabulary for both.
    pub async fn plan_prompt_noting_open_questions(&self, caller: &Caller, text: &str) -> Result<(Plan, bool)> {
        self.allow(caller, Op::Ask, "ask", Resource::Fleet)?;
        let vocab = self.vocabulary().await?;
        let intent = parse(text, &vocab);
        let open = is_open_question(text, &intent, &vocab);
        Ok((self.plan_intent(caller, intent).await?, open))
    }

    async fn plan_intent(&self, caller: &Caller, intent: Intent) -> Result<Plan> {
        match intent {
            Intent::Update(u) => self.plan_update_intent(caller, u).await,
            Intent::Updates { changes } => self.plan_update_intents(caller, changes).await,
            Intent::ListFirmware { device_types } => {
                self.allow(caller, Op::ListFirmware, "list firmware", Resource::Fleet)?;
                let versions = self.catalog_versions().await?;
                let types: Vec<_> =
                    if device_types.is_empty() { versions.keys().cloned().collect() } else { device_types };
                let lines: Vec<String> = types
                    .iter()
                    .map(|t| {
                        let mut vs = versions.get(t).cloned().unwrap_or_default();
                        vs.sort();
                        let list: Vec<String> = vs.iter().map(ToString::to_string).collect();
                        format!("{t}: {}", if list.is_empty() { "no firmware".to_string() } else { list.join(", ") })
                    })
                    .collect();
                let mut plan = Plan::informational(
                    Action::ListFirmware,
                    format!(
                        "Firmware for {} device type{}: {}.",
                        types.len(),
                        if types.len() == 1 { "" } else { "s" },
                        lines.join("; ")
                    ),
                );
                plan.device_types = types;
                Ok(plan)
            }
            Intent::FleetStatus { device_types, thing_mentions, current_version, not_latest } => {
                self.allow(caller, Op::ReadFleet, "read fleet status", Resource::Fleet)?;
                let mut refusals = Vec::new();
                let mut things = Vec::new();
                for m in &thing_mentions {
                    match self.resolve_mention(m).await? {
                        Ok(t) => things.push(t),
                        Err(r) => refusals.push(r),
                    }
                }
                let mut parts = Vec::new();
                let queries: Vec<DeviceQuery> = if device_types.is_empty() {
                    vec![DeviceQuery { version: current_version.clone(), ..Default::default() }]
                } else {
                    device_types
                        .iter()
                        .map(|t| DeviceQuery {
                            device_type: Some(t.clone()),
                            version: current_version.clone(),
                            ..Default::default()
                        })
                        .collect()
                };
                if not_latest && (things.is_empty() || !device_types.is_empty()) {
                    parts.push(self.not_latest_status(caller, &device_types).await?);
                } else if things.is_empty() || !device_types.is_empty() {
                    for q in &queries {
                        let status = self.fleet_status(caller, q).await?;
                        let scope = q.device_type.as_ref().map_or("the fleet".to_string(), ToString::to_string);
                        let filter = current_version.as_ref().map(|f| format!(" on {f}")).unwrap_or_default();
                        // Devices per version across the types in scope.
                        let mut per_version: std::collections::BTreeMap<&str, usize> = Default::default();
                        for (v, n) in status.summary.iter().flat_map(|s| s.by_version.iter()) {
                            *per_version.entry(v.as_str()).or_default() += n;
                        }
                        let counts: Vec<String> = per_version.into_iter().map(|(v, n)| format!("{n} on {v}")).collect();
                        let shown: Vec<&str> = status.devices.iter().take(20).map(|d| d.thing.as_str()).collect();
                        let more = status.devices.len().saturating_sub(shown.len());
                        parts.push(format!(
                            "{} device{} in {scope}{filter} ({}){}{}",
                            status.devices.len(),
                            if status.devices.len() == 1 { "" } else { "s" },
                            counts.join(", "),
                            if shown.is_empty() { String::new() } else { format!(": {}", shown.join(", ")) },
                            if more > 0 { format!(" and {more} more") } else { String::new() },
                        ));
                    }
                }
                for t in &things {
                    let d = self.device(caller, t).await?;
                    let v = d.firmware_version.map_or_else(|| "an unknown version".to_string(), |v| v.to_string());
                    parts.push(format!("{} runs {v} ({})", d.thing, if d.connected { "connected" } else { "offline" }));
                }
                let mut plan = Plan::informational(Action::FleetStatus, format!("{}.", parts.join("; ")));
                plan.device_types = device_types;
                plan.refusals = refusals;
                Ok(plan)
            }
            Intent::RolloutStatus { rollout } => {
                self.allow(caller, Op::ListRollouts, "read rollouts", Resource::Fleet)?;
                let rollouts = match rollout {
                    Some(r) => self.rollouts_for(&r, false).await?,
                    None => self.backend.rollouts.list(&RolloutQuery { limit: Some(10), ..Default::default() }).await?,
                };
                let message = if rollouts.is_empty() {
                    "No rollouts match.".to_string()
                } else {
                    let lines: Vec<String> = rollouts
                        .iter()
                        .map(|r| {
                            format!(
                                "{} {} {} → {} ({} devices)",
                                r.id,
                                r.status.as_str(),
                                r.device_type,
                                r.version,
                                r.things.len()
                            )
                        })
                        .collect();
                    format!("{}.", lines.join("; "))
                };
                let mut plan = Plan::informational(Action::RolloutStatus, message);
                plan.rollouts = rollouts.into_iter().map(|r| r.id).collect();
                Ok(plan)
            }
            Intent::Cancel { rollout } => {
                self.allow(caller, Op::CancelRollout, "cancel a rollout", Resource::Fleet)?;
                let active = self.rollouts_for(&rollout, true).await?;
                let mut plan = Plan::informational(Action::Cancel, String::new());
                if active.is_empty() {
                    let target = match &rollout {
                        RolloutRef::Id(id) => id.to_string(),
                        RolloutRef::DeviceType(t) => t.to_string(),
                        RolloutRef::Current => "rollout".to_string(),
                        RolloutRef::AllActive => "rollouts".to_string(),
                    };
                    plan.refusals.push(Refusal { target, reason: "no active rollout matches".into() });
                    plan.message = "Nothing to cancel: no active rollout matches.".into();
                } else if rollout == RolloutRef::Current && active.len() > 1 {
                    let ids: Vec<String> = active.iter().map(|r| r.id.to_string()).collect();
                    plan.message =
                        format!("{} rollouts are active; say which to cancel: {}.", ids.len(), ids.join(", "));
                    plan.suggestions = ids;
                } else {
                    let ids: Vec<String> = active.iter().map(|r| format!("{} ({})", r.id, r.device_type)).collect();
                    let what = match (&rollout, ids.len()) {
                        (RolloutRef::AllActive, 1) => format!("the only active rollout, {}", ids[0]),
                        (RolloutRef::AllActive, n) => format!("all {n} active rollouts: {}", ids.join(", ")),
                        _ => ids.join(", "),
                    };
                    plan.message = format!("Would cancel {what}; queued devices would not start.");
                    plan.rollouts = active.into_iter().map(|r| r.id).collect();
                }
                Ok(plan)
            }
            Intent::SetOta { enabled, device_types } => {
                let what = if enabled { "enable OTA" } else { "disable OTA" };
                let context = crate::authz::Context { ota_enabled: Some(enabled), ..self.context() };
                for t in &device_types {
                    self.authorize(caller, Op::SetOtaEnabled, what, &Resource::device_type(t.as_str()), &context)?;
                }
                if device_types.is_empty() {
                    self.authorize(caller, Op::SetOtaEnabled, what, &Resource::Fleet, &context)?;
                }
                let now_enabled = self.enabled_types(device_types.iter().cloned()).await?;
                let (action, verb) =
                    if enabled { (Action::EnableOta, "enable") } else { (Action::DisableOta, "disable") };
                let states: Vec<String> = device_types
                    .iter()
                    .map(|t| format!("{t} (now {})", if now_enabled.contains(t) { "enabled" } else { "disabled" }))
                    .collect();
                let mut plan = Plan::informational(action, format!("Would {verb} OTA for {}.", states.join(", ")));
                plan.device_types = device_types;
                Ok(plan)
            }
            Intent::Unknown { message, suggestions } => {
                let mut plan = Plan::informational(Action::Unknown, message);
                plan.suggestions = suggestions;
                Ok(plan)
            }
            Intent::DeviceStatus { devices } => self.plan_device_status(caller, &devices).await,
            Intent::Command(c) => Ok(self.plan_command_intent(caller, c).await?.0),
            Intent::Telemetry { devices, metrics, minutes } => {
                self.plan_telemetry(caller, &devices, &metrics, minutes).await
            }
        }
    }

    pub(super) async fn plan_update_intent(&self, caller: &Caller, u: UpdateIntent) -> Result<Plan> {
        self.allow(caller, Op::PlanUpdate, "plan an update", Resource::Fleet)?;
        let action = if u.rollback { UpdateAction::Rollback } else { UpdateAction::Update };
        let mut refusals: Vec<Refusal> = u
            .unknown_names
            .iter()
            .map(|n| Refusal {
                target: n.text.clone(),
                reason: if n.suggestions.is_empty() {
                    "unknown device type or thing".to_string()
                } else {
                    format!("unknown device type or thing; did you mean {}?", n.suggestions.join(", "))
                },
            })
            .collect();
        let mut things = BTreeSet::new();
        for m in &u.thing_mentions {
            match self.resolve_mention(m).await? {
                Ok(t) => {
                    things.insert(t);
                }
                Err(r) => refusals.push(r),
            }
        }
        let mut exclude_things = BTreeSet::new();
        let mut unresolved_exclusions = Vec::new();
        for m in &u.exclude_thing_mentions {
            match self.resolve_mention(m).await? {
                Ok(t) => {
                    exclude_things.insert(t);
                }
                Err(r) => unresolved_exclusions.push(r),
            }
        }
        // An exclusion we cannot resolve may be a device the operator meant to protect: plan
        // nothing rather than update it.
        if !unresolved_exclusions.is_empty() {
            let list: Vec<String> =
                unresolved_exclusions.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
            let mut plan = Plan::informational(
                action.into(),
                format!(
                    "Nothing planned: the exclusion {} names no device, so it cannot be honoured. Name the devices to leave out exactly.",
                    list.join("; ")
                ),
            );
            plan.refusals = unresolved_exclusions;
            return Ok(plan);
        }
        let Some(version) = u.version else {
            let mut plan = Plan::informational(
                Action::Unknown,
                format!("Which version? Say \"to latest\" or a version such as 2.0.0. {EXAMPLES}"),
            );
            plan.refusals = refusals;
            return Ok(plan);
        };
        let req = UpdateRequest {
            action,
            version,
            target: Target { whole_fleet: u.whole_fleet, device_types: u.device_types.into_iter().collect(), things },
            filters: Filters {
                current_version: u.current_version,
                exclude_types: u.exclude_types.into_iter().collect(),
                exclude_things,
                only_connected: u.only_connected,
            },
            revert_on_abort: u.revert_on_abort,
        };
        let mut plan = if req.target.is_empty() {
            let mut p = Plan::informational(action.into(), String::new());
            p.request = Some(req);
            p
        } else {
            self.plan_update(caller, &req).await?
        };
        if !refusals.is_empty() {
            plan.refusals.extend(refusals);
            plan.refusals.sort();
            plan.refusals.dedup();
            if plan.deployments.is_empty() {
                let list: Vec<String> = plan.refusals.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
                plan.message = format!(
                    "Nothing to {}. Refused: {}.",
                    action.as_str().replace("rollback", "roll back"),
                    list.join("; ")
                );
            } else {
                let list: Vec<String> = plan.refusals.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
                let head = plan.message.split(" Refused:").next().unwrap_or_default().to_string();
                plan.message = format!("{head} Refused: {}.", list.join("; "));
            }
        }
        Ok(plan)
    }

    /// "Which devices are not on the latest firmware?": the latest differs per type, so each
    /// type in scope (every known type when none is named) is read with its own latest from
    /// the catalog (the highest release, as "to latest" picks it). A device that reports no
    /// version is not on the latest; a type with no firmware in the catalog is said so.
    async fn not_latest_status(&self, caller: &Caller, device_types: &[DeviceType]) -> Result<String> {
        const SHOWN: usize = 20;
        let versions = self.catalog_versions().await?;
        let named = !device_types.is_empty();
        let types: Vec<DeviceType> =
            if named { device_types.to_vec() } else { self.known_types().await?.into_iter().collect() };
        let (mut total, mut shown) = (0usize, 0usize);
        let mut lines = Vec::new();
        for t in &types {
            let q = DeviceQuery { device_type: Some(t.clone()), ..Default::default() };
            let status = self.fleet_status(caller, &q).await?;
            let Some(latest) = VersionRequest::Latest.resolve(versions.get(t).into_iter().flatten()) else {
                if named || !status.devices.is_empty() {
                    lines.push(format!("{t}: no firmware in the catalog"));
                }
                continue;
            };
            let behind: Vec<_> =
                status.devices.iter().filter(|d| d.firmware_version.as_ref() != Some(&latest)).collect();
            if behind.is_empty() {
                if named {
                    lines.push(format!("{t} (latest {latest}): none"));
                }
                continue;
            }
            total += behind.len();
            let mut per_version: std::collections::BTreeMap<String, usize> = Default::default();
            for d in &behind {
                let v = d.firmware_version.as_ref().map_or_else(|| "unknown".to_string(), ToString::to_string);
                *per_version.entry(v).or_default() += 1;
            }
            let counts: Vec<String> = per_version.into_iter().map(|(v, n)| format!("{n} on {v}")).collect();
            let names: Vec<&str> = behind.iter().take(SHOWN.saturating_sub(shown)).map(|d| d.thing.as_str()).collect();
            shown += names.len();
            let more = behind.len() - names.len();
            lines.push(format!(
                "{t} (latest {latest}): {} ({}){}{}",
                behind.len(),
                counts.join(", "),
                if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
                if more > 0 { format!(" and {more} more") } else { String::new() },
            ));
        }
        let head =
            format!("{total} device{} not on the latest firmware of their type", if total == 1 { "" } else { "s" });
        Ok(if lines.is_empty() { head } else { format!("{head}: {}", lines.join("; ")) })
    }

    /// Resolves a written thing name (`pet_feeder-3`) to a registered thing, or a refusal
    /// with close matches. Several equally close things are never guessed between.
    async fn resolve_mention(&self, mention: &str) -> Result<Result<ThingName, Refusal>> {
        if let Ok(t) = ThingName::parse(mention)
            && self.backend.registry.get(&t).await?.is_some()
        {
            return Ok(Ok(t));
        }
        let candidates = self.thing_candidates(mention).await?;
        Ok(match resolve_thing(mention, &candidates) {
            ThingMatch::Found(t) => Ok(t),
            ThingMatch::NotFound { suggestions } => Err(Refusal {
                target: mention.to_string(),
                reason: if suggestions.is_empty() {
                    "unknown thing: no such device in the registry".to_string()
                } else {
                    format!("unknown thing; did you mean {}?", suggestions.join(", "))
                },
            }),
        })
    }

    /// The rollouts a reference means.
    async fn rollouts_for(&self, r: &RolloutRef, active_only: bool) -> Result<Vec<Rollout>> {
        match r {
            RolloutRef::Id(id) => Ok(match self.backend.rollouts.get(id).await {
                Ok(r) if !active_only || r.status.is_active() => vec![r],
                Ok(_) | Err(crate::Error::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e),
            }),
            RolloutRef::DeviceType(t) => {
                let q = RolloutQuery {
                    device_type: Some(t.clone()),
                    active_only,
                    limit: Some(if active_only { 1 } else { 5 }),
                };
                self.backend.rollouts.list(&q).await
            }
            RolloutRef::AllActive => {
                self.backend.rollouts.list(&RolloutQuery { active_only: true, ..Default::default() }).await
            }
            RolloutRef::Current => {
                let active =
                    self.backend.rollouts.list(&RolloutQuery { active_only: true, ..Default::default() }).await?;
                if active.is_empty() && !active_only {
                    return self.backend.rollouts.list(&RolloutQuery { limit: Some(1), ..Default::default() }).await;
                }
                Ok(active)
            }
        }
    }
}

/// Device management from plain words: device questions, commands and telemetry.
impl FleetManager {
    /// The devices `sel` names: each named thing (one that names no device is refused with
    /// close matches), and the devices of its types, or of the fleet, that pass its place and
    /// conditions. Sorted by thing, each once.
    async fn select_devices(&self, caller: &Caller, sel: &DeviceSelection) -> Result<(Vec<Device>, Vec<Refusal>)> {
        let mut refusals = Vec::new();
        let mut found: BTreeMap<ThingName, Device> = BTreeMap::new();
        for m in &sel.thing_mentions {
            match self.resolve_mention(m).await? {
                Ok(t) => {
                    let d = self.device(caller, &t).await?;
                    found.insert(t, d);
                }
                Err(r) => refusals.push(r),
            }
        }
        for q in group_queries(sel) {
            for d in self.fleet_status(caller, &q).await?.devices {
                found.entry(d.thing.clone()).or_insert(d);
            }
        }
        Ok((found.into_values().collect(), refusals))
    }

    /// "Is pet_feeder-03 online?", "Which devices are offline?", "List the devices on
    /// factory-floor-1": exactly the devices the question selects, each with its status.
    async fn plan_device_status(&self, caller: &Caller, sel: &DeviceSelection) -> Result<Plan> {
        self.allow(caller, Op::ReadFleet, "read device status", Resource::Fleet)?;
        let (devices, mut refusals) = self.select_devices(caller, sel).await?;
        let grouped = !sel.device_types.is_empty() || sel.whole_fleet;
        if grouped && let Some(place) = &sel.location {
            // A place no device is at is said so, rather than looking like an empty answer.
            let anywhere = DeviceQuery { location: Some(place.clone()), ..Default::default() };
            if self.backend.registry.list(&anywhere).await?.is_empty() {
                refusals.push(Refusal { target: place.clone(), reason: "no device is at this location".into() });
            }
        }
        let mut parts: Vec<String> = Vec::new();
        let named: Vec<&Device> = devices.iter().filter(|d| sel.thing_mentions.iter().any(|m| names(m, d))).collect();
        let in_group: Vec<&Device> = devices.iter().filter(|d| !named.iter().any(|n| n.thing == d.thing)).collect();
        if grouped {
            let scope = scope_words(sel);
            let n = in_group.len();
            parts.push(if n == 0 {
                format!("No device{scope}")
            } else if n <= 5 {
                let lines: Vec<String> = in_group.iter().map(|d| DeviceStatus::of((*d).clone()).summary).collect();
                format!("{n} device{}{scope}: {}", plural(n), lines.join("; "))
            } else {
                let shown: Vec<&str> = in_group.iter().take(20).map(|d| d.thing.as_str()).collect();
                let more = n - shown.len();
                let online = in_group.iter().filter(|d| d.connected).count();
                format!(
                    "{n} devices{scope} ({online} online): {}{}",
                    shown.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() }
                )
            });
        }
        for d in &named {
            parts.push(DeviceStatus::of((*d).clone()).summary);
        }
        refusals.sort();
        refusals.dedup();
        if !refusals.is_empty() {
            let list: Vec<String> = refusals.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
            parts.push(format!("Not found: {}", list.join("; ")));
        }
        let mut plan = Plan::informational(Action::DeviceStatus, format!("{}.", parts.join(". ")));
        plan.devices = devices.iter().map(DeviceSummary::of).collect();
        plan.device_types = sel.device_types.clone();
        plan.refusals = refusals;
        Ok(plan)
    }

    /// A command in plain words, planned by [`FleetManager::plan_command`]: each device it
    /// would be sent to, each device refused and why, and the command plan's id. Also the
    /// typed command a confirmation starts, when there is something to send.
    async fn plan_command_intent(&self, caller: &Caller, c: CommandIntent) -> Result<(Plan, Option<CommandSpec>)> {
        let mut refusals = Vec::new();
        let mut things = Vec::new();
        for m in &c.devices.thing_mentions {
            match self.resolve_mention(m).await? {
                Ok(t) => {
                    if !things.contains(&t) {
                        things.push(t);
                    }
                }
                Err(r) => refusals.push(r),
            }
        }
        let nothing = |message: String, refusals: Vec<Refusal>| {
            let mut plan = Plan::informational(Action::Command, message);
            plan.refusals = refusals;
            plan
        };
        if c.devices.device_types.len() > 1 {
            let names: Vec<&str> = c.devices.device_types.iter().map(DeviceType::as_str).collect();
            return Ok((
                nothing(
                    format!(
                        "Nothing planned: a command goes to one device type at a time (asked for {}); send one per type, or name the devices one by one.",
                        names.join(", ")
                    ),
                    refusals,
                ),
                None,
            ));
        }
        let query = group_queries(&c.devices).into_iter().next();
        if things.is_empty() && query.is_none() {
            let list: Vec<String> = refusals.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
            return Ok((nothing(format!("Nothing to send: {}.", list.join("; ")), refusals), None));
        }
        let mut parameters = serde_json::Map::new();
        if let Some(state) = c.state {
            parameters.insert("state".into(), serde_json::Value::String(state.as_str().into()));
        }
        if c.command == crate::command::UPDATE_CONFIG {
            let declared = self.declared_settings(&things, query.as_ref()).await?;
            for s in &c.settings {
                match setting_change(s, &declared) {
                    Ok((name, value)) => {
                        parameters.insert(name, value);
                    }
                    Err(reason) => refusals.push(Refusal { target: s.name.clone(), reason }),
                }
            }
            if parameters.len() < c.settings.len() {
                refusals.sort();
                let list: Vec<String> = refusals.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
                return Ok((nothing(format!("Nothing to send: {}.", list.join("; ")), refusals), None));
            }
        }
        let spec = CommandSpec { command: c.command.clone(), parameters, things, query, timeout_seconds: None };
        let cp = self.plan_command(caller, &spec).await?;
        let mut plan = Plan::informational(Action::Command, String::new());
        plan.commands = cp
            .targets
            .iter()
            .map(|t| PlannedCommand {
                thing: t.thing.clone(),
                command: cp.command.clone(),
                parameters: cp.parameters.clone(),
            })
            .collect();
        refusals.extend(cp.refusals.iter().cloned());
        refusals.sort();
        refusals.dedup();
        let refused = if refusals.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = refusals.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
            format!(" Refused: {}.", list.join("; "))
        };
        plan.message = if plan.commands.is_empty() {
            format!("Nothing to send {}.{refused}", cp.command)
        } else {
            let running = cp.running.as_ref().map(|r| format!(" It is already running as {r}.")).unwrap_or_default();
            let head = cp.message.split("; ").next().unwrap_or_default();
            format!("Would send {head}.{running}{refused}")
        };
        plan.refusals = refusals;
        plan.plan_id = cp.plan_id.clone();
        plan.device_types = c.devices.device_types.clone();
        Ok((plan, cp.plan_id.is_some().then_some(spec)))
    }

    /// The settings the firmware of the devices a command would reach declares, each once
    /// (the first declaration of a name wins; a fleet's firmware agrees on its settings).
    async fn declared_settings(
        &self,
        things: &[ThingName],
        query: Option<&DeviceQuery>,
    ) -> Result<BTreeMap<String, crate::command::settings::SettingSpec>> {
        let mut firmware: BTreeSet<(DeviceType, crate::version::FirmwareVersion)> = BTreeSet::new();
        for t in things {
            if let Some(d) = self.backend.registry.get(t).await?
                && let Some(v) = d.firmware_version
            {
                firmware.insert((d.device_type, v));
            }
        }
        if let Some(q) = query {
            for d in self.backend.registry.list(q).await? {
                if let Some(v) = d.firmware_version {
                    firmware.insert((d.device_type, v));
                }
            }
        }
        let mut out = BTreeMap::new();
        for (device_type, version) in firmware {
            let artifact = crate::catalog::ArtifactRef { device_type, version };
            let Ok(bytes) = self.backend.catalog.read_metadata(&artifact).await else { continue };
            let Ok(m) = crate::catalog::FirmwareMetadata::parse(&artifact, &bytes) else { continue };
            for (k, v) in m.capabilities().settings {
                out.entry(k).or_insert(v);
            }
        }
        Ok(out)
    }

    /// "Show the last 24 hours of CO2 for co2_monitor-01": the history of one device, one
    /// series per metric asked for (every metric it reports when none is named).
    async fn plan_telemetry(
        &self,
        caller: &Caller,
        sel: &DeviceSelection,
        metrics: &[String],
        minutes: u32,
    ) -> Result<Plan> {
        let (devices, mut refusals) = self.select_devices(caller, sel).await?;
        let window = window_words(minutes);
        let device = match devices.as_slice() {
            [one] => one,
            [] => {
                let mut plan = Plan::informational(
                    Action::Telemetry,
                    if refusals.is_empty() {
                        format!("No device{} to show telemetry for.", scope_words(sel))
                    } else {
                        let list: Vec<String> =
                            refusals.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
                        format!("No telemetry to show: {}.", list.join("; "))
                    },
                );
                plan.refusals = refusals;
                return Ok(plan);
            }
            many => {
                let names: Vec<String> = many.iter().map(|d| d.thing.to_string()).collect();
                let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
                let mut plan = Plan::informational(
                    Action::Telemetry,
                    format!(
                        "That names {} devices ({}{}); telemetry is shown for one device at a time: name one.",
                        many.len(),
                        shown.join(", "),
                        if many.len() > shown.len() { ", ..." } else { "" }
                    ),
                );
                plan.suggestions = names;
                plan.refusals = refusals;
                return Ok(plan);
            }
        };
        let until = self.now();
        let since = until - chrono::Duration::minutes(i64::from(minutes));
        let query = TelemetryQuery { since: Some(since), ..TelemetryQuery::of(device.thing.clone()) };
        let points = self.telemetry(caller, &query).await?;
        // The metrics it reports: in the window, and in its last telemetry.
        let mut available: BTreeSet<String> = BTreeSet::new();
        for values in points.iter().map(|p| &p.values).chain(device.telemetry.iter().map(|t| &t.values)) {
            available.extend(values.iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k.clone()));
        }
        let mut chosen: Vec<String> = Vec::new();
        if metrics.is_empty() {
            chosen.extend(available.iter().cloned());
        }
        for m in metrics {
            match metric_matches(m, &available).as_slice() {
                [one] => {
                    if !chosen.contains(one) {
                        chosen.push(one.clone());
                    }
                }
                [] => refusals.push(Refusal {
                    target: m.clone(),
                    reason: if available.is_empty() {
                        format!("{} has reported no telemetry", device.thing)
                    } else {
                        format!(
                            "not a metric of {}; it reports {}",
                            device.thing,
                            available.iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    },
                }),
                several => refusals.push(Refusal {
                    target: m.clone(),
                    reason: format!("could mean {}; say which", several.join(" or ")),
                }),
            }
        }
        let mut parts = Vec::new();
        let mut series = Vec::new();
        for metric in &chosen {
            let readings: Vec<TelemetryReading> = points
                .iter()
                .filter_map(|p| Some(TelemetryReading { at: p.at, value: p.values.get(metric)?.as_f64()? }))
                .collect();
            parts.push(describe_series(metric, &readings));
            series.push(TelemetrySeries {
                thing: device.thing.clone(),
                metric: metric.clone(),
                since,
                until,
                points: thin(readings, MAX_SERIES_POINTS),
            });
        }
        refusals.sort();
        refusals.dedup();
        let mut message = if parts.is_empty() {
            format!("No telemetry of {} to show for the {window}", device.thing)
        } else {
            format!("{}, {window}: {}", device.thing, parts.join("; "))
        };
        if !refusals.is_empty() {
            let list: Vec<String> = refusals.iter().map(|r| format!("{} ({})", r.target, r.reason)).collect();
            message.push_str(&format!(". Not shown: {}", list.join("; ")));
        }
        let mut plan = Plan::informational(Action::Telemetry, format!("{message}."));
        plan.telemetry = series;
        plan.refusals = refusals;
        Ok(plan)
    }
}

/// The registry queries of a selection's group: one per type, or one for the fleet, each
/// with the place and conditions; none when it names devices only.
fn group_queries(sel: &DeviceSelection) -> Vec<DeviceQuery> {
    let base = DeviceQuery {
        location: sel.location.clone(),
        connected: sel.connected,
        health: sel.health,
        state: sel.state,
        ..Default::default()
    };
    if !sel.device_types.is_empty() {
        sel.device_types.iter().map(|t| DeviceQuery { device_type: Some(t.clone()), ..base.clone() }).collect()
    } else if sel.whole_fleet {
        vec![base]
    } else {
        Vec::new()
    }
}

/// Whether the mention `m` names device `d` (as written, or resolved to it).
fn names(m: &str, d: &Device) -> bool {
    d.thing.as_str().eq_ignore_ascii_case(m)
        || matches!(resolve_thing(m, std::slice::from_ref(&d.thing)), ThingMatch::Found(_))
}

/// " of type weather_station at line 7 that are offline", for a message.
fn scope_words(sel: &DeviceSelection) -> String {
    let mut s = String::new();
    if !sel.device_types.is_empty() {
        let names: Vec<&str> = sel.device_types.iter().map(DeviceType::as_str).collect();
        s.push_str(&format!(" of type {}", names.join(", ")));
    }
    if let Some(l) = &sel.location {
        s.push_str(&format!(" at {l}"));
    }
    let mut conditions = Vec::new();
    if let Some(c) = sel.connected {
        conditions.push(if c { "online".to_string() } else { "offline".to_string() });
    }
    if let Some(h) = sel.health {
        conditions.push(format!("with health {h}"));
    }
    if let Some(st) = sel.state {
        conditions.push(match st {
            OperationalState::Maintenance => "in maintenance".to_string(),
            other => other.as_str().to_string(),
        });
    }
    if !conditions.is_empty() {
        s.push_str(&format!(" {}", conditions.join(", ")));
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A setting as written, matched against the declared settings, with its value read by the
/// declared type: the name exactly, or the one declared name it starts (`sample_rate` →
/// `sample_rate_seconds`); a unit after a value of a `_seconds` setting is converted. The
/// check against the bounds is [`FleetManager::plan_command`]'s, per device.
fn setting_change(
    s: &SettingWords,
    declared: &BTreeMap<String, crate::command::settings::SettingSpec>,
) -> std::result::Result<(String, serde_json::Value), String> {
    use crate::command::settings::SettingType;
    let wanted = s.name.to_ascii_lowercase();
    let name = if declared.contains_key(&wanted) || declared.is_empty() {
        wanted.clone()
    } else {
        let close: Vec<&String> = declared.keys().filter(|k| k.starts_with(&format!("{wanted}_"))).collect();
        match close.as_slice() {
            [one] => (*one).clone(),
            [] => {
                let list: Vec<&str> = declared.keys().map(String::as_str).collect();
                return Err(format!("no such setting; the firmware of these devices declares {}", list.join(", ")));
            }
            several => {
                let list: Vec<&str> = several.iter().map(|k| k.as_str()).collect();
                return Err(format!("could mean {}; say which", list.join(" or ")));
            }
        }
    };
    let spec = declared.get(&name);
    let raw = s.value.trim();
    let factor = match s.unit.as_deref() {
        None => 1.0,
        Some(u) if name.ends_with("_seconds") => match u {
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            _ => return Err(format!("{name} is in seconds; \"{u}\" is not a unit of time it takes")),
        },
        Some(u) => return Err(format!("{name} takes no unit such as \"{u}\"; give the number alone")),
    };
    let value = match spec.map(|s| s.kind) {
        Some(SettingType::Integer) => match raw.parse::<f64>() {
            #[allow(clippy::cast_possible_truncation)] // checked to be whole and in i64 range
            Ok(n) if (n * factor).fract() == 0.0 && (n * factor).abs() < 9.0e15 => {
                serde_json::Value::from((n * factor) as i64)
            }
            _ => serde_json::Value::String(raw.to_string()),
        },
        Some(SettingType::Number) => {
            match raw.parse::<f64>().ok().and_then(|n| serde_json::Number::from_f64(n * factor)) {
                Some(n) => serde_json::Value::Number(n),
                None => serde_json::Value::String(raw.to_string()),
            }
        }
        Some(SettingType::Boolean) => match raw.to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "enabled" | "enable" => serde_json::Value::Bool(true),
            "false" | "off" | "no" | "disabled" | "disable" => serde_json::Value::Bool(false),
            _ => serde_json::Value::String(raw.to_string()),
        },
        Some(SettingType::Enum | SettingType::String) => {
            let allowed = spec.map(|s| s.allowed.clone()).unwrap_or_default();
            let canonical = allowed.iter().find(|a| a.eq_ignore_ascii_case(raw)).cloned();
            serde_json::Value::String(canonical.unwrap_or_else(|| raw.to_string()))
        }
        // Undeclared: as written, a number when it reads as one (the plan refuses it per device).
        None => match raw.parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::String(raw.to_string()),
        },
    };
    Ok((name, value))
}

/// The reported metrics a metric as written means: the name exactly, one it starts
/// (`co2` → `co2_ppm`), or one holding its words in order (`moisture` →
/// `soil_moisture_pct`); punctuation is ignored (`PM2.5` → `pm2_5_ugm3`).
fn metric_matches(written: &str, available: &BTreeSet<String>) -> Vec<String> {
    let words: Vec<String> = written
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        return Vec::new();
    }
    let joined = words.join("_");
    if available.contains(&joined) {
        return vec![joined];
    }
    let starts: Vec<String> = available.iter().filter(|k| k.starts_with(&format!("{joined}_"))).cloned().collect();
    if !starts.is_empty() {
        return starts;
    }
    available
        .iter()
        .filter(|k| {
            let parts: Vec<&str> = k.split('_').collect();
            parts.windows(words.len()).any(|w| w.iter().zip(&words).all(|(a, b)| a == b))
        })
        .cloned()
        .collect()
}

/// "last 24 hours", "last 30 minutes", "last 7 days".
fn window_words(minutes: u32) -> String {
    let (n, unit) = if minutes.is_multiple_of(24 * 60) && minutes > 24 * 60 {
        (minutes / (24 * 60), "day")
    } else if minutes.is_multiple_of(60) {
        (minutes / 60, "hour")
    } else {
        (minutes, "minute")
    };
    if n == 1 { format!("last {unit}") } else { format!("last {n} {unit}s") }
}

/// "co2_ppm: 24 readings, 402 to 931, last 650 at 2026-…".
fn describe_series(metric: &str, readings: &[TelemetryReading]) -> String {
    let Some(last) = readings.last() else { return format!("{metric}: no readings") };
    let min = readings.iter().map(|r| r.value).fold(f64::INFINITY, f64::min);
    let max = readings.iter().map(|r| r.value).fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{metric}: {} reading{}, {min} to {max}, last {} at {}",
        readings.len(),
        plural(readings.len()),
        last.value,
        last.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// At most `max` readings, evenly spaced over the series, the newest kept.
fn thin(readings: Vec<TelemetryReading>, max: usize) -> Vec<TelemetryReading> {
    let n = readings.len();
    if n <= max || max < 2 {
        return readings;
    }
    let step = (n - 1) as f64 / (max - 1) as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in 0..n
    (0..max).map(|i| readings[((i as f64 * step).round() as usize).min(n - 1)].clone()).collect()
}

#[cfg(test)]
mod tests {
    //! Plain words through the service against the demo world in memory: names resolved
    //! against the registry, plans built from the catalog.

    use std::sync::Arc;

    use crate::auth::Role;

    use super::*;
    use crate::service::Settings;

    fn admin() -> Caller {
        Caller::new("root", [Role::Admin])
    }

    fn operator() -> Caller {
        Caller::new("ana", [Role::Operator])
    }

    const TYPES: [&str; 4] = ["pet_feeder", "weather_station", "smart_plug", "energy_meter"];

    async fn world() -> FleetManager {
        let svc = FleetManager::new(crate::memory::backend(), Settings::default()).expect("valid settings");
        crate::demo::seed(&svc, &admin(), &TYPES, 4, |t, v| format!("image {t} {v}").into_bytes())
            .await
            .expect("seeded");
        svc
    }

    #[tokio::test]
    async fn device_numbers_with_spaces_or_words_resolve_against_the_registry() {
        let svc = world().await;
        for prompt in [
            "what's the status of weather station 2",
            "how is weather station two doing",
            "what is weather station number 2 running",
        ] {
            let plan = svc.plan_prompt(&operator(), prompt).await.unwrap();
            assert_eq!(plan.action, Action::FleetStatus, "{prompt}");
            assert!(plan.message.contains("weather_station-02 runs"), "{prompt}: {}", plan.message);
            assert!(plan.refusals.is_empty(), "{prompt}");
        }
        let plan = svc.plan_prompt(&operator(), "update pet feeder three to latest").await.unwrap();
        let request = plan.request.as_ref().expect("an update plan");
        let named: Vec<&str> = request.target.things.iter().map(|t| t.as_str()).collect();
        assert_eq!(named, ["pet_feeder-03"], "{}", plan.message);
        assert!(plan.deployments.iter().flat_map(|d| d.things.iter()).all(|t| t.as_str() == "pet_feeder-03"));
        // A number that names no device is refused with close matches, never changed.
        let plan = svc.plan_prompt(&operator(), "update pet feeder 9 to latest").await.unwrap();
        assert!(plan.deployments.is_empty(), "{}", plan.message);
        assert_eq!(plan.refusals.len(), 1);
        assert!(plan.refusals[0].reason.contains("pet_feeder-01"), "{:?}", plan.refusals);
        let plan = svc.plan_prompt(&operator(), "status of weather station 7").await.unwrap();
        assert!(plan.refusals.iter().any(|r| r.target == "weather_station-7"), "{:?}", plan.refusals);
    }

    /// The demo devices of `TYPES` not on their type's latest release, by type, and that latest.
    fn behind_in_demo() -> Vec<(DeviceType, crate::version::FirmwareVersion, Vec<String>)> {
        TYPES
            .iter()
            .map(|t| {
                let t = DeviceType::parse(t).unwrap();
                let latest = VersionRequest::Latest.resolve(&crate::demo::versions(&t)).unwrap();
                let behind = crate::demo::devices(&t, 4)
                    .into_iter()
                    .filter(|(_, v)| *v != latest)
                    .map(|(thing, _)| thing.to_string())
                    .collect();
                (t, latest, behind)
            })
            .collect()
    }

    #[tokio::test]
    async fn not_on_the_latest_is_resolved_per_type() {
        let svc = world().await;
        let expected = behind_in_demo();
        let total: usize = expected.iter().map(|(_, _, b)| b.len()).sum();
        assert!(total > 0 && total < TYPES.len() * 4, "the demo has devices on and off the latest");
        let plan =
            svc.plan_prompt(&operator(), "Show me every device that isn't on the latest firmware").await.unwrap();
        assert_eq!(plan.action, Action::FleetStatus);
        assert!(plan.message.starts_with(&format!("{total} devices not on the latest")), "{}", plan.message);
        for (t, latest, behind) in &expected {
            for thing in behind {
                assert!(plan.message.contains(thing.as_str()), "{thing}: {}", plan.message);
            }
            if !behind.is_empty() {
                assert!(plan.message.contains(&format!("{t} (latest {latest})")), "{}", plan.message);
            }
        }
        let plan = svc.plan_prompt(&operator(), "which pet feeders are not on the latest version").await.unwrap();
        let (_, latest, behind) = &expected[0];
        assert!(
            plan.message.starts_with(&format!("{} device", behind.len()))
                && plan.message.contains(&format!("pet_feeder (latest {latest})")),
            "{}",
            plan.message
        );
        assert!(!plan.message.contains("smart_plug"), "{}", plan.message);

        // An update of the devices not on the latest moves exactly those, each type to its own latest.
        let plan = svc.plan_prompt(&operator(), "update every device not on the latest").await.unwrap();
        for (t, latest, behind) in &expected {
            let d = plan.deployments.iter().find(|d| d.device_type == *t);
            match d {
                Some(d) => {
                    assert_eq!(d.version, *latest, "{t}");
                    let moved: Vec<String> = d.things.iter().map(ToString::to_string).collect();
                    assert_eq!(&moved, behind, "{t}");
                }
                None => assert!(behind.is_empty() || plan.message.contains(t.as_str()), "{t}: {}", plan.message),
            }
        }
    }

    /// Starts the pet_feeder and smart_plug updates to the latest: two active rollouts.
    async fn two_active(svc: &FleetManager) -> Vec<crate::names::JobId> {
        let mut ids = Vec::new();
        for prompt in ["update all pet feeders to latest", "update all smart plugs to latest"] {
            let plan = svc.plan_prompt(&operator(), prompt).await.unwrap();
            let request = plan.request.clone().expect("an update plan");
            let started = svc.start(&operator(), &request, plan.plan_id.as_deref()).await.unwrap();
            ids.extend(started.rollouts.iter().map(|r| r.id.clone()));
        }
        assert_eq!(ids.len(), 2);
        ids
    }

    #[tokio::test]
    async fn stop_all_rollouts_plans_every_active_one_and_one_confirmation_cancels_them() {
        use crate::agent::{Assistant, MemorySessions};
        let svc = Arc::new(world().await);
        let mut ids = two_active(&svc).await;
        ids.sort();
        for prompt in ["stop all rollouts", "cancel everything", "cancel all active rollouts", "abort every rollout"] {
            let plan = svc.plan_prompt(&operator(), prompt).await.unwrap();
            assert_eq!(plan.action, Action::Cancel, "{prompt}");
            let mut planned = plan.rollouts.clone();
            planned.sort();
            assert_eq!(planned, ids, "{prompt}: {}", plan.message);
            assert!(plan.message.contains("all 2 active rollouts"), "{prompt}: {}", plan.message);
        }
        // "stop it" with two active still asks which.
        let plan = svc.plan_prompt(&operator(), "stop it").await.unwrap();
        assert!(plan.rollouts.is_empty() && plan.suggestions.len() == 2, "{}", plan.message);

        let assistant = Assistant::new(svc.clone(), Arc::new(MemorySessions::default()));
        let asked = assistant.chat(&operator(), None, "stop all rollouts").await.unwrap();
        assert!(asked.reply.contains("Confirm to cancel"), "{}", asked.reply);
        let done = assistant.chat(&operator(), Some(&asked.session_id), "yes").await.unwrap();
        assert_eq!(done.rollouts.len(), 2, "{}", done.reply);
        for id in &ids {
            assert!(done.reply.contains(id.as_str()), "{}", done.reply);
        }
        let active =
            svc.backend.rollouts.list(&RolloutQuery { active_only: true, ..Default::default() }).await.unwrap();
        assert!(active.is_empty(), "{active:?}");
        // Nothing left: nothing to cancel.
        let plan = svc.plan_prompt(&operator(), "cancel everything").await.unwrap();
        assert!(plan.rollouts.is_empty() && !plan.refusals.is_empty(), "{}", plan.message);
    }

    #[tokio::test]
    async fn a_rollout_that_ended_before_the_confirmation_does_not_stop_the_others() {
        use crate::agent::{Assistant, MemorySessions};
        let svc = Arc::new(world().await);
        let ids = two_active(&svc).await;
        let assistant = Assistant::new(svc.clone(), Arc::new(MemorySessions::default()));
        let asked = assistant.chat(&operator(), None, "cancel everything").await.unwrap();
        assert!(asked.reply.contains("Confirm to cancel"), "{}", asked.reply);
        svc.cancel(&operator(), &ids[0], "ended meanwhile").await.unwrap();
        let done = assistant.chat(&operator(), Some(&asked.session_id), "yes").await.unwrap();
        assert_eq!(done.rollouts.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), [ids[1].clone()], "{}", done.reply);
        assert!(done.reply.contains(&format!("Not cancelled: {}", ids[0])), "{}", done.reply);
    }
}

#[cfg(test)]
mod device_tests {
    //! Device questions, commands and telemetry in plain words, on the demo world in memory:
    //! the plan JSON front doors show (`ota plan --json`), and a confirmed command.

    use serde_json::{Value, json};

    use super::*;
    use crate::auth::Role;
    use crate::service::Settings;

    fn admin() -> Caller {
        Caller::new("root", [Role::Admin])
    }

    fn operator() -> Caller {
        Caller::new("ana", [Role::Operator])
    }

    const TYPES: [&str; 7] = [
        "pet_feeder",
        "weather_station",
        "smart_plug",
        "air_quality_monitor",
        "mailbox_notifier",
        "sound_level_meter",
        "co2_monitor",
    ];

    /// The demo world of `TYPES`, every device online but the demo's offline ones (as the
    /// simulator leaves them), and a week of co2_monitor-01's telemetry.
    async fn world() -> FleetManager {
        let svc = FleetManager::new(crate::memory::backend(), Settings::default()).expect("valid settings");
        crate::demo::seed(&svc, &admin(), &TYPES, 4, |t, v| format!("image {t} {v}").into_bytes())
            .await
            .expect("seeded");
        for name in crate::demo::OFFLINE {
            let t = ThingName::parse(name).unwrap();
            let mut d = svc.backend.registry.get(&t).await.unwrap().unwrap();
            d.connected = false;
            d.last_seen = Some(svc.now() - chrono::Duration::hours(crate::demo::OFFLINE_HOURS));
            svc.backend.registry.upsert(d).await.unwrap();
        }
        let co2 = DeviceType::parse("co2_monitor").unwrap();
        let thing = ThingName::parse("co2_monitor-01").unwrap();
        svc.backend.telemetry.append(crate::demo::telemetry_history(&co2, &thing, svc.now())).await.unwrap();
        svc
    }

    async fn plan(svc: &FleetManager, prompt: &str) -> Value {
        serde_json::to_value(svc.plan_prompt(&operator(), prompt).await.unwrap()).unwrap()
    }

    fn list(v: &Value, key: &str, field: &str) -> Vec<String> {
        v[key].as_array().into_iter().flatten().map(|x| x[field].as_str().unwrap_or_default().to_string()).collect()
    }

    #[tokio::test]
    async fn device_questions_list_exactly_the_devices_they_select() {
        let svc = world().await;
        let p = plan(&svc, "Which devices are offline?").await;
        assert_eq!(p["action"], "device_status", "{p}");
        assert_eq!(list(&p, "devices", "thing"), ["mailbox_notifier-04", "sound_level_meter-04"], "{p}");
        assert!(p["devices"].as_array().unwrap().iter().all(|d| d["connected"] == false));
        assert!(p.get("commands").is_none() && p.get("telemetry").is_none(), "{p}");

        let p = plan(&svc, "Is pet_feeder-03 online?").await;
        assert_eq!(list(&p, "devices", "thing"), ["pet_feeder-03"]);
        let d = &p["devices"][0];
        assert_eq!(
            (&d["connected"], &d["health"], &d["state"], &d["location"], &d["firmware_version"]),
            (&json!(true), &json!("ok"), &json!("active"), &json!("factory-floor-2"), &json!("2.0.0")),
            "{p}"
        );
        assert!(p["message"].as_str().unwrap().contains("pet_feeder-03 at factory-floor-2: online"), "{p}");

        let p = plan(&svc, "What is the status of the weather station on line 7?").await;
        assert_eq!(list(&p, "devices", "thing"), ["weather_station-01"], "{p}");
        let p = plan(&svc, "Show devices with warnings").await;
        assert_eq!(list(&p, "devices", "thing"), ["air_quality_monitor-03"], "{p}");
        assert_eq!(p["devices"][0]["health_message"], "PM2.5 sensor drift", "{p}");
        let p = plan(&svc, "List the devices on factory-floor-1").await;
        let mut want: Vec<String> =
            TYPES.iter().flat_map(|t| [format!("{t}-01"), format!("{t}-02")]).collect::<Vec<_>>();
        want.sort();
        assert_eq!(list(&p, "devices", "thing"), want, "{p}");
        // A place no device is at is said so.
        let p = plan(&svc, "List the devices on line 9").await;
        assert!(p.get("devices").is_none(), "{p}");
        assert_eq!(list(&p, "refusals", "target"), ["line 9"], "{p}");
    }

    #[tokio::test]
    async fn command_plans_list_each_device_and_each_refusal() {
        let svc = world().await;
        let p = plan(&svc, "Reboot mailbox_notifier-04").await;
        assert_eq!(p["action"], "command", "{p}");
        assert!(p.get("commands").is_none() && p.get("plan_id").is_none(), "nothing to send: {p}");
        assert_eq!(list(&p, "refusals", "target"), ["mailbox_notifier-04"], "{p}");
        assert!(p["refusals"][0]["reason"].as_str().unwrap().contains("offline"), "{p}");

        let p = plan(&svc, "Recalibrate all air quality monitors on line 3").await;
        assert_eq!(
            p["commands"],
            json!([{"thing": "air_quality_monitor-02", "command": "recalibrate", "parameters": {}}])
        );
        assert!(p["plan_id"].as_str().unwrap().starts_with("cplan-"), "{p}");
        assert!(p.get("devices").is_none(), "{p}");

        let p = plan(&svc, "Put smart_plug-04 into maintenance").await;
        assert_eq!(
            p["commands"],
            json!([{"thing": "smart_plug-04", "command": "set_state", "parameters": {"state": "maintenance"}}])
        );

        let a = plan(&svc, "Set sample_rate_seconds to 10 on weather_station-02").await;
        let b = plan(&svc, "Set the sample rate of weather_station-02 to 10 s").await;
        assert_eq!(
            a["commands"],
            json!([{"thing": "weather_station-02", "command": "update_config", "parameters": {"sample_rate_seconds": 10}}])
        );
        assert_eq!(a["plan_id"], b["plan_id"], "the same change in other words is the same plan");
        let p = plan(&svc, "set the sample rate of weather_station-02 to 2 minutes").await;
        assert_eq!(p["commands"][0]["parameters"], json!({"sample_rate_seconds": 120}), "{p}");
        let p = plan(&svc, "set log_level to DEBUG on pet_feeder-03").await;
        assert_eq!(p["commands"][0]["parameters"], json!({"log_level": "debug"}), "{p}");

        // Out of bounds, not allowed, undeclared: refused with the reason, nothing to send.
        for (prompt, why) in [
            ("Set sample_rate_seconds to 5000 on weather_station-02", "out of bounds"),
            ("set log_level to loud on pet_feeder-03", "not allowed"),
            ("set brightness to 3 on pet_feeder-03", "no such setting"),
        ] {
            let p = plan(&svc, prompt).await;
            assert!(p.get("commands").is_none() && p.get("plan_id").is_none(), "{prompt}: {p}");
            assert!(p["refusals"][0]["reason"].as_str().unwrap().contains(why), "{prompt}: {p}");
        }
        // recalibrate is declared by the sensing types only.
        let p = plan(&svc, "recalibrate pet_feeder-03").await;
        assert!(p["refusals"][0]["reason"].as_str().unwrap().contains("not declared"), "{p}");
        // A group leaves out devices in maintenance, and says so.
        let p = plan(&svc, "Put smart_plug-04 into maintenance").await;
        let asked =
            svc.ask(&operator(), "Put smart_plug-04 into maintenance", true, p["plan_id"].as_str()).await.unwrap();
        assert!(asked.command.is_some());
        let p = plan(&svc, "reboot all smart plugs").await;
        assert_eq!(list(&p, "commands", "thing"), ["smart_plug-01", "smart_plug-02", "smart_plug-03"], "{p}");
        assert!(p["refusals"][0]["reason"].as_str().unwrap().contains("maintenance"), "{p}");
        // A viewer may not plan commands.
        let viewer = Caller::new("vic", [Role::Viewer]);
        assert!(matches!(svc.plan_prompt(&viewer, "Reboot pet_feeder-03").await, Err(crate::Error::Forbidden { .. })));
    }

    #[tokio::test]
    async fn a_confirmed_command_starts_exactly_its_plan() {
        let svc = world().await;
        let shown = svc.plan_prompt(&operator(), "Put smart_plug-04 into maintenance").await.unwrap();
        let id = shown.plan_id.clone().unwrap();
        // A different plan id is refused and changes nothing.
        let err = svc.ask(&operator(), "Put smart_plug-04 into maintenance", true, Some("cplan-000000000000")).await;
        assert!(matches!(err, Err(crate::Error::Conflict(_))), "{err:?}");
        let t = ThingName::parse("smart_plug-04").unwrap();
        assert_eq!(svc.backend.registry.get(&t).await.unwrap().unwrap().state, OperationalState::Active);
        // Planning alone (execute false) starts nothing either.
        let asked = svc.ask(&operator(), "Put smart_plug-04 into maintenance", false, None).await.unwrap();
        assert!(asked.command.is_none() && asked.started.is_none());

        let asked = svc.ask(&operator(), "Put smart_plug-04 into maintenance", true, Some(&id)).await.unwrap();
        let start = asked.command.expect("a command run");
        assert_eq!(start.run.plan_id, id);
        assert_eq!(start.run.executions.len(), 1);
        assert!(asked.plan.message.contains("Started cmd-"), "{}", asked.plan.message);
        assert_eq!(svc.backend.registry.get(&t).await.unwrap().unwrap().state, OperationalState::Maintenance);

        // A reboot is one execution per device, sent by the backend.
        let shown = svc.plan_prompt(&operator(), "Reboot pet_feeder-03").await.unwrap();
        let asked = svc.ask(&operator(), "Reboot pet_feeder-03", true, shown.plan_id.as_deref()).await.unwrap();
        let run = asked.command.unwrap().run;
        assert_eq!((run.command.as_str(), run.executions[0].thing.as_str()), ("reboot", "pet_feeder-03"));
        assert_eq!(svc.command_run(&operator(), &run.id).await.unwrap().id, run.id);
        // A command with nothing to send starts nothing and is not an error.
        let asked = svc.ask(&operator(), "Reboot mailbox_notifier-04", true, None).await.unwrap();
        assert!(asked.command.is_none() && !asked.plan.refusals.is_empty());
    }

    #[tokio::test]
    async fn telemetry_is_one_series_per_metric_over_the_window() {
        let svc = world().await;
        let p = plan(&svc, "Show the last 24 hours of CO2 for co2_monitor-01").await;
        assert_eq!(p["action"], "telemetry", "{p}");
        let series = p["telemetry"].as_array().unwrap();
        assert_eq!(series.len(), 1, "{p}");
        assert_eq!((&series[0]["thing"], &series[0]["metric"]), (&json!("co2_monitor-01"), &json!("co2_ppm")));
        let points = series[0]["points"].as_array().unwrap();
        // Hourly history: the window holds 24 or 25 of them, every one a number.
        assert!((24..=25).contains(&points.len()), "{}", points.len());
        assert!(points.iter().all(|x| x["value"].is_number()));
        assert!(p["message"].as_str().unwrap().contains("co2_ppm: "), "{p}");

        let p = plan(&svc, "telemetry of co2_monitor-01").await;
        assert_eq!(list(&p, "telemetry", "metric"), ["co2_ppm", "temperature_c"], "every metric: {p}");
        let p = plan(&svc, "show the wind speed of co2_monitor-01 over the last day").await;
        assert!(p.get("telemetry").is_none(), "{p}");
        assert!(p["refusals"][0]["reason"].as_str().unwrap().contains("co2_ppm, temperature_c"), "{p}");
        let p = plan(&svc, "CO2 history of the co2 monitors").await;
        assert_eq!(p["suggestions"].as_array().map(Vec::len), Some(4), "one device at a time: {p}");
    }

    #[tokio::test]
    async fn the_json_of_every_other_plan_is_unchanged() {
        let svc = world().await;
        for prompt in ["what's the status of weather station 2", "update all pet feeders to latest", "list firmware"] {
            let p = plan(&svc, prompt).await;
            for key in ["commands", "devices", "telemetry"] {
                assert!(p.get(key).is_none(), "{prompt}: {key} in {p}");
            }
        }
    }
}
