use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};
use std::fmt;

use super::float;
use crate::descriptor::{Descriptor, Kind, Opts};
use crate::label_set::LabelSet;
use crate::metric::MetricCore;

/// A monotonically increasing total, one series per label combination.
///
/// Each series has two slots: an integer count (`inc`, `inc_by`: one
/// atomic add) and a float part (`inc_by_f64`: compare-and-swap), summed at
/// scrape time.
///
/// ```
/// use promshard::{Counter, Opts};
///
/// static JOBS: Counter = Counter::new(Opts::new("jobs_done_total", "Jobs finished."));
/// promshard::register!(JOBS);
///
/// JOBS.inc();
/// JOBS.inc_by(2);
/// assert_eq!(promshard::testing::sample_value("jobs_done_total", &[]), Some(3.0));
/// ```
pub struct Counter<L: LabelSet = ()> {
    core: MetricCore,
    labels: PhantomData<fn(L)>,
}

impl<L: LabelSet> Counter<L> {
    /// Declares a counter; `opts` must name one label per element of `L`.
    #[track_caller]
    pub const fn new(opts: Opts) -> Self {
        let desc = Descriptor::new(opts, Kind::Counter, L::DOMAINS, L::CARDINALITY, &[]);
        Counter { core: MetricCore::new(desc), labels: PhantomData }
    }

    /// The series for one label combination.
    #[inline(always)]
    pub fn with(&'static self, labels: L::Values<'_>) -> CounterSeries {
        let slot = self.core.series(L::index(labels, &self.core));
        // SAFETY: `series` returns the address of two live slots (and
        // of the series' exemplar after them, when it has one).
        CounterSeries { slots: unsafe { &*(slot as *const [AtomicU64; 2]) }, core: &self.core }
    }

    /// The descriptor-carrying core, for registration.
    pub const fn core(&'static self) -> &'static MetricCore {
        &self.core
    }

    /// The series for `labels` if the counter has its slots, without
    /// laying the registry out (which, in a process that only reads a
    /// shard directory, would start a shard of its own). For fixed
    /// labels only: a bounded label's table could lay it out.
    pub(crate) fn series_if_laid_out(&'static self, labels: L::Values<'_>) -> Option<CounterSeries> {
        self.core.slot_if_attached()?;
        Some(self.with(labels))
    }
}

impl Counter<()> {
    /// Adds one.
    #[inline(always)]
    pub fn inc(&'static self) {
        self.with(()).inc()
    }

    /// Adds `n`.
    #[inline(always)]
    pub fn inc_by(&'static self, n: u64) {
        self.with(()).inc_by(n)
    }

    /// Adds a non-negative, finite float; see [`CounterSeries::inc_by_f64`].
    #[inline]
    pub fn inc_by_f64(&'static self, v: f64) -> Result<(), InvalidIncrement> {
        self.with(()).inc_by_f64(v)
    }

    /// Adds one and keeps `labels` as the series' exemplar; see
    /// [`CounterSeries::inc_with_exemplar`].
    ///
    /// ```
    /// use promshard::{Counter, Opts};
    ///
    /// static PAID: Counter = Counter::new(Opts::new("payments_total", "Payments.").exemplars());
    /// promshard::register!(PAID);
    ///
    /// PAID.inc_with_exemplar(&[("trace_id", "a1b2")]);
    /// assert_eq!(promshard::testing::sample_value("payments_total", &[]), Some(1.0));
    /// ```
    #[inline]
    pub fn inc_with_exemplar(&'static self, labels: &[(&str, &str)]) {
        self.with(()).inc_with_exemplar(labels)
    }

    /// Adds `n` and keeps `labels` as the series' exemplar, with the
    /// value `n`; see [`CounterSeries::inc_with_exemplar`].
    ///
    /// ```
    /// use promshard::{Counter, Opts};
    ///
    /// static BYTES: Counter = Counter::new(Opts::new("sent_bytes_total", "Bytes sent.").exemplars());
    /// promshard::register!(BYTES);
    ///
    /// BYTES.inc_by_with_exemplar(512, &[("trace_id", "a1b2")]);
    /// assert_eq!(promshard::testing::sample_value("sent_bytes_total", &[]), Some(512.0));
    /// ```
    #[inline]
    pub fn inc_by_with_exemplar(&'static self, n: u64, labels: &[(&str, &str)]) {
        self.with(()).inc_by_with_exemplar(n, labels)
    }
}

/// One series of a [`Counter`].
#[derive(Clone, Copy, Debug)]
pub struct CounterSeries {
    slots: &'static [AtomicU64; 2],
    /// The counter, for its exemplar.
    core: &'static MetricCore,
}

impl CounterSeries {
    /// The series of `core` whose slots start at `slot`, with its
    /// exemplars.
    ///
    /// # Safety
    ///
    /// `slot` addresses the first slot of a series of `core`'s arena.
    #[inline(always)]
    pub(crate) unsafe fn of(slot: *const AtomicU64, core: &'static MetricCore) -> CounterSeries {
        // SAFETY: as the caller promises.
        CounterSeries { slots: unsafe { &*(slot as *const [AtomicU64; 2]) }, core }
    }

