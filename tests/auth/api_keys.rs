//! API keys: stored as SHA-256 digests, read from one header (or, when
//! configured, one query parameter), never passed on to the handler.

use serde_json::json;

use crate::support::{
    self, ACME_DIGEST, ACME_KEY, AMBIGUOUS, App, BAD_SIGNATURE, ISS, MISSING, Signer,
    UNKNOWN_API_KEY, UNKNOWN_KEY, assert_401, assert_invalid_token, assert_ok, claims,
};

/// `printf %s test-key-upper-5555555555 | sha256sum`, written in upper case.
const UPPER_KEY: &str = "test-key-upper-5555555555";
const UPPER_DIGEST: &str = "9D1BA247D8BC4DAEAE8A1B170F8AF12B37DCC851FB9395CE384D80D2A2DEDCFC";

fn config(extra_auth: &str) -> String {
    let pem = support::key_path("rsa.pub.pem");
    format!(
        r#"
[auth]
{extra_auth}

[[auth.issuers]]
issuer = "{ISS}"
algorithms = ["RS256"]
keys = [{{ kid = "rsa-1", algorithm = "RS256", pem_file = "{pem}" }}]

[[consumers]]
id = "acme"
api_keys = ["sha256:{ACME_DIGEST}"]

[[consumers]]
id = "upper"
api_keys = ["sha256:{UPPER_DIGEST}"]

[[routes]]
id = "keys"
match = {{ path_prefix = "/keys" }}
auth = {{ require = ["api_key"] }}

[[routes]]
id = "either"
match = {{ path_prefix = "/either" }}
auth = {{ require = ["jwt", "api_key"] }}

[[routes]]
id = "jwt"
match = {{ path_prefix = "/jwt" }}
auth = {{ require = ["jwt"] }}
"#
    )
}

