use promshard::{metric, Histogram};

/// Time to render.
#[metric(buckets = [0.1, 1.0, f64::INFINITY])]
static RENDER_SECONDS: Histogram;

fn main() {}
