//! A new snapshot applies to the next request with no lock and no dropped
//! request; a request in flight keeps the snapshot it started with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apimesh::registry::MemoryRegistry;
use apimesh::{MatchedRoute, Mesh, Unmatched};
use axum::routing::get;
use tower::ServiceExt;

fn config(generation: u32) -> String {
    // Each generation renames the route and tags it, so a response that mixed
    // two revisions would show a route id and tag that disagree.
    format!(
        r#"
        [[routes]]
        id = "item-{generation}"
        match = {{ path_template = "/item/{{id}}" }}
        metadata = {{ generation = "{generation}" }}

        [[routes]]
        id = "other-{generation}"
        match = {{ path = "/other/{generation}" }}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_under_load_never_fail_or_mix_revisions() {
    const TASKS: usize = 8;
    const REQUESTS: usize = 10_000;
    const SWAPS: u32 = 100;

    let registry = Arc::new(MemoryRegistry::from_toml(&config(0)).unwrap());
    // revision -> generation, filled in as each update is published.
    let published: Arc<Mutex<HashMap<u64, u32>>> = Arc::new(Mutex::new(HashMap::from([(1, 0)])));
    let mesh = Mesh::builder()
        .service("items")
        .registry(registry.clone())
        .unmatched(Unmatched::NotFound)
        .build()
        .await
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/item/{id}",
            get(|m: MatchedRoute| async move {
                // Yield so that swaps land while requests are in flight.
                tokio::task::yield_now().await;
                let route = m.route();
                format!(
                    "{} {} {}",
                    m.revision(),
                    route.id(),
                    route.metadata("generation").unwrap_or("?")
                )
            }),
        )
        .layer(mesh.inbound());

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(REQUESTS);
            for i in 0..REQUESTS {
                let req = http::Request::get(format!("/item/{t}-{i}"))
                    .body(axum::body::Body::empty())
                    .unwrap();
                let res = app.clone().oneshot(req).await.unwrap();
                assert_eq!(res.status(), 200, "request {i} of task {t} failed");
                let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
                seen.push(String::from_utf8(body.to_vec()).unwrap());
            }
            seen
        }));
    }
    let swapper = {
        let registry = registry.clone();
        let published = published.clone();
        tokio::spawn(async move {
            for generation in 1..=SWAPS {
                let revision = registry.update_toml(&config(generation)).unwrap();
                published.lock().unwrap().insert(revision, generation);
                tokio::task::yield_now().await;
            }
        })
    };

    let mut responses = Vec::new();
    for t in tasks {
        responses.extend(t.await.unwrap());
    }
    swapper.await.unwrap();
    assert_eq!(responses.len(), TASKS * REQUESTS);

    let published = published.lock().unwrap();
    let mut revisions = std::collections::BTreeSet::new();
    for r in &responses {
        let mut parts = r.split(' ');
        let (rev, id, tag) = (
            parts.next().unwrap().parse::<u64>().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let generation = published[&rev];
        assert_eq!(id, format!("item-{generation}"), "mixed revision in {r}");
        assert_eq!(tag, generation.to_string(), "mixed revision in {r}");
        revisions.insert(rev);
    }
    // The swaps really happened during the load, and all of them applied.
    assert!(revisions.len() > 1, "no swap was observed by any request");
    assert_eq!(mesh.snapshot().revision(), u64::from(SWAPS) + 1);
}

#[tokio::test]
async fn request_in_flight_keeps_its_snapshot() {
    let registry = Arc::new(MemoryRegistry::from_toml(&config(0)).unwrap());
    let mesh = Mesh::builder()
        .service("items")
        .registry(registry.clone())
        .build()
        .await
        .unwrap();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let gates = Arc::new(Mutex::new(Some((entered_tx, release_rx))));
    let app = axum::Router::new()
        .route(
            "/item/{id}",
            get(move |m: MatchedRoute| {
                let gates = gates.lock().unwrap().take();
                async move {
                    if let Some((entered, release)) = gates {
                        let _ = entered.send(());
                        let _ = release.await;
                    }
                    format!("{} {}", m.revision(), m.route().id())
                }
            }),
        )
        .layer(mesh.inbound());

    let slow = tokio::spawn(
        app.clone().oneshot(
            http::Request::get("/item/1")
                .body(axum::body::Body::empty())
                .unwrap(),
        ),
    );
    entered_rx.await.unwrap();
    registry.update_toml(&config(1)).unwrap();
    // The live handle follows the registry on a background task: wait for it.
    let mut rx = apimesh::Registry::subscribe(&*registry);
    rx.wait_for(|s| s.revision() == 2).await.unwrap();
    while mesh.snapshot().revision() != 2 {
        tokio::task::yield_now().await;
    }
    let fresh = app
        .clone()
        .oneshot(
            http::Request::get("/item/2")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let fresh = axum::body::to_bytes(fresh.into_body(), 1024).await.unwrap();
    assert_eq!(fresh, "2 item-1");
    release_tx.send(()).unwrap();
    let old = slow.await.unwrap().unwrap();
    let old = axum::body::to_bytes(old.into_body(), 1024).await.unwrap();
    assert_eq!(old, "1 item-0");
}
