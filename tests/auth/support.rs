//! Shared helpers: keys, token minting, a JWKS server that counts and can
//! be changed or shut down, the app under test behind `mesh.inbound()`, a
//! real HTTP client and assertions on the RFC 6750 challenge.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use apimesh::registry::MemoryRegistry;
use apimesh::{Mesh, Principal, Unmatched};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

// ---- Outcome descriptions, as the client sees them ------------------------

pub(crate) const MISSING: &str = "credentials are required";
pub(crate) const AMBIGUOUS: &str = "more than one credential was sent";
pub(crate) const MALFORMED: &str = "the token is malformed";
pub(crate) const TOO_LARGE: &str = "the token is too large";
pub(crate) const BAD_ALGORITHM: &str = "the token's algorithm is not accepted";
pub(crate) const UNSUPPORTED_CRIT: &str = "the token has an unsupported critical header";
pub(crate) const BAD_TYPE: &str = "the token's type is not accepted";
pub(crate) const BAD_ISSUER: &str = "the token's issuer is not accepted";
pub(crate) const UNKNOWN_KID: &str = "the token's signing key is unknown";
pub(crate) const BAD_SIGNATURE: &str = "the token's signature is invalid";
pub(crate) const BAD_CLAIMS: &str = "the token's claims are invalid";
pub(crate) const EXPIRED: &str = "the token has expired";
pub(crate) const NOT_YET_VALID: &str = "the token is not valid yet";
pub(crate) const BAD_AUDIENCE: &str = "the token's audience is not accepted";
pub(crate) const INSUFFICIENT_SCOPE: &str = "the token lacks a required scope";
pub(crate) const CLAIM_MISMATCH: &str = "a required claim does not match";
pub(crate) const UNKNOWN_API_KEY: &str = "the API key is not valid";

// ---- Keys ------------------------------------------------------------------

/// The issuer used by most tests.
pub(crate) const ISS: &str = "https://idp.test";
/// The audience it issues for.
pub(crate) const AUD: &str = "orders-api";

/// The API key of consumer `acme`, and its digest (`printf %s KEY | sha256sum`).
pub(crate) const ACME_KEY: &str = "test-key-acme-0123456789";
pub(crate) const ACME_DIGEST: &str =
    "498f4882c7a78cf86eadf776247cdd3537b60afcfaa1f9ea133fa2f831a76f80";
/// A well-formed key no consumer owns.
pub(crate) const UNKNOWN_KEY: &str = "test-key-globex-9876543210";

pub(crate) const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa.key.pem");
pub(crate) const RSA_PUBLIC: &[u8] = include_bytes!("keys/rsa.pub.pem");
pub(crate) const RSA2_PRIVATE: &[u8] = include_bytes!("keys/rsa2.key.pem");
pub(crate) const ATTACKER_PRIVATE: &[u8] = include_bytes!("keys/attacker.key.pem");
pub(crate) const EC_PRIVATE: &[u8] = include_bytes!("keys/ec.key.pem");
pub(crate) const ED_PRIVATE: &[u8] = include_bytes!("keys/ed25519.key.pem");

