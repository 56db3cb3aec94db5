//! The cost of a Cedar policy decision in ota's service, against the plain role check it
//! replaced, in the same run.
//!
//! - `decision`: one decision. `role_check` is `Caller::require` with the role the action
//!   needs (the check front doors still make); `cedar_default` is the service's decision
//!   (`Authorizer::is_authorized` then `Decision::into_result`, as `authorize` does) by the
//!   default policies, StartRollout on a Device with its location and state;
//!   `cedar_with_examples` is the same by the default policies plus the two forbids of
//!   `examples/change_freeze.cedar` and `examples/senior_operator_reboot.cedar`, SendCommand
//!   `reboot` on a Device. Each has an allowed and a denied case (a denial builds the
//!   `Forbidden` error on both sides).
//! - `start_authz`: the per-device decisions of one start to N devices (1,000 and 10,000
//!   distinct things, locations alternating between factory-floor-1 and the lab), StartRollout
//!   in the context of the deployment's device count, against N role checks. One iteration is
//!   one start; the resources are built before the measurement (the service builds them from
//!   its registry listing, which the role check never needed), so the figure is the decisions.

use chrono::{DateTime, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ota_core::auth::{Caller, Role};
use ota_core::authz::{Action, Authorizer, Context, DEFAULT_POLICIES, Resource};
use std::hint::black_box;

const CHANGE_FREEZE: &str = include_str!("../../examples/change_freeze.cedar");
const SENIOR_OPERATOR_REBOOT: &str = include_str!("../../examples/senior_operator_reboot.cedar");

/// 2026-12-02 (a Wednesday) at `h:m` UTC.
fn utc(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, h, m, 0).single().expect("a valid time")
}

/// The id of a policy block that starts with `@id("...")`.
fn block_id(block: &str) -> Option<&str> {
    block.strip_prefix("@id(\"")?.split('"').next()
}

/// The default policies plus the policies of each example that the defaults lack: each example
/// is a whole file (the default matrix, then its forbid), and one set may not repeat an `@id`.
fn default_with_examples() -> Authorizer {
    let defaults = Authorizer::default().policy_ids();
    let mut text = DEFAULT_POLICIES.to_string();
    for (name, example) in
        [("change_freeze.cedar", CHANGE_FREEZE), ("senior_operator_reboot.cedar", SENIOR_OPERATOR_REBOOT)]
    {
        // The example alone validates, so its blocks are whole policies.
        Authorizer::from_text(example, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let starts: Vec<usize> = example.match_indices("@id(\"").map(|(at, _)| at).collect();
        for (i, &start) in starts.iter().enumerate() {
            let block = &example[start..starts.get(i + 1).copied().unwrap_or(example.len())];
            let id = block_id(block).unwrap_or_else(|| panic!("{name}: a policy without an id"));
            if !defaults.iter().any(|d| d == id) {
                text.push('\n');
                text.push_str(block);
            }
        }
    }
    let a = Authorizer::from_text(&text, "default.cedar + examples").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        a.policy_ids(),
        [
            "admin-administers",
            "freeze-factory-floor-1",
            "operator-operates",
            "reboot-needs-senior-operator",
            "viewer-reads"
        ]
    );
    a
}

fn device(thing: impl Into<String>, location: &str) -> Resource {
    Resource::Device {
        thing: thing.into(),
        device_type: "pet_feeder".into(),
        location: Some(location.into()),
        state: Some("active".into()),
    }
}

