//! Hedging: a slow first attempt gets a second one after `hedge_after`;
//! the first answer wins and the loser is cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apimesh::layers::resilience::RetryLayer;
use http::Method;
use tokio::time::Instant;
use tower::Layer;

use crate::support::{self, DropFlag, Hits, Mock, call, policy, request};

#[tokio::test(start_paused = true)]
async fn the_hedge_wins_and_the_slow_attempt_is_cancelled() {
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let mock = Mock::new(move |s| {
        let flag = flag.clone();
        async move {
            if s.n == 0 {
                let _guard = DropFlag(flag);
                tokio::time::sleep(Duration::from_secs(10)).await;
                support::with_header(200, "x-attempt", "first")
            } else {
                support::with_header(200, "x-attempt", "hedge")
            }
        }
    });
    let svc = RetryLayer::new(policy(r#"retry = { hedge_after = "50ms" }"#).retry.unwrap())
        .layer(mock.clone());
    let start = Instant::now();
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.headers()["x-attempt"], "hedge");
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the slow attempt was dropped"
    );
    assert_eq!(mock.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_first_attempt_is_fast_or_not_retryable() {
    let mock = Mock::new(|_| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        support::status(200)
    });
    let svc = RetryLayer::new(policy(r#"retry = { hedge_after = "50ms" }"#).retry.unwrap())
        .layer(mock.clone());
    call(&svc, request(Method::GET)).await;
    assert_eq!(mock.count(), 1, "answered before the hedge delay");

    let mock = Mock::new(|_| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        support::status(200)
    });
    let svc = RetryLayer::new(policy(r#"retry = { hedge_after = "50ms" }"#).retry.unwrap())
        .layer(mock.clone());
    call(&svc, request(Method::POST)).await;
    assert_eq!(mock.count(), 1, "a POST is never hedged");
}

#[tokio::test]
async fn the_client_hedges_to_another_endpoint() {
    // Of both upstreams, the first request either sees hangs (and records
    // its cancellation); every other request is answered at once.
    let first = Hits::default();
    let cancelled = Arc::new(AtomicBool::new(false));
    let slow_one: Arc<std::sync::Mutex<Option<&'static str>>> = Arc::default();
    let hits = [Hits::default(), Hits::default()];
    let mut servers = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let (first, cancelled, slow_one, hits) = (
            first.clone(),
            cancelled.clone(),
            slow_one.clone(),
            hits[i].clone(),
        );
        servers.push(
            support::serve(axum::Router::new().fallback(move || {
                let (first, cancelled, slow_one) =
                    (first.clone(), cancelled.clone(), slow_one.clone());
                hits.hit();
                async move {
                    if first.hit() == 0 {
                        *slow_one.lock().unwrap() = Some(name);
                        let _guard = DropFlag(cancelled);
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    name
                }
            }))
            .await,
        );
    }
    let mesh = support::inventory_mesh(
        &[&servers[0], &servers[1]],
        r#"retry = { hedge_after = "50ms" }"#,
    )
    .await;
    let start = std::time::Instant::now();
    let resp = mesh.client("inventory").get("/").send().await.unwrap();
    let took = start.elapsed();
    assert_eq!(resp.status(), 200);
    let answered = resp.text().await.unwrap();
    let slow = slow_one
        .lock()
        .unwrap()
        .expect("one upstream got the first attempt");
    assert_ne!(
        answered, slow,
        "the hedge answered, from the other endpoint"
    );
    assert!(
        took >= Duration::from_millis(45) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    assert_eq!(hits[0].get() + hits[1].get(), 2);
    assert_eq!(hits[0].get(), 1, "one attempt to each endpoint");
    // The slow attempt's connection was dropped, and its handler with it.
    assert!(
        support::eventually(Duration::from_secs(5), || cancelled.load(Ordering::SeqCst)).await,
        "the slow attempt was not cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_does_not_beat_a_pending_one() {
    // The first attempt fails at 100 ms, after the hedge went out at 50 ms;
    // the hedge succeeds at 150 ms. Two attempts in all: the failure must
    // not end the race while the hedge can still win it.
    let mock = Mock::new(|s| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        support::status(if s.n == 0 { 503 } else { 200 })
    });
    let svc = RetryLayer::new(
        policy(r#"retry = { attempts = 2, hedge_after = "50ms" }"#)
            .retry
            .unwrap(),
    )
    .layer(mock.clone());
    let start = Instant::now();
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.status(), 200, "the hedge's answer");
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    assert_eq!(mock.count(), 2);
}

#[tokio::test]
async fn a_hedge_refused_by_the_bulkhead_leaves_the_first_attempt_running() {
    // One request at a time: the hedge finds the bulkhead full. The first
    // attempt, slow but fine, must still answer.
    let hits = Hits::default();
    let h = hits.clone();
    let up = support::serve(axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.hit();
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow but fine"
        }
    }))
    .await;
    let mesh = support::mesh(&format!(
        "[[services]]\nname = \"inventory\"\nmax_concurrent = 1\nendpoints = {}\n{}",
        support::endpoints(&[&up]),
        support::mesh_route("inventory", r#"retry = { hedge_after = "50ms" }"#),
    ))
    .await;
    let resp = mesh.client("inventory").get("/").send().await;
    let resp = resp.expect("the first attempt's answer, not the hedge's refusal");
    assert_eq!(resp.status(), 200);
    assert_eq!(hits.get(), 1);
}
