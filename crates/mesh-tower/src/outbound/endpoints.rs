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

    /// Marks a request as started; the guard ends it.
    pub(crate) fn start(self: &Arc<Self>, clock: Clock) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.picked.fetch_add(1, Ordering::Relaxed);
        InFlight {
            state: self.clone(),
            clock,
            started: clock.now(),
            done: false,
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
}

impl InFlight {
    /// The response headers arrived: record the latency.
    pub(crate) fn responded(&mut self) {
        if !self.done {
            self.done = true;
            self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
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
}

impl ServiceEndpoints {
    /// Counts a success: the endpoint's failure streak ends.
    pub(crate) fn success(&self, i: usize, now: u64) {
        let Some(ep) = self.endpoints.get(i) else {
            return;
        };
        let s = &ep.state;
        s.failures.store(0, Ordering::Relaxed);
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

    /// Counts a failure (a connect error, or a 502/503/504 answer); after
    /// `consecutive_failures` in a row the endpoint is ejected for
    /// `base_ejection` × the number of its ejections in a row, unless that
    /// would eject more than `max_ejection` of the service (one endpoint
    /// may always be ejected). Returns whether it was ejected now.
    pub(crate) fn failure(&self, i: usize, now: u64) -> bool {
        let Some(ep) = self.endpoints.get(i) else {
            return false;
        };
        let s = &ep.state;
        let streak = s.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if streak < self.outlier.consecutive_failures || !s.healthy(now) {
            return false;
        }
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| !e.state.healthy(now))
            .count();
        let cap =
            ((self.endpoints.len() as f64 * self.outlier.max_ejection).floor() as usize).max(1);
        if ejected >= cap {
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
        tracing::warn!(
            service = %self.name,
            endpoint = %ep.spec.id,
            ejection = ?time,
            "endpoint ejected after consecutive failures"
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
    resolved: ArcSwapOption<Resolved>,
}

impl Directory {
    pub(crate) fn new() -> Directory {
        Directory {
            clock: Clock::new(),
            states: Mutex::new(HashMap::new()),
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
                    name: svc.name.clone(),
                    h2c: svc.h2c,
                    max_concurrent: svc.max_concurrent,
                    outlier: svc.outlier,
                    endpoints,
                }),
            );
        }
        *states = live;
        let r = Arc::new(Resolved {
            revision: snapshot.revision(),
            services,
        });
        self.resolved.store(Some(r.clone()));
        r
    }
}
