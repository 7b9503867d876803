//! The etcd registry against a real etcd (Debian's `etcd-server`), started
//! on free loopback ports in a temp dir.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use apimesh::registry::{EtcdAdmin, EtcdOptions, EtcdRegistry};
use apimesh::{Config, Registry};
use support::{Etcd, Proxy, eventually};

const BASE: &str = r#"
[[services]]
name = "inventory"
endpoints = [{ address = "127.0.0.1:9001" }]

[[routes]]
id = "stock"
match = { path_prefix = "/stock" }
destinations = [{ service = "inventory" }]

[[routes]]
id = "health"
match = { path = "/health" }
"#;

fn options(url: &str) -> EtcdOptions {
    EtcdOptions::new([url.to_owned()])
        .start_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .keep_alive(Duration::from_secs(1))
}

async fn admin(url: &str) -> EtcdAdmin {
    EtcdAdmin::connect(options(url)).await.unwrap()
}

async fn apply(url: &str, toml: &str) {
    admin(url)
        .await
        .apply(&Config::from_toml(toml).unwrap())
        .await
        .unwrap();
}

fn route_ids(r: &EtcdRegistry) -> Vec<String> {
    let mut ids: Vec<String> = r
        .snapshot()
        .routes()
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    ids.sort();
    ids
}

fn path_of(r: &EtcdRegistry, id: &str) -> Option<String> {
    r.snapshot().route(id).and_then(|r| {
        r.spec()
            .matches
            .path
            .clone()
            .or(r.spec().matches.path_prefix.clone())
    })
}

fn endpoints_of(r: &EtcdRegistry, service: &str) -> Vec<String> {
    r.snapshot()
        .service(service)
        .map(|s| s.endpoints.iter().map(|e| e.id.to_string()).collect())
        .unwrap_or_default()
}