    /// Adds one.
    #[inline(always)]
    pub fn inc(self) {
        self.slots[0].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline(always)]
    pub fn inc_by(self, n: u64) {
        self.slots[0].fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one and keeps `labels` (a trace id, usually) as the series'
    /// exemplar, with the value 1 and the current time: OpenMetrics and
    /// protobuf scrapes show it after the series' total, and in
    /// multiprocess mode the merged series shows the newest exemplar of
    /// any process.
    ///
    /// The count always lands. The exemplar is dropped, and the first drop
    /// of the metric logged, when the counter was declared without
    /// [`Opts::exemplars`], or when `labels` break OpenMetrics' rules:
    /// names `[a-zA-Z_][a-zA-Z0-9_]*` not starting with `__`, none
    /// repeated, and at most 128 characters of names and values together.
    /// It is also skipped, silently, when another thread is writing this
    /// series' exemplar at the same moment (that one is as recent).
    ///
    /// ```
    /// use promshard::{Counter, LabelValue, Opts};
    ///
    /// #[derive(Clone, Copy)]
    /// enum Route { Home, Cart }
    /// impl LabelValue for Route {
    ///     const VALUES: &'static [&'static str] = &["home", "cart"];
    ///     fn index(self) -> usize { self as usize }
    /// }
    ///
    /// static HITS: Counter<(Route,)> =
    ///     Counter::new(Opts::new("hits_total", "Hits.").labels(&["route"]).exemplars());
    /// promshard::register!(HITS);
    ///
    /// HITS.with((Route::Cart,)).inc_with_exemplar(&[("trace_id", "7f00")]);
    /// let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
    /// assert!(text.contains("hits_total{route=\"cart\"} 1 # {trace_id=\"7f00\"} 1 "));
    /// ```
    #[inline]
    pub fn inc_with_exemplar(self, labels: &[(&str, &str)]) {
        self.inc_by_with_exemplar(1, labels)
    }

    /// Adds `n` and keeps `labels` as the series' exemplar, with the
    /// value `n`; see [`inc_with_exemplar`](Self::inc_with_exemplar).
    ///
    /// ```
    /// use promshard::{Counter, Opts};
    ///
    /// static ROWS: Counter = Counter::new(Opts::new("rows_total", "Rows.").exemplars());
    /// promshard::register!(ROWS);
    ///
    /// ROWS.with(()).inc_by_with_exemplar(3, &[("trace_id", "7f01")]);
    /// assert_eq!(promshard::testing::sample_value("rows_total", &[]), Some(3.0));
    /// ```
    #[inline]
    pub fn inc_by_with_exemplar(self, n: u64, labels: &[(&str, &str)]) {
        self.inc_by(n);
        self.core.exemplar(self.slots.as_ptr(), 0, labels, n as f64);
    }

    /// Adds a float amount (seconds of CPU, bytes as a float, …).
    ///
    /// # Errors
    ///
    /// A counter only goes up: a negative, NaN or infinite `v` is refused
    /// and the counter is left unchanged.
    #[inline]
    pub fn inc_by_f64(self, v: f64) -> Result<(), InvalidIncrement> {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(InvalidIncrement(v));
        }
        float::add(&self.slots[1], v);
        Ok(())
    }

    /// The series' current total.
    pub fn get(self) -> f64 {
        total(self.slots[0].load(Ordering::Relaxed), float::load(&self.slots[1]))
    }
}

/// The counter total from its integer and float slots.
pub(crate) fn total(count: u64, fraction: f64) -> f64 {
    count as f64 + fraction
}

/// A counter increment that would have made it go down or become
/// non-finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InvalidIncrement(pub f64);

impl fmt::Display for InvalidIncrement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "counters only increase: refused increment {}", self.0)
    }
}

impl std::error::Error for InvalidIncrement {}
