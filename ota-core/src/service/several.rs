//! Plans of several changes ("update energy_meter to 2.0.0 and roll back fish_tank_monitor to
//! 1.0.0"). Each change is planned through the same path as a request of one change (role,
//! config gate, versions, integrity, policy bounds, one active rollout per type, exclusions)
//! and keeps its own action; the deployments are concatenated in change order, the refusals
//! of every change collected (a refused change leaves the others planned), and one plan id
//! covers all the deployments, so one confirmation starts exactly all of them or nothing.
//!
//! Two changes that reach the same device type (by name, through a device, or through the
//! whole fleet) are refused together before anything is planned: they would conflict, and a
//! type gets one rollout at a time.

use std::collections::{BTreeMap, BTreeSet};

use super::FleetManager;
use super::planning::Verification;
use crate::auth::Caller;
use crate::authz::{Action as Op, Resource};
use crate::error::{Error, Result};
use crate::intent::UpdateIntent;
use crate::names::DeviceType;
use crate::plan::{Action, Plan, plan_id};
use crate::targeting::{Refusal, UpdateRequest};

impl FleetManager {
    /// Plans several typed changes as one plan (operator); nothing changes. One request is
    /// planned exactly as [`FleetManager::plan_update`] plans it.
    pub async fn plan_updates(&self, caller: &Caller, reqs: &[UpdateRequest]) -> Result<Plan> {
        self.allow(caller, Op::PlanUpdate, "plan an update", Resource::Fleet)?;
        self.build_plans(reqs, Verification::Cached).await
    }

    /// The plan of `reqs`: [`FleetManager::build_plan`] for one, the combined plan for several.
    pub(crate) async fn build_plans(&self, reqs: &[UpdateRequest], verification: Verification) -> Result<Plan> {
        match reqs {
            [] => Err(Error::invalid("requests", "none", "give at least one update or rollback")),
            [one] => self.build_plan(one, verification).await,
            _ => {
                let mut parts = Vec::with_capacity(reqs.len());
                for r in reqs {
                    parts.push(self.build_plan(r, verification).await?);
                }
                self.combine(parts).await
            }
        }
    }

    /// The changes the intent engine read from one prompt, each planned as the prompt of one
    /// change would be (its unknown names and devices refused in it), then combined.
    pub(super) async fn plan_update_intents(&self, caller: &Caller, changes: Vec<UpdateIntent>) -> Result<Plan> {
        self.allow(caller, Op::PlanUpdate, "plan an update", Resource::Fleet)?;
        let mut parts = Vec::with_capacity(changes.len());
        for (n, u) in changes.into_iter().enumerate() {
            let part = self.plan_update_intent(caller, u).await?;
            if part.request.is_none() {
                // An exclusion that names no device may be one the operator meant to protect:
                // as for one change, nothing is planned, here for any of the changes.
                let mut plan = Plan::informational(
                    part.action,
                    format!("Nothing planned for any of these changes. In change {}: {}", n + 1, part.message),
                );
                plan.refusals = part.refusals;
                return Ok(plan);
            }
            parts.push(part);
        }
        self.combine(parts).await
    }

    /// One plan of the plans of several changes, in change order.
    async fn combine(&self, parts: Vec<Plan>) -> Result<Plan> {
        let action = if parts.iter().any(|p| p.action == Action::Rollback) { Action::Rollback } else { Action::Update };
        // A change whose devices all failed to resolve names nothing to re-plan at the start.
        let mut requests: Vec<(usize, UpdateRequest)> = parts
            .iter()
            .enumerate()
            .filter_map(|(n, p)| p.request.clone().filter(|r| !r.target.is_empty()).map(|r| (n + 1, r)))
            .collect();
        let mut plan = Plan::informational(action, String::new());
        let overlaps = self.overlaps(&requests).await?;
        if !overlaps.is_empty() {
            let types: Vec<&str> = overlaps.iter().map(|r| r.target.as_str()).collect();
            plan.message = format!(
                "Nothing planned: {} {} reached by more than one of these changes. A device type gets one rollout at a time: name each type and its devices in one change only, or send the changes one by one.",
                types.join(", "),
                if types.len() == 1 { "is" } else { "are" }
            );
            plan.refusals = overlaps;
            return Ok(plan);
        }
        let lines: Vec<String> = parts.iter().enumerate().map(|(n, p)| format!("({}) {}", n + 1, p.message)).collect();
        plan.message =
            format!("{} changes in one plan, started together by one confirmation. {}", parts.len(), lines.join(" "));
        for p in parts {
            plan.deployments.extend(p.deployments);
            plan.refusals.extend(p.refusals);
            plan.held_back.extend(p.held_back);
        }
        plan.refusals.sort();
        plan.refusals.dedup();
        plan.plan_id = (!plan.deployments.is_empty()).then(|| plan_id(&plan.deployments));
        if requests.len() == 1 {
            plan.request = requests.pop().map(|(_, r)| r);
        } else {
            plan.requests = requests.into_iter().map(|(_, r)| r).collect();
        }
        Ok(plan)
    }