/// Serves `router` on loopback and GETs `path` as JSON.
async fn admin_get(router: axum::Router, path: &str) -> serde_json::Value {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

async fn put(etcd: &Etcd, key: &str, value: &str) {
    etcd.client()
        .await
        .put(format!("/apimesh/{key}"), value, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn initial_load_builds_a_validated_snapshot() {
    let etcd = Etcd::start().await;
    apply(&etcd.url(), BASE).await;
    let r = EtcdRegistry::connect(options(&etcd.url())).await.unwrap();
    assert_eq!(route_ids(&r), ["health", "stock"]);
    assert_eq!(r.snapshot().revision(), 1);
    assert_eq!(endpoints_of(&r, "inventory"), ["127.0.0.1:9001"]);
    let status = r.status().borrow().clone();
    assert_eq!(status.backend, "etcd");
    assert_eq!(status.applied, 1);
    assert!(status.rejected_keys.is_empty());
    assert!(r.stats().connected || r.stats().lists == 1);
}

#[tokio::test]
async fn an_update_reaches_three_registries_as_one_snapshot() {
    let etcd = Etcd::start().await;
    apply(&etcd.url(), BASE).await;
    let mut regs = Vec::new();
    for _ in 0..3 {
        regs.push(EtcdRegistry::connect(options(&etcd.url())).await.unwrap());
    }
    // A burst of writes in one transaction and right after each other.
    let started = Instant::now();
    apply(
        &etcd.url(),
        &format!("{BASE}\n[[routes]]\nid = \"new\"\nmatch = {{ path = \"/new\" }}\n"),
    )
    .await;
    put(
        &etcd,
        "routes/more",
        r#"{"id":"more","match":{"path":"/more"}}"#,
    )
    .await;
    for r in &regs {
        eventually(5, "the new routes", || route_ids(r).len() == 4).await;
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    for r in &regs {
        // Revision 1 was the listing; the burst is one or two more, not four.
        assert!(r.snapshot().revision() <= 3, "{}", r.snapshot().revision());
    }
}

#[tokio::test]
async fn an_invalid_value_is_refused_for_its_key_alone() {
    let etcd = Etcd::start().await;
    apply(&etcd.url(), BASE).await;
    let r = Arc::new(EtcdRegistry::connect(options(&etcd.url())).await.unwrap());
    let before = r.snapshot().revision();
    let mesh = apimesh::Mesh::builder()
        .service("orders")
        .registry(r.clone())
        .build()
        .await
        .unwrap();

    // One transaction: a bad update to an existing route, bad JSON for a new
    // key, a route naming an unknown service, and a valid new route.
    let mut c = etcd.client().await;
    let ops = vec![
        etcd_client::TxnOp::put(
            "/apimesh/routes/stock",
            r#"{"id":"stock","match":{"path":"no-slash"}}"#,
            None,
        ),
        etcd_client::TxnOp::put("/apimesh/routes/broken", "{not json", None),
        etcd_client::TxnOp::put(
            "/apimesh/routes/orphan",
            r#"{"id":"orphan","match":{"path":"/o"},"destinations":[{"service":"nowhere"}]}"#,
            None,
        ),
        etcd_client::TxnOp::put(
            "/apimesh/routes/fine",
            r#"{"id":"fine","match":{"path":"/fine"}}"#,
            None,
        ),
    ];
    c.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();

    eventually(5, "the valid route", || {
        route_ids(&r).contains(&"fine".to_owned())
    })
    .await;
    assert_eq!(route_ids(&r), ["fine", "health", "stock"]);
    assert_eq!(r.snapshot().revision(), before + 1);
    // The bad update left the previous value of `stock` serving.
    assert_eq!(path_of(&r, "stock").as_deref(), Some("/stock"));
    let status = r.status().borrow().clone();
    let keys: Vec<&str> = status
        .rejected_keys
        .iter()
        .map(|k| k.key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "/apimesh/routes/broken",
            "/apimesh/routes/orphan",
            "/apimesh/routes/stock"
        ]
    );
    let error_of = |k: &str| {
        status
            .rejected_keys
            .iter()
            .find(|r| r.key.ends_with(k))
            .unwrap()
            .error
            .clone()
    };
    assert!(
        error_of("stock").contains("match.path"),
        "{}",
        error_of("stock")
    );
    assert!(error_of("broken").contains("invalid JSON"));
    assert!(
        error_of("orphan").contains("nowhere"),
        "{}",
        error_of("orphan")
    );
    assert!(status.rejected >= 1);
    // `GET /mesh/config` shows them, with their errors.
    let json = admin_get(mesh.admin(), "/mesh/config").await;
    let listed = &json["registry"]["rejected_keys"];
    assert_eq!(listed[0]["key"], "/apimesh/routes/broken", "{json}");
    assert!(
        listed[2]["error"].as_str().unwrap().contains("match.path"),
        "{json}"
    );
    assert_eq!(
        json["config"]["routes"].as_array().unwrap().len(),
        3,
        "{json}"
    );

    // The service arrives: the orphan applies. Fixes clear the rest.
    put(&etcd, "services/nowhere", r#"{"name":"nowhere"}"#).await;
    put(
        &etcd,
        "routes/stock",
        r#"{"id":"stock","match":{"path_prefix":"/stock2"}}"#,
    )
    .await;
    c.delete("/apimesh/routes/broken", None).await.unwrap();
    eventually(5, "all applied", || {
        route_ids(&r).contains(&"orphan".to_owned()) && r.status().borrow().rejected_keys.is_empty()
    })
    .await;
    assert_eq!(path_of(&r, "stock").as_deref(), Some("/stock2"));
}

#[tokio::test]
async fn deletes_apply() {
    let etcd = Etcd::start().await;
    apply(&etcd.url(), BASE).await;
    let r = EtcdRegistry::connect(options(&etcd.url())).await.unwrap();
    let mut c = etcd.client().await;
    c.delete("/apimesh/routes/health", None).await.unwrap();
    eventually(5, "health gone", || route_ids(&r) == ["stock"]).await;
    // Deleting a service a route still uses is refused; with the route it applies.
    c.delete("/apimesh/services/inventory", None).await.unwrap();
    eventually(5, "refusal listed", || {
        !r.status().borrow().rejected_keys.is_empty()
    })
    .await;
    assert!(r.snapshot().service("inventory").is_some());
    c.delete("/apimesh/routes/stock", None).await.unwrap();
    eventually(5, "everything gone", || {
        route_ids(&r).is_empty() && r.snapshot().service("inventory").is_none()
    })
    .await;
    assert!(r.status().borrow().rejected_keys.is_empty());
}

#[tokio::test]
async fn etcd_killed_keeps_serving_and_catches_up_after_reconnecting() {
    let mut etcd = Etcd::start().await;
    apply(&etcd.url(), BASE).await;
    let proxy = Proxy::start(etcd.addr()).await;
    let r = EtcdRegistry::connect(options(&proxy.url())).await.unwrap();
    let mesh = apimesh::Mesh::builder()
        .service("orders")
        .registry(EtcdRegistry::connect(options(&etcd.url())).await.unwrap())
        .unmatched(apimesh::Unmatched::NotFound)
        .build()
        .await
        .unwrap();
    // Requests are routed by the config from etcd (unmatched ones get 404).
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route("/later", axum::routing::get(|| async { "later" }))
        .layer(mesh.inbound());
    let status = |path: &'static str| {
        let app = app.clone();
        async move {
            use tower::ServiceExt;
            let req = http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status("/health").await, 200);
    assert_eq!(status("/later").await, 404);
    eventually(5, "watching", || r.stats().connected).await;

    etcd.kill().await;
    eventually(10, "the loss noticed", || !r.stats().connected).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The last-known config keeps serving.
    assert_eq!(route_ids(&r), ["health", "stock"]);
    assert_eq!(mesh.snapshot().routes().len(), 2);
    for _ in 0..20 {
        assert_eq!(status("/health").await, 200);
    }

    // etcd comes back while this client is still cut off; changes are made.
    proxy.block();
    etcd.restart().await;
    put(
        &etcd,
        "routes/later",
        r#"{"id":"later","match":{"path":"/later"}}"#,
    )
    .await;
    etcd.client()
        .await
        .delete("/apimesh/routes/health", None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(route_ids(&r), ["health", "stock"]);

    proxy.unblock();
    eventually(15, "the changes made while disconnected", || {
        route_ids(&r) == ["later", "stock"]
    })
    .await;
    assert!(r.stats().reconnects >= 1);
    // The direct client (through the mesh) caught up too.
    eventually(15, "mesh caught up", || {
        mesh.snapshot().route("later").is_some()
    })
    .await;
}

#[tokio::test]
async fn compaction_past_the_watch_forces_a_relist_and_misses_nothing() {
    let etcd = Etcd::start().await;
    apply(&etcd.url(), BASE).await;
    let proxy = Proxy::start(etcd.addr()).await;
    let r = EtcdRegistry::connect(options(&proxy.url())).await.unwrap();
    eventually(5, "watching", || r.stats().connected).await;
    let seen = r.stats().revision;
    assert_eq!(r.stats().lists, 1);

    proxy.block();
    eventually(10, "cut off", || !r.stats().connected).await;
    let mut c = etcd.client().await;
    c.put(
        "/apimesh/routes/a",
        r#"{"id":"a","match":{"path":"/a"}}"#,
        None,
    )
    .await
    .unwrap();
    c.put(
        "/apimesh/routes/a",
        r#"{"id":"a","match":{"path":"/a2"}}"#,
        None,
    )
    .await
    .unwrap();
    c.delete("/apimesh/routes/health", None).await.unwrap();
    c.put(
        "/apimesh/routes/b",
        r#"{"id":"b","match":{"path":"/b"}}"#,
        None,
    )
    .await
    .unwrap();
    let resp = c
        .put(
            "/apimesh/routes/b",
            r#"{"id":"b","match":{"path":"/b2"}}"#,
            None,
        )
        .await
        .unwrap();
    let now = resp.header().unwrap().revision();
    assert!(now > seen + 1);
    c.compact(
        now,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();

    proxy.unblock();
    eventually(15, "re-listed", || route_ids(&r) == ["a", "b", "stock"]).await;
    assert_eq!(path_of(&r, "a").as_deref(), Some("/a2"));
    assert_eq!(path_of(&r, "b").as_deref(), Some("/b2"));
    let stats = r.stats();
    assert_eq!(stats.compactions, 1, "{stats:?}");
    assert_eq!(stats.lists, 2, "{stats:?}");
    eventually(5, "watching again", || r.stats().connected).await;
    // The new watch misses nothing either.
    c.put(
        "/apimesh/routes/c",
        r#"{"id":"c","match":{"path":"/c"}}"#,
        None,
    )
    .await
    .unwrap();
    eventually(5, "after the re-list", || {
        route_ids(&r).contains(&"c".to_owned())
    })
    .await;
}

fn endpoint(address: &str) -> apimesh::core::config::EndpointSpec {
    serde_json::from_value(serde_json::json!({ "address": address, "zone": "z1" })).unwrap()
}

#[tokio::test]
async fn registrations_leave_discovery_at_once_or_within_their_ttl() {
    let etcd = Etcd::start().await;
    apply(&etcd.url(), BASE).await;
    let observer = EtcdRegistry::connect(options(&etcd.url())).await.unwrap();

    // Graceful: deregister removes the endpoint at once.
    let me = EtcdRegistry::connect(options(&etcd.url())).await.unwrap();
    let reg = me
        .register("inventory", endpoint("127.0.0.1:9100"))
        .await
        .unwrap();
    assert_eq!(reg.key(), "/apimesh/endpoints/inventory/127.0.0.1:9100");
    eventually(5, "registered", || {
        endpoints_of(&observer, "inventory").len() == 2
    })
    .await;
    // A service only known from registrations is discoverable too.
    let other = me
        .register("billing", endpoint("127.0.0.1:9200"))
        .await
        .unwrap();
    eventually(5, "implicit service", || {
        endpoints_of(&observer, "billing") == ["127.0.0.1:9200"]
    })
    .await;
    let t = Instant::now();
    reg.deregister().await.unwrap();
    eventually(2, "deregistered", || {
        endpoints_of(&observer, "inventory").len() == 1
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(other);
    eventually(2, "dropped registration revoked", || {
        observer.snapshot().service("billing").is_none()
    })
    .await;

    // Crashed (cut off, keep-alives lost): gone within the TTL, and
    // registered again by itself when it can reach etcd.
    let proxy = Proxy::start(etcd.addr()).await;
    let ttl = Duration::from_secs(2);
    let crashed = EtcdRegistry::connect(options(&proxy.url()).lease_ttl(ttl))
        .await
        .unwrap();
    let reg = crashed
        .register("inventory", endpoint("127.0.0.1:9300"))
        .await
        .unwrap();
    let first_lease = reg.lease_id();
    eventually(5, "registered", || {
        endpoints_of(&observer, "inventory").len() == 2
    })
    .await;
    // Kept alive past its TTL while connected.
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    assert_eq!(endpoints_of(&observer, "inventory").len(), 2);
    let t = Instant::now();
    proxy.block();
    eventually(10, "expired", || {
        endpoints_of(&observer, "inventory").len() == 1
    })
    .await;
    let gone_after = t.elapsed();
    // etcd may round a lease up a little; never much more than the TTL.
    assert!(gone_after <= ttl + Duration::from_secs(2), "{gone_after:?}");
    proxy.unblock();
    eventually(15, "registered again", || {
        endpoints_of(&observer, "inventory").len() == 2
    })
    .await;
    eventually(5, "a new lease", || reg.lease_id() != first_lease).await;
    reg.deregister().await.unwrap();
    eventually(2, "deregistered", || {
        endpoints_of(&observer, "inventory").len() == 1
    })
    .await;
}

#[tokio::test]
async fn a_cold_start_with_etcd_down_uses_the_disk_cache() {
    let mut etcd = Etcd::start().await;
    apply(&etcd.url(), BASE).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("mesh-cache.json");
    {
        let r = EtcdRegistry::connect(options(&etcd.url()).cache(&cache))
            .await
            .unwrap();
        put(
            &etcd,
            "routes/cached",
            r#"{"id":"cached","match":{"path":"/c"}}"#,
        )
        .await;
        eventually(5, "applied", || route_ids(&r).len() == 3).await;
        eventually(5, "cached", || {
            std::fs::read_to_string(&cache).is_ok_and(|s| s.contains("/c"))
        })
        .await;
    }
    etcd.kill().await;

    // Without a cache there is no good state to start from.
    let err = EtcdRegistry::connect(options(&etcd.url()).start_timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no disk cache"), "{err}");

    let r = EtcdRegistry::connect(
        options(&etcd.url())
            .cache(&cache)
            .start_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    assert!(r.stats().from_cache);
    assert_eq!(route_ids(&r), ["cached", "health", "stock"]);

    // When etcd is back, the registry lists it and follows it again.
    etcd.restart().await;
    put(
        &etcd,
        "routes/fresh",
        r#"{"id":"fresh","match":{"path":"/f"}}"#,
    )
    .await;
    eventually(15, "live again", || route_ids(&r).len() == 4).await;
    assert!(!r.stats().from_cache);
}

#[tokio::test]
async fn the_publish_command_round_trips_a_config_file() {
    let etcd = Etcd::start().await;
    let text = std::fs::read_to_string("examples/config/gateway.toml").unwrap();
    let config = Config::from_toml(&text).unwrap();
    let mut admin = admin(&etcd.url()).await;
    let report = admin.apply(&config).await.unwrap();
    assert_eq!(report.transactions, 1);
    assert!(report.deleted.is_empty());
    let listed = admin.list(None).await.unwrap();
    assert_eq!(listed.len(), report.put.len());

    // What a registry assembles is the file's config (lists sorted by key).
    let r = EtcdRegistry::connect(options(&etcd.url())).await.unwrap();
    let got = r.snapshot().config().as_ref().clone();
    let mut want = config.clone();
    want.services.sort_by(|a, b| a.name.cmp(&b.name));
    want.routes.sort_by(|a, b| a.id.cmp(&b.id));
    want.consumers.sort_by(|a, b| a.id.cmp(&b.id));
    want.apis.sort_by(|a, b| a.name.cmp(&b.name));
    want.plans.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got, want);

    // Applying again changes nothing; dropping a route deletes its key
    // but leaves registered endpoints alone.
    assert_eq!(admin.apply(&config).await.unwrap().put.len(), 0);
    let _reg = r
        .register("catalog", endpoint("127.0.0.1:9400"))
        .await
        .unwrap();
    let mut smaller = config.clone();
    let dropped = smaller.routes.pop().unwrap().id;
    let report = admin.apply(&smaller).await.unwrap();
    assert_eq!(report.deleted, [format!("routes/{dropped}")]);
    assert!(report.put.is_empty());
    assert!(
        admin
            .get(
                apimesh::registry::ObjectKind::Endpoint,
                "catalog/127.0.0.1:9400"
            )
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        admin
            .get(apimesh::registry::ObjectKind::Route, &dropped)
            .await
            .unwrap()
            .is_none()
    );

    // An invalid file writes nothing.
    let bad = Config::from_toml("[[routes]]\nid = \"x\"\nmatch = { path = \"nope\" }\n").unwrap();
    let err = admin.apply(&bad).await.unwrap_err();
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(
        admin
            .list(Some(apimesh::registry::ObjectKind::Route))
            .await
            .unwrap()
            .len(),
        smaller.routes.len()
    );
    // More objects than fit in one transaction go in several.
    let mut big = smaller.clone();
    for i in 0..300 {
        big.routes.push(
            serde_json::from_value(
                serde_json::json!({"id": format!("r{i}"), "match": {"path": format!("/r{i}")}}),
            )
            .unwrap(),
        );
    }
    let report = admin.apply(&big).await.unwrap();
    assert_eq!(report.put.len(), 300);
    assert_eq!(report.transactions, 3);
    eventually(5, "big config", || {
        r.snapshot().routes().len() == big.routes.len()
    })
    .await;
    assert!(
        admin
            .delete(apimesh::registry::ObjectKind::Route, "r0")
            .await
            .unwrap()
    );
    assert!(
        !admin
            .delete(apimesh::registry::ObjectKind::Route, "r0")
            .await
            .unwrap()
    );
    let _ = Arc::new(());
}
