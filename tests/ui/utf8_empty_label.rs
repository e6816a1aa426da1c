use promshard::{metric, Counter};

/// Requests.
#[metric(name = "http.server.requests", labels("" = ["a"]))]
static REQUESTS: Counter;

fn main() {}
