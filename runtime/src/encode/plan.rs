//! Everything about rendering one metric family that does not depend on
//! its current values, computed once at layout: header lines, sample names
//! and the escaped label text of every series. A scrape then only copies
//! bytes and formats numbers.

use core::sync::atomic::{AtomicU64, Ordering};

use super::format::{Exposition, Format};
use super::line;
use super::names::{self, Escaping, is_quoted};
use super::proto::{self, ProtoWriter};
use super::sample::{self, Labels, Value};
use super::text::{le_value, sum_shown, write_help, write_label};
use crate::descriptor::{Descriptor, Kind, is_legacy_label_name, is_legacy_metric_name};
use crate::exemplar::{self, Exemplar};
use crate::labels::LabelDomain;
use crate::native::NativeCounts;

pub(crate) struct FamilyPlan {
    /// The rendering for each escaping scheme, in [`Escaping::ALL`]'s
    /// order; one for all when every name is a legacy one, which every
    /// scheme writes alike.
    variants: Vec<Variant>,
}

/// A family's rendering under one escaping scheme.
struct Variant {
    escaping: Escaping,
    /// `# HELP` / `# TYPE` (/ `# UNIT`) lines, per format.
    headers: [String; 2],
    /// Sample names, as written: the main one, then `_count` and `_sum`
    /// for histograms.
    sample: String,
    count: String,
    sum: String,
    /// `_created`, for counters and histograms.
    created: String,
    /// `a="x",b="y"` for every series, in dense index order; `None` when
    /// a bounded label's values are only known at scrape time.
    series_labels: Option<SeriesText>,
    /// `le="…"` (histograms) or `name="state"` (state sets).
    extra_labels: Vec<String>,
}

/// Which of a family's samples a [`Line`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    /// The counter's `_total`, the gauge, a bucket, a state, the info.
    Main,
    Count,
    Sum,
    /// A counter's or histogram's `_created`, in OpenMetrics only.
    Created,
}

impl FamilyPlan {
    pub(crate) fn new(desc: &Descriptor) -> FamilyPlan {
        let legacy = is_legacy_metric_name(desc.name) && desc.label_names.iter().all(|n| is_legacy_label_name(n));
        let schemes: &[Escaping] = if legacy { &[Escaping::Underscores] } else { &Escaping::ALL };
        FamilyPlan { variants: schemes.iter().map(|&escaping| Variant::new(desc, escaping)).collect() }
    }

    fn variant(&self, escaping: Escaping) -> &Variant {
        match self.variants.as_slice() {
            [only] => only,
            all => &all[Escaping::ALL.iter().position(|e| *e == escaping).expect("every scheme is listed")],
        }
    }

    /// Renders the family from its slots (`desc.slots()` of them).
    pub(crate) fn encode(&self, core: &dyn Source, slots: &[AtomicU64], x: Exposition, out: &mut Vec<u8>) {
        self.encode_header(x, out);
        self.encode_samples(core, slots, x, out);
    }

    /// Writes the HELP/TYPE lines only.
    pub(crate) fn encode_header(&self, x: Exposition, out: &mut Vec<u8>) {
        out.extend_from_slice(self.variant(x.escaping()).headers[x.format() as usize].as_bytes());
    }

    /// Writes the samples only.
    pub(crate) fn encode_samples(&self, core: &dyn Source, slots: &[AtomicU64], x: Exposition, out: &mut Vec<u8>) {
        if !self.encode_plain(core, slots, x, out) {
            self.encode_any(core, slots, x, out);
        }
    }

