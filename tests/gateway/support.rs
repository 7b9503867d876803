//! Shared helpers: recording upstreams on loopback, a gateway in front of
//! them, and a raw HTTP/1.1 client that sends bytes exactly as written.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apimesh::registry::MemoryRegistry;
use apimesh::{Mesh, Unmatched};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The API key of the consumer `demo` (as in `examples/config/gateway.toml`).
pub(crate) const API_KEY: &str = "demo-key";
/// Its SHA-256 digest, as the config stores it.
pub(crate) const API_KEY_DIGEST: &str =
    "sha256:c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";

/// How long any single network step of a test may take.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// One request as an upstream received it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: http::Method,
    /// Path and query, as received.
    pub(crate) target: String,
    pub(crate) headers: http::HeaderMap,
    /// `None` while (or if never) the body was read to its end; `Err` when
    /// reading it failed.
    pub(crate) body: Option<Result<Bytes, String>>,
}

impl Seen {
    /// The whole body; panics if it did not arrive intact.
    pub(crate) fn body(&self) -> &Bytes {
        match &self.body {
            Some(Ok(b)) => b,
            other => panic!(
                "{} {}: body not received intact: {other:?}",
                self.method, self.target
            ),
        }
    }

    /// Every value of `name`, as text.
    pub(crate) fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A running upstream that records every request and answers with its
/// name.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    log: Log,
}

impl Upstream {
    /// Every request received so far, in order.
    pub(crate) fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub(crate) fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The only request received; panics unless there is exactly one.
    pub(crate) fn only(&self) -> Seen {
        let log = self.requests();
        assert_eq!(log.len(), 1, "{}: {log:#?}", self.name);
        log.into_iter().next().unwrap()
    }

    /// Forgets what was received.
    pub(crate) fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

/// Starts a recording upstream named `name`.
///
/// It records a request's head as soon as the handler runs, then reads the
/// body to its end and records it (or the error). A path ending in
/// `/hop-response` is answered with hop-by-hop response headers.
pub(crate) async fn upstream(name: &'static str) -> Upstream {
    let log: Log = Arc::default();
    let l = log.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let log = l.clone();
        async move { record(name, &log, req).await }
    });
    Upstream {
        name,
        addr: serve(app).await,
        log,
    }
}

async fn record(name: &'static str, log: &Log, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let hop_response = parts.uri.path().ends_with("/hop-response");
    let index = {
        let mut log = log.lock().unwrap();
        log.push(Seen {
            method: parts.method,
            target,
            headers: parts.headers,
            body: None,
        });
        log.len() - 1
    };
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| e.to_string());
    if let Some(seen) = log.lock().unwrap().get_mut(index) {
        seen.body = Some(body);
    }
    if hop_response {
        return (
            [
                ("keep-alive", "timeout=5"),
                ("proxy-authenticate", "Basic realm=\"up\""),
                ("connection", "x-up"),
                ("x-up", "1"),
                ("trailer", "x-checksum"),
                ("x-kept", "yes"),
            ],
            name,
        )
            .into_response();
    }
    name.into_response()
}

/// Serves `app` on a loopback port.
pub(crate) async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Starts `mesh.serve_gateway` for the config `toml` on a loopback port.
pub(crate) async fn gateway(toml: &str) -> SocketAddr {
    let registry = MemoryRegistry::from_toml(toml).unwrap();
    let mesh = Mesh::builder()
        .service("gateway")
        .registry(registry)
        .unmatched(Unmatched::NotFound)
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { mesh.serve_gateway(listener).await });
    addr
}

/// A gateway with a public route (`/public`), a protected one (`/admin`,
/// API key required) and a public catch-all (`/`, to the public service),
/// so that a request that misses `/admin` still reaches an upstream.
pub(crate) struct Edge {
    pub(crate) gw: SocketAddr,
    pub(crate) public: Upstream,
    pub(crate) admin: Upstream,
}

/// [`Edge`] with `gateway_section` as the body of `[gateway]`.
pub(crate) async fn edge(gateway_section: &str) -> Edge {
    let public = upstream("public").await;
    let admin = upstream("admin").await;
    let gw = gateway(&format!(
        r#"
        [gateway]
        {gateway_section}

        [[services]]
        name = "public"
        endpoints = [{{ address = "{public}" }}]

        [[services]]
        name = "admin"
        endpoints = [{{ address = "{admin}" }}]

        [[consumers]]
        id = "demo"
        api_keys = ["{API_KEY_DIGEST}"]

        [[routes]]
        id = "public"
        match = {{ path_prefix = "/public" }}
        destinations = [{{ service = "public" }}]

        [[routes]]
        id = "admin"
        match = {{ path_prefix = "/admin" }}
        auth = {{ require = ["api_key"] }}
        destinations = [{{ service = "admin" }}]

        [[routes]]
        id = "everything-else"
        match = {{ path_prefix = "/" }}
        destinations = [{{ service = "public" }}]
        "#,
        public = public.addr,
        admin = admin.addr,
    ))
    .await;
    Edge { gw, public, admin }
}

/// A response as read off the wire.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    /// The first value of `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a problem document (`application/problem+json`) with
    /// `status` and the problem type ending in `kind`.
    pub(crate) fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{self:?} {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let doc: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(doc["status"], status, "{doc}");
        assert_eq!(
            doc["type"],
            format!("https://apimesh.dev/problems/{kind}"),
            "{doc}"
        );
    }
}

/// A raw HTTP/1.1 connection: bytes go out exactly as written.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes `bytes`; a write the server refused (it closed already) is
    /// ignored, the response tells what happened.
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(STEP, self.stream.write_all(bytes))
            .await
            .unwrap();
    }

    /// Reads more bytes into the buffer; false at the end of the stream (a
    /// reset counts as the end: the server may close with unread input).
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(STEP, self.stream.read(&mut chunk))
            .await
            .expect("the gateway did not answer in time")
        {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads until the bytes received (not yet consumed) contain `needle`.
    pub(crate) async fn read_until(&mut self, needle: &[u8]) -> bool {
        loop {
            if find(&self.buf, needle).is_some() {
                return true;
            }
            if !self.fill().await {
                return false;
            }
        }
    }

    /// Reads one response (head and body, per its framing).
    pub(crate) async fn response(&mut self) -> RawResponse {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            assert!(
                self.fill().await,
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let body = if status < 200 || status == 204 || status == 304 {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            self.chunked().await
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill().await, "body cut off");
            }
            self.buf.drain(..len).collect()
        } else {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        RawResponse {
            status,
            headers,
            body,
        }
    }

    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                assert!(self.fill().await, "chunk size cut off");
            };
            let line = String::from_utf8(self.buf[..line_end].to_vec()).unwrap();
            self.buf.drain(..line_end + 2);
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                // Trailer fields, if any, up to an empty line.
                loop {
                    assert!(self.read_until(b"\r\n").await, "trailers cut off");
                    let i = find(&self.buf, b"\r\n").unwrap();
                    self.buf.drain(..i + 2);
                    if i == 0 {
                        return body;
                    }
                }
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill().await, "chunk cut off");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` on a new connection and reads one response.
pub(crate) async fn raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut conn = Conn::open(addr).await;
    conn.send(request).await;
    conn.response().await
}

/// `GET target` with `Host: gw.test` and the given header lines (each
/// `Name: value`).
pub(crate) fn get(target: &str, headers: &[&str]) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Lets requests in flight land (for asserting that nothing arrived).
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}
