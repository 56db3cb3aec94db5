//! The chat assistant's cost on the intent path (no model): `Assistant::chat` per message,
//! against the reference in the same run, `FleetManager::plan_prompt` on the same prompt (the
//! planning every answer needs). The ratio chat / reference is the assistant's own cost:
//! sessions, the pending action and the reply.
//!
//! World: the in-memory backend with three demo types (every demo version published) and 100
//! devices each.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ota_core::agent::{Assistant, MemorySessions};
use ota_core::auth::{Caller, Role};
use ota_core::demo;
use ota_core::service::{FleetManager, Settings};

const PROMPTS: [&str; 4] = [
    "Update all pet_feeder devices to the latest firmware",
    "Roll back pet_feeder-03 to 1.0.0",
    "Which pet_feeder devices are still on 1.x?",
    "Update all beehive_scale devices to the latest firmware",
];

fn world(rt: &tokio::runtime::Runtime) -> Arc<FleetManager> {
    rt.block_on(async {
        let svc = FleetManager::new(ota_core::memory::backend(), Settings::default()).expect("valid settings");
        let admin = Caller::new("root", [Role::Admin]);
        demo::seed(&svc, &admin, &["pet_feeder", "smart_plug", "beehive_scale"], 100, demo::firmware_image)
            .await
            .unwrap();
        Arc::new(svc)
    })
}

fn chat(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let svc = world(&rt);
    let assistant = Assistant::new(svc.clone(), Arc::new(MemorySessions::default()));
    let op = Caller::new("olivia", [Role::Operator]);
    let mut g = c.benchmark_group("chat_per_4_messages");
    g.bench_function("reference_plan_prompt", |b| {
        b.iter(|| {
            rt.block_on(async {
                for p in PROMPTS {
                    std::hint::black_box(svc.plan_prompt(&op, p).await.unwrap());
                }
            })
        })
    });
    g.bench_function("assistant_chat", |b| {
        b.iter(|| {
            rt.block_on(async {
                for p in PROMPTS {
                    std::hint::black_box(assistant.chat(&op, Some("bench"), p).await.unwrap());
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, chat);
criterion_main!(benches);
