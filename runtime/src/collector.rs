//! Scrape-time collectors: values owned elsewhere (a connection pool's
//! size, a queue's depth, process statistics) read when a scrape happens.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::descriptor::{Kind, Opts, is_label_name, is_legacy_label_name, is_metric_name};
use crate::encode::format::{Exposition, Format};
use crate::encode::names::{self, label_clash, spellings};
use crate::encode::plan::{SampleFn, write_header};
use crate::encode::proto::{self, ProtoWriter};
use crate::encode::sample;
use crate::encode::text::le_value;
use crate::gate::GateCell;
use crate::instruments::counter::Counter;
use crate::metric::MetricCore;
use crate::notice::warn_once;

// `COLLECTORS`, declared under this version's own name (see build.rs).
include!(concat!(env!("OUT_DIR"), "/collectors_slice.rs"));

/// Under the gate, so a fork never finds it locked; collectors are
/// called on a snapshot, with nothing locked.
static RUNTIME_COLLECTORS: GateCell<Vec<Arc<dyn Collector>>> = GateCell::new(Vec::new());

/// Produces metric families when a scrape happens.
///
/// Register one at run time with [`register_collector`](crate::register_collector)
/// or statically with `promshard::register_collector!`.
/// Families whose name clashes with a declared metric or with an earlier
/// family of the same scrape are skipped with a warning.
///
/// A collector that panics loses its own families for that scrape (and
/// is counted in `promshard_collector_panics_total`); the rest of the
/// scrape, and later scrapes, are unaffected.
pub trait Collector: Send + Sync + 'static {
    /// Writes this collector's families.
    fn collect(&self, out: &mut MetricWriter<'_>);

    /// The name the collector's problems are reported under; its type's
    /// name unless overridden.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
}

/// Collector panics caught during scrapes: in this process's arena, so
/// that in multiprocess mode every process's scrape sums them all.
static PANICS: Counter = Counter::new(Opts::new(
    "promshard_collector_panics",
    "Collector panics caught during scrapes; each cost its collector's families in that scrape.",
));

#[linkme::distributed_slice(crate::registry::METRICS)]
static PANICS_ENTRY: &MetricCore = PANICS.core();

/// A sample held back until its collector returns: name, labels, value.
type OwnedSample = (String, Vec<(String, String)>, f64);

/// Runs one collector into `writer`. A panic is caught: what the
/// collector had written in this scrape is taken back, the panic counted
/// and logged, and the scrape goes on.
pub(crate) fn run(collector: &dyn Collector, writer: &mut MetricWriter<'_>) {
    let result = match &mut writer.target {
        Target::Text { .. } | Target::Proto { .. } | Target::Capture(_) => {
            let mark = writer.mark();
            let result = crate::user_code::call(|| collector.collect(writer));
            if result.is_err() {
                writer.rewind(mark);
            }
            result
        }
        // A callback cannot take a sample back: the collector writes into
        // a buffer, handed on only when it returns.
        Target::Samples(f) => {
            let mut kept: Vec<OwnedSample> = Vec::new();
            let mut keep = |name: &str, labels: &[(&str, &str)], value: f64| {
                let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
                kept.push((name.to_owned(), labels, value));
            };
            let mut inner = MetricWriter::new(Target::Samples(&mut keep), writer.reserved);
            inner.written = writer.written.clone();
            let result = crate::user_code::call(|| collector.collect(&mut inner));
            let written = core::mem::take(&mut inner.written);
            drop(inner);
            if result.is_ok() {
                writer.written = written;
                for (name, labels, value) in &kept {
                    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    f(name, &labels, *value);
                }
            }
            result
        }
    };
    // Without the panic hook (see `user_code`); logged once per change of
    // what it says on this thread, so a worker's publisher does not log it
    // every interval.
    let source = format!("collector {}", collector.name());
    match result {
        Ok(()) => crate::notice::recovered(&source),
        Err(what) => {
            // The registry is laid out: the scrape running us did it.
            PANICS.inc();
            if crate::notice::changed(&source, &what) {
                crate::notice::error(format!(
                    "collector {} panicked during a scrape ({what}); its families are left out of this scrape",
                    collector.name()
                ));
            }
        }
    }
}

