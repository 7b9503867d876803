//! Token structure and registered claims: times and leeway, `iss`, `aud`,
//! `crit`, claim types, malformed and oversized tokens, `typ`, and how the
//! credential is read from the request.

use serde_json::json;
use tower::ServiceExt;

use crate::support::{
    self, AMBIGUOUS, BAD_AUDIENCE, BAD_CLAIMS, BAD_ISSUER, BAD_TYPE, EXPIRED, MALFORMED, MISSING,
    NOT_YET_VALID, Signer, TOO_LARGE, UNSUPPORTED_CRIT, assert_401, assert_invalid_token,
    assert_ok, b64, b64_json, claims, now,
};

#[tokio::test]
async fn expiry_and_not_before_with_the_leeway() {
    // The standard config has `leeway = "30s"`; margins of 10 s either side.
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    let t = rsa.token(&claims(json!({ "exp": now() - 3600 })));
    assert_invalid_token(&app.bearer("/jwt", &t).await, EXPIRED);
    let t = rsa.token(&claims(json!({ "nbf": now() + 3600 })));
    assert_invalid_token(&app.bearer("/jwt", &t).await, NOT_YET_VALID);
    // Inside the leeway: accepted.
    let t = rsa.token(&claims(json!({ "exp": now() - 20 })));
    assert_ok(&app.bearer("/jwt", &t).await);
    let t = rsa.token(&claims(json!({ "nbf": now() + 20 })));
    assert_ok(&app.bearer("/jwt", &t).await);
    // Beyond it: rejected.
    let t = rsa.token(&claims(json!({ "exp": now() - 40 })));
    assert_invalid_token(&app.bearer("/jwt", &t).await, EXPIRED);
    let t = rsa.token(&claims(json!({ "nbf": now() + 40 })));
    assert_invalid_token(&app.bearer("/jwt", &t).await, NOT_YET_VALID);
    // Fractional times are numbers too.
    let t = rsa.token(&claims(
        json!({ "exp": now() as f64 + 100.5, "nbf": now() as f64 - 0.5 }),
    ));
    assert_ok(&app.bearer("/jwt", &t).await);
}

#[tokio::test]
async fn the_leeway_is_25_and_40_seconds_apart() {
    // The brief's boundary values, exactly: exp = now - 25 accepted,
    // exp = now - 40 rejected, and the same for nbf.
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    let cases = [
        (json!({ "exp": now() - 25 }), None),
        (json!({ "exp": now() - 40 }), Some(EXPIRED)),
        (json!({ "nbf": now() + 25 }), None),
        (json!({ "nbf": now() + 40 }), Some(NOT_YET_VALID)),
    ];
    for (extra, want) in cases {
        let r = app.bearer("/jwt", &rsa.token(&claims(extra.clone()))).await;
        match want {
            None => assert_ok(&r),
            Some(d) => assert_invalid_token(&r, d),
        }
    }
}

#[tokio::test]
async fn issuer_and_audience() {
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    let bad = [
        (json!({ "iss": "https://evil.test" }), BAD_ISSUER),
        (json!({ "iss": "https://idp.test/" }), BAD_ISSUER),
        (json!({ "iss": null }), BAD_ISSUER),
        (json!({ "iss": 7 }), BAD_ISSUER),
        (json!({ "aud": "other-api" }), BAD_AUDIENCE),
        (json!({ "aud": ["a", "b"] }), BAD_AUDIENCE),
        (json!({ "aud": [] }), BAD_AUDIENCE),
        (json!({ "aud": null }), BAD_AUDIENCE),
        (json!({ "aud": "ORDERS-API" }), BAD_AUDIENCE),
    ];
    for (extra, want) in bad {
        let t = rsa.token(&claims(extra.clone()));
        let r = app.bearer("/jwt", &t).await;
        assert_invalid_token(&r, want);
    }
    let t = rsa.token(&claims(json!({ "aud": ["a", "orders-api", "b"] })));
    assert_ok(&app.bearer("/jwt", &t).await);
    // A token signed with the other issuer's key but claiming this issuer:
    // this issuer does not allow HS256 at all.
    let hs = Signer::hmac("other-hs", support::OTHER_SECRET.as_bytes());
    let t = hs.token(&claims(json!({})));
    assert_invalid_token(&app.bearer("/jwt", &t).await, support::BAD_ALGORITHM);
    // With its own issuer it is fine.
    let t = hs.token(&claims(json!({ "iss": support::OTHER_ISS })));
    assert_ok(&app.bearer("/jwt", &t).await);
}

