//! Targeting: which devices a request means, resolved against a registry snapshot into one
//! deployment per device type (firmware differs per type), plus the refusals.
//!
//! Safety choices, deliberate:
//! - Devices already on the target version are left out; a type with nothing to change is
//!   left out, not refused.
//! - An update never downgrades a device the request did not name: members of a named type
//!   or of the whole fleet that run a *newer* version are held back (listed, not changed).
//!   A rollback likewise never upgrades group members that run an *older* version. A thing
//!   named explicitly is always moved to the target, in either direction, and a downgrade
//!   makes the plan a rollback.
//! - A current-version filter selects devices as explicitly as naming them: "update the
//!   mailbox_notifier devices running 2.0.0 to 1.0.0" moves exactly those devices, and the
//!   downgrade makes the plan a rollback of exactly them (never "nothing to update").
//! - An exclusion that names no known device or type refuses the whole plan: it may be a
//!   device the operator meant to protect.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::names::{DeviceType, NamingConvention, ThingGroupName, ThingName};
use crate::version::{FirmwareVersion, VersionFilter, VersionRequest};

/// Update to a newer version, or roll back to an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UpdateAction {
    Update,
    Rollback,
}

impl UpdateAction {
    /// `update` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateAction::Update => "update",
            UpdateAction::Rollback => "rollback",
        }
    }
}

/// Which devices a request names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Target {
    pub whole_fleet: bool,
    #[serde(default)]
    pub device_types: BTreeSet<DeviceType>,
    #[serde(default)]
    pub things: BTreeSet<ThingName>,
}

impl Target {
    /// Whether the target names nothing at all.
    pub fn is_empty(&self) -> bool {
        !self.whole_fleet && self.device_types.is_empty() && self.things.is_empty()
    }
}

/// Narrowing applied after the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Filters {
    /// Only devices currently running a matching version.
    pub current_version: Option<VersionFilter>,
    #[serde(default)]
    pub exclude_types: BTreeSet<DeviceType>,
    #[serde(default)]
    pub exclude_things: BTreeSet<ThingName>,
    /// Only devices connected now ("only online devices"); the others are left out and counted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only_connected: bool,
}

/// A fully typed update or rollback request: what the CLI flags, MCP tools and the intent
/// engine all produce.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateRequest {
    pub action: UpdateAction,
    pub version: VersionRequest,
    pub target: Target,
    #[serde(default)]
    pub filters: Filters,
    /// "… and roll back the updated ones if it aborts": sets the policy's `revert_on_abort`
    /// for this request's rollouts (never clears a type's own setting).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revert_on_abort: bool,
}

/// What the resolver needs to know besides the devices.
#[derive(Debug, Clone, Copy)]
pub struct PlanningContext<'a> {
    /// Every version of every type in the catalog.
    pub versions: &'a BTreeMap<DeviceType, Vec<FirmwareVersion>>,
    /// Types whose OTA gate is open.
    pub enabled: &'a BTreeSet<DeviceType>,
    /// Every type the catalog or the registry knows.
    pub known: &'a BTreeSet<DeviceType>,
    pub naming: &'a NamingConvention,
}

/// Something the request names that will not be changed, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Refusal {
    /// A device type or thing name (or a word of the prompt that matched nothing).
    pub target: String,
    pub reason: String,
}

/// A device left as it is because the request's direction would not move it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HeldBack {
    pub thing: ThingName,
    pub version: FirmwareVersion,
    pub reason: String,
}

/// The devices of one type that a request would change, before integrity and policy are
/// attached by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeTarget {
    pub device_type: DeviceType,
    pub thing_group: ThingGroupName,
    pub version: FirmwareVersion,
    /// Sorted.
    pub things: Vec<ThingName>,
    /// At least one of `things` moves to an older version.
    pub downgrades: bool,
    pub held_back: Vec<HeldBack>,
    /// The AWS Fleet Indexing query that selects exactly `things` in the snapshot.
    pub fleet_query: String,
    /// Devices of `things` not connected in the snapshot, sorted.
    pub offline: Vec<crate::plan::OfflineDevice>,
}

