//! Remote key sets: the refetch budget under a flood of unknown kids,
//! outages, rotation, OIDC discovery, and which published keys are used.

use std::time::Instant;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::{
    self, AUD, BAD_ALGORITHM, BAD_SIGNATURE, ISS, JwksServer, OTHER_ISS, OTHER_SECRET, Signer,
    UNKNOWN_KID, assert_invalid_token, assert_ok, b64, b64_json, claims, random_kid,
};

#[tokio::test]
async fn a_flood_of_random_kids_costs_at_most_one_fetch() {
    let (mut jwks, app) = support::standard().await;
    // Build the authenticator without touching the JWKS's on-demand budget
    // (a token of the other issuer, whose key is static), then wait for the
    // JWKS's first background fetch.
    let hs = Signer::hmac("other-hs", OTHER_SECRET.as_bytes());
    assert_ok(
        &app.bearer("/jwt", &hs.token(&claims(json!({ "iss": OTHER_ISS }))))
            .await,
    );
    jwks.wait_fetches(1).await;
    let before = jwks.fetches();

    // 2,000 tokens with random kids, 50 at a time; each batch also carries a
    // fresh (never cached) valid token, which must keep working.
    let rsa = Signer::rsa();
    let payload = b64_json(&claims(json!({})));
    let started = Instant::now();
    let mut rejected = 0;
    for batch in 0..40 {
        let mut set = JoinSet::new();
        for _ in 0..50 {
            let header = b64_json(&json!({ "alg": "RS256", "kid": random_kid() }));
            let token = format!("{header}.{payload}.{}", b64("forged"));
            let client = app.http();
            let url = app.url("/jwt");
            set.spawn(async move { (false, get(&client, &url, &token).await) });
        }
        let valid = rsa.token(&claims(json!({ "jti": format!("valid-{batch}") })));
        let (client, url) = (app.http(), app.url("/jwt"));
        set.spawn(async move { (true, get(&client, &url, &valid).await) });
        while let Some(joined) = set.join_next().await {
            let (valid, r) = joined.expect("task");
            if valid {
                assert_ok(&r);
            } else {
                assert_invalid_token(&r, UNKNOWN_KID);
                rejected += 1;
            }
        }
    }
    assert_eq!(rejected, 2000);
    let after = jwks.fetches();
    eprintln!(
        "2,000 random kids in {:?}: {} JWKS fetch(es)",
        started.elapsed(),
        after - before
    );
    assert!(
        after - before <= 1,
        "{} fetches for 2,000 unknown kids",
        after - before
    );
    // Afterwards: valid tokens work, and still no fetch.
    let t = rsa.token(&claims(json!({ "jti": "after" })));
    assert_ok(&app.bearer("/jwt", &t).await);
    assert_eq!(jwks.fetches(), after);
    // The flood took well under the 10 s unknown_kid_interval, or the
    // budget was not what was measured.
    assert!(started.elapsed().as_secs() < 10);
}

async fn get(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    url: &str,
    token: &str,
) -> support::Reply {
    let req = http::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Default::default())
        .expect("request");
    support::send_with(client, req).await
}

#[tokio::test]
async fn an_outage_keeps_the_last_good_keys() {
    // With `unknown_kid_interval = "0s"` every unknown kid refetches, so the
    // failed fetches during the outage really happen.
    let mut jwks = support::idp().await;
    let app = support::app(&support::config_with(
        &jwks.url(),
        r#"unknown_kid_interval = "0s""#,
    ))
    .await;
    let rsa = Signer::rsa();
    assert_ok(
        &app.bearer("/jwt", &rsa.token(&claims(json!({ "jti": "a" }))))
            .await,
    );
    // Startup costs one fetch: the first request waits for the background
    // fetch already running instead of starting its own.
    jwks.wait_fetches(1).await;
    assert_eq!(jwks.fetches(), 1);
    let fetched = jwks.fetches();

    jwks.shutdown().await;
    // Unknown kids now trigger fetches that fail...
    for _ in 0..3 {
        let t = rsa.with_kid(&random_kid()).token(&claims(json!({})));
        assert_invalid_token(&app.bearer("/jwt", &t).await, UNKNOWN_KID);
    }
    assert_eq!(jwks.fetches(), fetched, "the server is down");
    // ...and the cached keys keep verifying new tokens.
    for jti in ["b", "c"] {
        let t = rsa.token(&claims(json!({ "jti": jti, "sub": format!("user-{jti}") })));
        let r = app.bearer("/whoami", &t).await;
        assert_ok(&r);
        assert_eq!(r.json()["subject"], format!("user-{jti}"));
    }
    assert_ok(
        &app.bearer("/jwt", &Signer::ec().token(&claims(json!({}))))
            .await,
    );
    assert_ok(
        &app.bearer("/jwt", &Signer::ed().token(&claims(json!({}))))
            .await,
    );
}

