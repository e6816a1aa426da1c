use promshard::{metric, Histogram};

/// Time to render.
#[metric(buckets = [])]
static RENDER_SECONDS: Histogram;

fn main() {}
