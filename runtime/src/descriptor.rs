//! What a metric is: its name, help, unit, kind, labels and buckets, as a
//! `const`-constructible value checked when the program is compiled.
//!
//! The checks here are `const` panics, so a bad declaration through the
//! `const` constructors fails the build. `#[metric]` repeats them with
//! spans and friendlier messages; these remain the backstop.

use core::panic::Location;

use crate::labels::LabelDomain;
use crate::native::NativeBuckets;

/// The Prometheus default histogram buckets, in seconds.
pub const DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// `N` buckets `start, start + width, …`, usable in a `const` or `static`.
///
/// ```
/// const BUCKETS: [f64; 4] = promshard::linear_buckets(0.5, 0.5);
/// assert_eq!(BUCKETS, [0.5, 1.0, 1.5, 2.0]);
/// ```
pub const fn linear_buckets<const N: usize>(start: f64, width: f64) -> [f64; N] {
    assert!(width > 0.0, "linear_buckets: width must be positive");
    let mut out = [0.0; N];
    let mut i = 0;
    while i < N {
        out[i] = start + width * i as f64;
        i += 1;
    }
    out
}

/// `N` buckets `start, start * factor, start * factor², …`.
///
/// ```
/// const BUCKETS: [f64; 4] = promshard::exponential_buckets(0.001, 10.0);
/// assert_eq!(BUCKETS[3], 1.0);
/// ```
pub const fn exponential_buckets<const N: usize>(start: f64, factor: f64) -> [f64; N] {
    assert!(start > 0.0, "exponential_buckets: start must be positive");
    assert!(factor > 1.0, "exponential_buckets: factor must be greater than 1");
    let mut out = [0.0; N];
    let mut next = start;
    let mut i = 0;
    while i < N {
        out[i] = next;
        next *= factor;
        i += 1;
    }
    out
}

/// How a gauge's values from several processes are combined in
/// multiprocess mode (Python prometheus_client's `multiprocess_mode`).
///
/// In a single process every mode exposes the one value. The `Live*`
/// modes drop processes that have exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GaugeMode {
    /// One series per process, with a `pid` label (the default).
    All,
    /// Like `All`, live processes only.
    LiveAll,
    /// The sum over processes.
    Sum,
    /// The sum over live processes.
    LiveSum,
    /// The smallest value.
    Min,
    /// The smallest value among live processes.
    LiveMin,
    /// The largest value.
    Max,
    /// The largest value among live processes.
    LiveMax,
    /// The most recently set value.
    MostRecent,
    /// The most recently set value among live processes.
    LiveMostRecent,
}

impl GaugeMode {
    /// Python prometheus_client's spelling of the mode.
    pub const fn as_str(self) -> &'static str {
        match self {
            GaugeMode::All => "all",
            GaugeMode::LiveAll => "liveall",
            GaugeMode::Sum => "sum",
            GaugeMode::LiveSum => "livesum",
            GaugeMode::Min => "min",
            GaugeMode::LiveMin => "livemin",
            GaugeMode::Max => "max",
            GaugeMode::LiveMax => "livemax",
            GaugeMode::MostRecent => "mostrecent",
            GaugeMode::LiveMostRecent => "livemostrecent",
        }
    }

    /// Whether the mode keeps a timestamp beside the value.
    pub const fn is_most_recent(self) -> bool {
        matches!(self, GaugeMode::MostRecent | GaugeMode::LiveMostRecent)
    }

    /// Every mode, in the order of their codes in the shard format.
    pub(crate) const ALL: [GaugeMode; 10] = [
        GaugeMode::All,
        GaugeMode::LiveAll,
        GaugeMode::Sum,
        GaugeMode::LiveSum,
        GaugeMode::Min,
        GaugeMode::LiveMin,
        GaugeMode::Max,
        GaugeMode::LiveMax,
        GaugeMode::MostRecent,
        GaugeMode::LiveMostRecent,
    ];

    /// The mode Python prometheus_client spells `name`.
    pub(crate) fn from_name(name: &str) -> Option<GaugeMode> {
        GaugeMode::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether only live processes' values count.
    pub(crate) const fn is_live(self) -> bool {
        matches!(
            self,
            GaugeMode::LiveAll
                | GaugeMode::LiveSum
                | GaugeMode::LiveMin
                | GaugeMode::LiveMax
                | GaugeMode::LiveMostRecent
        )
    }

    /// Whether each process keeps a series of its own, under `pid`.
    pub(crate) const fn is_per_process(self) -> bool {
        matches!(self, GaugeMode::All | GaugeMode::LiveAll)
    }

    /// Combines two processes' `(value, timestamp)` of one gauge series
    /// (the timestamp matters to the most-recent modes only).
    pub(crate) fn combine(self, (value, stamp): (f64, f64), (other, other_stamp): (f64, f64)) -> (f64, f64) {
        match self {
            GaugeMode::Min | GaugeMode::LiveMin => (value.min(other), stamp),
            GaugeMode::Max | GaugeMode::LiveMax => (value.max(other), stamp),
            GaugeMode::MostRecent | GaugeMode::LiveMostRecent if other_stamp > stamp => (other, other_stamp),
            GaugeMode::MostRecent | GaugeMode::LiveMostRecent => (value, stamp),
            // Sum, and the per-process modes, whose series differ by pid.
            _ => (value + other, stamp),
        }
    }
}

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A monotonically increasing total.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations counted into cumulative buckets, with their sum.
    Histogram,
    /// Constant labels describing the target, with the value 1.
    Info,
    /// One of a fixed set of states (OpenMetrics `stateset`).
    StateSet,
}

