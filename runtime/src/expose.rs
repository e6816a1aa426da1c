//! Rendering every metric into one exposition: the registry's metrics (or,
//! in multiprocess mode, the merge of the shard directory), then the
//! collectors' families, then what other linked promshard versions expose
//! that this one does not.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::collections::HashSet;

pub use crate::encode::format::{Exposition, Format, Protocol};
pub use crate::encode::names::Escaping;

use crate::collector::{Collector, MetricWriter, Target};
use crate::encode::plan::visit_family;
use crate::encode::proto::ProtoWriter;
use crate::registry::{self, Family};

/// Renders every metric as `how` says: declared metrics sorted by name,
/// then collectors' families. OpenMetrics output ends with `# EOF`;
/// protobuf output is a stream of length-delimited
/// `io.prometheus.client.MetricFamily` messages.
///
/// `how` is an [`Exposition`] (a protocol and the escaping of names), or
/// a [`Format`], which writes legacy names (`underscores`).
///
/// ```
/// use promshard::{Escaping, Exposition, Format, Protocol};
///
/// let text = String::from_utf8(promshard::encode(Format::OpenMetrics)).unwrap();
/// assert!(text.ends_with("# EOF\n"));
/// let utf8 = Exposition::new(Protocol::PrometheusText1_0_0, Escaping::AllowUtf8);
/// let text = String::from_utf8(promshard::encode(utf8)).unwrap();
/// assert!(!text.contains("# EOF"));
/// ```
pub fn encode(how: impl Into<Exposition>) -> Vec<u8> {
    // Start at the last exposition's size: growing a large buffer by
    // doubling copies it several times.
    static LAST_LEN: AtomicUsize = AtomicUsize::new(16 * 1024);
    let mut out = Vec::with_capacity(LAST_LEN.load(Ordering::Relaxed) + 1024);
    encode_into(how, &mut out);
    LAST_LEN.store(out.len(), Ordering::Relaxed);
    out
}

/// Appends the exposition [`encode`] returns to `out`.
///
/// In multiprocess mode (`PROMSHARD_DIR`) the declared metrics are the
/// merge of every shard in the directory; the collectors' families (the
/// process metrics among them) are this process's own.
pub fn encode_into(how: impl Into<Exposition>, out: &mut Vec<u8>) {
    let x = with_process_settings(how.into());
    crate::instruments::callback::refresh();
    let start = out.len();
    let registry = registry::get();
    let mut proto = (x.format() == Format::Protobuf).then(|| ProtoWriter::new(x.escaping()));
    match crate::shard::own() {
        Some(own) => crate::merge::scrape(own).encode(x, out),
        None => {
            let slots = registry.arena.slots();
            for family in &registry.families {
                encode_family(family, &slots[family.offset..], x, proto.as_mut(), out);
            }
        }
    }
    registry.unregistered.with(|unregistered| {
        for (family, arena) in unregistered.iter() {
            encode_family(family, arena.slots(), x, proto.as_mut(), out);
        }
    });
    let mut writer = MetricWriter::new(Target::output(out, x), &registry.sample_names);
    for_each_collector(|c| crate::collector::run(c, &mut writer));
    crate::worker_collector::write(&mut writer);
    drop(writer);
    append_others(x, start, out);
    if x.format() == Format::OpenMetrics {
        out.extend_from_slice(b"# EOF\n");
    }
}

/// [`set_created_samples`]'s setting.
static CREATED_SAMPLES: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Turns `_created` samples in OpenMetrics text on (or off again) for
/// every exposition this process renders, whichever way it is asked for
/// (`promshard::serve`, the framework layer, [`render`], [`encode`]); as
/// [`Exposition::with_created_samples`] does for one. `promshard serve
/// --created-samples` is the sidecar's switch.
///
/// ```
/// promshard::set_created_samples(true);
/// let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
/// assert!(text.ends_with("# EOF\n"));
/// promshard::set_created_samples(false);
/// ```
pub fn set_created_samples(on: bool) {
    CREATED_SAMPLES.store(on, Ordering::Relaxed);
}

/// `x` with what [`set_created_samples`] turned on for the process.
pub(crate) fn with_process_settings(x: Exposition) -> Exposition {
    x.with_created_samples(x.created_samples() || CREATED_SAMPLES.load(Ordering::Relaxed))
}

fn encode_family(
    family: &Family,
    slots: &[AtomicU64],
    x: Exposition,
    proto: Option<&mut ProtoWriter>,
    out: &mut Vec<u8>,
) {
    let slots = &slots[..family.core.descriptor().slots()];
    match proto {
        Some(w) => family.plan.encode_proto(family.core, slots, w, out),
        None => family.plan.encode(family.core, slots, x, out),
    }
}

/// Renders the exposition a client asked for with its `Accept` header and
/// returns it with its `Content-Type`: the one call a web framework's
/// `/metrics` handler needs. The protocol and the escaping of names are
/// negotiated by [`Exposition::from_accept`]; `MetricsResponse::render`
/// (feature `gzip`, which the default `http` brings) also compresses the
/// body for clients that accept gzip, as Prometheus does.
///
/// ```
/// let (body, content_type) = promshard::render(Some("application/openmetrics-text; version=1.0.0"));
/// assert!(content_type.starts_with("application/openmetrics-text"));
/// assert!(body.ends_with(b"# EOF\n"));
/// let (_, content_type) = promshard::render(Some("text/plain;version=1.0.0;escaping=allow-utf-8"));
/// assert_eq!(content_type, "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8");
/// ```
pub fn render(accept: Option<&str>) -> (Vec<u8>, &'static str) {
    let x = Exposition::from_accept(accept);
    (encode(x), x.content_type())
}

