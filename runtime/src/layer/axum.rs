//! What the layer needs from axum: `/metrics` as a handler. (The route
//! template comes from axum's `MatchedPath`, read in the parent module.)

use axum_core::response::{IntoResponse, Response};
use http::header::{ACCEPT, CONTENT_TYPE};

/// `/metrics` for an axum app: the exposition in the format the scraper
/// asks for in `Accept` (OpenMetrics or Prometheus text), merged over
/// every process of the shard directory in multiprocess mode.
///
/// ```
/// use axum::{Router, routing::get};
///
/// let app: Router = Router::new().route("/metrics", get(promshard::layer::metrics));
/// ```
pub async fn metrics(headers: http::HeaderMap) -> Response {
    let accept = headers.get(ACCEPT).and_then(|value| value.to_str().ok());
    let (body, content_type) = crate::render(accept);
    ([(CONTENT_TYPE, content_type)], body).into_response()
}