/// The largest encoded label-pair set an [`Info`](crate::Info) keeps, in
/// bytes; a larger one is refused in every mode.
pub(crate) const INFO_PAYLOAD_MAX: usize = 8192;

/// Slots of an info metric: a sequence word, the payload's length, the
/// payload.
pub(crate) const INFO_WIDTH: usize = 2 + INFO_PAYLOAD_MAX / 8;

impl Kind {
    /// The `# TYPE` word in OpenMetrics.
    pub const fn openmetrics_type(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Info => "info",
            Kind::StateSet => "stateset",
        }
    }

    /// The suffix a family's main sample adds to its name: `_total` for
    /// counters, `_info` for info metrics (family names never carry it).
    pub const fn sample_suffix(self) -> &'static str {
        match self {
            Kind::Counter => "_total",
            Kind::Info => "_info",
            _ => "",
        }
    }

    /// The family name without the suffix its samples add.
    pub const fn family_name(self, name: &str) -> &str {
        strip_suffix(name, self.sample_suffix())
    }

    /// Slots (8 bytes each) per series of a metric of this kind. An info
    /// metric's slots hold its label pairs (see `instruments::info`).
    pub const fn width(self, mode: GaugeMode, buckets: usize) -> usize {
        match self {
            Kind::Counter => 2,
            Kind::Gauge if mode.is_most_recent() => 2,
            Kind::Gauge | Kind::StateSet => 1,
            Kind::Histogram => buckets + 2,
            Kind::Info => INFO_WIDTH,
        }
    }

    /// Exemplars a series of this kind keeps when declared with
    /// [`Opts::exemplars`]: one for a counter, one per bucket (`+Inf`
    /// included) for a histogram, none for the other kinds.
    pub const fn exemplars(self, buckets: usize) -> usize {
        match self {
            Kind::Counter => 1,
            Kind::Histogram => buckets + 1,
            _ => 0,
        }
    }

    /// The `# TYPE` word in the Prometheus 0.0.4 text format, which has no
    /// info or stateset types.
    pub const fn prometheus_type(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Gauge | Kind::Info | Kind::StateSet => "gauge",
        }
    }
}

/// The options of a metric declaration, built in a `const` context.
///
/// ```
/// use promshard::Opts;
///
/// const OPTS: Opts = Opts::new("jobs_total", "Jobs run.").labels(&["queue"]);
/// assert_eq!(OPTS.name(), "jobs_total");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    name: &'static str,
    help: &'static str,
    unit: Option<&'static str>,
    label_names: &'static [&'static str],
    /// `None` until [`buckets`](Self::buckets) is called: the defaults,
    /// unless the histogram is a native one.
    buckets: Option<&'static [f64]>,
    native: Option<NativeBuckets>,
    mode: GaugeMode,
    sparse: bool,
    exemplars: bool,
    file: &'static str,
    line: u32,
}