/// Calls `f(sample name, labels, value)` for every sample, in exposition
/// order. Slow (it allocates per sample); for tests and tools.
pub(crate) fn for_each_sample(mut f: impl FnMut(&str, &[(&str, &str)], f64)) {
    crate::instruments::callback::refresh();
    let registry = registry::get();
    match crate::shard::own() {
        Some(own) => crate::merge::scrape(own).for_each_sample(&mut f),
        None => {
            let slots = registry.arena.slots();
            for family in &registry.families {
                let slots = &slots[family.offset..family.offset + family.core.descriptor().slots()];
                visit_family(&family.plan, family.core, slots, &mut f);
            }
        }
    }
    // Visited outside the gate: `f` is the caller's code.
    let unregistered: Vec<_> = registry.unregistered.with(|list| {
        list.iter().map(|(family, arena)| (family.core, arena.slots().as_ptr(), arena.slots().len())).collect()
    });
    for (core, slots, len) in unregistered {
        // SAFETY: an unregistered metric's arena is boxed and kept in the
        // registry's list for the rest of the process, never removed.
        let slots = unsafe { core::slice::from_raw_parts(slots, len) };
        visit_family(&crate::encode::plan::FamilyPlan::new(core.descriptor()), core, slots, &mut f);
    }
    let mut writer = MetricWriter::new(Target::Samples(&mut f), &registry.sample_names);
    for_each_collector(|c| crate::collector::run(c, &mut writer));
    crate::worker_collector::write(&mut writer);
}

/// Calls `f` with every collector: built-in, static, then those
/// registered at run time.
fn for_each_collector(mut f: impl FnMut(&dyn Collector)) {
    for collector in crate::builtin::COLLECTORS {
        f(*collector);
    }
    for collector in crate::collector::COLLECTORS {
        f(*collector);
    }
    for collector in &crate::collector::registered() {
        f(collector.as_ref());
    }
}

/// Appends to `out` the families of the other versions' expositions that
/// `out[start..]`, this version's, does not have.
pub(crate) fn append_others(x: Exposition, start: usize, out: &mut Vec<u8>) {
    use crate::descriptor::is_legacy_metric_name;
    use crate::encode::names::{Role, escaped};
    use crate::linked::{declared_by, families, others, version_of};
    if crate::linked::for_other() || others().next().is_none() {
        return;
    }
    // A protobuf scrape gets the others' Prometheus text, converted.
    let mut proto = (x.format() == Format::Protobuf).then(|| ProtoWriter::new(x.escaping()));
    let mut taken: HashSet<String> = match proto {
        Some(_) => crate::encode::proto::family_names(&out[start..]).into_iter().collect(),
        None => {
            let ours = std::str::from_utf8(&out[start..]).unwrap_or_default();
            families(ours).map(|(name, _)| name.into_owned()).collect()
        }
    };
    for other in others() {
        let theirs = crate::linked::render(other, x);
        let theirs = String::from_utf8_lossy(&theirs);
        let mut declared: Option<HashSet<String>> = None;
        for (name, family) in families(&theirs) {
            // A version that knows no escaping wrote a name it read from a
            // Python file as it is: not one this scraper can read.
            if x.escaping() != Escaping::AllowUtf8 && !is_legacy_metric_name(&name) {
                crate::notice::warn_once(&format!(
                    "family `{name}` of promshard {} left out: that version cannot escape its name",
                    version_of(other)
                ));
                continue;
            }
            if taken.insert(name.clone().into_owned()) {
                match &mut proto {
                    None => out.extend_from_slice(family.as_bytes()),
                    Some(w) => {
                        if let Err(e) = crate::encode::proto::text::append_family(w, family, out) {
                            crate::notice::warn_once(&format!(
                                "family `{name}` of promshard {} left out of protobuf scrapes: {e}",
                                version_of(other)
                            ));
                        }
                    }
                }
                continue;
            }
            // Expected twice: self-metrics, the same shards merged by both
            // versions, and conflicts reported at start.
            if name.starts_with("process_") || name.starts_with("promshard_") {
                continue;
            }
            // Either version's declared metric: in multiprocess mode both
            // merge every shard, and declarations in both were reported.
            // Compared as this scraper reads them.
            let declared = declared.get_or_insert_with(|| {
                let mut names: HashSet<String> = declared_by(other).into_iter().map(|(n, _)| n).collect();
                names.extend(registry::get().families.iter().map(|f| f.core.descriptor().name.to_owned()));
                names.iter().map(|n| escaped(n, Role::Metric, x.escaping()).into_owned()).collect()
            });
            // The text format names a counter's family with its `_total`.
            let bare = name.strip_suffix("_total").or_else(|| name.strip_suffix("_info")).unwrap_or(&name);
            if !declared.contains(name.as_ref()) && !declared.contains(bare) {
                crate::notice::warn_once(&format!(
                    "family `{name}` of promshard {} is also exposed by promshard {}; exposing it once",
                    version_of(other),
                    crate::linked::VERSION
                ));
            }
        }
    }
}
