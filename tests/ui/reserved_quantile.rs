use promshard::{metric, Gauge};

/// Depth.
#[metric(labels(quantile = ["0.5"]))]
static DEPTH: Gauge;

fn main() {}
