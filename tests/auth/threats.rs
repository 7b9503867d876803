//! RFC 8725 threats, each over real HTTP against the standard setup (keys
//! from a JWKS) or static keys: `alg: none`, algorithm confusion, embedded
//! keys, `jku`/`x5u`, `kid` injection, and the ECDSA zero signature.

use std::io::ErrorKind;

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::support::{
    self, BAD_ALGORITHM, BAD_SIGNATURE, MALFORMED, OTHER_SECRET, Signer, UNKNOWN_KID,
    assert_invalid_token, assert_ok, b64, b64_json, claims,
};

#[tokio::test]
async fn alg_none_is_rejected_in_every_spelling() {
    let (_jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    assert_ok(&app.bearer("/jwt", &rsa.token(&claims(json!({})))).await);
    for alg in ["none", "None", "NONE", "nOnE"] {
        for kid in [None, Some("rsa-1")] {
            let mut header = json!({ "alg": alg, "typ": "JWT" });
            if let Some(k) = kid {
                header["kid"] = k.into();
            }
            let input = format!("{}.{}", b64_json(&header), b64_json(&claims(json!({}))));
            // The unsecured form: an empty signature. Not a compact JWS with
            // a signature, so it is refused before `alg` is even read.
            let r = app.bearer("/jwt", &format!("{input}.")).await;
            assert_invalid_token(&r, MALFORMED);
            // A non-empty signature: junk, and a genuine RS256 signature of
            // the same input.
            let junk = format!("{input}.{}", b64("signature"));
            assert_invalid_token(&app.bearer("/jwt", &junk).await, BAD_ALGORITHM);
            let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &rsa.key, Algorithm::RS256)
                .expect("sign");
            let genuine = format!("{input}.{sig}");
            assert_invalid_token(&app.bearer("/jwt", &genuine).await, BAD_ALGORITHM);
        }
    }
}

/// Issuers with static keys: `conf` allows only RS256; `mixed` allows RS256
/// and HS256, with its own HMAC secret under another kid.
fn confusion_config() -> String {
    let pem = support::key_path("rsa.pub.pem");
    format!(
        r#"
[[auth.issuers]]
issuer = "https://conf.test"
algorithms = ["RS256"]
keys = [{{ kid = "rsa-1", algorithm = "RS256", pem_file = "{pem}" }}]

[[auth.issuers]]
issuer = "https://mixed.test"
algorithms = ["RS256", "HS256"]
keys = [
  {{ kid = "rsa-1", algorithm = "RS256", pem_file = "{pem}" }},
  {{ kid = "hs-1", algorithm = "HS256", secret = "{OTHER_SECRET}" }},
]

[[routes]]
id = "jwt"
match = {{ path_prefix = "/jwt" }}
auth = {{ require = ["jwt"] }}
"#
    )
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let app = support::app(&confusion_config()).await;
    let rsa = Signer::rsa();
    let jwk_json = serde_json::to_string(&rsa.jwk()).expect("json");
    let secrets: [(&str, &[u8]); 2] = [
        ("public key PEM", support::RSA_PUBLIC),
        ("public JWK JSON", jwk_json.as_bytes()),
    ];
    for iss in ["https://conf.test", "https://mixed.test"] {
        let c = claims(json!({ "iss": iss, "aud": null }));
        // Controls: the genuine RS256 token verifies.
        assert_ok(&app.bearer("/jwt", &rsa.token(&c)).await);
        for (what, secret) in secrets {
            let forged = Signer::hmac("rsa-1", secret);
            let t = forged.raw(&json!({ "alg": "HS256", "typ": "JWT", "kid": "rsa-1" }), &c);
            let r = app.bearer("/jwt", &t).await;
            assert_invalid_token(&r, BAD_ALGORITHM);
            // The same forgery through jsonwebtoken's own encoder.
            let r = app.bearer("/jwt", &forged.token(&c)).await;
            assert_invalid_token(&r, BAD_ALGORITHM);
            eprintln!("{iss}: HS256 keyed with the {what} rejected");
        }
    }
    // On the mixed issuer, HS256 is allowed, but only with its own key:
    let c = claims(json!({ "iss": "https://mixed.test", "aud": null }));
    assert_ok(
        &app.bearer(
            "/jwt",
            &Signer::hmac("hs-1", OTHER_SECRET.as_bytes()).token(&c),
        )
        .await,
    );
    for (_, secret) in secrets {
        // ...not when the forgery names the HMAC key's kid,
        let t = Signer::hmac("hs-1", secret).token(&c);
        assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_SIGNATURE);
        // ...nor without a kid (the one HS256 key is picked).
        let t = Signer::hmac("-", secret).raw(&json!({ "alg": "HS256" }), &c);
        assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_SIGNATURE);
    }
}

#[tokio::test]
async fn an_embedded_jwk_header_is_ignored() {
    let (_jwks, app) = support::standard().await;
    let attacker = Signer::attacker();
    let jwk = attacker.jwk();
    let c = claims(json!({}));
    // No kid: the issuer's one RS256 key is used, and the signature fails.
    let t = attacker.raw(&json!({ "alg": "RS256", "jwk": jwk }), &c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_SIGNATURE);
    // The issuer's kid: its key, not the embedded one.
    let t = attacker.raw(&json!({ "alg": "RS256", "kid": "rsa-1", "jwk": jwk }), &c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_SIGNATURE);
    // The attacker's own kid is nobody's.
    let t = attacker.raw(
        &json!({ "alg": "RS256", "kid": "attacker", "jwk": jwk }),
        &c,
    );
    assert_invalid_token(&app.bearer("/jwt", &t).await, UNKNOWN_KID);
    // An embedded symmetric key, with HMAC (not allowed for this issuer).
    let secret = b"attacker-chosen-hmac-secret-0123456789";
    let oct = json!({ "kty": "oct", "k": b64(secret), "alg": "HS256" });
    let t = Signer::hmac("-", secret).raw(&json!({ "alg": "HS256", "jwk": oct }), &c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_ALGORITHM);
}

