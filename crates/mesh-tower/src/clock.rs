//! The wall clock the version layer reads per request, in whole seconds.
//!
//! Lifecycles (sunsets, brown-outs) change on second boundaries, so the
//! layer reads the kernel's coarse real-time clock: on
//! Linux `CLOCK_REALTIME_COARSE`, the time of the last scheduler tick (a
//! few milliseconds behind at most), a memory read of the vDSO page that
//! costs about 3 ns where `SystemTime::now` costs about 40 ns on the
//! machines apimesh is measured on. Elsewhere it is `SystemTime::now`.

use std::sync::Arc;

use crate::ratelimit::WallClock;

/// Seconds since the Unix epoch (0 before it).
#[cfg(target_os = "linux")]
pub(crate) fn unix_seconds() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    u64::try_from(now.tv_sec).unwrap_or(0)
}

/// Seconds since the Unix epoch (0 before it).
#[cfg(not(target_os = "linux"))]
pub(crate) fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`unix_seconds`] as a [`WallClock`].
pub(crate) fn system() -> WallClock {
    Arc::new(unix_seconds)
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn agrees_with_the_system_clock_to_the_second() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let coarse = super::unix_seconds();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // The coarse clock lags by at most a tick.
        assert!(
            (before.saturating_sub(1)..=after).contains(&coarse),
            "{before} {coarse} {after}"
        );
    }
}
