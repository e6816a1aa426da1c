use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::float;
use crate::descriptor::{Descriptor, Kind, Opts};
use crate::label_set::LabelSet;
use crate::metric::MetricCore;

/// Observations counted into buckets, one series per label combination.
///
/// Each series stores one count per bucket (not cumulative, so an
/// observation is one atomic add) and the sum of observations. The
/// exposition accumulates the buckets, and `_count` is the `+Inf` bucket,
/// so the two always agree.
///
/// A native histogram ([`Opts::native`]) also counts each observation in
/// its sparse exponential bucket: one more atomic add once the bucket is
/// in use. Without classic buckets, it adds to its sum and its native
/// bucket only, and its count is its native buckets' total.
///
/// ```
/// use promshard::{Histogram, Opts};
///
/// static LATENCY: Histogram = Histogram::new(
///     Opts::new("render_seconds", "Time to render a page.")
///         .unit("seconds")
///         .buckets(&[0.1, 0.5, 1.0]),
/// );
/// promshard::register!(LATENCY);
///
/// LATENCY.observe(0.3);
/// let timer = LATENCY.start_timer(); // observes the elapsed time on drop
/// drop(timer);
/// assert_eq!(promshard::testing::sample_value("render_seconds_count", &[]), Some(2.0));
/// ```
pub struct Histogram<L: LabelSet = ()> {
    core: MetricCore,
    labels: PhantomData<fn(L)>,
}

impl<L: LabelSet> Histogram<L> {
    /// Declares a histogram; `opts` must name one label per element of `L`
    /// and gives the buckets (Prometheus' defaults if none).
    #[track_caller]
    pub const fn new(opts: Opts) -> Self {
        let desc = Descriptor::new(opts, Kind::Histogram, L::DOMAINS, L::CARDINALITY, &[]);
        Histogram { core: MetricCore::new(desc), labels: PhantomData }
    }

    /// The series for one label combination.
    #[inline(always)]
    pub fn with(&'static self, labels: L::Values<'_>) -> HistogramSeries {
        let slots = self.core.series(L::index(labels, &self.core));
        HistogramSeries { slots, core: &self.core }
    }

    /// The descriptor-carrying core, for registration.
    pub const fn core(&'static self) -> &'static MetricCore {
        &self.core
    }
}

impl Histogram<()> {
    /// Records one observation.
    #[inline(always)]
    pub fn observe(&'static self, v: f64) {
        self.with(()).observe(v)
    }

    /// Records a duration in seconds.
    #[inline]
    pub fn observe_duration(&'static self, d: Duration) {
        self.with(()).observe_duration(d)
    }

    /// Starts a timer that observes the elapsed seconds when dropped.
    pub fn start_timer(&'static self) -> HistogramTimer {
        self.with(()).start_timer()
    }

    /// Records one observation and keeps `labels` as its bucket's
    /// exemplar; see [`HistogramSeries::observe_with_exemplar`].
    ///
    /// ```
    /// use promshard::{Histogram, Opts};
    ///
    /// static QUERY: Histogram =
    ///     Histogram::new(Opts::new("lookup_seconds", "Query time.").buckets(&[0.1, 1.0]).exemplars());
    /// promshard::register!(QUERY);
    ///
    /// QUERY.observe_with_exemplar(0.05, &[("trace_id", "c0ffee")]);
    /// let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
    /// assert!(text.contains("lookup_seconds_bucket{le=\"0.1\"} 1 # {trace_id=\"c0ffee\"} 0.05 "));
    /// ```
    #[inline]
    pub fn observe_with_exemplar(&'static self, v: f64, labels: &[(&str, &str)]) {
        self.with(()).observe_with_exemplar(v, labels)
    }
}

/// One series of a [`Histogram`].
#[derive(Clone, Copy, Debug)]
pub struct HistogramSeries {
    /// `bounds.len() + 1` bucket counts (the last is `+Inf`), then the
    /// sum, then a native histogram's native slots (`crate::native`).
    slots: *const AtomicU64,
    /// Its metric: the bucket bounds, and where dropped observations are
    /// counted.
    core: &'static MetricCore,
}

// SAFETY: the pointer addresses process-lifetime atomics.
unsafe impl Send for HistogramSeries {}
unsafe impl Sync for HistogramSeries {}

impl HistogramSeries {
    /// The series of `core` whose slots start at `slots`.
    ///
    /// # Safety
    ///
    /// `slots` addresses the series' bucket counts and sum, live for the
    /// rest of the process.
    pub(crate) unsafe fn at(slots: *const AtomicU64, core: &'static MetricCore) -> HistogramSeries {
        HistogramSeries { slots, core }
    }

    /// Records one observation: one atomic add on its bucket and one
    /// compare-and-swap on the sum.
    ///
    /// NaN is not an observation: it is dropped, counted in
    /// `promshard_observations_dropped_total{metric}` and logged once.
    /// (Kept, it would make `_sum` NaN for good, and strict OpenMetrics
    /// parsers refuse a histogram whose sum is NaN.) Infinities are kept:
    /// they land in `+Inf` and make the sum infinite, which parsers accept.
    #[inline(always)]
    pub fn observe(self, v: f64) {
        if v.is_nan() {
            self.core.drop_observation();
            return;
        }
        let desc = self.core.descriptor();
        self.record(desc, bucket_index(desc.buckets, v), v);
    }

