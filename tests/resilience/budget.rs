//! The retry budget under a failure storm: retries stay a bounded share of
//! the load (virtual time).

use std::time::Duration;

use apimesh::layers::resilience::RetryLayer;
use http::Method;
use tower::Layer;

use crate::support::{Mock, call, policy, request};

/// Sends `rate` requests per second for `seconds` (virtual) through a
/// default retry policy to a service that always answers 503; returns
/// (requests, attempts).
async fn storm(rate: u64, seconds: u64) -> (usize, usize) {
    let mock = Mock::statuses(&[503]);
    let layer = RetryLayer::new(policy("retry = {}").retry.unwrap());
    let svc = layer.layer(mock.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    // Stop 100 ms short of the window's end: every retry (at most 25 + 50
    // ms of backoff later) still falls in the same 10 s window.
    while start.elapsed() < Duration::from_secs(seconds) - Duration::from_millis(100) {
        tick.tick().await;
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            call(&svc, request(Method::GET)).await.status()
        }));
    }
    let requests = tasks.len();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    let status = layer.budget().status();
    assert_eq!(status.requests as usize, requests);
    assert_eq!(status.retries as usize, mock.count() - requests);
    (requests, mock.count())
}

#[tokio::test(start_paused = true)]
async fn retries_stay_within_the_budget_under_total_failure() {
    // Defaults: 3 attempts, a budget of 20% of requests + 10 per second.
    for rate in [20u64, 100] {
        let (requests, attempts) = storm(rate, 10).await;
        let ratio = attempts as f64 / requests as f64;
        // 10/s over the 10 s window, shared by the requests sent in it.
        let bound = 1.0 + 0.2 + (10.0 * 10.0) / requests as f64;
        println!(
            "budget: {rate} req/s for 10 s of total failure: {requests} requests, \
             {attempts} attempts, ratio {ratio:.3} (bound {bound:.3}; without a budget 3.0)"
        );
        assert!(
            ratio <= bound + 1e-9,
            "{attempts} attempts for {requests} requests at {rate}/s: {ratio:.3} > {bound:.3}"
        );
        // The budget is spent, not hoarded: close to the bound.
        assert!(ratio > bound - 0.05, "{ratio:.3} far below {bound:.3}");
    }
}
