//! Collectors every process gets without asking.

use crate::collector::{Collector, MetricWriter};
use crate::process::ProcessCollector;

use crate::descriptor::Opts;
use crate::instruments::counter::Counter;
use crate::metric::MetricCore;

/// Children forked from a recording process whose own shard could not be
/// made; they record into private memory that no scrape sees, so each is
/// counted here, in the parent's file, by the fork handler.
static FORK_FALLBACKS: Counter = Counter::new(Opts::new(
    crate::shard::fork::FALLBACKS_METRIC,
    "Forked children that could not create a shard of their own and record where no scrape sees them.",
));

#[linkme::distributed_slice(crate::registry::METRICS)]
static FORK_FALLBACKS_ENTRY: &MetricCore = FORK_FALLBACKS.core();

pub(crate) static COLLECTORS: &[&dyn Collector] = &[&ProcessCollector, &FallbackReport, &VersionHealth];

// promshard's other counts of itself live in the arena too, declared
// where they are counted: `promshard_shard_errors_total` by the merge,
// `promshard_collector_panics_total` by the collector runner, and the
// per-metric families (overflow, refused, dropped) by the registry's
// layout.

/// In multiprocess mode, says in the log what the fork handler could only
/// count. Writes no family: the count is the shard's, merged like any.
struct FallbackReport;

impl Collector for FallbackReport {
    fn collect(&self, _: &mut MetricWriter<'_>) {
        if crate::shard::own().is_some() {
            report_fork_fallbacks();
        }
    }
}

/// Logs children of this process that fell back to private memory after
/// `fork()` (the fork handler cannot log; it counts them in our shard).
fn report_fork_fallbacks() {
    use core::sync::atomic::{AtomicU64, Ordering};
    static REPORTED: AtomicU64 = AtomicU64::new(0);
    let Some(slot) = FORK_FALLBACKS.core().slot_if_attached() else { return };
    // SAFETY: the counter's first slot, in this process's arena.
    let count = unsafe { (*slot).load(Ordering::Relaxed) };
    let before = REPORTED.swap(count, Ordering::Relaxed);
    if count > before {
        crate::notice::error(format!(
            "{} forked child process(es) could not create a shard of their own after fork() (disk full, \
             out of descriptors?): what they record is seen by no scrape; see promshard_fork_fallbacks_total",
            count - before
        ));
    }
}

/// `promshard_linked_versions` and `promshard_version_conflicts`, when
/// more than one version is linked in.
struct VersionHealth;

impl Collector for VersionHealth {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        if crate::linked::others().next().is_none() {
            return;
        }
        let mut versions: Vec<&str> = crate::linked::all_versions().collect();
        versions.sort_unstable();
        let mut family = out.gauge(
            "promshard_linked_versions",
            "promshard versions linked into this binary, one series each; every version's exposition includes the others' metrics.",
        );
        for version in versions {
            family.sample(&[("version", version)], 1.0);
        }
        drop(family);
        let conflicts = crate::linked::conflicts();
        if !conflicts.is_empty() {
            let mut family = out.gauge(
                "promshard_version_conflicts",
                "Metrics declared in two linked promshard versions; this exposition has the `exposed` version's declaration only.",
            );
            for c in conflicts {
                family.sample(&[("metric", &c.name), ("exposed", crate::linked::VERSION), ("hidden", c.version)], 1.0);
            }
        }
    }
}
