//! Cost of authentication per request, in-process:
//!
//! - `AuthLayer` with a cached RS256 token (the common case: clients reuse tokens);
//! - `AuthLayer` with the cache off, per algorithm, next to calling
//!   `jsonwebtoken::decode` directly with the same checks (the floor);
//! - API-key lookup.
//!
//! `cargo bench --bench auth`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use apimesh::AuthLayer;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use tower::{Layer, Service, ServiceExt, service_fn};

const ISSUER: &str = "https://idp.bench";
const SECRET: &str = "a-benchmark-secret-that-is-long-enough";
/// The key "bench-key"; its SHA-256 digest is in the config below.
const API_KEY: &str = "bench-key";

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmark future was not ready"),
    }
}

fn key(file: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/benches/keys/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn config(api_key_digest: &str) -> String {
    let pem = |f: &str| key(f).replace('\n', "\\n");
    format!(
        r#"
        [auth]
        issuers = [{{ issuer = "{ISSUER}", audiences = ["bench"], algorithms = ["RS256", "ES256", "EdDSA", "HS256"], keys = [
            {{ kid = "rs", algorithm = "RS256", pem = "{rs}" }},
            {{ kid = "es", algorithm = "ES256", pem = "{es}" }},
            {{ kid = "ed", algorithm = "EdDSA", pem = "{ed}" }},
            {{ kid = "hs", algorithm = "HS256", secret = "{SECRET}" }},
        ] }}]

        [[consumers]]
        id = "bench"
        api_keys = ["sha256:{digest}"]
        "#,
        rs = pem("rsa.pub.pem"),
        es = pem("ec.pub.pem"),
        ed = pem("ed.pub.pem"),
        digest = api_key_digest,
    )
}

fn token(alg: Algorithm, kid: &str, enc: &EncodingKey) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": "bench", "sub": "user-1", "exp": exp,
        "scope": "orders:read orders:write",
    });
    jsonwebtoken::encode(&header, &claims, enc).unwrap()
}

fn request(token: Option<&str>, api_key: Option<&str>) -> http::Request<()> {
    let mut b = http::Request::get("/orders/1");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(k) = api_key {
        b = b.header("x-api-key", k);
    }
    b.body(()).unwrap()
}

fn sha256_hex(s: &str) -> String {
    // The config stores the digest of API_KEY, as an operator would make it.
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

fn bench(c: &mut Criterion) {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let config = config(&sha256_hex(API_KEY));
    let handler = |_req: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) };

    let encoders = [
        (
            Algorithm::RS256,
            "rs",
            EncodingKey::from_rsa_pem(key("rsa.key.pem").as_bytes()).unwrap(),
            DecodingKey::from_rsa_pem(key("rsa.pub.pem").as_bytes()).unwrap(),
        ),
        (
            Algorithm::ES256,
            "es",
            EncodingKey::from_ec_pem(key("ec.key.pem").as_bytes()).unwrap(),
            DecodingKey::from_ec_pem(key("ec.pub.pem").as_bytes()).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            "ed",
            EncodingKey::from_ed_pem(key("ed.key.pem").as_bytes()).unwrap(),
            DecodingKey::from_ed_pem(key("ed.pub.pem").as_bytes()).unwrap(),
        ),
        (
            Algorithm::HS256,
            "hs",
            EncodingKey::from_secret(SECRET.as_bytes()),
            DecodingKey::from_secret(SECRET.as_bytes()),
        ),
    ];

    let mut group = c.benchmark_group("auth");
    group.bench_function("bare", |b| {
        let mut svc = service_fn(handler);
        b.iter_batched(
            || request(None, None),
            |req| {
                now(svc.ready()).unwrap();
                black_box(now(svc.call(req)).unwrap())
            },
            BatchSize::SmallInput,
        )
    });

    // Cached: the same RS256 token on every request.
    let cached = AuthLayer::builder()
        .config_toml(&config)
        .unwrap()
        .jwt()
        .scope("orders:read")
        .build()
        .unwrap();
    let rs_token = token(Algorithm::RS256, "rs", &encoders[0].2);
    let mut svc = cached.layer(service_fn(handler));
    let res = now(svc.call(request(Some(&rs_token), None))).unwrap();
    assert_eq!(res.status(), 200, "the benchmark token must be accepted");
    group.bench_function("layer_cached/RS256", |b| {
        b.iter_batched(
            || request(Some(&rs_token), None),
            |req| {
                now(svc.ready()).unwrap();
                black_box(now(svc.call(req)).unwrap())
            },
            BatchSize::SmallInput,
        )
    });

    // Uncached: every request verifies the signature.
    let uncached = AuthLayer::builder()
        .config_toml(&config)
        .unwrap()
        .jwt()
        .token_cache_slots(0)
        .build()
        .unwrap();
    for (alg, kid, enc, dec) in &encoders {
        let t = token(*alg, kid, enc);
        let mut svc = uncached.layer(service_fn(handler));
        let res = now(svc.call(request(Some(&t), None))).unwrap();
        assert_eq!(res.status(), 200, "{alg:?} token must be accepted");
        group.bench_function(format!("layer_uncached/{alg:?}"), |b| {
            b.iter_batched(
                || request(Some(&t), None),
                |req| {
                    now(svc.ready()).unwrap();
                    black_box(now(svc.call(req)).unwrap())
                },
                BatchSize::SmallInput,
            )
        });
        let mut validation = Validation::new(*alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&["bench"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        group.bench_function(format!("jsonwebtoken_decode/{alg:?}"), |b| {
            b.iter(|| {
                black_box(
                    jsonwebtoken::decode::<serde_json::Value>(black_box(&t), dec, &validation)
                        .unwrap(),
                )
            })
        });
    }

    let keys = AuthLayer::builder()
        .config_toml(&config)
        .unwrap()
        .api_key()
        .build()
        .unwrap();
    let mut svc = keys.layer(service_fn(handler));
    let res = now(svc.call(request(None, Some(API_KEY)))).unwrap();
    assert_eq!(res.status(), 200, "the benchmark API key must be accepted");
    group.bench_function("layer_api_key", |b| {
        b.iter_batched(
            || request(None, Some(API_KEY)),
            |req| {
                now(svc.ready()).unwrap();
                black_box(now(svc.call(req)).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
