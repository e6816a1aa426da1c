use promshard::{metric, Counter};

/// Jobs.
#[metric(mode = livesum)]
static JOBS_TOTAL: Counter;

fn main() {}
