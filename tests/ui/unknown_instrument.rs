use promshard::metric;

/// Jobs.
#[metric]
static JOBS: Summary;

fn main() {}
