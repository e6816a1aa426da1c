use promshard::{metric, Counter, Histogram};

/// Schema out of range.
#[metric(native(schema = 9))]
static TOO_FINE: Histogram;

/// No buckets at all.
#[metric(native(schema = -2, max_buckets = 0))]
static NO_BUCKETS: Histogram;

/// A typo.
#[metric(native(scheme = 3))]
static TYPO: Histogram;

/// Not a histogram.
#[metric(native)]
static REQUESTS_TOTAL: Counter;

fn main() {}
