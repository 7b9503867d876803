//! Cluster-wide rate limits against a real `redis-server` on loopback.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use apimesh::Mesh;
use apimesh::registry::MemoryRegistry;
use axum::routing::get;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A `redis-server` in a temp dir on a free loopback port, stopped on drop.
struct Redis {
    child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    async fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); install it with `apt-get install redis-server`"
                )
            });
        // Wait for the server to say it is ready, rather than for a while.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next_line().await.unwrap() {
                Some(l) if l.contains("Ready to accept connections") => break,
                Some(_) => continue,
                None => panic!("redis-server exited before it was ready"),
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::start_on(port).await
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn stop(&mut self) {
        self.child.kill().await.unwrap();
        self.child.wait().await.unwrap();
    }

    /// A connection without a response timeout (DEBUG SLEEP takes long).
    async fn client(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap()
    }
}

const CONFIG: &str = r#"
[[routes]]
id = "shared"
match = { path = "/shared" }
rate_limit = { limits = [{ rate = "10/h", burst = 10, key = ["route"] }], cluster = true, store_timeout = "50ms" }

[[routes]]
id = "local"
match = { path = "/local" }
rate_limit = { limits = [{ rate = "1000/h", burst = 1000, key = ["route"] }], cluster = true, on_store_failure = "local", store_timeout = "50ms" }

[[routes]]
id = "open"
match = { path = "/open" }
rate_limit = { limits = [{ rate = "1/h", burst = 1, key = ["route"] }], cluster = true, on_store_failure = "fail_open", store_timeout = "50ms" }

[[routes]]
id = "closed"
match = { path = "/closed" }
rate_limit = { limits = [{ rate = "1000/h", burst = 1000, key = ["route"] }], cluster = true, on_store_failure = "fail_closed", store_timeout = "50ms" }
"#;

async fn instance(redis_url: &str) -> SocketAddr {
    let mesh = Mesh::builder()
        .service("limited")
        .registry(MemoryRegistry::from_toml(CONFIG).unwrap())
        .redis(redis_url)
        .build()
        .await
        .unwrap();
    let router = axum::Router::new()
        .route("/shared", get(|| async { "ok" }))
        .route("/local", get(|| async { "ok" }))
        .route("/open", get(|| async { "ok" }))
        .route("/closed", get(|| async { "ok" }))
        .layer(mesh.inbound());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _mesh = mesh;
        axum::serve(listener, router).await
    });
    addr
}

async fn status(addr: SocketAddr, path: &str) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let res = client
        .request(
            http::Request::get(format!("http://{addr}{path}"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

#[tokio::test]
async fn two_instances_share_one_limit() {
    let redis = Redis::start().await;
    let a = instance(&redis.url()).await;
    let b = instance(&redis.url()).await;
    let mut admitted = 0;
    for i in 0..12 {
        let addr = if i % 2 == 0 { a } else { b };
        if status(addr, "/shared").await == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "a limit of 10 across two instances");
}

#[tokio::test]
async fn redis_outage_follows_each_failure_mode_and_recovers() {
    let mut redis = Redis::start().await;
    let port = redis.port;
    let a = instance(&redis.url()).await;
    // Shared counting works: fail_open's single unit is used up in Redis.
    assert_eq!(status(a, "/open").await, 200);
    assert_eq!(status(a, "/open").await, 429);

    redis.stop().await;
    // local: served by the local fallback, never a 5xx.
    for _ in 0..20 {
        assert_eq!(status(a, "/local").await, 200);
    }
    // fail_open: admitted although the shared bucket is empty.
    assert_eq!(status(a, "/open").await, 200);
    // fail_closed: refused with 429, not a 5xx.
    assert_eq!(status(a, "/closed").await, 429);

    // Redis back (empty): shared counting resumes by itself. The connection
    // manager reconnects in the background, so poll a bounded number of
    // times until a request is counted in Redis.
    let redis = Redis::start_on(port).await;
    let mut conn = redis.client().await;
    let mut resumed = false;
    for _ in 0..100 {
        assert_ne!(status(a, "/closed").await / 100, 5);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("apimesh:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resumed, "requests were never counted in Redis again");
    assert_eq!(status(a, "/closed").await, 200);
}

#[tokio::test]
async fn a_stalled_redis_never_stalls_a_request_past_the_timeout() {
    let redis = Redis::start().await;
    let a = instance(&redis.url()).await;
    assert_eq!(status(a, "/local").await, 200);
    // Block the server for two seconds.
    let mut conn = redis.client().await;
    let mut probe = redis.client().await;
    let sleeping = tokio::spawn(async move {
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(2)
            .query_async(&mut conn)
            .await
            .unwrap();
    });
    // Make sure the server is inside DEBUG SLEEP: a ping on another
    // connection now hangs.
    // (DEBUG SLEEP is sent by another task: ping until it has begun.)
    let mut stalled = false;
    for _ in 0..50 {
        let ping = tokio::time::timeout(
            Duration::from_millis(100),
            redis::cmd("PING").query_async::<String>(&mut probe),
        )
        .await;
        if ping.is_err() {
            stalled = true;
            break;
        }
    }
    assert!(stalled, "redis should be stalled");
    // The request falls back after its 50 ms store timeout and is served
    // while Redis is still asleep.
    assert_eq!(status(a, "/local").await, 200);
    assert!(!sleeping.is_finished(), "the request waited for Redis");
    sleeping.await.unwrap();
}

#[tokio::test]
async fn usage_of_cluster_routes_is_reported_across_instances() {
    let redis = Redis::start().await;
    let config = r#"
[[apis]]
name = "orders"
versions = [{ version = "v1" }]

[[routes]]
id = "orders"
api = "orders"
version = "v1"
match = { path = "/orders" }
rate_limit = { limits = [{ rate = "1000/h", burst = 1000, key = ["route"] }], cluster = true, store_timeout = "500ms" }
"#;
    let mut admins = Vec::new();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let mesh = Mesh::builder()
            .service("orders")
            .registry(MemoryRegistry::from_toml(config).unwrap())
            .redis(redis.url())
            .build()
            .await
            .unwrap();
        let router = axum::Router::new()
            .route("/orders", get(|| async { "ok" }))
            .layer(mesh.inbound());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        apps.push(listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        admins.push(admin.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(admin, mesh.admin()).await });
    }
    for i in 0..5 {
        assert_eq!(status(apps[i % 2], "/orders").await, 200);
    }
    // Either instance reports the requests both served.
    for admin in admins {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
        let res = client
            .request(
                http::Request::get(format!("http://{admin}/mesh/usage?api=orders&version=v1"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let rows = v["usage"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{v}");
        assert_eq!(rows[0]["consumer"], "anonymous");
        assert_eq!(rows[0]["requests"], 5, "{v}");
    }
}
