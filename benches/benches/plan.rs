//! Planning "the whole fleet to latest" over an in-memory registry of 1,000,000 devices.
//!
//! Reference in the same run: listing the same million devices from the registry, which
//! every plan must do; the ratio plan / list is what planning itself costs on top.

use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use ota_core::auth::{Caller, Role};
use ota_core::device::DeviceQuery;
use ota_core::ports::DeviceRegistry;

fn plan_million(c: &mut Criterion) {
    let (svc, registry) = ota_benches::fleet(1_000_000);
    let op = Caller::new("bench", [Role::Operator]);
    // Warm the plan's integrity cache, as a long-running server has it after the first plan.
    let first = block_on(svc.plan_prompt(&op, "Upgrade the whole fleet to the latest firmware")).expect("plan");
    assert_eq!(first.deployments.len(), 25);
    // Cross-check: every enabled device not already on its type's latest is in the plan.
    let all = block_on(registry.list(&DeviceQuery::default())).expect("list");
    let expected = all
        .iter()
        .filter(|d| d.device_type.as_str() != ota_core::demo::DISABLED_TYPE)
        .filter(|d| d.firmware_version.as_ref() != ota_core::demo::versions(&d.device_type).last())
        .count();
    assert_eq!(first.device_count(), expected);
    drop(all);

    eprintln!("plan_whole_fleet_1m: {} before the measurements", ota_benches::machine());
    let mut g = c.benchmark_group("plan_whole_fleet_1m");
    g.sample_size(10);
    g.bench_function("reference_list_1m_devices", |b| {
        b.iter(|| block_on(registry.list(&DeviceQuery::default())).expect("list").len())
    });
    g.bench_function("plan_prompt_whole_fleet_latest", |b| {
        b.iter(|| {
            block_on(svc.plan_prompt(&op, "Upgrade the whole fleet to the latest firmware"))
                .expect("plan")
                .device_count()
        })
    });
    g.finish();
    eprintln!("plan_whole_fleet_1m: {} after the measurements", ota_benches::machine());
}

criterion_group!(benches, plan_million);
criterion_main!(benches);