/// The outcome of resolving a request against a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub targets: Vec<TypeTarget>,
    pub refusals: Vec<Refusal>,
    /// Devices matched but already on the version, per type.
    pub already_current: BTreeMap<DeviceType, usize>,
    /// Devices left out because they are offline and the request asked for online ones only.
    pub offline_left_out: BTreeMap<DeviceType, usize>,
    /// Devices held back in types where nothing else moves (the others are in their target).
    pub held_back: Vec<HeldBack>,
    /// Devices the request reached but did not name one by one, left out because operators
    /// put them in maintenance or retired them; sorted.
    #[serde(default)]
    pub out_of_service: Vec<HeldBack>,
}

/// Resolves `req` against `devices` (a snapshot holding at least every device the request can
/// reach: the named things and every device of the types in scope).
pub fn resolve<'d>(
    req: &UpdateRequest,
    devices: impl IntoIterator<Item = &'d Device>,
    ctx: PlanningContext<'_>,
) -> Resolution {
    let mut out = Resolution::default();
    let named_things = &req.target.things;

    // Group the snapshot by type, keeping only devices the request can reach.
    let mut by_type: BTreeMap<&DeviceType, Vec<&Device>> = BTreeMap::new();
    let mut found_things: BTreeSet<&ThingName> = BTreeSet::new();
    // Only the excluded things the snapshot holds: a set of every device would cost more
    // than the rest of a whole-fleet plan.
    let mut found_exclusions: BTreeSet<&ThingName> = BTreeSet::new();
    let excluding = !req.filters.exclude_things.is_empty();
    for d in devices {
        if excluding && req.filters.exclude_things.contains(&d.thing) {
            found_exclusions.insert(&d.thing);
        }
        let named = named_things.contains(&d.thing);
        if named {
            found_things.insert(&d.thing);
        }
        if named || req.target.whole_fleet || req.target.device_types.contains(&d.device_type) {
            by_type.entry(&d.device_type).or_default().push(d);
        }
    }
    for t in named_things {
        if !found_things.contains(t) {
            out.refusals.push(Refusal {
                target: t.to_string(),
                reason: "unknown thing: no such device in the registry".into(),
            });
        }
    }
    if let Some(refused) = unknown_exclusions(req, &found_exclusions, ctx) {
        return refused;
    }

    // Types in scope: named types, types of named things, and for the whole fleet every type
    // the catalog or the registry knows.
    let mut types: BTreeSet<DeviceType> = req.target.device_types.clone();
    types.extend(by_type.keys().map(|t| (*t).clone()));
    if req.target.whole_fleet {
        types.extend(ctx.versions.keys().cloned());
    }
    for ty in &types {
        let type_named = req.target.whole_fleet || req.target.device_types.contains(ty);
        if req.filters.exclude_types.contains(ty) {
            continue;
        }
        let members: &[&Device] = by_type.get(ty).map(Vec::as_slice).unwrap_or(&[]);
        let named_here: Vec<&ThingName> =
            members.iter().filter(|d| named_things.contains(&d.thing)).map(|d| &d.thing).collect();
        // What to call this type in a refusal: the type if the request named it, else the things.
        let refusal_targets: Vec<String> =
            if type_named { vec![ty.to_string()] } else { named_here.iter().map(|t| t.to_string()).collect() };
        let known_type = ctx.versions.contains_key(ty) || !members.is_empty();
        if !known_type {
            out.refusals.push(Refusal {
                target: ty.to_string(),
                reason: "unknown device type: not in the catalog or the registry".into(),
            });
            continue;
        }
        if !ctx.enabled.contains(ty) {
            for t in refusal_targets {
                out.refusals.push(Refusal { target: t, reason: format!("OTA is disabled for {ty}") });
            }
            continue;
        }
        let available: &[FirmwareVersion] = ctx.versions.get(ty).map(Vec::as_slice).unwrap_or(&[]);
        let Some(version) = req.version.resolve(available) else {
            let mut sorted = available.to_vec();
            sorted.sort();
            let list = if sorted.is_empty() {
                "the catalog has no firmware for it".to_string()
            } else {
                format!("available: {}", sorted.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))
            };
            for t in refusal_targets {
                out.refusals
                    .push(Refusal { target: t, reason: format!("no firmware {} for {ty}; {list}", req.version) });
            }
            continue;
        };

        let mut things = Vec::new();
        let mut held_back = Vec::new();
        let mut downgrades = false;
        let mut current = 0usize;
        let mut newer_versions: BTreeSet<&FirmwareVersion> = BTreeSet::new();
        let mut planned_versions: BTreeSet<&FirmwareVersion> = BTreeSet::new();
        let mut offline = Vec::new();
        let mut out_of_service_here: Vec<&ThingName> = Vec::new();
        for d in members {
            let named = named_things.contains(&d.thing);
            if !named && !type_named {
                continue;
            }
            if req.filters.exclude_things.contains(&d.thing) {
                continue;
            }
            if let Some(f) = &req.filters.current_version
                && !f.matches(d.firmware_version.as_ref())
            {
                continue;
            }
            // Maintenance and retired devices take part only when named one by one (a version
            // filter does not name them).
            if !named && let Some(reason) = d.state.hold_back_reason() {
                out.out_of_service.push(HeldBack {
                    thing: d.thing.clone(),
                    // Never reported: 0.0.0 stands for "unknown" in this list.
                    version: d.firmware_version.clone().unwrap_or_else(|| FirmwareVersion::new(0, 0, 0)),
                    reason: reason.to_string(),
                });
                out_of_service_here.push(&d.thing);
                continue;
            }
            // A version filter picks devices as explicitly as naming them.
            let named = named || req.filters.current_version.is_some();
            let running = d.firmware_version.as_ref();
            if running == Some(&version) {
                current += 1;
                continue;
            }
            let is_downgrade = running.is_some_and(|r| *r > version);
            if !named {
                match (req.action, is_downgrade, running) {
                    (UpdateAction::Update, true, Some(r)) => {
                        newer_versions.insert(r);
                        held_back.push(HeldBack {
                            thing: d.thing.clone(),
                            version: r.clone(),
                            reason: format!("runs {r}, newer than {version}; an update never downgrades (name it or ask to roll back)"),
                        });
                        continue;
                    }
                    (UpdateAction::Rollback, false, Some(r)) => {
                        held_back.push(HeldBack {
                            thing: d.thing.clone(),
                            version: r.clone(),
                            reason: format!("runs {r}, older than {version}; a rollback never upgrades"),
                        });
                        continue;
                    }
                    _ => {}
                }
            }
            if !d.connected {
                if req.filters.only_connected {
                    *out.offline_left_out.entry(ty.clone()).or_default() += 1;
                    continue;
                }
                offline.push(crate::plan::OfflineDevice { thing: d.thing.clone(), last_seen: d.last_seen });
            }
            downgrades |= is_downgrade;
            planned_versions.extend(running);
            things.push(d.thing.clone());
        }
        offline.sort_by(|a, b| a.thing.cmp(&b.thing));
        if current > 0 {
            out.already_current.insert(ty.clone(), current);
        }
        if things.is_empty() {
            // Nothing moves, but what was held back is still said.
            held_back.sort_by(|a, b| a.thing.cmp(&b.thing));
            out.held_back.extend(held_back);
            continue;
        }
        things.sort();
        held_back.sort_by(|a, b| a.thing.cmp(&b.thing));
        let thing_group = ctx.naming.thing_group_of(ty);
        let mut fleet_query = fleet_query(
            req,
            ty,
            QueryParts { type_named, named_here: &named_here, group: &thing_group, version: &version },
            &newer_versions,
            &planned_versions,
            &held_back,
        );
        if type_named {
            for t in &out_of_service_here {
                fleet_query.push_str(&format!(" AND NOT thingName:{t}"));
            }
        }
        out.targets.push(TypeTarget {
            device_type: ty.clone(),
            thing_group,
            version,
            things,
            downgrades,
            held_back,
            fleet_query,
            offline,
        });
    }
    out.refusals.sort();
    out.refusals.dedup();
    out.out_of_service.sort_by(|a, b| a.thing.cmp(&b.thing));
    out
}

