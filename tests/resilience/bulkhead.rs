//! Bulkheads: beyond the cap, requests are refused at once (503), never
//! queued; a place frees when a request ends.

use std::sync::Arc;
use std::time::Duration;

use apimesh::layers::resilience::BulkheadLayer;
use http::Method;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::Layer;

use crate::support::{self, Hits, Mock, call, request};

#[tokio::test(start_paused = true)]
async fn the_third_request_is_refused_at_once_while_two_are_in_flight() {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let mock = Mock::new(move |_| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
            support::status(200)
        }
    });
    let svc = BulkheadLayer::new(2).layer(mock.clone());
    let held: Vec<_> = (0..2)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { call(&svc, request(Method::GET)).await.status() })
        })
        .collect();
    while mock.count() < 2 {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(start.elapsed(), Duration::ZERO, "refused, not queued");
    assert_eq!(
        mock.count(),
        2,
        "the refused request never reached the service"
    );

    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    // Places are free again.
    gate.add_permits(2);
    let (a, b) = tokio::join!(
        call(&svc, request(Method::GET)),
        call(&svc, request(Method::GET))
    );
    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 200);
    assert_eq!(mock.count(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_frees_its_place() {
    let mock = Mock::new(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        support::status(200)
    });
    let svc = BulkheadLayer::new(1).layer(mock.clone());
    let first = {
        let svc = svc.clone();
        tokio::spawn(async move { call(&svc, request(Method::GET)).await })
    };
    while mock.count() < 1 {
        tokio::task::yield_now().await;
    }
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 503);
    first.abort();
    let _ = first.await;
    let second = tokio::time::timeout(Duration::from_secs(120), call(&svc, request(Method::GET)))
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
}

#[tokio::test]
async fn the_client_refuses_beyond_max_concurrent() {
    let hits = Hits::default();
    let release = Arc::new(tokio::sync::Notify::new());
    let (h, r) = (hits.clone(), release.clone());
    let up = support::serve(axum::Router::new().fallback(move || {
        let (h, r) = (h.clone(), r.clone());
        async move {
            if h.hit() == 0 {
                r.notified().await;
            }
            "ok"
        }
    }))
    .await;
    let mesh = support::mesh(&format!(
        "[[services]]\nname = \"inventory\"\nmax_concurrent = 1\nendpoints = {}\n",
        support::endpoints(&[&up]),
    ))
    .await;
    let client = mesh.client("inventory");
    let held = {
        let client = client.clone();
        tokio::spawn(async move { client.get("/").send().await.unwrap().status() })
    };
    assert!(support::eventually(Duration::from_secs(5), || hits.get() == 1).await);

    let start = std::time::Instant::now();
    let err = client.get("/").send().await.unwrap_err();
    assert_eq!(err.status(), 503, "{err:?}");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
    assert_eq!(hits.get(), 1);
    let circuits = mesh.outbound().circuits();
    assert_eq!(circuits["bulkheads"][0]["service"], "inventory");
    assert_eq!(circuits["bulkheads"][0]["in_flight"], 1);

    release.notify_one();
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(client.get("/").send().await.unwrap().status(), 200);
    assert_eq!(hits.get(), 2);
}
