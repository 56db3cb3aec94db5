//! Authorization as policy: the default policies decide exactly as the role checks they
//! replace, for every role and operation; the shipped examples parse, validate and decide as
//! their comments say; a change freeze refuses a start inside its window through the service
//! (time from an injected clock) and allows it outside; a policy file that does not parse or
//! validate is an error with its line and column, never an allow; an unknown action is denied.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use ota_core::Error;
use ota_core::audit::AuditOutcome;
use ota_core::auth::{Caller, Role};
use ota_core::authz::{Action, Authorizer, Context, DEFAULT_POLICIES, Resource};
use ota_core::device::{Device, DeviceQuery, LOCATION};
use ota_core::memory::MemoryRegistry;
use ota_core::names::{DeviceType, JobId, NamingConvention, ThingName};
use ota_core::ports::Backend;
use ota_core::rollout::RolloutQuery;
use ota_core::service::{Clock, FleetManager, PublishRequest, Settings};
use ota_core::targeting::{Filters, Target, UpdateAction, UpdateRequest};
use ota_core::version::{FirmwareVersion, VersionRequest};

const SENIOR_REBOOT: &str = include_str!("../../examples/senior_operator_reboot.cedar");
const FREEZE: &str = include_str!("../../examples/change_freeze.cedar");

/// The rule before policies, as the service's call sites had it: the role each operation
/// required with `caller.require(Role::X, what)` (a higher role includes every lower one,
/// `Caller::has`), and the words it named. The three device operations had no call site yet;
/// their roles are the design's (viewer reads telemetry, operator sends commands and sets state).
const OLD_MATRIX: [(Action, Role, &str); 21] = [
    (Action::ListDeviceTypes, Role::Viewer, "list device types"),
    (Action::ListFirmware, Role::Viewer, "list firmware"),
    (Action::VerifyFirmware, Role::Viewer, "verify firmware"),
    (Action::ReadFleet, Role::Viewer, "read fleet status"),
    (Action::ReadDevice, Role::Viewer, "read a device"),
    (Action::ReadTelemetry, Role::Viewer, "read telemetry"),
    (Action::ListRollouts, Role::Viewer, "list rollouts"),
    (Action::ReadRollout, Role::Viewer, "read a rollout"),
    (Action::ReadCommand, Role::Viewer, "read a command run"),
    (Action::Ask, Role::Viewer, "ask"),
    (Action::PlanUpdate, Role::Operator, "plan an update"),
    (Action::StartRollout, Role::Operator, "start a rollout"),
    (Action::CancelRollout, Role::Operator, "cancel a rollout"),
    (Action::SendCommand, Role::Operator, "send a command"),
    (Action::CancelCommand, Role::Operator, "cancel a command run"),
    (Action::SetDeviceState, Role::Operator, "set a device's state"),
    (Action::ReadAudit, Role::Admin, "read the audit trail"),
    (Action::SetOtaEnabled, Role::Admin, "enable OTA"),
    (Action::SetPolicy, Role::Admin, "change a rollout policy"),
    (Action::PublishFirmware, Role::Admin, "publish firmware"),
    (Action::SignFirmware, Role::Admin, "sign firmware"),
];

/// Every set of roles a caller can hold (none included), each with and without an extra group.
fn every_caller() -> Vec<Caller> {
    let roles = [Role::Viewer, Role::Operator, Role::Admin];
    let mut out = Vec::new();
    for mask in 0..8u8 {
        let held: Vec<Role> = (0..3).filter(|i| mask & (1 << i) != 0).map(|i| roles[i]).collect();
        let c = Caller::new(format!("caller{mask}"), held);
        out.push(c.clone().with_groups(["senior_operator", "night_shift"]));
        out.push(c);
    }
    out
}

fn every_resource() -> Vec<Resource> {
    vec![
        Resource::Fleet,
        Resource::device_type("pet_feeder"),
        Resource::Device {
            thing: "pet_feeder-01".into(),
            device_type: "pet_feeder".into(),
            location: Some("factory-floor-1/line-7".into()),
            state: Some("active".into()),
        },
        Resource::device("smart_plug-02", "smart_plug"),
        Resource::Rollout { id: "ota-pet_feeder-1".into(), device_type: Some("pet_feeder".into()) },
        Resource::Rollout { id: "ota-unknown".into(), device_type: None },
    ]
}

fn utc(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, h, m, 0).unwrap()
}

fn every_context() -> Vec<Context> {
    vec![
        Context::at(utc(0, 0)),
        Context::at(utc(12, 30)).devices(10_000),
        Context::at(utc(23, 59)).devices(1).command("reboot", serde_json::json!({})),
        Context { ota_enabled: Some(false), version: Some("2.0.0".into()), ..Context::at(utc(8, 0)) },
    ]
}

