//! Native (sparse exponential) histogram buckets: the bucket of a value
//! at a schema, the fixed slots a series records into, and the counts
//! read back from them, merged and reduced for the exposition.
//!
//! A bucket of schema `s` and index `i` holds the values `v` with
//! `2^((i-1)/2^s) < |v| <= 2^(i/2^s)`; values no larger than
//! [`ZERO_THRESHOLD`] go to the zero bucket. Bucket `i` of schema `s` lies
//! inside bucket `(i + 2^d - 1) >> d` of schema `s - d`, so counts at a
//! schema convert exactly to any lower one: that is how a series that
//! outgrew its slots, and shards of different processes, merge.
//!
//! # Slots of one series
//!
//! After the classic slots (the histogram's sum, and with classic buckets
//! their counts; a native-only histogram leaves its one classic bucket,
//! `+Inf`, at zero and counts its observations in the native slots
//! only), [`NativeBuckets::width`] slots:
//!
//! - the zero bucket's count;
//! - the full mark: 1 once an observation found no room in the table;
//!   observations then go to the schema -4 slots at once;
//! - a table of `max_buckets` entries, each a key and a count: the key
//!   names a bucket at the declared schema (0 while the entry is free,
//!   set once by compare-and-swap, never changed after), so an
//!   observation is a load and an add once its bucket has an entry;
//! - when the table is full, 73 + 73 counts of the whole range of
//!   magnitudes at schema -4 (positive values, then negative ones),
//!   indices -7 to 65 (`+Inf` is the bucket past `f64::MAX`'s, as in
//!   client_golang). Nothing falls outside: no count is ever lost or
//!   clamped into a bucket that does not hold its value.
//!
//! A series with counts in the schema -4 slots is exposed at schema -4
//! (the table's counts converted); otherwise at the declared schema,
//! lowered one step at a time while more than `max_buckets` buckets are
//! populated. Both happen when the exposition is read, from counts that
//! never move once recorded, so a merge of processes is an exact sum.

mod bounds;

use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::BTreeMap;

use bounds::BOUNDS;

/// The lowest schema: buckets grow by a factor of `2^16`.
pub(crate) const MIN_SCHEMA: i8 = -4;
/// The highest schema: buckets grow by a factor of `2^(1/256)`.
pub(crate) const MAX_SCHEMA: i8 = 8;
/// The largest `max_buckets` a native histogram may ask for.
pub(crate) const MAX_BUCKETS_LIMIT: u32 = 4096;
/// Observations whose magnitude is at most this (`2^-128`, client_golang's
/// default) count in the zero bucket; this includes every subnormal value.
pub(crate) const ZERO_THRESHOLD: f64 = f64::from_bits((1023 - 128) << 52);

/// The schema of the slots that catch what the table cannot hold.
const COARSE_SCHEMA: i8 = MIN_SCHEMA;
/// The indices of schema -4 above the zero threshold, `+Inf` included.
const COARSE_FIRST: i32 = -7;
const COARSE_LEN: usize = 73;
/// Marks a table key as taken; the low 32 bits hold the index, bit 32
/// the sign.
const KEY_TAKEN: u64 = 1 << 63;
/// The slot marked (1) once the table was found full; readers ignore it.
const FULL: usize = 1;
/// The table's first slot, after the zero count and the full mark.
const TABLE: usize = 2;
const KEY_NEGATIVE: u64 = 1 << 32;

/// The native buckets of a histogram: the schema it records at and how
/// many buckets a series holds at that schema.
///
/// Built by [`Opts::native`](crate::Opts::native) or `#[metric(native(…))]`.
///
/// ```
/// use promshard::{Histogram, Opts};
///
/// static SIZE: Histogram = Histogram::new(Opts::new("reply_bytes", "Reply sizes.").native(3, 160));
/// let native = SIZE.core().descriptor().native.unwrap();
/// assert_eq!((native.schema(), native.max_buckets()), (3, 160));
/// assert!((native.factor() - 1.0905).abs() < 1e-4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NativeBuckets {
    schema: i8,
    max_buckets: u32,
}

impl NativeBuckets {
    /// The schema of `#[metric(native)]`: 3, buckets growing by about 9%
    /// (client_golang's usual bucket factor 1.1 gives the same).
    ///
    /// ```
    /// assert_eq!(promshard::NativeBuckets::DEFAULT_SCHEMA, 3);
    /// ```
    pub const DEFAULT_SCHEMA: i8 = 3;

    /// The `max_buckets` of `#[metric(native)]`: 160, as is usual with
    /// client_golang.
    ///
    /// ```
    /// assert_eq!(promshard::NativeBuckets::DEFAULT_MAX_BUCKETS, 160);
    /// ```
    pub const DEFAULT_MAX_BUCKETS: u32 = 160;

