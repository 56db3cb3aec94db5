//! Streaming SHA-256 throughput of ota's verifier against `openssl dgst -sha256` (which uses
//! the CPU's SHA extensions: the practical limit here) and `sha256sum`, on the same 256 MB
//! file in the same run. Each side reads the file in chunks and hashes it; the best of three
//! runs counts. Prints MB/s and the ratios ours / openssl and ours / sha256sum.
//!
//! `cargo run --release -p ota-benches --bin sha256_throughput [MB]`

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use ota_core::integrity::Sha256Verifier;

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = None;
    let mut out = None;
    for _ in 0..runs {
        let start = Instant::now();
        let v = f();
        let took = start.elapsed();
        if best.is_none_or(|b| took < b) {
            best = Some(took);
        }
        out = Some(v);
    }
    (best.unwrap_or_default(), out.expect("at least one run"))
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // `openssl dgst` prints "SHA2-256(file)= hex", sha256sum prints "hex  file".
    text.split_whitespace()
        .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no digest in {cmd} output: {text}"))
        .to_string()
}

fn main() {
    let mb: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let len = mb * 1024 * 1024;
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let dir = std::env::temp_dir().join(format!("ota-sha-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("image.bin");
    std::fs::write(&path, &data).expect("write test file");
    drop(data);
    let p = path.to_str().expect("utf-8 path");

    let (ours, digest) = best_of(3, || {
        let mut f = std::fs::File::open(&path).expect("open");
        let mut buf = vec![0u8; 64 * 1024];
        let mut v = Sha256Verifier::new();
        loop {
            let n = f.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            v.update(&buf[..n]);
        }
        v.finish().0.to_hex()
    });
    let (openssl, d_openssl) = best_of(3, || tool("openssl", &["dgst", "-sha256", p]));
    let (sha256sum, d_sum) = best_of(3, || tool("sha256sum", &[p]));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(digest, d_openssl, "ota and openssl disagree");
    assert_eq!(digest, d_sum, "ota and sha256sum disagree");

    let rate = |d: Duration| mb as f64 / d.as_secs_f64();
    println!("sha256 over {mb} MB (best of 3, file in page cache)");
    println!("  ota Sha256Verifier  {:8.0} MB/s", rate(ours));
    println!("  openssl dgst        {:8.0} MB/s", rate(openssl));
    println!("  sha256sum           {:8.0} MB/s", rate(sha256sum));
    println!("  ratio ota/openssl   {:8.2}", rate(ours) / rate(openssl));
    println!("  machine: {}", ota_benches::machine());
    println!("  ratio ota/sha256sum {:8.2}", rate(ours) / rate(sha256sum));
}
