//! Interoperability: keys and tokens made by another implementation (PyJWT
//! with `cryptography`, run by `interop.py`) are accepted as published.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{
    self, AUD, BAD_SIGNATURE, ISS, JwksServer, assert_invalid_token, assert_ok, b64_json,
};

/// Runs `interop.py`; its JSON output.
fn python_fixture() -> Value {
    let script = format!("{}/tests/auth/interop.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .args([script.as_str(), ISS, AUD])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); the interop test needs python3 with PyJWT: pip install \"pyjwt[crypto]\"")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "interop.py failed ({}): {stderr}\nthe interop test needs PyJWT: pip install \"pyjwt[crypto]\"",
        out.status
    );
    serde_json::from_slice(&out.stdout).expect("interop.py prints JSON")
}

#[tokio::test]
async fn pyjwt_keys_and_tokens_are_accepted() {
    let fixture = python_fixture();
    eprintln!("PyJWT {}", fixture["pyjwt"]);
    let keys = fixture["jwks"]["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 2);
    let jwks = JwksServer::start(keys).await;
    let app = support::app(&support::config(&jwks.url())).await;
    for alg in ["RS256", "ES256"] {
        let token = fixture["tokens"][alg].as_str().expect("token");
        let r = app.bearer("/whoami", token).await;
        assert_ok(&r);
        assert_eq!(r.json()["subject"], format!("python-{alg}"));
        assert_eq!(r.json()["scopes"], json!(["orders:read", "orders:write"]));
        assert_ok(&app.bearer("/write", token).await);

        // Tampered: the payload changed after signing.
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
                .expect("base64"),
        )
        .expect("json");
        claims["sub"] = "mallory".into();
        let tampered = format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2]);
        assert_invalid_token(&app.bearer("/jwt", &tampered).await, BAD_SIGNATURE);
        // Tampered: one signature byte flipped.
        let mut sig =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[2])
                .expect("base64");
        sig[10] ^= 1;
        let tampered = format!("{}.{}.{}", parts[0], parts[1], support::b64(&sig));
        assert_invalid_token(&app.bearer("/jwt", &tampered).await, BAD_SIGNATURE);
    }
}
