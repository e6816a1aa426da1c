use promshard::{metric, Counter};

/// Requests by user.
#[metric(labels(user: String))]
static REQUESTS_TOTAL: Counter;

fn main() {}