    /// Observations whose magnitude is at most this, `2^-128` (as
    /// client_golang's default), count in the zero bucket: zeros and every
    /// subnormal number.
    ///
    /// ```
    /// assert_eq!(promshard::NativeBuckets::ZERO_THRESHOLD, 2f64.powi(-128));
    /// ```
    pub const ZERO_THRESHOLD: f64 = ZERO_THRESHOLD;

    /// Native buckets of `schema` (-4 to 8; each bucket's upper bound is
    /// `2^(2^-schema)` times its lower one) holding up to `max_buckets`
    /// buckets per series (1 to 4096).
    ///
    /// # Panics
    ///
    /// At compile time in a `const`, when either is out of range.
    ///
    /// ```
    /// let native = promshard::NativeBuckets::new(0, 20);
    /// assert_eq!(native.factor(), 2.0);
    /// ```
    pub const fn new(schema: i8, max_buckets: u32) -> NativeBuckets {
        assert!(schema >= MIN_SCHEMA && schema <= MAX_SCHEMA, "native histogram schema must be from -4 to 8");
        assert!(
            max_buckets >= 1 && max_buckets <= MAX_BUCKETS_LIMIT,
            "native histogram max_buckets must be from 1 to 4096"
        );
        NativeBuckets { schema, max_buckets }
    }

    /// The schema observations are recorded at.
    ///
    /// ```
    /// assert_eq!(promshard::NativeBuckets::new(-2, 8).schema(), -2);
    /// ```
    pub const fn schema(self) -> i8 {
        self.schema
    }

    /// Buckets a series holds at [`schema`](Self::schema), and the most
    /// populated buckets its exposition shows above schema -4.
    ///
    /// ```
    /// assert_eq!(promshard::NativeBuckets::new(3, 100).max_buckets(), 100);
    /// ```
    pub const fn max_buckets(self) -> u32 {
        self.max_buckets
    }

    /// The ratio of a bucket's upper bound to its lower one at the
    /// declared schema: `2^(2^-schema)`.
    ///
    /// ```
    /// assert_eq!(promshard::NativeBuckets::new(-1, 8).factor(), 4.0);
    /// ```
    pub fn factor(self) -> f64 {
        2f64.powf(2f64.powi(-i32::from(self.schema)))
    }

    /// Slots per series after the classic ones: the zero count, the
    /// full mark, a key and a count per table entry, the schema -4 counts
    /// of both signs.
    ///
    /// ```
    /// assert_eq!(promshard::NativeBuckets::new(3, 160).width(), 2 + 320 + 146);
    /// ```
    pub const fn width(self) -> usize {
        TABLE + 2 * self.max_buckets as usize + 2 * COARSE_LEN
    }
}

/// The bucket index of a magnitude above [`ZERO_THRESHOLD`] (a normal
/// number, or `+Inf`) at `schema`, as client_golang computes it.
#[inline(always)]
pub(crate) fn index(magnitude: f64, schema: i8) -> i32 {
    if magnitude == f64::INFINITY {
        return inf_index(schema);
    }
    let bits = magnitude.to_bits();
    // frexp for normal numbers: magnitude = frac * 2^exp, frac in [0.5, 1).
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & ((1 << 52) - 1)) | (1022 << 52));
    if schema > 0 {
        let bounds = BOUNDS[schema as usize];
        bounds.partition_point(|b| *b < frac) as i32 + ((exp - 1) << schema)
    } else {
        let key = if frac == 0.5 { exp - 1 } else { exp };
        reduce(key, 0, schema)
    }
}

/// The index of `+Inf`: one past the bucket of `f64::MAX`.
const fn inf_index(schema: i8) -> i32 {
    reduce(1024 << 8, 8, schema) + 1
}

/// The lowest index above the zero threshold at `schema`.
const fn first_index(schema: i8) -> i32 {
    reduce(-(128 << 8) + 1, 8, schema)
}

/// The index at schema `to` (no higher than `from`) of the bucket that
/// holds bucket `index` of schema `from`.
#[inline(always)]
pub(crate) const fn reduce(index: i32, from: i8, to: i8) -> i32 {
    let d = (from - to) as u32;
    (index + (1 << d) - 1) >> d
}

