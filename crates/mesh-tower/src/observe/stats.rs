//! In-process traffic statistics for the dashboard: per route request
//! rate, error rate and latency percentiles as per-second time series,
//! traffic per API version and the top consumers.
//!
//! The request path only bumps atomics in a per-route cell; a ticker folds
//! the cells into ring buffers once a second, off the request path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

/// Latency buckets: bucket `i` holds durations below `2^(i/2)` × 50 µs
/// (half-octave steps from 50 µs to about 30 min).
const BUCKETS: usize = 48;
/// Keys are route ids, API versions and consumers from the registry, not
/// request input, so a fast unkeyed-seed hasher is fine.
type Hasher = foldhash::fast::RandomState;

/// Seconds of history kept.
const HISTORY: usize = 300;

fn bucket_of(d: Duration) -> usize {
    // The duration in units of 50 µs (multiplications: no division).
    let x = d.as_secs() as f64 * 20_000.0 + f64::from(d.subsec_nanos()) * 2e-5;
    if x <= 1.0 {
        return 0;
    }
    // ⌈2·log2 x⌉ = ⌈log2 x²⌉, read off the binary exponent of x² (no
    // logarithm call on the request path).
    let bits = (x * x).to_bits();
    let exp = ((bits >> 52) & 0x7ff) as usize - 1023;
    let ceil = exp + usize::from(bits & ((1 << 52) - 1) != 0);
    ceil.min(BUCKETS - 1)
}

fn bucket_upper_ms(i: usize) -> f64 {
    0.05 * 2f64.powf(i as f64 / 2.0)
}

/// One route's counters for the current second.
///
/// The request count is the sum of the latency buckets, so a request costs
/// one or two atomic additions.
#[derive(Debug)]
pub(super) struct Cell {
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Cell {
    /// Counts one finished request.
    pub(super) fn record(&self, failed: bool, latency: Duration) {
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> (u64, u64, [u64; BUCKETS]) {
        let latency: [u64; BUCKETS] =
            std::array::from_fn(|i| self.latency[i].swap(0, Ordering::AcqRel));
        (
            latency.iter().sum(),
            self.errors.swap(0, Ordering::AcqRel),
            latency,
        )
    }
}

/// One second of one route.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Point {
    /// Unix seconds.
    pub t: u64,
    /// Requests in that second.
    pub requests: u64,
    /// Of which failed (5xx, or a gRPC error status).
    pub errors: u64,
    /// Median latency, milliseconds (upper bucket bound).
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds (upper bucket bound).
    pub p99_ms: f64,
}

#[derive(Debug, Default)]
struct Series {
    label: String,
    points: VecDeque<Point>,
    total: u64,
    total_errors: u64,
}

/// The statistics store. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cells: DashMap<Arc<str>, (Arc<str>, Arc<Cell>), Hasher>,
    series: Mutex<std::collections::BTreeMap<Arc<str>, Series>>,
    versions: DashMap<(Arc<str>, Arc<str>), Arc<AtomicU64>, Hasher>,
    consumers: DashMap<Arc<str>, AtomicU64, Hasher>,
}

/// A route's statistics, as the dashboard reads them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteSeries {
    /// The route id (`unmatched` for requests no route matched).
    pub route: String,
    /// Its path label.
    pub label: String,
    /// Requests since the start.
    pub total: u64,
    /// Failed requests since the start.
    pub errors: u64,
    /// The last seconds, oldest first.
    pub points: Vec<Point>,
}

impl Stats {
    /// An empty store.
    pub fn new() -> Stats {
        Stats::default()
    }

    /// The cell of a route, made on first use. The observe stage resolves
    /// it once per route and snapshot revision, not per request.
    pub(super) fn cell(&self, route: &Arc<str>, label: &Arc<str>) -> Arc<Cell> {
        if let Some(c) = self.inner.cells.get(route) {
            return c.1.clone();
        }
        self.inner
            .cells
            .entry(route.clone())
            .or_insert_with(|| (label.clone(), Arc::new(Cell::default())))
            .1
            .clone()
    }

    /// The request counter of an API version, made on first use (resolved
    /// like [`cell`](Self::cell)).
    pub(super) fn version_counter(&self, api: &Arc<str>, version: &Arc<str>) -> Arc<AtomicU64> {
        let key = (api.clone(), version.clone());
        if let Some(n) = self.inner.versions.get(&key) {
            return n.clone();
        }
        self.inner.versions.entry(key).or_default().clone()
    }

