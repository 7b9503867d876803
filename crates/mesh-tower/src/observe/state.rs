//! What [`ObserveLayer`](super::ObserveLayer) records into, resolved once
//! per snapshot revision and route instead of per request.
//!
//! For each route of a snapshot (and for the requests no route matched) an
//! [`ObserveState`] holds the labels (route id, path label, the API versions
//! the route can be served as), the dashboard's statistics cell and version
//! counters, and, per `metrics` recorder, a lock-free table of histogram
//! handles indexed by route, API version, method and status (or gRPC code).
//! Every entry is made on first use (`OnceLock`), so a route without traffic
//! has no handle, no series and no dashboard row, and a request finds its
//! handle with a few array reads: no map lookup, no label vector.
//!
//! The `metrics` recorder may be installed after a snapshot is built (it is
//! a process global, or a thread's own in tests), so handles are not made
//! when the state is built: a table belongs to the recorder that was current
//! when it was made (compared by address), and a revision keeps tables for
//! the first two recorders it sees (typically none, then the one installed
//! later). Label sets off the table (a status without a slot, a version of
//! another API, `consumer_label`) are cached in a map of the table; under a
//! third recorder, or for a request matched in another revision than the
//! state's, handles are registered with the recorder directly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use http::Method;
use mesh_core::{Route, Snapshot};
use metrics::{Histogram, Label};

use super::metrics::UNMATCHED;
use super::stats::{Cell, Stats};
use crate::compiled::Compiled;

/// Method labels: the nine standard methods, then `_OTHER`.
pub(super) const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "_OTHER",
];

/// Index of a method's label in [`METHODS`].
pub(super) fn method_index(m: &Method) -> u8 {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

/// HTTP statuses with a slot in the handle table.
const HTTP_SLOTS: usize = 30;
/// gRPC codes 0 to 16 follow them.
const GRPC_SLOTS: usize = 17;
const SLOTS: usize = HTTP_SLOTS + GRPC_SLOTS;

/// The table slot of a response: gRPC calls by their code, others by their
/// HTTP status; `None` for statuses without a slot.
fn slot(status: u16, grpc: Option<u8>) -> Option<usize> {
    if let Some(code) = grpc {
        let code = usize::from(code);
        return (code < GRPC_SLOTS).then_some(HTTP_SLOTS + code);
    }
    Some(match status {
        200 => 0,
        201 => 1,
        202 => 2,
        204 => 3,
        206 => 4,
        301 => 5,
        302 => 6,
        303 => 7,
        304 => 8,
        307 => 9,
        308 => 10,
        400 => 11,
        401 => 12,
        403 => 13,
        404 => 14,
        405 => 15,
        406 => 16,
        408 => 17,
        409 => 18,
        410 => 19,
        412 => 20,
        413 => 21,
        415 => 22,
        422 => 23,
        429 => 24,
        500 => 25,
        501 => 26,
        502 => 27,
        503 => 28,
        504 => 29,
        _ => return None,
    })
}

/// The `apimesh.api` and `apimesh.api.version` labels a route's requests
/// can have, with that version's request counter for the dashboard.
#[derive(Debug)]
struct Variant {
    api: Arc<str>,
    version: Arc<str>,
    count: OnceLock<Arc<AtomicU64>>,
}

/// One route's labels and statistics, resolved once per revision.
#[derive(Debug)]
pub(super) struct RouteObs {
    /// Position in the state's handle tables.
    pos: usize,
    pub(super) id: Arc<str>,
    pub(super) label: Arc<str>,
    /// What a request can be labelled with: first the route's own API
    /// version (or none, when the route has no version), then every version
    /// of the route's API.
    variants: Box<[Option<Variant>]>,
    cell: OnceLock<Arc<Cell>>,
}

impl RouteObs {
    fn new(pos: usize, route: &Route, snapshot: &Snapshot) -> RouteObs {
        let own = route
            .api_arc()
            .zip(route.version_arc())
            .map(|(a, v)| (a.clone(), v.clone()));
        let mut variants = vec![own.clone().map(|(api, version)| Variant {
            api,
            version,
            count: OnceLock::new(),
        })];
        if let Some(api) = route.api_arc() {
            let spec = snapshot.config().apis.iter().find(|a| *a.name == **api);
            for v in spec.into_iter().flat_map(|a| &a.versions) {
                if own.as_ref().is_some_and(|o| *o.1 == *v.version) {
                    continue;
                }
                variants.push(Some(Variant {
                    api: api.clone(),
                    version: Arc::from(v.version.as_str()),
                    count: OnceLock::new(),
                }));
            }
        }
        RouteObs {
            pos,
            id: route.id_arc().clone(),
            label: route.path_label().clone(),
            variants: variants.into_boxed_slice(),
            cell: OnceLock::new(),
        }
    }

    fn unmatched(pos: usize) -> RouteObs {
        let unmatched: Arc<str> = Arc::from(UNMATCHED);
        RouteObs {
            pos,
            id: unmatched.clone(),
            label: unmatched,
            variants: Box::new([None]),
            cell: OnceLock::new(),
        }
    }

    /// The variant of a request served as `version` (`None`: the route's
    /// own), if the route has one.
    fn variant(&self, version: Option<&crate::ApiVersion>) -> Option<usize> {
        let Some(v) = version else {
            return Some(0);
        };
        self.variants.iter().position(|x| {
            x.as_ref()
                .is_some_and(|x| *x.api == *v.api() && *x.version == *v.version())
        })
    }
}

/// One finished request.
#[derive(Debug)]
pub(super) struct Outcome<'a> {
    pub(super) method: u8,
    pub(super) status: u16,
    /// The gRPC status of a gRPC call.
    pub(super) grpc: Option<u8>,
    pub(super) failed: bool,
    pub(super) elapsed: Duration,
    /// The API version a later stage resolved, if any.
    pub(super) version: Option<&'a crate::ApiVersion>,
    pub(super) consumer: Option<&'a Arc<str>>,
}

