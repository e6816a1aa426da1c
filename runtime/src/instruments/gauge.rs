use core::marker::PhantomData;
use core::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use super::float;
use crate::descriptor::{Descriptor, Kind, Opts};
use crate::label_set::LabelSet;
use crate::metric::MetricCore;

/// A value that goes up and down, one series per label combination.
///
/// ```
/// use promshard::{Gauge, Opts};
///
/// static QUEUE: Gauge = Gauge::new(Opts::new("queue_length", "Items waiting."));
/// promshard::register!(QUEUE);
///
/// QUEUE.set(4.0);
/// QUEUE.dec();
/// {
///     let _busy = QUEUE.track_inprogress();
///     assert_eq!(QUEUE.get(), 4.0);
/// }
/// assert_eq!(QUEUE.get(), 3.0);
/// ```
pub struct Gauge<L: LabelSet = ()> {
    core: MetricCore,
    labels: PhantomData<fn(L)>,
}

impl<L: LabelSet> Gauge<L> {
    /// Declares a gauge; `opts` must name one label per element of `L`,
    /// and none `pid` while the gauge's mode is `all` (the default) or
    /// `liveall`: multiprocess mode labels each process's series with
    /// `pid` itself (a compile error when used in a `static`).
    #[track_caller]
    pub const fn new(opts: Opts) -> Self {
        opts.check_pid_free(true);
        let desc = Descriptor::new(opts, Kind::Gauge, L::DOMAINS, L::CARDINALITY, &[]);
        Gauge { core: MetricCore::new(desc), labels: PhantomData }
    }

    /// The series for one label combination.
    #[inline(always)]
    pub fn with(&'static self, labels: L::Values<'_>) -> GaugeSeries {
        let slot = self.core.series(L::index(labels, &self.core));
        let timestamped = self.core.descriptor().mode.is_most_recent();
        // SAFETY: `series` returns the address of `width` live slots, and
        // width is 2 exactly when the mode is timestamped.
        let value = unsafe { &*slot };
        let stamp = if timestamped { Some(unsafe { &*slot.add(1) }) } else { None };
        GaugeSeries { value, stamp }
    }

    /// The descriptor-carrying core, for registration.
    pub const fn core(&'static self) -> &'static MetricCore {
        &self.core
    }
}

impl Gauge<()> {
    /// Gives the gauge its value from `function`, called at every scrape
    /// of this process and, in multiprocess mode, every
    /// [`callback_interval`](crate::callback_interval) by each process for
    /// its own shard; see [`GaugeSeries::set_function`].
    pub fn set_function(&'static self, function: impl Fn() -> f64 + Send + Sync + 'static) {
        self.with(()).set_function(function)
    }
}

macro_rules! unlabelled {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty)?) $(-> $ret:ty)?;)*) => {
        impl Gauge<()> {
            $(
                $(#[$doc])*
                #[inline(always)]
                pub fn $name(&'static self $(, $arg: $ty)?) $(-> $ret)? {
                    self.with(()).$name($($arg)?)
                }
            )*
        }
    };
}

unlabelled! {
    /// Adds one.
    fn inc();
    /// Subtracts one.
    fn dec();
    /// Adds `v`.
    fn add(v: f64);
    /// Subtracts `v`.
    fn sub(v: f64);
    /// Sets the value.
    fn set(v: f64);
    /// Sets the value to the current Unix time in seconds.
    fn set_to_current_time();
    /// Adds one now and subtracts it when the guard drops.
    fn track_inprogress() -> InProgress;
    /// The current value.
    fn get() -> f64;
}

/// One series of a [`Gauge`].
#[derive(Clone, Copy, Debug)]
pub struct GaugeSeries {
    value: &'static AtomicU64,
    /// The time of the last update, for the `mostrecent` modes only.
    stamp: Option<&'static AtomicU64>,
}

impl GaugeSeries {
    /// The series of a gauge whose mode keeps no timestamp, at `value`.
    pub(crate) fn untimed(value: &'static AtomicU64) -> GaugeSeries {
        GaugeSeries { value, stamp: None }
    }

    /// Adds one.
    #[inline(always)]
    pub fn inc(self) {
        self.add(1.0)
    }

    /// Subtracts one.
    #[inline(always)]
    pub fn dec(self) {
        self.add(-1.0)
    }

    /// Adds `v`.
    #[inline(always)]
    pub fn add(self, v: f64) {
        float::add(self.value, v);
        self.touch();
    }

    /// Subtracts `v`.
    #[inline(always)]
    pub fn sub(self, v: f64) {
        self.add(-v)
    }

    /// Sets the value.
    #[inline(always)]
    pub fn set(self, v: f64) {
        float::store(self.value, v);
        self.touch();
    }

    /// Sets the value to the current Unix time in seconds.
    pub fn set_to_current_time(self) {
        self.set(unix_now())
    }

    /// Adds one now and subtracts it when the returned guard drops, to
    /// count work in progress.
    pub fn track_inprogress(self) -> InProgress {
        self.inc();
        InProgress { series: self }
    }

    /// The current value.
    pub fn get(self) -> f64 {
        float::load(self.value)
    }

    /// Gives this series its value from `function` from now on (replacing
    /// an earlier function of the series): a pool's idle connections, a
    /// queue's depth. This process calls it at each of its scrapes; in
    /// multiprocess mode each process also calls its own functions every
    /// [`callback_interval`](crate::callback_interval) (one second unless
    /// set) and stores the values in its shard, so a scrape answered by any
    /// worker combines every live worker's values by the gauge's mode
    /// (declare one of the `live` modes, so dead workers drop out). A
    /// forked child keeps its parent's functions and calls them itself.
    ///
    /// A function that panics leaves the series at its last value and is
    /// counted in `promshard_set_function_panics_total`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use promshard::{Gauge, Opts};
    ///
    /// static IDLE: AtomicUsize = AtomicUsize::new(3);
    /// static POOL_IDLE: Gauge = Gauge::new(Opts::new("pool_idle_connections", "Idle connections."));
    /// promshard::register!(POOL_IDLE);
    ///
    /// POOL_IDLE.set_function(|| IDLE.load(Ordering::Relaxed) as f64);
    /// IDLE.store(5, Ordering::Relaxed);
    /// assert_eq!(promshard::testing::sample_value("pool_idle_connections", &[]), Some(5.0));
    /// ```
    pub fn set_function(self, function: impl Fn() -> f64 + Send + Sync + 'static) {
        super::callback::set(self, std::sync::Arc::new(function));
    }

    /// Whether both are the same series.
    pub(crate) fn same_value_slot(self, other: GaugeSeries) -> bool {
        core::ptr::eq(self.value, other.value)
    }

    /// Names the series within this process (its slot's address).
    pub(crate) fn slot_address(self) -> usize {
        core::ptr::from_ref(self.value) as usize
    }

    #[inline(always)]
    fn touch(self) {
        if let Some(stamp) = self.stamp {
            float::store(stamp, unix_now());
        }
    }
}

/// Decrements a gauge when dropped; see [`GaugeSeries::track_inprogress`].
#[must_use = "the gauge is decremented when the guard drops"]
#[derive(Debug)]
pub struct InProgress {
    series: GaugeSeries,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.series.dec();
    }
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