#[test]
fn the_default_policies_decide_exactly_as_the_old_role_checks() {
    let authz = Authorizer::default();
    assert_eq!(authz.text(), DEFAULT_POLICIES);
    let mut compared = 0;
    let mut applies: BTreeMap<Action, usize> = BTreeMap::new();
    for (action, role, what) in OLD_MATRIX {
        assert_eq!(action.default_role(), role, "{action}: the role a refusal names");
        for caller in every_caller() {
            let old = caller.require(role, what);
            for resource in every_resource() {
                for context in every_context() {
                    let d = authz.is_authorized(&caller, action, &resource, &context);
                    if !d.errors.is_empty() {
                        // The schema says this action never applies to this kind of resource.
                        assert!(!d.allowed, "{d:?}");
                        continue;
                    }
                    *applies.entry(action).or_default() += 1;
                    compared += 1;
                    assert_eq!(
                        d.allowed,
                        old.is_ok(),
                        "{action} by {:?} on {resource:?}: policies {d:?}, old rule {old:?}",
                        caller.roles
                    );
                    // A refusal reads word for word as the old one.
                    let new = d.into_result(&caller, action, what);
                    assert_eq!(new, old.clone(), "{action} by {:?}", caller.roles);
                }
            }
        }
    }
    assert_eq!(applies.len(), OLD_MATRIX.len(), "every action applies to some resource: {applies:?}");
    assert!(compared > 1000, "{compared}");
    assert_eq!(OLD_MATRIX.map(|(a, _, _)| a), Action::ALL, "the table names every action once");
}

#[test]
fn a_refusal_by_the_default_policies_is_todays_error() {
    let authz = Authorizer::default();
    let vic = Caller::new("vic", [Role::Viewer]);
    let err = authz
        .is_authorized(&vic, Action::StartRollout, &Resource::Fleet, &Context::at(utc(9, 0)))
        .into_result(&vic, Action::StartRollout, "start a rollout")
        .unwrap_err();
    assert_eq!(err.to_string(), "permission denied: start a rollout needs the operator role, and vic has viewer");
    let nobody = Caller::new("nobody", []);
    let err = authz
        .is_authorized(&nobody, Action::ReadFleet, &Resource::Fleet, &Context::at(utc(9, 0)))
        .into_result(&nobody, Action::ReadFleet, "read fleet status")
        .unwrap_err();
    assert_eq!(err.to_string(), "permission denied: read fleet status needs the viewer role, and nobody has no role");
}

fn reboot(at: DateTime<Utc>) -> Context {
    Context::at(at).devices(1).command("reboot", serde_json::json!({}))
}

#[test]
fn only_a_senior_operator_may_reboot_in_the_shipped_example() {
    let authz = Authorizer::from_text(SENIOR_REBOOT, "examples/senior_operator_reboot.cedar").unwrap();
    let device = Resource::Device {
        thing: "pet_feeder-03".into(),
        device_type: "pet_feeder".into(),
        location: Some("factory-floor-2".into()),
        state: Some("active".into()),
    };
    let identify = Context::at(utc(10, 0)).devices(1).command("identify", serde_json::json!({}));
    let ana = Caller::new("ana", [Role::Operator]);
    let senior = Caller::new("sam", [Role::Operator]).with_groups(["senior_operator"]);
    let root = Caller::new("root", [Role::Admin]);
    let viewer_senior = Caller::new("vic", [Role::Viewer]).with_groups(["senior_operator"]);

    let d = authz.is_authorized(&ana, Action::SendCommand, &device, &reboot(utc(10, 0)));
    assert!(!d.allowed && d.reasons == ["reboot-needs-senior-operator"], "{d:?}");
    let err = d.into_result(&ana, Action::SendCommand, "send reboot to pet_feeder-03").unwrap_err().to_string();
    assert!(err.contains("only a senior_operator may reboot a device") && err.contains("ana"), "{err}");
    assert!(authz.is_authorized(&ana, Action::SendCommand, &device, &identify).allowed, "other commands stay");
    assert!(authz.is_authorized(&senior, Action::SendCommand, &device, &reboot(utc(10, 0))).allowed);
    assert!(!authz.is_authorized(&root, Action::SendCommand, &device, &reboot(utc(10, 0))).allowed, "admin too");
    let d = authz.is_authorized(&viewer_senior, Action::SendCommand, &device, &reboot(utc(10, 0)));
    assert!(!d.allowed && d.reasons.is_empty(), "the group alone permits nothing: {d:?}");
    // Everything else is the default matrix.
    for (action, role, _) in OLD_MATRIX.into_iter().filter(|(a, _, _)| *a != Action::SendCommand) {
        for caller in every_caller() {
            for resource in every_resource() {
                let d = authz.is_authorized(&caller, action, &resource, &Context::at(utc(10, 0)));
                if d.errors.is_empty() {
                    assert_eq!(d.allowed, caller.has(role), "{action} by {caller:?}");
                }
            }
        }
    }
}

