//! An exemplar's slots (see `SHARD_FORMAT.md`): a sequence word, the
//! value, the timestamp, the payload length, the payload. Written by any
//! thread of the process that owns them, read by any process: the
//! sequence word makes a reader's copy whole (see `seqlock`), and a
//! writer that finds another one busy on the same slots skips its
//! exemplar rather than wait or interleave with it.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::exemplar::{self, Exemplar, PAYLOAD_MAX, WIDTH};
use crate::seqlock;

/// Tries of a reader whose copy a writer disturbed. Writes are short, so
/// a few suffice; a writer that died mid-write (in another process)
/// leaves the slots odd for good, and they read as empty.
const READ_TRIES: usize = 8;

/// Writes an exemplar whose labels passed [`exemplar::check`] (giving
/// `len`, the payload's length); false when another writer held the
/// slots.
#[inline]
pub(crate) fn write(slots: &[AtomicU64], labels: &[(&str, &str)], len: usize, value: f64, nanos: u64) -> bool {
    debug_assert!(slots.len() >= WIDTH && len <= PAYLOAD_MAX);
    let Some(odd) = seqlock::try_begin_write(&slots[0]) else { return false };
    slots[1].store(value.to_bits(), Ordering::Relaxed);
    slots[2].store(nanos, Ordering::Relaxed);
    slots[3].store(len as u64, Ordering::Relaxed);
    let payload = &slots[4..WIDTH];
    exemplar::pack(labels, |i, word| payload[i].store(word, Ordering::Relaxed));
    seqlock::end_write(&slots[0], odd);
    true
}

/// The exemplar in `slots`: `None` when never written, when no whole copy
/// could be had, or when what was copied breaks a rule (a corrupt file).
pub(crate) fn read(slots: &[AtomicU64]) -> Option<Exemplar> {
    if slots.len() < WIDTH {
        return None;
    }
    let (value, nanos, payload) = seqlock::read(&slots[0], READ_TRIES, || {
        let value = f64::from_bits(slots[1].load(Ordering::Relaxed));
        let nanos = slots[2].load(Ordering::Relaxed);
        let len = slots[3].load(Ordering::Relaxed);
        let mut payload = [0u8; PAYLOAD_MAX];
        for (chunk, slot) in payload.chunks_mut(8).zip(&slots[4..WIDTH]) {
            chunk.copy_from_slice(&slot.load(Ordering::Relaxed).to_le_bytes());
        }
        (value, nanos, (len as usize <= PAYLOAD_MAX).then(|| payload[..len as usize].to_vec()))
    })?;
    let labels = exemplar::decode_labels(&payload?)?;
    // NaN is never recorded; a file that says so is corrupt.
    (!value.is_nan()).then_some(Exemplar { labels, value, nanos })
}

/// The slot words of `exemplar` as a writer leaves them (sequence 2), for
/// files written whole (the archive) and merged copies.
pub(crate) fn words(exemplar: &Exemplar) -> [u64; WIDTH] {
    let pairs: Vec<(&str, &str)> = exemplar.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut payload = Vec::new();
    let mut out = [0u64; WIDTH];
    // Labels read back from slots passed the same rules.
    if exemplar::encode_labels(&pairs, &mut payload).is_err() {
        return out;
    }
    out[0] = 2;
    out[1] = exemplar.value.to_bits();
    out[2] = exemplar.nanos;
    out[3] = payload.len() as u64;
    for (word, chunk) in out[4..].iter_mut().zip(payload.chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Vec<AtomicU64> {
        (0..WIDTH).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn round_trip_and_busy_writers_skip() {
        let s = slots();
        assert_eq!(read(&s), None, "never written");
        let labels = [("trace_id", "0af7651916cd43dd8448eb211c80319c")];
        let len = exemplar::check(&labels).unwrap();
        assert!(write(&s, &labels, len, 0.25, 1_700_000_000_123_456_789));
        let got = read(&s).unwrap();
        assert_eq!((got.value, got.nanos), (0.25, 1_700_000_000_123_456_789));
        assert_eq!(got.labels[0].1, "0af7651916cd43dd8448eb211c80319c");
        // The words of a read exemplar give it back.
        let copy: Vec<AtomicU64> = words(&got).into_iter().map(AtomicU64::new).collect();
        assert_eq!(read(&copy), Some(got.clone()));
        // A writer in the middle of its write: others skip, readers wait.
        let odd = seqlock::try_begin_write(&s[0]).unwrap();
        assert!(!write(&s, &labels, len, 9.0, 1), "a second writer skips");
        assert_eq!(read(&s), None, "no whole copy while written");
        seqlock::end_write(&s[0], odd);
        assert_eq!(read(&s), Some(got));
    }

    #[test]
    fn corrupt_slots_read_as_nothing() {
        let s = slots();
        let len = exemplar::check(&[("a", "b")]).unwrap();
        assert!(write(&s, &[("a", "b")], len, 1.0, 5));
        s[3].store(PAYLOAD_MAX as u64 + 1, Ordering::Relaxed);
        assert_eq!(read(&s), None, "length beyond the payload");
        s[3].store(3, Ordering::Relaxed);
        assert_eq!(read(&s), None, "cut inside a field");
        s[3].store(len as u64, Ordering::Relaxed);
        s[1].store(f64::NAN.to_bits(), Ordering::Relaxed);
        assert_eq!(read(&s), None, "NaN value");
    }
}
