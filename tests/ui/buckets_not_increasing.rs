use promshard::{metric, Histogram};

/// Time to render.
#[metric(buckets = [0.1, 0.5, 0.5, 0.2])]
static RENDER_SECONDS: Histogram;

fn main() {}
