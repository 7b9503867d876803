//! Measures the memory a local rate limit holds for 1,000,000 distinct
//! keys, and after they go idle and are evicted.
//!
//! ```text
//! cargo run --release --example limiter_memory
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use apimesh::RateLimitLayer;
use tower::{Layer, Service};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the limit layer answers at once"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const KEYS: u32 = 1_000_000;
    // 1000/s with a burst of 1: a key is idle (indistinguishable from a
    // fresh one) 1 ms after its last request.
    let layer = RateLimitLayer::builder()
        .limit("1000/s", Some(1), &["header:x-client"])
        .build()?;
    let mut svc = layer.layer(tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    }));
    let before = rss_kib();
    for i in 0..KEYS {
        let req = http::Request::get("/")
            .header("x-client", i.to_string())
            .body(())?;
        let _ = ready(svc.call(req));
    }
    let full = rss_kib();
    let held = layer.keys();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let left = layer.evict_idle();
    let after = rss_kib();
    println!("keys held after {KEYS} distinct clients: {held}");
    println!("RSS before: {} MiB", before / 1024);
    println!(
        "RSS with {held} keys: {} MiB (+{} MiB, {} bytes per key)",
        full / 1024,
        (full - before) / 1024,
        (full - before) * 1024 / u64::from(held.max(1) as u32)
    );
    println!("keys left after evict_idle: {left}");
    println!("RSS after eviction: {} MiB", after / 1024);
    Ok(())
}