#[tokio::test]
async fn jku_and_x5u_are_never_fetched() {
    let (jwks, app) = support::standard().await;
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    trap.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", trap.local_addr().expect("addr"));
    let attacker = Signer::attacker();
    let c = claims(json!({}));
    for member in ["jku", "x5u"] {
        let target = format!("{url}/{member}.json");
        let t = attacker.raw(
            &json!({ "alg": "RS256", "kid": "attacker", member: target }),
            &c,
        );
        assert_invalid_token(&app.bearer("/jwt", &t).await, UNKNOWN_KID);
        let t = attacker.raw(
            &json!({ "alg": "RS256", "kid": "rsa-1", member: target }),
            &c,
        );
        assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_SIGNATURE);
        let t = attacker.raw(&json!({ "alg": "RS256", member: target }), &c);
        assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_SIGNATURE);
    }
    // Both at once, with an x5c chain for good measure.
    let t = attacker.raw(
        &json!({ "alg": "RS256", "kid": "attacker", "jku": url, "x5u": url, "x5c": [b64("junk")] }),
        &c,
    );
    assert_invalid_token(&app.bearer("/jwt", &t).await, UNKNOWN_KID);
    // The app still works, and the trap never saw a connection.
    assert_ok(&app.bearer("/jwt", &Signer::rsa().token(&c)).await);
    match trap.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the token's URL was contacted: {other:?}"),
    }
    assert!(
        jwks.paths().iter().all(|p| p == "/jwks.json"),
        "{:?}",
        jwks.paths()
    );
}

#[tokio::test]
async fn kid_injection_is_only_a_map_lookup() {
    let (jwks, app) = support::standard().await;
    let rsa = Signer::rsa();
    let c = claims(json!({}));
    assert_ok(&app.bearer("/jwt", &rsa.token(&c)).await);
    let long = "k".repeat(4096);
    let kids = [
        "../../../etc/passwd",
        "/dev/null",
        "' OR 1=1 --",
        "\" OR \"\"=\"",
        "http://127.0.0.1:1/x",
        "%00",
        "rsa-1\u{0}",
        "\u{0}",
        "rsa-1/../rsa-1",
        "RSA-1",
        " rsa-1",
        "",
        long.as_str(),
    ];
    for kid in kids {
        let t = rsa.with_kid(kid).token(&c);
        let r = app.bearer("/jwt", &t).await;
        assert_invalid_token(&r, UNKNOWN_KID);
    }
    // A kid that is not a string at all.
    for kid in [
        json!(1),
        json!(null),
        json!(["rsa-1"]),
        json!({ "kid": "rsa-1" }),
    ] {
        let t = rsa.raw(&json!({ "alg": "RS256", "kid": kid }), &c);
        assert_invalid_token(&app.bearer("/jwt", &t).await, MALFORMED);
    }
    assert_ok(&app.bearer("/jwt", &rsa.token(&c)).await);
    let paths = jwks.paths();
    assert!(!paths.is_empty());
    assert!(paths.iter().all(|p| p == "/jwks.json"), "{paths:?}");
}

#[tokio::test]
async fn ecdsa_zero_signature_is_rejected() {
    // CVE-2022-21449 ("psychic signatures"): r = s = 0 must never verify.
    let (_jwks, app) = support::standard().await;
    let ec = Signer::ec();
    let c = claims(json!({}));
    assert_ok(&app.bearer("/jwt", &ec.token(&c)).await);
    let input = format!(
        "{}.{}",
        b64_json(&json!({ "alg": "ES256", "typ": "JWT", "kid": "ec-1" })),
        b64_json(&c)
    );
    for sig in [vec![0u8; 64], vec![0u8; 0x48], vec![0u8; 1]] {
        let t = format!("{input}.{}", b64(&sig));
        assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_SIGNATURE);
    }
    // The DER encoding of (0, 0), as some libraries emit it.
    let t = format!(
        "{input}.{}",
        b64([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00])
    );
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_SIGNATURE);
}

#[tokio::test]
async fn a_key_verifies_only_its_own_algorithm() {
    let (_jwks, app) = support::standard().await;
    let c = claims(json!({}));
    // Each key of the JWKS works with its algorithm...
    for s in [Signer::rsa(), Signer::ec(), Signer::ed()] {
        assert_ok(&app.bearer("/jwt", &s.token(&c)).await);
    }
    // ...and an allowed algorithm with another key's kid is refused.
    let t = Signer::rsa().with_kid("ec-1").token(&c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_ALGORITHM);
    let t = Signer::ec().with_kid("ed-1").token(&c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_ALGORITHM);
    // An RS256 key does not verify PS256 (not allowed either).
    let t = Signer::rsa().raw(&json!({ "alg": "PS256", "kid": "rsa-1" }), &c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_ALGORITHM);
    // A token of the issuer signed by the attacker under the right kid.
    let t = Signer::attacker().with_kid("rsa-1").token(&c);
    assert_invalid_token(&app.bearer("/jwt", &t).await, BAD_SIGNATURE);
    // And a genuine token with its issuer swapped after signing.
    let good = Signer::rsa().token(&c);
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64_json(&claims(json!({ "sub": "mallory" }))),
        parts[2]
    );
    assert_invalid_token(&app.bearer("/jwt", &tampered).await, BAD_SIGNATURE);
}