/// Absolute path of a fixture under `tests/auth/keys/`.
pub(crate) fn key_path(name: &str) -> String {
    format!("{}/tests/auth/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A signing key (and its algorithm and `kid`).
#[derive(Clone)]
pub(crate) struct Signer {
    pub(crate) alg: Algorithm,
    pub(crate) kid: String,
    pub(crate) key: EncodingKey,
}

pub(crate) fn install_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

impl Signer {
    fn new(alg: Algorithm, kid: &str, key: EncodingKey) -> Signer {
        Signer {
            alg,
            kid: kid.to_owned(),
            key,
        }
    }
    pub(crate) fn rsa() -> Signer {
        install_provider();
        Signer::new(
            Algorithm::RS256,
            "rsa-1",
            EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa key"),
        )
    }
    pub(crate) fn rsa2() -> Signer {
        install_provider();
        Signer::new(
            Algorithm::RS256,
            "rsa-2",
            EncodingKey::from_rsa_pem(RSA2_PRIVATE).expect("rsa2 key"),
        )
    }
    pub(crate) fn attacker() -> Signer {
        install_provider();
        Signer::new(
            Algorithm::RS256,
            "attacker",
            EncodingKey::from_rsa_pem(ATTACKER_PRIVATE).expect("attacker key"),
        )
    }
    pub(crate) fn ec() -> Signer {
        install_provider();
        Signer::new(
            Algorithm::ES256,
            "ec-1",
            EncodingKey::from_ec_pem(EC_PRIVATE).expect("ec key"),
        )
    }
    pub(crate) fn ed() -> Signer {
        install_provider();
        Signer::new(
            Algorithm::EdDSA,
            "ed-1",
            EncodingKey::from_ed_pem(ED_PRIVATE).expect("ed key"),
        )
    }
    pub(crate) fn hmac(kid: &str, secret: &[u8]) -> Signer {
        install_provider();
        Signer::new(Algorithm::HS256, kid, EncodingKey::from_secret(secret))
    }

    /// The same key under another `kid`.
    pub(crate) fn with_kid(&self, kid: &str) -> Signer {
        Signer {
            kid: kid.to_owned(),
            ..self.clone()
        }
    }

    /// The public JWK, with `kid`, `alg` and `use = sig`.
    pub(crate) fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).expect("jwk");
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let v = serde_json::to_value(&jwk).expect("jwk json");
        assert_eq!(v["kid"], self.kid.as_str(), "{v}");
        assert!(v["alg"].is_string(), "{v}");
        assert!(
            v.get("d").is_none(),
            "a public JWK carries no private part: {v}"
        );
        v
    }

    /// A token with the `kid` and the usual header, signed by jsonwebtoken.
    pub(crate) fn token(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("encode")
    }

    /// A token with a hand-written header, signed with this key and its
    /// algorithm (whatever the header says).
    pub(crate) fn raw(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64_json(header), b64_json(claims));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, self.alg).expect("sign");
        format!("{input}.{sig}")
    }
}

pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64_json(v: &Value) -> String {
    b64(serde_json::to_vec(v).expect("json"))
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Valid claims for [`ISS`]/[`AUD`] (five minutes left), with `extra` merged in
/// (a `null` value removes the claim).
pub(crate) fn claims(extra: Value) -> Value {
    let now = now();
    let mut c = json!({
        "iss": ISS,
        "sub": "alice",
        "aud": AUD,
        "iat": now,
        "exp": now + 300,
    });
    merge(&mut c, extra);
    c
}

pub(crate) fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        for (k, v) in e {
            if v.is_null() {
                t.remove(&k);
            } else {
                t.insert(k, v);
            }
        }
    }
}

/// A `kid` nobody has published, different on every call.
pub(crate) fn random_kid() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("random-{}-{nanos:x}", N.fetch_add(1, Ordering::Relaxed))
}

// ---- The JWKS (and discovery) server ---------------------------------------

#[derive(Default)]
struct IdpState {
    keys: Mutex<Value>,
    discovery: Mutex<Option<Value>>,
    fetches: AtomicUsize,
    discoveries: AtomicUsize,
    paths: Mutex<Vec<String>>,
    fetched: Option<watch::Sender<usize>>,
}