impl Opts {
    /// A metric called `name` with the HELP text `help`.
    ///
    /// The caller's `file:line` is recorded for error messages about
    /// duplicate names.
    #[track_caller]
    pub const fn new(name: &'static str, help: &'static str) -> Opts {
        let location = Location::caller();
        Opts {
            name,
            help,
            unit: None,
            label_names: &[],
            buckets: None,
            native: None,
            mode: GaugeMode::All,
            sparse: false,
            exemplars: false,
            file: location.file(),
            line: location.line(),
        }
    }

    /// The unit (`seconds`, `bytes`, …); the name must end with `_<unit>`
    /// (before `_total` for counters).
    pub const fn unit(self, unit: &'static str) -> Opts {
        Opts { unit: Some(unit), ..self }
    }

    /// The label names, one per element of the metric's label tuple.
    pub const fn labels(self, label_names: &'static [&'static str]) -> Opts {
        Opts { label_names, ..self }
    }

    /// Histogram bucket upper bounds, strictly increasing and finite; the
    /// `+Inf` bucket is implied. Defaults to [`DEFAULT_BUCKETS`], except
    /// for a [`native`](Self::native) histogram, which has classic
    /// buckets only when given here.
    pub const fn buckets(self, buckets: &'static [f64]) -> Opts {
        Opts { buckets: Some(buckets), ..self }
    }

    /// Makes a histogram a native one: sparse exponential buckets of
    /// `schema` (-4 to 8: each bucket's upper bound is `2^(2^-schema)`
    /// times its lower one, so schema 3 is a factor of about 1.09), at
    /// most `max_buckets` of them per series (1 to 4096), as
    /// client_golang's `NativeHistogramMaxBucketNumber`. Each series
    /// keeps `2 + 2 × max_buckets + 146` slots (8 bytes each). A series'
    /// values in more than `max_buckets` buckets are counted at schema -4
    /// (a factor of 65536 per bucket) from then on, and a merge of
    /// processes shows at most `max_buckets` buckets, its schema lowered
    /// as far as needed; no observation is ever lost.
    ///
    /// Classic buckets are kept alongside only when [`buckets`](Self::buckets)
    /// is called too. A native-only histogram shows `_count`, `_sum` and
    /// the `+Inf` bucket in the text formats, and its native buckets in
    /// protobuf, which Prometheus started with
    /// `--enable-feature=native-histograms` scrapes.
    ///
    /// # Panics
    ///
    /// At compile time (in the `const` declaring the metric) when `schema`
    /// or `max_buckets` is out of range.
    ///
    /// ```
    /// use promshard::{Histogram, Opts};
    ///
    /// static LATENCY: Histogram = Histogram::new(
    ///     Opts::new("query_seconds", "Query time.").unit("seconds").native(3, 160),
    /// );
    /// promshard::register!(LATENCY);
    ///
    /// LATENCY.observe(0.25);
    /// assert_eq!(promshard::testing::sample_value("query_seconds_count", &[]), Some(1.0));
    /// ```
    pub const fn native(self, schema: i8, max_buckets: u32) -> Opts {
        Opts { native: Some(NativeBuckets::new(schema, max_buckets)), ..self }
    }

    /// How a gauge is combined across processes.
    pub const fn mode(self, mode: GaugeMode) -> Opts {
        Opts { mode, ..self }
    }

    /// Checks a metric kept per process (an `Enum`, or a gauge when
    /// `per_process_mode` and its mode is `all` or `liveall`) for a
    /// declared `pid` label: multiprocess mode labels each process's
    /// series with `pid` itself, and a sample with two is refused by
    /// Prometheus with its whole scrape.
    ///
    /// # Panics
    ///
    /// At compile time (in `const` context) when such a metric declares
    /// `pid`.
    pub(crate) const fn check_pid_free(&self, per_process_mode: bool) {
        if per_process_mode && !self.mode.is_per_process() {
            return;
        }
        let mut i = 0;
        while i < self.label_names.len() {
            assert!(
                !eq(self.label_names[i], "pid"),
                "label `pid`: this metric is kept per process, under a `pid` label of its own in multiprocess mode; rename it (or give the gauge a mode that combines processes)"
            );
            i += 1;
        }
    }

    /// Keeps the latest exemplar of every counter series, or of every
    /// bucket of a histogram series, for `inc_with_exemplar` and
    /// `observe_with_exemplar`. Off by default: each exemplar takes
    /// 544 bytes of slots per series (per bucket), in memory and in shard
    /// files, and metrics without it keep their size. Counters and
    /// histograms only.
    ///
    /// ```
    /// use promshard::{Counter, Opts};
    ///
    /// static ORDERS: Counter = Counter::new(Opts::new("orders_total", "Orders placed.").exemplars());
    /// promshard::register!(ORDERS);
    ///
    /// ORDERS.inc_with_exemplar(&[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")]);
    /// let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
    /// assert!(text.contains("orders_total 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 1 "));
    /// ```
    pub const fn exemplars(self) -> Opts {
        Opts { exemplars: true, ..self }
    }

    /// Series at zero are exposed only where declared (see
    /// [`Descriptor::sparse`]).
    pub(crate) const fn sparse(self) -> Opts {
        Opts { sparse: true, ..self }
    }

    /// Overrides the recorded declaration site (generated code passes the
    /// user's own `file!()` and `line!()`).
    pub const fn declared_at(self, file: &'static str, line: u32) -> Opts {
        Opts { file, line, ..self }
    }

    /// The name as given.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// A metric's complete, checked description: what the registry lays out