#[tokio::test]
async fn keys_rotate() {
    let jwks = JwksServer::start(vec![Signer::rsa().jwk()]).await;
    let app = support::app(&support::config_with(
        &jwks.url(),
        r#"unknown_kid_interval = "0s""#,
    ))
    .await;
    let (old, new) = (Signer::rsa(), Signer::rsa2());
    let old_token = old.token(&claims(json!({ "jti": "old" })));
    assert_ok(&app.bearer("/jwt", &old_token).await);
    let new_token = new.token(&claims(json!({ "jti": "new" })));
    assert_invalid_token(&app.bearer("/jwt", &new_token).await, UNKNOWN_KID);

    // Publish the new key: a token carrying its kid verifies at once.
    jwks.set_keys(vec![old.jwk(), new.jwk()]);
    assert_ok(&app.bearer("/jwt", &new_token).await);
    assert_ok(&app.bearer("/jwt", &old_token).await);

    // Withdraw the old key; any unknown kid refetches.
    jwks.set_keys(vec![new.jwk()]);
    let probe = new.with_kid(&random_kid()).token(&claims(json!({})));
    assert_invalid_token(&app.bearer("/jwt", &probe).await, UNKNOWN_KID);
    // The old token was verified and cached, but its key is gone.
    assert_invalid_token(&app.bearer("/jwt", &old_token).await, UNKNOWN_KID);
    let fresh_old = old.token(&claims(json!({ "jti": "old-2" })));
    assert_invalid_token(&app.bearer("/jwt", &fresh_old).await, UNKNOWN_KID);
    assert_ok(&app.bearer("/jwt", &new_token).await);

    // Re-key under the same kid: a token cached under the previous material
    // is verified again, against the new key, and fails.
    let attacker = Signer::attacker();
    jwks.set_keys(vec![attacker.with_kid("rsa-2").jwk()]);
    assert_invalid_token(&app.bearer("/jwt", &probe).await, UNKNOWN_KID);
    assert_invalid_token(&app.bearer("/jwt", &new_token).await, BAD_SIGNATURE);
    let t = attacker.with_kid("rsa-2").token(&claims(json!({})));
    assert_ok(&app.bearer("/jwt", &t).await);
}

fn discovery_config(issuer: &str) -> String {
    format!(
        r#"
[[auth.issuers]]
issuer = "{issuer}"
audiences = ["{AUD}"]
algorithms = ["RS256"]
discovery = true

[[routes]]
id = "jwt"
match = {{ path_prefix = "/jwt" }}
auth = {{ require = ["jwt"] }}
"#
    )
}

#[tokio::test]
async fn oidc_discovery_finds_the_keys() {
    let jwks = JwksServer::start(vec![Signer::rsa().jwk()]).await;
    let issuer = jwks.base();
    jwks.set_discovery(json!({
        "issuer": issuer,
        "jwks_uri": jwks.url(),
        "authorization_endpoint": format!("{issuer}/authorize"),
    }));
    let app = support::app(&discovery_config(&issuer)).await;
    let t = Signer::rsa().token(&claims(json!({ "iss": issuer })));
    assert_ok(&app.bearer("/jwt", &t).await);
    assert!(jwks.discoveries() >= 1);
    assert!(jwks.fetches() >= 1);
    // A token naming the issuer with a trailing slash is another issuer.
    let t = Signer::rsa().token(&claims(json!({ "iss": format!("{issuer}/") })));
    assert_invalid_token(&app.bearer("/jwt", &t).await, support::BAD_ISSUER);
}

#[tokio::test]
async fn a_discovery_document_must_name_the_issuer() {
    let cases: [fn(&str, &str) -> Value; 3] = [
        // Another issuer (OIDC Discovery §4.3).
        |_, jwks_uri| json!({ "issuer": "https://evil.test", "jwks_uri": jwks_uri }),
        // The issuer with a trailing slash is not the issuer.
        |issuer, jwks_uri| json!({ "issuer": format!("{issuer}/"), "jwks_uri": jwks_uri }),
        // No issuer at all.
        |_, jwks_uri| json!({ "jwks_uri": jwks_uri }),
    ];
    for doc in cases {
        let jwks = JwksServer::start(vec![Signer::rsa().jwk()]).await;
        let issuer = jwks.base();
        jwks.set_discovery(doc(&issuer, &jwks.url()));
        let app = support::app(&discovery_config(&issuer)).await;
        let t = Signer::rsa().token(&claims(json!({ "iss": issuer })));
        assert_invalid_token(&app.bearer("/jwt", &t).await, UNKNOWN_KID);
        assert!(jwks.discoveries() >= 1);
        assert_eq!(
            jwks.fetches(),
            0,
            "the jwks_uri of a bad document is not followed"
        );
    }
    // A jwks_uri that is not http(s) is not followed either.
    let jwks = JwksServer::start(vec![Signer::rsa().jwk()]).await;
    let issuer = jwks.base();
    jwks.set_discovery(json!({ "issuer": issuer, "jwks_uri": "file:///etc/passwd" }));
    let app = support::app(&discovery_config(&issuer)).await;
    let t = Signer::rsa().token(&claims(json!({ "iss": issuer })));
    assert_invalid_token(&app.bearer("/jwt", &t).await, UNKNOWN_KID);
}

