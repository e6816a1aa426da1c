use promshard::{metric, Counter};

/// Jobs.
#[metric(buckets = [1.0, 2.0])]
static JOBS_TOTAL: Counter;

fn main() {}