/// and what the exposition renders.
#[derive(Debug)]
pub struct Descriptor {
    /// The family name, without the `_total` (counter) or `_info` (info)
    /// suffix that samples carry.
    pub name: &'static str,
    /// The HELP text.
    pub help: &'static str,
    /// The unit, if any.
    pub unit: Option<&'static str>,
    /// The family type.
    pub kind: Kind,
    /// Label names, in the order of the label tuple.
    pub label_names: &'static [&'static str],
    /// Every label's values, in the order of the label tuple.
    pub label_domains: &'static [LabelDomain],
    /// Histogram bucket upper bounds without `+Inf` (empty otherwise, and
    /// for a native histogram without classic buckets).
    pub buckets: &'static [f64],
    /// A native histogram's buckets (`None` otherwise).
    pub native: Option<NativeBuckets>,
    /// StateSet states (empty otherwise).
    pub states: &'static [&'static str],
    /// Gauge combination mode.
    pub mode: GaugeMode,
    /// Whether a series at zero is exposed only where declared, instead
    /// of from the start. Set on the request counter and latency
    /// histogram of `#[instrument_handler]`'s HTTP families, whose
    /// method × status combinations are mostly ones a handler never
    /// answers: a series appears once it counts something, except the
    /// rows of each handler's own method, which are there from the start.
    pub sparse: bool,
    /// Whether each series keeps its latest exemplar (per bucket, for a
    /// histogram): see [`Opts::exemplars`]. Their slots follow the
    /// series' others, within `width`.
    pub exemplars: bool,
    /// Number of series: the product of the label cardinalities.
    pub series: usize,
    /// Slots (8 bytes each) per series.
    pub width: usize,
    /// Declaration site.
    pub file: &'static str,
    /// Declaration line.
    pub line: u32,
}

