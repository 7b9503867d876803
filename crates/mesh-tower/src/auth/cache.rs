//! The verified-token cache: bounded, lock-free, direct-mapped.
//!
//! A slot is chosen by a (randomly seeded) hash of the whole token and
//! holds the token itself, so a hit is only ever the same token, compared in
//! full. Only tokens whose signature verified are inserted, so a flood of
//! forged tokens cannot evict anything. A colliding insert simply replaces
//! the slot: memory is bounded by the slot count, and the worst case is a
//! repeated signature check.

use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::token::VerifiedToken;

pub(crate) struct Entry {
    token: Box<str>,
    /// Seconds since the epoch after which the entry is not used.
    pub(crate) valid_until: f64,
    pub(crate) verified: Arc<VerifiedToken>,
}

pub(crate) struct TokenCache {
    slots: Box<[ArcSwapOption<Entry>]>,
    mask: usize,
    hasher: foldhash::fast::RandomState,
}

impl TokenCache {
    /// A cache with at least `capacity` slots (rounded up to a power of two);
    /// 0 disables caching.
    pub(crate) fn new(capacity: usize) -> TokenCache {
        let n = if capacity == 0 {
            0
        } else {
            capacity.next_power_of_two()
        };
        TokenCache {
            slots: (0..n).map(|_| ArcSwapOption::empty()).collect(),
            mask: n.wrapping_sub(1),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn slot(&self, token: &str) -> Option<&ArcSwapOption<Entry>> {
        if self.slots.is_empty() {
            return None;
        }
        let h = self.hasher.hash_one(token) as usize;
        self.slots.get(h & self.mask)
    }

    /// The cached verification of `token`, if still valid at `now`.
    pub(crate) fn get(&self, token: &str, now: f64) -> Option<Arc<VerifiedToken>> {
        let guard = self.slot(token)?.load();
        let entry = guard.as_ref()?;
        (entry.valid_until >= now && *entry.token == *token).then(|| entry.verified.clone())
    }

    pub(crate) fn insert(&self, token: &str, valid_until: f64, verified: Arc<VerifiedToken>) {
        if let Some(slot) = self.slot(token) {
            slot.store(Some(Arc::new(Entry {
                token: token.into(),
                valid_until,
                verified,
            })));
        }
    }

    /// Forgets `token` (its key left the key set).
    pub(crate) fn remove(&self, token: &str) {
        if let Some(slot) = self.slot(token) {
            let cur = slot.load();
            if cur.as_ref().is_some_and(|e| *e.token == *token) {
                slot.compare_and_swap(&cur, None);
            }
        }
    }
}
