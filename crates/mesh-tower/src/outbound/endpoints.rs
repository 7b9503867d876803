//! The endpoint directory: each service's endpoints from the live snapshot,
//! with load and health state that outlives snapshot changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use mesh_core::Snapshot;
use mesh_core::policy::OutlierPolicy;

/// The RTT a never-measured endpoint is assumed to have.
const DEFAULT_RTT_NS: f64 = 1_000_000.0;
/// How fast a peak-EWMA estimate forgets (as tower's `PeakEwma`).
const DECAY_NS: f64 = 10_000_000_000.0;
/// The longest ejection, however often an endpoint was ejected.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// A monotonic clock in nanoseconds since the directory was made; follows
/// tokio's clock, so tests with a paused clock control it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        // Saturates after 584 years.
        u64::try_from(
            tokio::time::Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }
}

/// Load and health of one endpoint, shared by every request and kept
/// across snapshots while the endpoint exists. Updated with relaxed
/// atomics: a lost update skews an estimate a little, never correctness.
#[derive(Debug)]
pub(crate) struct EndpointState {
    in_flight: AtomicU32,
    rtt_bits: AtomicU64,
    stamp: AtomicU64,
    /// Whether `rtt_bits` holds a measurement rather than the default.
    measured: AtomicBool,
    failures: AtomicU32,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    /// Back from an ejection and not yet answered well: one request at a
    /// time may probe it, and a failure ejects it again at once (the
    /// per-endpoint breaker's half-open state).
    probation: AtomicBool,
    /// A request on probation is in flight (the probe).
    probe: AtomicBool,
    /// The failure-rate window: when it started, requests and failures.
    window_start: AtomicU64,
    window_requests: AtomicU32,
    window_failures: AtomicU32,
    picked: AtomicU64,
}

impl EndpointState {
    fn new() -> EndpointState {
        EndpointState {
            in_flight: AtomicU32::new(0),
            rtt_bits: AtomicU64::new(DEFAULT_RTT_NS.to_bits()),
            stamp: AtomicU64::new(0),
            measured: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            probation: AtomicBool::new(false),
            probe: AtomicBool::new(false),
            window_start: AtomicU64::new(0),
            window_requests: AtomicU32::new(0),
            window_failures: AtomicU32::new(0),
            picked: AtomicU64::new(0),
        }
    }

