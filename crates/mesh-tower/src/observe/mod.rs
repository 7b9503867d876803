//! Observability: RED metrics with OpenTelemetry names, `tracing` spans and
//! a sampled access log ([`ObserveLayer`]), the dashboard's statistics
//! ([`Stats`]), and the admin surface's bearer-token guard. See
//! `docs/observability.md`.

mod metrics;
mod state;
mod stats;

pub(crate) use metrics::method_label;
pub use metrics::{
    DURATION_BUCKETS, Observe, ObserveFuture, ObserveLayer, Observed, ObservedBody, UNMATCHED,
};
pub use stats::{Point, RouteSeries, Stats};
