//! Shared helpers: the app under test behind `mesh.inbound()` on a real
//! loopback server, a real HTTP client, API keys with their digests, and
//! assertions on 429 responses and the IETF `RateLimit` fields.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apimesh::registry::MemoryRegistry;
use apimesh::{MatchedRoute, Mesh, PeerAddr, Unmatched};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

// ---- API keys (`printf %s KEY | sha256sum`) ---------------------------------

pub(crate) const ACME_KEY: &str = "rl-key-acme-0001";
pub(crate) const ACME_DIGEST: &str =
    "655c68127ffd6dc4d3d34e2a30680bb9ee151f625cc40d2aa00063c92d118155";
pub(crate) const GLOBEX_KEY: &str = "rl-key-globex-0002";
pub(crate) const GLOBEX_DIGEST: &str =
    "e9414d309fbe7497659927b0d9cc64bbca6c8329b5b2803fe989b9bddc0cdb8c";
pub(crate) const INITECH_KEY: &str = "rl-key-initech-0003";
pub(crate) const INITECH_DIGEST: &str =
    "ad6ae6a0aebb372b35a1905da0a97553cd538b05328218e3e52bbf3cc91a2839";

/// `[[consumers]]` tables for `acme`, `globex` and `initech`, each on `plan`
/// (or none when `plan` is empty).
pub(crate) fn consumers(plan: &str) -> String {
    let plan = if plan.is_empty() {
        String::new()
    } else {
        format!("plan = \"{plan}\"\n")
    };
    format!(
        r#"
[[consumers]]
id = "acme"
{plan}api_keys = ["sha256:{ACME_DIGEST}"]

[[consumers]]
id = "globex"
{plan}api_keys = ["sha256:{GLOBEX_DIGEST}"]

[[consumers]]
id = "initech"
{plan}api_keys = ["sha256:{INITECH_DIGEST}"]
"#
    )
}

// ---- The app under test -------------------------------------------------------

/// What the handler answers: the route it was matched to (if any) and the
/// path it saw.
async fn echo(matched: Option<MatchedRoute>, uri: http::Uri) -> axum::Json<Value> {
    axum::Json(json!({
        "route": matched.as_ref().map(|m| m.route().id().to_owned()),
        "path": uri.path(),
    }))
}

/// The test's stand-in for a socket peer: `x-test-peer: <ip>` becomes a
/// [`PeerAddr`] (and is removed), so one loopback client can play many
/// peers (a trusted proxy, an untrusted client).
pub(crate) async fn peer_from_header(mut req: axum::extract::Request) -> axum::extract::Request {
    if let Some(v) = req.headers_mut().remove("x-test-peer") {
        let ip: IpAddr = v.to_str().expect("ascii peer").parse().expect("peer ip");
        req.extensions_mut()
            .insert(PeerAddr(SocketAddr::new(ip, 40_000)));
    }
    req
}

/// How the app learns the client's socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peers {
    /// axum's `ConnectInfo<SocketAddr>`: every request is from 127.0.0.1.
    ConnectInfo,
    /// No `ConnectInfo`; a [`PeerAddr`] from the `x-test-peer` header.
    FromHeader,
}

pub(crate) struct App {
    pub(crate) mesh: Mesh,
    pub(crate) registry: Arc<MemoryRegistry>,
    pub(crate) addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The app with `config`, unmatched requests answered 404, served with
/// `ConnectInfo`.
pub(crate) async fn app(config: &str) -> App {
    app_with(config, Peers::ConnectInfo).await
}

pub(crate) async fn app_with(config: &str, peers: Peers) -> App {
    let registry =
        Arc::new(MemoryRegistry::from_toml(config).unwrap_or_else(|e| panic!("{e}\n{config}")));
    let mesh = Mesh::builder()
        .service("orders")
        .registry(registry.clone())
        .unmatched(Unmatched::NotFound)
        .build()
        .await
        .expect("mesh");
    let router = axum::Router::new().fallback(echo).layer(mesh.inbound());
    let addr = match peers {
        Peers::ConnectInfo => serve_with_connect_info(router).await,
        Peers::FromHeader => {
            serve(router.layer(axum::middleware::map_request(peer_from_header))).await
        }
    };
    App {
        mesh,
        registry,
        addr,
        client: client(),
    }
}

/// A plain axum router whose handler echoes the matched route.
pub(crate) fn echo_router() -> axum::Router {
    axum::Router::new().fallback(echo)
}

pub(crate) fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Serves `router` on a free loopback port (no `ConnectInfo`).
pub(crate) async fn serve(router: axum::Router) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Serves `router` with `ConnectInfo<SocketAddr>`, as a real deployment
/// that limits by IP must.
pub(crate) async fn serve_with_connect_info(router: axum::Router) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

impl App {
    /// GET `path` with these headers, over real HTTP/1.1.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        get_with(&self.client, self.addr, path, headers).await
    }

