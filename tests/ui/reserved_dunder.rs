use promshard::{metric, Counter};

/// Jobs.
#[metric(labels(__name = ["a"]))]
static JOBS_TOTAL: Counter;

fn main() {}
