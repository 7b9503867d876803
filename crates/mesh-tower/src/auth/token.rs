//! Compact JWS parsing and claim checks, per RFC 7519 and RFC 8725.
//!
//! Nothing here trusts the token: the header and payload are decoded only
//! to pick the issuer and key, and every registered claim is type-checked.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::Outcome;
use super::keys::{Key, parse_alg};

/// The claims of a verified token, parsed once.
#[derive(Debug)]
pub(crate) struct Claims {
    pub(crate) raw: Map<String, Value>,
    pub(crate) iss: Arc<str>,
    pub(crate) sub: Option<Arc<str>>,
    pub(crate) exp: f64,
    pub(crate) nbf: Option<f64>,
    pub(crate) aud: Vec<String>,
    pub(crate) scopes: Vec<String>,
}

/// A token whose signature verified.
#[derive(Debug)]
pub(crate) struct VerifiedToken {
    pub(crate) claims: Claims,
    pub(crate) kid: Option<Arc<str>>,
    pub(crate) key: Arc<Key>,
}

/// A decoded but not yet verified token.
pub(crate) struct Unverified<'a> {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    pub(crate) typ: Option<String>,
    pub(crate) claims: Claims,
    pub(crate) signing_input: &'a str,
    pub(crate) signature: &'a str,
}

fn b64_json(part: &str) -> Result<Map<String, Value>, Outcome> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Outcome::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Outcome::Malformed),
    }
}

fn opt_number(m: &Map<String, Value>, name: &str) -> Result<Option<f64>, Outcome> {
    match m.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(Outcome::BadClaims),
        Some(_) => Err(Outcome::BadClaims),
    }
}

fn opt_string(m: &Map<String, Value>, name: &str) -> Result<Option<String>, Outcome> {
    match m.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Outcome::BadClaims),
    }
}

/// Decodes a compact JWS. Checks, in order: size (before any decoding),
/// three parts, header JSON, `alg` (never `none`), `crit`/`b64`, `kid` and
/// `typ` types, payload JSON and the types of the registered claims.
/// `jwk`, `jku`, `x5u` and `x5c` are ignored: keys come only from config.
pub(crate) fn decode(token: &str, max_size: usize) -> Result<Unverified<'_>, Outcome> {
    if token.len() > max_size {
        return Err(Outcome::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Outcome::Malformed);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(Outcome::Malformed);
    }
    let header = b64_json(h)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => parse_alg(a).ok_or(Outcome::BadAlgorithm)?,
        _ => return Err(Outcome::BadAlgorithm),
    };
    // RFC 7515 §4.1.11: we implement no extension, so any `crit` is fatal;
    // RFC 7797 `b64` changes what is signed and is refused too.
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err(Outcome::UnsupportedCritical);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Outcome::Malformed),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(Outcome::Malformed),
    };
    let raw = b64_json(p)?;
    let iss = match raw.get("iss") {
        Some(Value::String(s)) => Arc::from(s.as_str()),
        _ => return Err(Outcome::BadIssuer),
    };
    let exp = opt_number(&raw, "exp")?.ok_or(Outcome::BadClaims)?;
    let nbf = opt_number(&raw, "nbf")?;
    opt_number(&raw, "iat")?;
    let sub = opt_string(&raw, "sub")?.map(Arc::from);
    let aud = match raw.get("aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(Outcome::BadClaims))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Outcome::BadClaims),
    };
    let mut scopes: Vec<String> = match raw.get("scope") {
        None => Vec::new(),
        Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Some(_) => return Err(Outcome::BadClaims),
    };
    match raw.get("scp") {
        None => {}
        Some(Value::String(s)) => scopes.extend(s.split_ascii_whitespace().map(str::to_owned)),
        Some(Value::Array(list)) => {
            for v in list {
                scopes.push(v.as_str().ok_or(Outcome::BadClaims)?.to_owned());
            }
        }
        Some(_) => return Err(Outcome::BadClaims),
    }
    let signing_input = &token[..h.len() + 1 + p.len()];
    Ok(Unverified {
        alg,
        kid,
        typ,
        claims: Claims {
            raw,
            iss,
            sub,
            exp,
            nbf,
            aud,
            scopes,
        },
        signing_input,
        signature: s,
    })
}