    /// Counts one request of `consumer`.
    pub(super) fn count_consumer(&self, consumer: &Arc<str>) {
        // Consumers come from the registry, so this map is bounded by it.
        match self.inner.consumers.get(consumer) {
            Some(n) => {
                n.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.inner
                    .consumers
                    .entry(consumer.clone())
                    .or_default()
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records one finished request.
    pub fn record(
        &self,
        route: &Arc<str>,
        label: &Arc<str>,
        failed: bool,
        latency: Duration,
        version: Option<(&Arc<str>, &Arc<str>)>,
        consumer: Option<&Arc<str>>,
    ) {
        self.cell(route, label).record(failed, latency);
        if let Some((api, v)) = version {
            self.version_counter(api, v).fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = consumer {
            self.count_consumer(c);
        }
    }

    /// Folds the last second into the history; call once a second.
    pub fn tick(&self) {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut series = match self.inner.series.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for e in self.inner.cells.iter() {
            let (label, cell) = e.value();
            let (requests, errors, hist) = cell.take();
            let s = series.entry(e.key().clone()).or_default();
            s.label = label.to_string();
            s.total += requests;
            s.total_errors += errors;
            let (p50_ms, p99_ms) = percentiles(&hist, requests);
            s.points.push_back(Point {
                t,
                requests,
                errors,
                p50_ms,
                p99_ms,
            });
            while s.points.len() > HISTORY {
                s.points.pop_front();
            }
        }
    }

    /// Starts the once-a-second ticker (inside a Tokio runtime); it stops
    /// when every handle on the store is gone.
    pub fn spawn_ticker(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                match weak.upgrade() {
                    Some(inner) => Stats { inner }.tick(),
                    None => return,
                }
            }
        });
    }

    /// Every route's series, the last `seconds` of each.
    pub fn routes(&self, seconds: usize) -> Vec<RouteSeries> {
        let series = match self.inner.series.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        series
            .iter()
            .map(|(route, s)| RouteSeries {
                route: route.to_string(),
                label: s.label.clone(),
                total: s.total,
                errors: s.total_errors,
                points: s
                    .points
                    .iter()
                    .skip(s.points.len().saturating_sub(seconds))
                    .copied()
                    .collect(),
            })
            .collect()
    }

    /// Requests per API version since the start.
    pub fn versions(&self) -> Vec<(String, String, u64)> {
        let mut v: Vec<_> = self
            .inner
            .versions
            .iter()
            .map(|e| {
                (
                    e.key().0.to_string(),
                    e.key().1.to_string(),
                    e.value().load(Ordering::Relaxed),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The `n` consumers with the most requests since the start.
    pub fn top_consumers(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .inner
            .consumers
            .iter()
            .map(|e| (e.key().to_string(), e.value().load(Ordering::Relaxed)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

fn percentiles(hist: &[u64; BUCKETS], total: u64) -> (f64, f64) {
    if total == 0 {
        return (0.0, 0.0);
    }
    let at = |q: f64| {
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_upper_ms(i);
            }
        }
        bucket_upper_ms(BUCKETS - 1)
    };
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_half_octaves() {
        assert_eq!(bucket_of(Duration::from_micros(10)), 0);
        let b = bucket_of(Duration::from_millis(1));
        assert!(bucket_upper_ms(b) >= 1.0 && bucket_upper_ms(b) < 1.5, "{b}");
        assert_eq!(bucket_of(Duration::from_secs(100_000)), BUCKETS - 1);
    }

    #[test]
    fn buckets_agree_with_the_logarithm() {
        let by_log = |d: Duration| {
            let us = d.as_secs_f64() * 1e6 / 50.0;
            if us <= 1.0 {
                0
            } else {
                ((us.log2() * 2.0).ceil() as usize).min(BUCKETS - 1)
            }
        };
        let mut ns = 1u64;
        while ns < 10_000_000_000_000 {
            for d in [ns, ns + 1, ns * 3 / 2, ns * 7 / 5] {
                let d = Duration::from_nanos(d);
                assert_eq!(bucket_of(d), by_log(d), "{d:?}");
            }
            ns = ns * 11 / 10 + 1;
        }
    }

    #[test]
    fn a_tick_folds_cells_into_points() {
        let s = Stats::new();
        let (r, l): (Arc<str>, Arc<str>) = ("orders".into(), "/orders/{id}".into());
        for i in 0..100 {
            let d = if i < 98 {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(100)
            };
            s.record(&r, &l, i == 0, d, None, None);
        }
        s.tick();
        let routes = s.routes(10);
        assert_eq!(routes.len(), 1);
        let p = routes[0].points[0];
        assert_eq!((p.requests, p.errors), (100, 1));
        assert!(p.p50_ms < 1.5 && p.p99_ms >= 100.0, "{p:?}");
    }
}
