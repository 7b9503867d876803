//! Retries: which requests and answers are retried, how many times, how
//! long between attempts (virtual time), replayed bodies, server pushback,
//! and, through the mesh client, a retry on another endpoint.

use std::sync::Arc;
use std::time::Duration;

use apimesh::layers::resilience::RetryLayer;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use tokio::time::Instant;
use tower::Layer;

use crate::support::{
    self, Chunks, Hits, Mock, call, grpc_request, grpc_status, policy, request, with_header,
};

fn retry(block: &str) -> RetryLayer {
    RetryLayer::new(policy(block).retry.expect("a retry block"))
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_get_is_retried_on_503_until_it_succeeds() {
    let mock = Mock::statuses(&[503, 503, 200]);
    let svc = retry("retry = {}").layer(mock.clone());
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_retried_unless_it_carries_an_idempotency_key() {
    let mock = Mock::statuses(&[503, 200]);
    let svc = retry("retry = {}").layer(mock.clone());
    let resp = call(&svc, request(Method::POST)).await;
    assert_eq!(resp.status(), 503, "the upstream's answer, not retried");
    assert_eq!(mock.count(), 1);

    let mock = Mock::statuses(&[503, 200]);
    let svc = retry("retry = {}").layer(mock.clone());
    let mut req = request(Method::POST);
    req.headers_mut()
        .insert("idempotency-key", "order-42".parse().unwrap());
    let resp = call(&svc, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_are_respected() {
    for attempts in [1usize, 2, 4] {
        let mock = Mock::statuses(&[503]);
        let svc = retry(&format!("retry = {{ attempts = {attempts} }}")).layer(mock.clone());
        let resp = call(&svc, request(Method::GET)).await;
        assert_eq!(resp.status(), 503, "the last answer once attempts are out");
        assert_eq!(mock.count(), attempts);
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_between_attempts_stays_within_the_jitter_cap() {
    let mock = Mock::statuses(&[503]);
    // A generous budget: this test is about the waits, not the budget.
    let svc = retry(
        r#"retry = { attempts = 5, backoff = "100ms", max_backoff = "300ms", budget_ratio = 10 }"#,
    )
    .layer(mock.clone());
    for _ in 0..40 {
        let before = mock.count();
        call(&svc, request(Method::GET)).await;
        assert_eq!(mock.count() - before, 5);
    }
    let calls = mock.calls();
    let mut gaps: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    for attempt in calls.chunks(5) {
        for (retry, pair) in attempt.windows(2).enumerate() {
            gaps[retry].push(pair[1].at - pair[0].at);
        }
    }
    for (retry, gaps) in gaps.iter().enumerate() {
        // Full jitter: uniform in [0, min(max_backoff, backoff × 2^retry)].
        let cap = Duration::from_millis(100 * (1 << retry)).min(Duration::from_millis(300));
        let max = gaps.iter().max().unwrap();
        assert!(
            *max <= cap,
            "retry {}: a wait of {max:?} > {cap:?}",
            retry + 1
        );
        assert!(
            gaps.iter().any(|g| *g < cap / 2) && gaps.iter().any(|g| *g > cap / 2),
            "retry {}: waits not spread over [0, {cap:?}]: {gaps:?}",
            retry + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn status_429_is_retried_only_when_listed() {
    let mock = Mock::statuses(&[429, 200]);
    let svc = retry("retry = {}").layer(mock.clone());
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 429);
    assert_eq!(mock.count(), 1);

    let mock = Mock::statuses(&[429, 200]);
    let svc = retry("retry = { statuses = [429, 503] }").layer(mock.clone());
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 200);
    assert_eq!(mock.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn grpc_retries_carry_grpc_previous_rpc_attempts() {
    // UNAVAILABLE twice, then OK: gRPC methods are POST, so the policy
    // lists POST for this service.
    let mock = Mock::new(|s| async move { grpc_status(if s.n < 2 { 14 } else { 0 }) });
    let svc = retry(r#"retry = { methods = ["POST"] }"#).layer(mock.clone());
    let resp = call(&svc, grpc_request()).await;
    assert_eq!(resp.headers()["grpc-status"], "0");
    let previous: Vec<Option<String>> = mock
        .calls()
        .iter()
        .map(|s| {
            s.headers
                .get("grpc-previous-rpc-attempts")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(previous, [None, Some("1".into()), Some("2".into())]);

    // Not on plain HTTP retries.
    let mock = Mock::statuses(&[503, 200]);
    let svc = retry("retry = {}").layer(mock.clone());
    call(&svc, request(Method::GET)).await;
    assert!(
        mock.calls()
            .iter()
            .all(|s| !s.headers.contains_key("grpc-previous-rpc-attempts"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_within_replay_limit_is_replayed_intact() {
    let mock = Mock::statuses(&[503, 503, 200]);
    let svc = retry(r#"retry = { replay_limit = "4KiB" }"#).layer(mock.clone());
    // 3000 bytes in 7 chunks, no size hint: buffered as it streams.
    let (body, sent) = Chunks::new(3000, 450);
    let req = Request::put("/").body(body).unwrap();
    assert_eq!(call(&svc, req).await.status(), 200);
    let calls = mock.calls();
    assert_eq!(calls.len(), 3);
    for c in &calls {
        assert_eq!(c.method, Method::PUT);
        assert_eq!(c.body, sent, "attempt {} got another body", c.n);
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_over_replay_limit_is_sent_once_not_retried() {
    // Streamed (no size hint): the limit is found while buffering.
    let mock = Mock::statuses(&[503, 200]);
    let svc = retry(r#"retry = { replay_limit = "1KiB" }"#).layer(mock.clone());
    let (body, sent) = Chunks::new(5000, 300);
    let resp = call(&svc, Request::put("/").body(body).unwrap()).await;
    assert_eq!(
        resp.status(),
        503,
        "not retried: the body cannot be replayed"
    );
    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body, sent, "the one attempt got the whole body");

    // Known size over the limit: not even buffered.
    let mock = Mock::statuses(&[503, 200]);
    let svc = retry(r#"retry = { replay_limit = "1KiB" }"#).layer(mock.clone());
    let big = Bytes::from(vec![7u8; 2048]);
    let resp = call(
        &svc,
        Request::put("/").body(Full::new(big.clone())).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(mock.count(), 1);
    assert_eq!(mock.calls()[0].body, big);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let mock = Mock::new(|s| async move {
        if s.n == 0 {
            with_header(503, "retry-after", "2")
        } else {
            support::status(200)
        }
    });
    let svc = retry("retry = {}").layer(mock.clone());
    let start = Instant::now();
    assert_eq!(call(&svc, request(Method::GET)).await.status(), 200);
    let calls = mock.calls();
    assert_eq!(calls.len(), 2);
    // The server's two seconds, not the policy's 25 ms backoff.
    assert_eq!(calls[1].at - calls[0].at, Duration::from_secs(2));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn grpc_pushback_is_honoured_and_a_negative_one_stops_retries() {
    let unavailable = |pushback: &'static str| {
        move |s: Arc<support::Seen>| async move {
            if s.n == 0 {
                let mut r = grpc_status(14);
                r.headers_mut()
                    .insert("grpc-retry-pushback-ms", pushback.parse().unwrap());
                r
            } else {
                grpc_status(0)
            }
        }
    };
    let mock = Mock::new(unavailable("300"));
    let svc = retry(r#"retry = { methods = ["POST"] }"#).layer(mock.clone());
    assert_eq!(
        call(&svc, grpc_request()).await.headers()["grpc-status"],
        "0"
    );
    let calls = mock.calls();
    assert_eq!(calls[1].at - calls[0].at, Duration::from_millis(300));

    let mock = Mock::new(unavailable("-1"));
    let svc = retry(r#"retry = { methods = ["POST"] }"#).layer(mock.clone());
    let resp = call(&svc, grpc_request()).await;
    assert_eq!(resp.headers()["grpc-status"], "14", "the server said no");
    assert_eq!(mock.count(), 1);
}

// ---- Through the mesh client ----------------------------------------------------

/// An upstream that answers 503 when the request's `x-fail` names it, else
/// 200 with its name.
async fn picky(name: &'static str, hits: Hits) -> support::Server {
    support::serve(
        axum::Router::new().fallback(move |headers: http::HeaderMap| {
            let hits = hits.clone();
            async move {
                hits.hit();
                let fail = headers.get("x-fail").is_some_and(|v| v == name);
                let code = if fail { 503 } else { 200 };
                (http::StatusCode::from_u16(code).unwrap(), name)
            }
        }),
    )
    .await
}

#[tokio::test]
async fn a_client_retry_goes_to_the_other_endpoint() {
    let (a_hits, b_hits) = (Hits::default(), Hits::default());
    let a = picky("a", a_hits.clone()).await;
    let b = picky("b", b_hits.clone()).await;
    // `a` is the primary (priority 0), so every first attempt goes there,
    // whatever the balancer's latency estimates; it is never ejected.
    // Two attempts only: a retry that went back to `a` would fail.
    let mesh = support::mesh(&format!(
        "[[services]]\nname = \"inventory\"\noutlier = {{ consecutive_failures = 1000 }}\n\
         endpoints = [{{ address = \"{}\" }}, {{ address = \"{}\", priority = 1 }}]\n{}",
        a.addr,
        b.addr,
        support::mesh_route("inventory", "retry = { attempts = 2 }"),
    ))
    .await;
    let client = mesh.client("inventory");
    for _ in 0..20 {
        let resp = client
            .get("/stock")
            .header("x-fail", "a")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "b");
    }
    // Every request reached `a` first and was retried on `b`, never on
    // `a` again.
    assert_eq!(a_hits.get(), 20);
    assert_eq!(b_hits.get(), 20);
}

#[tokio::test]
async fn a_client_does_not_wait_for_a_retry_after_beyond_its_deadline() {
    let hits = Hits::default();
    let h = hits.clone();
    let up = support::serve(axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.hit();
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "30")],
                "busy",
            )
        }
    }))
    .await;
    let mesh = support::inventory_mesh(&[&up], "retry = {}\ntimeout = { total = \"5s\" }").await;
    let start = std::time::Instant::now();
    let resp = mesh.client("inventory").get("/").send().await.unwrap();
    assert_eq!(resp.status(), 503, "the upstream's 503, returned at once");
    assert_eq!(resp.headers()["retry-after"], "30");
    assert_eq!(hits.get(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_client_honours_a_retry_after_within_its_deadline() {
    let hits = Hits::default();
    let h = hits.clone();
    let up = support::serve(axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            if h.hit() == 0 {
                (
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "1")],
                )
                    .into_response()
            } else {
                "ok".into_response()
            }
        }
    }))
    .await;
    let mesh = support::inventory_mesh(&[&up], "retry = {}\ntimeout = { total = \"5s\" }").await;
    let start = std::time::Instant::now();
    let resp = mesh.client("inventory").get("/").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(hits.get(), 2);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(4),
        "the retry came after {took:?}, not the server's one second"
    );
}

/// An upstream that records every request body and answers 503 to the
/// first `failures` requests, then 200.
async fn recording(failures: usize) -> (support::Server, Arc<std::sync::Mutex<Vec<Bytes>>>) {
    let bodies: Arc<std::sync::Mutex<Vec<Bytes>>> = Arc::default();
    let b = bodies.clone();
    let up = support::serve(axum::Router::new().fallback(move |body: Bytes| {
        let b = b.clone();
        async move {
            let n = {
                let mut b = b.lock().unwrap();
                b.push(body);
                b.len()
            };
            if n <= failures {
                http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                http::StatusCode::OK
            }
        }
    }))
    .await;
    (up, bodies)
}

async fn client_for(up: &support::Server, retry: &str) -> apimesh::Mesh {
    support::mesh(&format!(
        "[[services]]\nname = \"inventory\"\noutlier = {{ consecutive_failures = 1000 }}\n\
         endpoints = {}\n{}",
        support::endpoints(&[up]),
        support::mesh_route("inventory", retry),
    ))
    .await
}

#[tokio::test]
async fn the_client_retries_a_post_only_with_an_idempotency_key() {
    let (up, bodies) = recording(1).await;
    let mesh = client_for(&up, "retry = {}").await;
    let resp = mesh
        .client("inventory")
        .post("/orders")
        .body("o1")
        .send()
        .await;
    assert_eq!(resp.unwrap().status(), 503);
    assert_eq!(bodies.lock().unwrap().len(), 1, "a POST is not retried");

    let (up, bodies) = recording(1).await;
    let mesh = client_for(&up, "retry = {}").await;
    let resp = mesh
        .client("inventory")
        .post("/orders")
        .header("idempotency-key", "o2")
        .body("o2")
        .send()
        .await;
    assert_eq!(resp.unwrap().status(), 200);
    assert_eq!(*bodies.lock().unwrap(), ["o2", "o2"]);
}

#[tokio::test]
async fn the_client_replays_small_bodies_and_sends_large_ones_once() {
    let small = Bytes::from(vec![b's'; 1000]);
    let (up, bodies) = recording(2).await;
    let mesh = client_for(&up, r#"retry = { replay_limit = "1KiB" }"#).await;
    let resp = mesh
        .client("inventory")
        .put("/x")
        .body(small.clone())
        .send()
        .await;
    assert_eq!(resp.unwrap().status(), 200);
    assert_eq!(
        *bodies.lock().unwrap(),
        [small.clone(), small.clone(), small]
    );

    let large = Bytes::from(vec![b'l'; 4096]);
    let (up, bodies) = recording(2).await;
    let mesh = client_for(&up, r#"retry = { replay_limit = "1KiB" }"#).await;
    let resp = mesh
        .client("inventory")
        .put("/x")
        .body(large.clone())
        .send()
        .await;
    assert_eq!(
        resp.unwrap().status(),
        503,
        "not retried: too large to replay"
    );
    assert_eq!(*bodies.lock().unwrap(), [large]);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_sees_the_request_extensions() {
    #[derive(Clone)]
    struct Tag(u32);
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let inner = tower::service_fn(
        move |req: http::Request<apimesh::layers::resilience::RetryBody>| {
            let counter = counter.clone();
            async move {
                if req.extensions().get::<Tag>().is_some_and(|t| t.0 == 7) {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok::<_, std::convert::Infallible>(support::status(503))
            }
        },
    );
    let svc = RetryLayer::new(
        policy(r#"retry = { attempts = 3, backoff = "1ms", max_backoff = "1ms" }"#)
            .retry
            .unwrap(),
    )
    .layer(inner);
    let mut req = request(Method::GET);
    req.extensions_mut().insert(Tag(7));
    let resp = call(&svc, req).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A tower `Buffer` (what a tonic `Channel` is) must be polled ready
/// before each call; every retry is a clone that is, or `Buffer` panics.
#[tokio::test(start_paused = true)]
async fn retries_through_a_buffer_poll_each_clone_ready() {
    let mock = Mock::statuses(&[503, 503, 200]);
    let buffered = tower::buffer::Buffer::new(mock.clone(), 4);
    let svc = retry("retry = { attempts = 3 }").layer(buffered);
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.count(), 3);
    // The general loop too: a hedged request starts on clones.
    let mock = Mock::statuses(&[503, 200]);
    let buffered = tower::buffer::Buffer::new(mock.clone(), 4);
    let svc = retry("retry = { attempts = 2, hedge_after = \"1s\" }").layer(buffered);
    let resp = call(&svc, request(Method::GET)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.count(), 2);
}