    /// [`Self::encode_samples`] for every family.
    fn encode_any(&self, core: &dyn Source, slots: &[AtomicU64], x: Exposition, out: &mut Vec<u8>) {
        let variant = self.variant(x.escaping());
        let created = (x.format() == Format::OpenMetrics && x.created_samples()).then(|| core.created()).flatten();
        // `_count` comes before `_sum`: written, then taken back if the
        // sum is not shown.
        let mut count_at = 0;
        let mut keep = |line: &Line<'_>, out: &mut Vec<u8>| match line.which {
            Which::Count => {
                count_at = out.len();
                true
            }
            Which::Sum if !sum_shown(x.format(), line.value.as_f64()) => {
                out.truncate(count_at);
                false
            }
            _ => true,
        };
        // Exemplars exist in OpenMetrics only (and protobuf), never in
        // the Prometheus text format. A family that keeps none takes a
        // loop of its own: the exemplars' reading, even never taken,
        // keeps the compiler from making the common loop tight (1.5×
        // slower encoding, measured).
        if x.format() == Format::OpenMetrics && core.descriptor().exemplar_count() > 0 {
            variant.visit(core, slots, created, true, |line| {
                if keep(&line, out) {
                    let exemplar = line.exemplar.and_then(|w| exemplar_at(core.descriptor(), slots, line.series, w));
                    line.write(&variant.extra_labels, variant.escaping, exemplar.as_ref(), out);
                }
            });
        } else {
            variant.visit(core, slots, created, false, |line| {
                if keep(&line, out) {
                    line.write(&variant.extra_labels, variant.escaping, None, out);
                }
            });
        }
    }
}

impl FamilyPlan {
    /// Writes the samples of a counter or gauge family whose every label
    /// is a fixed list, with no pair added and no exemplar to show: the
    /// common family, and what a scrape of many series is made of, in a
    /// loop of its own. False (nothing written) for any other family.
    fn encode_plain(&self, core: &dyn Source, slots: &[AtomicU64], x: Exposition, out: &mut Vec<u8>) -> bool {
        let desc = core.descriptor();
        let variant = self.variant(x.escaping());
        let Some(all) = &variant.series_labels else { return false };
        let exemplars = x.format() == Format::OpenMetrics && desc.exemplar_count() > 0;
        let created = x.format() == Format::OpenMetrics && x.created_samples() && core.created().is_some();
        if !matches!(desc.kind, Kind::Counter | Kind::Gauge)
            || exemplars
            || created
            || core.extra_pair().is_some()
            || is_quoted(&variant.sample)
            || desc.width == 0
        {
            return false;
        }
        let counter = desc.kind == Kind::Counter;
        let series = slots.chunks_exact(desc.width).zip(all.iter()).enumerate();
        for (index, (values, labels)) in series.take(desc.series) {
            if desc.sparse && hidden(desc, core, slots, index) {
                continue;
            }
            let first = values[0].load(Ordering::Relaxed);
            let value = match counter {
                true => Value::of_counter(first, values.get(1).map_or(0, |f| f.load(Ordering::Relaxed))),
                false => Value::Float(f64::from_bits(first)),
            };
            line::write_line(out, &variant.sample, labels, "", value);
        }
        true
    }

    /// Renders the family from its slots in protobuf: one `MetricFamily`
    /// (none when it has no series to show).
    pub(crate) fn encode_proto(&self, core: &dyn Source, slots: &[AtomicU64], w: &mut ProtoWriter, out: &mut Vec<u8>) {
        self.begin_proto(core.descriptor(), w, out);
        self.encode_proto_series(core, slots, w, out);
        w.end(out);
    }

    /// Starts the family's `MetricFamily`; its series follow, from one
    /// source or several (a merge's summed and per-process copies).
    pub(crate) fn begin_proto(&self, desc: &Descriptor, w: &mut ProtoWriter, out: &mut Vec<u8>) {
        let (kind, suffix) = proto::type_of(desc.kind);
        w.begin(out, desc.name, suffix, desc.help, kind, desc.unit);
    }

