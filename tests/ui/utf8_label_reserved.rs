use promshard::{metric, Counter};

/// Requests, by a label that scrapers without UTF-8 support would read as
/// `__x`, a label reserved for Prometheus.
#[metric(name = "http.server.requests", labels("_.x" = ["a"]))]
static REQUESTS: Counter;

fn main() {}
