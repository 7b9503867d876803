//! Traffic mirroring: the share copied, bodies copied intact, and a shadow
//! that never slows or fails the real traffic.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apimesh::Mesh;
use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::support::{Upstream, eventually, load, mesh, refused_addr, upstream};

fn mirrored(primary: &Upstream, shadow: impl std::fmt::Display, mirror: &str) -> String {
    format!(
        r#"
        [[services]]
        name = "inventory"
        endpoints = [{{ address = "{}" }}]

        [[services]]
        name = "shadow"
        endpoints = [{{ address = "{shadow}" }}]

        [[routes]]
        id = "inventory"
        match = {{ hosts = ["inventory"], path_prefix = "/" }}
        destinations = [{{ service = "inventory" }}]
        mirror = {mirror}
        "#,
        primary.addr
    )
}

/// Waits until every copy started has been answered by `shadow` and no
/// more arrive: the shadow endpoint has nothing in flight, has answered
/// as many requests as the mesh sent it, and its count holds for 50 ms.
async fn copies_settled(mesh: &Mesh, shadow: &Upstream) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut steady) = (u64::MAX, 0);
    while steady < 5 {
        assert!(
            Instant::now() < deadline,
            "the shadow's copies never settled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        let ep = mesh
            .outbound()
            .endpoints()
            .into_iter()
            .find(|e| e.service == "shadow")
            .unwrap();
        let hits = shadow.hits();
        let quiet = ep.in_flight == 0 && ep.requests == hits;
        steady = if quiet && hits == last { steady + 1 } else { 0 };
        last = hits;
    }
}

#[tokio::test]
async fn half_the_requests_are_mirrored() {
    let primary = upstream("primary", Duration::ZERO).await;
    let shadow = upstream("shadow", Duration::ZERO).await;
    let f = mesh(&mirrored(
        &primary,
        shadow.addr,
        r#"{ service = "shadow", percent = 50, max_in_flight = 10000 }"#,
    ))
    .await;
    let client = f.mesh.client("inventory");
    let tally = load(2000, 4, move |_| client.get("/stock")).await;
    tally.assert_no_failures();
    // The answers are the primary's.
    assert_eq!(tally.count("primary"), 2000);
    copies_settled(&f.mesh, &shadow).await;
    // ±5 points is 4.5 standard deviations of 2,000 draws at 50%.
    let share = shadow.hits() as f64 / 2000.0;
    assert!(
        (0.45..=0.55).contains(&share),
        "shadow got {:.1}%",
        share * 100.0
    );
    assert_eq!(primary.hits(), 2000);
}

#[tokio::test]
async fn a_slow_shadow_never_slows_the_primary() {
    let primary = upstream("primary", Duration::ZERO).await;
    let shadow = upstream("shadow", Duration::from_secs(1)).await;
    let f = mesh(&mirrored(
        &primary,
        shadow.addr,
        r#"{ service = "shadow", percent = 100, max_in_flight = 8 }"#,
    ))
    .await;
    let client = f.mesh.client("inventory");
    let started = Instant::now();
    let tally = load(200, 4, move |_| client.get("/stock")).await;
    let elapsed = started.elapsed();
    tally.assert_no_failures();
    assert_eq!(tally.count("primary"), 200);
    // Waiting for the shadow would take 200 / 4 × 1 s = 50 s, and every
    // request at least 1 s.
    assert!(
        tally.slowest < Duration::from_secs(1),
        "{:?}",
        tally.slowest
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    // Copies were sent, at most 8 at a time (each lasts at least 1 s).
    eventually(Duration::from_secs(5), "a copy", || shadow.hits() >= 1).await;
    let bound = 8 * (started.elapsed().as_secs() + 1);
    assert!(shadow.hits() <= bound, "{} > {bound}", shadow.hits());
}

#[tokio::test]
async fn a_dead_shadow_never_fails_the_primary() {
    let primary = upstream("primary", Duration::ZERO).await;
    let f = mesh(&mirrored(
        &primary,
        refused_addr().await,
        r#"{ service = "shadow", percent = 100 }"#,
    ))
    .await;
    let client = f.mesh.client("inventory");
    let c = client.clone();
    let tally = load(200, 4, move |_| c.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("primary"), 200);
    // Bodies too: the real request is not held back by a copy that fails.
    let tally = load(50, 2, move |i| {
        client.post("/orders").body(format!("order {i}"))
    })
    .await;
    tally.assert_no_failures();
    let mut got: Vec<Bytes> = primary.bodies.lock().unwrap().clone();
    got.retain(|b| !b.is_empty());
    assert_eq!(got.len(), 50);
}

/// A body delivered in several frames.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

#[tokio::test]
async fn post_bodies_reach_the_shadow_intact() {
    let primary = upstream("primary", Duration::ZERO).await;
    let shadow = upstream("shadow", Duration::ZERO).await;
    let f = mesh(&mirrored(
        &primary,
        shadow.addr,
        r#"{ service = "shadow", percent = 100, max_in_flight = 10000 }"#,
    ))
    .await;
    let client = f.mesh.client("inventory");

    // Bodies from a few bytes to 256 KiB through the convenience API...
    let mut sent: Vec<Bytes> = (0..40)
        .map(|i| Bytes::from(format!("order {i} ").repeat(1 << (i % 16))))
        .collect();
    for body in &sent {
        let resp = client
            .post("/orders")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // ...and one streamed in eight frames through the tower service.
    let frames: VecDeque<Bytes> = (0..8)
        .map(|i| Bytes::from(vec![b'a' + i as u8; 1000]))
        .collect();
    sent.push(
        frames
            .iter()
            .flat_map(|f| f.to_vec())
            .collect::<Vec<u8>>()
            .into(),
    );
    let resp = client
        .clone()
        .oneshot(http::Request::post("/orders").body(Frames(frames)).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    copies_settled(&f.mesh, &shadow).await;
    let mut shadow_got = shadow.bodies.lock().unwrap().clone();
    let mut primary_got = primary.bodies.lock().unwrap().clone();
    sent.sort();
    shadow_got.sort();
    primary_got.sort();
    assert_eq!(primary_got.len(), sent.len());
    assert!(primary_got == sent, "the primary's bodies differ");
    assert_eq!(shadow_got.len(), sent.len());
    assert!(shadow_got == sent, "the shadow's bodies differ");
    // The copy carries the call's headers.
    let h = shadow.last_headers.lock().unwrap().clone();
    assert!(h.contains_key("x-apimesh-caller"));
}