    /// Writes the series only, one `Metric` each, into the open family.
    pub(crate) fn encode_proto_series(
        &self,
        core: &dyn Source,
        slots: &[AtomicU64],
        w: &mut ProtoWriter,
        out: &mut Vec<u8>,
    ) {
        let desc = core.descriptor();
        let load = |i: usize| slots[i].load(Ordering::Relaxed);
        let extra = core.extra_pair();
        w.set_created(core.created());
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(desc.label_names.len() + 2);
        for series in 0..desc.series {
            if hidden(desc, core, slots, series) {
                continue;
            }
            let base = series * desc.width;
            let exemplar = |which: usize| exemplar_at(desc, slots, series, which);
            if desc.kind == Kind::Info {
                // Its labels are its pairs, as in the text formats.
                if let Some(pairs) = core.info() {
                    w.labels(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).gauge(out, 1.0);
                }
                continue;
            }
            let Some(values) = series_values(core, series) else {
                continue;
            };
            labels.clear();
            labels.extend(desc.label_names.iter().copied().zip(values));
            labels.extend(extra);
            match desc.kind {
                Kind::Counter => {
                    let (count, fraction) = (load(base), f64::from_bits(load(base + 1)));
                    w.labels(labels.iter().copied()).counter(out, count as f64 + fraction, exemplar(0).as_ref());
                }
                Kind::Gauge => w.labels(labels.iter().copied()).gauge(out, f64::from_bits(load(base))),
                Kind::StateSet => {
                    let current = load(base) as usize;
                    for (state, text) in desc.states.iter().enumerate() {
                        let with_state = labels.iter().copied().chain([(desc.name, *text)]);
                        w.labels(with_state).gauge(out, (state == current) as u64 as f64);
                    }
                }
                Kind::Histogram => {
                    let buckets = desc.buckets.len() + 1;
                    // Saturating, as in the text formats.
                    let mut cumulative = 0u64;
                    let bounds = desc.buckets.iter().copied().chain([f64::INFINITY]).enumerate().map(|(b, bound)| {
                        cumulative = cumulative.saturating_add(load(base + b));
                        (bound, cumulative, exemplar(b))
                    });
                    let count = (0..buckets).fold(0u64, |n, b| n.saturating_add(load(base + b)));
                    let sum = f64::from_bits(load(base + buckets));
                    match NativeCounts::of_series(desc, &slots[base..base + desc.width]) {
                        Some(native) => {
                            w.labels(labels.iter().copied()).native_histogram(out, bounds, &native.limited(), sum)
                        }
                        None => w.labels(labels.iter().copied()).histogram(out, bounds, count, sum),
                    }
                }
                Kind::Info => {}
            }
        }
    }
}

impl Variant {
    fn new(desc: &Descriptor, escaping: Escaping) -> Variant {
        let name = desc.name;
        let sample = match desc.kind {
            Kind::Histogram => names::sample_name(name, "_bucket", escaping),
            kind => names::sample_name(name, kind.sample_suffix(), escaping),
        };
        let extra_labels = match desc.kind {
            Kind::Histogram => {
                desc.buckets.iter().chain(&[f64::INFINITY]).map(|&b| label_text("le", &le_value(b), escaping)).collect()
            }
            Kind::StateSet => desc.states.iter().map(|s| label_text(name, s, escaping)).collect(),
            _ => Vec::new(),
        };
        Variant {
            escaping,
            headers: [header(desc, Format::Prometheus, escaping), header(desc, Format::OpenMetrics, escaping)],
            count: names::sample_name(name, "_count", escaping),
            sum: names::sample_name(name, "_sum", escaping),
            created: names::sample_name(name, "_created", escaping),
            sample,
            series_labels: series_labels(desc, escaping),
            extra_labels,
        }
    }