#[tokio::test]
async fn critical_headers_and_claim_types() {
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    let c = claims(json!({}));
    for header in [
        json!({ "alg": "RS256", "kid": "rsa-1", "crit": ["exp"] }),
        json!({ "alg": "RS256", "kid": "rsa-1", "crit": ["urn:example:unknown"], "urn:example:unknown": 1 }),
        json!({ "alg": "RS256", "kid": "rsa-1", "crit": [] }),
        json!({ "alg": "RS256", "kid": "rsa-1", "b64": false, "crit": ["b64"] }),
        json!({ "alg": "RS256", "kid": "rsa-1", "b64": true }),
    ] {
        let t = rsa.raw(&header, &c);
        assert_invalid_token(&app.bearer("/jwt", &t).await, UNSUPPORTED_CRIT);
    }
    let bad = [
        json!({ "exp": (now() + 300).to_string() }),
        json!({ "exp": null }),
        json!({ "exp": true }),
        json!({ "nbf": "0" }),
        json!({ "iat": "now" }),
        json!({ "sub": 42 }),
        json!({ "aud": 1 }),
        json!({ "aud": ["orders-api", 1] }),
        json!({ "scope": ["orders:read"] }),
        json!({ "scp": 1 }),
    ];
    for extra in bad {
        let t = rsa.token(&claims(extra.clone()));
        let r = app.bearer("/jwt", &t).await;
        assert_invalid_token(&r, BAD_CLAIMS);
    }
    // A header `typ` that is not a string is malformed.
    let t = rsa.raw(&json!({ "alg": "RS256", "kid": "rsa-1", "typ": 1 }), &c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, MALFORMED);
}