/// A resolution that plans nothing when an exclusion names no known device or type: an
/// exclusion that cannot be honoured may be a device the operator meant to protect.
/// `snapshot` holds every device the service read, the excluded things included.
fn unknown_exclusions(
    req: &UpdateRequest,
    found: &BTreeSet<&ThingName>,
    ctx: PlanningContext<'_>,
) -> Option<Resolution> {
    let mut refusals: Vec<Refusal> = req
        .filters
        .exclude_things
        .iter()
        .filter(|t| !found.contains(t))
        .map(|t| Refusal {
            target: t.to_string(),
            reason: "unknown thing in an exclusion: no such device in the registry; nothing planned".into(),
        })
        .collect();
    refusals.extend(req.filters.exclude_types.iter().filter(|t| !ctx.known.contains(*t)).map(|t| Refusal {
        target: t.to_string(),
        reason: "unknown device type in an exclusion: not in the catalog or the registry; nothing planned".into(),
    }));
    if refusals.is_empty() {
        return None;
    }
    refusals.sort();
    Some(Resolution { refusals, ..Default::default() })
}

/// Renders the Fleet Indexing query for one deployment, e.g.
/// `thingGroupNames:PetFeederAWSDevice AND NOT shadow.reported.firmwareVersion:3.0.0`.
struct QueryParts<'a> {
    type_named: bool,
    named_here: &'a [&'a ThingName],
    group: &'a ThingGroupName,
    version: &'a FirmwareVersion,
}

