use promshard::{metric, Histogram};

/// Time to render.
#[metric(unit = "bytes", buckets = [1.0, 0.5], mode = sum, labels(le = ["a"], user: String), colour = "red")]
static RENDER_SECONDS: Histogram;

fn main() {}