    /// GET `path` with the API key `key`.
    pub(crate) async fn keyed(&self, path: &str, key: &str) -> Reply {
        self.get(path, &[("x-api-key", key)]).await
    }

    /// GET `path` as if from the socket peer `peer` (needs [`Peers::FromHeader`]).
    pub(crate) async fn as_peer(&self, peer: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("x-test-peer", peer)];
        all.extend_from_slice(headers);
        self.get(path, &all).await
    }

    /// Publishes `config` and waits until the mesh serves it.
    pub(crate) async fn update(&self, config: &str) -> u64 {
        let revision = self.registry.update_toml(config).expect("valid update");
        let live = async {
            while self.mesh.snapshot().revision() < revision {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), live)
            .await
            .expect("the mesh follows its registry");
        revision
    }

    /// `mesh.admin()` on its own loopback listener.
    pub(crate) async fn admin(&self) -> SocketAddr {
        serve(self.mesh.admin()).await
    }
}

/// GET `http://{addr}{path}` with these headers.
pub(crate) async fn get_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::default()).expect("request");
    let res = client.request(req).await.expect("request");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A finished response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: http::StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A header's value ("" when absent).
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
            .unwrap_or("")
    }

    /// The `RateLimit` field ("" when absent).
    pub(crate) fn ratelimit(&self) -> &str {
        self.header("ratelimit")
    }

    /// The `RateLimit-Policy` field ("" when absent).
    pub(crate) fn policy(&self) -> &str {
        self.header("ratelimit-policy")
    }

    /// `Retry-After`, which must be a whole number of seconds.
    pub(crate) fn retry_after(&self) -> u64 {
        let v = self.header("retry-after");
        v.parse()
            .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {v:?}"))
    }

    /// The route the handler saw.
    pub(crate) fn route(&self) -> Value {
        self.json()["route"].clone()
    }
}

// ---- Assertions -------------------------------------------------------------

/// 200 from the handler.
#[track_caller]
pub(crate) fn assert_ok(r: &Reply) {
    assert_eq!(
        r.status, 200,
        "expected 200, got {} {:?} {:?}",
        r.status, r.headers, r.body
    );
}

/// 200 with exactly this `RateLimit` field.
#[track_caller]
pub(crate) fn assert_ok_with(r: &Reply, ratelimit: &str) {
    assert_ok(r);
    assert_eq!(r.ratelimit(), ratelimit, "{:?}", r.headers);
}

/// 429 as the mesh renders it: an RFC 9457 problem whose `type` ends with
/// `rate-limited`, `Retry-After` in whole seconds (at least 1), and both
/// IETF fields. Returns `Retry-After`.
#[track_caller]
pub(crate) fn assert_limited(r: &Reply) -> u64 {
    assert_eq!(r.status, 429, "{:?} {:?}", r.headers, r.body);
    assert_eq!(r.header("content-type"), "application/problem+json");
    let body = r.json();
    let ty = body["type"].as_str().expect("problem type");
    assert!(ty.ends_with("/rate-limited"), "{body}");
    assert_eq!(body["status"], 429, "{body}");
    assert_eq!(body["title"], "Too Many Requests", "{body}");
    assert!(body["detail"].is_string(), "{body}");
    let retry = r.retry_after();
    assert!(retry >= 1, "Retry-After {retry}");
    assert!(
        !r.policy().is_empty(),
        "no RateLimit-Policy: {:?}",
        r.headers
    );
    assert!(!r.ratelimit().is_empty(), "no RateLimit: {:?}", r.headers);
    retry
}

/// 429 with exactly this `Retry-After`, `RateLimit` and problem `detail`.
#[track_caller]
pub(crate) fn assert_limited_with(r: &Reply, retry_after: u64, ratelimit: &str, detail: &str) {
    assert_eq!(assert_limited(r), retry_after, "{:?}", r.headers);
    assert_eq!(r.ratelimit(), ratelimit, "{:?}", r.headers);
    assert_eq!(r.json()["detail"], detail);
}

// ---- Time ---------------------------------------------------------------------

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` into seconds since the epoch.
pub(crate) fn parse_rfc3339(s: &str) -> u64 {
    assert_eq!(s.len(), 20, "{s}");
    assert!(s.ends_with('Z') && &s[10..11] == "T", "{s}");
    let n = |r: std::ops::Range<usize>| -> i64 { s[r].parse().expect("digits") };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (hh, mm, ss) = (n(11..13), n(14..16), n(17..19));
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hh * 3_600 + mm * 60 + ss) as u64
}

#[test]
fn rfc3339_parser_is_right() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
    assert_eq!(parse_rfc3339("2026-02-15T12:34:56Z"), 1_771_158_896);
    assert_eq!(parse_rfc3339("2028-02-29T00:00:00Z"), 1_835_395_200);
}
