//! Verification keys: each bound to exactly one algorithm (RFC 8725 §3.1).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use mesh_core::config::KeySpec;
use serde_json::Value;

/// A key and the one algorithm it verifies.
pub(crate) struct Key {
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
    /// The key's identity for change detection: its kid, alg and material.
    pub(crate) fingerprint: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Key")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A set of keys, looked up by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    /// Keys come from the config or the issuer, never from a request, so
    /// foldhash is safe here.
    pub(crate) by_kid: foldhash::HashMap<Arc<str>, Arc<Key>>,
    /// Keys without a `kid`; used only for tokens without one.
    pub(crate) anonymous: Vec<Arc<Key>>,
}

impl KeySet {
    pub(crate) fn insert(&mut self, kid: Option<&str>, key: Key) {
        match kid {
            Some(k) => {
                self.by_kid.insert(k.into(), Arc::new(key));
            }
            None => self.anonymous.push(Arc::new(key)),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.anonymous.is_empty()
    }

    /// Reuses the `Arc`s of unchanged keys from `old`, so tokens verified
    /// with a key that survives a refresh stay cached.
    pub(crate) fn carry_over(mut self, old: &KeySet) -> KeySet {
        for (kid, key) in self.by_kid.iter_mut() {
            if let Some(prev) = old.by_kid.get(kid)
                && prev.fingerprint == key.fingerprint
            {
                *key = prev.clone();
            }
        }
        self
    }
}

pub(crate) fn parse_alg(name: &str) -> Option<Algorithm> {
    // `none` in any spelling never parses: jsonwebtoken has no such algorithm.
    name.parse().ok()
}

fn is_rsa(a: Algorithm) -> bool {
    matches!(
        a,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    )
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Loads a static key from the config. Errors name what is wrong, never the
/// key material.
pub(crate) fn load_static(spec: &KeySpec) -> Result<Key, String> {
    let alg = parse_alg(&spec.algorithm)
        .ok_or_else(|| format!("unknown algorithm `{}`", spec.algorithm))?;
    let pem: Option<Vec<u8>> = match (&spec.pem, &spec.pem_file) {
        (Some(p), _) => Some(p.as_bytes().to_vec()),
        (None, Some(path)) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read pem_file {path}: {e}"))?)
        }
        (None, None) => None,
    };
    let (key, material) = if let Some(pem) = pem {
        let key = match alg {
            a if is_rsa(a) => DecodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            _ => return Err("an HMAC algorithm cannot use a public key".into()),
        }
        .map_err(|e| format!("invalid PEM for {}: {e}", spec.algorithm))?;
        (key, String::from_utf8_lossy(&pem).into_owned())
    } else if let Some(secret) = &spec.secret {
        if !is_hmac(alg) {
            return Err("a secret is only for HS256/HS384/HS512".into());
        }
        (DecodingKey::from_secret(secret.as_bytes()), secret.clone())
    } else if let Some(jwk) = &spec.jwk {
        let (jwk_alg, key) = from_jwk(jwk, &[alg], true)?;
        if jwk_alg != alg {
            return Err(format!(
                "the JWK is for {jwk_alg:?}, not {}",
                spec.algorithm
            ));
        }
        (key, jwk.to_string())
    } else {
        return Err("no key material".into());
    };
    Ok(Key {
        alg,
        key,
        fingerprint: format!("{:?}|{:?}|{material}", spec.kid, alg),
    })
}

fn str_member<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, String> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the JWK has no string `{name}`"))
}

/// Builds a key from a JWK, binding it to one algorithm: the JWK's `alg` if
/// given (it must be allowed), else the only allowed algorithm its type and
/// curve fit. `oct` keys are refused unless `allow_oct` (a key the operator
/// configured by hand).
pub(crate) fn from_jwk(
    jwk: &Value,
    allowed: &[Algorithm],
    allow_oct: bool,
) -> Result<(Algorithm, DecodingKey), String> {
    if !jwk.is_object() {
        return Err("a JWK must be an object".into());
    }
    if let Some(u) = jwk.get("use")
        && u.as_str() != Some("sig")
    {
        return Err("the JWK is not for signatures (`use` is not `sig`)".into());
    }
    let kty = str_member(jwk, "kty")?;
    let declared = match jwk.get("alg") {
        None => None,
        Some(Value::String(a)) => {
            Some(parse_alg(a).ok_or_else(|| format!("the JWK's alg `{a}` is not supported"))?)
        }
        Some(_) => return Err("the JWK's `alg` is not a string".into()),
    };
    let fits = |a: Algorithm| -> bool {
        match kty {
            "RSA" => is_rsa(a),
            "EC" => match jwk.get("crv").and_then(Value::as_str) {
                Some("P-256") => a == Algorithm::ES256,
                Some("P-384") => a == Algorithm::ES384,
                _ => false,
            },
            "OKP" => {
                jwk.get("crv").and_then(Value::as_str) == Some("Ed25519") && a == Algorithm::EdDSA
            }
            "oct" => allow_oct && is_hmac(a),
            _ => false,
        }
    };
    let alg = match declared {
        Some(a) => {
            if !allowed.contains(&a) {
                return Err(format!("the JWK's alg {a:?} is not allowed"));
            }
            if !fits(a) {
                return Err(format!("the JWK's key type does not fit {a:?}"));
            }
            a
        }
        None => {
            let mut candidates = allowed.iter().copied().filter(|a| fits(*a));
            match (candidates.next(), candidates.next()) {
                (Some(a), None) => a,
                (None, _) => return Err(format!("no allowed algorithm fits a `{kty}` key")),
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "the JWK has no `alg` and several allowed algorithms fit a `{kty}` key"
                    ));
                }
            }
        }
    };
    let key = match kty {
        "RSA" => DecodingKey::from_rsa_components(str_member(jwk, "n")?, str_member(jwk, "e")?),
        "EC" => DecodingKey::from_ec_components(str_member(jwk, "x")?, str_member(jwk, "y")?),
        "OKP" => DecodingKey::from_ed_components(str_member(jwk, "x")?),
        "oct" => DecodingKey::from_base64_secret(str_member(jwk, "k")?),
        other => return Err(format!("unsupported key type `{other}`")),
    }
    .map_err(|e| format!("invalid {kty} key: {e}"))?;
    Ok((alg, key))
}

/// Parses a JWKS document. Keys that are unusable (wrong use, unknown
/// type, `oct`, not allowed, malformed) are skipped one by one and
/// reported; the rest are kept.
pub(crate) fn parse_jwks(
    body: &[u8],
    allowed: &[Algorithm],
) -> Result<(KeySet, Vec<String>), String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no `keys` array")?;
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str);
        match from_jwk(jwk, allowed, false) {
            Ok((alg, key)) => set.insert(
                kid,
                Key {
                    alg,
                    key,
                    fingerprint: jwk.to_string(),
                },
            ),
            Err(e) => skipped.push(format!("keys[{i}] (kid {kid:?}): {e}")),
        }
    }
    Ok((set, skipped))
}