    /// Calls `f` with every sample of the family, in exposition order;
    /// with `created` (Unix nanoseconds), a `_created` sample follows
    /// each counter and histogram series.
    /// With `exemplars`, each counter series and histogram bucket that
    /// has one carries its exemplar.
    fn visit(
        &self,
        core: &dyn Source,
        slots: &[AtomicU64],
        created: Option<u64>,
        exemplars: bool,
        mut f: impl FnMut(Line<'_>),
    ) {
        let created = created.map(|nanos| Value::Float(nanos_to_seconds(nanos)));
        let desc = core.descriptor();
        let escaping = self.escaping;
        let extra_text = core.extra_pair().map(|(k, v)| label_text(k, v, escaping)).unwrap_or_default();
        let extra = extra_text.as_str();
        let load = |i: usize| slots[i].load(Ordering::Relaxed);
        let mut dynamic = String::new();
        let mut escaped = Vec::new();
        for series in 0..desc.series {
            if hidden(desc, core, slots, series) {
                continue;
            }
            let labels = match &self.series_labels {
                Some(all) if extra.is_empty() => all.get(series),
                Some(all) => {
                    dynamic.clear();
                    dynamic.push_str(all.get(series));
                    if !dynamic.is_empty() {
                        dynamic.push(',');
                    }
                    dynamic.push_str(extra);
                    dynamic.as_str()
                }
                None => {
                    let Some(values) = series_values(core, series) else {
                        continue;
                    };
                    // Escaped into one buffer kept across series: no
                    // allocation per label and series.
                    escaped.clear();
                    for (i, (name, value)) in desc.label_names.iter().zip(values).enumerate() {
                        if i > 0 {
                            escaped.push(b',');
                        }
                        write_label(&mut escaped, name, value, escaping);
                    }
                    if !extra.is_empty() {
                        if !escaped.is_empty() {
                            escaped.push(b',');
                        }
                        escaped.extend_from_slice(extra.as_bytes());
                    }
                    core::str::from_utf8(&escaped).expect("escaping keeps UTF-8")
                }
            };
            let base = series * desc.width;
            let line = |which, name, extra: Option<usize>, value| Line {
                which,
                name,
                labels,
                extra,
                value,
                series,
                exemplar: None,
            };
            let exemplar = |which: usize| exemplars.then_some(which);
            match desc.kind {
                Kind::Counter => {
                    let value = Value::of_counter(load(base), load(base + 1));
                    f(Line { exemplar: exemplar(0), ..line(Which::Main, &self.sample, None, value) });
                    if let Some(created) = created {
                        f(line(Which::Created, &self.created, None, created));
                    }
                }
                Kind::Gauge => f(line(Which::Main, &self.sample, None, Value::Float(f64::from_bits(load(base))))),
                Kind::StateSet => {
                    let current = load(base) as usize;
                    for state in 0..self.extra_labels.len() {
                        f(line(Which::Main, &self.sample, Some(state), Value::Int((state == current) as u64)));
                    }
                }
                Kind::Histogram => {
                    let series_slots = &slots[base..base + desc.width];
                    let native_only = NativeCounts::native_only_count(desc, series_slots);
                    let mut cumulative = 0u64;
                    for bucket in 0..self.extra_labels.len() {
                        // Saturating: a hostile file's counts must not panic a scrape
                        // nor make the buckets go down.
                        cumulative = native_only.unwrap_or(cumulative.saturating_add(load(base + bucket)));
                        let sample = line(Which::Main, &self.sample, Some(bucket), Value::Int(cumulative));
                        f(Line { exemplar: exemplar(bucket), ..sample });
                    }
                    f(line(Which::Count, &self.count, None, Value::Int(cumulative)));
                    let sum = f64::from_bits(load(base + self.extra_labels.len()));
                    f(line(Which::Sum, &self.sum, None, Value::Float(sum)));
                    if let Some(created) = created {
                        f(line(Which::Created, &self.created, None, created));
                    }
                }
                Kind::Info => {
                    let text = core.info().map(|pairs| {
                        let pairs = pairs.iter().map(|(k, v)| label_text(k, v, escaping));
                        pairs.collect::<Vec<_>>().join(",")
                    });
                    if let Some(text) = text {
                        let which = Which::Main;
                        let (name, labels, value) = (&self.sample, &text, Value::Int(1));
                        f(Line { which, name, labels, extra: None, value, series, exemplar: None });
                    }
                }
            }
        }
    }
}

/// Where a family's values come from, beyond its slots: this process's
/// metric, or a shard written by any process.
pub(crate) trait Source {
    fn descriptor(&self) -> &Descriptor;
    /// The text of bounded label `position`'s value number `index`.
    fn bounded(&self, position: usize, index: usize) -> Option<&str>;
    /// An info metric's label pairs.
    fn info(&self) -> Option<Vec<(String, String)>>;
    /// A label added to every series (`pid` for per-process gauges).
    fn extra_pair(&self) -> Option<(&str, &str)> {
        None
    }
    /// Whether series `series` of a sparse metric is shown at zero.
    fn declared(&self, series: usize) -> bool;
    /// When the family's counts started (Unix nanoseconds), for its
    /// counters' and histograms' created timestamps.
    fn created(&self) -> Option<u64> {
        None
    }
}

/// Unix nanoseconds as the seconds a `_created` sample holds.
pub(crate) fn nanos_to_seconds(nanos: u64) -> f64 {
    (nanos / 1_000_000_000) as f64 + (nanos % 1_000_000_000) as f64 / 1e9
}

/// Sorts `(first, count)` ranges and joins those that overlap or touch,
/// so that [`in_ranges`] can search them.
pub(crate) fn normalize_ranges(ranges: &mut Vec<(u32, u32)>) {
    ranges.sort_unstable();
    let mut joined: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    // In u64: the ranges may come from another process's file.
    let end = |first: u32, count: u32| u64::from(first) + u64::from(count);
    for &(first, count) in ranges.iter() {
        match joined.last_mut() {
            Some((start, len)) if u64::from(first) <= end(*start, *len) => {
                let joined_end = end(*start, *len).max(end(first, count));
                *len = u32::try_from(joined_end - u64::from(*start)).unwrap_or(u32::MAX);
            }
            _ => joined.push((first, count)),
        }
    }
    *ranges = joined;
}

/// Whether `series` is in one of `ranges` (`(first, count)`, normalized).
pub(crate) fn in_ranges(ranges: &[(u32, u32)], series: usize) -> bool {
    let after = ranges.partition_point(|&(first, _)| first as usize <= series);
    after > 0 && {
        let (first, count) = ranges[after - 1];
        series < first as usize + count as usize
    }
}

/// Whether a sparse metric's series is hidden: at zero and not declared.
pub(crate) fn hidden(desc: &Descriptor, source: &dyn Source, slots: &[AtomicU64], series: usize) -> bool {
    if !desc.sparse {
        return false;
    }
    let base = series * desc.width;
    slots[base..base + desc.width].iter().all(|s| s.load(Ordering::Relaxed) == 0) && !source.declared(series)
}

/// One sample, with its label text already escaped.
pub(crate) struct Line<'a> {
    pub(crate) which: Which,
    /// The sample's name as written.
    pub(crate) name: &'a str,
    pub(crate) labels: &'a str,
    /// The bucket (histograms) or state (state sets) of the sample.
    pub(crate) extra: Option<usize>,
    pub(crate) value: Value,
    /// The series' dense index, to recover structured labels.
    pub(crate) series: usize,
    /// Which exemplar of the series (the counter's, or the bucket's) goes
    /// with the sample, when asked for and the metric keeps exemplars.
    pub(crate) exemplar: Option<usize>,
}