impl Descriptor {
    /// Checks `opts` for a metric of `kind` and builds its descriptor.
    ///
    /// # Panics
    ///
    /// At compile time (this runs in `const` context) when a name is
    /// invalid, a label is reserved, the number of label names differs from
    /// the label tuple, or histogram buckets are empty, not finite or not
    /// strictly increasing.
    pub const fn new(
        opts: Opts,
        kind: Kind,
        label_domains: &'static [LabelDomain],
        series: usize,
        states: &'static [&'static str],
    ) -> Descriptor {
        assert!(is_metric_name(opts.name), "invalid metric name: empty, or with a control character");
        assert!(
            opts.label_names.len() == label_domains.len(),
            "the number of label names differs from the number of labels in the label tuple"
        );
        let mut i = 0;
        while i < opts.label_names.len() {
            let label = opts.label_names[i];
            assert!(is_metric_name(label), "invalid label name: empty, or with a control character");
            assert!(is_label_name(label), "label names starting with __ (as written or once escaped) are reserved");
            assert!(!eq(label, "quantile"), "the label name `quantile` is reserved for summaries");
            if matches!(kind, Kind::Histogram) {
                assert!(!eq(label, "le"), "the label name `le` is reserved for histogram buckets");
            }
            let mut j = 0;
            while j < i {
                assert!(!eq(label, opts.label_names[j]), "duplicate label name");
                j += 1;
            }
            i += 1;
        }
        let name = kind.family_name(opts.name);
        if let Some(unit) = opts.unit {
            assert!(is_legacy_label_name(unit), "invalid unit: use [a-zA-Z0-9_]");
            assert!(
                ends_with_unit(name, unit),
                "the metric name must end with `_<unit>` (before `_total` for counters)"
            );
        }
        let buckets: &'static [f64] = match (opts.buckets, opts.native) {
            (Some(b), _) => b,
            (None, None) => &DEFAULT_BUCKETS,
            (None, Some(_)) => &[],
        };
        assert!(opts.native.is_none() || matches!(kind, Kind::Histogram), "only a histogram can be native");
        if matches!(kind, Kind::Histogram) {
            let b = buckets;
            assert!(!b.is_empty() || opts.native.is_some(), "histogram buckets must not be empty");
            let mut k = 0;
            while k < b.len() {
                assert!(b[k].is_finite(), "histogram buckets must be finite (+Inf is implied)");
                assert!(k == 0 || b[k - 1] < b[k], "histogram buckets must be strictly increasing");
                k += 1;
            }
        }
        if matches!(kind, Kind::StateSet) {
            assert!(!states.is_empty(), "an enum metric needs at least one state");
            let mut k = 0;
            while k < opts.label_names.len() {
                assert!(!eq(opts.label_names[k], name), "an enum metric's labels must not use its own name");
                k += 1;
            }
        }
        assert!(
            !opts.exemplars || matches!(kind, Kind::Counter | Kind::Histogram),
            "exemplars are kept for counters and histograms only"
        );
        let native_width = match opts.native {
            Some(native) => native.width(),
            None => 0,
        };
        // Classic slots, then the native ones, then the exemplars.
        let classic = kind.width(opts.mode, buckets.len()) + native_width;
        let width =
            if opts.exemplars { classic + kind.exemplars(buckets.len()) * crate::exemplar::WIDTH } else { classic };
        Descriptor {
            name,
            help: opts.help,
            unit: opts.unit,
            kind,
            label_names: opts.label_names,
            label_domains,
            buckets: if matches!(kind, Kind::Histogram) { buckets } else { &[] },
            native: opts.native,
            states,
            mode: opts.mode,
            sparse: opts.sparse,
            exemplars: opts.exemplars,
            series,
            width,
            file: opts.file,
            line: opts.line,
        }
    }

    /// Slots the metric occupies: every series plus one discard series
    /// that absorbs recordings with an out-of-range label index.
    pub const fn slots(&self) -> usize {
        (self.series + 1) * self.width
    }

    /// Slots per series of the kind's own values: the counts, sums and
    /// timestamps (a histogram's sum is the last of them).
    pub const fn classic_width(&self) -> usize {
        self.kind.width(self.mode, self.buckets.len())
    }

    /// Where a series' exemplars start: after its classic slots and its
    /// native ones.
    pub const fn exemplar_start(&self) -> usize {
        self.classic_width()
            + match self.native {
                Some(native) => native.width(),
                None => 0,
            }
    }

    /// Exemplars per series: 0 unless declared with [`Opts::exemplars`].
    pub const fn exemplar_count(&self) -> usize {
        if self.exemplars { self.kind.exemplars(self.buckets.len()) } else { 0 }
    }
}

pub(crate) const fn eq(a: &str, b: &str) -> bool {
    bytes_eq(a.as_bytes(), b.as_bytes())
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// On bytes: a UTF-8 name's byte at `prefix.len()` (or `len - suffix.len()`)
// may fall inside a character.
const fn starts_with(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && bytes_eq(s.as_bytes().split_at(prefix.len()).0, prefix.as_bytes())
}

const fn ends_with(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && bytes_eq(s.as_bytes().split_at(s.len() - suffix.len()).1, suffix.as_bytes())
}

const fn slice(s: &str, start: usize, end: usize) -> &str {
    let (head, _) = s.as_bytes().split_at(end);
    let (_, middle) = head.split_at(start);
    match core::str::from_utf8(middle) {
        Ok(s) => s,
        Err(_) => panic!("slice boundary inside a UTF-8 character"),
    }
}

const fn strip_suffix<'a>(s: &'a str, suffix: &str) -> &'a str {
    if !suffix.is_empty() && ends_with(s, suffix) && s.len() > suffix.len() {
        slice(s, 0, s.len() - suffix.len())
    } else {
        s
    }
}

