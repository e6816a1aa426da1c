//! The main demo runs end to end: a pre-fork pool with worker churn and
//! crashes, whose merged metrics match what its client saw.

mod support;

#[test]
fn prefork_server_counts_every_request_exactly_once() {
    let out = support::example_output("prefork_server", &[]);
    assert!(out.contains("every request counted exactly once"), "{out}");
    assert!(out.contains("http_requests_total{route=\"work\"} 500\n"), "{out}");
    assert!(out.contains("http_requests_total{route=\"crash\"} 3\n"), "{out}");
}
