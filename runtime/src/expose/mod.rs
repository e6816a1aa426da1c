//! Rendering every metric into one exposition.

mod format;
pub(crate) mod plan;
pub(crate) mod text;

pub use format::Format;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::collector::{MetricWriter, SampleFn, Target};
use crate::descriptor::Kind;
use crate::registry::{self, Family};
use crate::shard;

/// Renders every metric in `format`: declared metrics sorted by name, then
/// collectors' families. OpenMetrics output ends with `# EOF`.
///
/// ```
/// let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
/// assert!(text.ends_with("# EOF\n"));
/// ```
pub fn encode(format: Format) -> Vec<u8> {
    // Start at the last exposition's size: growing a large buffer by
    // doubling copies it several times.
    static LAST_LEN: AtomicUsize = AtomicUsize::new(16 * 1024);
    let mut out = Vec::with_capacity(LAST_LEN.load(Ordering::Relaxed) + 1024);
    encode_into(format, &mut out);
    LAST_LEN.store(out.len(), Ordering::Relaxed);
    out
}

/// Appends the exposition in `format` to `out`.
///
/// In multiprocess mode (`PROMSHARD_DIR`) the declared metrics are the
/// merge of every shard in the directory; the collectors' families (the
/// process metrics among them) are this process's own.
pub fn encode_into(format: Format, out: &mut Vec<u8>) {
    let start = out.len();
    let registry = registry::get();
    match shard::own() {
        Some(own) => shard::merge::scrape(own).encode(format, out),
        None => {
            let slots = registry.arena.slots();
            for family in &registry.families {
                encode_family(family, &slots[family.offset..], format, out);
            }
        }
    }
    {
        let unregistered = registry.unregistered.lock().unwrap_or_else(|e| e.into_inner());
        for (family, arena) in unregistered.iter() {
            encode_family(family, arena.slots(), format, out);
        }
    }
    let mut writer = MetricWriter::new(Target::Text { out, format }, &registry.sample_names);
    registry::for_each_collector(|c| crate::collector::run(c, &mut writer));
    drop(writer);
    crate::versions::append_others(format, start, out);
    if format == Format::OpenMetrics {
        out.extend_from_slice(b"# EOF\n");
    }
}

fn encode_family(family: &Family, slots: &[AtomicU64], format: Format, out: &mut Vec<u8>) {
    let slots = &slots[..family.core.descriptor().slots()];
    family.plan.encode(family.core, slots, format, out);
}

/// Renders the exposition a client asked for with its `Accept` header and
/// returns it with its `Content-Type`: the one call a web framework's
/// `/metrics` handler needs.
///
/// ```
/// let (body, content_type) = promshard::render(Some("application/openmetrics-text; version=1.0.0"));
/// assert!(content_type.starts_with("application/openmetrics-text"));
/// assert!(body.ends_with(b"# EOF\n"));
/// ```
pub fn render(accept: Option<&str>) -> (Vec<u8>, &'static str) {
    let format = Format::from_accept(accept);
    (encode(format), format.content_type())
}

/// Calls `f(sample name, labels, value)` for every sample, in exposition
/// order. Slow (it allocates per sample); for tests and tools.
pub(crate) fn for_each_sample(mut f: impl FnMut(&str, &[(&str, &str)], f64)) {
    let registry = registry::get();
    match shard::own() {
        Some(own) => shard::merge::scrape(own).for_each_sample(&mut f),
        None => {
            let slots = registry.arena.slots();
            for family in &registry.families {
                let slots = &slots[family.offset..family.offset + family.core.descriptor().slots()];
                visit_family(&family.plan, family.core, slots, &mut f);
            }
        }
    }
    {
        let unregistered = registry.unregistered.lock().unwrap_or_else(|e| e.into_inner());
        for (family, arena) in unregistered.iter() {
            visit_family(&family.plan, family.core, arena.slots(), &mut f);
        }
    }
    let mut writer = MetricWriter::new(Target::Samples(&mut f), &registry.sample_names);
    registry::for_each_collector(|c| crate::collector::run(c, &mut writer));
}

/// Calls `f` with every sample of one family, with structured labels.
pub(crate) fn visit_family(
    plan: &plan::FamilyPlan,
    source: &dyn plan::Source,
    slots: &[AtomicU64],
    f: &mut SampleFn<'_>,
) {
    let desc = source.descriptor();
    let info = source.info().unwrap_or_default();
    let extra = source.extra_pair();
    plan.visit(source, slots, |line| {
        let values = plan::series_values(source, line.series).unwrap_or_default();
        let mut labels: Vec<(&str, &str)> = desc.label_names.iter().copied().zip(values).collect();
        labels.extend(info.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        labels.extend(extra);
        let le;
        match (desc.kind, line.extra) {
            (Kind::Histogram, Some(bucket)) => {
                le = text::le_value(desc.buckets.get(bucket).copied().unwrap_or(f64::INFINITY));
                labels.push(("le", &le));
            }
            (Kind::StateSet, Some(state)) => labels.push((desc.name, desc.states[state])),
            _ => {}
        }
        f(line.name, &labels, line.value.as_f64());
    });
}
