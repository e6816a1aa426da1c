use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::descriptor::{Descriptor, Kind, Opts};
use crate::label_set::LabelSet;
use crate::labels::LabelValue;
use crate::metric::MetricCore;

/// Which one of a fixed set of states something is in, like Python's
/// `Enum` (OpenMetrics `stateset`): one sample per state, 1 for the current
/// state and 0 for the others. The first state is current until `set`.
///
/// ```
/// use promshard::{Enum, LabelValue, Opts};
///
/// #[derive(Clone, Copy)]
/// enum Phase { Starting, Serving, Draining }
/// impl LabelValue for Phase {
///     const VALUES: &'static [&'static str] = &["starting", "serving", "draining"];
///     fn index(self) -> usize { self as usize }
/// }
///
/// static PHASE: Enum<Phase> = Enum::new(Opts::new("server_phase", "Lifecycle phase."));
/// promshard::register!(PHASE);
///
/// PHASE.set(Phase::Serving);
/// assert_eq!(promshard::testing::sample_value("server_phase", &[("server_phase", "serving")]), Some(1.0));
/// assert_eq!(promshard::testing::sample_value("server_phase", &[("server_phase", "starting")]), Some(0.0));
/// ```
pub struct Enum<S: LabelValue, L: LabelSet = ()> {
    core: MetricCore,
    types: PhantomData<fn(S, L)>,
}

impl<S: LabelValue, L: LabelSet> Enum<S, L> {
    /// Declares an enum metric whose states are the values of `S`; no
    /// label may be named `pid`, which multiprocess mode gives each
    /// process's series itself (a compile error when used in a `static`).
    #[track_caller]
    pub const fn new(opts: Opts) -> Self {
        opts.check_pid_free(false);
        let desc = Descriptor::new(opts, Kind::StateSet, L::DOMAINS, L::CARDINALITY, S::VALUES);
        Enum { core: MetricCore::new(desc), types: PhantomData }
    }

    /// The series for one label combination.
    #[inline(always)]
    pub fn with(&'static self, labels: L::Values<'_>) -> EnumSeries<S> {
        // SAFETY: `series` returns the address of one live slot.
        let slot = unsafe { &*self.core.series(L::index(labels, &self.core)) };
        EnumSeries { slot, state: PhantomData }
    }

    /// The descriptor-carrying core, for registration.
    pub const fn core(&'static self) -> &'static MetricCore {
        &self.core
    }
}

impl<S: LabelValue> Enum<S, ()> {
    /// Makes `state` the current state.
    #[inline(always)]
    pub fn set(&'static self, state: S) {
        self.with(()).set(state)
    }
}

/// One series of an [`Enum`].
#[derive(Debug)]
pub struct EnumSeries<S> {
    slot: &'static AtomicU64,
    state: PhantomData<fn(S)>,
}

impl<S> Clone for EnumSeries<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for EnumSeries<S> {}

impl<S: LabelValue> EnumSeries<S> {
    /// Makes `state` the current state. A state whose index is out of
    /// range is ignored.
    #[inline(always)]
    pub fn set(self, state: S) {
        let index = state.index();
        if index < S::CARDINALITY {
            self.slot.store(index as u64, Ordering::Relaxed);
        }
    }

    /// The index of the current state.
    pub fn current(self) -> usize {
        self.slot.load(Ordering::Relaxed) as usize
    }
}
