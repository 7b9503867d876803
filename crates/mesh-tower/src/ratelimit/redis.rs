//! Cluster-wide limits and quotas in Redis: one atomic Lua GCRA script
//! shared by every instance, with Redis's own clock, and quota counters
//! that survive restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use super::limiter::Decision;

/// GCRA over Redis's clock. KEYS[1]: the bucket. ARGV: emission interval
/// (µs), burst, cost. Returns {1, remaining} or {0, retry_after_µs}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * cost
local tolerance = interval * burst
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((tolerance - (new_tat - now)) / interval)}
"#;

/// A quota counter. KEYS[1]: the counter of one window. ARGV: limit, cost,
/// window end (unix seconds). Returns {1, remaining} or {0, 0}; a refused
/// request does not use the quota.
const QUOTA: &str = r#"
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + cost > limit then
  return {0, 0}
end
used = redis.call('INCRBY', KEYS[1], cost)
redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[3]) + 60)
return {1, limit - used}
"#;

/// After a failure, requests use the fallback for this long before Redis is
/// tried again, so an outage costs one timeout, not one per request.
const BACKOFF: Duration = Duration::from_millis(250);

/// A shared limit store in Redis.
pub struct RedisStore {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    connecting: AtomicBool,
    started: Instant,
    down_until: AtomicU64,
    gcra: redis::Script,
    quota: redis::Script,
    failures: metrics::Counter,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `url` (`redis://host:port/db`). Nothing connects yet: the
    /// connection is made in the background on first use and re-made after
    /// failures, so an instance starts and serves (on its fallback) while
    /// Redis is down.
    pub fn open(url: &str) -> Result<Arc<RedisStore>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        Ok(Arc::new(RedisStore {
            client,
            conn: ArcSwapOption::empty(),
            connecting: AtomicBool::new(false),
            started: Instant::now(),
            down_until: AtomicU64::new(0),
            gcra: redis::Script::new(GCRA),
            quota: redis::Script::new(QUOTA),
            failures: metrics::counter!("apimesh.ratelimit.store_failures"),
        }))
    }

    /// Connects now (instead of on first use), waiting at most `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<(), String> {
        if self.conn.load().is_some() {
            return Ok(());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(Duration::from_secs(1)));
        match tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        {
            Ok(Ok(c)) => {
                self.conn.store(Some(Arc::new(c)));
                Ok(())
            }
            Ok(Err(e)) => Err(format!("cannot connect to Redis: {e}")),
            Err(_) => Err("cannot connect to Redis: timed out".into()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether the store is believed reachable.
    pub fn is_up(&self) -> bool {
        self.conn.load().is_some() && self.now_ms() >= self.down_until.load(Ordering::Acquire)
    }

    fn connection(self: &Arc<Self>) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.load_full() {
            return Some((*c).clone());
        }
        if !self.connecting.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)));
                match ConnectionManager::new_with_config(me.client.clone(), config).await {
                    Ok(c) => me.conn.store(Some(Arc::new(c))),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot connect to Redis; using the fallback");
                        me.mark_down();
                    }
                }
                me.connecting.store(false, Ordering::Release);
            });
        }
        None
    }

    fn mark_down(&self) {
        self.failures.increment(1);
        self.down_until.store(
            self.now_ms() + BACKOFF.as_millis() as u64,
            Ordering::Release,
        );
    }

    async fn run(
        self: &Arc<Self>,
        script: &redis::Script,
        key: &str,
        args: &[u64],
        timeout: Duration,
    ) -> Option<(i64, i64)> {
        if self.now_ms() < self.down_until.load(Ordering::Acquire) {
            return None;
        }
        let mut conn = self.connection()?;
        let mut inv = script.key(key);
        for a in args {
            inv.arg(*a);
        }
        match tokio::time::timeout(timeout, inv.invoke_async::<(i64, i64)>(&mut conn)).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Redis limit check failed; using the fallback");
                self.mark_down();
                None
            }
            Err(_) => {
                tracing::debug!("Redis limit check timed out; using the fallback");
                self.mark_down();
                None
            }
        }
    }

    /// One GCRA check in Redis; `None` when Redis failed or was slower than
    /// `timeout` (the caller then applies its failure mode).
    pub(crate) async fn gcra(
        self: &Arc<Self>,
        key: &str,
        interval: Duration,
        burst: u32,
        cost: u32,
        timeout: Duration,
    ) -> Option<Decision> {
        let interval_us = (interval.as_micros() as u64).max(1);
        let (ok, v) = self
            .run(
                &self.gcra,
                key,
                &[interval_us, u64::from(burst), u64::from(cost)],
                timeout,
            )
            .await?;
        Some(if ok == 1 {
            Decision::Allow {
                remaining: v.clamp(0, i64::from(u32::MAX)) as u32,
            }
        } else {
            Decision::Deny {
                retry_after: Duration::from_micros(v.max(0) as u64),
            }
        })
    }

    /// Counts one request in the shared usage report (one pipelined round
    /// trip, at most `timeout`; a failure only loses this count).
    pub(crate) async fn record_usage(
        self: &Arc<Self>,
        field: String,
        day: u64,
        now: u64,
        limited: bool,
        timeout: Duration,
    ) {
        let Some(mut conn) = self.connection() else {
            return;
        };
        let key = format!("apimesh:usage:{day}");
        let mut pipe = redis::pipe();
        pipe.hincr(&key, format!("{field}\u{1f}n"), 1).ignore();
        if limited {
            pipe.hincr(&key, format!("{field}\u{1f}l"), 1).ignore();
        }
        pipe.hset_nx(&key, format!("{field}\u{1f}f"), now).ignore();
        pipe.hset(&key, format!("{field}\u{1f}s"), now).ignore();
        pipe.expire(&key, 62 * 86_400).ignore();
        pipe.zadd("apimesh:usage:days", day, day).ignore();
        if !matches!(
            tokio::time::timeout(timeout, pipe.query_async::<()>(&mut conn)).await,
            Ok(Ok(()))
        ) {
            self.failures.increment(1);
        }
    }

    /// The shared usage report: (field, day, requests, limited, first, last).
    pub(crate) async fn usage(
        self: &Arc<Self>,
    ) -> Result<Vec<(String, u64, u64, u64, u64, u64)>, String> {
        let mut conn = self.connection().ok_or("Redis is not connected")?;
        let days: Vec<u64> = redis::cmd("ZRANGE")
            .arg("apimesh:usage:days")
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let mut rows = std::collections::BTreeMap::<(String, u64), [u64; 4]>::new();
        for day in days {
            let all: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
                .arg(format!("apimesh:usage:{day}"))
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            for (field, value) in all {
                let Some((key, kind)) = field.rsplit_once('\u{1f}') else {
                    continue;
                };
                let slot = match kind {
                    "n" => 0,
                    "l" => 1,
                    "f" => 2,
                    "s" => 3,
                    _ => continue,
                };
                rows.entry((key.to_owned(), day)).or_default()[slot] = value;
            }
        }
        Ok(rows
            .into_iter()
            .map(|((key, day), [n, l, f, s])| (key, day, n, l, f, s))
            .collect())
    }

    /// Returns `cost` to a quota window counter (best effort).
    pub(crate) async fn give_back(self: &Arc<Self>, key: &str, cost: u64, timeout: Duration) {
        let Some(mut conn) = self.connection() else {
            return;
        };
        let cmd = redis::cmd("DECRBY").arg(key).arg(cost).to_owned();
        let _ = tokio::time::timeout(timeout, cmd.query_async::<i64>(&mut conn)).await;
    }

    /// Takes `cost` from a quota window counter; `Some(Ok(remaining))`,
    /// `Some(Err(()))` when exhausted, `None` when Redis failed.
    pub(crate) async fn quota(
        self: &Arc<Self>,
        key: &str,
        limit: u64,
        cost: u64,
        window_end: u64,
        timeout: Duration,
    ) -> Option<Result<u64, ()>> {
        let (ok, remaining) = self
            .run(&self.quota, key, &[limit, cost, window_end], timeout)
            .await?;
        Some(if ok == 1 {
            Ok(remaining.max(0) as u64)
        } else {
            Err(())
        })
    }
}
