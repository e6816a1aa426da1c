use promshard::metric;

/// Jobs.
#[metric]
fn jobs() {}

fn main() {}