fn device_at(thing: &str, location: &str) -> Resource {
    let device_type = thing.rsplit_once('-').unwrap().0;
    Resource::Device {
        thing: thing.into(),
        device_type: device_type.into(),
        location: Some(location.into()),
        state: Some("active".into()),
    }
}

#[test]
fn the_change_freeze_covers_factory_floor_1_from_8_to_18_utc() {
    let authz = Authorizer::from_text(FREEZE, "examples/change_freeze.cedar").unwrap();
    let ana = Caller::new("ana", [Role::Operator]);
    let floor1 = device_at("pet_feeder-01", "factory-floor-1/line-7");
    let floor2 = device_at("pet_feeder-03", "factory-floor-2");
    let nowhere = Resource::device("pet_feeder-05", "pet_feeder");
    for (h, m, frozen) in [(7, 59, false), (8, 0, true), (12, 0, true), (17, 59, true), (18, 0, false), (23, 0, false)]
    {
        let ctx = Context::at(utc(h, m)).devices(4);
        let d = authz.is_authorized(&ana, Action::StartRollout, &floor1, &ctx);
        assert_eq!(d.allowed, !frozen, "{h:02}:{m:02}: {d:?}");
        if frozen {
            assert_eq!(d.reasons, ["freeze-factory-floor-1"]);
        }
        assert!(authz.is_authorized(&ana, Action::StartRollout, &floor2, &ctx).allowed, "{h}:{m}");
        assert!(authz.is_authorized(&ana, Action::StartRollout, &nowhere, &ctx).allowed, "{h}:{m}");
        // Only starting is frozen: planning, cancelling and the fleet-wide first decision are not.
        assert!(authz.is_authorized(&ana, Action::StartRollout, &Resource::Fleet, &ctx).allowed);
        assert!(authz.is_authorized(&ana, Action::PlanUpdate, &Resource::Fleet, &ctx).allowed);
    }
}

#[test]
fn a_policy_file_that_does_not_parse_or_validate_is_an_error_with_line_and_column() {
    // Does not parse: the second policy lacks its closing `;` (the input ends after `}`).
    let text = "permit (principal, action, resource);\npermit (principal, action, resource)\n  when { true }\n";
    let e = Authorizer::from_text(text, "bad.cedar").unwrap_err();
    let p = &e.problems[0];
    assert_eq!((p.line, p.column), (3, 16), "{e}");
    assert!(e.to_string().starts_with("bad.cedar:3:16: "), "{e}");
    // A condition that is neither `when` nor `unless` ends where `{` should be.
    let e = Authorizer::from_text(
        "permit (principal, action, resource)\nwhen { principal.roles.contains(\"admin\") } oops;",
        "w.cedar",
    )
    .unwrap_err();
    assert_eq!((e.problems[0].line, e.problems[0].column), (2, 48), "{e}");

    // Parses, but names an action the schema does not declare.
    let text = format!("{DEFAULT_POLICIES}\npermit (principal, action == Action::\"RebootEverything\", resource);\n");
    let line = text.lines().count();
    let e = Authorizer::from_text(&text, "unknown-action.cedar").unwrap_err();
    assert_eq!(e.problems[0].line, line, "{e}");
    assert!(e.to_string().contains("RebootEverything"), "{e}");

    // Parses, but reads an attribute a Fleet does not have (strict validation).
    let text = "@id(\"a\")\npermit (principal, action == Action::\"StartRollout\", resource)\nwhen { resource.location == \"lab\" };";
    let e = Authorizer::from_text(text, "attr.cedar").unwrap_err();
    assert_eq!((e.problems[0].line, e.problems[0].column), (3, 8), "{e}");
    assert!(e.to_string().contains("location"), "{e}");

    // A type error: a role compared with a number.
    let text = "permit (principal, action, resource) when { principal.roles.contains(1) };";
    let e = Authorizer::from_text(text, "type.cedar").unwrap_err();
    assert_eq!(e.problems[0].line, 1, "{e}");

    // The service's error says where, and nothing was built that could allow.
    let err: Error = Authorizer::from_text("permit (", "p.cedar").unwrap_err().into();
    assert!(
        matches!(err, Error::Invalid { .. })
            && err.to_string().contains("invalid policy file \"p.cedar\": line 1, column "),
        "{err}"
    );
}

