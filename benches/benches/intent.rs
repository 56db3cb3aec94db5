//! Intent parsing per prompt, over a mix of prompts an operator types.
//!
//! Reference in the same run: lower-casing and splitting the same prompts into words, the
//! least any parser must do; the ratio parse / reference is the engine's own cost.

use criterion::{Criterion, criterion_group, criterion_main};
use ota_core::demo;
use ota_core::intent::{Vocabulary, parse};

const PROMPTS: [&str; 10] = [
    "Update all vision_ai_face_detector devices to v2.0.0",
    "Upgrade the whole fleet to the latest firmware",
    "Roll back pet_feeder-03 to 1.0.0",
    "Which pet_feeder devices are still on 1.x?",
    "update the pet feeders and smart plugs to 3.0.0 except pet_feeder-02",
    "flash the face detecters to latest",
    "How is the rollout going?",
    "Stop it",
    "disable OTA for the beehive scales",
    "upgrade all devices still on 1.x to the latest version except smart_plug",
];

fn intent(c: &mut Criterion) {
    let vocab = Vocabulary { device_types: demo::device_types() };
    let mut g = c.benchmark_group("intent_per_prompt");
    g.bench_function("reference_lowercase_and_split", |b| {
        b.iter(|| {
            PROMPTS
                .iter()
                .map(|p| p.to_lowercase().split_whitespace().map(str::to_string).collect::<Vec<_>>().len())
                .sum::<usize>()
        })
    });
    g.bench_function("parse_10_prompts", |b| {
        b.iter(|| {
            for p in PROMPTS {
                std::hint::black_box(parse(p, &vocab));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, intent);
criterion_main!(benches);
