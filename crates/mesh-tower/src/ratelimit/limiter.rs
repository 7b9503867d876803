//! Keyed GCRA limits on governor, quotas over calendar periods, and the
//! pool that keeps limiter state across config revisions.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use mesh_core::units::{Period, Rate};

/// One keyed GCRA limit.
pub(crate) struct Limit<C: Clock = DefaultClock> {
    limiter: RateLimiter<u64, DashMapStateStore<u64>, C, StateInformationMiddleware>,
    clock: C,
    pub(crate) rate: Rate,
    pub(crate) burst: u32,
}

/// A decision of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted; this many units are left in the burst.
    Allow { remaining: u32 },
    /// Refused; retry after this long.
    Deny { retry_after: Duration },
}

impl<C: Clock + Clone> Limit<C> {
    pub(crate) fn with_clock(rate: Rate, burst: u32, clock: C) -> Limit<C> {
        let burst_nz = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(rate.interval().max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(burst_nz))
            .allow_burst(burst_nz);
        Limit {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            clock,
            rate,
            burst: burst.max(1),
        }
    }

    /// Takes `cost` units for `key`.
    pub(crate) fn check(&self, key: u64, cost: NonZeroU32) -> Decision {
        if cost.get() == 1 {
            // The single-cell check is cheaper than the batch one.
            return match self.limiter.check_key(&key) {
                Ok(snapshot) => Decision::Allow {
                    remaining: snapshot.remaining_burst_capacity(),
                },
                Err(not_until) => Decision::Deny {
                    retry_after: not_until.wait_time_from(self.clock.now()),
                },
            };
        }
        match self.limiter.check_key_n(&key, cost) {
            Ok(Ok(snapshot)) => Decision::Allow {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Ok(Err(not_until)) => Decision::Deny {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
            // The cost exceeds the burst: it can never pass. Say when a
            // full burst would be back, which is the honest upper bound.
            Err(_) => Decision::Deny {
                retry_after: self.rate.interval() * self.burst,
            },
        }
    }

    /// Evicts keys whose state is indistinguishable from a fresh one.
    pub(crate) fn evict_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }
}

impl Limit {
    pub(crate) fn new(rate: Rate, burst: u32) -> Limit {
        Limit::with_clock(rate, burst, DefaultClock::default())
    }
}

/// Limits kept across config revisions: a limit whose identity (owner,
/// rate, burst) is unchanged keeps its counters when the config changes.
#[derive(Default)]
pub(crate) struct LimiterPool {
    limits: Mutex<Vec<(String, Weak<Limit>)>>,
}

impl LimiterPool {
    /// Only taken when a snapshot is compiled and by the eviction task.
    pub(crate) fn get(&self, identity: String, rate: Rate, burst: u32) -> Arc<Limit> {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        limits.retain(|(_, w)| w.strong_count() > 0);
        if let Some(l) = limits
            .iter()
            .find(|(id, _)| *id == identity)
            .and_then(|(_, w)| w.upgrade())
        {
            return l;
        }
        let l = Arc::new(Limit::new(rate, burst));
        limits.push((identity, Arc::downgrade(&l)));
        l
    }

    /// Evicts idle keys in every live limit; returns the keys left.
    pub(crate) fn evict_idle(&self) -> usize {
        let live: Vec<Arc<Limit>> = {
            let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            limits.retain(|(_, w)| w.strong_count() > 0);
            limits.iter().filter_map(|(_, w)| w.upgrade()).collect()
        };
        live.iter()
            .map(|l| {
                l.evict_idle();
                l.len()
            })
            .sum()
    }

    /// Keys held by every live limit.
    pub(crate) fn keys(&self) -> usize {
        let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        limits
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .map(|l| l.len())
            .sum()
    }
}

/// The UTC calendar window containing `now` (seconds since the epoch):
/// `[start, end)`. Hours and days are aligned to UTC; months run from the
/// first day of the month at 00:00 UTC.
pub(crate) fn window(period: Period, now: u64) -> (u64, u64) {
    match period {
        Period::Second => (now, now + 1),
        Period::Minute => (now - now % 60, now - now % 60 + 60),
        Period::Hour => (now - now % 3_600, now - now % 3_600 + 3_600),
        Period::Day => (now - now % 86_400, now - now % 86_400 + 86_400),
        _ => {
            let days = (now / 86_400) as i64;
            let (y, m, _) = civil_from_days(days);
            let start = days_from_civil(y, m, 1) as u64 * 86_400;
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1) as u64 * 86_400;
            (start, end)
        }
    }
}