#[test]
fn an_unknown_action_is_denied() {
    for authz in [Authorizer::default(), Authorizer::from_files("permit (principal, action, resource);").unwrap()] {
        let root = Caller::new("root", [Role::Admin]);
        let d = authz.is_authorized_named(&root, "RebootEverything", &Resource::Fleet, &Context::at(utc(3, 0)));
        assert!(!d.allowed && d.errors[0].contains("unknown action"), "{d:?}");
        // An action group is not an operation either.
        let d = authz.is_authorized_named(&root, "Read", &Resource::Fleet, &Context::at(utc(3, 0)));
        assert!(!d.allowed, "{d:?}");
        assert!(authz.is_authorized_named(&root, "ReadFleet", &Resource::Fleet, &Context::at(utc(3, 0))).allowed);
    }
    // No policy at all: everything is denied.
    let empty = Authorizer::from_files("// nothing\n").unwrap();
    let root = Caller::new("root", [Role::Admin]);
    assert!(!empty.is_authorized(&root, Action::ReadFleet, &Resource::Fleet, &Context::at(utc(3, 0))).allowed);
}

// ---- through the service ----------------------------------------------------------------

#[derive(Debug)]
struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap() = at;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

fn ty(s: &str) -> DeviceType {
    DeviceType::parse(s).unwrap()
}
fn ver(s: &str) -> FirmwareVersion {
    FirmwareVersion::parse(s).unwrap()
}
fn thing(s: &str) -> ThingName {
    ThingName::parse(s).unwrap()
}
fn admin() -> Caller {
    Caller::new("root", [Role::Admin])
}
fn operator() -> Caller {
    Caller::new("ana", [Role::Operator])
}

/// pet_feeder 1.0.0 and 2.0.0, four devices on 1.0.0 at the demo world's locations, OTA
/// enabled, the service deciding by `policies` with a clock the test sets.
async fn world(policies: Option<&str>) -> (FleetManager, Arc<TestClock>) {
    let clock = Arc::new(TestClock(Mutex::new(utc(6, 0))));
    let registry = Arc::new(MemoryRegistry::default());
    let backend = Backend { registry: registry.clone(), ..ota_core::memory::backend() };
    let mut svc = FleetManager::with_clock(backend, Settings::default(), clock.clone()).unwrap();
    if let Some(text) = policies {
        svc = svc.with_authorizer(Arc::new(Authorizer::from_text(text, "test.cedar").unwrap()));
    }
    let t = ty("pet_feeder");
    for v in ["1.0.0", "2.0.0"] {
        let req = PublishRequest {
            device_type: t.clone(),
            version: ver(v),
            image: format!("image {v}").into_bytes(),
            release_notes: String::new(),
            built_at: None,
            extra: Default::default(),
        };
        svc.publish_firmware(&admin(), req).await.unwrap();
    }
    let group = NamingConvention::default().thing_group_of(&t);
    for (n, location) in
        ["factory-floor-1/line-7", "factory-floor-1/line-3", "factory-floor-2", "lab"].iter().enumerate()
    {
        registry.extend([Device {
            firmware_version: Some(ver("1.0.0")),
            connected: true,
            attributes: [(LOCATION.to_string(), location.to_string())].into(),
            ..Device::new(thing(&format!("pet_feeder-0{}", n + 1)), t.clone(), group.clone())
        }]);
    }
    svc.set_ota_enabled(&admin(), &t, true).await.unwrap();
    (svc, clock)
}

fn update(target: Target) -> UpdateRequest {
    UpdateRequest {
        action: UpdateAction::Update,
        version: VersionRequest::parse("2.0.0").unwrap(),
        target,
        filters: Filters::default(),
        revert_on_abort: false,
    }
}

fn whole_type() -> UpdateRequest {
    update(Target { device_types: [ty("pet_feeder")].into(), ..Default::default() })
}

async fn rollouts(svc: &FleetManager) -> usize {
    svc.backend().rollouts.list(&RolloutQuery::default()).await.unwrap().len()
}

