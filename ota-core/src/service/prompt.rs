//! Plain-language requests: the intent engine turns words into a typed request, this module
//! resolves the names it found against the registry and plans it with the same code as a
//! typed request. Roles come from the caller only; words never add one.

use std::collections::BTreeSet;

use super::FleetManager;
use crate::auth::Caller;
use crate::authz::{Action as Op, Resource};
use crate::device::DeviceQuery;
use crate::error::Result;
use crate::intent::{Intent, RolloutRef, ThingMatch, UpdateIntent, is_open_question, parse, resolve_thing};
use crate::names::{DeviceType, ThingName};
use crate::plan::{Action, Plan};
use crate::rollout::{Rollout, RolloutQuery};
use crate::targeting::{Filters, Refusal, Target, UpdateAction, UpdateRequest};
use crate::version::VersionRequest;

const EXAMPLES: &str = "Try: \"Update all pet_feeder devices to 2.0.0\", \"Upgrade the whole fleet to the latest firmware\", \"Roll back pet_feeder-03 to 1.0.0\", \"Which pet_feeder devices are still on 1.x?\", \"List firmware\", \"How is the rollout going?\".";

impl FleetManager {
    /// Understands a plain-language request and plans it. Nothing changes: starting,
    /// cancelling and gate changes are separate, confirmed calls.
    pub async fn plan_prompt(&self, caller: &Caller, text: &str) -> Result<Plan> {
        self.allow(caller, Op::Ask, "ask", Resource::Fleet)?;
        let vocab = self.vocabulary().await?;
        self.plan_intent(caller, parse(text, &vocab)).await
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
