//! A [`tower`](https://docs.rs/tower) layer that records every request an
//! app serves into the HTTP families of
//! [`#[instrument_handler]`](https://docs.rs/promshard/latest/promshard/attr.instrument_handler.html):
//! `http_requests_total{handler,method,status}`,
//! `http_request_duration_seconds{handler,method}` and
//! `http_requests_in_flight{handler}` (feature `tower`).
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//!
//! async fn get_user(axum::extract::Path(id): axum::extract::Path<u64>) -> String {
//!     format!("user {id}")
//! }
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(get_user))
//!     .route("/metrics", get(promshard::layer::metrics))
//!     .layer(promshard::http_layer!());
//! # }
//! ```
//!
//! - `handler` is the route template: with feature `axum`, the router's
//!   `MatchedPath` (`/users/{id}`, never `/users/42`, nested routers
//!   included). Where the router names none (a plain tower service, a
//!   `Router::nest_service`), the route of the first handler instrumented
//!   with `#[instrument_handler(route = ...)]` that runs inside the
//!   request does. A request nothing names (a 404, a 405, a fallback, a
//!   nested service without an instrumented handler) is `<unmatched>`, so
//!   scanners trying paths cannot create series. Templates known only
//!   from the router share the room the families' budget leaves beside
//!   the instrumented handlers (44 `handler` values with the default
//!   families, `<unmatched>` and the instrumented handlers included;
//!   raise it with [`http_layer!`](crate::http_layer)); past it they are
//!   counted under `other` and in `promshard_label_overflow_total`.
//! - `status` is the response's status; every 405 is `<unmatched>`'s, as
//!   the layer cannot tell a router's 405 from a handler's. A request
//!   whose service panics is counted as 500 (what a catch-panic layer
//!   answers), one dropped before its response (the client went away, a
//!   timeout) as 499. Latency runs until the response's head, not its
//!   body.
//! - A request is counted once even when its handlers are instrumented
//!   too: a handler that records into the same families (no `families`
//!   argument, or families without a prefix) and runs inside the
//!   request counts no call of its own, and nor do the instrumented
//!   handlers it calls. Give such handlers the router's route, so that
//!   their series (there from startup) are the ones requests count in.
//!   Handlers whose families have a prefix keep counting their own. One
//!   limit: a handler run on another task (`tokio::spawn`,
//!   `spawn_blocking`) is outside the request and counts itself as well;
//!   instrument the routed handler, not the work it hands off, or give
//!   that work a plain `#[instrument_handler]` (function families).
//!
//! Apply it with `Router::layer`, not `route_layer`, so that it also sees
//! requests no route matched.

#[cfg(feature = "axum")]
mod axum;

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::handler::request::Request;

#[cfg(feature = "axum")]
pub use self::axum::metrics;
pub use crate::handler::families::UNMATCHED;

/// The layer; see the [module docs](self). Made by
/// [`http_layer!`](crate::http_layer), which lists its families.
#[derive(Clone, Copy, Debug)]
pub struct HttpMetricsLayer {
    _private: (),
}

impl HttpMetricsLayer {
    /// Not a stable API: what `http_layer!` returns once it has listed
    /// the families.
    #[doc(hidden)]
    pub fn __new() -> HttpMetricsLayer {
        HttpMetricsLayer { _private: () }
    }
}

impl<S> tower_layer::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> HttpMetrics<S> {
        HttpMetrics { inner }
    }
}

/// A service wrapped by [`HttpMetricsLayer`].
#[derive(Clone, Debug)]
pub struct HttpMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for HttpMetrics<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let record = Request::start(request.method().as_str(), route(&request));
        // A service that builds its future eagerly may run a handler here.
        let future = match &record {
            Some(record) => record.enter(|| self.inner.call(request)),
            None => self.inner.call(request),
        };
        ResponseFuture { future, record }
    }
}

/// The route template the framework matched, if any.
fn route<B>(request: &http::Request<B>) -> Option<&str> {
    #[cfg(feature = "axum")]
    if let Some(path) = request.extensions().get::<::axum::extract::MatchedPath>() {
        return Some(path.as_str());
    }
    let _ = request;
    None
}

/// The future of [`HttpMetrics`]: the inner service's, recording the
/// request when it completes, panics or is dropped.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F> {
    future: F,
    /// `None` once the response is recorded.
    record: Option<Request>,
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is pinned with the wrapper and never moved out;
        // `record` is not structurally pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        // On this stack during the poll, so that a panic in the service
        // drops it while unwinding and it counts the panic: an executor
        // drops a panicked future only after catching the panic.
        let record = this.record.take();
        let poll = match &record {
            Some(record) => record.enter(|| future.poll(cx)),
            None => future.poll(cx),
        };
        match (poll, record) {
            (Poll::Pending, record) => {
                this.record = record;
                Poll::Pending
            }
            (Poll::Ready(result), record) => {
                if let Some(record) = record {
                    record.finish(match &result {
                        Ok(response) => response.status().as_u16(),
                        Err(_) => 500,
                    });
                }
                Poll::Ready(result)
            }
        }
    }
}

impl<F> Drop for ResponseFuture<F> {
    fn drop(&mut self) {
        // Held here only between polls: dropped unfinished, the request
        // was cancelled, even while an unrelated panic unwinds (which is
        // all `Request`'s own drop could see).
        if let Some(record) = self.record.take() {
            record.cancel();
        }
    }
}

impl<F> core::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ResponseFuture").field("recording", &self.record.is_some()).finish_non_exhaustive()
    }
}

/// The tower layer recording every request into the HTTP families of
/// `#[instrument_handler]`; see the [`layer`](crate::layer) module.
///
/// Like the attribute, it lists its families when the program is linked,
/// so they exist (with `<unmatched>` at zero) from startup, and only in
/// programs that use the layer. `http_layer!(FAMILIES)` sets them up:
/// another budget, other buckets, methods or statuses. They must have no
/// prefix (the layer records into `http_requests_total` and its
/// siblings); instrumented handlers without a `families` argument follow
/// these settings too.
///
/// ```
/// use promshard::HandlerFamilies;
///
/// const HTTP: HandlerFamilies = HandlerFamilies::http().max_series(50_000).buckets(&[0.01, 0.1, 1.0, 10.0]);
///
/// let layer = promshard::http_layer!(HTTP);
/// # let _: promshard::layer::HttpMetricsLayer = layer;
/// ```
#[macro_export]
macro_rules! http_layer {
    () => {
        $crate::http_layer!($crate::HandlerFamilies::HTTP)
    };
    ($families:expr $(,)?) => {{
        const __PROMSHARD_FAMILIES_VALUE: $crate::HandlerFamilies = $families;
        // Fails the build when one route alone overruns the budget.
        const _: () = $crate::__private::check_handler_site(&__PROMSHARD_FAMILIES_VALUE, "<unmatched>");
        static __PROMSHARD_FAMILIES: $crate::HandlerFamilies = __PROMSHARD_FAMILIES_VALUE;
        static __PROMSHARD_LAYER: $crate::__private::HandlerSite =
            $crate::__private::HandlerSite::layer(&__PROMSHARD_FAMILIES, ::core::file!(), ::core::line!());
        #[$crate::__private::linkme::distributed_slice($crate::__private::HANDLERS)]
        #[linkme(crate = $crate::__private::linkme)]
        static __PROMSHARD_LAYER_ENTRY: &$crate::__private::HandlerSite = &__PROMSHARD_LAYER;
        $crate::layer::HttpMetricsLayer::__new()
    }};
}
