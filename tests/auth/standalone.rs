//! `AuthLayer::builder()` on a plain axum router, without a mesh.

use apimesh::layers::auth::AuthLayer;
use apimesh::{ConfigError, Principal};
use axum::routing::get;
use serde_json::json;

use crate::support::{
    self, ACME_DIGEST, ACME_KEY, AUD, BAD_AUDIENCE, CLAIM_MISMATCH, INSUFFICIENT_SCOPE, ISS,
    JwksServer, MISSING, Reply, Signer, UNKNOWN_API_KEY, assert_403, assert_invalid_token,
    assert_ok, claims,
};

fn auth_toml(jwks_uri: &str) -> String {
    format!(
        r#"
[auth]
api_key_query = "key"

[[auth.issuers]]
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["RS256"]
jwks_uri = "{jwks_uri}"

[[consumers]]
id = "acme"
api_keys = ["sha256:{ACME_DIGEST}"]
"#
    )
}

/// Serves `/who` (the principal as JSON) behind `layer`.
async fn serve(layer: AuthLayer) -> std::net::SocketAddr {
    let router = axum::Router::new()
        .route(
            "/who",
            get(|p: Principal, uri: http::Uri| async move {
                let mut v = support::principal_json(&p);
                v["uri"] = uri.to_string().into();
                axum::Json(v)
            }),
        )
        .layer(layer);
    support::serve(router).await
}

async fn get_with(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    support::send_with(
        &support::client(),
        req.body(Default::default()).expect("request"),
    )
    .await
}

