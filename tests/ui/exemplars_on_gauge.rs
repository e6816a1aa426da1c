use promshard::{metric, Gauge};

/// Queue depth.
#[metric(exemplars)]
static QUEUE_DEPTH: Gauge;

/// Jobs.
#[metric(exemplars, exemplars)]
static JOBS_TOTAL: promshard::Counter;

fn main() {}