    /// Counts `v` into classic bucket `bucket` (and the native buckets of
    /// a native histogram), and adds it to the sum.
    #[inline(always)]
    fn record(self, desc: &crate::descriptor::Descriptor, bucket: usize, v: f64) {
        let bounds = desc.buckets;
        // SAFETY: the series has bounds.len() + 2 slots, then a native
        // histogram's native slots; bucket <= bounds.len().
        unsafe {
            match desc.native {
                // Without classic buckets, the count is the native counts'
                // total: one atomic add fewer.
                Some(_) if bounds.is_empty() => {}
                _ => {
                    (*self.slots.add(bucket)).fetch_add(1, Ordering::Relaxed);
                }
            }
            float::add(&*self.slots.add(bounds.len() + 1), v);
            if let Some(native) = desc.native {
                crate::native::record(self.slots.add(bounds.len() + 2), native, v);
            }
        }
    }

    /// Records one observation, as [`observe`](Self::observe), and keeps
    /// `labels` as the exemplar of the bucket it lands in, with the value
    /// `v` and the current time. The rules, and what happens to an
    /// exemplar that breaks them, are [`CounterSeries::inc_with_exemplar`]'s
    /// (a NaN observation is dropped, and its exemplar with it).
    ///
    /// [`CounterSeries::inc_with_exemplar`]: crate::CounterSeries::inc_with_exemplar
    ///
    /// ```
    /// use promshard::{Histogram, Opts};
    ///
    /// static UPLOAD: Histogram =
    ///     Histogram::new(Opts::new("upload_bytes", "Upload sizes.").buckets(&[1e3, 1e6]).exemplars());
    /// promshard::register!(UPLOAD);
    ///
    /// UPLOAD.with(()).observe_with_exemplar(5e6, &[("trace_id", "big")]);
    /// let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
    /// assert!(text.contains("upload_bytes_bucket{le=\"+Inf\"} 1 # {trace_id=\"big\"} 5000000 "), "{text}");
    /// ```
    #[inline]
    pub fn observe_with_exemplar(self, v: f64, labels: &[(&str, &str)]) {
        if v.is_nan() {
            self.core.drop_observation();
            return;
        }
        let desc = self.core.descriptor();
        let bucket = bucket_index(desc.buckets, v);
        self.record(desc, bucket, v);
        self.core.exemplar(self.slots, bucket, labels, v);
    }

    /// Records a duration in seconds.
    #[inline]
    pub fn observe_duration(self, d: Duration) {
        self.observe(d.as_secs_f64())
    }

    /// Starts a timer that observes the elapsed seconds when dropped.
    pub fn start_timer(self) -> HistogramTimer {
        HistogramTimer { series: Some(self), start: Instant::now() }
    }

    /// Number of observations so far.
    pub fn count(self) -> u64 {
        let desc = self.core.descriptor();
        // SAFETY: the series' slots, as in `observe`.
        let series = unsafe { core::slice::from_raw_parts(self.slots, desc.width) };
        if let Some(count) = crate::native::NativeCounts::native_only_count(desc, series) {
            return count;
        }
        (0..=desc.buckets.len())
            // SAFETY: as in `observe`.
            .map(|i| unsafe { (*self.slots.add(i)).load(Ordering::Relaxed) })
            .sum()
    }

    /// Sum of observations so far.
    pub fn sum(self) -> f64 {
        // SAFETY: as in `observe`.
        unsafe { float::load(&*self.slots.add(self.core.descriptor().buckets.len() + 1)) }
    }
}

/// The first bucket whose upper bound is at least `v`; `bounds.len()` is
/// `+Inf`. A short linear scan beats a binary search for typical bucket
/// counts; long bucket lists are searched by halves.
#[inline(always)]
fn bucket_index(bounds: &[f64], v: f64) -> usize {
    if bounds.len() <= 16 {
        // Counting the bounds that `v` exceeds has no data-dependent
        // branch, so it costs the same for any distribution of values. NaN
        // compares false with every bound, so it exceeds them all: +Inf.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        bounds.iter().map(|b| !(v <= *b) as usize).sum()
    } else {
        // NaN compares false with every bound, so it goes to +Inf as in
        // the linear scan.
        if v.is_nan() { bounds.len() } else { bounds.partition_point(|b| *b < v) }
    }
}

/// Observes the time since it was started when dropped; see
/// [`HistogramSeries::start_timer`].
#[must_use = "the timer observes when dropped; dropping it at once records ~0"]
#[derive(Debug)]
pub struct HistogramTimer {
    series: Option<HistogramSeries>,
    start: Instant,
}

impl HistogramTimer {
    /// Observes now and returns the elapsed seconds.
    pub fn observe_duration(mut self) -> f64 {
        let elapsed = self.start.elapsed().as_secs_f64();
        if let Some(series) = self.series.take() {
            series.observe(elapsed);
        }
        elapsed
    }

    /// Drops the timer without observing.
    pub fn stop_and_discard(mut self) {
        self.series = None;
    }
}

impl Drop for HistogramTimer {
    fn drop(&mut self) {
        if let Some(series) = self.series.take() {
            series.observe(self.start.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_index;

    #[test]
    fn bucket_search_agrees_for_short_and_long_lists() {
        let short = [1.0, 2.0, 5.0];
        let long: Vec<f64> = (1..=40).map(f64::from).collect();
        for (v, want) in [(0.5, 0), (1.0, 0), (1.5, 1), (5.0, 2), (9.0, 3), (f64::NAN, 3)] {
            assert_eq!(bucket_index(&short, v), want, "short {v}");
        }
        for (v, want) in [(0.5, 0), (1.0, 0), (1.5, 1), (40.0, 39), (41.0, 40), (f64::NAN, 40)] {
            assert_eq!(bucket_index(&long, v), want, "long {v}");
        }
    }
}