/// A tiny identity provider on loopback: `GET /jwks.json` (counted) and,
/// once set, `GET /.well-known/openid-configuration`. Every response says
/// `Connection: close`, so shutting it down leaves no pooled connection.
pub(crate) struct JwksServer {
    pub(crate) addr: SocketAddr,
    state: Arc<IdpState>,
    fetched: watch::Receiver<usize>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl JwksServer {
    pub(crate) async fn start(keys: Vec<Value>) -> JwksServer {
        let (tx, rx) = watch::channel(0);
        let state = Arc::new(IdpState {
            keys: Mutex::new(json!({ "keys": keys })),
            fetched: Some(tx),
            ..IdpState::default()
        });
        let st = state.clone();
        let router = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let st = st.clone();
            async move { idp_handler(&st, req.uri().path()) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        JwksServer {
            addr,
            state,
            fetched: rx,
            shutdown: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:port`, usable as an issuer for discovery.
    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The key set's URL.
    pub(crate) fn url(&self) -> String {
        format!("{}/jwks.json", self.base())
    }

    /// Publishes another key list.
    pub(crate) fn set_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock().expect("lock") = json!({ "keys": keys });
    }

    /// Serves this discovery document.
    pub(crate) fn set_discovery(&self, doc: Value) {
        *self.state.discovery.lock().expect("lock") = Some(doc);
    }

    /// Key-set fetches so far.
    pub(crate) fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Discovery-document fetches so far.
    pub(crate) fn discoveries(&self) -> usize {
        self.state.discoveries.load(Ordering::SeqCst)
    }

    /// Every path requested so far.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.state.paths.lock().expect("lock").clone()
    }

    /// Waits until at least `n` key-set fetches have been answered.
    pub(crate) async fn wait_fetches(&mut self, n: usize) {
        self.fetched
            .wait_for(|f| *f >= n)
            .await
            .expect("JWKS server alive");
    }

    /// Stops the server (an outage): no new connection is accepted.
    pub(crate) async fn shutdown(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

fn idp_handler(st: &IdpState, path: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    st.paths.lock().expect("lock").push(path.to_owned());
    let close = [(http::header::CONNECTION, "close")];
    match path {
        "/jwks.json" => {
            let body = st.keys.lock().expect("lock").clone();
            let n = st.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(tx) = &st.fetched {
                tx.send_replace(n);
            }
            (close, axum::Json(body)).into_response()
        }
        "/.well-known/openid-configuration" => {
            st.discoveries.fetch_add(1, Ordering::SeqCst);
            match st.discovery.lock().expect("lock").clone() {
                Some(doc) => (close, axum::Json(doc)).into_response(),
                None => (http::StatusCode::NOT_FOUND, close).into_response(),
            }
        }
        _ => (http::StatusCode::NOT_FOUND, close).into_response(),
    }
}

// ---- The app under test ------------------------------------------------------

/// What the handler saw, as JSON: the URI, the header names and the principal.
async fn echo(principal: Option<Principal>, req: axum::extract::Request) -> axum::Json<Value> {
    axum::Json(seen(principal.as_ref(), &req))
}

pub(crate) fn seen(principal: Option<&Principal>, req: &axum::extract::Request) -> Value {
    let headers: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
    json!({
        "uri": req.uri().to_string(),
        "headers": headers,
        "principal": principal.map(principal_json),
    })
}

pub(crate) fn principal_json(p: &Principal) -> Value {
    json!({
        "method": format!("{:?}", p.method()),
        "subject": p.subject(),
        "issuer": p.issuer(),
        "scopes": p.scopes(),
        "consumer": p.consumer(),
        "tenant": p.claim("tenant"),
    })
}

/// The app: `/whoami` insists on a [`Principal`] (the strict extractor),
/// everything else echoes what it saw; all behind `mesh.inbound()` with
/// [`Unmatched::NotFound`], served on loopback.
pub(crate) struct App {
    /// Held for the test's duration, with its registry subscription.
    #[allow(dead_code)]
    pub(crate) mesh: Mesh,
    /// The registry the mesh follows, for config changes.
    pub(crate) registry: Arc<MemoryRegistry>,
    pub(crate) addr: SocketAddr,
    /// The layered router, for in-process calls.
    pub(crate) router: axum::Router,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub(crate) async fn app(config: &str) -> App {
    install_provider();
    let registry =
        Arc::new(MemoryRegistry::from_toml(config).unwrap_or_else(|e| panic!("{e}\n{config}")));
    let mesh = Mesh::builder()
        .service("orders")
        .registry(registry.clone())
        .unmatched(Unmatched::NotFound)
        .build()
        .await
        .expect("mesh");
    let router = axum::Router::new()
        .route(
            "/whoami",
            axum::routing::get(|p: Principal| async move { axum::Json(principal_json(&p)) }),
        )
        .route(
            "/plain/whoami",
            axum::routing::get(|p: Principal| async move { axum::Json(principal_json(&p)) }),
        )
        .fallback(echo)
        .layer(mesh.inbound());
    let addr = serve(router.clone()).await;
    App {
        mesh,
        registry,
        addr,
        router,
        client: client(),
    }
}

pub(crate) fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Serves `router` on a free loopback port.
pub(crate) async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
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

    /// The `WWW-Authenticate` header ("" when absent).
    pub(crate) fn challenge(&self) -> &str {
        self.headers
            .get(http::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().expect("ascii challenge"))
            .unwrap_or("")
    }

    /// The problem body's `detail`.
    pub(crate) fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// What the handler saw (only for admitted requests).
    pub(crate) fn principal(&self) -> Value {
        self.json()["principal"].clone()
    }
}

pub(crate) async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> Reply {
    let res = client.request(req).await.expect("request");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

impl App {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path` with these headers, over real HTTP/1.1.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = http::Request::get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send_with(&self.client, req.body(Full::default()).expect("request")).await
    }

    /// GET `path` with `Authorization: Bearer <token>`.
    pub(crate) async fn bearer(&self, path: &str, token: &str) -> Reply {
        self.get(path, &[("authorization", &format!("Bearer {token}"))])
            .await
    }

    /// Publishes `config` and waits until the mesh serves it.
    pub(crate) async fn update(&self, config: &str) {
        let revision = self.registry.update_toml(config).expect("valid update");
        let live = async {
            while self.mesh.snapshot().revision() < revision {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), live)
            .await
            .expect("the mesh follows its registry");
    }

    /// A clone of the HTTP client (for concurrent requests).
    pub(crate) fn http(&self) -> Client<HttpConnector, Full<Bytes>> {
        self.client.clone()
    }
}

// ---- Assertions ----------------------------------------------------------------

/// 200, from the handler.
#[track_caller]
pub(crate) fn assert_ok(r: &Reply) {
    assert_eq!(
        r.status,
        200,
        "expected 200, got {} {} {:?}",
        r.status,
        r.challenge(),
        r.body
    );
}

/// 401 with `error="<error>", error_description="<description>"` in the
/// bearer challenge and the description as the problem's `detail`.
#[track_caller]
pub(crate) fn assert_401(r: &Reply, error: &str, description: &str) {
    assert_eq!(r.status, 401, "{:?} {:?}", r.headers, r.body);
    let c = r.challenge();
    assert!(c.starts_with("Bearer realm=\"apimesh\""), "{c}");
    assert!(c.contains(&format!("error=\"{error}\"")), "{c}");
    assert!(
        c.contains(&format!("error_description=\"{description}\"")),
        "expected `{description}`, got: {c}"
    );
    assert_eq!(r.detail(), description);
    let ct = r
        .headers
        .get(http::header::CONTENT_TYPE)
        .expect("content-type");
    assert_eq!(ct, "application/problem+json");
}

/// 401 `invalid_token` with this description.
#[track_caller]
pub(crate) fn assert_invalid_token(r: &Reply, description: &str) {
    assert_401(r, "invalid_token", description);
}

/// 403 with `error="insufficient_scope"` (and `scope="<scope>"` if given).
#[track_caller]
pub(crate) fn assert_403(r: &Reply, scope: Option<&str>, detail: &str) {
    assert_eq!(r.status, 403, "{:?} {:?}", r.headers, r.body);
    let c = r.challenge();
    let mut want = "Bearer realm=\"apimesh\", error=\"insufficient_scope\"".to_owned();
    if let Some(s) = scope {
        want.push_str(&format!(", scope=\"{s}\""));
    }
    assert_eq!(c, want);
    assert_eq!(r.detail(), detail);
}

// ---- The standard setup -------------------------------------------------------

/// A second issuer, with a static HMAC key.
pub(crate) const OTHER_ISS: &str = "https://other.test";
pub(crate) const OTHER_SECRET: &str = "other-issuer-shared-secret-0123456789abcdef";

/// The standard config: [`ISS`] with its keys at `jwks_uri` (RS256, ES256,
/// EdDSA), [`OTHER_ISS`] with a static HS256 key, leeway 30 s, consumer
/// claim `azp`, consumer `acme`, and one route per requirement.
pub(crate) fn config(jwks_uri: &str) -> String {
    config_with(jwks_uri, "")
}

/// [`config`] with `issuer_extra` added to the [`ISS`] issuer's table.
pub(crate) fn config_with(jwks_uri: &str, issuer_extra: &str) -> String {
    format!(
        r#"
[auth]
leeway = "30s"
consumer_claim = "azp"

[[auth.issuers]]
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["RS256", "ES256", "EdDSA"]
jwks_uri = "{jwks_uri}"
{issuer_extra}

[[auth.issuers]]
issuer = "{OTHER_ISS}"
audiences = ["{AUD}"]
algorithms = ["HS256"]
keys = [{{ kid = "other-hs", algorithm = "HS256", secret = "{OTHER_SECRET}" }}]

[[consumers]]
id = "acme"
api_keys = ["sha256:{ACME_DIGEST}"]

[[consumers]]
id = "mobile-app"

[[routes]]
id = "orders"
match = {{ path_prefix = "/orders" }}
auth = {{ require = ["jwt", "api_key"] }}

[[routes]]
id = "whoami"
match = {{ path = "/whoami" }}
auth = {{ require = ["jwt", "api_key"] }}

[[routes]]
id = "jwt-only"
match = {{ path_prefix = "/jwt" }}
auth = {{ require = ["jwt"] }}

[[routes]]
id = "write"
match = {{ path_prefix = "/write" }}
auth = {{ require = ["jwt"], scopes = ["orders:write"] }}

[[routes]]
id = "read-any"
match = {{ path_prefix = "/read" }}
auth = {{ require = ["jwt", "api_key"], scopes = ["orders:read"] }}

[[routes]]
id = "tenant"
match = {{ path_prefix = "/tenant" }}
auth = {{ require = ["jwt"], claims = {{ tenant = "acme" }} }}

[[routes]]
id = "special"
match = {{ path_prefix = "/special" }}
auth = {{ require = ["jwt"], audience = "special-api" }}

[[routes]]
id = "other-only"
match = {{ path_prefix = "/other" }}
auth = {{ require = ["jwt"], issuers = ["{OTHER_ISS}"] }}

[[routes]]
id = "open"
match = {{ path_prefix = "/open" }}
auth = {{ require = ["none"] }}

[[routes]]
id = "plain"
match = {{ path_prefix = "/plain" }}
"#
    )
}

/// The issuer's JWKS: `rsa-1` (RS256), `ec-1` (ES256), `ed-1` (EdDSA).
pub(crate) async fn idp() -> JwksServer {
    JwksServer::start(vec![
        Signer::rsa().jwk(),
        Signer::ec().jwk(),
        Signer::ed().jwk(),
    ])
    .await
}

/// [`idp`] and an [`app`] with the standard [`config`].
pub(crate) async fn standard() -> (JwksServer, App) {
    let jwks = idp().await;
    let app = app(&config(&jwks.url())).await;
    (jwks, app)
}
