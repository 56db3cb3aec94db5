//! A model-based check of the rollout lifecycle: seeded random sequences of plan, start,
//! repeat, cancel, device outcomes, abort, completion and rollback, driven through the service
//! over any backend, with a small simulated jobs engine (it moves devices and ends rollouts
//! through the ports, as the real engines do). After every step it checks what an operator
//! relies on:
//!
//! - a start of a non-empty plan either creates an active rollout or names the active one it
//!   conflicts with; it never answers with a rollout that has ended;
//! - a new rollout gets an id no rollout ever had, and planning is deterministic for the same
//!   store state (the same plan id and rollout ids twice in a row);
//! - a request whose rollout completed left every device it targets on the version it asked
//!   for (the "same rollback again changed nothing" bug);
//! - a policy changed between plan and start is refused and changes nothing;
//! - at most one active rollout per type, the same set the model expects;
//! - exactly one audit entry per change or refused change;
//! - an aborted rollout with `revert_on_abort` returns every device it had moved to the version
//!   it ran before, through linked revert rollouts, one version at a time.

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::{Caller, Role};
use crate::device::DeviceQuery;
use crate::error::Error;
use crate::names::{DeviceType, JobId, ThingName};
use crate::policy::RolloutPolicy;
use crate::ports::Backend;
use crate::rollout::{RolloutQuery, RolloutStatus};
use crate::service::{FleetManager, Settings, StartResult};
use crate::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use crate::version::{FirmwareVersion, VersionRequest};

const TYPES: [&str; 2] = ["pet_feeder", "smart_plug"];
const DEVICES_PER_TYPE: u32 = 5;
/// The simulated engine aborts a rollout at this many failed devices.
const ABORT_AT_FAILURES: usize = 2;

/// xorshift64*: seeded, dependency-free, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() { None } else { items.get(self.below(items.len())) }
    }
}

/// An active rollout as the simulated engine sees it.
#[derive(Debug, Clone)]
struct Running {
    id: JobId,
    device_type: DeviceType,
    version: FirmwareVersion,
    things: Vec<ThingName>,
    /// Thing → succeeded?
    outcomes: BTreeMap<ThingName, bool>,
    /// The aborted rollout this one reverts.
    revert_of: Option<JobId>,
}

/// What an aborted rollout with `revert_on_abort` had moved: thing → the version it ran before.
#[derive(Debug, Clone, Default)]
struct Revert {
    moved: BTreeMap<ThingName, FirmwareVersion>,
    /// Every revert rollout of the chain so far completed with no failure.
    clean: bool,
}

/// A request that was answered with a rollout, to check once that rollout completes.
#[derive(Debug, Clone)]
struct Promise {
    rollout: JobId,
    targets: BTreeSet<ThingName>,
    version: FirmwareVersion,
}

struct Model {
    svc: FleetManager,
    operator: Caller,
    admin: Caller,
    rng: Rng,
    active: BTreeMap<DeviceType, Running>,
    ever: BTreeSet<JobId>,
    promises: Vec<Promise>,
    last_request: Option<UpdateRequest>,
    versions: BTreeMap<DeviceType, Vec<FirmwareVersion>>,
    audit_seq: u64,
    stats: BTreeMap<&'static str, usize>,
    reverts: BTreeMap<JobId, Revert>,
}

