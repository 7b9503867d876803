//! Authorization (scopes, required claims, a route's audience and issuers),
//! the `Principal` a handler sees, anonymous routes, and the token cache.

use serde_json::{Value, json};

use crate::support::{
    self, ACME_KEY, BAD_AUDIENCE, BAD_ISSUER, CLAIM_MISMATCH, INSUFFICIENT_SCOPE, ISS, OTHER_ISS,
    OTHER_SECRET, Signer, assert_403, assert_invalid_token, assert_ok, claims,
};

#[tokio::test]
async fn a_missing_scope_is_403_with_the_scope_named() {
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    let denied = format!("{INSUFFICIENT_SCOPE}: orders:write");
    for extra in [
        json!({}),
        json!({ "scope": "orders:read" }),
        json!({ "scope": "orders:writer orders:write:all" }),
        json!({ "scope": "Orders:Write" }),
        json!({ "scope": "" }),
        json!({ "scp": ["orders:read"] }),
        // A claim of another name is not a scope.
        json!({ "scopes": "orders:write", "permissions": ["orders:write"] }),
    ] {
        let r = app
            .bearer("/write", &rsa.token(&claims(extra.clone())))
            .await;
        assert_403(&r, Some("orders:write"), &denied);
    }
    for extra in [
        json!({ "scope": "orders:write" }),
        json!({ "scope": "orders:read orders:write" }),
        json!({ "scope": "  orders:read\torders:write  " }),
        json!({ "scp": ["orders:read", "orders:write"] }),
        json!({ "scp": "orders:write" }),
        json!({ "scope": "orders:read", "scp": ["orders:write"] }),
    ] {
        assert_ok(
            &app.bearer("/write", &rsa.token(&claims(extra.clone())))
                .await,
        );
    }
}

#[tokio::test]
async fn a_required_claim_must_match() {
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    assert_ok(
        &app.bearer("/tenant", &rsa.token(&claims(json!({ "tenant": "acme" }))))
            .await,
    );
    for extra in [
        json!({ "tenant": "globex" }),
        json!({ "tenant": "ACME" }),
        json!({ "tenant": "acme " }),
        json!({}),
        json!({ "tenant": null }),
        json!({ "tenant": { "id": "acme" } }),
        json!({ "Tenant": "acme" }),
    ] {
        let r = app
            .bearer("/tenant", &rsa.token(&claims(extra.clone())))
            .await;
        assert_403(&r, None, CLAIM_MISMATCH);
    }
}

#[tokio::test]
async fn an_api_key_carries_no_scopes() {
    let (_jwks, app) = support::standard().await;
    let r = app.get("/read", &[("x-api-key", ACME_KEY)]).await;
    assert_403(
        &r,
        Some("orders:read"),
        &format!("{INSUFFICIENT_SCOPE}: orders:read"),
    );
    let t = Signer::rsa().token(&claims(json!({ "scope": "orders:read" })));
    assert_ok(&app.bearer("/read", &t).await);
    // Without a key or a token it is 401, not 403.
    let r = app.get("/read", &[]).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_route_narrows_the_audience_and_the_issuers() {
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    // `/special` accepts only `special-api`, instead of the issuer's list.
    let t = rsa.token(&claims(json!({})));
    assert_invalid_token(&app.bearer("/special", &t).await, BAD_AUDIENCE);
    let t = rsa.token(&claims(json!({ "aud": "special-api" })));
    assert_ok(&app.bearer("/special", &t).await);
    // ...and that token is not for the other routes.
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_AUDIENCE);
    // `/other` accepts only the other issuer.
    let t = rsa.token(&claims(json!({})));
    assert_invalid_token(&app.bearer("/other", &t).await, BAD_ISSUER);
    let hs = Signer::hmac("other-hs", OTHER_SECRET.as_bytes());
    let t = hs.token(&claims(json!({ "iss": OTHER_ISS })));
    assert_ok(&app.bearer("/other", &t).await);
    assert_ok(&app.bearer("/jwt", &t).await);
}

