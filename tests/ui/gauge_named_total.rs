use promshard::{metric, Gauge};

/// Requests in flight.
#[metric]
static REQUESTS_TOTAL: Gauge;

fn main() {}
