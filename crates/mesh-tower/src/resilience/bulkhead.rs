//! The bulkhead: a cap on concurrent requests, with fast rejection beyond
//! it (load shedding), never a queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// At most `max` requests in flight; the next one is refused at once.
///
/// ```
/// use mesh_tower::resilience::Bulkhead;
/// let b = Bulkhead::new(1);
/// let first = b.try_acquire().unwrap();
/// assert!(b.try_acquire().is_none());
/// drop(first);
/// assert!(b.try_acquire().is_some());
/// ```
#[derive(Debug)]
pub struct Bulkhead {
    max: u32,
    in_flight: Arc<AtomicU32>,
}

/// One admitted request; frees its place when dropped.
#[derive(Debug)]
pub struct BulkheadPermit {
    in_flight: Arc<AtomicU32>,
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// A bulkhead admitting `max` concurrent requests.
    pub fn new(max: u32) -> Bulkhead {
        Bulkhead {
            max,
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The cap.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A place, or `None` when `max` requests are in flight.
    pub fn try_acquire(&self) -> Option<BulkheadPermit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| BulkheadPermit {
                in_flight: self.in_flight.clone(),
            })
    }
}
