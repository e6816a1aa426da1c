use promshard::{metric, Counter};

/// Jobs.
#[metric(name = "jobs_total", name = "tasks_total")]
static JOBS_TOTAL: Counter;

fn main() {}