    /// The device types reached by more than one of the numbered changes, as refusals.
    async fn overlaps(&self, requests: &[(usize, UpdateRequest)]) -> Result<Vec<Refusal>> {
        let known = self.known_types().await?;
        let mut by_type: BTreeMap<DeviceType, Vec<usize>> = BTreeMap::new();
        for (n, r) in requests {
            for t in self.scope(r, &known).await? {
                by_type.entry(t).or_default().push(*n);
            }
        }
        Ok(by_type
            .into_iter()
            .filter(|(_, changes)| changes.len() > 1)
            .map(|(t, changes)| {
                let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
                Refusal {
                    target: t.to_string(),
                    reason: format!(
                        "reached by changes {} of this request; a device type gets one rollout at a time, so name it in one change only",
                        list.join(" and ")
                    ),
                }
            })
            .collect())
    }

    /// The device types a request can reach: the named types, the types of the named devices,
    /// or every known type less the excluded ones for the whole fleet.
    async fn scope(&self, req: &UpdateRequest, known: &BTreeSet<DeviceType>) -> Result<BTreeSet<DeviceType>> {
        let mut types: BTreeSet<DeviceType> = req.target.device_types.clone();
        if req.target.whole_fleet {
            types.extend(known.iter().filter(|t| !req.filters.exclude_types.contains(*t)).cloned());
        }
        for thing in &req.target.things {
            if let Some(d) = self.backend.registry.get(thing).await? {
                types.insert(d.device_type);
            }
        }
        Ok(types)
    }
}

#[cfg(test)]
mod tests {
    //! Plans of several changes over the demo world in memory, through the prompt path every
    //! front door uses (`plan_prompt`, `ask`) and the assistant.

    use std::sync::Arc;

    use crate::auth::Role;

    use super::*;
    use crate::auth::Caller;
    use crate::rollout::RolloutQuery;
    use crate::service::{Settings, StartResult};
    use crate::targeting::UpdateAction;

    fn admin() -> Caller {
        Caller::new("root", [Role::Admin])
    }

    fn operator() -> Caller {
        Caller::new("ana", [Role::Operator])
    }

    /// energy_meter and fish_tank_monitor have 1.0.0 and 2.0.0; their -01 and -02 run 1.0.0,
    /// -03 and -04 2.0.0. pet_feeder's latest is 3.0.0; beehive_scale's gate is closed.
    async fn world() -> FleetManager {
        let svc = FleetManager::new(crate::memory::backend(), Settings::default()).expect("valid settings");
        let types = ["energy_meter", "fish_tank_monitor", "pet_feeder", "beehive_scale"];
        crate::demo::seed(&svc, &admin(), &types, 4, |t, v| format!("image {t} {v}").into_bytes())
            .await
            .expect("seeded");
        svc
    }

    const TWO: &str = "Update energy_meter to 2.0.0 and roll back fish_tank_monitor to 1.0.0";

    fn kinds(plan: &Plan) -> Vec<(String, UpdateAction, String, usize)> {
        plan.deployments
            .iter()
            .map(|d| (d.device_type.to_string(), d.action, d.version.to_string(), d.things.len()))
            .collect()
    }

    async fn active(svc: &FleetManager) -> usize {
        svc.backend.rollouts.list(&RolloutQuery { active_only: true, ..Default::default() }).await.unwrap().len()
    }

