//! The retry budget: retries may add at most a share of the requests (plus
//! a small floor per second) over a sliding 10 s window, so a failure storm
//! cannot multiply load (Finagle's and Linkerd's budget).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: usize = 10;
const BUCKET: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Bucket {
    /// Which second since the epoch this bucket counts (`u64::MAX`: none).
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// A retry budget: over the last 10 s, retries may be at most
/// `min_per_second × 10 + ratio × requests`.
///
/// Lock-free: ten one-second buckets of atomic counters. Under contention a
/// bucket being recycled may lose a few counts; the budget stays a budget.
/// Follows tokio's clock, so a paused test clock drives it.
///
/// ```
/// use mesh_tower::resilience::RetryBudget;
/// let budget = RetryBudget::new(0.2, 0);
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw()); // 20% of 10 requests
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    epoch: Instant,
    buckets: [Bucket; BUCKETS],
}

/// What a budget has seen over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BudgetStatus {
    /// Requests in the window.
    pub requests: u64,
    /// Retries (and hedges) in the window.
    pub retries: u64,
    /// Retries still allowed now.
    pub available: u64,
}

impl RetryBudget {
    /// A budget allowing `ratio` (0–1) retries per request plus
    /// `min_per_second` retries per second.
    pub fn new(ratio: f64, min_per_second: u32) -> RetryBudget {
        let buckets = std::array::from_fn(|_| Bucket {
            second: AtomicU64::new(u64::MAX),
            ..Bucket::default()
        });
        RetryBudget {
            ratio: if ratio.is_finite() {
                ratio.clamp(0.0, 1000.0)
            } else {
                0.0
            },
            min_per_second,
            epoch: Instant::now(),
            buckets,
        }
    }

    fn second(&self) -> u64 {
        self.second_at(Instant::now())
    }

    fn second_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// The bucket for `second`, recycled if it held an older second.
    fn bucket(&self, second: u64) -> &Bucket {
        let b = &self.buckets[(second % BUCKETS as u64) as usize];
        let seen = b.second.load(Ordering::Acquire);
        if seen != second
            && b.second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Release);
            b.retries.store(0, Ordering::Release);
        }
        b
    }

    /// Counts a request (a first attempt).
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Counts a request that started at `now` (a clock read the caller
    /// already made).
    pub(crate) fn deposit_at(&self, now: Instant) {
        self.bucket(self.second_at(now))
            .requests
            .fetch_add(1, Ordering::AcqRel);
    }

    fn totals(&self, now: u64) -> (u64, u64) {
        let oldest = now.saturating_sub(BUCKETS as u64 - 1);
        let (mut req, mut ret) = (0, 0);
        for b in &self.buckets {
            let s = b.second.load(Ordering::Acquire);
            if s != u64::MAX && s >= oldest && s <= now {
                req += b.requests.load(Ordering::Acquire);
                ret += b.retries.load(Ordering::Acquire);
            }
        }
        (req, ret)
    }

    fn allowed(&self, requests: u64) -> u64 {
        u64::from(self.min_per_second) * (BUCKETS as u64 * BUCKET.as_secs())
            + (self.ratio * requests as f64) as u64
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_withdraw(&self) -> bool {
        let now = self.second();
        let (requests, retries) = self.totals(now);
        if retries >= self.allowed(requests) {
            return false;
        }
        self.bucket(now).retries.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Requests, retries and what is left, over the window.
    pub fn status(&self) -> BudgetStatus {
        let (requests, retries) = self.totals(self.second());
        BudgetStatus {
            requests,
            retries,
            available: self.allowed(requests).saturating_sub(retries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn floor_per_second_and_window_expiry() {
        let b = RetryBudget::new(0.0, 1);
        // 1/s over 10 s: ten retries, then none.
        for _ in 0..10 {
            assert!(b.try_withdraw());
        }
        assert!(!b.try_withdraw());
        // Ten seconds later the window has moved past them.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_follows_requests() {
        let b = RetryBudget::new(0.5, 0);
        for _ in 0..100 {
            b.deposit();
        }
        let mut n = 0;
        while b.try_withdraw() {
            n += 1;
        }
        assert_eq!(n, 50);
        assert_eq!(b.status().available, 0);
    }
}
