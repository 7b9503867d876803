//! JWKS: keys fetched from an issuer, cached, refreshed in the background,
//! and refetched on an unknown `kid` at most once per interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use tokio::sync::watch;
use tokio::time::Instant;

use super::keys::{KeySet, parse_jwks};

/// The largest JWKS or discovery document accepted.
const MAX_DOCUMENT: usize = 1 << 20;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Builds the client JWKS and discovery documents are fetched with: HTTP/1.1,
/// HTTPS through rustls (aws-lc-rs, Mozilla's roots) or plain HTTP.
pub(crate) fn http_client() -> Result<HttpClient, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum JwksSource {
    /// A `jwks_uri`.
    Uri(http::Uri),
    /// OIDC discovery at `<issuer>/.well-known/openid-configuration`.
    Discovery(String),
}

/// Timing of a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct JwksTiming {
    /// Longest time between background refreshes.
    pub(crate) refresh: Duration,
    /// Least time between fetches caused by unknown `kid`s.
    pub(crate) unknown_kid_interval: Duration,
    /// How long keys keep verifying after the last successful fetch.
    pub(crate) max_stale: Duration,
}

/// A remote key set.
pub(crate) struct Jwks {
    source: JwksSource,
    allowed: Vec<Algorithm>,
    timing: JwksTiming,
    client: HttpClient,
    keys: ArcSwap<KeySet>,
    started: Instant,
    /// Milliseconds after `started` of the last successful fetch; 0 = never.
    last_success: AtomicU64,
    /// Milliseconds after `started` of the last on-demand fetch; 0 = never.
    last_on_demand: AtomicU64,
    in_flight: AtomicBool,
    /// Bumped after every fetch attempt, so waiters can await one.
    generation: watch::Sender<u64>,
    fetches: AtomicU64,
    /// Cache-Control max-age of the last response, in ms.
    max_age: AtomicU64,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source)
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Creates the key set and, inside a Tokio runtime, starts its
    /// background refresh (which stops when the key set is dropped).
    pub(crate) fn start(
        source: JwksSource,
        allowed: Vec<Algorithm>,
        timing: JwksTiming,
        client: HttpClient,
    ) -> Arc<Jwks> {
        let (generation, _) = watch::channel(0);
        let jwks = Arc::new(Jwks {
            source,
            allowed,
            timing,
            client,
            keys: ArcSwap::from_pointee(KeySet::default()),
            started: Instant::now(),
            last_success: AtomicU64::new(0),
            last_on_demand: AtomicU64::new(0),
            in_flight: AtomicBool::new(false),
            generation,
            fetches: AtomicU64::new(0),
            max_age: AtomicU64::new(u64::MAX),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            // The first fetch starts now; requests that arrive before it ends
            // wait for it instead of fetching again.
            jwks.in_flight.store(true, Ordering::Release);
            handle.spawn(refresh_loop(Arc::downgrade(&jwks)));
        }
        jwks
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 can mean "never".
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// The keys, or `None` when they are older than `max_stale` (or were
    /// never fetched).
    pub(crate) fn keys(&self) -> Option<arc_swap::Guard<Arc<KeySet>>> {
        let last = self.last_success.load(Ordering::Acquire);
        if last == 0 {
            return None;
        }
        let age = Duration::from_millis(self.now_ms().saturating_sub(last));
        (age <= self.timing.max_stale).then(|| self.keys.load())
    }

    /// Whether an on-demand fetch for an unknown `kid` may run now, or one
    /// is already running (then it can be awaited).
    pub(crate) fn may_refetch(&self) -> bool {
        if self.in_flight.load(Ordering::Acquire) {
            return true;
        }
        let last = self.last_on_demand.load(Ordering::Acquire);
        last == 0
            || Duration::from_millis(self.now_ms().saturating_sub(last))
                >= self.timing.unknown_kid_interval
    }

    /// Refetches for an unknown `kid`: at most one fetch per
    /// `unknown_kid_interval`, however many requests ask; a request that
    /// finds a fetch running waits for it instead.
    pub(crate) async fn refetch_for_unknown_kid(&self) {
        let mut rx = self.generation.subscribe();
        if self.in_flight.load(Ordering::Acquire) {
            // A fetch (background or on demand) is running: its result is
            // what a new fetch would bring.
            let _ = tokio::time::timeout(FETCH_TIMEOUT, rx.changed()).await;
            return;
        }
        let now = self.now_ms();
        let last = self.last_on_demand.load(Ordering::Acquire);
        let due = last == 0
            || Duration::from_millis(now.saturating_sub(last)) >= self.timing.unknown_kid_interval;
        if due
            && self
                .last_on_demand
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let _ = self.fetch().await;
        } else if self.in_flight.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(FETCH_TIMEOUT, rx.changed()).await;
        }
    }

    /// Fetches the key set once and installs it if it parses. A failure
    /// keeps the previous keys (until they go stale).
    pub(crate) async fn fetch(&self) -> bool {
        self.in_flight.store(true, Ordering::Release);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch_inner()).await;
        let ok = matches!(result, Ok(Ok(_)));
        match result {
            Ok(Ok((set, skipped, max_age))) => {
                for s in &skipped {
                    tracing::warn!(source = ?self.source, "JWKS key skipped: {s}");
                }
                let set = set.carry_over(&self.keys.load());
                self.keys.store(Arc::new(set));
                self.max_age.store(
                    max_age.map_or(u64::MAX, |d| d.as_millis() as u64),
                    Ordering::Release,
                );
                self.last_success.store(self.now_ms(), Ordering::Release);
                metrics::counter!("apimesh.auth.jwks_fetches", "outcome" => "ok").increment(1);
            }
            Ok(Err(e)) => {
                tracing::warn!(source = ?self.source, error = %e, "JWKS fetch failed; keeping the last good keys");
                metrics::counter!("apimesh.auth.jwks_fetches", "outcome" => "error").increment(1);
            }
            Err(_) => {
                tracing::warn!(source = ?self.source, "JWKS fetch timed out; keeping the last good keys");
                metrics::counter!("apimesh.auth.jwks_fetches", "outcome" => "timeout").increment(1);
            }
        }
        self.in_flight.store(false, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
        ok
    }

    async fn fetch_inner(&self) -> Result<(KeySet, Vec<String>, Option<Duration>), String> {
        let uri = match &self.source {
            JwksSource::Uri(u) => u.clone(),
            JwksSource::Discovery(issuer) => self.discover(issuer).await?,
        };
        let (body, max_age) = self.get(uri).await?;
        let (set, skipped) = parse_jwks(&body, &self.allowed)?;
        if set.is_empty() && !skipped.is_empty() {
            return Err(format!("no usable key: {}", skipped.join("; ")));
        }
        Ok((set, skipped, max_age))
    }

    async fn discover(&self, issuer: &str) -> Result<http::Uri, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let uri: http::Uri = url.parse().map_err(|e| format!("bad discovery URL: {e}"))?;
        let (body, _) = self.get(uri).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("discovery document is not JSON: {e}"))?;
        // OIDC Discovery §4.3: the document must name the same issuer.
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
            return Err("the discovery document names another issuer".into());
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or("the discovery document has no jwks_uri")?;
        let uri: http::Uri = jwks_uri.parse().map_err(|e| format!("bad jwks_uri: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
            return Err("jwks_uri is not http(s)".into());
        }
        Ok(uri)
    }

    async fn get(&self, uri: http::Uri) -> Result<(Bytes, Option<Duration>), String> {
        let req = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("status {}", res.status()));
        }
        let max_age = res
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        let body = Limited::new(res.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
            .to_bytes();
        Ok((body, max_age))
    }

    /// The delay until the next background refresh: `Cache-Control:
    /// max-age` bounded by [`unknown_kid_interval`, `refresh`].
    fn next_refresh(&self) -> Duration {
        let max_age = self.max_age.load(Ordering::Acquire);
        let wanted = if max_age == u64::MAX {
            self.timing.refresh
        } else {
            Duration::from_millis(max_age)
        };
        let floor = self.timing.unknown_kid_interval.max(Duration::from_secs(1));
        wanted.clamp(floor.min(self.timing.refresh), self.timing.refresh)
    }
}

fn parse_max_age(cc: &str) -> Option<Duration> {
    cc.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("max-age").then(|| {
            v.trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
        })?
    })
}

async fn refresh_loop(jwks: std::sync::Weak<Jwks>) {
    let mut failures = 0u32;
    loop {
        let Some(j) = jwks.upgrade() else { return };
        let ok = j.fetch().await;
        let delay = if ok {
            failures = 0;
            j.next_refresh()
        } else {
            // Back off from 1 s up to the refresh interval while the issuer is down.
            failures = failures.saturating_add(1);
            Duration::from_secs(1u64 << failures.min(8)).min(j.timing.refresh)
        };
        drop(j);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age() {
        assert_eq!(
            parse_max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_max_age("MAX-AGE=\"60\""),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_max_age("no-store"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