/// Where a sample goes: rendered text or protobuf, a callback (tests),
/// or families kept as written (a worker's collectors, published for
/// other processes' scrapes).
pub(crate) enum Target<'a> {
    Text { out: &'a mut Vec<u8>, x: Exposition },
    Proto { out: &'a mut Vec<u8>, w: Box<ProtoWriter> },
    Samples(&'a mut SampleFn<'a>),
    Capture(&'a mut Vec<Captured>),
}

/// A family as a collector wrote it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Captured {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) help: String,
    /// Suffix (`_total`, `_bucket` …), labels, `le`, value.
    pub(crate) samples: Vec<CapturedSample>,
}

/// One sample of a [`Captured`] family.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CapturedSample {
    pub(crate) suffix: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) le: Option<String>,
    pub(crate) value: f64,
}

impl<'a> Target<'a> {
    /// Rendered output in `x`'s format.
    pub(crate) fn output(out: &'a mut Vec<u8>, x: Exposition) -> Target<'a> {
        match x.format() {
            Format::Protobuf => Target::Proto { out, w: Box::new(ProtoWriter::new(x.escaping())) },
            _ => Target::Text { out, x },
        }
    }
}

/// What a [`Collector`] writes its families into.
pub struct MetricWriter<'a> {
    target: Target<'a>,
    /// Sample names of the declared metrics, each in every spelling a
    /// scraper may see.
    reserved: &'a HashMap<String, usize>,
    /// Family names already written by collectors in this scrape, each in
    /// every spelling.
    written: HashSet<String>,
}

impl<'a> MetricWriter<'a> {
    pub(crate) fn new(target: Target<'a>, reserved: &'a HashMap<String, usize>) -> Self {
        MetricWriter { target, reserved, written: HashSet::new() }
    }

    /// Where the output stands, to [`rewind`](Self::rewind) to.
    fn mark(&self) -> (usize, HashSet<String>) {
        let len = match &self.target {
            Target::Text { out, .. } | Target::Proto { out, .. } => out.len(),
            Target::Samples(_) => 0,
            Target::Capture(families) => families.len(),
        };
        (len, self.written.clone())
    }

    /// Takes back what was written since `mark` (text output only: a
    /// sample callback has seen its samples already).
    fn rewind(&mut self, (len, written): (usize, HashSet<String>)) {
        match &mut self.target {
            Target::Text { out, .. } | Target::Proto { out, .. } => out.truncate(len),
            Target::Capture(families) => families.truncate(len),
            Target::Samples(_) => {}
        }
        self.written = written;
    }

    /// Starts a counter family; a trailing `_total` in `name` is implied.
    pub fn counter(&mut self, name: &str, help: &str) -> FamilyWriter<'_, 'a> {
        self.family(Kind::Counter, name, help)
    }

    /// Starts a gauge family.
    pub fn gauge(&mut self, name: &str, help: &str) -> FamilyWriter<'_, 'a> {
        self.family(Kind::Gauge, name, help)
    }

    /// Starts a histogram family; write its series with
    /// [`FamilyWriter::histogram`].
    pub fn histogram(&mut self, name: &str, help: &str) -> FamilyWriter<'_, 'a> {
        self.family(Kind::Histogram, name, help)
    }

    /// Starts an info family; a trailing `_info` in `name` is implied and
    /// every sample's value is 1.
    pub fn info(&mut self, name: &str, help: &str) -> FamilyWriter<'_, 'a> {
        self.family(Kind::Info, name, help)
    }

