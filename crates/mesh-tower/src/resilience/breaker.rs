//! The circuit breaker: closed → open → half-open, without a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::policy::{BreakerMode, CircuitBreakerPolicy};
use tokio::time::Instant;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls fail fast until the open time ends.
    Open,
    /// A bounded number of probe calls decide: success closes, failure reopens.
    HalfOpen,
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
/// Report its outcome with [`CircuitBreaker::record`]; a permit dropped
/// unreported (a cancelled call) counts as neither, and a half-open probe
/// dropped so frees its place for another probe.
#[derive(Debug)]
#[must_use = "report the outcome with CircuitBreaker::record"]
pub struct BreakerPermit {
    probe: Option<ProbeSlot>,
    /// When the call started; read only when the policy has a `slow_call`.
    started: Option<Instant>,
}

/// A half-open probe's place; freed when dropped, if its half-open phase
/// is still the current one.
#[derive(Debug)]
struct ProbeSlot {
    probes: Arc<AtomicU64>,
    phase: u32,
}

impl ProbeSlot {
    fn current(&self) -> bool {
        phase_of(self.probes.load(Ordering::Acquire)) == self.phase
    }
}

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        let phase = self.phase;
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (phase_of(p) == phase && out_of(p) > 0).then(|| p - 1)
            });
    }
}

/// The half-open phase in a packed probe count.
fn phase_of(probes: u64) -> u32 {
    (probes >> 32) as u32
}

/// The probes out in a packed probe count.
fn out_of(probes: u64) -> u32 {
    probes as u32
}

/// How a call ended, for a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed (a failure status, a timeout, a connect error).
    Failure,
}

