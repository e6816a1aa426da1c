//! What an exemplar is: a small label set (a trace id, usually), a value
//! and when it was recorded, attached to a counter series or a histogram
//! bucket. This module holds the rules (OpenMetrics' limit on the label
//! set, which names are allowed) and the payload encoding the slots and
//! shard files keep; `exemplar_slots` stores it.

use std::fmt;

/// The OpenMetrics limit: the label names and values of an exemplar
/// together hold at most this many UTF-8 characters.
pub(crate) const MAX_CHARS: usize = 128;

/// Bytes of payload an exemplar's slots hold. Names are legacy label
/// names (one byte a character), values up to four bytes a character, and
/// each name and value is followed by one separator byte: a set within
/// [`MAX_CHARS`] needs at most `4 × 128 − pairs` bytes, under 512.
pub(crate) const PAYLOAD_MAX: usize = 512;

/// Slots per exemplar: a sequence word, the value (`f64` bits), the
/// timestamp (Unix nanoseconds), the payload length, the payload.
pub(crate) const WIDTH: usize = 4 + PAYLOAD_MAX / 8;

/// Ends each name and each value in a payload: `0xFF` never occurs in
/// UTF-8, so no escaping is needed.
const SEPARATOR: u8 = 0xFF;

/// One exemplar as read back: labels, value, Unix time in nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Exemplar {
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
    pub(crate) nanos: u64,
}

impl Exemplar {
    /// Whether `self` was recorded after `other` (ties keep `other`).
    pub(crate) fn newer_than(&self, other: &Exemplar) -> bool {
        self.nanos > other.nanos
    }
}

/// Why an exemplar's label set was refused (the value was counted all
/// the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExemplarError {
    /// The names and values hold more than 128 characters together.
    TooLong,
    /// A label name is not `[a-zA-Z_][a-zA-Z0-9_]*`, starts with `__`, or
    /// is repeated.
    InvalidName,
    /// The metric was declared without exemplar storage
    /// ([`Opts::exemplars`](crate::Opts::exemplars)).
    NotEnabled,
    /// The value is NaN (a counter's increment or an observation that is
    /// not counted), so there is nothing to attach the exemplar to.
    InvalidValue,
}

impl fmt::Display for ExemplarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExemplarError::TooLong => "exemplar labels longer than 128 characters",
            ExemplarError::InvalidName => "exemplar label name invalid or repeated",
            ExemplarError::NotEnabled => "metric declared without exemplars",
            ExemplarError::InvalidValue => "exemplar value is not a number",
        })
    }
}

/// Checks a label set against the rules: the length of its payload
/// (each name and value followed by a separator byte) when it passes.
pub(crate) fn check(labels: &[(&str, &str)]) -> Result<usize, ExemplarError> {
    let (mut chars, mut bytes) = (0usize, 0usize);
    for (i, &(name, value)) in labels.iter().enumerate() {
        if !valid_name(name) || labels[..i].iter().any(|(n, _)| *n == name) {
            return Err(ExemplarError::InvalidName);
        }
        // Names are ASCII: their length is their character count.
        chars += name.len() + value.chars().count();
        if chars > MAX_CHARS {
            return Err(ExemplarError::TooLong);
        }
        bytes += name.len() + value.len() + 2;
    }
    // Within the limit, the payload fits (see PAYLOAD_MAX).
    debug_assert!(bytes <= PAYLOAD_MAX);
    Ok(bytes)
}

/// Calls `store(i, word)` with each 8-byte word of a checked label set's
/// payload, in order, the last padded with zeros: recording an exemplar
/// copies its labels straight into the slots, through no buffer.
#[inline]
pub(crate) fn pack(labels: &[(&str, &str)], mut store: impl FnMut(usize, u64)) {
    let (mut word, mut filled, mut index) = (0u64, 0usize, 0usize);
    let mut push = |byte: u8| {
        word |= u64::from(byte) << (8 * filled);
        filled += 1;
        if filled == 8 {
            store(index, word);
            (word, filled, index) = (0, 0, index + 1);
        }
    };
    for &(name, value) in labels {
        for field in [name, value] {
            field.bytes().for_each(&mut push);
            push(SEPARATOR);
        }
    }
    if filled > 0 {
        store(index, word);
    }
}