    fn family(&mut self, kind: Kind, name: &str, help: &str) -> FamilyWriter<'_, 'a> {
        let base = kind.family_name(name).to_owned();
        // Compared in every spelling: `a.b` and `a_b` are one name to a
        // scraper that asked for escaped names.
        let spelled = spellings(&base);
        let problem = if !is_metric_name(&base) {
            Some("invalid metric name")
        } else if spelled.iter().chain(&spellings(&sample_name(kind, &base))).any(|n| self.reserved.contains_key(n))
            || spelled.iter().any(|n| self.written.contains(n))
        {
            Some("name already exposed")
        } else {
            self.written.extend(spelled);
            None
        };
        if let Some(problem) = problem {
            warn_once(&format!("collector family `{name}` skipped: {problem}"));
        }
        FamilyWriter {
            writer: self,
            kind,
            name: base,
            help: help.to_owned(),
            unit: None,
            state: if problem.is_some() { State::Skipped } else { State::Pending },
        }
    }
}

#[derive(PartialEq)]
enum State {
    Pending,
    Started,
    Skipped,
}

/// One family being written by a collector. The header is written with
/// the first sample, or when the writer drops.
pub struct FamilyWriter<'w, 'a> {
    writer: &'w mut MetricWriter<'a>,
    kind: Kind,
    name: String,
    help: String,
    unit: Option<String>,
    state: State,
}

impl FamilyWriter<'_, '_> {
    /// Sets the unit; the family name must end with `_<unit>`.
    pub fn unit(mut self, unit: &str) -> Self {
        if self.name.ends_with(&format!("_{unit}")) && is_legacy_label_name(unit) {
            self.unit = Some(unit.to_owned());
        } else {
            warn_once(&format!("collector family `{}`: unit `{unit}` ignored, not a suffix of the name", self.name));
        }
        self
    }

    /// Writes one sample of a counter, gauge or info family. Labels with
    /// an invalid or reserved name drop the sample with a warning; a
    /// negative or NaN counter value is dropped too.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let value = if self.kind == Kind::Info { 1.0 } else { value };
        if self.kind == Kind::Histogram {
            warn_once(&format!("collector family `{}`: use histogram() for histogram samples", self.name));
        } else if self.kind == Kind::Counter && (value.is_nan() || value < 0.0) {
            warn_once(&format!("collector counter `{}`: negative or NaN value dropped", self.name));
        } else if self.labels_ok(labels, None) && self.start() {
            if let Target::Proto { out, w } = &mut self.writer.target {
                w.labels(labels.iter().copied());
                match self.kind {
                    Kind::Counter => w.counter(out, value, None),
                    _ => w.gauge(out, value),
                }
            } else {
                self.emit(self.kind.sample_suffix(), labels, None, value);
            }
        }
        self
    }

    /// Writes one histogram series from cumulative bucket counts
    /// `(upper bound, count)` in increasing order and the sum of
    /// observations. A `+Inf` bucket is added when missing, equal to the
    /// last count.
    ///
    /// A NaN sum drops the series with a warning, as a NaN observation is
    /// dropped by [`Histogram`](crate::Histogram). A negative sum is kept,
    /// but OpenMetrics output, which does not allow it, then leaves out
    /// `_sum` and `_count` (the `+Inf` bucket still counts).
    pub fn histogram(&mut self, labels: &[(&str, &str)], buckets: &[(f64, u64)], sum: f64) -> &mut Self {
        let sorted = buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        if self.kind != Kind::Histogram || !sorted {
            warn_once(&format!("collector histogram `{}`: series dropped (wrong type or unsorted buckets)", self.name));
            return self;
        }
        if sum.is_nan() {
            warn_once(&format!("collector histogram `{}`: series with a NaN sum dropped", self.name));
            return self;
        }
        if !self.labels_ok(labels, Some("le")) || !self.start() {
            return self;
        }
        if let Target::Proto { out, w } = &mut self.writer.target {
            let count = buckets.last().map_or(0, |b| b.1);
            w.labels(labels.iter().copied()).histogram(out, buckets.iter().map(|&(b, c)| (b, c, None)), count, sum);
            return self;
        }
        let mut count = 0;
        for &(bound, cumulative) in buckets {
            count = cumulative;
            self.emit("_bucket", labels, Some(&le_value(bound)), cumulative as f64);
        }
        if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
            self.emit("_bucket", labels, Some("+Inf"), count as f64);
        }
        let shown = match &self.writer.target {
            Target::Text { x, .. } => crate::encode::text::sum_shown(x.format(), sum),
            Target::Proto { .. } | Target::Samples(_) | Target::Capture(_) => true,
        };
        if shown {
            self.emit("_count", labels, None, count as f64);
            self.emit("_sum", labels, None, sum);
        }
        self
    }

    fn labels_ok(&self, labels: &[(&str, &str)], reserved: Option<&str>) -> bool {
        let keys: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
        let ok = keys.iter().all(|k| is_label_name(k) && Some(*k) != reserved) && label_clash(&keys).is_none();
        if !ok {
            warn_once(&format!("collector family `{}`: sample with invalid label names dropped", self.name));
        }
        ok
    }

    /// Writes the header if needed; false when the family is skipped.
    fn start(&mut self) -> bool {
        if self.state == State::Pending {
            match &mut self.writer.target {
                Target::Text { out, x } => {
                    let (format, escaping) = (x.format(), x.escaping());
                    write_header(out, &self.name, self.kind, &self.help, self.unit.as_deref(), format, escaping);
                }
                Target::Proto { out, w } => {
                    let (kind, suffix) = proto::type_of(self.kind);
                    w.begin(out, &self.name, suffix, &self.help, kind, self.unit.as_deref());
                }
                Target::Capture(families) => families.push(Captured {
                    kind: self.kind,
                    name: self.name.clone(),
                    help: self.help.clone(),
                    samples: Vec::new(),
                }),
                Target::Samples(_) => {}
            }
            self.state = State::Started;
        }
        self.state == State::Started
    }

    /// Writes the family's sample with `suffix`.
    fn emit(&mut self, suffix: &str, labels: &[(&str, &str)], le: Option<&str>, value: f64) {
        match &mut self.writer.target {
            Target::Text { out, x } => {
                let le = le.map(|le| [("le", le)]);
                let parts = [sample::Labels::Pairs(labels), sample::Labels::Pairs(le.as_ref().map_or(&[], |l| &l[..]))];
                let name = names::sample_name(&self.name, suffix, x.escaping());
                sample::write(out, &name, &parts, sample::Value::of_f64(value), x.escaping());
            }
            // Whole series are written by `sample` and `histogram`.
            Target::Proto { .. } => unreachable!("protobuf series are written whole"),
            Target::Samples(f) => {
                let mut all: Vec<(&str, &str)> = labels.to_vec();
                all.extend(le.map(|le| ("le", le)));
                f(&format!("{}{suffix}", self.name), &all, value);
            }
            Target::Capture(families) => {
                if let Some(family) = families.last_mut() {
                    family.samples.push(CapturedSample {
                        suffix: suffix.to_owned(),
                        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                        le: le.map(str::to_owned),
                        value,
                    });
                }
            }
        }
    }
}

