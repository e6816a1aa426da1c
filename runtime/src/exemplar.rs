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
#[inline(always)]
pub(crate) fn check(labels: &[(&str, &str)]) -> Result<usize, ExemplarError> {
    // `chars` bounds the characters so far from above by their bytes
    // (a character is at least one byte) until that bound passes the
    // limit; from then on it counts them exactly. Names are ASCII: their
    // length is their character count. The usual label set (a trace id)
    // is settled by the bound, without counting a value's characters.
    let (mut chars, mut exact, mut bytes) = (0usize, false, 0usize);
    for (i, &(name, value)) in labels.iter().enumerate() {
        if !valid_name(name) || labels[..i].iter().any(|(n, _)| *n == name) {
            return Err(ExemplarError::InvalidName);
        }
        if exact {
            chars += name.len() + char_count(value);
        } else {
            chars += name.len() + value.len();
            if chars > MAX_CHARS {
                chars = labels[..=i].iter().map(|&(n, v)| n.len() + char_count(v)).sum();
                exact = true;
            }
        }
        if chars > MAX_CHARS {
            return Err(ExemplarError::TooLong);
        }
        bytes += name.len() + value.len() + 2;
    }
    // Within the limit, the payload fits (see PAYLOAD_MAX).
    debug_assert!(bytes <= PAYLOAD_MAX);
    Ok(bytes)
}

/// The characters of `s`: its length when ASCII.
#[inline]
fn char_count(s: &str) -> usize {
    if s.is_ascii() { s.len() } else { s.chars().count() }
}

/// Calls `store(i, word)` with each 8-byte word of a checked label set's
/// payload, in order, the last padded with zeros: recording an exemplar
/// copies its labels straight into the slots, through no buffer. Each
/// field is read 8 bytes at a time and shifted into place: the same words
/// as putting each byte in its place of its word (`tests::pack_by_bytes`),
/// without a step per byte.
#[inline]
pub(crate) fn pack(labels: &[(&str, &str)], store: impl FnMut(usize, u64)) {
    let mut words = Words { word: 0, filled: 0, index: 0, store };
    for &(name, value) in labels {
        words.field(name.as_bytes());
        words.field(value.as_bytes());
    }
    if words.filled > 0 {
        (words.store)(words.index, words.word);
    }
}

/// A payload being cut into words: `word` holds its first `filled` bytes
/// (0 to 7), the rest zero; `index` words were stored already.
struct Words<F> {
    word: u64,
    filled: u32,
    index: usize,
    store: F,
}

impl<F: FnMut(usize, u64)> Words<F> {
    /// Appends one field and its separator.
    #[inline(always)]
    fn field(&mut self, field: &[u8]) {
        let mut chunks = field.chunks_exact(8);
        for chunk in &mut chunks {
            self.push(u64::from_le_bytes(chunk.try_into().expect("8 bytes")), 8);
        }
        // The last bytes (up to 7) and the separator: at most 8 bytes.
        let rest = chunks.remainder().len();
        let tail = match rest {
            0 => 0,
            // A field of 8 bytes or more: its last 8 bytes, shifted down
            // to the `rest` not pushed yet.
            _ if field.len() >= 8 => {
                let last = u64::from_le_bytes(field[field.len() - 8..].try_into().expect("8 bytes"));
                last >> (8 * (8 - rest))
            }
            _ => field.iter().rev().fold(0, |word, &byte| word << 8 | u64::from(byte)),
        };
        self.push(tail | u64::from(SEPARATOR) << (8 * rest), rest as u32 + 1);
    }

