use promshard::{metric, Counter};

/// Jobs.
#[metric(description = "Jobs.")]
static JOBS_TOTAL: Counter;

fn main() {}
