//! The non-generic heart of every instrument: its descriptor and the cached
//! address of its slots.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::descriptor::Descriptor;
use crate::interner::Interner;
use crate::labels::LabelDomain;
use crate::registry;

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
    /// Recordings refused because a string was not in an inline list.
    refused: AtomicU64,
    refused_logged: AtomicBool,
    /// Observations dropped because they were NaN.
    dropped: AtomicU64,
    /// Index of this metric in the shard schema, or `u32::MAX`.
    schema_index: AtomicU32,
}

/// The label pairs of an info metric.
pub(crate) type InfoPairs = Box<[(String, String)]>;

impl MetricCore {
    pub(crate) const fn new(desc: Descriptor) -> MetricCore {
        MetricCore {
            desc,
            base: AtomicPtr::new(core::ptr::null_mut()),
            interners: OnceLock::new(),
            refused: AtomicU64::new(0),
            refused_logged: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            schema_index: AtomicU32::new(u32::MAX),
        }
    }

    /// The metric's descriptor.
    pub fn descriptor(&self) -> &Descriptor {
        &self.desc
    }

    /// The address of series `index`'s first slot.
    ///
    /// `index` must be at most `desc.series` (the discard series).
    #[inline(always)]
    pub(crate) fn series(&'static self, index: usize) -> *const AtomicU64 {
        debug_assert!(index <= self.desc.series);
        let mut base = self.base.load(Ordering::Acquire);
        if base.is_null() {
            base = self.attach();
        }
        // SAFETY: the arena holds `desc.slots()` = (series + 1) * width slots
        // from `base`, and index <= series.
        unsafe { base.add(index * self.desc.width) }
    }

    #[cold]
    #[inline(never)]
    fn attach(&'static self) -> *mut AtomicU64 {
        registry::get();
        let base = self.base.load(Ordering::Acquire);
        if base.is_null() { registry::attach_unregistered(self) } else { base }
    }

    /// The first slot, without laying anything out: `None` before the
    /// registry is laid out. Safe to call from a fork handler.
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

    /// The string table of the bounded label at `position`.
    pub(crate) fn interner(&self, position: usize) -> &Interner {
        if let Some(interners) = self.interners.get() {
            return &interners[position];
        }
        // Lay out first: in multiprocess mode new values go to the shard's
        // string log, which needs this metric's schema index.
        registry::get();
        // Initialised under the gate, so that fork() never catches the
        // OnceLock half-initialised (a child would wait on it forever).
        let interners = crate::gate::locked(|| {
            self.interners.get_or_init(|| {
                let domains = self.desc.label_domains.iter();
                domains
                    .enumerate()
                    .map(|(position, d)| match d {
                        LabelDomain::Bounded { capacity } => Interner::new(*capacity, self.string_sink(position)),
                        LabelDomain::Values(_) => Interner::new(0, None),
                    })
                    .collect()
            })
        });
        &interners[position]
    }

    /// Records that the metric is entry `index` of this process's shard.
    pub(crate) fn set_schema_index(&self, index: u32) {
        self.schema_index.store(index, Ordering::Relaxed);
    }

    /// Where a bounded label's new values are written so other processes
    /// can read them: the shard's string log, in multiprocess mode.
    fn string_sink(&self, position: usize) -> Option<&'static crate::interner::StringSink> {
        let shard = crate::shard::own()?;
        let metric = self.schema_index.load(Ordering::Relaxed);
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

    /// The string table of the label at `position`, if one was ever used.
    pub(crate) fn interner_if_used(&self, position: usize) -> Option<&Interner> {
        self.interners.get().map(|i| &i[position])
    }

    #[cold]
    pub(crate) fn refuse_label_value(&self, position: usize, value: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
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
        if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            crate::notice::warn(format!(
                "histogram `{}`: NaN observation dropped (counted in promshard_observations_dropped_total)",
                self.desc.name
            ));
        }
    }

    /// Observations dropped because they were NaN.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Recordings dropped because of a refused label value.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Replaces an info metric's label pairs in its slots (in the shard,
    /// in multiprocess mode, where every reader finds them).
    pub(crate) fn set_info(&'static self, pairs: InfoPairs) {
        let payload = crate::instruments::info::encode_pairs(&pairs);
        self.series(0); // lays the registry out and attaches the slots
        let written = crate::gate::locked(|| {
            let Some(slots) = self.info_slots() else { return false };
            crate::instruments::info::read_pairs(slots).as_deref() == Some(&pairs[..])
                || crate::instruments::info::write_payload(slots, &payload)
        });
        if !written {
            self.refused.fetch_add(1, Ordering::Relaxed);
            crate::notice::warn(format!(
                "info `{}`: label pairs of {} bytes refused (at most {} bytes); the previous ones stay",
                self.desc.name,
                payload.len(),
                crate::descriptor::INFO_PAYLOAD_MAX
            ));
        }
    }

    /// An info metric's current label pairs.
    pub(crate) fn info_pairs(&self) -> Option<Vec<(String, String)>> {
        crate::instruments::info::read_pairs(self.info_slots()?)
    }

    fn info_slots(&self) -> Option<&[AtomicU64]> {
        let base = self.slot_if_attached()?;
        // SAFETY: an info metric's first series is `width` slots in the
        // arena, which lives for the rest of the process.
        Some(unsafe { core::slice::from_raw_parts(base, self.desc.width) })
    }
}
