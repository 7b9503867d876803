//! Choosing an endpoint: priority group, then locality, then P2C over
//! peak-EWMA.
//!
//! tower's `p2c::Balance` balances one flat set discovered as a stream;
//! here every request has its own candidate set (a destination's subset,
//! the healthy endpoints of the best priority group, the caller's zone), so
//! the same algorithm runs over an index filter instead: two endpoints
//! drawn at random, the one with the lower peak-EWMA cost (latency
//! estimate × requests in flight ÷ weight) wins. No allocation, no lock.

use std::sync::Arc;

use super::endpoints::{Ep, ServiceEndpoints};

/// Where this instance runs: the balancer prefers endpoints in the same
/// zone, then the same region, then anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// Region, e.g. `eu-west`.
    pub region: Option<Arc<str>>,
    /// Zone, e.g. `eu-west-1a`.
    pub zone: Option<Arc<str>>,
}

impl Locality {
    /// A locality from a region and a zone.
    pub fn new(region: impl Into<Arc<str>>, zone: impl Into<Arc<str>>) -> Locality {
        Locality {
            region: Some(region.into()),
            zone: Some(zone.into()),
        }
    }

    /// How near `ep` is: 0 same zone, 1 same region, 2 elsewhere.
    fn tier(&self, ep: &Ep) -> u8 {
        if self.zone.is_some() && ep.spec.zone == self.zone {
            0
        } else if self.region.is_some() && ep.spec.region == self.region {
            1
        } else {
            2
        }
    }
}

/// One request's choice.
pub(crate) struct Pick<'a> {
    pub(crate) svc: &'a ServiceEndpoints,
    pub(crate) subset: &'a [(String, String)],
    pub(crate) locality: &'a Locality,
    pub(crate) spill: f64,
    /// Endpoints already tried by this request.
    pub(crate) exclude: &'a [usize],
    pub(crate) now: u64,
}

impl Pick<'_> {
    fn eligible(&self, i: usize, ep: &Ep) -> bool {
        ep.spec.weight > 0
            && !self.exclude.contains(&i)
            && self
                .subset
                .iter()
                .all(|(k, v)| ep.spec.metadata.iter().any(|(mk, mv)| mk == k && mv == v))
    }

    /// The endpoint to use, or `None` when no eligible endpoint is healthy.
    /// With `panic`, health is ignored (the last resort when there is
    /// nowhere else to go: better to try an ejected endpoint than to fail).
    pub(crate) fn choose(&self, panic: bool) -> Option<usize> {
        let eps = &self.svc.endpoints;
        // Availability read once: a probe claimed or an ejection made by
        // another request meanwhile must not make the passes below
        // disagree (and find nothing). Past 128 endpoints, the rest are
        // read as they go and `p2c` falls back.
        let mut available: u128 = 0;
        for (i, ep) in eps.iter().enumerate().take(128) {
            if panic || ep.state.available(self.now) {
                available |= 1 << i;
            }
        }
        let ok = |i: usize, ep: &Ep| {
            self.eligible(i, ep)
                && if i < 128 {
                    (available >> i) & 1 == 1
                } else {
                    panic || ep.state.available(self.now)
                }
        };
        // The best priority group with a usable endpoint.
        let priority = eps
            .iter()
            .enumerate()
            .filter(|(i, ep)| ok(*i, ep))
            .map(|(_, ep)| ep.spec.priority)
            .min()?;
        let candidate = |i: usize, ep: &Ep| ep.spec.priority == priority && ok(i, ep);
        let mut counts = [0usize; 3];
        for (i, ep) in eps.iter().enumerate() {
            if candidate(i, ep) {
                counts[usize::from(self.locality.tier(ep))] += 1;
            }
        }
        // Cumulative: tier t holds every candidate at distance ≤ t.
        let within = [
            counts[0],
            counts[0] + counts[1],
            counts[0] + counts[1] + counts[2],
        ];
        let tier = within.iter().position(|&n| n > 0)?;
        let in_tier = |t: usize| move |ep: &Ep| usize::from(self.locality.tier(ep)) <= t;
        let local = self.p2c(within[tier], |i, ep| candidate(i, ep) && in_tier(tier)(ep))?;
        // Spill over when the nearest tier is much costlier than the next.
        if let Some(next) = (tier + 1..3).find(|&t| within[t] > within[tier]) {
            let outside =
                |i: usize, ep: &Ep| candidate(i, ep) && in_tier(next)(ep) && !in_tier(tier)(ep);
            if let Some(far) = self.p2c(within[next] - within[tier], outside)
                && self.spills(local, far)
            {
                return Some(far);
            }
        }
        Some(local)
    }

    /// Whether `near` is more than `spill` times costlier than `far`.
    ///
    /// Until both have answered, load alone (requests in flight ÷ weight)
    /// decides: an endpoint never measured has only the default latency
    /// guess, which real latencies (a first request's connect, a busy
    /// host) easily exceed twice, and comparing with it would move an idle
    /// zone's traffic to a tier the client knows nothing about.
    fn spills(&self, near: usize, far: usize) -> bool {
        let (Some(n), Some(f)) = (self.svc.endpoints.get(near), self.svc.endpoints.get(far)) else {
            return false;
        };
        if n.state.measured() && f.state.measured() {
            self.cost(near) > self.spill * self.cost(far)
        } else {
            let load = |ep: &Ep| {
                (f64::from(ep.state.in_flight()) + 1.0) / f64::from(ep.spec.weight.max(1))
            };
            load(n) > self.spill * load(f)
        }
    }

    fn cost(&self, i: usize) -> f64 {
        self.svc.endpoints.get(i).map_or(f64::INFINITY, |ep| {
            ep.state.cost(self.now) / f64::from(ep.spec.weight.max(1))
        })
    }

    /// Power of two choices among the `n` endpoints that pass `filter`.
    fn p2c(&self, n: usize, filter: impl Fn(usize, &Ep) -> bool) -> Option<usize> {
        let nth = |k: usize| {
            self.svc
                .endpoints
                .iter()
                .enumerate()
                .filter(|(i, ep)| filter(*i, ep))
                .nth(k)
                .map(|(i, _)| i)
        };
        match n {
            0 => None,
            1 => nth(0),
            _ => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = match (nth(a), nth(b)) {
                    (Some(a), Some(b)) => (a, b),
                    // The set shrank meanwhile (only past 128 endpoints).
                    (Some(one), None) | (None, Some(one)) => return Some(one),
                    (None, None) => return nth(0),
                };
                Some(if self.cost(b) < self.cost(a) { b } else { a })
            }
        }
    }
}