    #[tokio::test]
    async fn several_changes_are_one_plan_with_one_deployment_each_and_one_plan_id() {
        let svc = world().await;
        let plan = svc.plan_prompt(&operator(), TWO).await.unwrap();
        assert_eq!(
            kinds(&plan),
            [
                ("energy_meter".into(), UpdateAction::Update, "2.0.0".into(), 2),
                ("fish_tank_monitor".into(), UpdateAction::Rollback, "1.0.0".into(), 2)
            ],
            "{}",
            plan.message
        );
        // A rollback among the changes makes the plan a rollback; each deployment keeps its own.
        assert_eq!(plan.action, Action::Rollback);
        assert_eq!(plan.plan_id.as_deref(), Some(plan_id(&plan.deployments).as_str()));
        assert!(plan.message.starts_with("2 changes in one plan"), "{}", plan.message);
        assert!(plan.request.is_none());
        assert_eq!(plan.requests.len(), 2);
        assert_eq!(plan.update_requests(), plan.requests);
        // The typed requests plan the same thing.
        let typed = svc.plan_updates(&operator(), &plan.requests).await.unwrap();
        assert_eq!((typed.plan_id.clone(), kinds(&typed)), (plan.plan_id.clone(), kinds(&plan)));
        // The JSON carries every request, and reads back the same.
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["requests"].as_array().map(Vec::len), Some(2));
        assert!(json.get("request").is_none());
        assert_eq!(serde_json::from_value::<Plan>(json).unwrap(), plan);
        // A plan of one change keeps its shape: `request`, no `requests`.
        let one = svc.plan_prompt(&operator(), "update energy_meter to 2.0.0").await.unwrap();
        let json = serde_json::to_value(&one).unwrap();
        assert!(json.get("requests").is_none() && json.get("request").is_some(), "{json}");
    }

    #[tokio::test]
    async fn a_refused_part_is_listed_and_the_allowed_part_still_planned() {
        let svc = world().await;
        let plan = svc
            .plan_prompt(&operator(), "Update pet_feeder to 3.0.0; also update beehive_scale to 2.0.0")
            .await
            .unwrap();
        assert_eq!(kinds(&plan), [("pet_feeder".into(), UpdateAction::Update, "3.0.0".into(), 3)], "{}", plan.message);
        assert_eq!(plan.refusals.len(), 1, "{:?}", plan.refusals);
        assert_eq!(plan.refusals[0].target, "beehive_scale");
        assert!(plan.refusals[0].reason.contains("disabled"), "{:?}", plan.refusals);
        assert_eq!(plan.update_requests().len(), 2, "the refused change is re-planned at the start too");
        let asked = svc
            .ask(
                &operator(),
                "Update pet_feeder to 3.0.0; also update beehive_scale to 2.0.0",
                true,
                plan.plan_id.as_deref(),
            )
            .await
            .unwrap();
        let started = asked.started.expect("started");
        assert_eq!(started.items.len(), 1);
        assert_eq!(started.plan.refusals, plan.refusals);
        // A change naming only devices that do not exist is refused and the others planned.
        let plan =
            svc.plan_prompt(&operator(), "update energy_meter to 2.0.0 and pet_feeder-09 to 3.0.0").await.unwrap();
        assert_eq!(kinds(&plan).len(), 1, "{}", plan.message);
        assert!(plan.refusals.iter().any(|r| r.target == "pet_feeder-09"), "{:?}", plan.refusals);
        assert!(plan.request.is_some() && plan.requests.is_empty(), "one change is left to start");
    }

    #[tokio::test]
    async fn one_confirmation_starts_every_part_and_a_repeat_finds_them_running() {
        let svc = world().await;
        let plan = svc.plan_prompt(&operator(), TWO).await.unwrap();
        let asked = svc.ask(&operator(), TWO, true, plan.plan_id.as_deref()).await.unwrap();
        let started = asked.started.expect("started");
        assert_eq!(started.items.len(), 2);
        assert!(started.items.iter().all(|i| i.result == StartResult::Started), "{}", started.summary());
        assert_eq!(active(&svc).await, 2);
        let first: Vec<_> = started.rollouts.iter().map(|r| r.id.clone()).collect();

        // While active, the same words plan the running rollouts and start nothing new.
        let again = svc.plan_prompt(&operator(), TWO).await.unwrap();
        assert!(again.deployments.iter().all(|d| d.running_since.is_some()), "{}", again.message);
        let repeat = svc.start_requests(&operator(), &again.requests, again.plan_id.as_deref()).await.unwrap();
        assert_eq!(repeat.items.len(), 2);
        assert!(
            repeat.items.iter().all(|i| matches!(i.result, StartResult::AlreadyRunning { .. })),
            "{}",
            repeat.summary()
        );
        assert_eq!(active(&svc).await, 2);

        // Once they ended, the same words plan the next generation of each.
        for id in &first {
            svc.cancel(&operator(), id, "done").await.unwrap();
        }
        let next = svc.plan_prompt(&operator(), TWO).await.unwrap();
        assert_ne!(next.plan_id, plan.plan_id);
        for (d, old) in next.deployments.iter().zip(&first) {
            assert_eq!(d.rollout_id.as_str(), format!("{old}-2"), "{}", next.message);
        }
        let started = svc.ask(&operator(), TWO, true, next.plan_id.as_deref()).await.unwrap().started.unwrap();
        assert!(started.items.iter().all(|i| i.result == StartResult::Started), "{}", started.summary());
    }

    #[tokio::test]
    async fn a_change_in_any_part_since_planning_refuses_the_whole_start() {
        let svc = world().await;
        let plan = svc.plan_prompt(&operator(), TWO).await.unwrap();
        // The second part's policy changes between plan and confirmation.
        let t = DeviceType::parse("fish_tank_monitor").unwrap();
        let policy = crate::policy::RolloutPolicy { max_in_flight: 3, ..Default::default() };
        svc.set_policy(&admin(), &t, Some(policy)).await.unwrap();
        let err = svc.ask(&operator(), TWO, true, plan.plan_id.as_deref()).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        assert!(err.to_string().contains("differs from plan"), "{err}");
        assert_eq!(active(&svc).await, 0, "nothing started, not even the unchanged part");
        let err = svc.start_requests(&operator(), &plan.requests, plan.plan_id.as_deref()).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        assert_eq!(active(&svc).await, 0);
    }

    #[tokio::test]
    async fn two_changes_reaching_one_type_are_refused_before_anything_is_planned() {
        let svc = world().await;
        for prompt in [
            "update pet_feeder-01 to 3.0.0 and roll back pet_feeder-04 to 1.0.0",
            "update the whole fleet to latest and roll back energy_meter-03 to 1.0.0",
        ] {
            let plan = svc.plan_prompt(&operator(), prompt).await.unwrap();
            assert!(plan.deployments.is_empty() && plan.plan_id.is_none(), "{prompt}: {}", plan.message);
            assert!(plan.message.contains("more than one of these changes"), "{prompt}: {}", plan.message);
            assert!(!plan.refusals.is_empty(), "{prompt}");
        }
        // Leaving the other change's type out of the whole fleet is no overlap.
        let plan = svc
            .plan_prompt(
                &operator(),
                "update the whole fleet except energy_meter to latest and roll back energy_meter-03 to 1.0.0",
            )
            .await
            .unwrap();
        assert!(plan.deployments.iter().any(|d| d.action == UpdateAction::Rollback), "{}", plan.message);
        assert!(plan.plan_id.is_some(), "{}", plan.message);
        // The typed path refuses the same overlap at the start.
        let reqs = svc.plan_prompt(&operator(), TWO).await.unwrap().requests;
        let err = svc.start_requests(&operator(), &[reqs[0].clone(), reqs[0].clone()], None).await.unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{err}");
        // A viewer may not plan any of it.
        let viewer = Caller::new("vic", [Role::Viewer]);
        assert!(matches!(svc.plan_prompt(&viewer, TWO).await, Err(Error::Forbidden { .. })));
    }

    #[tokio::test]
    async fn the_assistant_confirms_several_changes_once() {
        use crate::agent::{Assistant, MemorySessions, PendingAction};
        let svc = Arc::new(world().await);
        let assistant = Assistant::new(svc.clone(), Arc::new(MemorySessions::default()));
        let asked = assistant.chat(&operator(), None, TWO).await.unwrap();
        assert!(asked.reply.contains("confirm to start"), "{}", asked.reply);
        let Some(pending @ PendingAction::Start { .. }) = &asked.pending else { panic!("{:?}", asked.pending) };
        assert_eq!(pending.start_requests().len(), 2);
        assert_eq!(active(&svc).await, 0, "nothing runs before the confirmation");
        let done = assistant.chat(&operator(), Some(&asked.session_id), "yes").await.unwrap();
        assert_eq!(done.items.len(), 2, "{}", done.reply);
        assert_eq!(done.rollouts.len(), 2, "{}", done.reply);
        assert_eq!(active(&svc).await, 2);
        // The page's button with the plan's requests starts the same (here: already running).
        let plan = svc.plan_prompt(&operator(), TWO).await.unwrap();
        let pressed = assistant
            .start_plan(&operator(), None, plan.plan_id.as_deref().unwrap(), plan.update_requests())
            .await
            .unwrap();
        assert!(
            pressed.items.iter().all(|i| matches!(i.result, StartResult::AlreadyRunning { .. })),
            "{}",
            pressed.reply
        );
    }
}
