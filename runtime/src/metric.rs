//! The non-generic heart of every instrument: its descriptor and the cached
//! address of its slots.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::descriptor::Descriptor;
use crate::encode::plan::Source;
use crate::interner::{Interner, Tally};
use crate::labels::LabelDomain;
use crate::shard::log::DECLARED_POSITION;

/// What the registry knows of one declared instrument.
///
/// Every instrument embeds one; `#[metric]` (or `promshard::register!`)
/// puts a reference to it in the registry's distributed slice.
#[derive(Debug)]
pub struct MetricCore {
    desc: Descriptor,
    /// First slot of this metric in the arena; null until laid out.
    ///
    /// Written once with `Release` after the arena is zeroed, read with
    /// `Acquire` on every recording, so a recorder that sees the pointer
    /// also sees initialised slots. On x86 the load is a plain `mov`.
    base: AtomicPtr<AtomicU64>,
    /// One string table per label position (empty for fixed labels).
    interners: OnceLock<Box<[Interner]>>,
    /// Recordings refused because a string was not in an inline list
    /// (or info pairs too large): this metric's series of
    /// `promshard_label_refused_total`, once laid out.
    refused: Tally,
    refused_logged: AtomicBool,
    /// Whether an exemplar was refused yet (logged once).
    exemplar_logged: AtomicBool,
    /// Observations dropped because they were NaN: this metric's series
    /// of `promshard_observations_dropped_total`, once laid out.
    dropped: Tally,
    /// Per label position, the series of `promshard_label_overflow_total`
    /// that a bounded label's table counts its overflow in (null for the
    /// other positions); set at layout, before any table is made.
    overflow: OnceLock<Box<[AtomicPtr<AtomicU64>]>>,
    /// Index of this metric in the shard schema, or `u32::MAX`.
    schema_index: AtomicU32,
    /// A sparse metric's series shown at zero: `(first, count)`, sorted.
    declared: OnceLock<Box<[(u32, u32)]>>,
}

impl MetricCore {
    pub(crate) const fn new(desc: Descriptor) -> MetricCore {
        MetricCore {
            desc,
            base: AtomicPtr::new(core::ptr::null_mut()),
            interners: OnceLock::new(),
            refused: Tally::new(),
            refused_logged: AtomicBool::new(false),
            exemplar_logged: AtomicBool::new(false),
            dropped: Tally::new(),
            overflow: OnceLock::new(),
            schema_index: AtomicU32::new(u32::MAX),
            declared: OnceLock::new(),
        }
    }

    /// The metric's descriptor.
    #[inline]
    pub fn descriptor(&self) -> &Descriptor {
        &self.desc
    }

    /// The first slot, without laying anything out: `None` before the
    /// registry is laid out. Safe to call from a fork handler.
    ///
    /// Inlined into every recording (through `series`, itself inlined into
    /// the caller's crate): out of line, the call cost more than a gauge's
    /// store.
    #[inline]
    pub(crate) fn slot_if_attached(&self) -> Option<*const AtomicU64> {
        let base = self.base.load(Ordering::Acquire);
        (!base.is_null()).then_some(base as *const AtomicU64)
    }

    /// Points the metric at its slots. Called by the registry only.
    pub(crate) fn set_base(&self, base: *mut AtomicU64) {
        self.base.store(base, Ordering::Release);
    }

    pub(crate) fn is_attached(&self) -> bool {
        !self.base.load(Ordering::Acquire).is_null()
    }

    /// Creates the string tables of the bounded labels, once, with the
    /// sink each sends its new values to.
    pub(crate) fn init_interners(&self, sink: impl Fn(usize) -> Option<&'static crate::interner::StringSink>) {
        if self.interners.get().is_some() {
            return;
        }
        // Initialised under the gate, so that fork() never catches the
        // OnceLock half-initialised (a child would wait on it forever).
        crate::gate::locked(|| {
            self.interners.get_or_init(|| {
                let domains = self.desc.label_domains.iter();
                domains
                    .enumerate()
                    .map(|(position, d)| match d {
                        LabelDomain::Bounded { capacity } => {
                            Interner::new(*capacity, sink(position), self.overflow_slot(position))
                        }
                        LabelDomain::Values(_) => Interner::new(0, None, core::ptr::null()),
                    })
                    .collect()
            });
        });
    }