#[tokio::test]
async fn a_change_freeze_refuses_a_start_inside_its_window_and_allows_it_outside() {
    let (svc, clock) = world(Some(FREEZE)).await;
    clock.set(utc(10, 0));
    // Planning is not frozen, and shows all four devices.
    let plan = svc.plan_update(&operator(), &whole_type()).await.unwrap();
    assert_eq!(plan.deployments[0].things.len(), 4, "{plan:?}");
    let err = svc.start(&operator(), &whole_type(), plan.plan_id.as_deref()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Forbidden { .. }), "{text}");
    assert!(text.contains("start a rollout to pet_feeder-01") && text.contains("freeze-factory-floor-1"), "{text}");
    assert!(text.contains("change freeze: no rollouts to factory-floor-1"), "{text}");
    assert_eq!(rollouts(&svc).await, 0, "nothing was created");
    let trail = svc.audit_trail(&admin(), 10).await.unwrap();
    let refused = trail.iter().find(|e| e.operation == "start").expect("the refused start is audited");
    assert!(matches!(&refused.outcome, AuditOutcome::Refused(r) if r.contains("freeze")), "{refused:?}");

    // The devices elsewhere may be updated inside the window.
    let elsewhere =
        update(Target { things: [thing("pet_feeder-03"), thing("pet_feeder-04")].into(), ..Default::default() });
    let started = svc.start(&operator(), &elsewhere, None).await.unwrap();
    assert_eq!(started.rollouts[0].things.len(), 2);
    let id: JobId = started.rollouts[0].id.clone();
    svc.cancel(&operator(), &id, "make room").await.unwrap();

    // At 18:00 the freeze is over.
    clock.set(utc(18, 0));
    let started = svc.start(&operator(), &whole_type(), None).await.unwrap();
    assert_eq!(started.rollouts[0].things.len(), 4);
    assert_eq!(rollouts(&svc).await, 2);
}

#[tokio::test]
async fn the_service_decides_every_operation_by_the_old_role_rule() {
    let (svc, _clock) = world(None).await;
    let unknown = JobId::parse("ota-pet_feeder-nothing").unwrap();
    for caller in every_caller() {
        let forbidden = |r: Result<(), Error>| matches!(r, Err(Error::Forbidden { .. }));
        let checks: Vec<(Role, bool)> = vec![
            (Role::Viewer, forbidden(svc.device_types(&caller).await.map(drop))),
            (Role::Viewer, forbidden(svc.list_firmware(&caller, None).await.map(drop))),
            (Role::Viewer, forbidden(svc.verify_catalog(&caller, None).await.map(drop))),
            (Role::Viewer, forbidden(svc.fleet_status(&caller, &DeviceQuery::default()).await.map(drop))),
            (Role::Viewer, forbidden(svc.device(&caller, &thing("pet_feeder-01")).await.map(drop))),
            (Role::Viewer, forbidden(svc.device(&caller, &thing("pet_feeder-99")).await.map(drop))),
            (Role::Viewer, forbidden(svc.list_rollouts(&caller, &RolloutQuery::default()).await.map(drop))),
            (Role::Viewer, forbidden(svc.rollout(&caller, &unknown).await.map(drop))),
            (Role::Viewer, forbidden(svc.plan_prompt(&caller, "list firmware").await.map(drop))),
            (Role::Operator, forbidden(svc.plan_update(&caller, &whole_type()).await.map(drop))),
            (Role::Operator, forbidden(svc.plan_prompt(&caller, "update pet_feeder to 2.0.0").await.map(drop))),
            (Role::Operator, forbidden(svc.preview_cancel(&caller, &unknown).await.map(drop))),
            (Role::Operator, forbidden(svc.cancel(&caller, &unknown, "").await.map(drop))),
            (Role::Admin, forbidden(svc.audit_trail(&caller, 1).await.map(drop))),
            (Role::Admin, forbidden(svc.preview_set_ota(&caller, &ty("pet_feeder"), false).await.map(drop))),
            (Role::Admin, forbidden(svc.set_policy(&caller, &ty("pet_feeder"), None).await.map(drop))),
            (Role::Admin, forbidden(svc.plan_prompt(&caller, "disable OTA for pet_feeder").await.map(drop))),
        ];
        for (n, (role, refused)) in checks.into_iter().enumerate() {
            assert_eq!(refused, !caller.has(role), "check {n} by {:?}", caller.roles);
        }
    }
    // Starting is last: it changes the fleet.
    let vic = Caller::new("vic", [Role::Viewer]).with_groups(["senior_operator"]);
    let err = svc.start(&vic, &whole_type(), None).await.unwrap_err();
    assert_eq!(err.to_string(), "permission denied: start a rollout needs the operator role, and vic has viewer");
    assert_eq!(rollouts(&svc).await, 0);
    assert_eq!(svc.start(&operator(), &whole_type(), None).await.unwrap().rollouts.len(), 1);
}