const fn ends_with_unit(name: &str, unit: &str) -> bool {
    name.len() > unit.len() && ends_with(name, unit) && name.as_bytes()[name.len() - unit.len() - 1] == b'_'
}

/// Whether `name` may name a metric: any non-empty UTF-8 text without
/// control characters.
///
/// Prometheus 3 accepts any UTF-8 name; a name outside the legacy
/// character set ([`is_legacy_metric_name`]) is quoted for scrapers that
/// ask for UTF-8 names and escaped for the others (see
/// [`Escaping`](crate::Escaping)). Control characters are refused on top
/// of Prometheus' rule: no one means them in a name, and no one could see
/// or type the series they would make.
///
/// ```
/// assert!(promshard::is_metric_name("http_requests_total"));
/// assert!(promshard::is_metric_name("http.server.request.duration"));
/// assert!(!promshard::is_metric_name(""));
/// assert!(!promshard::is_metric_name("two\nlines"));
/// ```
pub const fn is_metric_name(name: &str) -> bool {
    !name.is_empty() && !has_control(name)
}

/// Whether `name` may name a label: a valid name ([`is_metric_name`]'s
/// rule) that does not start with `__`, reserved for Prometheus, neither
/// as written nor as a scraper that asked for escaped names would see it.
///
/// ```
/// assert!(promshard::is_label_name("method"));
/// assert!(promshard::is_label_name("http.request.method"));
/// assert!(!promshard::is_label_name("__name__"));
/// // `_` + `.` escape to `__` for a scraper without UTF-8 support.
/// assert!(!promshard::is_label_name("_.name"));
/// ```
pub const fn is_label_name(name: &str) -> bool {
    is_metric_name(name) && !starts_with(name, "__") && !escapes_to_reserved(name)
}

/// The longest bounded label value (or string-log entry) kept, in bytes;
/// longer values count as overflow, so a shard's string log can hold
/// every kept value.
pub(crate) const MAX_LABEL_VALUE: usize = 256;

/// Whether `name` is a metric name of the legacy character set,
/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, which every scraper takes as it is.
pub const fn is_legacy_metric_name(name: &str) -> bool {
    legacy(name, true)
}

/// Whether `name` is a label name of the legacy character set,
/// `[a-zA-Z_][a-zA-Z0-9_]*`, which every scraper takes as it is.
pub const fn is_legacy_label_name(name: &str) -> bool {
    legacy(name, false)
}

