use promshard::{metric, Counter};

/// Jobs.
#[metric(name = "9lives_total")]
static JOBS: Counter;

fn main() {}
