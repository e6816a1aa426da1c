//! Series keyed by their label text, for merges the slot-by-slot path
//! cannot do: bounded labels (each process numbers its strings its own
//! way), metrics whose definition differs between binaries, the archive,
//! and Python's `.db` files.

use std::collections::BTreeMap;

use core::sync::atomic::Ordering;

use super::exact::ExactSum;
use super::read::Shard;
use crate::descriptor::{Descriptor, GaugeMode, Kind, is_legacy_label_name};
use crate::encode::format::{Exposition, Format};
use crate::encode::names;
use crate::encode::plan::{self, Source, write_header, write_typed_header};
use crate::encode::proto::{self, MetricType, ProtoWriter};
use crate::encode::sample::{self, Value};
use crate::encode::text::{le_value, sum_shown};
use crate::exemplar::Exemplar;
use crate::native::NativeCounts;

/// The type of a sparse family: the five of ours, and Python's summary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum SparseKind {
    Metric(Kind, GaugeMode),
    Summary,
}

/// An accumulated series value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Acc {
    /// The integer count, and the float total (exact; see [`ExactSum`]).
    Counter {
        count: u64,
        fraction: ExactSum,
    },
    Gauge {
        value: f64,
        stamp: f64,
    },
    /// Non-cumulative bucket counts by upper bound, the sum, and a native
    /// histogram's native counts.
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: ExactSum,
        native: Option<NativeCounts>,
    },
    Summary {
        count: ExactSum,
        sum: ExactSum,
    },
    /// Info and state samples: present, with a value.
    Value(f64),
}

pub(crate) type Labels = Vec<(String, String)>;

#[derive(Clone)]
pub(crate) struct SparseFamily {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) unit: Option<String>,
    pub(crate) kind: SparseKind,
    /// Whether the family's zero series are shown only where declared;
    /// kept when compaction archives it.
    pub(crate) sparse: bool,
    pub(crate) series: BTreeMap<Labels, Acc>,
    /// When the family's counts started (Unix nanoseconds), if known: the
    /// created timestamp of its counters, histograms and summaries.
    pub(crate) created: Option<u64>,
    /// The newest exemplar of each counter series (bound `None`) and
    /// histogram bucket (its bound's bits) of any process.
    pub(crate) exemplars: BTreeMap<(Labels, Option<u64>), Exemplar>,
    /// Whether the family's definition keeps exemplars (some of its
    /// processes' may, others not): an archive of it does.
    pub(crate) keeps_exemplars: bool,
}

impl SparseFamily {
    pub(crate) fn new(name: &str, help: &str, unit: Option<&str>, kind: SparseKind) -> SparseFamily {
        SparseFamily {
            name: name.to_owned(),
            help: help.to_owned(),
            unit: unit.map(str::to_owned),
            kind,
            sparse: false,
            series: BTreeMap::new(),
            created: None,
            exemplars: BTreeMap::new(),
            keeps_exemplars: false,
        }
    }

    /// Keeps `exemplar` for the series `labels` (and the bucket of upper
    /// bound `bound`, for a histogram) if it is newer than the one kept.
    pub(crate) fn add_exemplar(&mut self, labels: &Labels, bound: Option<f64>, exemplar: Exemplar) {
        match self.exemplars.entry((labels.clone(), bound.map(f64::to_bits))) {
            std::collections::btree_map::Entry::Vacant(vacant) => {
                vacant.insert(exemplar);
            }
            std::collections::btree_map::Entry::Occupied(mut kept) if exemplar.newer_than(kept.get()) => {
                kept.insert(exemplar);
            }
            std::collections::btree_map::Entry::Occupied(_) => {}
        }
    }

    /// The exemplar kept for a counter series (`bound` `None`) or a
    /// histogram bucket.
    pub(crate) fn exemplar(&self, labels: &Labels, bound: Option<f64>) -> Option<&Exemplar> {
        if self.exemplars.is_empty() {
            return None;
        }
        self.exemplars.get(&(labels.clone(), bound.map(f64::to_bits)))
    }

