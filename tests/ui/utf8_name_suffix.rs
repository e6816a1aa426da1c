use promshard::{metric, Gauge};

/// Queued jobs: a gauge scrapers without UTF-8 support would read as
/// `queue_jobs_total`, a counter's name.
#[metric(name = "queue.jobs.total")]
static QUEUED: Gauge;

fn main() {}