#[tokio::test]
async fn malformed_tokens() {
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    let good = rsa.token(&claims(json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let cases = [
        "x".to_owned(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}."),
        format!(".{p}.{s}"),
        format!("{h}..{s}"),
        // Not base64url: standard alphabet, padding, junk.
        format!("{h}=.{p}.{s}"),
        format!("{}.{p}.{s}", h.replace('-', "+").replace('_', "/") + "+/"),
        "!!!.???.###".to_owned(),
        // Not JSON, or not a JSON object.
        format!("{}.{p}.{s}", b64("{\"alg\":\"RS256\"")),
        format!("{h}.{}.{s}", b64("{not json")),
        format!("{h}.{}.{s}", b64("[1,2]")),
        format!("{}.{p}.{s}", b64("\"RS256\"")),
        // JWE compact serialization: five parts.
        format!(
            "{}.{}.{}.{}.{}",
            b64_json(&json!({ "alg": "RSA-OAEP", "enc": "A256GCM", "kid": "rsa-1" })),
            b64("encrypted key"),
            b64("iv"),
            b64("ciphertext"),
            b64("tag")
        ),
        format!("{h}.{p}.{s}.{s}.{s}"),
    ];
    for t in &cases {
        let r = app.bearer("/jwt", t).await;
        assert_invalid_token(&r, MALFORMED);
    }
    // The signature is decoded only to verify it: base64 of the wrong
    // bytes, or not base64 at all, fails as a signature.
    for t in [
        format!("{h}.{p}.{}", b64("not the signature")),
        format!("{h}.{p}.{s}!"),
    ] {
        assert_invalid_token(&app.bearer("/jwt", &t).await, support::BAD_SIGNATURE);
    }
    assert_ok(&app.bearer("/jwt", &good).await);
}

#[tokio::test]
async fn how_the_credential_is_read() {
    let (_jwks, app) = support::standard().await;
    let good = Signer::rsa().token(&claims(json!({})));
    // The scheme is case-insensitive; surrounding spaces are trimmed.
    for v in [
        format!("Bearer {good}"),
        format!("bearer {good}"),
        format!("BEARER  {good} "),
    ] {
        assert_ok(&app.get("/jwt", &[("authorization", &v)]).await);
    }
    // No credential: a bare challenge without an error code (RFC 6750 §3.1).
    for headers in [
        vec![],
        vec![("authorization", "Bearer")],
        vec![("authorization", "Bearer ")],
        vec![("authorization", "Basic YWxpY2U6c2VjcmV0")],
        vec![("authorization", good.as_str())],
    ] {
        let r = app.get("/jwt", &headers).await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.challenge(), "Bearer realm=\"apimesh\"", "{headers:?}");
        assert_eq!(r.detail(), MISSING);
    }
    // Routes that also take API keys offer both schemes.
    let r = app.get("/orders", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.challenge(),
        "Bearer realm=\"apimesh\", ApiKey realm=\"apimesh\""
    );
    // Two Authorization headers: invalid_request, even if both are good.
    let v = format!("Bearer {good}");
    let r = app
        .get("/jwt", &[("authorization", &v), ("authorization", &v)])
        .await;
    assert_401(&r, "invalid_request", AMBIGUOUS);
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_decoding() {
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    // A genuinely signed token padded to 64 KiB (the limit is 8 KiB).
    let pad = "p".repeat(64 * 1024);
    let big = rsa.token(&claims(json!({ "pad": pad })));
    assert!(big.len() > 64 * 1024);
    assert_invalid_token(&app.bearer("/jwt", &big).await, TOO_LARGE);
    // Just over the limit, and junk of the same size: the same answer.
    let junk = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(200)
    );
    assert!(junk.len() > 8 * 1024);
    assert_invalid_token(&app.bearer("/jwt", &junk).await, TOO_LARGE);
    // Exactly at the limit is still decoded (and, being junk, malformed).
    let at = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(8192 - 8002)
    );
    assert_eq!(at.len(), 8192);
    assert_invalid_token(&app.bearer("/jwt", &at).await, MALFORMED);

    // 1 MiB: hyper's server refuses a request head that large before any
    // middleware runs (over the wire it answers `431 Request Header Fields
    // Too Large`; checked below), so the layer's own answer is checked in
    // process, on the same layered router.
    let huge = format!("{}.{}.{}", "a".repeat(1 << 19), "b".repeat(1 << 19), "c");
    assert!(huge.len() > 1 << 20);
    let req = http::Request::get("/jwt")
        .header("authorization", format!("Bearer {huge}"))
        .body(axum::body::Body::empty())
        .expect("request");
    let res = app.router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), 401);
    let challenge = res
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .expect("challenge")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains(&format!("error_description=\"{TOO_LARGE}\"")),
        "{challenge}"
    );
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["detail"], TOO_LARGE);

    // Over the wire, hyper answers first.
    let req = http::Request::get(app.url("/jwt"))
        .header("authorization", format!("Bearer {huge}"))
        .body(http_body_util::Full::default())
        .expect("request");
    match support::client().request(req).await {
        Ok(res) => assert_eq!(res.status(), 431),
        // The server may also close the connection while the head is
        // still being written; either way the request never reached us.
        Err(e) => eprintln!("1 MiB header over HTTP: connection error {e}"),
    }
}

/// One issuer requiring `typ = "at+jwt"` (RFC 9068).
#[tokio::test]
async fn the_issuer_can_require_a_typ() {
    let pem = support::key_path("rsa.pub.pem");
    let app = support::app(&format!(
        r#"
[[auth.issuers]]
issuer = "{iss}"
algorithms = ["RS256"]
typ = "at+jwt"
keys = [{{ kid = "rsa-1", algorithm = "RS256", pem_file = "{pem}" }}]

[[routes]]
id = "jwt"
match = {{ path_prefix = "/jwt" }}
auth = {{ require = ["jwt"] }}
"#,
        iss = support::ISS
    ))
    .await;
    let rsa = Signer::rsa();
    let c = claims(json!({}));
    for typ in [
        "at+jwt",
        "application/at+jwt",
        "AT+JWT",
        "Application/At+JWT",
    ] {
        let t = rsa.raw(&json!({ "alg": "RS256", "kid": "rsa-1", "typ": typ }), &c);
        assert_ok(&app.bearer("/jwt", &t).await);
    }
    for typ in [
        Some("JWT"),
        Some("jwt"),
        Some("application/jwt"),
        Some("at+jwt+x"),
        None,
    ] {
        let mut header = json!({ "alg": "RS256", "kid": "rsa-1" });
        if let Some(t) = typ {
            header["typ"] = t.into();
        }
        let t = rsa.raw(&header, &c);
        assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_TYPE);
    }
}