    /// The family of one of our metrics, empty.
    pub(crate) fn of(desc: &Descriptor) -> SparseFamily {
        let mut family = SparseFamily::new(desc.name, desc.help, desc.unit, SparseKind::Metric(desc.kind, desc.mode));
        family.sparse = desc.sparse;
        family.keeps_exemplars = desc.exemplars;
        family
    }

    /// Adds one process's value for a series, combining by kind and mode.
    pub(crate) fn add(&mut self, labels: Labels, value: Acc) {
        let mode = match self.kind {
            SparseKind::Metric(_, mode) => mode,
            SparseKind::Summary => GaugeMode::Sum,
        };
        match self.series.get_mut(&labels) {
            None => {
                self.series.insert(labels, value);
            }
            Some(current) => combine(current, value, mode),
        }
    }

    /// As [`add`](Self::add), copying the labels only for a new series.
    pub(crate) fn add_ref(&mut self, labels: &Labels, value: Acc) {
        let mode = match self.kind {
            SparseKind::Metric(_, mode) => mode,
            SparseKind::Summary => GaugeMode::Sum,
        };
        match self.series.get_mut(labels) {
            None => {
                self.series.insert(labels.clone(), value);
            }
            Some(current) => combine(current, value, mode),
        }
    }

    pub(crate) fn encode(&self, x: Exposition, out: &mut Vec<u8>) {
        let (format, escaping) = (x.format(), x.escaping());
        match self.kind {
            SparseKind::Summary => {
                write_typed_header(out, &self.name, "", "summary", &self.help, self.unit.as_deref(), format, escaping)
            }
            SparseKind::Metric(kind, _) => {
                write_header(out, &self.name, kind, &self.help, self.unit.as_deref(), format, escaping)
            }
        }
        // Each sample name as written, by its raw spelling.
        let written: Vec<(String, String)> = ["", "_total", "_info", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .map(|suffix| (format!("{}{suffix}", self.name), names::sample_name(&self.name, suffix, escaping)))
            .collect();
        let (count, sum) = (&written[4].0, &written[5].0);
        let summed = matches!(self.kind, SparseKind::Summary | SparseKind::Metric(Kind::Histogram, _));
        // A series' `_created` follows its last sample: the counter's
        // total, the `_sum`.
        let created = self.created.filter(|_| format == Format::OpenMetrics && x.created_samples());
        let created = created.map(|nanos| Value::Float(crate::encode::plan::nanos_to_seconds(nanos)));
        let last = if summed { sum } else { &written[1].0 };
        let write_created = |out: &mut Vec<u8>, pairs: &[(&str, &str)]| {
            if let Some(created) = created {
                sample::write(out, &written[6].1, &[sample::Labels::Pairs(pairs)], created, escaping);
            }
        };
        // Label names from other binaries and Python files were checked
        // by no one: a series with two that this scheme writes alike
        // would make the scrape invalid, and is left out of it.
        let mut current: Option<(*const Labels, bool)> = None;
        // `_count` comes before `_sum`: taken back if the sum is not shown.
        let mut count_at = 0;
        // Exemplars exist in OpenMetrics only.
        let with_exemplars = format == Format::OpenMetrics;
        self.visit_series(|labels, name, pairs, value, exemplar| {
            let left_out = match current {
                Some((seen, left_out)) if core::ptr::eq(seen, labels) => left_out,
                // Legacy names are written as they are (and a series'
                // names are distinct): the common case costs no allocation.
                _ if labels.iter().all(|(k, _)| is_legacy_label_name(k)) => {
                    current = Some((labels, false));
                    false
                }
                _ => {
                    let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
                    let clash = names::label_clash_in(&keys, escaping);
                    if let Some((a, b)) = clash {
                        crate::notice::warn_once(&format!(
                            "family `{}`: series left out of `escaping={}` scrapes, its labels `{a}` and `{b}` \
                             are written alike there",
                            self.name,
                            escaping.as_str()
                        ));
                    }
                    current = Some((labels, clash.is_some()));
                    clash.is_some()
                }
            };
            if left_out {
                return;
            }
            if summed && name == count {
                count_at = out.len();
            } else if summed && name == sum && !sum_shown(format, value.as_f64()) {
                out.truncate(count_at);
                write_created(out, pairs);
                return;
            }
            let token = written.iter().find(|(raw, _)| raw == name).map_or(name, |(_, token)| token.as_str());
            let exemplar = exemplar.filter(|_| with_exemplars);
            sample::write_with(out, token, &[sample::Labels::Pairs(pairs)], value, escaping, exemplar);
            if name == last {
                write_created(out, pairs);
            }
        });
    }

    /// Renders the family in protobuf: one `MetricFamily`, one `Metric`
    /// per series, with the same series left out as in text.
    pub(crate) fn encode_proto(&self, w: &mut ProtoWriter, out: &mut Vec<u8>) {
        let escaping = w.escaping();
        let (kind, suffix) = match self.kind {
            SparseKind::Summary => (MetricType::Summary, ""),
            SparseKind::Metric(kind, _) => proto::type_of(kind),
        };
        w.begin(out, &self.name, suffix, &self.help, kind, self.unit.as_deref());
        w.set_created(self.created);
        for (labels, acc) in &self.series {
            if !labels.iter().all(|(k, _)| is_legacy_label_name(k)) {
                let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
                if let Some((a, b)) = names::label_clash_in(&keys, escaping) {
                    crate::notice::warn_once(&format!(
                        "family `{}`: series left out of `escaping={}` scrapes, its labels `{a}` and `{b}` \
                         are written alike there",
                        self.name,
                        escaping.as_str()
                    ));
                    continue;
                }
            }
            w.labels(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            match acc {
                Acc::Counter { count, fraction } => {
                    w.counter(out, *count as f64 + fraction.value(), self.exemplar(labels, None))
                }
                Acc::Gauge { value, .. } | Acc::Value(value) => w.gauge(out, *value),
                // Python's multiprocess summaries have no quantiles; their
                // count is a whole number kept as a float.
                Acc::Summary { count, sum } => w.summary(out, &[], count.value() as u64, sum.value()),
                Acc::Histogram { buckets, sum, native } => {
                    let mut sorted = buckets.clone();
                    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let mut cumulative = 0u64;
                    if sorted.last().is_none_or(|b| b.0 != f64::INFINITY) {
                        sorted.push((f64::INFINITY, 0));
                    }
                    let cumulative: Vec<(f64, u64, Option<Exemplar>)> = sorted
                        .into_iter()
                        .map(|(bound, n)| {
                            cumulative = cumulative.saturating_add(n);
                            (bound, cumulative, self.exemplar(labels, Some(bound)).cloned())
                        })
                        .collect();
                    let count = cumulative.last().map_or(0, |b| b.1);
                    match native {
                        Some(native) => w.native_histogram(out, cumulative, &native.limited(), sum.value()),
                        None => w.histogram(out, cumulative, count, sum.value()),
                    }
                }
            }
        }
        w.end(out);
    }

    /// Calls `f(sample name, labels, value)` for every sample.
    pub(crate) fn visit(&self, mut f: impl FnMut(&str, &[(&str, &str)], Value)) {
        self.visit_series(|_, name, pairs, value, _| f(name, pairs, value));
    }

    /// As [`visit`](Self::visit), with each sample's series too, and the
    /// exemplar of a counter's total or a histogram's bucket.
    fn visit_series(&self, mut f: impl FnMut(&Labels, &str, &[(&str, &str)], Value, Option<&Exemplar>)) {
        let name = &self.name;
        for (labels, acc) in &self.series {
            let mut f =
                |sample: &str, pairs: &[(&str, &str)], value, exemplar| f(labels, sample, pairs, value, exemplar);
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match acc {
                Acc::Counter { count, fraction } => {
                    let fraction = fraction.value();
                    let value =
                        if fraction == 0.0 { Value::Int(*count) } else { Value::Float(*count as f64 + fraction) };
                    f(&format!("{name}_total"), &pairs, value, self.exemplar(labels, None));
                }
                Acc::Gauge { value, .. } => f(name, &pairs, Value::Float(*value), None),
                Acc::Value(v) => {
                    let sample = if matches!(self.kind, SparseKind::Metric(Kind::Info, _)) {
                        format!("{name}_info")
                    } else {
                        name.clone()
                    };
                    f(&sample, &pairs, Value::Float(*v), None);
                }
                Acc::Summary { count, sum } => {
                    f(&format!("{name}_count"), &pairs, Value::Float(count.value()), None);
                    f(&format!("{name}_sum"), &pairs, Value::Float(sum.value()), None);
                }
                Acc::Histogram { buckets, sum, .. } => {
                    let mut sorted = buckets.clone();
                    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                    if sorted.last().is_none_or(|b| b.0 != f64::INFINITY) {
                        sorted.push((f64::INFINITY, 0));
                    }
                    let bucket = format!("{name}_bucket");
                    let mut cumulative = 0u64;
                    for (bound, count) in sorted {
                        cumulative = cumulative.saturating_add(count);
                        let le = le_value(bound);
                        let mut with_le = pairs.clone();
                        with_le.push(("le", &le));
                        f(&bucket, &with_le, Value::Int(cumulative), self.exemplar(labels, Some(bound)));
                    }
                    f(&format!("{name}_count"), &pairs, Value::Int(cumulative), None);
                    f(&format!("{name}_sum"), &pairs, Value::Float(sum.value()), None);
                }
            }
        }
    }
}

fn combine(current: &mut Acc, value: Acc, mode: GaugeMode) {
    match (current, value) {
        (Acc::Counter { count, fraction }, Acc::Counter { count: c, fraction: f }) => {
            *count = count.saturating_add(c);
            fraction.add_sum(&f);
        }
        (Acc::Histogram { buckets, sum, native }, Acc::Histogram { buckets: b, sum: s, native: n }) => {
            // A series without native counts (Python's, another binary's
            // classic one) adds none.
            match (native.as_mut(), n) {
                (Some(native), Some(n)) => native.merge(&n),
                (None, Some(n)) => *native = Some(n),
                (_, None) => {}
            }
            for (bound, n) in b {
                match buckets.iter_mut().find(|(x, _)| *x == bound) {
                    Some((_, count)) => *count = count.saturating_add(n),
                    None => buckets.push((bound, n)),
                }
            }
            sum.add_sum(&s);
        }
        (Acc::Summary { count, sum }, Acc::Summary { count: c, sum: s }) => {
            count.add_sum(&c);
            sum.add_sum(&s);
        }
        (Acc::Gauge { value, stamp }, Acc::Gauge { value: v, stamp: t }) => {
            (*value, *stamp) = mode.combine((*value, *stamp), (v, t));
        }
        (Acc::Value(current), Acc::Value(v)) => *current = current.max(v),
        // A kind mismatch between processes: keep the first.
        _ => {}
    }
}

/// One shard's metric, seen through the shard's string log.
struct ShardSource<'a> {
    shard: &'a Shard,
    metric: usize,
    desc: &'static Descriptor,
}

impl Source for ShardSource<'_> {
    fn descriptor(&self) -> &Descriptor {
        self.desc
    }
    fn bounded(&self, position: usize, index: usize) -> Option<&str> {
        self.shard.bounded_value(self.metric, position, index)
    }
    fn info(&self) -> Option<Vec<(String, String)>> {
        self.shard.info(self.metric)
    }
    fn declared(&self, series: usize) -> bool {
        self.shard.declared(self.metric, series)
    }
}