// Howard Hinnant's civil calendar algorithms (public domain).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Quota counters per (consumer, API, period), in calendar windows.
#[derive(Default)]
pub(crate) struct QuotaStore {
    cells: DashMap<(u64, Period), (u64, u64), foldhash::fast::RandomState>,
}

impl QuotaStore {
    /// Takes `cost` from the quota `limit` per `period` for `key` at `now`:
    /// `Ok(remaining)` or `Err(seconds until the window resets)`. A refused
    /// request does not use the quota.
    pub(crate) fn take(
        &self,
        key: u64,
        period: Period,
        limit: u64,
        cost: u64,
        now: u64,
    ) -> Result<u64, u64> {
        let (start, end) = window(period, now);
        let mut cell = self.cells.entry((key, period)).or_insert((start, 0));
        if cell.0 != start {
            *cell = (start, 0);
        }
        if cell.1.saturating_add(cost) > limit {
            return Err(end - now);
        }
        cell.1 += cost;
        Ok(limit - cell.1)
    }

    /// Returns `cost` taken from the current window (a request refused by
    /// another quota).
    pub(crate) fn give_back(&self, key: u64, period: Period, cost: u64, now: u64) {
        let (start, _) = window(period, now);
        if let Some(mut cell) = self.cells.get_mut(&(key, period))
            && cell.0 == start
        {
            cell.1 = cell.1.saturating_sub(cost);
        }
    }

    /// Forgets windows that have ended.
    pub(crate) fn evict_expired(&self, now: u64) {
        self.cells
            .retain(|(_, period), (start, _)| window(*period, now).0 == *start);
    }

    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }
}

/// Requests counted per consumer, API, version and UTC day.
#[derive(Default)]
pub(crate) struct UsageStore {
    entries: DashMap<UsageKey, UsageCell, foldhash::fast::RandomState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct UsageKey {
    pub(crate) consumer: Arc<str>,
    pub(crate) api: Arc<str>,
    pub(crate) version: Option<Arc<str>>,
    /// Days since the epoch (UTC).
    pub(crate) day: u64,
}

pub(crate) struct UsageCell {
    pub(crate) requests: AtomicU64,
    pub(crate) limited: AtomicU64,
    pub(crate) first_seen: AtomicU64,
    pub(crate) last_seen: AtomicU64,
    counter: metrics::Counter,
}

/// Days of usage kept.
const USAGE_DAYS: u64 = 62;

impl UsageStore {
    pub(crate) fn record(
        &self,
        consumer: &Arc<str>,
        api: &Arc<str>,
        version: Option<&Arc<str>>,
        now: u64,
        limited: bool,
    ) {
        let key = UsageKey {
            consumer: consumer.clone(),
            api: api.clone(),
            version: version.cloned(),
            day: now / 86_400,
        };
        let touch = |cell: &UsageCell| {
            cell.requests.fetch_add(1, Ordering::Relaxed);
            if limited {
                cell.limited.fetch_add(1, Ordering::Relaxed);
            }
            cell.last_seen.fetch_max(now, Ordering::Relaxed);
            cell.counter.increment(1);
        };
        if let Some(cell) = self.entries.get(&key) {
            touch(&cell);
            return;
        }
        let counter = metrics::counter!(
            "apimesh.usage.requests",
            "consumer" => consumer.to_string(),
            "api" => api.to_string(),
            "version" => version.map_or_else(String::new, |v| v.to_string()),
        );
        let cell = self.entries.entry(key).or_insert_with(|| UsageCell {
            requests: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            first_seen: AtomicU64::new(now),
            last_seen: AtomicU64::new(now),
            counter,
        });
        touch(&cell);
        drop(cell);
        let oldest = (now / 86_400).saturating_sub(USAGE_DAYS);
        if self.entries.len().is_multiple_of(1024) {
            self.entries.retain(|k, _| k.day >= oldest);
        }
    }

