use promshard::{metric, Counter};

#[metric]
static JOBS_TOTAL: Counter;

fn main() {}
