//! Routing in the gateway: weighted splits with a tester's override, and
//! the problems for no route and no endpoint.

use std::net::SocketAddr;

use crate::support::{Upstream, gateway, get, raw, upstream};

async fn setup() -> (SocketAddr, Upstream, Upstream) {
    let stable = upstream("stable").await;
    let canary = upstream("canary").await;
    let gw = gateway(&format!(
        r#"
        [[services]]
        name = "stable"
        endpoints = [{{ address = "{}" }}]

        [[services]]
        name = "canary"
        endpoints = [{{ address = "{}" }}]

        [[services]]
        name = "empty"

        [[routes]]
        id = "split"
        match = {{ path_prefix = "/split" }}
        destinations = [
          {{ service = "stable", weight = 50 }},
          {{ service = "canary", weight = 50 }},
        ]
        split = {{ override_header = "x-canary", overrides = {{ always = 1, never = 0 }} }}

        [[routes]]
        id = "down"
        match = {{ path_prefix = "/down" }}
        destinations = [{{ service = "empty" }}]
        "#,
        stable.addr, canary.addr
    ))
    .await;
    (gw, stable, canary)
}

#[tokio::test]
async fn weighted_split_and_override_header() {
    let (gw, stable, canary) = setup().await;
    for _ in 0..100 {
        let resp = raw(gw, &get("/split/x", &[])).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    // 50/50 over 100 requests: each side gets more than 15 but for a
    // chance of about 1e-12.
    let (s, c) = (stable.count(), canary.count());
    assert_eq!(s + c, 100);
    assert!(s > 15 && c > 15, "stable {s}, canary {c}");

    for (value, want) in [("always", &canary), ("never", &stable)] {
        stable.clear();
        canary.clear();
        for _ in 0..20 {
            let resp = raw(gw, &get("/split/x", &[&format!("x-canary: {value}")])).await;
            assert_eq!(resp.text(), want.name);
        }
        assert_eq!(want.count(), 20, "{value}");
    }
    // An unknown override value falls back to the weights.
    stable.clear();
    canary.clear();
    for _ in 0..40 {
        raw(gw, &get("/split/x", &["x-canary: maybe"])).await;
    }
    assert!(stable.count() > 0 && canary.count() > 0);
}

#[tokio::test]
async fn unmatched_path_is_a_404_problem() {
    let (gw, stable, canary) = setup().await;
    let resp = raw(gw, &get("/nowhere", &[])).await;
    resp.assert_problem(404, "route-not-found");
    // `/splitx` is not under the prefix `/split`.
    let resp = raw(gw, &get("/splitx", &[])).await;
    resp.assert_problem(404, "route-not-found");
    assert_eq!(stable.count() + canary.count(), 0);
}

#[tokio::test]
async fn service_without_endpoints_is_a_503_problem() {
    let (gw, ..) = setup().await;
    let resp = raw(gw, &get("/down/x", &[])).await;
    resp.assert_problem(503, "unavailable");
}