/// Records `v` (not NaN) into a series' native slots.
///
/// # Safety
///
/// `slots` addresses the [`NativeBuckets::width`] native slots of a
/// series of `spec`, live for the call.
#[inline(always)]
pub(crate) unsafe fn record(slots: *const AtomicU64, spec: NativeBuckets, v: f64) {
    let magnitude = v.abs();
    // SAFETY (every `add` below): within the width, as documented above.
    unsafe {
        if magnitude <= ZERO_THRESHOLD {
            (*slots).fetch_add(1, Ordering::Relaxed);
            return;
        }
        let negative = v.is_sign_negative();
        let index = index(magnitude, spec.schema);
        let key = KEY_TAKEN | if negative { KEY_NEGATIVE } else { 0 } | u64::from(index as u32);
        let capacity = spec.max_buckets;
        let table = slots.add(TABLE);
        let full = &*slots.add(FULL);
        let coarse = reduce(index, spec.schema, COARSE_SCHEMA) - COARSE_FIRST;
        let coarse = &*table.add(2 * capacity as usize + if negative { COARSE_LEN } else { 0 } + coarse as usize);
        // A full table stays full, and the series is read at schema -4
        // from then on, where a count in the table and one in the schema
        // -4 slots are the same: go there at once.
        if full.load(Ordering::Relaxed) != 0 {
            coarse.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut at = home(index, negative, capacity);
        for _ in 0..capacity {
            let entry = &*table.add(2 * at as usize);
            let mut found = entry.load(Ordering::Relaxed);
            if found == 0 {
                // Taken once, never changed: the count beside a key is
                // always that bucket's.
                found = match entry.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => key,
                    Err(actual) => actual,
                };
            }
            if found == key {
                (*table.add(2 * at as usize + 1)).fetch_add(1, Ordering::Relaxed);
                return;
            }
            at = if at + 1 == capacity { 0 } else { at + 1 };
        }
        full.store(1, Ordering::Relaxed);
        coarse.fetch_add(1, Ordering::Relaxed);
    }
}

/// The table entry a bucket tries first: neighbouring buckets take
/// neighbouring entries, so a run of up to `capacity` buckets never
/// collides.
#[inline(always)]
fn home(index: i32, negative: bool, capacity: u32) -> u32 {
    let shifted = (index + (1 << 30)) as u32;
    shifted.wrapping_add(if negative { capacity / 2 } else { 0 }) % capacity
}

/// A series' native counts: the zero bucket, and the populated buckets of
/// each sign at one schema.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NativeCounts {
    pub(crate) schema: i8,
    /// The most buckets the exposition shows above schema -4: the
    /// declared `max_buckets` (the smallest, after a merge of metrics
    /// declared differently).
    pub(crate) max_buckets: u32,
    pub(crate) zero: u64,
    pub(crate) positive: BTreeMap<i32, u64>,
    pub(crate) negative: BTreeMap<i32, u64>,
}

impl NativeCounts {
    /// Reads a series' native slots (`spec.width()` of them). Entries a
    /// writer could not have made (a hostile or corrupt file) are left
    /// out; nothing here can panic.
    pub(crate) fn read(slots: &[AtomicU64], spec: NativeBuckets) -> NativeCounts {
        let get = |i: usize| slots.get(i).map_or(0, |s| s.load(Ordering::Relaxed));
        let mut counts = NativeCounts {
            schema: spec.schema,
            max_buckets: spec.max_buckets,
            zero: get(0),
            positive: BTreeMap::new(),
            negative: BTreeMap::new(),
        };
        let capacity = spec.max_buckets as usize;
        let (first, last) = (first_index(spec.schema), inf_index(spec.schema));
        for entry in 0..capacity {
            let key = get(TABLE + 2 * entry);
            let count = get(TABLE + 1 + 2 * entry);
            let index = key as u32 as i32;
            let valid = key & !(KEY_TAKEN | KEY_NEGATIVE | u64::from(u32::MAX)) == 0 && key & KEY_TAKEN != 0;
            if count == 0 || !valid || !(first..=last).contains(&index) {
                continue;
            }
            counts.add(key & KEY_NEGATIVE != 0, index, count);
        }
        let coarse = TABLE + 2 * capacity;
        if (coarse..coarse + 2 * COARSE_LEN).any(|i| get(i) != 0) {
            counts.reduce_to(COARSE_SCHEMA);
            for i in 0..2 * COARSE_LEN {
                let count = get(coarse + i);
                if count != 0 {
                    counts.add(i >= COARSE_LEN, COARSE_FIRST + (i % COARSE_LEN) as i32, count);
                }
            }
        }
        counts
    }

    fn add(&mut self, negative: bool, index: i32, count: u64) {
        let side = if negative { &mut self.negative } else { &mut self.positive };
        let n = side.entry(index).or_default();
        *n = n.saturating_add(count);
    }

