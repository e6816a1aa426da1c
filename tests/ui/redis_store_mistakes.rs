use promshard::{Counter, Gauge, Histogram, metric};

/// A bounded label: the keys a scrape reads must be known in advance.
#[metric(store = redis, labels(user = bounded(8)))]
static LOGINS_TOTAL: Counter;

/// A mode: one value for every process has nothing to combine.
#[metric(store = redis, mode = livesum)]
static ACTIVE_SESSIONS: Gauge;

/// Not a counter or a gauge.
#[metric(store = redis)]
static CHECKOUT_SECONDS: Histogram;

/// An unknown store.
#[metric(store = memcached)]
static CACHE_HITS_TOTAL: Counter;

fn main() {}