    /// Appends `n` bytes (1 to 8): the low `n` bytes of `bytes`, whose
    /// other bytes are zero.
    #[inline(always)]
    fn push(&mut self, bytes: u64, n: u32) {
        debug_assert!((1..=8).contains(&n) && (n == 8 || bytes >> (8 * n) == 0));
        self.word |= bytes << (8 * self.filled);
        let filled = self.filled + n;
        if filled >= 8 {
            (self.store)(self.index, self.word);
            self.index += 1;
            // What did not fit in the word just stored starts the next.
            self.word = bytes.checked_shr(8 * (8 - self.filled)).unwrap_or(0);
            self.filled = filled - 8;
        } else {
            self.filled = filled;
        }
    }
}

/// Now on the wall clock (`CLOCK_REALTIME`, the clock
/// [`SystemTime::now`](std::time::SystemTime::now) reads), in Unix
/// nanoseconds: 0 before 1970, `u64::MAX` after 2554. Read directly, as
/// seconds and nanoseconds, instead of through `SystemTime` and a
/// `Duration` since the epoch.
#[inline]
pub(crate) fn now_nanos() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a timespec to fill; CLOCK_REALTIME always exists.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) } != 0 || now.tv_sec < 0 {
        return 0;
    }
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
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
///
/// [`is_legacy_label_name`](crate::descriptor::is_legacy_label_name)'s
/// rule, read from a table (one load a byte, one branch a name, instead
/// of a chain of range tests a byte): every recorded exemplar is checked.
#[inline]
fn valid_name(name: &str) -> bool {
    let Some((&first, rest)) = name.as_bytes().split_first() else { return false };
    let rest_ok = rest.iter().fold(NEXT, |ok, &byte| ok & NAME_BYTES[usize::from(byte)]);
    NAME_BYTES[usize::from(first)] & FIRST != 0 && rest_ok != 0 && !name.starts_with("__")
}

/// [`NAME_BYTES`]' bit for a byte that may start a legacy label name.
const FIRST: u8 = 1;
/// [`NAME_BYTES`]' bit for a byte that may follow the first.
const NEXT: u8 = 2;