    /// The peak-EWMA cost: the decayed latency estimate times the
    /// requests in flight (plus this one).
    pub(crate) fn cost(&self, now: u64) -> f64 {
        let est = f64::from_bits(self.rtt_bits.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        let decayed = est * (-elapsed / DECAY_NS).exp();
        let pending = f64::from(self.in_flight.load(Ordering::Relaxed)) + 1.0;
        decayed * pending
    }

    /// Records one response's latency: a higher sample replaces the
    /// estimate at once (the "peak"), a lower one is blended in.
    fn observe(&self, rtt_ns: f64, now: u64) {
        let prev = f64::from_bits(self.rtt_bits.load(Ordering::Relaxed));
        let prev_stamp = self.stamp.swap(now, Ordering::Relaxed);
        let next = if rtt_ns > prev {
            rtt_ns
        } else {
            let elapsed = now.saturating_sub(prev_stamp) as f64;
            let w = (-elapsed / DECAY_NS).exp();
            prev * w + rtt_ns * (1.0 - w)
        };
        self.rtt_bits.store(next.to_bits(), Ordering::Relaxed);
        self.measured.store(true, Ordering::Relaxed);
    }

    /// Whether a response was ever timed (else the latency is a guess).
    pub(crate) fn measured(&self) -> bool {
        self.measured.load(Ordering::Relaxed)
    }

    pub(crate) fn healthy(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// Whether the balancer may send a request now: not ejected, and, on
    /// probation after an ejection, not already being probed.
    pub(crate) fn available(&self, now: u64) -> bool {
        self.healthy(now)
            && !(self.probation.load(Ordering::Relaxed) && self.probe.load(Ordering::Relaxed))
    }

    /// Back from an ejection, not yet answered well.
    pub(crate) fn on_probation(&self) -> bool {
        self.probation.load(Ordering::Relaxed)
    }

    /// Counts one outcome in the failure-rate window (a tumbling window of
    /// `interval`); returns whether the failures now reach `rate` of at
    /// least `min_requests` requests.
    fn count(&self, failed: bool, now: u64, policy: &OutlierPolicy) -> bool {
        let Some(rate) = policy.failure_rate else {
            return false;
        };
        let interval = u64::try_from(policy.interval.as_nanos()).unwrap_or(u64::MAX);
        let start = self.window_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= interval
            && self
                .window_start
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.window_requests.store(0, Ordering::Relaxed);
            self.window_failures.store(0, Ordering::Relaxed);
        }
        let requests = self
            .window_requests
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if !failed {
            return false;
        }
        let failures = self
            .window_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        requests >= policy.min_requests && f64::from(failures) >= rate * f64::from(requests)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn picked(&self) -> u64 {
        self.picked.load(Ordering::Relaxed)
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Nanoseconds (directory clock) until which the endpoint is ejected.
    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Marks a request as started; the guard ends it. With `may_probe`
    /// (not for mirrored copies), a request to an endpoint on probation
    /// claims the probe if no other request holds it.
    pub(crate) fn start(self: &Arc<Self>, clock: Clock, may_probe: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.picked.fetch_add(1, Ordering::Relaxed);
        let probe = may_probe
            && self.probation.load(Ordering::Relaxed)
            && self
                .probe
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        InFlight {
            state: self.clone(),
            clock,
            started: clock.now(),
            done: false,
            probe,
        }
    }
}

/// One request in flight to an endpoint; counts in its load until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    state: Arc<EndpointState>,
    clock: Clock,
    started: u64,
    done: bool,
    /// This request holds the endpoint's probe.
    probe: bool,
}

impl InFlight {
    /// Whether this request is the probe of an endpoint on probation:
    /// its failure ejects the endpoint again at once.
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    /// The response headers arrived: record the latency.
    pub(crate) fn responded(&mut self) {
        if !self.done {
            self.done = true;
            self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
            if self.probe {
                self.state.probe.store(false, Ordering::Relaxed);
            }
            let now = self.clock.now();
            self.state
                .observe(now.saturating_sub(self.started) as f64, now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
            if self.probe {
                self.state.probe.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// One endpoint of a service at one snapshot revision.
#[derive(Debug)]
pub(crate) struct Ep {
    pub(crate) spec: mesh_core::Endpoint,
    pub(crate) state: Arc<EndpointState>,
}

/// A service's endpoints at one snapshot revision.
#[derive(Debug)]
pub(crate) struct ServiceEndpoints {
    pub(crate) name: Arc<str>,
    pub(crate) h2c: bool,
    pub(crate) max_concurrent: Option<u32>,
    pub(crate) outlier: OutlierPolicy,
    pub(crate) endpoints: Vec<Ep>,
    /// Held while an ejection is decided (see `failure`); one per service
    /// across revisions.
    pub(crate) ejecting: Arc<Mutex<()>>,
}

impl ServiceEndpoints {
    /// Counts a success: the endpoint's failure streak (and probation)
    /// ends.
    pub(crate) fn success(&self, i: usize, now: u64) {
        let Some(ep) = self.endpoints.get(i) else {
            return;
        };
        let s = &ep.state;
        // Loads first: a healthy endpoint's success writes nothing shared.
        if s.failures.load(Ordering::Relaxed) != 0 {
            s.failures.store(0, Ordering::Relaxed);
        }
        if s.probation.load(Ordering::Relaxed) {
            s.probation.store(false, Ordering::Relaxed);
        }
        s.count(false, now, &self.outlier);
        // A long healthy spell forgets earlier ejections.
        let quiet = self.outlier.base_ejection.as_nanos() as u64 * 10;
        if s.ejections.load(Ordering::Relaxed) > 0
            && s.ejected_until
                .load(Ordering::Relaxed)
                .saturating_add(quiet)
                < now
        {
            s.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure (a connect error, or a 502/503/504 answer). The
    /// endpoint is ejected after `consecutive_failures` in a row, when its
    /// failures reach `failure_rate` of its requests in the window, or at
    /// once when its probe fails on probation (`probe`: the request held
    /// it); for `base_ejection` × the number
    /// of its ejections in a row, unless that would eject more than
    /// `max_ejection` of the service (one endpoint may always be ejected).
    /// Returns whether it was ejected now.
    pub(crate) fn failure(&self, i: usize, now: u64, probe: bool) -> bool {
        let Some(ep) = self.endpoints.get(i) else {
            return false;
        };
        let s = &ep.state;
        let streak = s.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let rate_reached = s.count(true, now, &self.outlier);
        let probing = probe && s.probation.load(Ordering::Relaxed);
        if !(probing || rate_reached || streak >= self.outlier.consecutive_failures)
            || !s.healthy(now)
        {
            return false;
        }
        let ejected = |svc: &ServiceEndpoints| {
            svc.endpoints
                .iter()
                .filter(|e| !e.state.healthy(now))
                .count()
        };
        let cap =
            ((self.endpoints.len() as f64 * self.outlier.max_ejection).floor() as usize).max(1);
        // At the cap already (an outage): no lock to wait for.
        if ejected(self) >= cap {
            return false;
        }
        // Rare (a failing endpoint crossing its threshold): the count of
        // ejected endpoints and the ejection are one step, so concurrent
        // failures never eject past the cap.
        let _one_at_a_time = self
            .ejecting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !s.healthy(now) || ejected(self) >= cap {
            return false;
        }
        let n = s
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let time = self
            .outlier
            .base_ejection
            .saturating_mul(n)
            .min(MAX_EJECTION.max(self.outlier.base_ejection));
        s.ejected_until.store(
            now.saturating_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX)),
            Ordering::Relaxed,
        );
        s.failures.store(0, Ordering::Relaxed);
        s.probation.store(true, Ordering::Relaxed);
        // The next window starts when the endpoint is back.
        s.window_start.store(now, Ordering::Relaxed);
        s.window_requests.store(0, Ordering::Relaxed);
        s.window_failures.store(0, Ordering::Relaxed);
        let reason = if probing {
            "failed on probation"
        } else if rate_reached {
            "failure rate"
        } else {
            "consecutive failures"
        };
        tracing::warn!(
            service = %self.name,
            endpoint = %ep.spec.id,
            ejection = ?time,
            reason,
            "endpoint ejected"
        );
        metrics::counter!("apimesh.outlier.ejections", "service" => self.name.to_string())
            .increment(1);
        true
    }
}

/// Every service's endpoints at one revision.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub(crate) revision: u64,
    pub(crate) services: foldhash::HashMap<Arc<str>, Arc<ServiceEndpoints>>,
}

type StateKey = (Arc<str>, Arc<str>, String);

/// The directory: resolves a snapshot's services into endpoint sets whose
/// state persists across revisions (same service, id and address → same
/// state), so a new snapshot neither resets the load estimates nor the
/// ejections, and requests in flight to a removed endpoint finish.
#[derive(Debug)]
pub(crate) struct Directory {
    pub(crate) clock: Clock,
    states: Mutex<HashMap<StateKey, Arc<EndpointState>>>,
    /// Each service's ejection lock, kept across revisions as its
    /// endpoints' states are.
    ejecting: Mutex<HashMap<Arc<str>, Arc<Mutex<()>>>>,
    resolved: ArcSwapOption<Resolved>,
}

impl Directory {
    pub(crate) fn new() -> Directory {
        Directory {
            clock: Clock::new(),
            states: Mutex::new(HashMap::new()),
            ejecting: Mutex::new(HashMap::new()),
            resolved: ArcSwapOption::empty(),
        }
    }

    /// The endpoint sets for `snapshot` (rebuilt once per revision).
    pub(crate) fn resolve(&self, snapshot: &Snapshot) -> Arc<Resolved> {
        if let Some(r) = self.resolved.load_full()
            && r.revision == snapshot.revision()
        {
            return r;
        }
        // Once per revision, off the steady-state path.
        let mut states = match self.states.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(r) = self.resolved.load_full()
            && r.revision >= snapshot.revision()
        {
            // Another request built it (or a newer one) meanwhile; an older
            // snapshot still in flight is served with the newer endpoints.
            return r;
        }
        let mut services = foldhash::HashMap::default();
        let mut live = HashMap::new();
        for spec in &snapshot.config().services {
            let Some(svc) = snapshot.service(&spec.name) else {
                continue;
            };
            let endpoints = svc
                .endpoints
                .iter()
                .map(|e| {
                    let key: StateKey = (svc.name.clone(), e.id.clone(), e.address.to_string());
                    let state = states
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(EndpointState::new()));
                    live.insert(key, state.clone());
                    Ep {
                        spec: e.clone(),
                        state,
                    }
                })
                .collect();
            services.insert(
                svc.name.clone(),
                Arc::new(ServiceEndpoints {
                    ejecting: {
                        let mut locks = self
                            .ejecting
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        locks.entry(svc.name.clone()).or_default().clone()
                    },
                    name: svc.name.clone(),
                    h2c: svc.h2c,
                    max_concurrent: svc.max_concurrent,
                    outlier: svc.outlier,
                    endpoints,
                }),
            );
        }
        *states = live;
        self.ejecting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|name, _| services.contains_key(name));
        let r = Arc::new(Resolved {
            revision: snapshot.revision(),
            services,
        });
        self.resolved.store(Some(r.clone()));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn service(outlier: &str, endpoints: usize) -> Arc<ServiceEndpoints> {
        let eps: Vec<String> = (0..endpoints)
            .map(|i| format!("{{ address = \"127.0.0.1:{}\" }}", 9000 + i))
            .collect();
        let toml = format!(
            "[[services]]\nname = \"inventory\"\noutlier = {outlier}\nendpoints = [{}]\n",
            eps.join(", ")
        );
        let snapshot = Snapshot::from_toml(&toml, 1).unwrap();
        let resolved = Directory::new().resolve(&snapshot);
        resolved.services.get("inventory").unwrap().clone()
    }

    #[test]
    fn an_endpoint_back_from_ejection_is_probed_and_a_failed_probe_ejects_it_again() {
        let svc = service(
            "{ consecutive_failures = 3, base_ejection = \"10s\", max_ejection_percent = 100 }",
            2,
        );
        let s = &svc.endpoints[0].state;
        assert!(!svc.failure(0, SEC, false));
        assert!(!svc.failure(0, SEC, false));
        assert!(
            svc.failure(0, SEC, false),
            "the third failure in a row ejects"
        );
        assert!(!s.healthy(SEC) && !s.available(5 * SEC));
        // Back after 10 s, on probation: one probe at a time.
        assert!(s.available(11 * SEC) && s.on_probation());
        let probe = s.start(Clock::new(), true);
        assert!(probe.is_probe());
        assert!(!s.available(11 * SEC), "a second probe waits");
        let mirrored = s.start(Clock::new(), false);
        assert!(!mirrored.is_probe(), "a mirrored copy never probes");
        drop(mirrored);
        // A request from before the ejection failing now is no probe: it
        // counts toward a streak only.
        assert!(!svc.failure(0, 11 * SEC, false));
        drop(probe);
        assert!(
            s.available(11 * SEC),
            "the probe is released with its request"
        );
        // The probe failing ejects again at once, for twice as long.
        let probe = s.start(Clock::new(), true);
        assert!(svc.failure(0, 11 * SEC, probe.is_probe()));
        drop(probe);
        assert!(!s.healthy(30 * SEC) && s.healthy(31 * SEC));
        // A success ends probation; then it takes a streak again.
        svc.success(0, 31 * SEC);
        assert!(!s.on_probation());
        assert!(!s.start(Clock::new(), true).is_probe());
        assert!(!svc.failure(0, 32 * SEC, true));
        assert!(s.healthy(32 * SEC));
    }

    #[test]
    fn a_failure_rate_ejects_without_a_streak() {
        let svc = service(
            "{ consecutive_failures = 5, failure_percent = 30, min_requests = 20, interval = \"10s\" }",
            2,
        );
        // Every third request fails: never two failures in a row, 33%.
        let mut ejected_at = None;
        for n in 1..=30u64 {
            let now = n * SEC / 10;
            if n % 3 == 0 {
                if svc.failure(0, now, false) {
                    ejected_at = Some(n);
                    break;
                }
            } else {
                svc.success(0, now);
            }
        }
        assert_eq!(
            ejected_at,
            Some(21),
            "at the first failure after 20 requests"
        );
        // The other endpoint, at 10%, stays.
        for n in 1..=100u64 {
            let now = n * SEC / 10;
            if n % 10 == 0 {
                assert!(!svc.failure(1, now, false));
            } else {
                svc.success(1, now);
            }
        }
    }

    #[test]
    fn the_failure_rate_window_starts_over_each_interval() {
        let svc = service(
            "{ consecutive_failures = 100, failure_percent = 50, min_requests = 4, interval = \"1s\" }",
            2,
        );
        // 3 failures in one second: under `min_requests`.
        for _ in 0..3 {
            assert!(!svc.failure(0, SEC / 2, false));
        }
        // The next second forgets them: 1 failure of 1 request.
        assert!(!svc.failure(0, 2 * SEC, false));
        svc.success(0, 2 * SEC);
        svc.success(0, 2 * SEC);
        assert!(svc.failure(0, 2 * SEC, false), "2 of 4 in this window");
    }

    #[test]
    fn concurrent_failures_never_eject_past_the_cap() {
        for _ in 0..50 {
            let svc = service(
                "{ consecutive_failures = 1, base_ejection = \"60s\", max_ejection_percent = 50 }",
                8,
            );
            std::thread::scope(|scope| {
                for t in 0..8 {
                    let svc = &svc;
                    scope.spawn(move || {
                        for k in 0..8 {
                            svc.failure((t + k) % 8, SEC, false);
                        }
                    });
                }
            });
            let ejected = svc
                .endpoints
                .iter()
                .filter(|e| !e.state.healthy(SEC))
                .count();
            assert_eq!(ejected, 4);
        }
    }

    #[test]
    fn a_bad_failure_rate_is_a_config_error_naming_the_field() {
        for (outlier, field) in [
            ("{ failure_percent = 0 }", "failure_percent"),
            ("{ failure_percent = 150 }", "failure_percent"),
            ("{ min_requests = 0 }", "min_requests"),
            ("{ interval = \"0s\" }", "interval"),
            ("{ interval = \"soon\" }", "interval"),
        ] {
            let toml = format!(
                "[[services]]\nname = \"inventory\"\noutlier = {outlier}\nendpoints = [{{ address = \"127.0.0.1:9000\" }}]\n"
            );
            let err = Snapshot::from_toml(&toml, 1).unwrap_err().to_string();
            assert!(
                err.contains(&format!("services[0].outlier.{field}")),
                "{outlier}: {err}"
            );
        }
    }
}