const fn legacy(name: &str, colon: bool) -> bool {
    let b = name.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if !legacy_byte(b[i], i, colon) {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether byte `c` at byte position `i` belongs to a legacy name (a
/// non-ASCII byte never does).
pub(crate) const fn legacy_byte(c: u8, i: usize, colon: bool) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':') || (i > 0 && c.is_ascii_digit())
}

/// Whether `name` holds a control character (Unicode `Cc`: U+0000 to
/// U+001F, U+007F to U+009F).
const fn has_control(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // U+0080..U+009F are encoded as C2 80..C2 9F.
        if b[i] < 0x20 || b[i] == 0x7F || (b[i] == 0xC2 && i + 1 < b.len() && b[i + 1] <= 0x9F) {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether a label name outside the legacy set starts with `__` once
/// escaped with `underscores` or `dots` (see `encode::names`), which
/// would make it one of Prometheus' reserved labels for those scrapers.
/// Only the first two characters decide.
const fn escapes_to_reserved(name: &str) -> bool {
    if is_legacy_label_name(name) {
        return false;
    }
    let b = name.as_bytes();
    // Non-ASCII characters escape like any other character outside the
    // legacy set: they are "other" here.
    let first = b[0];
    let first_legacy = legacy_byte(first, 0, false);
    // `dots`: `_` becomes `__`, `.` becomes `_dot_`, any other character
    // outside the set `__`.
    if first == b'_' || (!first_legacy && first != b'.') {
        return true;
    }
    // `underscores`: each character outside the set becomes one `_`.
    let second_at = if first < 0x80 {
        1
    } else if first >= 0xF0 {
        4
    } else if first >= 0xE0 {
        3
    } else {
        2
    };
    if second_at >= b.len() {
        return false;
    }
    let second = b[second_at];
    escapes_to_underscore(first, 0) && escapes_to_underscore(second, second_at)
}

/// Whether byte `c` (at `i`, a character's first byte) is written `_`
/// by the `underscores` escaping of a label name.
const fn escapes_to_underscore(c: u8, i: usize) -> bool {
    c == b'_' || !legacy_byte(c, i, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for legacy in ["http_requests_total", "job:rate5m", "_x1"] {
            assert!(is_metric_name(legacy) && is_legacy_metric_name(legacy), "{legacy}");
        }
        for utf8 in ["9lives", "a-b", "http.server.request.duration", "λ", "a b", "\"q\""] {
            assert!(is_metric_name(utf8) && !is_legacy_metric_name(utf8), "{utf8}");
        }
        for bad in ["", "a\nb", "\t", "a\u{7f}", "a\u{85}b", "\u{9f}"] {
            assert!(!is_metric_name(bad) && !is_label_name(bad), "{bad:?}");
        }
        // U+00A0 is encoded C2 A0: not a control character.
        assert!(is_metric_name("a\u{a0}b"));
        assert!(is_label_name("_x1") && is_legacy_label_name("_x1"));
        assert!(is_label_name("a:b") && !is_legacy_label_name("a:b"));
        assert!(is_label_name("http.request.method") && is_label_name(".x") && is_label_name("método"));
        assert!(is_label_name("a.") && is_label_name("aé") && is_label_name("a"));
        // Reserved as written, or once escaped by `underscores` (two
        // characters that become `_`) or `dots` (a leading `_`, or a
        // leading character other than a letter or `.`).
        for reserved in ["__x", "__", "_.x", ".-x", "é", "é1", "-x", "_é", "1.x", "_x.y", "..x"] {
            assert!(!is_label_name(reserved), "{reserved}");
        }
    }

    #[test]
    fn counter_and_info_names_lose_their_suffix() {
        let d = Descriptor::new(Opts::new("jobs_total", "h"), Kind::Counter, &[], 1, &[]);
        assert_eq!(d.name, "jobs");
        let d = Descriptor::new(Opts::new("total", "h"), Kind::Counter, &[], 1, &[]);
        assert_eq!(d.name, "total");
        let d = Descriptor::new(Opts::new("build_info", "h"), Kind::Info, &[], 1, &[]);
        assert_eq!(d.name, "build");
    }

    #[test]
    fn unit_must_be_a_name_suffix() {
        let opts = Opts::new("latency_seconds_total", "h").unit("seconds");
        assert_eq!(Descriptor::new(opts, Kind::Counter, &[], 1, &[]).unit, Some("seconds"));
        let bad = std::panic::catch_unwind(|| {
            Descriptor::new(Opts::new("latencyseconds", "h").unit("seconds"), Kind::Gauge, &[], 1, &[])
        });
        assert!(bad.is_err());
    }

    #[test]
    fn widths() {
        let h = Descriptor::new(Opts::new("h", "h").buckets(&[1.0, 2.0]), Kind::Histogram, &[], 1, &[]);
        assert_eq!((h.width, h.slots()), (4, 8));
        let g = Descriptor::new(Opts::new("g", "h").mode(GaugeMode::MostRecent), Kind::Gauge, &[], 1, &[]);
        assert_eq!(g.width, 2);
    }

    #[test]
    fn bucket_helpers() {
        const L: [f64; 3] = linear_buckets(1.0, 2.0);
        assert_eq!(L, [1.0, 3.0, 5.0]);
        const E: [f64; 3] = exponential_buckets(1.0, 2.0);
        assert_eq!(E, [1.0, 2.0, 4.0]);
    }

    #[test]
    fn reserved_labels_are_refused() {
        for (kind, label) in [(Kind::Histogram, "le"), (Kind::Counter, "__x"), (Kind::Gauge, "quantile")] {
            let r = std::panic::catch_unwind(|| {
                let labels: &'static [&str] = Box::leak(Box::new([label]));
                Descriptor::new(Opts::new("m", "h").labels(labels), kind, &[LabelDomain::Values(&["a"])], 1, &[])
            });
            assert!(r.is_err(), "{label} accepted on {kind:?}");
        }
    }
}