/// Per byte value: [`FIRST`] and [`NEXT`], from
/// [`legacy_byte`](crate::descriptor::legacy_byte) (at position 0 and
/// after it), so the rule is written once.
static NAME_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        let first = crate::descriptor::legacy_byte(byte as u8, 0, false);
        let next = crate::descriptor::legacy_byte(byte as u8, 1, false);
        table[byte] = if first { FIRST } else { 0 } | if next { NEXT } else { 0 };
        byte += 1;
    }
    table
};

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

    /// The packing `pack` replaced, kept as its reference: each byte put
    /// in its place of its word, one at a time.
    fn pack_by_bytes(labels: &[(&str, &str)]) -> Vec<u64> {
        let mut words = Vec::new();
        let (mut word, mut filled) = (0u64, 0usize);
        let mut push = |byte: u8| {
            word |= u64::from(byte) << (8 * filled);
            filled += 1;
            if filled == 8 {
                words.push(word);
                (word, filled) = (0, 0);
            }
        };
        for &(name, value) in labels {
            for field in [name, value] {
                field.bytes().for_each(&mut push);
                push(SEPARATOR);
            }
        }
        if filled > 0 {
            words.push(word);
        }
        words
    }

    /// splitmix64: the tests' random numbers, from a printed seed.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn packing_by_words_gives_the_words_of_packing_by_bytes() {
        let seed = std::env::var("PROMSHARD_PACK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
        });
        println!("seed {seed} (rerun with PROMSHARD_PACK_SEED={seed})");
        let mut state = seed;
        // Characters of 1 to 4 bytes, so values of every length modulo 8.
        const CHARS: [&str; 8] = ["a", "0", "_", "é", "日", "😀", "Z", "\u{7f}"];
        let (mut checked, mut lengths) = (0, [false; 8]);
        for case in 0..20_000 {
            let pairs = (next(&mut state) % 6) as usize;
            let mut owned = Vec::new();
            for p in 0..pairs {
                // Distinct valid names of 1 to 17 characters.
                let name = format!("n{p}{}", "x".repeat((next(&mut state) % 16) as usize));
                let value: String = (0..next(&mut state) % 40)
                    .map(|_| CHARS[(next(&mut state) % CHARS.len() as u64) as usize])
                    .collect();
                owned.push((name, value));
            }
            let labels: Vec<(&str, &str)> = owned.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let expected = pack_by_bytes(&labels);
            let mut got = Vec::new();
            pack(&labels, |i, word| {
                assert_eq!(i, got.len(), "words in order");
                got.push(word);
            });
            assert_eq!(got, expected, "seed {seed}, case {case}: {labels:?}");
            // What `check` says of a set within the limit: its payload's
            // length, in as many words as were packed.
            if let Ok(len) = check(&labels) {
                assert_eq!(len.div_ceil(8), got.len(), "seed {seed}, case {case}");
                lengths[len % 8] = true;
                checked += 1;
            }
        }
        assert!(checked > 1000 && lengths.iter().all(|l| *l), "coverage: {checked} sets, lengths mod 8 {lengths:?}");
        // The edges: empty, empty values, a field of exactly 8 and 16 bytes,
        // a set whose payload is a whole number of words.
        for labels in [
            &[][..],
            &[("a", "")],
            &[("a", ""), ("b", "")],
            &[("abcdefgh", "01234567")],
            &[("abcdefghijklmnop", "é日😀")],
            &[("abc", "defgh"), ("i", "jklmn")],
            &[("t", "😀😀😀😀😀😀😀😀😀")],
        ] {
            let mut got = Vec::new();
            pack(labels, |_, word| got.push(word));
            assert_eq!(got, pack_by_bytes(labels), "{labels:?}");
        }
    }

    #[test]
    fn the_name_table_is_the_legacy_rule() {
        let mut names: Vec<String> = vec!["".into(), "_".into(), "__".into(), "_a".into(), "a__".into()];
        for byte in 0..=255u8 {
            for (before, after) in [("", ""), ("a", ""), ("", "a"), ("_", ""), ("a", "b")] {
                let bytes = [before.as_bytes(), &[byte], after.as_bytes()].concat();
                if let Ok(name) = String::from_utf8(bytes) {
                    names.push(name);
                }
            }
        }
        names.extend(["é", "aé", "trace_id", "9a", "a9", "A_9z"].map(String::from));
        for name in &names {
            let rule = crate::descriptor::is_legacy_label_name(name) && !name.starts_with("__");
            assert_eq!(valid_name(name), rule, "{name:?}");
        }
    }

    #[test]
    fn the_limit_counts_characters_however_the_bytes_fall() {
        // Under 128 bytes: settled without counting.
        assert!(check(&[("t", &"x".repeat(127))]).is_ok());
        assert_eq!(check(&[("t", &"x".repeat(128))]), Err(ExemplarError::TooLong));
        // Over 128 bytes, within 128 characters: counted.
        assert!(check(&[("t", &"é".repeat(127))]).is_ok());
        assert_eq!(check(&[("t", &"é".repeat(128))]), Err(ExemplarError::TooLong));
        // The bound passes the limit at the second pair: the first is
        // counted again, exactly.
        let wide = "é".repeat(60);
        assert!(check(&[("a", &wide), ("b", &"x".repeat(66))]).is_ok(), "1 + 60 + 1 + 66 characters");
        assert_eq!(check(&[("a", &wide), ("b", &"x".repeat(67))]), Err(ExemplarError::TooLong));
        assert!(check(&[("a", &wide), ("b", &wide), ("c", "")]).is_ok());
        assert_eq!(check(&[("a", &wide), ("b", &wide), ("cdefgh", "é")]), Err(ExemplarError::TooLong));
        // The first rule broken is the one reported, as before.
        assert_eq!(check(&[("a", &"x".repeat(200)), ("-", "")]), Err(ExemplarError::TooLong));
        assert_eq!(check(&[("-", &"x".repeat(200))]), Err(ExemplarError::InvalidName));
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