/// Runs `steps` random steps from `seed` on a fresh `backend` and panics, naming the seed and
/// the step, at the first broken invariant. Returns how often each kind of step ran.
pub async fn lifecycle_model(backend: Backend, seed: u64, steps: usize) -> BTreeMap<&'static str, usize> {
    let svc = FleetManager::new(backend, Settings::default()).expect("default settings are valid");
    let admin = Caller::new("model-admin", [Role::Admin]);
    crate::demo::seed(&svc, &admin, &TYPES, DEVICES_PER_TYPE, |t, v| format!("{t} {v} image").repeat(64).into_bytes())
        .await
        .expect("seed the model world");
    let versions = TYPES
        .iter()
        .map(|t| {
            let t = DeviceType::parse(t).expect("valid type");
            let v = crate::demo::versions(&t);
            (t, v)
        })
        .collect();
    let audit_seq = newest_seq(&svc).await;
    let mut m = Model {
        svc,
        operator: Caller::new("model-operator", [Role::Operator]),
        admin,
        rng: Rng(seed.max(1)),
        active: BTreeMap::new(),
        ever: BTreeSet::new(),
        promises: Vec::new(),
        last_request: None,
        versions,
        audit_seq,
        stats: BTreeMap::new(),
        reverts: BTreeMap::new(),
    };
    for step in 0..steps {
        let at = format!("seed {seed}, step {step}");
        let kind = match m.rng.below(100) {
            0..20 => m.request(&at).await,
            20..30 => m.repeat(&at).await,
            30..36 => m.request_one_thing(&at).await,
            36..42 => m.cancel(&at).await,
            42..95 => m.device_outcome(&at).await,
            _ => m.policy_race(&at).await,
        };
        *m.stats.entry(kind).or_default() += 1;
        m.check_store(&at).await;
    }
    m.stats
}

async fn newest_seq(svc: &FleetManager) -> u64 {
    svc.backend().audit.recent(1).await.expect("audit").first().map_or(0, |e| e.seq)
}

impl Model {
    fn random_request(&mut self) -> UpdateRequest {
        let types: Vec<DeviceType> = self.versions.keys().cloned().collect();
        let t = self.rng.pick(&types).cloned().expect("types");
        let v = self.rng.pick(&self.versions[&t]).cloned().expect("versions");
        let action = if self.rng.below(2) == 0 { UpdateAction::Update } else { UpdateAction::Rollback };
        UpdateRequest {
            action,
            version: VersionRequest::Exact(v),
            target: Target { device_types: [t].into_iter().collect(), ..Default::default() },
            filters: Filters::default(),
            revert_on_abort: self.rng.below(3) == 0,
        }
    }

