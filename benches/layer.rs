//! What the tower layer adds to a request through an axum router, against
//! the same router bare and behind axum-prometheus's layer, in one
//! criterion run.
//!
//! ```sh
//! cargo bench --bench layer
//! ```
//!
//! Each iteration builds a `GET /users/{id}` request and runs it through
//! `Router::oneshot` to its response; the handler answers at once, so
//! what differs between the variants is the layer. `promshard_attribute`
//! adds `#[instrument_handler]` on the handler (which hands the request
//! to the layer, so it is still counted once). `_mmap` groups run the
//! promshard variants again in multiprocess mode, in a forked child.

mod forked;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use criterion::{Criterion, Throughput};
use promshard::instrument_handler;
use tower::ServiceExt;

async fn user(Path(id): Path<u64>) -> String {
    id.to_string()
}

#[instrument_handler(route = "/users/{id}", method = "GET")]
async fn instrumented_user(Path(id): Path<u64>) -> String {
    id.to_string()
}

/// Polls a future that never waits to completion.
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}

fn request(id: u64) -> http::Request<Body> {
    http::Request::get(format!("/users/{id}")).body(Body::empty()).unwrap()
}

fn requests(c: &mut Criterion, suffix: &str, peers: bool) {
    let bare: Router = Router::new().route("/users/{id}", get(user));
    let layered = bare.clone().layer(promshard::http_layer!());
    let attributed: Router = Router::new().route("/users/{id}", get(instrumented_user)).layer(promshard::http_layer!());
    let mut variants = vec![("bare", bare.clone()), ("promshard", layered), ("promshard_attribute", attributed)];
    // axum-prometheus spawns an upkeep task when it is set up: it needs a
    // runtime, which the requests themselves do not.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _entered = runtime.enter();
    if peers {
        let (layer, _handle) = axum_prometheus::PrometheusMetricLayer::pair();
        variants.push(("axum_prometheus", bare.layer(layer)));
    }
    let mut group = c.benchmark_group(format!("layer{suffix}"));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .throughput(Throughput::Elements(1));
    for (name, router) in variants {
        let mut id = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                id = id.wrapping_add(1);
                let response = run(router.clone().oneshot(request(black_box(id)))).unwrap();
                black_box(response.status())
            })
        });
    }
    group.finish();
}

fn main() {
    forked::in_shard_process("layer", |c| requests(c, "_mmap", false));
    promshard::check_registry().expect("benchmark metrics are consistent");
    let mut c = Criterion::default().configure_from_args();
    requests(&mut c, "", true);
    c.final_summary();
}
