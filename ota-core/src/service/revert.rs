//! Automatic revert on abort (`RolloutPolicy::revert_on_abort`): when a rollout aborts, the
//! devices it already moved go back to the version each ran before, by linked rollouts
//! (`Rollout::revert_of`) that the jobs engine (locally) or the rollout monitor (on AWS) asks
//! for through [`FleetManager::revert_after`]. Every rule of a start applies: the gate, the
//! image's integrity, one active rollout per type.
//!
//! One rollout carries one version, so devices that came from different versions are reverted
//! one version at a time: the largest group first, the next when that revert completes. Each
//! device is reverted at most once; a revert that aborts or is canceled ends the chain (the
//! operator decides what next), and a revert never reverts itself.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::FleetManager;
use super::operations::StartOutcome;
use crate::audit::AuditOutcome;
use crate::auth::{Caller, Role};
use crate::device::DeviceQuery;
use crate::error::Result;
use crate::names::{JobId, ThingName};
use crate::rollout::{Rollout, RolloutQuery, RolloutStatus};
use crate::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use crate::version::{FirmwareVersion, VersionFilter, VersionRequest};

/// Who starts reverts, in rollouts and the audit trail.
pub const REVERT_SUBJECT: &str = "ota-engine";

impl FleetManager {
    /// Called whenever a rollout ended (by the jobs engine or the AWS monitor; repeating it is
    /// harmless). If `id` aborted with `revert_on_abort`, or is a revert that completed while
    /// devices of its aborted rollout are still to be reverted, starts the next revert and
    /// returns what it started; otherwise `None`. Audited as `revert`.
    pub async fn revert_after(&self, id: &JobId) -> Result<Option<StartOutcome>> {
        let (aborted, version, things) = match self.next_revert(id).await? {
            NextRevert::Start { aborted, version, things } => (aborted, version, things),
            NextRevert::Nothing | NextRevert::Running => return Ok(None),
        };
        let req = UpdateRequest {
            action: if version < aborted.version { UpdateAction::Rollback } else { UpdateAction::Update },
            version: VersionRequest::Exact(version.clone()),
            target: Target { things: things.iter().cloned().collect(), ..Default::default() },
            filters: Filters::default(),
            revert_on_abort: false,
        };
        let engine = Caller::new(REVERT_SUBJECT, [Role::Operator]);
        let request = json!({ "revert_of": aborted.id, "request": req });
        let result = self.start_inner(&engine, std::slice::from_ref(&req), None, Some(&aborted.id)).await;
        let outcome = match &result {
            Ok(o) => AuditOutcome::Ok(format!(
                "{} aborted ({}); reverting {} updated device{} to {version}: {}",
                aborted.id,
                aborted.status_reason.as_deref().unwrap_or("no reason recorded"),
                things.len(),
                if things.len() == 1 { "" } else { "s" },
                o.summary()
            )),
            Err(e) => AuditOutcome::Refused(format!("revert of {} not started: {e}", aborted.id)),
        };
        let plan = result.as_ref().ok().and_then(|o| serde_json::to_value(&o.plan).ok());
        self.audit(&engine, "revert", request, plan, outcome).await?;
        result.map(Some)
    }

    /// Whether rollout `id` still owes a revert (one is running, or one would start now), so a
    /// front door following it knows to keep following (viewer; changes nothing).
    pub async fn revert_pending(&self, caller: &Caller, id: &JobId) -> Result<bool> {
        let resource = self.rollout_resource(id).await;
        self.allow(caller, crate::authz::Action::ReadRollout, "read a rollout", resource)?;
        Ok(!matches!(self.next_revert(id).await?, NextRevert::Nothing))
    }

    /// What follows rollout `id` having ended, as far as reverts go.
    async fn next_revert(&self, id: &JobId) -> Result<NextRevert> {
        let ended = self.backend.rollouts.get(id).await?;
        let aborted = match &ended.revert_of {
            Some(original) if ended.status == RolloutStatus::Completed => self.backend.rollouts.get(original).await?,
            Some(_) => return Ok(NextRevert::Nothing),
            None => ended,
        };
        if aborted.status != RolloutStatus::Aborted || !aborted.policy.revert_on_abort {
            return Ok(NextRevert::Nothing);
        }
        let of_type = self
            .backend
            .rollouts
            .list(&RolloutQuery { device_type: Some(aborted.device_type.clone()), ..Default::default() })
            .await?;
        let reverts: Vec<&Rollout> = of_type.iter().filter(|r| r.revert_of.as_ref() == Some(&aborted.id)).collect();
        // A revert still running goes first; a rollout started for the type after the abort
        // (not one of its reverts) means an operator moved on: devices are theirs now.
        if reverts.iter().any(|r| r.status.is_active()) {
            return Ok(NextRevert::Running);
        }
        if reverts.iter().any(|r| r.status != RolloutStatus::Completed)
            || of_type.iter().any(|r| r.revert_of.is_none() && r.created_at > aborted.created_at)
        {
            return Ok(NextRevert::Nothing);
        }
        // A closed gate refuses any revert: nothing is owed that could start (the refusal of
        // the first attempt is audited).
        if !self.enabled_types([aborted.device_type.clone()]).await?.contains(&aborted.device_type) {
            return Ok(NextRevert::Nothing);
        }
        let done: BTreeSet<&ThingName> = reverts.iter().flat_map(|r| r.things.iter()).collect();
        // The devices it moved run its version now: one registry query for the type, not one
        // read per device (the engine asks again every few seconds while the abort settles).
        let on_target = DeviceQuery {
            device_type: Some(aborted.device_type.clone()),
            version: Some(VersionFilter::Exact(aborted.version.clone())),
            ..Default::default()
        };
        let moved: BTreeSet<ThingName> =
            self.backend.registry.list(&on_target).await?.into_iter().map(|d| d.thing).collect();
        let mut groups: BTreeMap<FirmwareVersion, Vec<ThingName>> = BTreeMap::new();
        for thing in aborted.things.iter().filter(|t| !done.contains(t) && moved.contains(*t)) {
            if let Some(from) = aborted.from_versions.get(thing)
                && *from != aborted.version
            {
                groups.entry(from.clone()).or_default().push(thing.clone());
            }
        }
        // The largest group first; among equals the lowest version.
        Ok(match groups.into_iter().max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(&a.0))) {
            Some((version, things)) => NextRevert::Start { aborted: Box::new(aborted), version, things },
            None => NextRevert::Nothing,
        })
    }
}

/// See [`FleetManager::next_revert`].
enum NextRevert {
    Nothing,
    Running,
    Start { aborted: Box<Rollout>, version: FirmwareVersion, things: Vec<ThingName> },
}
