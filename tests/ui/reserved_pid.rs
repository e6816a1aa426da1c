use promshard::{Enum, Gauge, LabelValue, metric};

#[derive(Clone, Copy, LabelValue)]
enum Phase {
    Starting,
    Serving,
}

// In multiprocess mode these metrics get a `pid` label of their own, one
// series per process: a declared `pid` would make every sample carry two,
// which Prometheus and promtool refuse (the whole scrape fails).

/// Busy worker slots (gauges default to mode `all`).
#[metric(labels(pid = ["a", "b"]))]
static BUSY: Gauge;

/// Busy worker slots, live processes only.
#[metric(mode = liveall, labels(pid = ["a", "b"]))]
static LIVE_BUSY: Gauge;

/// A worker's phase.
#[metric(labels(pid = ["a", "b"]))]
static PHASE: Enum<Phase>;

// Fine: a gauge that sums its processes' values adds no `pid`.

/// Busy worker slots, summed.
#[metric(mode = livesum, labels(pid = ["a", "b"]))]
static SUMMED_BUSY: Gauge;

fn main() {}