fn decision(c: &mut Criterion) {
    let default = Authorizer::default();
    let examples = default_with_examples();
    let operator = Caller::new("ana", [Role::Operator]);
    let senior = Caller::new("sam", [Role::Operator]).with_groups(["senior_operator"]);
    let viewer = Caller::new("vic", [Role::Viewer]);
    let floor = device("pet_feeder-03", "factory-floor-1/line-7");
    let start = Context::at(utc(20, 0)).devices(1);
    let reboot = Context::at(utc(10, 0)).devices(1).command("reboot", serde_json::json!({}));
    let needed = Action::StartRollout.default_role();
    assert_eq!(needed, Action::SendCommand.default_role());

    let cedar = |a: &Authorizer, who: &Caller, action: Action, context: &Context| {
        let what = if action == Action::SendCommand { "send reboot to pet_feeder-03" } else { "start a rollout" };
        a.is_authorized(who, action, &floor, context).into_result(who, action, what)
    };
    // Each case decides as its name says, and a denial says why.
    assert!(operator.require(needed, "start a rollout").is_ok());
    assert!(viewer.require(needed, "start a rollout").is_err());
    assert!(cedar(&default, &operator, Action::StartRollout, &start).is_ok());
    let e = cedar(&default, &viewer, Action::StartRollout, &start).expect_err("a viewer may not start");
    assert!(e.to_string().contains("operator"), "{e}");
    assert!(cedar(&examples, &senior, Action::SendCommand, &reboot).is_ok());
    let e = cedar(&examples, &operator, Action::SendCommand, &reboot).expect_err("only a senior operator reboots");
    assert!(e.to_string().contains("reboot-needs-senior-operator"), "{e}");

    eprintln!("decision: {} before the measurements", ota_benches::machine());
    let mut g = c.benchmark_group("decision");
    for (case, who) in [("allowed", &operator), ("denied", &viewer)] {
        g.bench_with_input(BenchmarkId::new("role_check", case), who, |b, who| {
            b.iter(|| black_box(who).require(needed, "start a rollout").is_ok())
        });
    }
    for (case, who) in [("allowed", &operator), ("denied", &viewer)] {
        g.bench_with_input(BenchmarkId::new("cedar_default", case), who, |b, who| {
            b.iter(|| cedar(&default, black_box(who), Action::StartRollout, &start).is_ok())
        });
    }
    for (case, who) in [("allowed", &senior), ("denied", &operator)] {
        g.bench_with_input(BenchmarkId::new("cedar_with_examples", case), who, |b, who| {
            b.iter(|| cedar(&examples, black_box(who), Action::SendCommand, &reboot).is_ok())
        });
    }
    g.finish();
    eprintln!("decision: {} after the measurements", ota_benches::machine());
}

fn start_authz(c: &mut Criterion) {
    let default = Authorizer::default();
    let examples = default_with_examples();
    let operator = Caller::new("ana", [Role::Operator]);
    let needed = Action::StartRollout.default_role();

    eprintln!("start_authz: {} before the measurements", ota_benches::machine());
    let mut g = c.benchmark_group("start_authz");
    g.sample_size(20);
    for n in [1_000usize, 10_000] {
        let devices: Vec<Resource> = (0..n)
            .map(|i| device(format!("pet_feeder-{i:07}"), if i % 2 == 0 { "factory-floor-1/line-7" } else { "lab" }))
            .collect();
        // 20:00 UTC, outside the freeze: every device is allowed (a start decides them all),
        // and the freeze's condition is still evaluated for each.
        let context = Context::at(utc(20, 0)).devices(n);
        let start = |a: &Authorizer| {
            devices
                .iter()
                .filter(|d| {
                    a.is_authorized(&operator, Action::StartRollout, d, &context)
                        .into_result(&operator, Action::StartRollout, "start a rollout")
                        .is_ok()
                })
                .count()
        };
        let roles =
            || devices.iter().filter(|_| black_box(&operator).require(needed, "start a rollout").is_ok()).count();
        assert_eq!(roles(), n);
        assert_eq!(start(&default), n);
        assert_eq!(start(&examples), n);
        // In the freeze, the same start is refused for every factory-floor-1 device.
        let frozen = Context::at(utc(10, 0)).devices(n);
        let refused = devices
            .iter()
            .filter(|d| !examples.is_authorized(&operator, Action::StartRollout, d, &frozen).allowed)
            .count();
        assert_eq!(refused, n / 2);

        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("role_check", n), |b| b.iter(roles));
        g.bench_function(BenchmarkId::new("cedar_default", n), |b| b.iter(|| start(&default)));
        g.bench_function(BenchmarkId::new("cedar_with_examples", n), |b| b.iter(|| start(&examples)));
    }
    g.finish();
    eprintln!("start_authz: {} after the measurements", ota_benches::machine());
}

criterion_group!(benches, decision, start_authz);
criterion_main!(benches);
