//! Float sums that do not depend on the order or the grouping of their
//! terms: a histogram's `_sum`, a counter's float total.
//!
//! The merge regroups those terms as workers come and go: a dead
//! worker's shard is folded into the archive (one value, added first at
//! the next scrape), a dead Python writer's file into the fold. Float
//! addition rounds at every step, so `1 + 1 + 2^53` is `2^53 + 2` while
//! `2^53 + 1 + 1` is `2^53`: the same counts, regrouped, could come out
//! smaller, which Prometheus takes for a counter reset. So these sums are
//! kept exactly, as Shewchuk's non-overlapping partials (what Python's
//! `math.fsum` does), rounded once when shown; and what is written into
//! the archive is rounded up, never below its terms, so that no later sum
//! is smaller than one before it.

/// Partials held without allocating; more go to the heap.
const INLINE: usize = 4;

/// At most this many partials are kept: past it (only with terms spread
/// over hundreds of binary orders of magnitude) the two smallest are
/// added, inexactly.
const MAX_PARTIALS: usize = 64;

/// An exact sum of `f64` terms.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExactSum {
    /// The partials while they fit, in increasing magnitude: the first
    /// `len` (then `heap` is `None`).
    inline: [f64; INLINE],
    len: u8,
    /// The partials once they do not fit.
    heap: Option<Vec<f64>>,
    /// The sum of the non-finite terms (infinities, NaN), which partials
    /// cannot hold; 0 when there is none (a non-finite sum is never 0).
    special: f64,
}

impl From<f64> for ExactSum {
    fn from(value: f64) -> ExactSum {
        let mut sum = ExactSum::default();
        sum.add(value);
        sum
    }
}

impl PartialEq for ExactSum {
    fn eq(&self, other: &ExactSum) -> bool {
        self.value().to_bits() == other.value().to_bits()
    }
}

impl ExactSum {
    /// Adds `x`, exactly.
    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.special += x;
            return;
        }
        if x == 0.0 {
            return;
        }
        if let Some(heap) = &mut self.heap {
            let n = heap.len();
            heap.push(0.0);
            match grow(heap, n, x) {
                Some(kept) => {
                    heap.truncate(kept);
                    if kept > MAX_PARTIALS {
                        let smallest = heap[0] + heap[1];
                        heap.remove(0);
                        heap[0] = smallest;
                    }
                }
                None => self.special += overflow(x),
            }
            return;
        }
        let n = usize::from(self.len);
        if n < INLINE {
            match grow(&mut self.inline[..=n], n, x) {
                Some(kept) => self.len = kept as u8,
                None => self.special += overflow(x),
            }
            return;
        }
        let mut buf = [0.0f64; INLINE + 1];
        buf[..n].copy_from_slice(&self.inline);
        match grow(&mut buf, n, x) {
            Some(kept) if kept <= INLINE => {
                self.inline.copy_from_slice(&buf[..INLINE]);
                self.len = kept as u8;
            }
            Some(kept) => self.heap = Some(buf[..kept].to_vec()),
            None => self.special += overflow(x),
        }
    }

    /// Adds every term of `other`, exactly.
    pub(crate) fn add_sum(&mut self, other: &ExactSum) {
        for &partial in other.partials() {
            self.add(partial);
        }
        self.special += other.special;
    }

    /// The sum, rounded to the nearest `f64` (ties to even).
    pub(crate) fn value(&self) -> f64 {
        if self.special != 0.0 {
            return self.special;
        }
        round_nearest(self.partials())
    }

    /// The sum, rounded up: the smallest `f64` not below it. For values
    /// written where they will be added again (the archive).
    pub(crate) fn value_up(&self) -> f64 {
        let nearest = self.value();
        if !nearest.is_finite() {
            return nearest;
        }
        let mut rest = self.clone();
        rest.add(-nearest);
        if rest.value() > 0.0 { next_up(nearest) } else { nearest }
    }

    /// The partials, in increasing magnitude.
    fn partials(&self) -> &[f64] {
        match &self.heap {
            Some(heap) => heap,
            None => &self.inline[..usize::from(self.len)],
        }
    }
}

/// What a finite sum that overflowed adding `x` is: infinite, of the
/// sign of `x`, as float addition has it. (The partials are then unused.)
fn overflow(x: f64) -> f64 {
    if x > 0.0 { f64::INFINITY } else { f64::NEG_INFINITY }
}

