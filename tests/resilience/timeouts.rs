//! Timeouts: the total deadline bounds the retries (504 at the deadline,
//! not later), the per-try timeout moves on to another attempt.

use std::time::Duration;

use apimesh::layers::resilience::{RetryLayer, TimeoutLayer};
use http::Method;
use tokio::time::Instant;
use tower::Layer;

use crate::support::{self, Hits, Mock, call, grpc_request, policy, request};

#[tokio::test(start_paused = true)]
async fn retries_end_with_504_at_the_total_deadline() {
    // Each attempt takes 300 ms and fails; ten attempts would take > 3 s.
    let mock = Mock::new(|_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        support::status(503)
    });
    let retry = RetryLayer::new(
        policy(
            r#"retry = { attempts = 10, backoff = "1ms", max_backoff = "1ms", budget_ratio = 10 }"#,
        )
        .retry
        .unwrap(),
    );
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(retry.layer(mock.clone()));
    let start = Instant::now();
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(start.elapsed(), Duration::from_secs(1), "at the deadline");
    let calls = mock.calls();
    assert!(
        calls.len() >= 3,
        "retried while time was left: {}",
        calls.len()
    );
    assert!(calls.iter().all(|c| c.at - start < Duration::from_secs(1)));
    // Nothing more happens after the deadline: the attempt in flight was cancelled.
    let before = mock.count();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(mock.count(), before);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_timeout_layer_returns_the_answer_at_once() {
    // The retry layer learns the timeout layer's deadline from the call
    // context: it does not wait 5 s for a retry it could never finish.
    let mock = Mock::new(|_| async {
        let mut r = support::status(503);
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, "5".parse().unwrap());
        r
    });
    let retry = RetryLayer::new(policy("retry = {}").retry.unwrap());
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(retry.layer(mock.clone()));
    let start = Instant::now();
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(mock.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_timeout_shorter_than_the_layer_wins() {
    let mock = Mock::new(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        support::grpc_status(0)
    });
    let svc = TimeoutLayer::new(Duration::from_secs(2)).layer(mock);
    let mut req = grpc_request();
    req.headers_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let start = Instant::now();
    let resp = call(&svc, req).await;
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(resp.status(), 200, "a trailers-only gRPC status");
    assert_eq!(resp.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
}

#[tokio::test]
async fn the_client_answers_504_at_the_route_total_timeout() {
    let hits = Hits::default();
    let h = hits.clone();
    let slow = support::serve(axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.hit();
            tokio::time::sleep(Duration::from_secs(10)).await;
            "late"
        }
    }))
    .await;
    let mesh = support::inventory_mesh(&[&slow], "retry = {}\ntimeout = { total = \"1s\" }").await;
    let start = std::time::Instant::now();
    let err = mesh.client("inventory").get("/").send().await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.status(), 504, "{err:?}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "answered after {took:?}, not at the 1 s deadline"
    );
}

#[tokio::test]
async fn a_per_try_timeout_moves_on_to_another_attempt() {
    // The first request the upstream sees hangs; later ones answer at once.
    let hits = Hits::default();
    let h = hits.clone();
    let up = support::serve(axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            if h.hit() == 0 {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            "ok"
        }
    }))
    .await;
    let mesh = support::inventory_mesh(
        &[&up],
        "retry = {}\ntimeout = { total = \"5s\", per_try = \"300ms\" }",
    )
    .await;
    let start = std::time::Instant::now();
    let resp = mesh.client("inventory").get("/").send().await.unwrap();
    let took = start.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(hits.get(), 2);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
}

/// A per-try timeout inside a retry layer inside a total timeout: every
/// attempt, the first one too (which the retry layer starts in its own
/// `call`), runs with the earlier of the two deadlines.
#[tokio::test(start_paused = true)]
async fn every_attempt_sees_the_total_deadline_under_a_per_try_timeout() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let upstream = tower::service_fn(move |_req: http::Request<_>| {
        let record = record.clone();
        async move {
            let deadline = apimesh::CallContext::current().and_then(|c| c.deadline);
            let n = {
                let mut seen = record.lock().unwrap();
                seen.push(deadline);
                seen.len()
            };
            let code = if n == 1 { 503 } else { 200 };
            Ok::<_, std::convert::Infallible>(support::status(code))
        }
    });
    let retry = RetryLayer::new(
        policy(r#"retry = { attempts = 2, backoff = "1ms", max_backoff = "1ms" }"#)
            .retry
            .unwrap(),
    );
    let per_try = TimeoutLayer::new(Duration::from_secs(5));
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(retry.layer(per_try.layer(upstream)));
    let start = Instant::now();
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for deadline in seen {
        assert_eq!(deadline, Some(start + Duration::from_secs(1)));
    }
}
