use tower_layer::Layer;

use super::Inbound;
use crate::LiveSnapshot;

/// What the inbound layer does with a request that matches no route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unmatched {
    /// Pass it to the service untouched (no [`MatchedRoute`](crate::MatchedRoute)). The default,
    /// so adopting apimesh never breaks an endpoint the config does not name yet.
    #[default]
    PassThrough,
    /// Answer 404 with a problem body (gRPC: `UNIMPLEMENTED`).
    NotFound,
}

/// Applies the live snapshot's routes to inbound requests. See the
/// [module docs](crate::inbound).
#[derive(Debug, Clone)]
#[must_use]
pub struct InboundLayer {
    live: LiveSnapshot,
    unmatched: Unmatched,
}

impl InboundLayer {
    /// A layer reading `live`, passing unmatched requests through.
    pub fn new(live: LiveSnapshot) -> Self {
        InboundLayer {
            live,
            unmatched: Unmatched::default(),
        }
    }

    /// Sets what happens to requests no route matches.
    pub fn unmatched(mut self, unmatched: Unmatched) -> Self {
        self.unmatched = unmatched;
        self
    }
}

impl<S> Layer<S> for InboundLayer {
    type Service = Inbound<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Inbound::new(inner, &self.live, self.unmatched)
    }
}

/// The whole inbound policy chain a mesh puts in front of a service:
/// metrics, trace and access log, then route match, then authentication, then rate limits and quotas, then
/// the API version's lifecycle, then the route's fault injection, then the
/// [`CallContext`](crate::CallContext)
/// (deadline, trace, consumer) that outbound calls made while serving the
/// request inherit.
/// `mesh.inbound()` returns one; it is a plain [`Layer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MeshInboundLayer {
    routes: InboundLayer,
    auth: crate::auth::AuthLayer,
    limits: crate::ratelimit::RateLimitLayer,
    versions: crate::version::VersionLayer,
    context: crate::outbound::ContextLayer,
    faults: crate::resilience::FaultLayer,
    observe: crate::observe::ObserveLayer,
}

impl MeshInboundLayer {
    /// The chain: `routes` first, then `auth`, then `limits`, then the
    /// version lifecycle; the layers' caches and counters are shared by
    /// every service made from it.
    pub fn new(
        routes: InboundLayer,
        auth: crate::auth::AuthLayer,
        limits: crate::ratelimit::RateLimitLayer,
    ) -> Self {
        MeshInboundLayer {
            context: crate::outbound::ContextLayer::new(routes.live.clone()),
            observe: crate::observe::ObserveLayer::new(
                routes.live.clone(),
                crate::observe::Stats::new(),
            ),
            routes,
            auth,
            limits,
            versions: crate::version::VersionLayer::from_routes(),
            faults: crate::resilience::FaultLayer::from_routes(),
        }
    }

    /// Uses `observe` for the metrics, trace and access-log stage (e.g. one
    /// feeding the admin dashboard's statistics).
    pub fn observe(mut self, observe: crate::observe::ObserveLayer) -> Self {
        self.observe = observe;
        self
    }

    /// Uses `faults` for the fault-injection stage (e.g. one with a fixed
    /// seed, so a chaos test injects the same faults each run).
    pub fn faults(mut self, faults: crate::resilience::FaultLayer) -> Self {
        self.faults = faults;
        self
    }

    /// Uses `versions` for the lifecycle stage (e.g. one with a test clock).
    pub fn versions(mut self, versions: crate::version::VersionLayer) -> Self {
        self.versions = versions;
        self
    }
}

type Chain<S> = crate::observe::Observe<
    Inbound<
        crate::auth::Auth<
            crate::ratelimit::RateLimit<
                crate::version::Versioned<
                    crate::resilience::Fault<crate::outbound::ContextService<S>>,
                >,
            >,
        >,
    >,
>;

impl<S> Layer<S> for MeshInboundLayer {
    type Service = Chain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let versioned = self
            .versions
            .layer(self.faults.layer(self.context.layer(inner)));
        self.observe.layer(
            self.routes
                .layer(self.auth.layer(self.limits.layer(versioned))),
        )
    }
}