/// A checked label set's payload, as bytes.
pub(crate) fn encode_labels(labels: &[(&str, &str)], out: &mut Vec<u8>) -> Result<(), ExemplarError> {
    out.clear();
    let len = check(labels)?;
    pack(labels, |_, word| out.extend_from_slice(&word.to_le_bytes()));
    out.truncate(len);
    Ok(())
}

/// An exemplar label name: a legacy label name (what every scraper
/// reads, OpenMetrics 1.0's rule) that does not start with `__`.
fn valid_name(name: &str) -> bool {
    crate::descriptor::is_legacy_label_name(name) && !name.starts_with("__")
}

/// Decodes [`encode_labels`]' output, checking every rule again: the
/// payload may come from a corrupt or hostile file. `None` when malformed.
pub(crate) fn decode_labels(payload: &[u8]) -> Option<Vec<(String, String)>> {
    if payload.is_empty() {
        return Some(Vec::new());
    }
    // Every field ends with a separator, so the last byte is one.
    let (&last, body) = payload.split_last()?;
    if last != SEPARATOR {
        return None;
    }
    let fields: Vec<&[u8]> = body.split(|b| *b == SEPARATOR).collect();
    if fields.len() % 2 != 0 {
        return None;
    }
    let mut labels = Vec::with_capacity(fields.len() / 2);
    let mut chars = 0usize;
    for pair in fields.chunks(2) {
        let name = core::str::from_utf8(pair[0]).ok()?;
        let value = core::str::from_utf8(pair[1]).ok()?;
        if !valid_name(name) || labels.iter().any(|(n, _): &(String, String)| n == name) {
            return None;
        }
        chars += name.len() + value.chars().count();
        if chars > MAX_CHARS {
            return None;
        }
        labels.push((name.to_owned(), value.to_owned()));
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_the_limit_counts_characters() {
        let mut out = Vec::new();
        encode_labels(&[("trace_id", "abc"), ("span", "é日")], &mut out).unwrap();
        let back = decode_labels(&out).unwrap();
        assert_eq!(back, vec![("trace_id".into(), "abc".into()), ("span".into(), "é日".into())]);
        encode_labels(&[], &mut out).unwrap();
        assert_eq!(decode_labels(&out), Some(vec![]));
        // 1 + 127 four-byte characters: 128 characters, 509 bytes.
        let wide = "😀".repeat(127);
        encode_labels(&[("t", &wide)], &mut out).unwrap();
        assert!(out.len() <= PAYLOAD_MAX);
        assert_eq!(decode_labels(&out).unwrap()[0].1, wide);
        let wider = "😀".repeat(128);
        assert_eq!(encode_labels(&[("t", &wider)], &mut out), Err(ExemplarError::TooLong));
        // Many short pairs: 30 of a two-letter name and `é`, 90 characters.
        let names: Vec<String> = (0..30).map(|i| format!("{}{}", ["a", "b", "c"][i % 3], i / 3)).collect();
        let short: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "é")).collect();
        encode_labels(&short, &mut out).unwrap();
        assert_eq!(decode_labels(&out).unwrap().len(), 30);
        for bad in [("", "v"), ("a-b", "v"), ("__x", "v"), ("é", "v")] {
            assert_eq!(encode_labels(&[bad], &mut out), Err(ExemplarError::InvalidName), "{bad:?}");
        }
        assert_eq!(encode_labels(&[("a", "1"), ("a", "2")], &mut out), Err(ExemplarError::InvalidName));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        for bad in
            [&b"a"[..], b"a\xff", b"a\xffb", b"\xff\xff", b"a\xff\xc3\xff", b"__a\xffb\xff", b"a\xff1\xffa\xff2\xff"]
        {
            assert_eq!(decode_labels(bad), None, "{bad:?}");
        }
        let long = [b"t\xff".as_slice(), "x".repeat(128).as_bytes(), b"\xff"].concat();
        assert_eq!(decode_labels(&long), None, "over the limit");
    }
}