/// Shewchuk's grow-expansion: adds `x` to the `n` partials at the start
/// of `partials` (which has room for one more); returns how many partials
/// there are now, or `None` when the sum overflows (`partials` is then
/// spoilt, and unused from then on).
#[inline]
fn grow(partials: &mut [f64], n: usize, mut x: f64) -> Option<usize> {
    let mut kept = 0;
    for i in 0..n {
        let mut y = partials[i];
        if x.abs() < y.abs() {
            core::mem::swap(&mut x, &mut y);
        }
        // Dekker's fast two-sum (|x| >= |y|): `hi + lo` is exactly `x + y`.
        let hi = x + y;
        let lo = y - (hi - x);
        if lo != 0.0 {
            partials[kept] = lo;
            kept += 1;
        }
        x = hi;
    }
    if !x.is_finite() {
        return None;
    }
    if x != 0.0 {
        partials[kept] = x;
        kept += 1;
    }
    Some(kept)
}

/// The sum of non-overlapping partials in increasing magnitude, rounded
/// once to the nearest (Python's `math.fsum`, final step).
fn round_nearest(partials: &[f64]) -> f64 {
    let mut n = partials.len();
    if n == 0 {
        return 0.0;
    }
    n -= 1;
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        let yr = hi - x;
        lo = y - yr;
        if lo != 0.0 {
            break;
        }
    }
    // Half-way cases: the partials below decide which way to round.
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        let yr = x - hi;
        if y == yr {
            hi = x;
        }
    }
    hi
}

/// The next `f64` up from a finite `x`.
fn next_up(x: f64) -> f64 {
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let bits = x.to_bits();
    f64::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

#[cfg(test)]
mod tests {
    use super::ExactSum;

    fn sum(terms: &[f64]) -> ExactSum {
        let mut s = ExactSum::default();
        for &t in terms {
            s.add(t);
        }
        s
    }

    #[test]
    fn grouping_does_not_change_the_sum() {
        let big = 9007199254740992.0; // 2^53
        assert_eq!(sum(&[1.0, 1.0, big]).value(), big + 2.0);
        assert_eq!(sum(&[big, 1.0, 1.0]).value(), big + 2.0);
        let mut folded = ExactSum::from(sum(&[big]).value_up());
        folded.add_sum(&sum(&[1.0, 1.0]));
        assert_eq!(folded.value(), big + 2.0);
        assert_eq!(sum(&[0.1, 0.2, 0.3]).value(), 0.6);
        assert_eq!(sum(&[1e100, 1.0, -1e100, 1e-100]).value(), 1.0);
        assert_eq!(sum(&[]).value(), 0.0);
    }

    #[test]
    fn rounding_up_is_never_below_the_terms() {
        // 1 + 2^-60 rounds to 1; rounded up it is the next float.
        let s = sum(&[1.0, 2f64.powi(-60)]);
        assert_eq!(s.value(), 1.0);
        assert_eq!(s.value_up(), 1.0 + f64::EPSILON);
        assert_eq!(sum(&[1.0, 2.0]).value_up(), 3.0);
        assert_eq!(sum(&[-1.0, -(2f64.powi(-60))]).value_up(), -1.0);
        assert_eq!(sum(&[2f64.powi(-1074)]).value_up(), 2f64.powi(-1074));
    }

    #[test]
    fn non_finite_terms_are_kept() {
        assert_eq!(sum(&[1.0, f64::INFINITY]).value(), f64::INFINITY);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).value().is_nan());
        assert_eq!(sum(&[f64::MAX, f64::MAX]).value(), f64::INFINITY);
    }

    #[test]
    fn a_fold_then_more_terms_is_never_below_the_terms_added_one_by_one() {
        // Random-ish terms: folding any prefix (rounded up) and adding the
        // rest never gives less than adding them all exactly.
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((seed % 7) as i32 - 3)
        };
        for _ in 0..200 {
            let terms: Vec<f64> = (0..12).map(|_| next()).collect();
            let all = sum(&terms).value();
            for split in 0..terms.len() {
                let mut folded = ExactSum::from(sum(&terms[..split]).value_up());
                folded.add_sum(&sum(&terms[split..]));
                assert!(folded.value() >= all, "{terms:?} split at {split}");
            }
        }
    }
}
