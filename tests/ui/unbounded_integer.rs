use promshard::{metric, Counter};

/// Requests by status code.
#[metric(labels(code: u16))]
static REQUESTS_TOTAL: Counter;

fn main() {}