/// Verifies the signature with `key`, which must be bound to the token's `alg`.
pub(crate) fn verify_signature(t: &Unverified<'_>, key: &Key) -> Result<(), Outcome> {
    if key.alg != t.alg {
        return Err(Outcome::BadAlgorithm);
    }
    match jsonwebtoken::crypto::verify(t.signature, t.signing_input.as_bytes(), &key.key, t.alg) {
        Ok(true) => Ok(()),
        _ => Err(Outcome::BadSignature),
    }
}

/// Whether `typ` satisfies a required type, comparing case-insensitively and
/// allowing the `application/` prefix (RFC 7515 §4.1.9, RFC 9068 §2.1).
pub(crate) fn typ_matches(required: &str, typ: Option<&str>) -> bool {
    let norm = |s: &str| {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        lower
            .strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(lower)
    };
    typ.is_some_and(|t| norm(t) == norm(required))
}

/// Time checks on a verified token, at `now` (seconds since the epoch).
pub(crate) fn check_times(c: &Claims, now: f64, leeway: f64) -> Result<(), Outcome> {
    if now > c.exp + leeway {
        return Err(Outcome::Expired);
    }
    if c.nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(Outcome::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn refuses_none_and_unknown_algorithms() {
        for alg in ["none", "None", "NONE", "nOnE", "HS1", ""] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), r#"{"iss":"i","exp":1}"#);
            assert_eq!(decode(&t, 8192).err(), Some(Outcome::BadAlgorithm), "{alg}");
        }
        let t = token(r#"{"alg":7}"#, r#"{"iss":"i","exp":1}"#);
        assert_eq!(decode(&t, 8192).err(), Some(Outcome::BadAlgorithm));
    }

    #[test]
    fn structure() {
        assert_eq!(decode("a.b", 100).err(), Some(Outcome::Malformed));
        assert_eq!(decode("a.b.c.d.e", 100).err(), Some(Outcome::Malformed));
        assert_eq!(decode("!!.b.c", 100).err(), Some(Outcome::Malformed));
        assert_eq!(decode(&"a".repeat(101), 100).err(), Some(Outcome::TooLarge));
        let t = token(
            r#"{"alg":"RS256","crit":["exp"]}"#,
            r#"{"iss":"i","exp":1}"#,
        );
        assert_eq!(decode(&t, 8192).err(), Some(Outcome::UnsupportedCritical));
        let t = token(r#"{"alg":"RS256"}"#, r#"{"iss":"i","exp":"1"}"#);
        assert_eq!(decode(&t, 8192).err(), Some(Outcome::BadClaims));
        let t = token(r#"{"alg":"RS256"}"#, r#"{"iss":"i"}"#);
        assert_eq!(decode(&t, 8192).err(), Some(Outcome::BadClaims));
        let t = token(r#"{"alg":"RS256"}"#, r#"{"exp":1}"#);
        assert_eq!(decode(&t, 8192).err(), Some(Outcome::BadIssuer));
        let t = token(r#"{"alg":"RS256"}"#, r#"[1]"#);
        assert_eq!(decode(&t, 8192).err(), Some(Outcome::Malformed));
    }

    #[test]
    fn scopes_and_audiences() {
        let t = token(
            r#"{"alg":"RS256","kid":"k"}"#,
            r#"{"iss":"i","exp":1,"aud":["a","b"],"scope":"x y","scp":["z"]}"#,
        );
        let u = decode(&t, 8192).unwrap();
        assert_eq!(u.claims.aud, ["a", "b"]);
        assert_eq!(u.claims.scopes, ["x", "y", "z"]);
        assert_eq!(u.kid.as_deref(), Some("k"));
    }

    #[test]
    fn types() {
        assert!(typ_matches("at+jwt", Some("application/at+JWT")));
        assert!(typ_matches("at+jwt", Some("at+jwt")));
        assert!(!typ_matches("at+jwt", Some("JWT")));
        assert!(!typ_matches("at+jwt", None));
    }
}
