// Every other argument and instrument, expanded in `options.expanded.rs`.

/// Payments by outcome; unknown outcomes count as "other".
#[metric(
    name = "payments_total",
    help = "Payments, by outcome.",
    labels(outcome = ["ok", "declined"] else "other", retried: bool),
    max_series = 10
)]
#[cfg(feature = "payments")]
pub(crate) static PAYMENTS: Counter;

/// Build information.
#[metric]
pub static BUILD_INFO: Info;

/// The server's lifecycle phase.
#[metric(crate = my_reexport::promshard)]
static PHASE: promshard::Enum<Phase>;

/// Queue wait.
#[metric(unit = "seconds", buckets = exponential(0.001, 4.0, 6))]
static QUEUE_WAIT_SECONDS: Histogram;