impl Line<'_> {
    fn write(&self, extra_labels: &[String], escaping: Escaping, exemplar: Option<&Exemplar>, out: &mut Vec<u8>) {
        let extra = self.extra.map_or("", |i| extra_labels[i].as_str());
        if exemplar.is_none() && !is_quoted(self.name) {
            return line::write_line(out, self.name, self.labels, extra, self.value);
        }
        let labels = [Labels::Text(self.labels), Labels::Text(extra)];
        sample::write_with(out, self.name, &labels, self.value, escaping, exemplar);
    }
}

/// Exemplar `which` of series `series` (the counter's, or bucket
/// `which`'s), if the metric keeps exemplars and this one was written.
pub(crate) fn exemplar_at(desc: &Descriptor, slots: &[AtomicU64], series: usize, which: usize) -> Option<Exemplar> {
    if which >= desc.exemplar_count() {
        return None;
    }
    let start = series * desc.width + desc.exemplar_start() + which * exemplar::WIDTH;
    crate::exemplar_slots::read(slots.get(start..start + exemplar::WIDTH)?)
}

fn label_text(name: &str, value: &str, escaping: Escaping) -> String {
    let mut out = Vec::new();
    write_label(&mut out, name, value, escaping);
    String::from_utf8(out).expect("escaping keeps UTF-8")
}

