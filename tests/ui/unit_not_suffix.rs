use promshard::{metric, Histogram};

/// Time to render.
#[metric(unit = "seconds")]
static RENDER_TIME: Histogram;

fn main() {}