/// Histogram handles made with one recorder.
#[derive(Debug)]
struct Handles {
    recorder: usize,
    /// Per route: per variant and method, a row of status slots.
    routes: Box<[OnceLock<RouteRows>]>,
    /// Label sets without a slot.
    others: DashMap<OtherKey, Histogram, foldhash::fast::RandomState>,
}

/// One route's rows, made on its first request.
type RouteRows = Box<[OnceLock<Box<Row>>]>;
/// One variant and method of a route: a handle per status slot.
type Row = [OnceLock<Histogram>; SLOTS];

#[derive(Debug, PartialEq, Eq, Hash)]
struct OtherKey {
    route: usize,
    method: u8,
    status: u16,
    grpc: Option<u8>,
    version: Option<(Arc<str>, Arc<str>)>,
    consumer: Option<Arc<str>>,
}

impl Handles {
    fn new(recorder: usize, routes: usize) -> Handles {
        Handles {
            recorder,
            routes: (0..routes).map(|_| OnceLock::new()).collect(),
            others: DashMap::default(),
        }
    }
}

/// The address of the recorder `metrics` records with right now.
fn current_recorder() -> usize {
    metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>().addr())
}

/// The observe stage's state for one snapshot revision.
#[derive(Debug)]
pub(crate) struct ObserveState {
    revision: u64,
    routes: Box<[RouteObs]>,
    unmatched: RouteObs,
    pub(super) consumer_label: bool,
    pub(super) access_log_sample: f64,
    stats: Stats,
    handles: [OnceLock<Handles>; 2],
}

impl Compiled for ObserveState {
    fn revision(&self) -> u64 {
        self.revision
    }
}