fn without_alg(mut jwk: Value) -> Value {
    jwk.as_object_mut().expect("object").remove("alg");
    jwk
}

#[tokio::test]
async fn only_usable_published_keys_are_used() {
    let secret = b"published-hmac-secret-0123456789abcdef";
    let jwks = JwksServer::start(vec![
        Signer::rsa().jwk(),
        // A symmetric key in a JWKS is never used (nor is it a secret then).
        json!({ "kty": "oct", "kid": "oct-1", "alg": "HS256", "k": b64(secret) }),
        // An RSA key without `alg` fits both RS256 and PS256: ambiguous.
        without_alg(Signer::rsa2().with_kid("rsa-noalg").jwk()),
        // An EC P-256 key without `alg` fits only ES256: bound to it.
        without_alg(Signer::ec().with_kid("ec-noalg").jwk()),
        // An encryption key.
        {
            let mut k = Signer::rsa2().with_kid("rsa-enc").jwk();
            k["use"] = "enc".into();
            k
        },
        // Junk next to good keys does not spoil the set.
        json!({ "kty": "RSA", "kid": "broken", "alg": "RS256", "n": "!!", "e": "AQAB" }),
        json!({ "kty": "nope", "kid": "nope" }),
        json!("not a key"),
    ])
    .await;
    let app = support::app(&format!(
        r#"
[[auth.issuers]]
issuer = "{ISS}"
algorithms = ["RS256", "PS256", "ES256", "HS256"]
jwks_uri = "{}"

[[routes]]
id = "jwt"
match = {{ path_prefix = "/jwt" }}
auth = {{ require = ["jwt"] }}
"#,
        jwks.url()
    ))
    .await;
    let c = claims(json!({}));
    assert_ok(&app.bearer("/jwt", &Signer::rsa().token(&c)).await);
    assert_ok(
        &app.bearer("/jwt", &Signer::ec().with_kid("ec-noalg").token(&c))
            .await,
    );
    let t = Signer::hmac("oct-1", secret).token(&c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, UNKNOWN_KID);
    let t = Signer::rsa2().with_kid("rsa-noalg").token(&c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, UNKNOWN_KID);
    let t = Signer::rsa2().with_kid("rsa-enc").token(&c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, UNKNOWN_KID);
    // A key published for RS256 does not verify PS256.
    let t = Signer::rsa().raw(&json!({ "alg": "PS256", "kid": "rsa-1" }), &c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_ALGORITHM);
}

#[tokio::test]
async fn a_config_change_reuses_the_key_set() {
    let (mut jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    assert_ok(
        &app.bearer("/jwt", &rsa.token(&claims(json!({ "jti": "1" }))))
            .await,
    );
    jwks.wait_fetches(1).await;
    let fetched = jwks.fetches();

    // A new route: the issuers are unchanged.
    let mut config = support::config(&jwks.url());
    config.push_str(
        r#"
[[routes]]
id = "new"
match = { path_prefix = "/new" }
auth = { require = ["jwt"], scopes = ["new:scope"] }
"#,
    );
    app.update(&config).await;
    let t = rsa.token(&claims(json!({ "jti": "2" })));
    assert_ok(&app.bearer("/jwt", &t).await);
    assert_eq!(
        app.bearer("/new", &t).await.status,
        403,
        "the new route is enforced"
    );
    let t = rsa.token(&claims(json!({ "jti": "3", "scope": "new:scope" })));
    assert_ok(&app.bearer("/new", &t).await);

    // New audiences, same key source: the new audiences apply at once.
    let config = config.replace(
        &format!(r#"audiences = ["{AUD}"]"#),
        r#"audiences = ["v2-api"]"#,
    );
    app.update(&config).await;
    assert_invalid_token(&app.bearer("/jwt", &t).await, support::BAD_AUDIENCE);
    let t = rsa.token(&claims(json!({ "aud": "v2-api" })));
    assert_ok(&app.bearer("/jwt", &t).await);
    assert_eq!(
        jwks.fetches(),
        fetched,
        "the key set was reused, not refetched"
    );
}