impl Drop for FamilyWriter<'_, '_> {
    fn drop(&mut self) {
        if self.start() {
            if let Target::Proto { out, w } = &mut self.writer.target {
                w.end(out);
            }
        }
    }
}

fn sample_name(kind: Kind, base: &str) -> String {
    format!("{base}{}", kind.sample_suffix())
}

/// Registers a scrape-time collector for the rest of the process's life.
///
/// ```
/// use promshard::{Collector, MetricWriter};
///
/// struct QueueDepth;
/// impl Collector for QueueDepth {
///     fn collect(&self, out: &mut MetricWriter<'_>) {
///         out.gauge("jobs_queued", "Jobs waiting in the queue.").sample(&[], 3.0);
///     }
/// }
///
/// promshard::register_collector(QueueDepth);
/// assert_eq!(promshard::testing::sample_value("jobs_queued", &[]), Some(3.0));
/// ```
pub fn register_collector(collector: impl Collector) {
    crate::user_code::install();
    let collector: Arc<dyn Collector> = Arc::new(collector);
    RUNTIME_COLLECTORS.with(|list| list.push(collector));
}

/// The collectors registered at run time, in order; a snapshot, so that
/// none is called under the lock (a collector may register another).
pub(crate) fn registered() -> Vec<Arc<dyn Collector>> {
    RUNTIME_COLLECTORS.with(|list| list.clone())
}