/// A circuit breaker.
///
/// - **Closed**: calls flow. In `consecutive` mode it opens after N failures
///   in a row; in `rate` mode when the failure share over the last `window`
///   calls (or the last `window_duration`) reaches the rate, once
///   `min_calls` were seen. Calls slower than `slow_call` count as failures.
/// - **Open**: [`try_acquire`](Self::try_acquire) fails at once with the
///   time left. The n-th opening in a row lasts `open × 2ⁿ⁻¹`, at most
///   `max_open`.
/// - **Half-open**: after the open time, at most `half_open_probes` calls
///   are let through at once; when that many succeed the breaker closes
///   (and forgets its openings), and any failure reopens it for longer.
///
/// Every transition is a compare-and-swap on atomics; the request path
/// never takes a lock. Time follows tokio's clock.
#[derive(Debug)]
pub struct CircuitBreaker {
    policy: CircuitBreakerPolicy,
    epoch: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    /// Rate mode over calls: outcomes ring (1 = failure), write position,
    /// failures in the ring, calls seen since closing.
    ring: Box<[AtomicU8]>,
    pos: AtomicU64,
    failures: AtomicU32,
    seen: AtomicU64,
    /// Rate mode over time: per-second buckets (second, calls, failures).
    buckets: Box<[(AtomicU64, AtomicU32, AtomicU32)]>,
    opened_at: AtomicU64,
    open_for: AtomicU64,
    openings: AtomicU32,
    /// Half-open probes: the phase (high 32 bits, a new one at each
    /// opening) and the probes out in it (low 32 bits).
    probes: Arc<AtomicU64>,
    probe_successes: AtomicU32,
    transitions: AtomicU64,
    /// `apimesh.breaker.state` (0 closed, 1 open, 2 half-open) and the
    /// labels of `apimesh.breaker.transitions`, for a named breaker.
    labels: Option<(metrics::Gauge, [(&'static str, String); 2])>,
}

/// A breaker's state for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BreakerStatus {
    /// The state.
    pub state: BreakerState,
    /// Seconds until an open breaker half-opens.
    pub open_for_seconds: Option<f64>,
    /// Openings in a row (reset when it closes).
    pub openings: u32,
    /// Failures in a row (consecutive mode) or in the window (rate mode).
    pub failures: u32,
    /// State changes since the breaker was made.
    pub transitions: u64,
}

impl CircuitBreaker {
    /// A closed breaker with `policy`.
    pub fn new(policy: CircuitBreakerPolicy) -> CircuitBreaker {
        let ring_len = match policy.mode {
            BreakerMode::Rate { window, .. } => window.max(1) as usize,
            _ => 0,
        };
        let bucket_len = match policy.mode {
            BreakerMode::RateOverTime { window, .. } => window.as_secs().max(1) as usize,
            _ => 0,
        };
        CircuitBreaker {
            epoch: Instant::now(),
            state: AtomicU8::new(CLOSED),
            consecutive: AtomicU32::new(0),
            ring: (0..ring_len).map(|_| AtomicU8::new(0)).collect(),
            pos: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            seen: AtomicU64::new(0),
            buckets: (0..bucket_len)
                .map(|_| {
                    (
                        AtomicU64::new(u64::MAX),
                        AtomicU32::new(0),
                        AtomicU32::new(0),
                    )
                })
                .collect(),
            opened_at: AtomicU64::new(0),
            open_for: AtomicU64::new(0),
            openings: AtomicU32::new(0),
            probes: Arc::new(AtomicU64::new(0)),
            probe_successes: AtomicU32::new(0),
            transitions: AtomicU64::new(0),
            labels: None,
            policy,
        }
    }

    /// A breaker whose state is the gauge `apimesh.breaker.state{route,
    /// service}` (0 closed, 1 open, 2 half-open) and whose transitions are
    /// counted with those labels.
    pub fn named(policy: CircuitBreakerPolicy, route: &str, service: &str) -> CircuitBreaker {
        let labels = [("route", route.to_owned()), ("service", service.to_owned())];
        let gauge = metrics::gauge!("apimesh.breaker.state", &labels);
        gauge.set(0.0);
        let mut b = CircuitBreaker::new(policy);
        b.labels = Some((gauge, labels));
        b
    }

    /// The policy.
    pub fn policy(&self) -> &CircuitBreakerPolicy {
        &self.policy
    }

    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Permission for one call, or how long the breaker stays open.
    pub fn try_acquire(&self) -> Result<BreakerPermit, Duration> {
        // A clock read only when slow calls count as failures.
        let started = self.policy.slow_call.map(|_| Instant::now());
        loop {
            match self.state.load(Ordering::Acquire) {
                CLOSED => {
                    return Ok(BreakerPermit {
                        probe: None,
                        started,
                    });
                }
                OPEN => {
                    let now = self.now();
                    let until = self
                        .opened_at
                        .load(Ordering::Acquire)
                        .saturating_add(self.open_for.load(Ordering::Acquire));
                    if now < until {
                        return Err(Duration::from_nanos(until - now));
                    }
                    if self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.transition("half_open");
                    }
                }
                _ => {
                    let limit = self.policy.half_open_probes;
                    let taken =
                        self.probes
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                                (out_of(p) < limit).then(|| p + 1)
                            });
                    return match taken {
                        Ok(p) => Ok(BreakerPermit {
                            probe: Some(ProbeSlot {
                                probes: self.probes.clone(),
                                phase: phase_of(p),
                            }),
                            started,
                        }),
                        // Probes are out; try again shortly.
                        Err(_) => Err(Duration::from_millis(100).min(self.policy.open)),
                    };
                }
            }
        }
    }

    /// Reports how the call of `permit` ended.
    pub fn record(&self, permit: BreakerPermit, outcome: Outcome) {
        let slow = self
            .policy
            .slow_call
            .zip(permit.started)
            .is_some_and(|(t, started)| started.elapsed() > t);
        let failed = outcome == Outcome::Failure || slow;
        if let Some(slot) = &permit.probe {
            // A probe of an earlier half-open phase no longer counts.
            if self.state.load(Ordering::Acquire) != HALF_OPEN || !slot.current() {
                return;
            }
            if failed {
                self.trip(HALF_OPEN);
            } else if self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1
                >= self.policy.half_open_probes
                && self
                    .state
                    .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                self.reset_counts();
                self.openings.store(0, Ordering::Release);
                self.transition("closed");
            }
            // Dropping the permit lets the next probe in.
            return;
        }
        if self.state.load(Ordering::Acquire) != CLOSED {
            return;
        }
        match self.policy.mode {
            BreakerMode::Consecutive(n) => {
                if failed {
                    if self.consecutive.fetch_add(1, Ordering::AcqRel) + 1 >= n {
                        self.trip(CLOSED);
                    }
                } else {
                    self.consecutive.store(0, Ordering::Release);
                }
            }
            BreakerMode::Rate {
                rate,
                window,
                min_calls,
            } => {
                let slot =
                    (self.pos.fetch_add(1, Ordering::AcqRel) % self.ring.len() as u64) as usize;
                let old = self.ring[slot].swap(u8::from(failed), Ordering::AcqRel);
                match (old, failed) {
                    (0, true) => {
                        self.failures.fetch_add(1, Ordering::AcqRel);
                    }
                    (1, false) => {
                        self.failures.fetch_sub(1, Ordering::AcqRel);
                    }
                    _ => {}
                }
                let seen = self.seen.fetch_add(1, Ordering::AcqRel) + 1;
                let calls = seen.min(u64::from(window));
                let fails = u64::from(self.failures.load(Ordering::Acquire));
                if seen >= u64::from(min_calls) && fails as f64 >= rate * calls as f64 && fails > 0
                {
                    self.trip(CLOSED);
                }
            }
            BreakerMode::RateOverTime {
                rate, min_calls, ..
            } => {
                let second = self.now() / 1_000_000_000;
                let len = self.buckets.len() as u64;
                let (s, c, f) = &self.buckets[(second % len) as usize];
                let seen = s.load(Ordering::Acquire);
                if seen != second
                    && s.compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    c.store(0, Ordering::Release);
                    f.store(0, Ordering::Release);
                }
                c.fetch_add(1, Ordering::AcqRel);
                if failed {
                    f.fetch_add(1, Ordering::AcqRel);
                }
                let (calls, fails) = self.window_totals(second);
                if calls >= u64::from(min_calls) && fails > 0 && fails as f64 >= rate * calls as f64
                {
                    self.trip(CLOSED);
                }
            }
            _ => {}
        }
    }

    fn window_totals(&self, second: u64) -> (u64, u64) {
        let oldest = second.saturating_sub(self.buckets.len() as u64 - 1);
        let (mut calls, mut fails) = (0u64, 0u64);
        for (s, c, f) in self.buckets.iter() {
            let at = s.load(Ordering::Acquire);
            if at != u64::MAX && at >= oldest && at <= second {
                calls += u64::from(c.load(Ordering::Acquire));
                fails += u64::from(f.load(Ordering::Acquire));
            }
        }
        (calls, fails)
    }

    /// Opens the breaker if it is still in state `from`.
    fn trip(&self, from: u8) {
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // The next half-open phase: no probes out, no successes yet.
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(u64::from(phase_of(p).wrapping_add(1)) << 32)
            });
        self.probe_successes.store(0, Ordering::Release);
        let n = self.openings.fetch_add(1, Ordering::AcqRel);
        let open = self
            .policy
            .open
            .saturating_mul(1u32 << n.min(20))
            .min(self.policy.max_open.max(self.policy.open));
        self.open_for.store(
            u64::try_from(open.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        self.opened_at.store(self.now(), Ordering::Release);
        self.reset_counts();
        self.transition("open");
    }

    fn reset_counts(&self) {
        self.consecutive.store(0, Ordering::Release);
        for r in self.ring.iter() {
            r.store(0, Ordering::Release);
        }
        self.failures.store(0, Ordering::Release);
        self.seen.store(0, Ordering::Release);
        for (s, _, _) in self.buckets.iter() {
            s.store(u64::MAX, Ordering::Release);
        }
    }

    fn transition(&self, to: &'static str) {
        self.transitions.fetch_add(1, Ordering::AcqRel);
        match &self.labels {
            Some((gauge, [(rk, rv), (sk, sv)])) => {
                gauge.set(f64::from(self.state.load(Ordering::Acquire)));
                metrics::counter!(
                    "apimesh.breaker.transitions",
                    "to" => to, *rk => rv.clone(), *sk => sv.clone()
                )
                .increment(1);
            }
            None => metrics::counter!("apimesh.breaker.transitions", "to" => to).increment(1),
        }
        tracing::info!(state = to, "circuit breaker changed state");
    }

    /// The state for the admin API.
    pub fn status(&self) -> BreakerStatus {
        let state = self.state();
        let open_for_seconds = (state == BreakerState::Open).then(|| {
            let until = self
                .opened_at
                .load(Ordering::Acquire)
                .saturating_add(self.open_for.load(Ordering::Acquire));
            Duration::from_nanos(until.saturating_sub(self.now())).as_secs_f64()
        });
        let failures = match self.policy.mode {
            BreakerMode::Consecutive(_) => self.consecutive.load(Ordering::Acquire),
            BreakerMode::RateOverTime { .. } => {
                let (_, f) = self.window_totals(self.now() / 1_000_000_000);
                u32::try_from(f).unwrap_or(u32::MAX)
            }
            _ => self.failures.load(Ordering::Acquire),
        };
        BreakerStatus {
            state,
            open_for_seconds,
            openings: self.openings.load(Ordering::Acquire),
            failures,
            transitions: self.transitions.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: BreakerMode) -> CircuitBreakerPolicy {
        let mut p = CircuitBreakerPolicy::default();
        p.mode = mode;
        p
    }

    fn consecutive(n: u32) -> CircuitBreakerPolicy {
        let mut p = policy(BreakerMode::Consecutive(n));
        p.open = Duration::from_secs(1);
        p.max_open = Duration::from_secs(3);
        p.half_open_probes = 2;
        p
    }

    fn call(b: &CircuitBreaker, outcome: Outcome) -> bool {
        match b.try_acquire() {
            Ok(p) => {
                b.record(p, outcome);
                true
            }
            Err(_) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_threshold_and_fails_fast() {
        let b = CircuitBreaker::new(consecutive(3));
        assert!(call(&b, Outcome::Failure));
        assert!(call(&b, Outcome::Success)); // streak broken
        for _ in 0..3 {
            assert!(call(&b, Outcome::Failure));
        }
        assert_eq!(b.state(), BreakerState::Open);
        let left = b.try_acquire().unwrap_err();
        assert_eq!(left, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_bounded_probes_then_closes() {
        let b = CircuitBreaker::new(consecutive(1));
        assert!(call(&b, Outcome::Failure));
        tokio::time::advance(Duration::from_secs(1)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "a third probe while two are out");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(p1, Outcome::Success);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(p2, Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.status().openings, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_frees_its_place_and_stale_probes_do_not_count() {
        let b = CircuitBreaker::new(consecutive(1));
        assert!(call(&b, Outcome::Failure));
        tokio::time::advance(Duration::from_secs(1)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        drop(p1); // cancelled: no verdict, and a place for another probe
        let p3 = b.try_acquire().unwrap();
        // p2 fails: open again (2 s); p3 is of that earlier phase.
        b.record(p2, Outcome::Failure);
        tokio::time::advance(Duration::from_secs(2)).await;
        let q1 = b.try_acquire().unwrap();
        let q2 = b.try_acquire().unwrap();
        b.record(p3, Outcome::Success);
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "a stale probe is no verdict"
        );
        assert!(b.try_acquire().is_err(), "nor does it free a place");
        b.record(q1, Outcome::Success);
        b.record(q2, Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_longer_up_to_the_max() {
        let b = CircuitBreaker::new(consecutive(1));
        assert!(call(&b, Outcome::Failure));
        for expected in [2, 3, 3] {
            // Wait out the current opening, then fail the probe.
            let left = b.try_acquire().unwrap_err();
            tokio::time::advance(left).await;
            let p = b.try_acquire().unwrap();
            b.record(p, Outcome::Failure);
            assert_eq!(b.try_acquire().unwrap_err(), Duration::from_secs(expected));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_mode_needs_min_calls() {
        let b = CircuitBreaker::new(policy(BreakerMode::Rate {
            rate: 0.5,
            window: 10,
            min_calls: 6,
        }));
        for _ in 0..5 {
            assert!(call(&b, Outcome::Failure));
        }
        assert_eq!(b.state(), BreakerState::Closed, "below min_calls");
        assert!(call(&b, Outcome::Success));
        assert_eq!(b.state(), BreakerState::Open, "5 of 6 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_forgets_old_failures() {
        let b = CircuitBreaker::new(policy(BreakerMode::RateOverTime {
            rate: 0.5,
            window: Duration::from_secs(2),
            min_calls: 4,
        }));
        for _ in 0..3 {
            assert!(call(&b, Outcome::Failure));
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        for _ in 0..3 {
            assert!(call(&b, Outcome::Success));
        }
        assert!(call(&b, Outcome::Failure));
        assert_eq!(b.state(), BreakerState::Closed, "1 of 4 in the window");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_count_as_failures() {
        let mut p = consecutive(1);
        p.slow_call = Some(Duration::from_millis(100));
        let b = CircuitBreaker::new(p);
        let p = b.try_acquire().unwrap();
        tokio::time::advance(Duration::from_millis(150)).await;
        b.record(p, Outcome::Success);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
