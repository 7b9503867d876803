//! Outlier ejection through the mesh client: never more than
//! `max_ejection_percent` of a service's endpoints, never the last way to
//! reach it, and on a failure rate as well as on a streak.

use std::sync::Arc;

use crate::support::{self, Hits, Server};

async fn four_failing() -> (Vec<Server>, Vec<Hits>) {
    let mut servers = Vec::new();
    let mut hits = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let h = Hits::default();
        servers.push(support::answering(name, 503, h.clone()).await);
        hits.push(h);
    }
    (servers, hits)
}

fn config(servers: &[Server], max_percent: u32) -> String {
    let refs: Vec<&Server> = servers.iter().collect();
    format!(
        "[[services]]\nname = \"inventory\"\n\
         outlier = {{ consecutive_failures = 1, base_ejection = \"60s\", max_ejection_percent = {max_percent} }}\n\
         endpoints = {}\n",
        support::endpoints(&refs)
    )
}

fn ejected(mesh: &apimesh::Mesh) -> usize {
    mesh.outbound()
        .endpoints()
        .iter()
        .filter(|e| e.service == "inventory" && !e.healthy)
        .count()
}

#[tokio::test]
async fn ejection_never_exceeds_max_ejection_percent() {
    let (servers, hits) = four_failing().await;
    let mesh = support::mesh(&config(&servers, 50)).await;
    let client = mesh.client("inventory");
    // One at a time: the count is checked after every failure.
    for _ in 0..40 {
        let resp = client.get("/").send().await.unwrap();
        assert_eq!(resp.status(), 503, "the upstream's answer, not the mesh's");
        assert!(ejected(&mesh) <= 2, "{:#?}", mesh.outbound().endpoints());
    }
    assert_eq!(ejected(&mesh), 2, "half of four endpoints");
    // Concurrently too.
    let client = Arc::new(client);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let resp = client.get("/").send().await.unwrap();
                    assert_eq!(resp.status(), 503);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(ejected(&mesh), 2, "{:#?}", mesh.outbound().endpoints());
    // The two ejected endpoints got no traffic after their ejection: the
    // other two took the concurrent load.
    let total: usize = hits.iter().map(Hits::get).sum();
    assert_eq!(total, 240);
    let healthy: Vec<usize> = mesh
        .outbound()
        .endpoints()
        .iter()
        .filter(|e| e.healthy)
        .map(|e| {
            servers
                .iter()
                .position(|s| s.addr.to_string() == e.address)
                .unwrap()
        })
        .collect();
    let to_healthy: usize = healthy.iter().map(|&i| hits[i].get()).sum();
    assert!(to_healthy >= 200, "{to_healthy} of 240 to the healthy two");
}

#[tokio::test]
async fn with_every_endpoint_ejected_requests_still_reach_one() {
    let (servers, hits) = four_failing().await;
    let mesh = support::mesh(&config(&servers, 100)).await;
    let client = mesh.client("inventory");
    for _ in 0..20 {
        let resp = client.get("/").send().await.unwrap();
        assert_eq!(
            resp.status(),
            503,
            "an ejected endpoint rather than no endpoint"
        );
        let body = resp.text().await.unwrap();
        assert!(["a", "b", "c", "d"].contains(&body.as_str()), "{body}");
    }
    assert_eq!(ejected(&mesh), 4);
    assert_eq!(hits.iter().map(Hits::get).sum::<usize>(), 20);
}

/// An upstream that fails every third request with 503.
async fn failing_every_third(name: &'static str, hits: Hits) -> Server {
    support::serve(axum::Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            let n = hits.hit();
            let code = if n % 3 == 2 {
                http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                http::StatusCode::OK
            };
            (code, name)
        }
    }))
    .await
}

#[tokio::test]
async fn a_low_success_rate_ejects_an_endpoint_that_never_fails_twice_in_a_row() {
    let flaky_hits = Hits::default();
    let flaky = failing_every_third("flaky", flaky_hits.clone()).await;
    let good = support::answering("good", 200, Hits::default()).await;
    // The flaky endpoint takes every request while it is healthy: the good
    // one is the failover (priority 1).
    let mesh = support::mesh(&format!(
        "[[services]]\nname = \"inventory\"\n\
         outlier = {{ consecutive_failures = 5, failure_percent = 30, min_requests = 12, interval = \"60s\", base_ejection = \"60s\" }}\n\
         endpoints = [{{ address = \"{}\" }}, {{ address = \"{}\", priority = 1 }}]\n",
        flaky.addr, good.addr
    ))
    .await;
    let client = mesh.client("inventory");
    for _ in 0..200 {
        client.get("/").send().await.unwrap();
    }
    let eps = mesh.outbound().endpoints();
    let flaky_ep = eps
        .iter()
        .find(|e| e.address == flaky.addr.to_string())
        .unwrap();
    assert!(!flaky_ep.healthy, "{eps:#?}");
    assert_eq!(flaky_ep.ejections, 1);
    assert!(flaky_ep.probation, "it will be probed when it is back");
    // Ejected at its first failure from the 12th request on: the 12th.
    assert_eq!(flaky_hits.get(), 12);
    assert!(
        eps.iter()
            .any(|e| e.address == good.addr.to_string() && e.healthy)
    );
}
