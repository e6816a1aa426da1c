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

/// Reply sizes, native only, with the default schema.
#[metric(unit = "bytes", native(max_buckets = 80))]
static REPLY_BYTES: Histogram;

/// Lock hold times, classic buckets kept alongside the native ones.
#[metric(buckets = [0.001, 0.01], native(schema = -1, max_buckets = 20))]
static LOCK_HOLD_SECONDS: Histogram;
