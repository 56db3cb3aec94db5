//! What the signature check adds to an update, on this machine: one ECDSA P-256 verification
//! (`KeyRing::verify`, the device's code path) against the SHA-256 of the same image (the
//! streaming `Sha256Verifier` in 4 KiB chunks, as the agent feeds it from flash writes), in
//! the same run, for a 1.6 MB and an 8 MB image. Prints the time of each, and the ratio
//! verify / sha256 per image: the share of the device's integrity work that signing adds.
//!
//! Each figure is the median of `RUNS` timed runs after a warm-up. The load average is
//! printed first: a figure taken on a busy machine is not a result.
//!
//! `cargo run --release -p ota-benches --bin signature_cost`

use std::hint::black_box;
use std::time::{Duration, Instant};

use ota_core::catalog::Sha256Digest;
use ota_core::integrity::Sha256Verifier;
use ota_core::signing::{KeyRing, LocalSigningKey};

const RUNS: usize = 31;
const CHUNK: usize = 4096;

fn median(mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn image(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> Sha256Digest {
    let mut v = Sha256Verifier::new();
    for chunk in data.chunks(CHUNK) {
        v.update(chunk);
    }
    v.finish().0
}

fn main() {
    println!("signature_cost: {}", ota_benches::machine());
    let key = LocalSigningKey::from_bytes(&[7u8; 32]).expect("a valid scalar");
    let ring = KeyRing::new(vec![key.trusted_key()], Vec::new());
    println!("{:<10} {:>12} {:>14} {:>16}", "image", "sha256", "ecdsa verify", "verify / sha256");
    for (name, len) in [("1.6 MB", 1_600_000usize), ("8 MB", 8 * 1024 * 1024)] {
        let data = image(len);
        let digest = sha256(&data);
        let signature = key.sign_digest(&digest).expect("sign");
        // The check must pass, and fail for another image, or the figure means nothing.
        assert!(ring.verify(&digest, &signature).is_ok(), "the signature must verify");
        let mut other = data.clone();
        other[len / 2] ^= 1;
        assert!(ring.verify(&sha256(&other), &signature).is_err(), "a changed image must fail");

        let hash = median(|| {
            black_box(sha256(black_box(&data)));
        });
        let verify = median(|| {
            black_box(ring.verify(black_box(&digest), black_box(&signature)).expect("verifies"));
        });
        println!(
            "{name:<10} {:>9.2} ms {:>11.3} ms {:>16.4}",
            hash.as_secs_f64() * 1e3,
            verify.as_secs_f64() * 1e3,
            verify.as_secs_f64() / hash.as_secs_f64()
        );
    }
    println!("after: {}", ota_benches::machine());
}