/// The label values of series `series`, or `None` while a bounded label's
/// value for it has not been seen. Labels are decoded in mixed radix, the
/// last varying fastest, matching [`LabelSet::index`](crate::LabelSet::index).
pub(crate) fn series_values(core: &dyn Source, series: usize) -> Option<Vec<&str>> {
    let domains = core.descriptor().label_domains;
    let mut values = vec![""; domains.len()];
    let mut rest = series;
    for (position, domain) in domains.iter().enumerate().rev() {
        let cardinality = domain.cardinality();
        let index = rest % cardinality;
        rest /= cardinality;
        values[position] = match domain {
            LabelDomain::Values(list) => list[index],
            LabelDomain::Bounded { .. } => core.bounded(position, index)?,
        };
    }
    Some(values)
}

/// The label text of every series in dense index order, when every label
/// is a fixed list.
fn series_labels(desc: &Descriptor, escaping: Escaping) -> Option<SeriesText> {
    let mut rendered: Vec<Vec<String>> = Vec::with_capacity(desc.label_names.len());
    for (name, domain) in desc.label_names.iter().zip(desc.label_domains) {
        let LabelDomain::Values(values) = domain else {
            return None;
        };
        rendered.push(values.iter().map(|v| label_text(name, v, escaping)).collect());
    }
    SeriesText::new(&rendered)
}

/// Every series' label text, `a="x",b="y"`, in dense index order, held
/// in one buffer: one allocation for the family instead of one a series,
/// and read front to back by a scrape.
struct SeriesText {
    text: String,
    /// Where each series' text ends in `text`.
    ends: Vec<u32>,
}

impl SeriesText {
    /// Every combination of `rendered` (each label's values, rendered),
    /// the last label varying fastest; `None` when the text would not be
    /// addressable by `u32` offsets (then it is rendered at each scrape).
    fn new(rendered: &[Vec<String>]) -> Option<SeriesText> {
        let series = rendered.iter().try_fold(1usize, |n, values| n.checked_mul(values.len()))?;
        let mut text = String::new();
        let mut ends = Vec::with_capacity(series);
        let mut digits = vec![0usize; rendered.len()];
        for _ in 0..series {
            for (position, &digit) in digits.iter().enumerate() {
                if position > 0 {
                    text.push(',');
                }
                text.push_str(&rendered[position][digit]);
            }
            ends.push(u32::try_from(text.len()).ok()?);
            for position in (0..digits.len()).rev() {
                digits[position] += 1;
                if digits[position] < rendered[position].len() {
                    break;
                }
                digits[position] = 0;
            }
        }
        text.shrink_to_fit();
        Some(SeriesText { text, ends })
    }

    /// Every series' label text, in order.
    fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let text = &self.text[start..end as usize];
            start = end as usize;
            text
        })
    }

    /// Series `series`' label text.
    #[inline]
    fn get(&self, series: usize) -> &str {
        let start = match series {
            0 => 0,
            _ => self.ends[series - 1] as usize,
        };
        &self.text[start..self.ends[series] as usize]
    }
}

fn header(desc: &Descriptor, format: Format, escaping: Escaping) -> String {
    let mut out = Vec::new();
    write_header(&mut out, desc.name, desc.kind, desc.help, desc.unit, format, escaping);
    String::from_utf8(out).expect("escaping keeps UTF-8")
}

