//! The compiled authentication state of one snapshot: issuers with their
//! keys, the token cache, API-key settings and outcome counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, Request};
use jsonwebtoken::Algorithm;
use mesh_core::Snapshot;
use mesh_core::config::AuthSettings;
use mesh_core::policy::{AuthMethod, AuthRequirement};
use mesh_core::units::{parse_duration, parse_size};

use super::cache::TokenCache;
use super::jwks::{HttpClient, Jwks, JwksSource, JwksTiming, http_client};
use super::keys::{Key, KeySet, load_static, parse_alg};
use super::token::{VerifiedToken, check_times, decode, typ_matches, verify_signature};
use super::{Outcome, Principal};

/// Defaults, as documented in `docs/authentication.md`.
pub(crate) const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_MAX_TOKEN: usize = 8 * 1024;
pub(crate) const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
pub(crate) const DEFAULT_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// A verified token is re-verified at least this often.
pub(crate) const CACHE_TTL: f64 = 300.0;
pub(crate) const CACHE_SLOTS: usize = 16 * 1024;

pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One trusted issuer.
#[derive(Debug)]
pub(crate) struct Issuer {
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    typ: Option<String>,
    statics: KeySet,
    pub(crate) jwks: Option<Arc<Jwks>>,
}

enum Lookup {
    Found(Arc<Key>),
    Unknown,
}

impl Issuer {
    /// The key for `kid`: static keys first, then the JWKS. Without a
    /// `kid`, the one key (of either kind) bound to `alg`, if exactly one.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let remote = self.jwks.as_ref().and_then(|j| j.keys());
        match kid {
            Some(kid) => {
                if let Some(k) = self.statics.by_kid.get(kid) {
                    return Lookup::Found(k.clone());
                }
                match remote.as_ref().and_then(|r| r.by_kid.get(kid)) {
                    Some(k) => Lookup::Found(k.clone()),
                    None => Lookup::Unknown,
                }
            }
            None => {
                let mut candidates = self
                    .statics
                    .anonymous
                    .iter()
                    .chain(self.statics.by_kid.values())
                    .chain(
                        remote
                            .iter()
                            .flat_map(|r| r.anonymous.iter().chain(r.by_kid.values())),
                    )
                    .filter(|k| k.alg == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(k), None) => Lookup::Found(k.clone()),
                    _ => Lookup::Unknown,
                }
            }
        }
    }

    /// Whether `key` is still the live key for `kid` (a cached token whose
    /// key left the key set must be verified again, and then fails).
    fn still_current(&self, kid: Option<&str>, key: &Arc<Key>) -> bool {
        matches!(self.find(kid, key.alg), Lookup::Found(k) if Arc::ptr_eq(&k, key))
    }
}

/// The outcome of [`Authenticator::check`].
pub(crate) enum Check {
    /// Admit, with this principal.
    Admit(Principal),
    /// Reject.
    Reject(Outcome, Option<String>),
    /// The token's `kid` is unknown; refetch this key set, then check again.
    Refetch(Arc<Jwks>),
}

/// Shared across snapshots: remote key sets are reused while their issuer's
/// settings are unchanged, so a config change does not refetch every JWKS.
#[derive(Default)]
pub(crate) struct JwksPool {
    sets: Mutex<HashMap<String, Weak<Jwks>>>,
    client: Mutex<Option<HttpClient>>,
}

impl JwksPool {
    fn get(&self, key: String, make: impl FnOnce(HttpClient) -> Arc<Jwks>) -> Option<Arc<Jwks>> {
        // Only taken when an authenticator is built (once per snapshot), never per request.
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        sets.retain(|_, w| w.strong_count() > 0);
        if let Some(j) = sets.get(&key).and_then(Weak::upgrade) {
            return Some(j);
        }
        let client = {
            let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
            if c.is_none() {
                match http_client() {
                    Ok(cl) => *c = Some(cl),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build the JWKS client");
                        return None;
                    }
                }
            }
            c.clone()?
        };
        let j = make(client);
        sets.insert(key, Arc::downgrade(&j));
        Some(j)
    }
}

