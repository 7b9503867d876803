//! The circuit breaker: opening, failing fast without calling the service,
//! bounded half-open probes, closing, reopening for longer; rate mode; and
//! the mesh client's per-route breaker with `GET /mesh/circuits`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use apimesh::layers::resilience::{BreakerState, CircuitBreakerLayer, TimeoutLayer};
use http::Method;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::support::{self, Hits, Mock, call, policy, request};

fn breaker(block: &str) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(policy(block).circuit_breaker.expect("a breaker block"))
}

/// A mock answering with the status in `code`, each call first taking a
/// permit of `gate` (so a test can hold calls in flight).
fn switchable(code: Arc<AtomicU16>, gate: Arc<Semaphore>) -> Mock {
    Mock::new(move |_| {
        let (code, gate) = (code.clone(), gate.clone());
        async move {
            gate.acquire().await.unwrap().forget();
            support::status(code.load(Ordering::SeqCst))
        }
    })
}

fn open_gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_threshold_and_fails_fast_without_calling_the_service() {
    let mock = Mock::statuses(&[500]);
    let layer = breaker(r#"circuit_breaker = { failures = 3, open = "10s" }"#);
    let svc = layer.layer(mock.clone());
    for _ in 0..3 {
        assert_eq!(call(&svc, request(Method::GET)).await.status(), 500);
    }
    assert_eq!(layer.breaker().state(), BreakerState::Open);
    let start = Instant::now();
    for _ in 0..20 {
        let resp = call(&svc, request(Method::GET)).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "10");
    }
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "failing fast takes no time"
    );
    assert_eq!(mock.count(), 3, "the open breaker never called the service");
}

#[tokio::test(start_paused = true)]
async fn a_success_breaks_the_streak() {
    let code = Arc::new(AtomicU16::new(500));
    let mock = switchable(code.clone(), open_gate());
    let layer = breaker(r#"circuit_breaker = { failures = 3 }"#);
    let svc = layer.layer(mock.clone());
    for round in 0..5 {
        code.store(500, Ordering::SeqCst);
        call(&svc, request(Method::GET)).await;
        call(&svc, request(Method::GET)).await;
        code.store(200, Ordering::SeqCst);
        call(&svc, request(Method::GET)).await;
        assert_eq!(
            layer.breaker().state(),
            BreakerState::Closed,
            "round {round}"
        );
    }
    assert_eq!(mock.count(), 15);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_only_the_bounded_probes_then_closes_on_success() {
    let code = Arc::new(AtomicU16::new(500));
    let gate = open_gate();
    let mock = switchable(code.clone(), gate.clone());
    let layer = breaker(r#"circuit_breaker = { failures = 1, open = "1s", half_open_probes = 2 }"#);
    let svc = layer.layer(mock.clone());
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 500);
    assert_eq!(layer.breaker().state(), BreakerState::Open);

    // Still open just before the second is over.
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 503);
    assert_eq!(mock.count(), 1);
    tokio::time::advance(Duration::from_millis(1)).await;

    // Half-open: the upstream has recovered but holds its answers.
    code.store(200, Ordering::SeqCst);
    gate.forget_permits(Semaphore::MAX_PERMITS);
    let probes: Vec<_> = (0..2)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { call(&svc, request(Method::GET)).await.status() })
        })
        .collect();
    while mock.count() < 3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(layer.breaker().state(), BreakerState::HalfOpen);
    // A third call while both probes are out: refused without a call.
    for _ in 0..5 {
        assert_eq!(call(&svc, request(Method::GET)).await.status(), 503);
    }
    assert_eq!(mock.count(), 3);

    gate.add_permits(2);
    for p in probes {
        assert_eq!(p.await.unwrap(), 200);
    }
    assert_eq!(layer.breaker().state(), BreakerState::Closed);
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 200);
    assert_eq!(mock.count(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer_each_time_up_to_max_open() {
    let mock = Mock::statuses(&[500]);
    let layer = breaker(r#"circuit_breaker = { failures = 1, open = "1s", max_open = "5s" }"#);
    let svc = layer.layer(mock.clone());
    call(&svc, request(Method::GET)).await;
    let mut calls = 1;
    for open in [1u64, 2, 4, 5, 5] {
        assert_eq!(layer.breaker().state(), BreakerState::Open);
        assert_eq!(
            layer.breaker().status().open_for_seconds,
            Some(open as f64),
            "opening {calls}"
        );
        // Refused until the opening is over, without calling the service.
        tokio::time::advance(Duration::from_secs(open) - Duration::from_millis(1)).await;
        assert_eq!(call(&svc, request(Method::GET)).await.status(), 503);
        assert_eq!(mock.count(), calls);
        tokio::time::advance(Duration::from_millis(1)).await;
        // The probe fails: open again, for longer.
        assert_eq!(call(&svc, request(Method::GET)).await.status(), 500);
        calls += 1;
        assert_eq!(mock.count(), calls);
    }
    assert_eq!(layer.breaker().status().openings, 6);
}

#[tokio::test(start_paused = true)]
async fn rate_mode_waits_for_min_calls() {
    let mock = Mock::statuses(&[500]);
    let layer = breaker(
        r#"circuit_breaker = { mode = "rate", failure_rate = 50, window = 10, min_calls = 6 }"#,
    );
    let svc = layer.layer(mock.clone());
    for i in 0..5 {
        assert_eq!(call(&svc, request(Method::GET)).await.status(), 500);
        assert_eq!(
            layer.breaker().state(),
            BreakerState::Closed,
            "{} failures, fewer than min_calls",
            i + 1
        );
    }
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 500);
    assert_eq!(layer.breaker().state(), BreakerState::Open, "6 of 6 failed");
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 503);
    assert_eq!(mock.count(), 6);
}

#[tokio::test(start_paused = true)]
async fn rate_mode_judges_the_last_window_of_calls() {
    let code = Arc::new(AtomicU16::new(200));
    let mock = switchable(code.clone(), open_gate());
    let layer = breaker(
        r#"circuit_breaker = { mode = "rate", failure_rate = 50, window = 10, min_calls = 4 }"#,
    );
    let svc = layer.layer(mock.clone());
    // One failure in three: below the rate in every window.
    for n in 0..30 {
        code.store(if n % 3 == 2 { 500 } else { 200 }, Ordering::SeqCst);
        call(&svc, request(Method::GET)).await;
        assert_eq!(layer.breaker().state(), BreakerState::Closed, "call {n}");
    }
    // Ten successes, then failures: the fifth makes half of the last ten.
    code.store(200, Ordering::SeqCst);
    for _ in 0..10 {
        call(&svc, request(Method::GET)).await;
    }
    code.store(500, Ordering::SeqCst);
    for n in 1..=5 {
        assert_eq!(
            layer.breaker().state(),
            BreakerState::Closed,
            "{n} failures"
        );
        call(&svc, request(Method::GET)).await;
    }
    assert_eq!(
        layer.breaker().state(),
        BreakerState::Open,
        "5 of the last 10 failed"
    );
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 503);
    assert_eq!(mock.count(), 45);
}