    /// Sets the series of a sparse metric that are shown at zero, once,
    /// and in multiprocess mode declares them in the shard's string log,
    /// so that every reader shows them.
    pub(crate) fn declare(&self, mut ranges: Vec<(u32, u32)>) {
        crate::encode::plan::normalize_ranges(&mut ranges);
        let shard = crate::shard::own().filter(|_| self.schema_index() != u32::MAX);
        // Under the gate, like the interners: fork() must never catch the
        // OnceLock half-initialised, nor the log half-written.
        crate::gate::locked(|| {
            if let (Some(shard), true) = (shard, self.declared.get().is_none()) {
                for &(first, count) in &ranges {
                    let logged = shard.log.append(self.schema_index(), DECLARED_POSITION, first, &count.to_le_bytes());
                    if !logged {
                        crate::notice::warn(format!(
                            "shard string log full; series of `{}` declared at zero are not visible to \
                             other processes",
                            self.desc.name
                        ));
                    }
                }
            }
            let _ = self.declared.set(ranges.into_boxed_slice());
        });
    }

    /// Where a bounded label's new values are written so other processes
    /// can read them: the shard's string log, in multiprocess mode.
    pub(crate) fn string_sink(&self, position: usize) -> Option<&'static crate::interner::StringSink> {
        let shard = crate::shard::own()?;
        let metric = self.schema_index();
        if metric == u32::MAX {
            return None;
        }
        let sink = move |index: usize, value: &str| {
            if !shard.log.append(metric, position as u16, index as u32, value.as_bytes()) {
                crate::notice::warn(format!(
                    "shard string log full; label value {value:?} is not visible to other processes"
                ));
            }
        };
        Some(Box::leak(Box::new(sink)))
    }

    /// Records that the metric is entry `index` of this process's shard.
    pub(crate) fn set_schema_index(&self, index: u32) {
        self.schema_index.store(index, Ordering::Relaxed);
    }

    /// This metric's entry in this process's shard schema, or `u32::MAX`.
    pub(crate) fn schema_index(&self) -> u32 {
        self.schema_index.load(Ordering::Relaxed)
    }

    /// The string table of the label at `position`, if one was ever used.
    pub(crate) fn interner_if_used(&self, position: usize) -> Option<&Interner> {
        self.interners.get().map(|i| &i[position])
    }

    /// Points the counts this metric keeps of itself at their series in
    /// the `promshard_*` families: refused recordings, dropped
    /// observations, and the overflow of each bounded label (one slot or
    /// null per label position). Called by the registry's layout only,
    /// before the metric's string tables are made.
    pub(crate) fn count_in(
        &self,
        refused: Option<*const AtomicU64>,
        dropped: Option<*const AtomicU64>,
        overflow: Vec<*const AtomicU64>,
    ) {
        if let Some(slot) = refused {
            self.refused.point_at(slot);
        }
        if let Some(slot) = dropped {
            self.dropped.point_at(slot);
        }
        if overflow.iter().any(|s| !s.is_null()) {
            let slots = overflow.into_iter().map(|s| AtomicPtr::new(s as *mut AtomicU64)).collect();
            let _ = self.overflow.set(slots);
        }
    }

    /// Where the bounded label at `position` counts its overflow: its
    /// series, or null (in its table) when not laid out.
    fn overflow_slot(&self, position: usize) -> *const AtomicU64 {
        let slot = self.overflow.get().and_then(|slots| slots.get(position));
        slot.map_or(core::ptr::null(), |s| s.load(Ordering::Acquire))
    }

    /// Counts a recording refused for a label value that is not in an
    /// inline list, logging the first. The registry lays itself out
    /// first (`MetricCore::refuse_label_value`), so that the count lands
    /// in its series.
    #[cold]
    pub(crate) fn count_refused_value(&self, position: usize, value: &str) {
        self.refused.add();
        if !self.refused_logged.swap(true, Ordering::Relaxed) {
            let label = self.desc.label_names.get(position).copied().unwrap_or("?");
            crate::notice::warn(format!(
                "metric `{}`: value {value:?} is not allowed for label `{label}`; \
                 recording dropped (add it to the list or give the list an `else` value)",
                self.desc.name
            ));
        }
    }

    /// Counts an observation that was not a number, logging the first.
    #[cold]
    #[inline(never)]
    pub(crate) fn drop_observation(&self) {
        if self.dropped.add() == 0 {
            crate::notice::warn(format!(
                "histogram `{}`: NaN observation dropped (counted in promshard_observations_dropped_total)",
                self.desc.name
            ));
        }
    }

    /// Stores exemplar number `which` of the series whose slots start at
    /// `series` (its value already counted), unless refused (logged once
    /// per metric) or another thread is writing the same exemplar right
    /// now (skipped: that one is as recent).
    ///
    /// Out of line (it is the bulk of `inc_with_exemplar`, and callers'
    /// code stays small), but not cold: it is the whole point of the call.
    /// The refusal is.
    #[inline(never)]
    pub(crate) fn exemplar(&self, series: *const AtomicU64, which: usize, labels: &[(&str, &str)], value: f64) {
        if let Err(e) = self.try_exemplar(series, which, labels, value) {
            self.refuse_exemplar(e);
        }
    }

    /// Logs the metric's first refused exemplar.
    #[cold]
    #[inline(never)]
    fn refuse_exemplar(&self, e: crate::exemplar::ExemplarError) {
        if !self.exemplar_logged.swap(true, Ordering::Relaxed) {
            crate::notice::warn(format!(
                "metric `{}`: exemplar dropped ({e}); the value was counted. Further drops are not logged",
                self.desc.name
            ));
        }
    }

    /// As [`exemplar`](Self::exemplar): whether it was written.
    #[inline]
    pub(crate) fn try_exemplar(
        &self,
        series: *const AtomicU64,
        which: usize,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<bool, crate::exemplar::ExemplarError> {
        use crate::exemplar::{ExemplarError, WIDTH};
        if which >= self.desc.exemplar_count() {
            return Err(ExemplarError::NotEnabled);
        }
        if value.is_nan() {
            return Err(ExemplarError::InvalidValue);
        }
        let len = crate::exemplar::check(labels)?;
        let nanos = crate::exemplar::now_nanos();
        // SAFETY: a series of this metric has `width` slots from `series`,
        // its exemplars' last: `exemplar_start + exemplar_count * WIDTH`.
        let slots =
            unsafe { core::slice::from_raw_parts(series.add(self.desc.exemplar_start() + which * WIDTH), WIDTH) };
        Ok(crate::exemplar_slots::write(slots, labels, len, value, nanos))
    }

    /// Clears every exemplar of this metric that a write left busy (its
    /// sequence word odd; see [`seqlock::clear_interrupted_write`]): in a
    /// forked child, the writes that threads of the parent were in the
    /// middle of. Only from the fork child handler, whose thread is the
    /// child's only one: loads and stores in the arena, nothing else.
    ///
    /// [`seqlock::clear_interrupted_write`]: crate::seqlock::clear_interrupted_write
    pub(crate) fn clear_interrupted_exemplars(&self) {
        use crate::exemplar::WIDTH;
        let count = self.desc.exemplar_count();
        let Some(base) = self.slot_if_attached().filter(|_| count > 0) else { return };
        let (start, width) = (self.desc.exemplar_start(), self.desc.width);
        // Every series, the discard series too: it is written like the
        // others.
        for series in 0..=self.desc.series {
            for which in 0..count {
                // SAFETY: the arena holds (series + 1) * width slots from
                // `base`; a series' exemplars are its last
                // `count * WIDTH` slots from `exemplar_start`, each led by
                // its sequence word.
                let sequence = unsafe { &*base.add(series * width + start + which * WIDTH) };
                crate::seqlock::clear_interrupted_write(sequence);
            }
        }
    }

    /// Counts a set of info pairs refused for its size.
    pub(crate) fn refuse_info(&self) {
        self.refused.add();
    }

    /// An info metric's current label pairs.
    pub(crate) fn info_pairs(&self) -> Option<Vec<(String, String)>> {
        crate::info_slots::read_pairs(self.info_slots()?)
    }

    /// An info metric's slots, once laid out.
    pub(crate) fn info_slots(&self) -> Option<&[AtomicU64]> {
        let base = self.slot_if_attached()?;
        // SAFETY: an info metric's first series is `width` slots in the
        // arena, which lives for the rest of the process.
        Some(unsafe { core::slice::from_raw_parts(base, self.desc.width) })
    }
}

impl Source for MetricCore {
    fn descriptor(&self) -> &Descriptor {
        MetricCore::descriptor(self)
    }
    fn bounded(&self, position: usize, index: usize) -> Option<&str> {
        match self.interner_if_used(position) {
            Some(interner) => interner.get(index),
            // No value recorded yet: only the overflow series is known,
            // and it is exposed from the start, as in multiprocess mode.
            None => match self.desc.label_domains.get(position)? {
                LabelDomain::Bounded { capacity } if *capacity == index => Some(crate::labels::OTHER),
                _ => None,
            },
        }
    }
    fn info(&self) -> Option<Vec<(String, String)>> {
        self.info_pairs()
    }
    fn declared(&self, series: usize) -> bool {
        self.declared.get().is_some_and(|ranges| crate::encode::plan::in_ranges(ranges, series))
    }
    /// In process memory (read from a shard, a family is a merge's), the
    /// counts started when the slots were laid out.
    fn created(&self) -> Option<u64> {
        crate::registry::is_laid_out().then(|| crate::registry::get().started_nanos)
    }
}
