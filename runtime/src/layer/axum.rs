//! What the layer needs from axum: `/metrics` as a handler. (The route
//! template comes from axum's `MatchedPath`, read in the parent module.)

use axum_core::response::{IntoResponse, Response};
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::MetricsResponse;

/// `/metrics` for an axum app: the exposition in the format the scraper
/// asks for in `Accept` (OpenMetrics or Prometheus text), gzip-compressed
/// when its `Accept-Encoding` allows, merged over every process of the
/// shard directory in multiprocess mode.
///
/// ```
/// use axum::{Router, routing::get};
///
/// let app: Router = Router::new().route("/metrics", get(promshard::layer::metrics));
/// ```
pub async fn metrics(headers: HeaderMap) -> Response {
    let accept = joined(&headers, ACCEPT);
    let accept_encoding = joined(&headers, ACCEPT_ENCODING);
    let exposition = MetricsResponse::render(accept.as_deref(), accept_encoding.as_deref());
    let mut response_headers = HeaderMap::new();
    response_headers.insert(CONTENT_TYPE, HeaderValue::from_static(exposition.content_type()));
    for (name, value) in exposition.headers() {
        response_headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    (response_headers, exposition.into_body()).into_response()
}

/// Every value of the header `name`, joined as one list (as the built-in
/// server reads them); values that are not visible ASCII are skipped.
fn joined(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|value| value.to_str().ok());
    let first = values.next()?.to_owned();
    Some(values.fold(first, |list, value| list + ", " + value))
}
