//! The clock the per-layer benches measure with.

use std::time::{Duration, Instant};

/// The bench thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so that other
/// processes on a shared machine do not inflate the figures; wall time
/// with `BENCH_CLOCK=wall` (and where there is no such clock).
pub(crate) fn clock() -> Duration {
    #[cfg(unix)]
    if std::env::var_os("BENCH_CLOCK").is_none_or(|v| v != "wall") {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        return Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        );
    }
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// Runs `f` `iters` times and returns the time it took on [`clock`].
#[allow(dead_code)] // Not every bench that includes this module uses it.
pub(crate) fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = clock();
    for _ in 0..iters {
        f();
    }
    clock() - start
}

/// Runs `base` and `f` `iters` times each, interleaved in short chunks
/// (in turn first), and returns `f`'s time minus `base`'s on [`clock`]:
/// what `f` costs over `base`, measured side by side, so that the drift
/// of a shared machine falls on both alike. Zero when noise makes the
/// difference negative.
#[allow(dead_code)] // Not every bench that includes this module uses it.
pub(crate) fn timed_over(iters: u64, mut base: impl FnMut(), mut f: impl FnMut()) -> Duration {
    const CHUNK: u64 = 64;
    let (mut in_base, mut in_f) = (Duration::ZERO, Duration::ZERO);
    let mut left = iters;
    let mut base_first = true;
    while left > 0 {
        let n = left.min(CHUNK);
        let run = |g: &mut dyn FnMut(), total: &mut Duration| {
            let start = clock();
            for _ in 0..n {
                g();
            }
            *total += clock() - start;
        };
        if base_first {
            run(&mut base, &mut in_base);
            run(&mut f, &mut in_f);
        } else {
            run(&mut f, &mut in_f);
            run(&mut base, &mut in_base);
        }
        base_first = !base_first;
        left -= n;
    }
    in_f.saturating_sub(in_base)
}
