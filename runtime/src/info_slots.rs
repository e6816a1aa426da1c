//! The slots of an info metric hold its current label pairs: a sequence
//! word, the payload's length, the payload (see `SHARD_FORMAT.md`). The
//! same layout serves memory and shard storage, so both keep the same
//! pairs under the same limit.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::seqlock;

use crate::descriptor::{INFO_PAYLOAD_MAX, INFO_WIDTH};

/// Encodes label pairs: a `u32` count, then each name and value as a `u32`
/// length and UTF-8 bytes.
pub(crate) fn encode_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// Decodes [`encode_pairs`]' output; `None` when malformed.
pub(crate) fn decode_pairs(payload: &[u8]) -> Option<Vec<(String, String)>> {
    let mut at = 0usize;
    let mut next = |n: usize| {
        let slice = payload.get(at..at.checked_add(n)?)?;
        at += n;
        Some(slice)
    };
    let count = u32::from_le_bytes(next(4)?.try_into().ok()?) as usize;
    let mut pairs = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let mut string = || {
            let len = u32::from_le_bytes(next(4)?.try_into().ok()?) as usize;
            String::from_utf8(next(len)?.to_vec()).ok()
        };
        let k = string()?;
        let v = string()?;
        pairs.push((k, v));
    }
    Some(pairs)
}

/// Writes an encoded payload into an info metric's slots, as a seqlock:
/// the sequence word is odd while the payload changes, so a reader in any
/// process that sees the same even sequence before and after its copy has
/// a whole payload. Writers must be serialised by the caller (the gate).
/// False when the payload is too large.
pub(crate) fn write_payload(slots: &[AtomicU64], payload: &[u8]) -> bool {
    if payload.len() > INFO_PAYLOAD_MAX || slots.len() < INFO_WIDTH {
        return false;
    }
    let odd = seqlock::begin_write(&slots[0]);
    slots[1].store(payload.len() as u64, Ordering::Relaxed);
    for (slot, chunk) in slots[2..].iter().zip(payload.chunks(8)) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        slot.store(u64::from_le_bytes(word), Ordering::Relaxed);
    }
    seqlock::end_write(&slots[0], odd);
    true
}

/// Reads the label pairs from an info metric's slots; `None` before the
/// first write, or when no consistent copy could be had (a writer busy
/// changing them all along).
pub(crate) fn read_pairs(slots: &[AtomicU64]) -> Option<Vec<(String, String)>> {
    if slots.len() < INFO_WIDTH {
        return None;
    }
    let payload = seqlock::read(&slots[0], 64, || {
        let len = (slots[1].load(Ordering::Relaxed) as usize).min(INFO_PAYLOAD_MAX);
        let mut payload = Vec::with_capacity(len.next_multiple_of(8));
        for slot in &slots[2..2 + len.div_ceil(8)] {
            payload.extend_from_slice(&slot.load(Ordering::Relaxed).to_le_bytes());
        }
        payload.truncate(len);
        payload
    })?;
    decode_pairs(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_through_slots() {
        let slots: Vec<AtomicU64> = (0..INFO_WIDTH).map(|_| AtomicU64::new(0)).collect();
        assert_eq!(read_pairs(&slots), None, "never set");
        let pairs = vec![("version".to_owned(), "1.2".to_owned()), ("é".to_owned(), "日本".to_owned())];
        assert!(write_payload(&slots, &encode_pairs(&pairs)));
        assert_eq!(read_pairs(&slots), Some(pairs));
        let big = vec![("k".to_owned(), "x".repeat(INFO_PAYLOAD_MAX))];
        assert!(!write_payload(&slots, &encode_pairs(&big)), "too large");
        for i in 0..100 {
            let pairs = vec![("n".to_owned(), i.to_string())];
            assert!(write_payload(&slots, &encode_pairs(&pairs)));
            assert_eq!(read_pairs(&slots), Some(pairs), "no budget on how often it changes");
        }
    }
}