/// Writes the metadata lines of family `family` of `kind`.
pub(crate) fn write_header(
    out: &mut Vec<u8>,
    family: &str,
    kind: Kind,
    help: &str,
    unit: Option<&str>,
    format: Format,
    escaping: Escaping,
) {
    let (suffix, kind) = match format {
        // 0.0.4 has no info type and names counter families after their
        // `_total` sample; OpenMetrics uses the bare family name.
        Format::Prometheus | Format::Protobuf => (kind.sample_suffix(), kind.prometheus_type()),
        Format::OpenMetrics => ("", kind.openmetrics_type()),
    };
    write_typed_header(out, family, suffix, kind, help, unit, format, escaping);
}

/// Writes the metadata lines of a family whose `# TYPE` word is `kind`
/// and whose name in them is `family` followed by `suffix`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_typed_header(
    out: &mut Vec<u8>,
    family: &str,
    suffix: &str,
    kind: &str,
    help: &str,
    unit: Option<&str>,
    format: Format,
    escaping: Escaping,
) {
    let mut name = Vec::with_capacity(family.len() + suffix.len() + 2);
    names::write_sample_name(&mut name, family, suffix, escaping);
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(&name);
    out.push(b' ');
    write_help(out, help, format);
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(&name);
    out.push(b' ');
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
    if let (Some(unit), Format::OpenMetrics) = (unit, format) {
        out.extend_from_slice(b"# UNIT ");
        out.extend_from_slice(&name);
        out.push(b' ');
        out.extend_from_slice(unit.as_bytes());
        out.push(b'\n');
    }
}

/// Receives `(sample name, labels, value)`.
pub(crate) type SampleFn<'a> = dyn FnMut(&str, &[(&str, &str)], f64) + 'a;

