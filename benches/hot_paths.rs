//! Micro-benchmarks of hot paths, each against a baseline measured in the same run:
//!
//! - webhook request preparation (envelope serialisation + HMAC-SHA256 signature) against
//!   serialising the same event data alone;
//! - API key lookup digest against hashing nothing but the key bytes' length of zeros.
//!
//! Run: `cargo bench --bench hot_paths`. Every loop is bounded in count and time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;
use wagate_actors::domain::InstanceEvent;
use wagate_actors::webhook::{envelope, sign};

/// Iterations per measurement, and the time budget that stops a measurement early.
const ITERATIONS: u32 = 200_000;
const BUDGET: Duration = Duration::from_secs(5);

/// Nanoseconds per iteration of `f`, over at most ITERATIONS runs or BUDGET.
fn measure(mut f: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u32;
    while n < ITERATIONS && start.elapsed() < BUDGET {
        f();
        n += 1;
    }
    start.elapsed().as_nanos() as f64 / f64::from(n.max(1))
}

fn report(name: &str, figure: f64, baseline_name: &str, baseline: f64) {
    println!(
        "{name:<40} {figure:>10.0} ns/op   baseline {baseline_name:<28} {baseline:>10.0} ns/op   ratio {:.2}",
        figure / baseline
    );
}

fn main() {
    let event = InstanceEvent::new(
        "01a2b3c4d5e6f708",
        "message_received",
        json!({
            "messageId": "3EB0A51DF72BEEC3B1359A", "from": "79001234567@s.whatsapp.net",
            "body": "Привет! Как дела?", "type": "conversation", "timestamp": 1_672_531_200,
            "hasMedia": false, "pushName": "Иван",
        }),
    );
    let secret = "webhook-secret-key";
    let signed = measure(|| {
        let body = envelope(black_box(&event));
        black_box(sign(secret, &body));
    });
    let serialised = measure(|| {
        black_box(serde_json::to_vec(black_box(&event.data)).unwrap_or_default());
    });
    report(
        "webhook envelope + signature",
        signed,
        "serde_json of the data",
        serialised,
    );

    let key = "wag_pwn59lNcgRg_LZtDwB5ZjVfmfeQ6i9OuenKvVaxxwCg";
    let digest = measure(|| {
        black_box(wagate::crypto::api_key_hash(black_box(key)));
    });
    let copy = measure(|| {
        black_box(black_box(key).to_owned());
    });
    report("API key lookup digest", digest, "copying the key", copy);
}