/// Which shards a metric takes values from.
pub(crate) fn counts_shard(desc: &Descriptor, shard: &Shard) -> bool {
    match desc.kind {
        Kind::Counter | Kind::Histogram => true,
        Kind::Gauge => shard.live || !desc.mode.is_live(),
        Kind::Info | Kind::StateSet => shard.live,
    }
}

/// Whether series of this metric are kept per process, under `pid`.
pub(crate) fn per_process(desc: &Descriptor, shard: &Shard) -> bool {
    !shard.archive && (desc.kind == Kind::StateSet || (desc.kind == Kind::Gauge && desc.mode.is_per_process()))
}

/// Adds a shard's metric to a family keyed by label text.
pub(crate) fn add_sparse(family: &mut SparseFamily, shard: &Shard, metric: usize) {
    let entry = &shard.schema.entries[metric];
    let desc = entry.desc;
    if !counts_shard(desc, shard) {
        return;
    }
    let source = ShardSource { shard, metric, desc };
    family.keeps_exemplars |= desc.exemplars;
    let pid = per_process(desc, shard).then(|| ("pid".to_owned(), shard.pid.to_string()));
    if desc.kind == Kind::Info {
        if let Some(pairs) = source.info() {
            family.add(pairs, Acc::Value(1.0));
        }
        return;
    }
    let slots = shard.slots(entry);
    let get = |i: usize| slots[i].load(Ordering::Relaxed);
    for series in 0..desc.series {
        if plan::hidden(desc, &source, slots, series) {
            continue;
        }
        let Some(values) = plan::series_values(&source, series) else { continue };
        let mut labels: Vec<(String, String)> =
            desc.label_names.iter().zip(values).map(|(k, v)| ((*k).to_owned(), v.to_owned())).collect();
        labels.extend(pid.clone());
        let base = series * desc.width;
        for which in 0..desc.exemplar_count() {
            if let Some(exemplar) = plan::exemplar_at(desc, slots, series, which) {
                let bound =
                    (desc.kind == Kind::Histogram).then(|| desc.buckets.get(which).copied().unwrap_or(f64::INFINITY));
                family.add_exemplar(&labels, bound, exemplar);
            }
        }
        match desc.kind {
            Kind::Counter => {
                let fraction = ExactSum::from(f64::from_bits(get(base + 1)));
                family.add(labels, Acc::Counter { count: get(base), fraction })
            }
            Kind::Gauge => {
                let stamp = if desc.mode.is_most_recent() { f64::from_bits(get(base + 1)) } else { 0.0 };
                family.add(labels, Acc::Gauge { value: f64::from_bits(get(base)), stamp });
            }
            Kind::Histogram => {
                let bounds = desc.buckets.iter().copied().chain([f64::INFINITY]);
                let series_slots = &slots[base..base + desc.width];
                let native_only = NativeCounts::native_only_count(desc, series_slots);
                let buckets = bounds
                    .enumerate()
                    .map(|(b, bound)| (bound, native_only.unwrap_or_else(|| get(base + b))))
                    .collect();
                let sum = ExactSum::from(f64::from_bits(get(base + desc.buckets.len() + 1)));
                let native = NativeCounts::of_series(desc, series_slots);
                family.add(labels, Acc::Histogram { buckets, sum, native });
            }
            Kind::StateSet => {
                let current = get(base) as usize;
                for (state, text) in desc.states.iter().enumerate() {
                    let mut labels = labels.clone();
                    labels.push((desc.name.to_owned(), (*text).to_owned()));
                    family.add(labels, Acc::Value((state == current) as u64 as f64));
                }
            }
            Kind::Info => {}
        }
    }
}