/// The authentication state compiled from one snapshot's `[auth]` settings.
pub struct Authenticator {
    pub(crate) revision: u64,
    /// Keys come from the config only, so foldhash (faster than SipHash) is safe.
    issuers: foldhash::HashMap<String, Arc<Issuer>>,
    leeway: f64,
    max_token_size: usize,
    consumer_claim: Option<String>,
    pub(crate) realm: String,
    api_key_header: HeaderName,
    api_key_query: Option<String>,
    cache: TokenCache,
    outcomes: Vec<metrics::Counter>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("revision", &self.revision)
            .field("issuers", &self.issuers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn duration_or(v: &Option<String>, default: Duration) -> Duration {
    v.as_deref()
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or(default)
}

impl Authenticator {
    /// Compiles `settings` (already validated by the snapshot). A key that
    /// cannot be loaded (a missing `pem_file`, bad PEM) is logged and left
    /// out; the other keys keep working.
    pub(crate) fn build(
        settings: &AuthSettings,
        revision: u64,
        pool: &JwksPool,
        cache_slots: usize,
    ) -> Authenticator {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let mut issuers = foldhash::HashMap::default();
        for spec in &settings.issuers {
            let algorithms: Vec<Algorithm> = spec
                .algorithms
                .iter()
                .filter_map(|a| parse_alg(a))
                .collect();
            let mut statics = KeySet::default();
            for (i, k) in spec.keys.iter().enumerate() {
                match load_static(k) {
                    Ok(key) => statics.insert(k.kid.as_deref(), key),
                    Err(e) => tracing::error!(
                        issuer = %spec.issuer,
                        key = i,
                        error = %e,
                        "auth key not loaded; tokens signed with it will be rejected"
                    ),
                }
            }
            let timing = JwksTiming {
                refresh: duration_or(&spec.refresh, DEFAULT_REFRESH),
                unknown_kid_interval: duration_or(
                    &spec.unknown_kid_interval,
                    DEFAULT_UNKNOWN_KID_INTERVAL,
                ),
                max_stale: duration_or(&spec.max_stale, DEFAULT_MAX_STALE),
            };
            let source = match (&spec.jwks_uri, spec.discovery) {
                (Some(u), _) => u.parse().ok().map(JwksSource::Uri),
                (None, true) => Some(JwksSource::Discovery(spec.issuer.clone())),
                (None, false) => None,
            };
            let jwks = source.and_then(|source| {
                let key = format!("{source:?}|{algorithms:?}|{timing:?}");
                pool.get(key, |client| {
                    Jwks::start(source, algorithms.clone(), timing, client)
                })
            });
            issuers.insert(
                spec.issuer.clone(),
                Arc::new(Issuer {
                    audiences: spec.audiences.clone(),
                    algorithms,
                    typ: spec.typ.clone(),
                    statics,
                    jwks,
                }),
            );
        }
        let api_key_header = settings
            .api_key_header
            .as_deref()
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .unwrap_or(HeaderName::from_static("x-api-key"));
        Authenticator {
            revision,
            issuers,
            leeway: duration_or(&settings.leeway, DEFAULT_LEEWAY).as_secs_f64(),
            max_token_size: settings
                .max_token_size
                .as_deref()
                .and_then(|s| parse_size(s).ok())
                .map_or(DEFAULT_MAX_TOKEN, |n| n.min(usize::MAX as u64) as usize),
            consumer_claim: settings.consumer_claim.clone(),
            realm: settings.realm.clone().unwrap_or_else(|| "apimesh".into()),
            api_key_header,
            api_key_query: settings.api_key_query.clone(),
            cache: TokenCache::new(cache_slots),
            outcomes: Outcome::ALL
                .iter()
                .map(|o| metrics::counter!("apimesh.auth.outcomes", "outcome" => o.as_str()))
                .collect(),
        }
    }

    pub(crate) fn count(&self, outcome: Outcome) {
        if let Some(c) = self.outcomes.get(outcome.index()) {
            c.increment(1);
        }
    }

    /// Authenticates `req` against `requirement`; on success the API-key
    /// credential has been removed from the request.
    pub(crate) fn check<B>(
        &self,
        req: &mut Request<B>,
        snapshot: &Snapshot,
        requirement: &AuthRequirement,
        may_refetch: bool,
    ) -> Check {
        let jwt_ok = requirement.methods.contains(&AuthMethod::Jwt);
        let key_ok = requirement.methods.contains(&AuthMethod::ApiKey);

        // Credentials, each from exactly one place.
        let mut auth_headers = req.headers().get_all(http::header::AUTHORIZATION).iter();
        let (first, second) = (auth_headers.next(), auth_headers.next());
        if second.is_some() {
            return Check::Reject(Outcome::Ambiguous, None);
        }
        let bearer = first.and_then(|v| bearer_token(v));
        // By a scan: the map would hash the custom name (see `fields`).
        let (key_header, key_second) =
            crate::fields::first_and_more(req.headers(), &self.api_key_header);
        let key_header = key_header.cloned();
        if key_second {
            return Check::Reject(Outcome::Ambiguous, None);
        }
        let key_query = match &self.api_key_query {
            Some(name) if key_ok => match query_value(req.uri().query(), name) {
                Ok(v) => v,
                Err(()) => return Check::Reject(Outcome::Ambiguous, None),
            },
            _ => None,
        };
        if key_header.is_some() && key_query.is_some() {
            return Check::Reject(Outcome::Ambiguous, None);
        }

        let principal = if let (true, Some(token)) = (jwt_ok, bearer) {
            match self.check_jwt(token, snapshot, requirement, may_refetch) {
                Ok(p) => p,
                Err(c) => return c,
            }
        } else if key_ok && (key_header.is_some() || key_query.is_some()) {
            let digest = match (&key_header, &key_query) {
                (Some(h), _) => sha256(h.as_bytes()),
                (None, Some(q)) => sha256(q.as_bytes()),
                (None, None) => return Check::Reject(Outcome::Missing, None),
            };
            let Some(consumer) = snapshot.consumer_by_key_digest(&digest) else {
                return Check::Reject(Outcome::UnknownApiKey, None);
            };
            // API keys carry no scopes or claims.
            if let Some(scope) = requirement.scopes.first() {
                return Check::Reject(Outcome::InsufficientScope, Some(scope.clone()));
            }
            if !requirement.claims.is_empty() {
                return Check::Reject(Outcome::ClaimMismatch, None);
            }
            Principal {
                method: AuthMethod::ApiKey,
                consumer: Some(consumer.id.as_str().into()),
                token: None,
            }
        } else {
            return Check::Reject(Outcome::Missing, None);
        };

        // The handler never sees the API key.
        if key_header.is_some() {
            req.headers_mut().remove(&self.api_key_header);
        }
        if key_query.is_some()
            && let Some(name) = &self.api_key_query
        {
            strip_query_param(req, name);
        }
        Check::Admit(principal)
    }

    fn check_jwt(
        &self,
        token: &str,
        snapshot: &Snapshot,
        requirement: &AuthRequirement,
        may_refetch: bool,
    ) -> Result<Principal, Check> {
        let reject = |o: Outcome| Check::Reject(o, None);
        // Before anything else, not even a cache lookup, for oversized tokens.
        if token.len() > self.max_token_size {
            return Err(reject(Outcome::TooLarge));
        }
        let now = now_secs();
        let verified = match self.cache.get(token, now) {
            Some(v)
                if self
                    .issuers
                    .get(&*v.claims.iss)
                    .is_some_and(|i| i.still_current(v.kid.as_deref(), &v.key)) =>
            {
                v
            }
            cached => {
                if cached.is_some() {
                    self.cache.remove(token);
                }
                let t = decode(token, self.max_token_size).map_err(reject)?;
                let issuer = self
                    .issuers
                    .get(&*t.claims.iss)
                    .ok_or(reject(Outcome::BadIssuer))?;
                if !issuer.algorithms.contains(&t.alg) {
                    return Err(reject(Outcome::BadAlgorithm));
                }
                if let Some(req_typ) = &issuer.typ
                    && !typ_matches(req_typ, t.typ.as_deref())
                {
                    return Err(reject(Outcome::BadType));
                }
                let key = match issuer.find(t.kid.as_deref(), t.alg) {
                    Lookup::Found(k) => k,
                    Lookup::Unknown => {
                        return Err(match &issuer.jwks {
                            Some(j) if may_refetch && j.may_refetch() => Check::Refetch(j.clone()),
                            _ => reject(Outcome::UnknownKid),
                        });
                    }
                };
                verify_signature(&t, &key).map_err(reject)?;
                let valid_until = t.claims.exp.min(now + CACHE_TTL);
                let v = Arc::new(VerifiedToken {
                    kid: t.kid.as_deref().map(Arc::from),
                    claims: t.claims,
                    key,
                });
                self.cache.insert(token, valid_until, v.clone());
                v
            }
        };
        let c = &verified.claims;
        // Checks that depend on the route or the clock run on every request.
        if !requirement.issuers.is_empty() && !requirement.issuers.iter().any(|i| **i == *c.iss) {
            return Err(reject(Outcome::BadIssuer));
        }
        check_times(c, now, self.leeway).map_err(reject)?;
        let accepted: &[String] = match &requirement.audience {
            Some(a) => std::slice::from_ref(a),
            None => self
                .issuers
                .get(&*c.iss)
                .map_or(&[][..], |i| &i.audiences[..]),
        };
        if !accepted.is_empty() && !c.aud.iter().any(|a| accepted.contains(a)) {
            return Err(reject(Outcome::BadAudience));
        }
        if let Some(missing) = requirement.scopes.iter().find(|s| !c.scopes.contains(s)) {
            return Err(Check::Reject(
                Outcome::InsufficientScope,
                Some(missing.clone()),
            ));
        }
        for (name, want) in &requirement.claims {
            if !claim_matches(c.raw.get(name), want) {
                return Err(reject(Outcome::ClaimMismatch));
            }
        }
        let consumer = self
            .consumer_claim
            .as_ref()
            .and_then(|claim| c.raw.get(claim))
            .and_then(|v| v.as_str())
            .filter(|id| snapshot.consumer(id).is_some())
            .map(Arc::from);
        Ok(Principal {
            method: AuthMethod::Jwt,
            consumer,
            token: Some(verified),
        })
    }
}

fn claim_matches(value: Option<&serde_json::Value>, want: &str) -> bool {
    use serde_json::Value;
    match value {
        Some(Value::String(s)) => s == want,
        Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(want)),
        Some(Value::Bool(b)) => b.to_string() == want,
        Some(Value::Number(n)) => n.to_string() == want,
        _ => false,
    }
}

/// `Authorization: Bearer <token>`, scheme case-insensitive (RFC 9110 §11.1).
fn bearer_token(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let (scheme, rest) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// The value of query parameter `name`; `Err` if it appears more than once
/// (with or without a value), which is ambiguous.
fn query_value(query: Option<&str>, name: &str) -> Result<Option<String>, ()> {
    let Some(query) = query else { return Ok(None) };
    let mut found = query
        .split('&')
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .filter(|(k, _)| *k == name);
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(()),
        (Some((_, v)), None) => Ok(Some(
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned(),
        )),
    }
}

fn strip_query_param<B>(req: &mut Request<B>, name: &str) {
    let uri = req.uri();
    let Some(query) = uri.query() else { return };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| p.split_once('=').map_or(*p, |(k, _)| k) != name)
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(u) = http::Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
    }
}

/// SHA-256, as API keys are stored (`sha256:<hex>` in the config).
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl crate::compiled::Compiled for Authenticator {
    fn revision(&self) -> u64 {
        self.revision
    }
}

/// The per-snapshot authenticator, rebuilt when a new revision is first
/// seen and shared until the next one. JWKS caches live in the pool and
/// survive rebuilds.
pub(crate) struct AuthRuntime {
    pool: JwksPool,
    pub(crate) states: crate::compiled::PerRevision<Authenticator>,
    cache_slots: usize,
}

impl AuthRuntime {
    pub(crate) fn new(cache_slots: usize) -> AuthRuntime {
        let pool = JwksPool::default();
        let empty = Authenticator::build(&AuthSettings::default(), 0, &pool, 0);
        AuthRuntime {
            pool,
            states: crate::compiled::PerRevision::new(empty),
            cache_slots,
        }
    }

    /// Compiles the `[auth]` settings of `snapshot`.
    pub(crate) fn build(&self, snapshot: &Snapshot) -> Authenticator {
        Authenticator::build(
            &snapshot.config().auth,
            snapshot.revision(),
            &self.pool,
            self.cache_slots,
        )
    }
}