fn fleet_query(
    req: &UpdateRequest,
    ty: &DeviceType,
    parts: QueryParts<'_>,
    newer_versions: &BTreeSet<&FirmwareVersion>,
    planned_versions: &BTreeSet<&FirmwareVersion>,
    held_back: &[HeldBack],
) -> String {
    const FW: &str = "shadow.reported.firmwareVersion";
    let QueryParts { type_named, named_here, group, version } = parts;
    let mut q = if type_named {
        format!("thingGroupNames:{group}")
    } else {
        let names: Vec<String> = named_here.iter().map(|t| format!("thingName:{t}")).collect();
        if names.len() == 1 { names[0].clone() } else { format!("({})", names.join(" OR ")) }
    };
    q.push_str(&format!(" AND NOT {FW}:{version}"));
    match &req.filters.current_version {
        Some(VersionFilter::Exact(v)) => q.push_str(&format!(" AND {FW}:{v}")),
        Some(VersionFilter::Prefix { major, minor: None }) => q.push_str(&format!(" AND {FW}:{major}.*")),
        Some(VersionFilter::Prefix { major, minor: Some(m) }) => q.push_str(&format!(" AND {FW}:{major}.{m}.*")),
        // Fleet Indexing compares strings, not semver ("10.0.0" < "2.0.0"), so the query lists
        // the versions below the limit that the planned devices run.
        Some(VersionFilter::Below(_)) => {
            let alts: Vec<String> = planned_versions.iter().map(|v| format!("{FW}:{v}")).collect();
            q.push_str(&format!(" AND ({})", alts.join(" OR ")));
        }
        None => {}
    }
    for v in newer_versions {
        q.push_str(&format!(" AND NOT {FW}:{v}"));
    }
    if req.action == UpdateAction::Rollback && type_named {
        let older: BTreeSet<&FirmwareVersion> = held_back.iter().map(|h| &h.version).collect();
        for v in older {
            q.push_str(&format!(" AND NOT {FW}:{v}"));
        }
    }
    for t in &req.filters.exclude_things {
        if t.conventional_parts().is_none_or(|(t_ty, _)| &t_ty == ty) {
            q.push_str(&format!(" AND NOT thingName:{t}"));
        }
    }
    if req.filters.only_connected {
        q.push_str(" AND connectivity.connected:true");
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(s: &str) -> DeviceType {
        DeviceType::parse(s).unwrap()
    }
    fn v(s: &str) -> FirmwareVersion {
        FirmwareVersion::parse(s).unwrap()
    }
    fn dev(thing: &str, version: &str) -> Device {
        let t = ThingName::parse(thing).unwrap();
        let (d_ty, _) = t.conventional_parts().unwrap();
        Device {
            firmware_version: Some(v(version)),
            connected: true,
            last_seen: None,
            ..Device::new(t, d_ty.clone(), NamingConvention::default().thing_group_of(&d_ty))
        }
    }

    struct World {
        versions: BTreeMap<DeviceType, Vec<FirmwareVersion>>,
        enabled: BTreeSet<DeviceType>,
        naming: NamingConvention,
        devices: Vec<Device>,
    }

    impl World {
        fn new() -> Self {
            let mut versions = BTreeMap::new();
            versions.insert(ty("pet_feeder"), vec![v("1.0.0"), v("2.0.0"), v("3.0.0")]);
            versions.insert(ty("smart_plug"), vec![v("1.0.0"), v("2.0.0")]);
            versions.insert(ty("beehive_scale"), vec![v("1.0.0"), v("2.0.0")]);
            let enabled = [ty("pet_feeder"), ty("smart_plug")].into_iter().collect();
            let mut devices = Vec::new();
            for t in ["pet_feeder", "smart_plug", "beehive_scale"] {
                let latest = if t == "pet_feeder" { "3.0.0" } else { "2.0.0" };
                for (n, ver) in [(1, "1.0.0"), (2, "1.0.0"), (3, "2.0.0"), (4, latest)] {
                    devices.push(dev(&format!("{t}-0{n}"), ver));
                }
            }
            World { versions, enabled, naming: NamingConvention::default(), devices }
        }
        fn resolve(&self, req: &UpdateRequest) -> Resolution {
            let known: BTreeSet<DeviceType> = self.versions.keys().cloned().collect();
            resolve(
                req,
                &self.devices,
                PlanningContext {
                    versions: &self.versions,
                    enabled: &self.enabled,
                    known: &known,
                    naming: &self.naming,
                },
            )
        }
    }

    fn req(action: UpdateAction, version: &str) -> UpdateRequest {
        UpdateRequest {
            action,
            version: VersionRequest::parse(version).unwrap(),
            target: Target::default(),
            filters: Filters::default(),
            revert_on_abort: false,
        }
    }

    fn names(t: &TypeTarget) -> Vec<&str> {
        t.things.iter().map(|t| t.as_str()).collect()
    }

    #[test]
    fn whole_fleet_to_latest_skips_current_and_refuses_disabled() {
        let w = World::new();
        let mut r = req(UpdateAction::Update, "latest");
        r.target.whole_fleet = true;
        let res = w.resolve(&r);
        assert_eq!(res.targets.len(), 2);
        let pf = &res.targets[0];
        assert_eq!(pf.device_type, ty("pet_feeder"));
        assert_eq!(pf.version, v("3.0.0"));
        assert_eq!(names(pf), ["pet_feeder-01", "pet_feeder-02", "pet_feeder-03"]);
        assert_eq!(pf.fleet_query, "thingGroupNames:PetFeederAWSDevice AND NOT shadow.reported.firmwareVersion:3.0.0");
        assert_eq!(names(&res.targets[1]), ["smart_plug-01", "smart_plug-02"]);
        assert_eq!(
            res.refusals,
            vec![Refusal { target: "beehive_scale".into(), reason: "OTA is disabled for beehive_scale".into() }]
        );
    }

    #[test]
    fn update_never_downgrades_unnamed_devices() {
        let w = World::new();
        let mut r = req(UpdateAction::Update, "2.0.0");
        r.target.device_types.insert(ty("pet_feeder"));
        let res = w.resolve(&r);
        let pf = &res.targets[0];
        assert_eq!(names(pf), ["pet_feeder-01", "pet_feeder-02"]);
        assert!(!pf.downgrades);
        assert_eq!(pf.held_back.len(), 1);
        assert_eq!(pf.held_back[0].thing.as_str(), "pet_feeder-04");
        assert!(pf.fleet_query.ends_with("AND NOT shadow.reported.firmwareVersion:3.0.0"), "{}", pf.fleet_query);
    }

    #[test]
    fn a_named_thing_is_rolled_back() {
        let w = World::new();
        let mut r = req(UpdateAction::Update, "1.0.0");
        r.target.things.insert(ThingName::parse("pet_feeder-03").unwrap());
        let res = w.resolve(&r);
        assert_eq!(names(&res.targets[0]), ["pet_feeder-03"]);
        assert!(res.targets[0].downgrades);
        assert_eq!(res.targets[0].fleet_query, "thingName:pet_feeder-03 AND NOT shadow.reported.firmwareVersion:1.0.0");
    }

    #[test]
    fn rollback_of_a_type_never_upgrades() {
        let w = World::new();
        let mut r = req(UpdateAction::Rollback, "2.0.0");
        r.target.device_types.insert(ty("pet_feeder"));
        let res = w.resolve(&r);
        assert_eq!(names(&res.targets[0]), ["pet_feeder-04"]);
        assert_eq!(res.targets[0].held_back.len(), 2);
    }

    #[test]
    fn filters_and_exclusions_narrow_the_target() {
        let w = World::new();
        let mut r = req(UpdateAction::Update, "latest");
        r.target.whole_fleet = true;
        r.filters.current_version = Some(VersionFilter::parse("1.x").unwrap());
        r.filters.exclude_types.insert(ty("smart_plug"));
        r.filters.exclude_things.insert(ThingName::parse("pet_feeder-02").unwrap());
        let res = w.resolve(&r);
        assert_eq!(res.targets.len(), 1);
        assert_eq!(names(&res.targets[0]), ["pet_feeder-01"]);
        assert_eq!(
            res.targets[0].fleet_query,
            "thingGroupNames:PetFeederAWSDevice AND NOT shadow.reported.firmwareVersion:3.0.0 AND shadow.reported.firmwareVersion:1.* AND NOT thingName:pet_feeder-02"
        );
    }

    #[test]
    fn missing_versions_unknown_things_and_disabled_named_things_are_refused() {
        let w = World::new();
        let mut r = req(UpdateAction::Update, "3.0.0");
        r.target.device_types.insert(ty("smart_plug"));
        r.target.things.insert(ThingName::parse("pet_feeder-09").unwrap());
        r.target.things.insert(ThingName::parse("beehive_scale-01").unwrap());
        let res = w.resolve(&r);
        assert!(res.targets.is_empty());
        let targets: Vec<&str> = res.refusals.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["beehive_scale-01", "pet_feeder-09", "smart_plug"]);
        assert!(res.refusals[2].reason.contains("available: 1.0.0, 2.0.0"), "{:?}", res.refusals[2]);
    }

    #[test]
    fn a_type_with_nothing_to_change_is_left_out_not_refused() {
        let w = World::new();
        let mut r = req(UpdateAction::Update, "2.0.0");
        r.target.things.insert(ThingName::parse("smart_plug-03").unwrap());
        let res = w.resolve(&r);
        assert!(res.targets.is_empty() && res.refusals.is_empty());
        assert_eq!(res.already_current[&ty("smart_plug")], 1);
    }

    #[test]
    fn a_version_filter_selects_devices_as_explicitly_as_naming_them() {
        let w = World::new();
        let mut r = req(UpdateAction::Update, "1.0.0");
        r.target.device_types.insert(ty("smart_plug"));
        r.filters.current_version = Some(crate::version::VersionFilter::parse("2.0.0").unwrap());
        let res = w.resolve(&r);
        assert_eq!(res.targets.len(), 1, "{res:?}");
        assert_eq!(names(&res.targets[0]), ["smart_plug-03", "smart_plug-04"]);
        assert!(res.targets[0].downgrades, "moving them to 1.0.0 is a rollback of exactly them");
        assert!(res.targets[0].held_back.is_empty());
    }

    #[test]
    fn an_exclusion_that_names_nothing_known_refuses_the_whole_plan() {
        let w = World::new();
        let mut r = req(UpdateAction::Update, "latest");
        r.target.device_types.insert(ty("pet_feeder"));
        r.filters.exclude_things.insert(ThingName::parse("pet_feeder-99").unwrap());
        let res = w.resolve(&r);
        assert!(res.targets.is_empty(), "{res:?}");
        assert_eq!(res.refusals.len(), 1);
        assert!(res.refusals[0].reason.contains("exclusion"), "{:?}", res.refusals);
        let mut r2 = req(UpdateAction::Update, "latest");
        r2.target.whole_fleet = true;
        r2.filters.exclude_types.insert(ty("smart_plugg"));
        assert!(w.resolve(&r2).targets.is_empty());
        let mut ok = req(UpdateAction::Update, "latest");
        ok.target.device_types.insert(ty("pet_feeder"));
        ok.filters.exclude_things.insert(ThingName::parse("pet_feeder-01").unwrap());
        assert_eq!(names(&w.resolve(&ok).targets[0]), ["pet_feeder-02", "pet_feeder-03"]);
    }

    #[test]
    fn offline_devices_are_listed_or_left_out_when_asked() {
        let mut w = World::new();
        for d in w.devices.iter_mut().filter(|d| d.thing.as_str() == "pet_feeder-02") {
            d.connected = false;
        }
        let mut r = req(UpdateAction::Update, "latest");
        r.target.device_types.insert(ty("pet_feeder"));
        let res = w.resolve(&r);
        assert_eq!(res.targets[0].offline.len(), 1);
        assert_eq!(res.targets[0].offline[0].thing.as_str(), "pet_feeder-02");
        r.filters.only_connected = true;
        let res = w.resolve(&r);
        assert_eq!(names(&res.targets[0]), ["pet_feeder-01", "pet_feeder-03"]);
        assert_eq!(res.offline_left_out.get(&ty("pet_feeder")), Some(&1));
    }
}