    /// Every entry, for the admin report.
    pub(crate) fn report(&self) -> Vec<(UsageKey, u64, u64, u64, u64)> {
        self.entries
            .iter()
            .map(|e| {
                let c = e.value();
                (
                    e.key().clone(),
                    c.requests.load(Ordering::Relaxed),
                    c.limited.load(Ordering::Relaxed),
                    c.first_seen.load(Ordering::Relaxed),
                    c.last_seen.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    const ONE: NonZeroU32 = NonZeroU32::MIN;

    #[test]
    fn gcra_burst_then_exact_refill() {
        let clock = FakeRelativeClock::default();
        let l = Limit::with_clock(rate("10/s"), 3, clock.clone());
        // The burst: three at once, then refused.
        assert_eq!(l.check(1, ONE), Decision::Allow { remaining: 2 });
        assert_eq!(l.check(1, ONE), Decision::Allow { remaining: 1 });
        assert_eq!(l.check(1, ONE), Decision::Allow { remaining: 0 });
        assert_eq!(
            l.check(1, ONE),
            Decision::Deny {
                retry_after: Duration::from_millis(100)
            }
        );
        // Another key is independent.
        assert_eq!(l.check(2, ONE), Decision::Allow { remaining: 2 });
        // One unit comes back every 100 ms, exactly.
        clock.advance(Duration::from_millis(99));
        assert_eq!(
            l.check(1, ONE),
            Decision::Deny {
                retry_after: Duration::from_millis(1)
            }
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(l.check(1, ONE), Decision::Allow { remaining: 0 });
        // After 300 ms idle the whole burst is back.
        clock.advance(Duration::from_millis(300));
        assert_eq!(l.check(1, ONE), Decision::Allow { remaining: 2 });
    }

    #[test]
    fn cost_takes_several_units_and_oversized_cost_is_refused() {
        let clock = FakeRelativeClock::default();
        let l = Limit::with_clock(rate("10/s"), 10, clock.clone());
        let ten = NonZeroU32::new(10).unwrap();
        assert_eq!(l.check(1, ten), Decision::Allow { remaining: 0 });
        assert_eq!(
            l.check(1, ten),
            Decision::Deny {
                retry_after: Duration::from_secs(1)
            }
        );
        let eleven = NonZeroU32::new(11).unwrap();
        assert!(matches!(l.check(2, eleven), Decision::Deny { .. }));
    }

    #[test]
    fn idle_keys_are_evicted() {
        let clock = FakeRelativeClock::default();
        let l = Limit::with_clock(rate("10/s"), 5, clock.clone());
        for k in 0..1000 {
            l.check(k, ONE);
        }
        assert_eq!(l.len(), 1000);
        clock.advance(Duration::from_secs(1));
        l.evict_idle();
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn calendar_windows() {
        // 2026-02-15T12:34:56Z
        let t = 1_771_158_896;
        assert_eq!(window(Period::Hour, t), (1_771_156_800, 1_771_160_400));
        assert_eq!(window(Period::Day, t), (1_771_113_600, 1_771_200_000));
        // February 2026: 2026-02-01 .. 2026-03-01
        assert_eq!(window(Period::Month, t), (1_769_904_000, 1_772_323_200));
        // December rolls into the next year: 2026-12-31T23:59:59Z
        let dec = 1_798_761_599;
        assert_eq!(window(Period::Month, dec), (1_796_083_200, 1_798_761_600));
        // Leap year: 2028-02-29T00:00:00Z is in February.
        let leap = 1_835_395_200;
        assert_eq!(window(Period::Month, leap).1, 1_835_481_600);
    }

    #[test]
    fn quota_resets_exactly_at_the_boundary() {
        let q = QuotaStore::default();
        let hour_end = 1_771_160_400;
        let t = hour_end - 2;
        assert_eq!(q.take(7, Period::Hour, 2, 1, t), Ok(1));
        assert_eq!(q.take(7, Period::Hour, 2, 1, t), Ok(0));
        assert_eq!(q.take(7, Period::Hour, 2, 1, t + 1), Err(1));
        // The last second of the window is still refused...
        assert_eq!(q.take(7, Period::Hour, 2, 1, hour_end - 1), Err(1));
        // ...and the first second of the next is not.
        assert_eq!(q.take(7, Period::Hour, 2, 1, hour_end), Ok(1));
        q.evict_expired(hour_end + 3_600);
        assert_eq!(q.len(), 0);
    }
}
