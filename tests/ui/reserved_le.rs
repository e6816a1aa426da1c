use promshard::{metric, Histogram};

/// Latency.
#[metric(labels(le = ["a", "b"]))]
static LATENCY_SECONDS: Histogram;

fn main() {}