/// Calls `f` with every sample of one family, with structured labels.
pub(crate) fn visit_family(plan: &FamilyPlan, source: &dyn Source, slots: &[AtomicU64], f: &mut SampleFn<'_>) {
    let desc = source.descriptor();
    let info = source.info().unwrap_or_default();
    let extra = source.extra_pair();
    // Any variant gives every sample; the names come from the descriptor.
    let suffix = |which| match (which, desc.kind) {
        (Which::Count, _) => "_count",
        (Which::Sum, _) => "_sum",
        (Which::Created, _) => "_created",
        (Which::Main, Kind::Histogram) => "_bucket",
        (Which::Main, kind) => kind.sample_suffix(),
    };
    let names = [Which::Main, Which::Count, Which::Sum, Which::Created].map(|w| format!("{}{}", desc.name, suffix(w)));
    plan.variants[0].visit(source, slots, None, false, |line| {
        let values = series_values(source, line.series).unwrap_or_default();
        let mut labels: Vec<(&str, &str)> = desc.label_names.iter().copied().zip(values).collect();
        labels.extend(info.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        labels.extend(extra);
        let le;
        match (desc.kind, line.extra) {
            (Kind::Histogram, Some(bucket)) => {
                le = le_value(desc.buckets.get(bucket).copied().unwrap_or(f64::INFINITY));
                labels.push(("le", &le));
            }
            (Kind::StateSet, Some(state)) => labels.push((desc.name, desc.states[state])),
            _ => {}
        }
        f(&names[line.which as usize], &labels, line.value.as_f64());
    });
}

#[cfg(test)]
mod range_tests {
    use super::{in_ranges, normalize_ranges};

    #[test]
    fn overlapping_and_touching_ranges_join() {
        let mut ranges = vec![(10, 5), (0, 2), (12, 10), (2, 1), (40, 1), (u32::MAX - 1, u32::MAX)];
        normalize_ranges(&mut ranges);
        assert_eq!(ranges, vec![(0, 3), (10, 12), (40, 1), (u32::MAX - 1, u32::MAX)]);
        let inside = [0, 2, 10, 21, 40];
        let outside = [3, 9, 22, 39, 41];
        assert!(inside.iter().all(|s| in_ranges(&ranges, *s)), "{ranges:?}");
        assert!(!outside.iter().any(|s| in_ranges(&ranges, *s)), "{ranges:?}");
        assert!(!in_ranges(&[], 0));
    }
}

/// The loop of counters and gauges ([`FamilyPlan::encode_plain`]) against
/// the one every family can take ([`FamilyPlan::encode_any`]): the same
/// bytes for random families, values and expositions.
#[cfg(test)]
mod plain_tests {
    use core::sync::atomic::AtomicU64;

    use super::{FamilyPlan, Source};
    use crate::descriptor::{Descriptor, Kind, Opts};
    use crate::encode::format::{Exposition, Protocol};
    use crate::encode::names::Escaping;
    use crate::labels::LabelDomain;

    struct Family {
        desc: Descriptor,
        declared: Vec<bool>,
        extra: Option<(&'static str, &'static str)>,
        created: Option<u64>,
    }

    impl Source for Family {
        fn descriptor(&self) -> &Descriptor {
            &self.desc
        }
        fn bounded(&self, _: usize, _: usize) -> Option<&str> {
            None
        }
        fn info(&self) -> Option<Vec<(String, String)>> {
            None
        }
        fn extra_pair(&self) -> Option<(&str, &str)> {
            self.extra
        }
        fn declared(&self, series: usize) -> bool {
            self.declared[series]
        }
        fn created(&self) -> Option<u64> {
            self.created
        }
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.below(from.len())]
        }
    }

    fn leak<T>(v: Vec<T>) -> &'static [T] {
        Box::leak(v.into_boxed_slice())
    }

    #[test]
    fn counters_and_gauges_encode_as_every_family_does() {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        println!("seed {seed}");
        let mut rng = Rng(seed);
        let names = ["requests", "a_b", "my.metric", "über"];
        const LABEL_NAMES: [&str; 4] = ["route", "tenant", "code", "url.scheme"];
        let values = ["GET", "", "/api/v1/resource/10", "a\"b", "c\\d", "e\nf", "日本", "x,y=\"z\""];
        let floats = [0.0, -0.0, 0.5, 1e300, -2.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 3.0, 1e-7];
        for round in 0..400 {
            let kind = rng.pick(&[Kind::Counter, Kind::Gauge]);
            let labels = rng.below(4);
            let domains: Vec<LabelDomain> = (0..labels)
                .map(|_| LabelDomain::Values(leak((0..1 + rng.below(4)).map(|_| rng.pick(&values)).collect())))
                .collect();
            let series = domains.iter().map(|d| d.cardinality()).product();
            let mut opts = Opts::new(rng.pick(&names), "help").labels(LABEL_NAMES.split_at(labels).0);
            if rng.below(3) == 0 {
                opts = opts.sparse();
            }
            if kind == Kind::Counter && rng.below(3) == 0 {
                opts = opts.exemplars();
            }
            let desc = Descriptor::new(opts, kind, leak(domains), series, &[]);
            let slots: Vec<AtomicU64> = (0..desc.slots())
                .map(|_| {
                    let word = match rng.below(5) {
                        0 => 0,
                        1 => rng.next() >> rng.below(64),
                        2 => rng.pick(&floats).to_bits(),
                        3 => rng.below(1000) as u64,
                        _ => rng.next(),
                    };
                    AtomicU64::new(word)
                })
                .collect();
            let family = Family {
                declared: (0..series).map(|_| rng.below(2) == 0).collect(),
                extra: (rng.below(4) == 0).then_some(("pid", "42")),
                created: (rng.below(2) == 0).then_some(rng.next() >> 4),
                desc,
            };
            let plan = FamilyPlan::new(&family.desc);
            for protocol in [Protocol::PrometheusText1_0_0, Protocol::OpenMetricsText1_0_0] {
                for escaping in Escaping::ALL {
                    let x = Exposition::new(protocol, escaping).with_created_samples(rng.below(2) == 0);
                    let (mut plain, mut any) = (b"# before\n".to_vec(), b"# before\n".to_vec());
                    plan.encode_samples(&family, &slots, x, &mut plain);
                    plan.encode_any(&family, &slots, x, &mut any);
                    assert_eq!(
                        String::from_utf8_lossy(&plain),
                        String::from_utf8_lossy(&any),
                        "seed {seed}, round {round}, {x:?}"
                    );
                }
            }
        }
    }
}
