use promshard::{metric, Gauge};

/// Jobs running.
#[metric(mode = average)]
static JOBS_RUNNING: Gauge;

fn main() {}
