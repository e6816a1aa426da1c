//! Collectors every process gets without asking.

use crate::collector::{Collector, MetricWriter};
use crate::labels::LabelDomain;
use crate::process::ProcessCollector;
use crate::registry;

pub(crate) static COLLECTORS: &[&dyn Collector] =
    &[&ProcessCollector, &LabelHealth, &ShardHealth, &crate::versions::VersionHealth];

/// promshard's own counters of label values it could not keep: strings
/// folded into `other` by a full [`Bounded`](crate::Bounded) label, and
/// recordings dropped for a string missing from an inline list.
struct LabelHealth;

impl Collector for LabelHealth {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        let families = &registry::get().families;
        let bounded = families.iter().flat_map(|family| {
            let desc = family.core.descriptor();
            let domains = desc.label_names.iter().zip(desc.label_domains).enumerate();
            domains.filter(|(_, (_, domain))| matches!(domain, LabelDomain::Bounded { .. })).map(
                move |(position, (label, _))| {
                    let overflow = family.core.interner_if_used(position).map_or(0, |i| i.overflow());
                    (desc.name, *label, overflow)
                },
            )
        });
        let bounded: Vec<_> = bounded.collect();
        if !bounded.is_empty() {
            let mut family = out.counter(
                "promshard_label_overflow_total",
                "Recordings whose bounded label value was folded into `other` because the label was full.",
            );
            for (metric, label, overflow) in bounded {
                family.sample(&[("metric", metric), ("label", label)], overflow as f64);
            }
        }
        let refused: Vec<_> =
            families.iter().map(|f| (f.core.descriptor().name, f.core.refused())).filter(|(_, n)| *n > 0).collect();
        if !refused.is_empty() {
            let mut family = out.counter(
                "promshard_label_refused_total",
                "Recordings dropped because a label value was not in the metric's list.",
            );
            for (metric, refused) in refused {
                family.sample(&[("metric", metric)], refused as f64);
            }
        }
    }
}

/// In multiprocess mode, the files a scrape had to skip, by reason.
struct ShardHealth;

impl Collector for ShardHealth {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        if crate::shard::own().is_none() {
            return;
        }
        let mut family = out.counter(
            "promshard_shard_errors_total",
            "Shard files skipped by a scrape because they could not be used, by reason.",
        );
        for (error, count) in crate::shard::merge::errors() {
            family.sample(&[("reason", error.reason())], count as f64);
        }
    }
}
