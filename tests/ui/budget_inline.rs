use promshard::{metric, Histogram};

/// Time to render, by page and locale.
#[metric(labels(page = ["home", "search", "cart", "checkout"], locale = bounded(20)))]
static RENDER_SECONDS: Histogram;

fn main() {}
