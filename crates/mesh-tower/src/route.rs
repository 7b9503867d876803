//! [`MatchedRoute`]: the route a request matched, carried in its extensions.

use std::sync::Arc;

use mesh_core::{Route, Snapshot};

/// The route a request matched and the snapshot it was matched in.
///
/// The inbound layer matches once and inserts this into the request's
/// extensions; later layers and handlers read it instead of matching again.
/// It pins the snapshot, so a request in flight sees one revision
/// throughout, whatever the registry publishes meanwhile.
///
/// In axum it is an extractor (`MatchedRoute` or `Option<MatchedRoute>`);
/// in tonic, read `request.extensions().get::<MatchedRoute>()`.
#[derive(Debug, Clone)]
pub struct MatchedRoute {
    snapshot: Arc<Snapshot>,
    index: usize,
}

impl MatchedRoute {
    /// Matches `req` against `snapshot`.
    pub fn find<B>(snapshot: &Arc<Snapshot>, req: &http::Request<B>) -> Option<MatchedRoute> {
        let index = snapshot.match_request(req)?.index();
        Some(MatchedRoute {
            snapshot: snapshot.clone(),
            index,
        })
    }

    /// The matched route.
    pub fn route(&self) -> &Route {
        // `index` came from this very snapshot's route list.
        &self.snapshot.routes()[self.index]
    }

    /// The snapshot the request is served with.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The snapshot's revision.
    pub fn revision(&self) -> u64 {
        self.snapshot.revision()
    }

    /// The route's position in the snapshot's route list.
    pub(crate) fn index(&self) -> usize {
        self.index
    }
}

/// The rejection when a handler asks for [`MatchedRoute`] but the request
/// did not pass through a matching inbound layer.
#[derive(Debug, Clone, Copy)]
pub struct MissingMatchedRoute(());

impl axum::response::IntoResponse for MissingMatchedRoute {
    fn into_response(self) -> axum::response::Response {
        let err = mesh_core::MeshError::Internal;
        err.to_problem_response().map(axum::body::Body::from)
    }
}

crate::macros::extension_extractor!(MatchedRoute, MissingMatchedRoute);