impl ObserveState {
    pub(super) fn build(snapshot: &Snapshot, stats: &Stats) -> ObserveState {
        let routes: Box<[RouteObs]> = snapshot
            .routes()
            .iter()
            .enumerate()
            .map(|(i, r)| RouteObs::new(i, r, snapshot))
            .collect();
        let obs = &snapshot.config().observability;
        ObserveState {
            revision: snapshot.revision(),
            unmatched: RouteObs::unmatched(routes.len()),
            routes,
            consumer_label: obs.consumer_label,
            access_log_sample: obs.access_log_sample.unwrap_or(1.0),
            stats: stats.clone(),
            handles: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The entry of a request matched as `m`, if it was matched in this
    /// revision.
    pub(super) fn route(&self, m: &crate::MatchedRoute) -> Option<&RouteObs> {
        if m.revision() == self.revision {
            self.routes.get(m.index())
        } else {
            None
        }
    }

    /// The entry of the route at position `i` of this revision.
    pub(super) fn route_at(&self, i: usize) -> Option<&RouteObs> {
        self.routes.get(i)
    }

    /// The entry of the requests no route matched.
    pub(super) fn unmatched(&self) -> &RouteObs {
        &self.unmatched
    }

    /// The table of the current recorder, if this revision keeps one for it.
    fn handles(&self) -> Option<&Handles> {
        let recorder = current_recorder();
        for slot in &self.handles {
            let h = slot.get_or_init(|| Handles::new(recorder, self.routes.len() + 1));
            if h.recorder == recorder {
                return Some(h);
            }
        }
        None
    }

    /// Records `o` for route `r` (an entry of this state, or one made for a
    /// request of another revision: then `cached` is false and nothing is
    /// kept). Returns the `apimesh.api` and `apimesh.api.version` labels.
    pub(super) fn record<'a>(
        &self,
        r: &'a RouteObs,
        cached: bool,
        o: &Outcome<'a>,
    ) -> Option<(&'a str, &'a str)> {
        let variant = r.variant(o.version);
        let labels = match (variant, o.version) {
            (Some(i), _) => r.variants[i].as_ref().map(|v| (&*v.api, &*v.version)),
            (None, v) => v.map(|v| (v.api(), v.version())),
        };
        let consumer = o.consumer.filter(|_| self.consumer_label);
        let secs = o.elapsed.as_secs_f64();
        let register = || register(&r.label, o.method, labels, consumer, o.status, o.grpc);
        let handles = if cached { self.handles() } else { None };
        match handles {
            None => register().record(secs),
            Some(h) => match variant.zip(slot(o.status, o.grpc)) {
                Some((v, s)) if consumer.is_none() => {
                    let rows = h.routes[r.pos].get_or_init(|| {
                        (0..r.variants.len() * METHODS.len())
                            .map(|_| OnceLock::new())
                            .collect()
                    });
                    let row = rows[v * METHODS.len() + usize::from(o.method)]
                        .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
                    row[s].get_or_init(register).record(secs);
                }
                _ => {
                    let key = OtherKey {
                        route: r.pos,
                        method: o.method,
                        status: o.status,
                        grpc: o.grpc,
                        version: labels.map(|(a, v)| (Arc::from(a), Arc::from(v))),
                        consumer: consumer.cloned(),
                    };
                    match h.others.get(&key) {
                        Some(hist) => hist.record(secs),
                        None => {
                            let hist = register();
                            hist.record(secs);
                            h.others.insert(key, hist);
                        }
                    }
                }
            },
        }

        r.cell
            .get_or_init(|| self.stats.cell(&r.id, &r.label))
            .record(o.failed, o.elapsed);
        match variant {
            Some(i) => {
                if let Some(v) = &r.variants[i] {
                    v.count
                        .get_or_init(|| self.stats.version_counter(&v.api, &v.version))
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                if let Some((api, version)) = labels {
                    self.stats
                        .version_counter(&Arc::from(api), &Arc::from(version))
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(c) = o.consumer {
            self.stats.count_consumer(c);
        }
        labels
    }

    /// An entry for a request matched in another revision than this one's.
    pub(super) fn uncached(route: &Route, snapshot: &Snapshot) -> RouteObs {
        RouteObs::new(usize::MAX, route, snapshot)
    }
}

/// Registers the duration histogram of one label set with the current
/// recorder.
fn register(
    label: &str,
    method: u8,
    version: Option<(&str, &str)>,
    consumer: Option<&Arc<str>>,
    status: u16,
    grpc: Option<u8>,
) -> Histogram {
    let mut labels = Vec::with_capacity(7);
    labels.push(Label::new("http.route", label.to_owned()));
    labels.push(Label::new(
        "http.request.method",
        METHODS[usize::from(method)],
    ));
    if let Some((api, v)) = version {
        labels.push(Label::new("apimesh.api", api.to_owned()));
        labels.push(Label::new("apimesh.api.version", v.to_owned()));
    }
    if let Some(c) = consumer {
        labels.push(Label::new("apimesh.consumer", c.to_string()));
    }
    match grpc {
        Some(code) => {
            labels.push(Label::new("rpc.system", "grpc"));
            labels.push(Label::new("rpc.grpc.status_code", code.to_string()));
            metrics::describe_histogram!(
                "rpc.server.call.duration",
                metrics::Unit::Seconds,
                "Duration of inbound gRPC calls, to the end of the response."
            );
            metrics::histogram!("rpc.server.call.duration", labels)
        }
        None => {
            labels.push(Label::new("http.response.status_code", status.to_string()));
            metrics::describe_histogram!(
                "http.server.request.duration",
                metrics::Unit::Seconds,
                "Duration of inbound HTTP requests, to the end of the response body."
            );
            metrics::histogram!("http.server.request.duration", labels)
        }
    }
}