    async fn request(&mut self, at: &str) -> &'static str {
        let req = self.random_request();
        self.last_request = Some(req.clone());
        self.plan_and_start(&req, at).await
    }

    async fn repeat(&mut self, at: &str) -> &'static str {
        let Some(req) = self.last_request.clone() else { return self.request(at).await };
        self.plan_and_start(&req, at).await;
        "repeat"
    }

    async fn request_one_thing(&mut self, at: &str) -> &'static str {
        let devices = self.svc.backend().registry.list(&DeviceQuery::default()).await.expect("list");
        let d = self.rng.pick(&devices).cloned().expect("devices");
        let v = self.rng.pick(&self.versions[&d.device_type]).cloned().expect("versions");
        let downgrade = d.firmware_version.as_ref().is_some_and(|r| *r > v);
        let req = UpdateRequest {
            action: if downgrade { UpdateAction::Rollback } else { UpdateAction::Update },
            version: VersionRequest::Exact(v),
            target: Target { things: [d.thing].into_iter().collect(), ..Default::default() },
            filters: Filters::default(),
            revert_on_abort: false,
        };
        self.last_request = Some(req.clone());
        self.plan_and_start(&req, at).await;
        "one thing"
    }

    /// The devices `req` must move, computed from the registry alone.
    async fn targets(&self, req: &UpdateRequest) -> (DeviceType, FirmwareVersion, BTreeSet<ThingName>) {
        let VersionRequest::Exact(v) = &req.version else { unreachable!("the model asks for exact versions") };
        let devices = self.svc.backend().registry.list(&DeviceQuery::default()).await.expect("list");
        let mut ty = None;
        let mut out = BTreeSet::new();
        for d in devices {
            let named = req.target.things.contains(&d.thing);
            if !named && !req.target.device_types.contains(&d.device_type) {
                continue;
            }
            ty = Some(d.device_type.clone());
            let running = d.firmware_version.clone().expect("the model's devices report a version");
            let moves = match (named, req.action) {
                (true, _) => running != *v,
                (false, UpdateAction::Update) => running < *v,
                (false, UpdateAction::Rollback) => running > *v,
            };
            if moves {
                out.insert(d.thing);
            }
        }
        (ty.expect("the request names a known type or thing"), v.clone(), out)
    }

    async fn plan_and_start(&mut self, req: &UpdateRequest, at: &str) -> &'static str {
        let (ty, version, targets) = self.targets(req).await;
        let plan = self.svc.plan_update(&self.operator, req).await.unwrap_or_else(|e| panic!("{at}: plan: {e}"));
        let again = self.svc.plan_update(&self.operator, req).await.expect("plan again");
        assert_eq!(plan.plan_id, again.plan_id, "{at}: planning twice in the same state gives one plan id");
        let planned: BTreeSet<ThingName> = plan.deployments.iter().flat_map(|d| d.things.iter().cloned()).collect();
        assert_eq!(planned, targets, "{at}: the plan targets what the request says ({req:?})");
        let active_before = self.active.get(&ty).cloned();
        let result = self.svc.start(&self.operator, req, plan.plan_id.as_deref()).await;
        self.expect_one_audit("start", at).await;
        if targets.is_empty() {
            assert!(matches!(result, Err(Error::Refused(_))), "{at}: an empty plan is refused: {result:?}");
            return "empty plan";
        }
        match result {
            Ok(outcome) => {
                assert_eq!(outcome.items.len(), 1, "{at}: one item per deployment");
                for r in &outcome.rollouts {
                    let stored = self.svc.backend().rollouts.get(&r.id).await.expect("stored");
                    assert_eq!(
                        stored.status,
                        RolloutStatus::InProgress,
                        "{at}: a reply never carries an ended rollout"
                    );
                }
                let item = &outcome.items[0];
                match &item.result {
                    StartResult::Started => {
                        assert!(active_before.is_none(), "{at}: started beside an active rollout {active_before:?}");
                        assert!(self.ever.insert(item.rollout_id.clone()), "{at}: id {} reused", item.rollout_id);
                        self.active.insert(
                            ty.clone(),
                            Running {
                                id: item.rollout_id.clone(),
                                device_type: ty,
                                version: version.clone(),
                                things: targets.iter().cloned().collect(),
                                outcomes: BTreeMap::new(),
                                revert_of: None,
                            },
                        );
                        self.promises.push(Promise { rollout: item.rollout_id.clone(), targets, version });
                        "started"
                    }
                    StartResult::AlreadyRunning { .. } => {
                        let a = active_before.unwrap_or_else(|| panic!("{at}: 'already running' with none active"));
                        assert_eq!(a.id, item.rollout_id, "{at}: names the active rollout");
                        assert_eq!(a.version, version, "{at}: the running rollout installs what was asked");
                        assert!(targets.iter().all(|t| a.things.contains(t)), "{at}: and covers every target");
                        self.promises.push(Promise { rollout: a.id, targets, version });
                        "already running"
                    }
                    StartResult::Refused { reason } => panic!("{at}: one deployment refused after start: {reason}"),
                }
            }
            Err(Error::Conflict(message)) => {
                let a = active_before.unwrap_or_else(|| panic!("{at}: conflict with nothing active: {message}"));
                assert!(message.contains(a.id.as_str()), "{at}: the conflict names the active rollout: {message}");
                "conflict"
            }
            Err(e) => panic!("{at}: start of a non-empty plan failed: {e}"),
        }
    }

    async fn cancel(&mut self, at: &str) -> &'static str {
        let running: Vec<Running> = self.active.values().cloned().collect();
        let Some(r) = self.rng.pick(&running).cloned() else {
            // Cancelling an ended rollout is refused and audited.
            let ended: Vec<JobId> = self.ever.iter().cloned().collect();
            let Some(id) = self.rng.pick(&ended).cloned() else { return "idle" };
            let result = self.svc.cancel(&self.operator, &id, "model").await;
            assert!(matches!(result, Err(Error::Conflict(_))), "{at}: cancelling an ended rollout: {result:?}");
            self.expect_one_audit("cancel", at).await;
            return "cancel ended";
        };
        let out = self.svc.cancel(&self.operator, &r.id, "model").await.unwrap_or_else(|e| panic!("{at}: cancel: {e}"));
        assert_eq!(out.status, RolloutStatus::Canceled);
        self.expect_one_audit("cancel", at).await;
        self.active.remove(&r.device_type);
        if let Some(original) = &r.revert_of {
            // A canceled revert ends its chain: the operator decides what next.
            self.reverts.remove(original);
        }
        assert!(self.svc.revert_after(&r.id).await.expect("revert after cancel").is_none(), "{at}");
        "cancel"
    }

    async fn device_outcome(&mut self, at: &str) -> &'static str {
        let running: Vec<Running> = self.active.values().cloned().collect();
        let Some(mut r) = self.rng.pick(&running).cloned() else { return "idle" };
        let pending: Vec<ThingName> = r.things.iter().filter(|t| !r.outcomes.contains_key(*t)).cloned().collect();
        let thing = self.rng.pick(&pending).cloned().expect("an active rollout has a pending device");
        let succeeded = self.rng.below(100) < 85;
        if succeeded {
            let registry = &self.svc.backend().registry;
            let mut d = registry.get(&thing).await.expect("get").expect("the device exists");
            d.firmware_version = Some(r.version.clone());
            registry.upsert(d).await.expect("upsert");
        }
        r.outcomes.insert(thing, succeeded);
        let failed = r.outcomes.values().filter(|ok| !**ok).count();
        let rollouts = &self.svc.backend().rollouts;
        if failed >= ABORT_AT_FAILURES {
            rollouts.finish(&r.id, RolloutStatus::Aborted, "too many failures", self.svc.now()).await.expect("abort");
            self.active.remove(&r.device_type);
            let stored = rollouts.get(&r.id).await.expect("stored");
            if let Some(original) = &r.revert_of {
                // A revert that aborts ends its chain.
                self.reverts.remove(original);
            } else if stored.policy.revert_on_abort {
                let moved = r
                    .outcomes
                    .iter()
                    .filter(|(_, ok)| **ok)
                    .filter_map(|(t, _)| stored.from_versions.get(t).map(|v| (t.clone(), v.clone())))
                    .filter(|(_, v)| *v != r.version)
                    .collect();
                self.reverts.insert(r.id.clone(), Revert { moved, clean: true });
            }
            self.after_end(&r.id, at).await;
            return "abort";
        }
        if r.outcomes.len() == r.things.len() {
            rollouts
                .finish(&r.id, RolloutStatus::Completed, "every device finished", self.svc.now())
                .await
                .expect("complete");
            self.active.remove(&r.device_type);
            if failed == 0 {
                self.keep_promises(&r.id, at).await;
            } else if let Some(original) = &r.revert_of
                && let Some(chain) = self.reverts.get_mut(original)
            {
                chain.clean = false;
            }
            self.after_end(&r.id, at).await;
            return "complete";
        }
        self.active.insert(r.device_type.clone(), r);
        "device"
    }

    /// What the jobs engine does when a rollout ends: asks the service for the next revert.
    async fn after_end(&mut self, ended: &JobId, at: &str) {
        let stored = self.svc.backend().rollouts.get(ended).await.expect("stored");
        let original = stored.revert_of.unwrap_or_else(|| ended.clone());
        let started = self.svc.revert_after(ended).await.unwrap_or_else(|e| panic!("{at}: revert after {ended}: {e}"));
        let Some(chain) = self.reverts.get(&original).cloned() else {
            assert!(started.is_none(), "{at}: a revert with nothing to revert: {started:?}");
            return;
        };
        let Some(outcome) = started else {
            // The chain is over: every moved device is back where it was, if every revert succeeded.
            if chain.clean && !chain.moved.is_empty() {
                *self.stats.entry("reverted chain").or_default() += 1;
                for (thing, from) in &chain.moved {
                    let d = self.svc.backend().registry.get(thing).await.expect("get").expect("exists");
                    assert_eq!(d.firmware_version.as_ref(), Some(from), "{at}: {thing} reverted after {original}");
                }
            }
            self.reverts.remove(&original);
            return;
        };
        self.expect_one_audit("revert", at).await;
        assert_eq!(outcome.items.len(), 1, "{at}: one revert rollout at a time");
        assert!(matches!(outcome.items[0].result, StartResult::Started), "{at}: {:?}", outcome.items);
        let r = &outcome.rollouts[0];
        assert_eq!(r.revert_of.as_ref(), Some(&original), "{at}: the revert is linked to {original}");
        assert!(!r.policy.revert_on_abort, "{at}: a revert never reverts itself");
        for t in &r.things {
            assert_eq!(chain.moved.get(t), Some(&r.version), "{at}: {t} goes back to the version it ran");
        }
        assert!(self.ever.insert(r.id.clone()), "{at}: revert id {} reused", r.id);
        let running = Running {
            id: r.id.clone(),
            device_type: r.device_type.clone(),
            version: r.version.clone(),
            things: r.things.clone(),
            outcomes: BTreeMap::new(),
            revert_of: Some(original),
        };
        self.active.insert(r.device_type.clone(), running);
        *self.stats.entry("revert").or_default() += 1;
    }

    /// Every request answered with `rollout` left its targets on the version it asked for.
    async fn keep_promises(&mut self, rollout: &JobId, at: &str) {
        let (due, rest): (Vec<Promise>, Vec<Promise>) = self.promises.drain(..).partition(|p| &p.rollout == rollout);
        self.promises = rest;
        for p in due {
            for t in &p.targets {
                let d = self.svc.backend().registry.get(t).await.expect("get").expect("exists");
                assert_eq!(
                    d.firmware_version.as_ref(),
                    Some(&p.version),
                    "{at}: {t} must run {} after rollout {rollout} completed",
                    p.version
                );
            }
        }
    }

    async fn policy_race(&mut self, at: &str) -> &'static str {
        let req = self.random_request();
        let ty = req.target.device_types.iter().next().cloned().expect("one type");
        let plan = self.svc.plan_update(&self.operator, &req).await.expect("plan");
        if plan.deployments.is_empty() || plan.deployments.iter().any(|d| d.running_since.is_some()) {
            return "idle";
        }
        let before = self.svc.backend().rollouts.list(&RolloutQuery::default()).await.expect("list").len();
        let shown = plan.deployments[0].policy.clone();
        let changed = RolloutPolicy { max_in_flight: if shown.max_in_flight == 3 { 4 } else { 3 }, ..shown };
        self.svc.set_policy(&self.admin, &ty, Some(changed)).await.expect("set policy");
        self.expect_one_audit("set_policy", at).await;
        let result = self.svc.start(&self.operator, &req, plan.plan_id.as_deref()).await;
        self.expect_one_audit("start", at).await;
        assert!(matches!(&result, Err(Error::Conflict(m)) if m.contains("plan again")), "{at}: {result:?}");
        let after = self.svc.backend().rollouts.list(&RolloutQuery::default()).await.expect("list").len();
        assert_eq!(before, after, "{at}: a refused start creates nothing");
        "policy race"
    }

    async fn expect_one_audit(&mut self, operation: &str, at: &str) {
        let recent = self.svc.backend().audit.recent(2).await.expect("audit");
        let newest = recent.first().unwrap_or_else(|| panic!("{at}: no audit entry for {operation}"));
        assert_eq!(newest.operation, operation, "{at}: the newest audit entry");
        assert!(newest.seq > self.audit_seq, "{at}: {operation} was audited");
        assert!(recent.get(1).is_none_or(|e| e.seq <= self.audit_seq), "{at}: {operation} was audited once");
        self.audit_seq = newest.seq;
    }

    async fn check_store(&self, at: &str) {
        let active = self
            .svc
            .backend()
            .rollouts
            .list(&RolloutQuery { active_only: true, ..Default::default() })
            .await
            .expect("list");
        let stored: BTreeMap<DeviceType, JobId> =
            active.iter().map(|r| (r.device_type.clone(), r.id.clone())).collect();
        assert_eq!(stored.len(), active.len(), "{at}: at most one active rollout per type");
        let expected: BTreeMap<DeviceType, JobId> =
            self.active.iter().map(|(t, r)| (t.clone(), r.id.clone())).collect();
        assert_eq!(stored, expected, "{at}: the active rollouts are those the model expects");
    }
}