    /// Converts the counts to `schema`, if it is lower than theirs.
    pub(crate) fn reduce_to(&mut self, schema: i8) {
        if schema >= self.schema {
            return;
        }
        let from = self.schema;
        for side in [&mut self.positive, &mut self.negative] {
            let mut reduced = BTreeMap::new();
            for (index, count) in core::mem::take(side) {
                let n: &mut u64 = reduced.entry(reduce(index, from, schema)).or_default();
                *n = n.saturating_add(count);
            }
            *side = reduced;
        }
        self.schema = schema;
    }

    /// The native counts of one series of a native histogram (`series`:
    /// the series' slots, whose native ones follow its classic ones);
    /// `None` for another metric, or slots too few (a corrupt file).
    pub(crate) fn of_series(desc: &crate::descriptor::Descriptor, series: &[AtomicU64]) -> Option<NativeCounts> {
        let spec = desc.native?;
        let start = desc.classic_width();
        Some(NativeCounts::read(series.get(start..start + spec.width())?, spec))
    }

    /// The count of a native-only histogram's series (`series`: its
    /// slots), which is the total of its native counts: such a series
    /// records nothing in its one classic bucket, `+Inf`. `None` for other
    /// histograms, whose count is their classic buckets'.
    pub(crate) fn native_only_count(desc: &crate::descriptor::Descriptor, series: &[AtomicU64]) -> Option<u64> {
        if !desc.buckets.is_empty() {
            return None;
        }
        Some(NativeCounts::of_series(desc, series)?.total())
    }

    /// Adds another series' counts, at the lower of the two schemas.
    pub(crate) fn merge(&mut self, other: &NativeCounts) {
        let mut other = other.clone();
        other.reduce_to(self.schema);
        self.reduce_to(other.schema);
        self.max_buckets = self.max_buckets.min(other.max_buckets);
        self.zero = self.zero.saturating_add(other.zero);
        for (negative, side) in [(false, other.positive), (true, other.negative)] {
            for (index, count) in side {
                self.add(negative, index, count);
            }
        }
    }

    /// Every observation counted: the zero bucket's and the others'.
    pub(crate) fn total(&self) -> u64 {
        self.positive.values().chain(self.negative.values()).fold(self.zero, |n, c| n.saturating_add(*c))
    }

    /// The counts as exposed: at a schema lowered until at most
    /// `max_buckets` buckets are populated, or -4.
    pub(crate) fn limited(&self) -> NativeCounts {
        let mut out = self.clone();
        while out.positive.len() + out.negative.len() > self.max_buckets as usize && out.schema > MIN_SCHEMA {
            out.reduce_to(out.schema - 1);
        }
        out
    }

    /// Writes the counts into the native slots of a series of `spec`
    /// (the archive's): at `spec`'s schema into the table while it has
    /// room, the rest at schema -4.
    pub(crate) fn write(&self, slots: &mut [u64], spec: NativeBuckets) {
        let mut counts = self.clone();
        counts.reduce_to(spec.schema);
        slots[0] = counts.zero;
        let capacity = spec.max_buckets as usize;
        let mut used = 0;
        let coarse = TABLE + 2 * capacity;
        for (negative, side) in [(false, &counts.positive), (true, &counts.negative)] {
            for (&index, &count) in side {
                if counts.schema == spec.schema && used < capacity {
                    slots[TABLE + 2 * used] =
                        KEY_TAKEN | if negative { KEY_NEGATIVE } else { 0 } | u64::from(index as u32);
                    slots[TABLE + 1 + 2 * used] = count;
                    used += 1;
                } else {
                    let at = reduce(index, counts.schema, COARSE_SCHEMA) - COARSE_FIRST;
                    let at = coarse + if negative { COARSE_LEN } else { 0 } + at as usize;
                    slots[at] = slots[at].saturating_add(count);
                }
            }
        }
    }

    /// The buckets of one sign as protobuf spans (offset, length) and
    /// count deltas, as `io.prometheus.client.Histogram` holds them.
    pub(crate) fn spans(side: &BTreeMap<i32, u64>) -> (Vec<(i32, u32)>, Vec<i64>) {
        let mut spans: Vec<(i32, u32)> = Vec::new();
        let mut deltas = Vec::with_capacity(side.len());
        let mut previous: Option<i32> = None;
        let mut last_count = 0i64;
        for (&index, &count) in side {
            match (previous, spans.last_mut()) {
                (Some(p), Some(span)) if index == p + 1 => span.1 += 1,
                (Some(p), _) => spans.push((index - p - 1, 1)),
                (None, _) => spans.push((index, 1)),
            }
            previous = Some(index);
            // Counts above i64::MAX exist only in hostile files.
            let count = count.min(i64::MAX as u64) as i64;
            deltas.push(count.wrapping_sub(last_count));
            last_count = count;
        }
        (spans, deltas)
    }
}

#[cfg(test)]
mod tests;
