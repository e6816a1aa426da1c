//! The one writer of sample lines: `name{labels} value`, for every
//! encoder (declared metrics, merged shards, collectors).

use super::names::{Escaping, is_quoted};
use super::text::{write_f64, write_label, write_u64};
use crate::exemplar::Exemplar;

/// A sample value as it is best written: counts as integers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Value {
    Int(u64),
    Float(f64),
}

impl Value {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Float(v) => v,
        }
    }

    /// A counter's value from its slots: the whole count, and the bits of
    /// the fraction `inc_by(f64)` added (0 when none was, the usual case,
    /// written as an integer).
    #[inline]
    pub(crate) fn of_counter(count: u64, fraction_bits: u64) -> Value {
        match fraction_bits {
            0 => Value::Int(count),
            bits => Value::Float(count as f64 + f64::from_bits(bits)),
        }
    }

    /// A float that is a whole, non-negative number fits `Int` exactly.
    pub(crate) fn of_f64(v: f64) -> Value {
        if v >= 0.0 && v == v.trunc() && v < u64::MAX as f64 { Value::Int(v as u64) } else { Value::Float(v) }
    }
}

/// One part of a sample's label set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Labels<'a> {
    /// Label text already escaped: `a="x",b="y"` (possibly empty).
    Text(&'a str),
    /// Name and value pairs, escaped as they are written (the names by
    /// the scheme passed to [`write`]).
    Pairs(&'a [(&'a str, &'a str)]),
}

impl Labels<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Labels::Text(t) => t.is_empty(),
            Labels::Pairs(p) => p.is_empty(),
        }
    }

    fn write(&self, out: &mut Vec<u8>, mut first: bool, escaping: Escaping) -> bool {
        match self {
            Labels::Text(t) if !t.is_empty() => {
                if !first {
                    out.push(b',');
                }
                out.extend_from_slice(t.as_bytes());
                first = false;
            }
            Labels::Text(_) => {}
            Labels::Pairs(pairs) => {
                for (k, v) in *pairs {
                    if !first {
                        out.push(b',');
                    }
                    write_label(out, k, v, escaping);
                    first = false;
                }
            }
        }
        first
    }
}

/// Writes one sample line; `labels` parts are joined in order. `name` is
/// written as `names` wrote it: a quoted name goes inside the braces, as
/// the first item (`{"a.b",le="1.0"} 3`).
pub(crate) fn write(out: &mut Vec<u8>, name: &str, labels: &[Labels<'_>], value: Value, escaping: Escaping) {
    write_with(out, name, labels, value, escaping, None)
}

/// As [`write`], followed by `exemplar` in OpenMetrics' syntax when given
/// (` # {trace_id="…"} value timestamp`): for OpenMetrics text only, on a
/// counter's `_total` or a histogram's `_bucket` sample.
pub(crate) fn write_with(
    out: &mut Vec<u8>,
    name: &str,
    labels: &[Labels<'_>],
    value: Value,
    escaping: Escaping,
    exemplar: Option<&Exemplar>,
) {
    let quoted = is_quoted(name);
    if quoted {
        out.push(b'{');
    }
    out.extend_from_slice(name.as_bytes());
    if labels.iter().any(|l| !l.is_empty()) {
        if quoted {
            out.push(b',');
        } else {
            out.push(b'{');
        }
        let mut first = true;
        for part in labels {
            first = part.write(out, first, escaping);
        }
        out.push(b'}');
    } else if quoted {
        out.push(b'}');
    }
    out.push(b' ');
    match value {
        Value::Int(v) => write_u64(out, v),
        Value::Float(v) => write_f64(out, v),
    }
    if let Some(exemplar) = exemplar {
        write_exemplar(out, exemplar, escaping);
    }
    out.push(b'\n');
}

/// ` # {labels} value timestamp`: out of line, so that the sample writer
/// every other line goes through stays small.
#[cold]
#[inline(never)]
fn write_exemplar(out: &mut Vec<u8>, exemplar: &Exemplar, escaping: Escaping) {
    out.extend_from_slice(b" # {");
    for (i, (k, v)) in exemplar.labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Exemplar label names are legacy names: every scheme writes
        // them as they are.
        write_label(out, k, v, escaping);
    }
    out.extend_from_slice(b"} ");
    write_f64(out, exemplar.value);
    // The timestamp exactly, from its nanoseconds.
    out.push(b' ');
    write_u64(out, exemplar.nanos / 1_000_000_000);
    let fraction = exemplar.nanos % 1_000_000_000;
    if fraction != 0 {
        let digits = format!("{fraction:09}");
        out.push(b'.');
        out.extend_from_slice(digits.trim_end_matches('0').as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_parts_and_escapes_pairs() {
        let mut out = Vec::new();
        let u = Escaping::Underscores;
        write(&mut out, "a", &[], Value::Int(1), u);
        write(&mut out, "b", &[Labels::Text(""), Labels::Pairs(&[])], Value::Float(0.5), u);
        write(&mut out, "c", &[Labels::Text("x=\"1\""), Labels::Pairs(&[("y", "q\"")])], Value::Int(2), u);
        write(&mut out, "d", &[Labels::Pairs(&[("le", "+Inf")]), Labels::Text("")], Value::Int(3), u);
        assert_eq!(String::from_utf8(out).unwrap(), "a 1\nb 0.5\nc{x=\"1\",y=\"q\\\"\"} 2\nd{le=\"+Inf\"} 3\n");
        let mut out = Vec::new();
        let pairs = [("url.scheme", "https"), ("le", "0.1")];
        write(&mut out, "\"a.b\"", &[], Value::Int(1), Escaping::AllowUtf8);
        write(&mut out, "\"a.b\"", &[Labels::Pairs(&pairs)], Value::Int(2), Escaping::AllowUtf8);
        write(&mut out, "a_b", &[Labels::Pairs(&pairs)], Value::Int(3), Escaping::Underscores);
        let want =
            "{\"a.b\"} 1\n{\"a.b\",\"url.scheme\"=\"https\",le=\"0.1\"} 2\na_b{url_scheme=\"https\",le=\"0.1\"} 3\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
        assert!(matches!(Value::of_f64(3.0), Value::Int(3)));
        let mut out = Vec::new();
        let labels = vec![("trace_id".to_owned(), "a\"b".to_owned()), ("s".to_owned(), "é".to_owned())];
        for (nanos, stamp) in [(1_700_000_000_120_000_000, "1700000000.12"), (5_000_000_000, "5"), (7, "0.000000007")] {
            let exemplar = Exemplar { labels: labels.clone(), value: 0.5, nanos };
            write_with(&mut out, "c_total", &[], Value::Int(2), u, Some(&exemplar));
            let want = format!("c_total 2 # {{trace_id=\"a\\\"b\",s=\"é\"}} 0.5 {stamp}\n");
            assert_eq!(String::from_utf8(core::mem::take(&mut out)).unwrap(), want);
        }
        let empty = Exemplar { labels: vec![], value: 1.0, nanos: 1_000_000_000 };
        write_with(&mut out, "c_total", &[], Value::Int(1), u, Some(&empty));
        assert_eq!(String::from_utf8(out).unwrap(), "c_total 1 # {} 1 1\n");
        assert!(matches!(Value::of_f64(0.25), Value::Float(_)));
    }
}