async fn bearer(addr: std::net::SocketAddr, token: &str) -> Reply {
    get_with(
        addr,
        "/who",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test]
async fn jwt_and_api_keys_on_a_plain_router() {
    let jwks = JwksServer::start(vec![Signer::rsa().jwk()]).await;
    let layer = AuthLayer::builder()
        .config_toml(&auth_toml(&jwks.url()))
        .expect("toml")
        .jwt()
        .api_key()
        .build()
        .expect("layer");
    let addr = serve(layer).await;
    let t = Signer::rsa().token(&claims(json!({ "sub": "carol", "scope": "a b" })));
    let r = bearer(addr, &t).await;
    assert_ok(&r);
    assert_eq!(r.json()["subject"], "carol");
    assert_eq!(r.json()["issuer"], ISS);
    assert_eq!(r.json()["scopes"], json!(["a", "b"]));
    let r = get_with(addr, "/who", &[("x-api-key", ACME_KEY)]).await;
    assert_ok(&r);
    assert_eq!(r.json()["consumer"], "acme");
    assert_eq!(r.json()["method"], "ApiKey");
    let r = get_with(addr, &format!("/who?key={ACME_KEY}&x=1"), &[]).await;
    assert_ok(&r);
    assert_eq!(r.json()["uri"], "/who?x=1");
    // Failures look the same as in the mesh.
    let r = get_with(addr, "/who", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.challenge(),
        "Bearer realm=\"apimesh\", ApiKey realm=\"apimesh\""
    );
    assert_eq!(r.detail(), MISSING);
    let r = get_with(addr, "/who", &[("x-api-key", "nope")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.detail(), UNKNOWN_API_KEY);
    let forged = Signer::attacker()
        .with_kid("rsa-1")
        .token(&claims(json!({})));
    assert_invalid_token(&bearer(addr, &forged).await, support::BAD_SIGNATURE);
    // Every path is covered, routed or not (axum answers 404 after auth).
    let r = get_with(addr, "/elsewhere", &[]).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn scopes_claims_and_audience_in_code() {
    let jwks = JwksServer::start(vec![Signer::rsa().jwk()]).await;
    let layer = AuthLayer::builder()
        .config_toml(&auth_toml(&jwks.url()))
        .expect("toml")
        .jwt()
        .api_key()
        .scope("orders:read")
        .claim("tenant", "acme")
        .audience("special-api")
        .build()
        .expect("layer");
    let addr = serve(layer).await;
    let rsa = Signer::rsa();
    let good = json!({ "aud": "special-api", "scope": "orders:read", "tenant": "acme" });
    assert_ok(&bearer(addr, &rsa.token(&claims(good.clone()))).await);
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = AUD.into();
    assert_invalid_token(
        &bearer(addr, &rsa.token(&claims(wrong_aud))).await,
        BAD_AUDIENCE,
    );
    let mut no_scope = good.clone();
    no_scope["scope"] = "orders:write".into();
    assert_403(
        &bearer(addr, &rsa.token(&claims(no_scope))).await,
        Some("orders:read"),
        &format!("{INSUFFICIENT_SCOPE}: orders:read"),
    );
    let mut other_tenant = good.clone();
    other_tenant["tenant"] = "globex".into();
    assert_403(
        &bearer(addr, &rsa.token(&claims(other_tenant))).await,
        None,
        CLAIM_MISMATCH,
    );
    // An API key has no scopes.
    let r = get_with(addr, "/who", &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn without_the_token_cache() {
    let jwks = JwksServer::start(vec![Signer::rsa().jwk()]).await;
    let layer = AuthLayer::builder()
        .config_toml(&auth_toml(&jwks.url()))
        .expect("toml")
        .jwt()
        .token_cache_slots(0)
        .build()
        .expect("layer");
    let addr = serve(layer).await;
    let t = Signer::rsa().token(&claims(json!({})));
    for _ in 0..3 {
        assert_ok(&bearer(addr, &t).await);
    }
    let forged = Signer::attacker()
        .with_kid("rsa-1")
        .token(&claims(json!({})));
    assert_invalid_token(&bearer(addr, &forged).await, support::BAD_SIGNATURE);
    // Keys only: an API key is not accepted by a jwt-only layer.
    let r = get_with(addr, "/who", &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.challenge(), "Bearer realm=\"apimesh\"");
}

fn messages(e: &ConfigError) -> String {
    match e {
        ConfigError::Invalid(errors) => errors
            .iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn build_checks_its_input() {
    let toml = auth_toml("https://idp.test/jwks.json");
    // No method.
    let e = AuthLayer::builder()
        .config_toml(&toml)
        .expect("toml")
        .build()
        .expect_err("no method");
    assert!(messages(&e).contains("accept at least one method"), "{e:?}");
    // JWT without an issuer.
    let e = AuthLayer::builder().jwt().build().expect_err("no issuer");
    assert!(
        messages(&e).contains("jwt needs at least one issuer"),
        "{e:?}"
    );
    // API keys alone need no issuer.
    let _ = AuthLayer::builder()
        .api_key()
        .build()
        .expect("api keys only");
    // The config is validated as a snapshot would be.
    let e = AuthLayer::builder()
        .config_toml(
            r#"
[[auth.issuers]]
issuer = "i"
algorithms = ["HS256"]
keys = [{ algorithm = "HS256", secret = "short" }]
"#,
        )
        .expect("toml")
        .jwt()
        .build()
        .expect_err("short secret");
    assert!(messages(&e).contains("at least 32 bytes"), "{e:?}");
    let e = AuthLayer::builder()
        .config_toml(
            r#"
[[auth.issuers]]
issuer = "i"
algorithms = ["none"]
keys = []
"#,
        )
        .expect("toml")
        .jwt()
        .build()
        .expect_err("alg none");
    assert!(messages(&e).contains("`none` is never allowed"), "{e:?}");
}

#[tokio::test]
async fn outcomes_are_counted_and_the_realm_is_configurable() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::convert::Infallible;
    use tower::{Service, ServiceExt};

    // The counters are registered when the layer compiles its config, at
    // build(): give that a recorder.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pem = support::key_path("rsa.pub.pem");
    let layer = metrics::with_local_recorder(&recorder, || {
        AuthLayer::builder()
            .config_toml(&format!(
                r#"
[auth]
realm = "example-api"

[[auth.issuers]]
issuer = "{ISS}"
algorithms = ["RS256"]
keys = [{{ kid = "rsa-1", algorithm = "RS256", pem_file = "{pem}" }}]
"#
            ))
            .expect("toml")
            .jwt()
            .build()
    })
    .expect("layer");
    let mut svc = tower::Layer::layer(
        &layer,
        tower::service_fn(|_req: http::Request<axum::body::Body>| async {
            Ok::<_, Infallible>(http::Response::new(axum::body::Body::empty()))
        }),
    );
    let request = |token: &str| {
        http::Request::get("/")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let rsa = Signer::rsa();
    let good = rsa.token(&claims(json!({})));
    svc.ready().await.expect("ready");
    assert_eq!(
        svc.call(request(&good)).await.expect("infallible").status(),
        200
    );

    let expired = rsa.token(&claims(json!({ "exp": support::now() - 3600 })));
    let forged = Signer::attacker()
        .with_kid("rsa-1")
        .token(&claims(json!({})));
    let cases = [
        (good.clone(), 200, None),
        (good.clone(), 200, None),
        (expired.clone(), 401, Some(support::EXPIRED)),
        (forged.clone(), 401, Some(support::BAD_SIGNATURE)),
        ("x".repeat(9000), 401, Some(support::TOO_LARGE)),
    ];
    for (token, status, description) in &cases {
        let res = svc
            .ready()
            .await
            .expect("ready")
            .call(request(token))
            .await
            .expect("infallible");
        assert_eq!(res.status(), *status);
        if let Some(d) = description {
            let c = res.headers()[http::header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii");
            assert_eq!(
                c,
                format!(
                    r#"Bearer realm="example-api", error="invalid_token", error_description="{d}""#
                )
            );
        }
    }
    let res = svc
        .ready()
        .await
        .expect("ready")
        .call(
            http::Request::get("/")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(
        res.headers()[http::header::WWW_AUTHENTICATE],
        r#"Bearer realm="example-api""#
    );

    let mut counts = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if key.name() != "apimesh.auth.outcomes" {
            continue;
        }
        let outcome = key
            .labels()
            .find(|l| l.key() == "outcome")
            .map(|l| l.value().to_owned())
            .expect("outcome label");
        for l in key.labels() {
            assert!(
                !l.value().contains(&good[..20]),
                "a label carries the token"
            );
        }
        if let DebugValue::Counter(n) = value
            && n > 0
        {
            counts.insert(outcome, n);
        }
    }
    let want: std::collections::BTreeMap<String, u64> = [
        ("ok", 3),
        ("expired", 1),
        ("bad_signature", 1),
        ("too_large", 1),
        ("missing", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, want);
}
