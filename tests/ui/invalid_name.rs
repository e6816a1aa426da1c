use promshard::{metric, Counter};

/// Jobs.
#[metric(name = "jobs\u{7}_total")]
static JOBS: Counter;

fn main() {}