#[tokio::test]
async fn the_client_breaker_opens_and_shows_in_mesh_circuits() {
    let hits = Hits::default();
    let up = support::answering("inventory", 500, hits.clone()).await;
    let mesh = support::inventory_mesh(
        &[&up],
        r#"circuit_breaker = { failures = 3, open = "10s" }"#,
    )
    .await;
    let client = mesh.client("inventory");
    for _ in 0..3 {
        let resp = client.get("/stock").send().await.unwrap();
        assert_eq!(resp.status(), 500, "the upstream's own answer");
    }
    for _ in 0..10 {
        let err = client.get("/stock").send().await.unwrap_err();
        assert_eq!(err.status(), 503, "{err:?}");
    }
    assert_eq!(
        hits.get(),
        3,
        "the open breaker kept requests from the upstream"
    );

    // The admin API shows the breaker open.
    let resp = mesh
        .admin()
        .oneshot(
            http::Request::get("/mesh/circuits")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let circuits: serde_json::Value =
        serde_json::from_slice(&support::body_of(resp).await).unwrap();
    let breakers = circuits["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 1, "{circuits}");
    assert_eq!(breakers[0]["route"], "inventory-calls");
    assert_eq!(breakers[0]["service"], "inventory");
    assert_eq!(breakers[0]["status"]["state"], "open");
    let left = breakers[0]["status"]["open_for_seconds"].as_f64().unwrap();
    assert!(left > 5.0 && left <= 10.0, "{left}");
    let direct = mesh.outbound().circuits();
    assert_eq!(direct["breakers"][0]["status"]["state"], "open");
    assert_eq!(direct["breakers"][0]["status"]["openings"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_place() {
    let code = Arc::new(AtomicU16::new(500));
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, s) = (code.clone(), slow.clone());
    let mock = Mock::new(move |_| {
        let (c, s) = (c.clone(), s.clone());
        async move {
            if s.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            support::status(c.load(Ordering::SeqCst))
        }
    });
    let layer = breaker(r#"circuit_breaker = { failures = 1, open = "1s", half_open_probes = 1 }"#);
    // The caller gives up after 100 ms: a slow call is cancelled.
    let svc = TimeoutLayer::new(Duration::from_millis(100)).layer(layer.layer(mock.clone()));
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 500);
    tokio::time::advance(Duration::from_secs(1)).await;

    // The probe hangs and is cancelled by the timeout.
    slow.store(true, Ordering::SeqCst);
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 504);
    assert_eq!(mock.count(), 2);

    // The upstream is back: a cancelled probe is no verdict, so the next
    // call probes again (and closes the breaker) instead of being refused
    // for ever.
    slow.store(false, Ordering::SeqCst);
    code.store(200, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 200);
    assert_eq!(layer.breaker().state(), BreakerState::Closed);
    assert_eq!(mock.count(), 3);
}
