//! The background task: list, watch, coalesce, publish; re-list after a
//! compaction; reconnect with backoff and jitter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Client, GetOptions, WatchOptions, WatchResponse};
use mesh_core::RejectedKey;
use tokio::sync::watch;
use tokio::time::Instant;

use super::layout::{Objects, prefix_end};
use super::state::{Change, Outcome, State};
use super::{EtcdOptions, Shared, cache};
use crate::publisher::Publisher;

/// Events coalesced into one snapshot at most.
const MAX_BATCH: usize = 10_000;
/// Keys per page when listing.
const PAGE: i64 = 1_000;

pub(crate) struct Worker {
    publisher: Arc<Publisher>,
    shared: Arc<Shared>,
    options: Arc<EtcdOptions>,
    stop: watch::Receiver<()>,
    state: State,
    /// Sequence of cache writes started, and the last one finished.
    cache_seq: u64,
    cache_written: Arc<std::sync::Mutex<u64>>,
}

enum End {
    Stop,
    Compacted(i64),
    Lost(String),
}

/// Exponential backoff with jitter: each delay is drawn from
/// `[base / 2, base]`, and the base doubles up to the maximum.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            base: min,
        }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(self.max);
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.base = self.min;
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Worker {
    pub(crate) fn new(
        publisher: Arc<Publisher>,
        shared: Arc<Shared>,
        options: Arc<EtcdOptions>,
        stop: watch::Receiver<()>,
    ) -> Worker {
        Worker {
            publisher,
            shared,
            options,
            stop,
            state: State::default(),
            cache_seq: 0,
            cache_written: Arc::default(),
        }
    }

    pub(crate) fn start_from_cache(&mut self, objects: Objects) {
        self.state = State::from_accepted(objects);
        let config = self.state.config();
        if let Err(e) = self.publisher.publish(Ok(config)) {
            tracing::error!(error = %e, "the disk cache holds an invalid config");
        }
    }

    /// Lists the prefix (in pages, at one revision) and applies it as a whole.
    /// Returns the revision listed.
    pub(crate) async fn list(&mut self, client: &Client) -> Result<i64, String> {
        let prefix = self.options.prefix.as_bytes().to_vec();
        let end = prefix_end(&prefix);
        let mut kv = client.kv_client();
        let mut listing = BTreeMap::new();
        let mut from = prefix.clone();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = tokio::time::timeout(
                self.options.request_timeout,
                kv.get(from.clone(), Some(opts)),
            )
            .await
            .map_err(|_| "listing timed out".to_owned())?
            .map_err(err)?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for item in resp.kvs() {
                if let Some(rel) = self.relative(item.key()) {
                    listing.insert(rel, item.value().to_vec());
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        self.shared.lists.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(keys = listing.len(), revision, "listed the etcd prefix");
        let outcome = self
            .state
            .replace_all(listing, self.publisher.next_revision());
        self.shared.revision.store(revision, Ordering::Relaxed);
        self.shared.from_cache.store(false, Ordering::Relaxed);
        self.publish(outcome, revision);
        Ok(revision)
    }

    /// The key relative to the prefix; keys that are not UTF-8 are named lossily.
    fn relative(&self, key: &[u8]) -> Option<String> {
        let rel = key.strip_prefix(self.options.prefix.as_bytes())?;
        Some(String::from_utf8_lossy(rel).into_owned())
    }

    fn publish(&mut self, outcome: Outcome, revision: i64) {
        let prefix = &self.options.prefix;
        let rejected: Vec<RejectedKey> = self
            .state
            .rejected()
            .iter()
            .map(|(k, e)| RejectedKey::new(format!("{prefix}{k}"), e.clone()))
            .collect();
        metrics::gauge!("apimesh.registry.rejected_keys").set(rejected.len() as f64);
        self.publisher.set_rejected_keys(rejected);
        if !outcome.refused.is_empty() {
            for (key, error) in &outcome.refused {
                tracing::warn!(key = %format!("{prefix}{key}"), %error, "etcd registry refused a key; its last good value keeps serving");
            }
            let message = outcome
                .refused
                .iter()
                .map(|(k, e)| format!("{prefix}{k}: {e}"))
                .collect::<Vec<_>>()
                .join("\n");
            self.publisher.reject(message);
        }
        if let Some(snapshot) = outcome.snapshot {
            match self.publisher.publish_built(snapshot) {
                Ok(_) => self.write_cache(revision),
                Err(e) => tracing::error!(error = %e, "an assembled etcd config failed validation"),
            }
        }
    }

    /// Writes the cache off the runtime's threads; a write that finishes
    /// after a newer one is dropped, so the file only moves forward.
    fn write_cache(&mut self, revision: i64) {
        let Some(path) = self.options.cache.clone() else {
            return;
        };
        let bytes = match cache::encode(&self.options.prefix, revision, self.state.accepted()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the etcd registry's disk cache");
                return;
            }
        };
        self.cache_seq += 1;
        let seq = self.cache_seq;
        let written = self.cache_written.clone();
        tokio::task::spawn_blocking(move || {
            let mut last = written.lock().unwrap_or_else(|p| p.into_inner());
            if *last > seq {
                return;
            }
            match cache::write_atomic(&path, &bytes) {
                Ok(()) => *last = seq,
                Err(e) => {
                    tracing::warn!(cache = %path.display(), error = %e, "cannot write the etcd registry's disk cache")
                }
            }
        });
    }

    pub(crate) async fn run(mut self, mut resume: Option<i64>) {
        let mut backoff = Backoff::new(self.options.backoff_min, self.options.backoff_max);
        loop {
            let client = match self.shared.client() {
                Some(c) => c,
                None => match self.options.client().await {
                    Ok(c) => {
                        self.shared.set_client(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot connect to etcd; retrying");
                        if self.pause(backoff.next()).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let start = match resume {
                Some(r) => r + 1,
                None => match self.list(&client).await {
                    Ok(r) => r + 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list the etcd prefix; retrying");
                        if self.pause(backoff.next()).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let mut last = start - 1;
            let end = self.watch(&client, start, &mut last, &mut backoff).await;
            self.shared.connected.store(false, Ordering::Relaxed);
            resume = Some(last);
            match end {
                End::Stop => return,
                End::Compacted(at) => {
                    self.shared.compactions.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        watched_from = last + 1,
                        compacted_to = at,
                        "etcd compacted past the watch; listing again"
                    );
                    resume = None;
                }
                End::Lost(e) => {
                    self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("apimesh.registry.etcd.reconnects").increment(1);
                    tracing::warn!(error = %e, resume_from = last + 1, "lost the etcd watch; the last good snapshot keeps serving");
                    if self.pause(backoff.next()).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps; true if the registry was dropped meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            r = self.stop.changed() => r.is_err(),
        }
    }

    async fn watch(
        &mut self,
        client: &Client,
        start: i64,
        last: &mut i64,
        backoff: &mut Backoff,
    ) -> End {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_progress_notify();
        let mut wc = client.watch_client();
        let created = tokio::time::timeout(
            self.options.request_timeout,
            wc.watch(self.options.prefix.as_bytes().to_vec(), Some(opts)),
        )
        .await;
        let mut stream = match created {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return End::Lost(err(e)),
            Err(_) => return End::Lost("timed out creating the watch".into()),
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                r = self.stop.changed() => match r {
                    Err(_) => return End::Stop,
                    Ok(()) => continue,
                },
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => return End::Lost("the watch stream closed".into()),
                Err(e) => return End::Lost(err(e)),
            };
            if resp.created() {
                self.shared.connected.store(true, Ordering::Relaxed);
                backoff.reset();
            }
            let mut changes = Vec::new();
            if let Some(end) = self.take(&resp, &mut changes, last) {
                return end;
            }
            if changes.is_empty() {
                self.shared.revision.fetch_max(*last, Ordering::Relaxed);
                continue;
            }
            // Coalesce a burst: wait for quiet, but no longer than max_delay.
            let deadline = Instant::now() + self.options.max_delay;
            let mut ended = None;
            while changes.len() < MAX_BATCH {
                let quiet = (Instant::now() + self.options.debounce).min(deadline);
                let msg = tokio::select! {
                    _ = tokio::time::sleep_until(quiet) => break,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(r)) => {
                        if let Some(end) = self.take(&r, &mut changes, last) {
                            ended = Some(end);
                            break;
                        }
                    }
                    Ok(None) => {
                        ended = Some(End::Lost("the watch stream closed".into()));
                        break;
                    }
                    Err(e) => {
                        ended = Some(End::Lost(err(e)));
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            let outcome = self.state.apply(changes, self.publisher.next_revision());
            self.shared.revision.store(*last, Ordering::Relaxed);
            self.publish(outcome, *last);
            if let Some(end) = ended {
                return end;
            }
        }
    }

    /// Takes a response's events as changes; an end if the watch is over.
    fn take(&self, resp: &WatchResponse, changes: &mut Vec<Change>, last: &mut i64) -> Option<End> {
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Some(End::Compacted(resp.compact_revision()));
            }
            return Some(End::Lost(format!(
                "watch cancelled: {}",
                resp.cancel_reason()
            )));
        }
        let events = resp.events();
        if events.is_empty() && !resp.created() {
            // A progress notification: every event up to here has been sent.
            if let Some(h) = resp.header() {
                *last = (*last).max(h.revision());
            }
        }
        for event in events {
            let Some(kv) = event.kv() else { continue };
            *last = (*last).max(kv.mod_revision());
            let Some(rel) = self.relative(kv.key()) else {
                continue;
            };
            // A deletion's key-value is a tombstone with version 0.
            if kv.version() == 0 {
                changes.push(Change::Delete(rel));
            } else {
                changes.push(Change::Put(rel, kv.value().to_vec()));
            }
        }
        None
    }
}