#[tokio::test]
async fn the_handler_sees_the_principal() {
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    let t = rsa.token(&claims(json!({
        "sub": "alice",
        "azp": "acme",
        "scope": "orders:read orders:write",
        "tenant": "acme",
    })));
    let r = app.bearer("/whoami", &t).await;
    assert_ok(&r);
    assert_eq!(
        r.json(),
        json!({
            "method": "Jwt",
            "subject": "alice",
            "issuer": ISS,
            "scopes": ["orders:read", "orders:write"],
            "consumer": "acme",
            "tenant": "acme",
        })
    );
    // The consumer claim names a consumer only when it is configured.
    let t = rsa.token(&claims(json!({ "azp": "mobile-app" })));
    assert_eq!(
        app.bearer("/whoami", &t).await.json()["consumer"],
        "mobile-app"
    );
    for azp in [json!("nobody"), json!(7), json!(["acme"])] {
        let t = rsa.token(&claims(json!({ "azp": azp })));
        let r = app.bearer("/whoami", &t).await;
        assert_ok(&r);
        assert_eq!(r.json()["consumer"], Value::Null, "azp {azp}");
    }
    // No `sub`: none in the principal either.
    let t = rsa.token(&claims(json!({ "sub": null })));
    assert_eq!(
        app.bearer("/whoami", &t).await.json()["subject"],
        Value::Null
    );
    // An API key names its consumer.
    let r = app.get("/whoami", &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(
        r.json(),
        json!({
            "method": "ApiKey",
            "subject": null,
            "issuer": null,
            "scopes": [],
            "consumer": "acme",
            "tenant": null,
        })
    );
}

#[tokio::test]
async fn anonymous_routes_need_nothing() {
    let (_jwks, app) = support::standard().await;
    // `require = ["none"]`, and a route without an auth block.
    for path in ["/open", "/open/x", "/plain", "/plain/x"] {
        let r = app.get(path, &[]).await;
        assert_ok(&r);
        assert_eq!(r.principal(), Value::Null);
        // Credentials are not checked there: a forged token or an unknown
        // key is neither rejected nor turned into a principal...
        let forged = Signer::attacker()
            .with_kid("rsa-1")
            .token(&claims(json!({})));
        let r = app.bearer(path, &forged).await;
        assert_ok(&r);
        assert_eq!(r.principal(), Value::Null);
        // ...nor stripped.
        let r = app.get(path, &[("x-api-key", ACME_KEY)]).await;
        assert_ok(&r);
        assert!(
            r.json()["headers"]
                .as_array()
                .expect("headers")
                .contains(&json!("x-api-key"))
        );
    }
    // A handler that insists on a principal, on a route without auth.
    let r = app.get("/plain/whoami", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.detail(), "this route is not authenticated");
    // Unrouted requests are not served at all (`Unmatched::NotFound`).
    let r = app.get("/nowhere", &[]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_cached_token_still_meets_each_routes_requirements() {
    let (_jwks, app) = support::standard().await;
    let t = Signer::rsa().token(&claims(json!({ "scope": "orders:read" })));
    // The same token again and again: verified once, then from the cache.
    for _ in 0..3 {
        assert_ok(&app.bearer("/jwt", &t).await);
    }
    // The route-dependent checks run on every hit.
    let r = app.bearer("/write", &t).await;
    assert_403(
        &r,
        Some("orders:write"),
        &format!("{INSUFFICIENT_SCOPE}: orders:write"),
    );
    assert_invalid_token(&app.bearer("/special", &t).await, BAD_AUDIENCE);
    assert_invalid_token(&app.bearer("/other", &t).await, BAD_ISSUER);
    assert_403(
        &app.bearer("/tenant", &t).await,
        None,
        support::CLAIM_MISMATCH,
    );
    assert_ok(&app.bearer("/read", &t).await);
    assert_ok(&app.bearer("/jwt", &t).await);
    // A one-character change is another token (and a bad signature).
    let mut tampered = t.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_invalid_token(&app.bearer("/jwt", &tampered).await, support::BAD_SIGNATURE);
    assert_ok(&app.bearer("/jwt", &t).await);
}