async fn keys_app() -> App {
    support::app(&config(r#"api_key_query = "api_key""#)).await
}

/// 401 for a route that takes only API keys: a bare `ApiKey` challenge.
#[track_caller]
fn assert_key_401(r: &support::Reply, detail: &str) {
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.challenge(), "ApiKey realm=\"apimesh\"");
    assert_eq!(r.detail(), detail);
}

fn header_names(r: &support::Reply) -> Vec<String> {
    r.json()["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| h.as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn a_valid_key_admits_and_the_handler_never_sees_it() {
    let app = keys_app().await;
    for (key, consumer) in [(ACME_KEY, "acme"), (UPPER_KEY, "upper")] {
        for path in ["/keys/1", "/either/1"] {
            let r = app.get(path, &[("x-api-key", key), ("x-trace", "t")]).await;
            assert_ok(&r);
            let p = r.principal();
            assert_eq!(p["method"], "ApiKey");
            assert_eq!(p["consumer"], consumer);
            assert_eq!(p["subject"], serde_json::Value::Null);
            assert_eq!(p["scopes"], json!([]));
            let names = header_names(&r);
            assert!(names.contains(&"x-trace".to_owned()), "{names:?}");
            assert!(!names.contains(&"x-api-key".to_owned()), "{names:?}");
        }
    }
}

#[tokio::test]
async fn an_unknown_key_is_401() {
    let app = keys_app().await;
    for key in [
        UNKNOWN_KEY,
        "",
        "TEST-KEY-ACME-0123456789",
        "test-key-acme-012345678",
    ] {
        let r = app.get("/keys/1", &[("x-api-key", key)]).await;
        assert_key_401(&r, UNKNOWN_API_KEY);
    }
    // A digest is not a key.
    let r = app.get("/keys/1", &[("x-api-key", ACME_DIGEST)]).await;
    assert_key_401(&r, UNKNOWN_API_KEY);
    // On a route that also takes tokens: both schemes, no bearer error.
    let r = app.get("/either/1", &[("x-api-key", UNKNOWN_KEY)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.challenge(),
        "Bearer realm=\"apimesh\", ApiKey realm=\"apimesh\""
    );
    assert_eq!(r.detail(), UNKNOWN_API_KEY);
    // Nothing at all.
    assert_key_401(&app.get("/keys/1", &[]).await, MISSING);
    // A key on a route that takes only tokens is not a credential there.
    let r = app.get("/jwt", &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.challenge(), "Bearer realm=\"apimesh\"");
    assert_eq!(r.detail(), MISSING);
}

#[tokio::test]
async fn a_key_in_the_query_is_taken_and_removed() {
    let app = keys_app().await;
    let cases = [
        (format!("/keys/list?api_key={ACME_KEY}"), "/keys/list"),
        (
            format!("/keys/list?api_key={ACME_KEY}&x=1"),
            "/keys/list?x=1",
        ),
        (
            format!("/keys/list?a=1&api_key={ACME_KEY}&b=2"),
            "/keys/list?a=1&b=2",
        ),
        // Percent-encoded, as a client may send it.
        (
            "/keys/list?api_key=test%2Dkey%2Dacme%2D0123456789&x=1".to_owned(),
            "/keys/list?x=1",
        ),
        (format!("/either?api_key={ACME_KEY}"), "/either"),
    ];
    for (path, seen) in &cases {
        let r = app.get(path, &[]).await;
        assert_ok(&r);
        assert_eq!(r.json()["uri"], *seen, "{path}");
        assert_eq!(r.principal()["consumer"], "acme");
    }
    // Another parameter name is not read; a similar one is left alone.
    let r = app.get(&format!("/keys/list?apikey={ACME_KEY}"), &[]).await;
    assert_key_401(&r, MISSING);
    let r = app
        .get(&format!("/keys/list?api_key={UNKNOWN_KEY}"), &[])
        .await;
    assert_key_401(&r, UNKNOWN_API_KEY);
    // On a token-only route the query is not read, nor touched.
    let r = app.get(&format!("/jwt?api_key={ACME_KEY}"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.detail(), MISSING);
    let token = Signer::rsa().token(&claims(json!({ "aud": null })));
    let r = app
        .bearer(&format!("/jwt?api_key={ACME_KEY}&x=1"), &token)
        .await;
    assert_ok(&r);
    assert_eq!(r.json()["uri"], format!("/jwt?api_key={ACME_KEY}&x=1"));
}

#[tokio::test]
async fn without_api_key_query_the_query_is_never_read() {
    let app = support::app(&config("")).await;
    let r = app
        .get(&format!("/keys/list?api_key={ACME_KEY}"), &[])
        .await;
    assert_key_401(&r, MISSING);
    let r = app
        .get(
            &format!("/keys/list?api_key={ACME_KEY}"),
            &[("x-api-key", ACME_KEY)],
        )
        .await;
    assert_ok(&r);
    assert_eq!(r.json()["uri"], format!("/keys/list?api_key={ACME_KEY}"));
}

#[tokio::test]
async fn two_keys_at_once_are_ambiguous() {
    let app = keys_app().await;
    let query = format!("/keys/1?api_key={ACME_KEY}");
    // Header and query, even the same key.
    let r = app.get(&query, &[("x-api-key", ACME_KEY)]).await;
    assert_key_401(&r, AMBIGUOUS);
    // Two headers.
    let r = app
        .get(
            "/keys/1",
            &[("x-api-key", ACME_KEY), ("x-api-key", ACME_KEY)],
        )
        .await;
    assert_key_401(&r, AMBIGUOUS);
    let r = app
        .get(
            "/keys/1",
            &[("x-api-key", UNKNOWN_KEY), ("x-api-key", ACME_KEY)],
        )
        .await;
    assert_key_401(&r, AMBIGUOUS);
    // Where tokens are accepted too, the bearer challenge says invalid_request.
    let r = app
        .get(
            &format!("/either?api_key={ACME_KEY}"),
            &[("x-api-key", ACME_KEY)],
        )
        .await;
    assert_401(&r, "invalid_request", AMBIGUOUS);
}

#[tokio::test]
async fn two_keys_in_the_query_are_ambiguous() {
    // Like two headers, two `api_key` parameters are two credentials
    // (HTTP parameter pollution: a proxy or a log may read the other one).
    let app = keys_app().await;
    for path in [
        format!("/keys/1?api_key={ACME_KEY}&api_key={UNKNOWN_KEY}"),
        format!("/keys/1?api_key={UNKNOWN_KEY}&api_key={ACME_KEY}"),
        format!("/keys/1?api_key={ACME_KEY}&api_key={ACME_KEY}"),
    ] {
        let r = app.get(&path, &[]).await;
        assert_key_401(&r, AMBIGUOUS);
    }
}

#[tokio::test]
async fn a_custom_header_name() {
    let app = support::app(&config(r#"api_key_header = "X-Partner-Key""#)).await;
    let r = app
        .get(
            "/keys/1",
            &[("x-partner-key", ACME_KEY), ("x-api-key", "kept")],
        )
        .await;
    assert_ok(&r);
    let names = header_names(&r);
    assert!(!names.contains(&"x-partner-key".to_owned()), "{names:?}");
    // The default header is nothing special any more: passed on as is.
    assert!(names.contains(&"x-api-key".to_owned()), "{names:?}");
    let r = app.get("/keys/1", &[("x-api-key", ACME_KEY)]).await;
    assert_key_401(&r, MISSING);
    let r = app.get("/keys/1", &[("x-partner-key", UNKNOWN_KEY)]).await;
    assert_key_401(&r, UNKNOWN_API_KEY);
}

#[tokio::test]
async fn a_token_takes_precedence_over_a_key() {
    let app = keys_app().await;
    let token = Signer::rsa().token(&claims(json!({ "aud": null })));
    // Both sent: the token decides, and the key is still removed.
    let r = app
        .get(
            "/either",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-api-key", ACME_KEY),
            ],
        )
        .await;
    assert_ok(&r);
    assert_eq!(r.principal()["method"], "Jwt");
    assert!(!header_names(&r).contains(&"x-api-key".to_owned()));
    // A bad token is not rescued by a good key.
    let forged = Signer::attacker()
        .with_kid("rsa-1")
        .token(&claims(json!({})));
    let r = app
        .get(
            "/either",
            &[
                ("authorization", &format!("Bearer {forged}")),
                ("x-api-key", ACME_KEY),
            ],
        )
        .await;
    assert_invalid_token(&r, BAD_SIGNATURE);
}
