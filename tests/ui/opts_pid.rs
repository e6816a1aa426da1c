// The runtime API (`Gauge::new(Opts…)`) refuses what `#[metric]` refuses:
// a `pid` label on a gauge kept per process (mode `all`, the default),
// which multiprocess mode labels with `pid` itself.
use promshard::{Gauge, GaugeMode, LabelValue, Opts};

#[derive(Clone, Copy, LabelValue)]
enum Slot {
    A,
    B,
}

static BUSY: Gauge<(Slot,)> = Gauge::new(Opts::new("busy", "Busy.").labels(&["pid"]));

// A mode that combines processes keeps its `pid`.
static SUMMED: Gauge<(Slot,)> = Gauge::new(Opts::new("summed", "Summed.").labels(&["pid"]).mode(GaugeMode::LiveSum));

fn main() {
    BUSY.with((Slot::A,)).set(1.0);
    SUMMED.with((Slot::B,)).set(1.0);
}
