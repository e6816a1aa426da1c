//! Escaping and number formatting shared by both formats.

use super::format::Format;

/// Whether a histogram's (or summary's) `_count` and `_sum` are written:
/// always in the Prometheus text format; in OpenMetrics only when the sum
/// is not negative (and not NaN), since OpenMetrics allows a sum only for
/// observations that cannot make it negative, requires `_sum` wherever
/// `_count` is, and strict parsers refuse the whole exposition otherwise.
/// The buckets (whose `+Inf` is the count) are always written.
pub(crate) fn sum_shown(format: Format, sum: f64) -> bool {
    format == Format::Prometheus || sum >= 0.0
}

/// Writes a label value between double quotes, escaping `\`, `"` and
/// newline (the same rule in both formats).
pub(crate) fn write_label_value(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    escape(out, value, true);
    out.push(b'"');
}

/// Writes `name="value"`.
pub(crate) fn write_label(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    write_label_value(out, value);
}

/// Writes HELP text: OpenMetrics escapes `"` as well, 0.0.4 does not.
pub(crate) fn write_help(out: &mut Vec<u8>, help: &str, format: Format) {
    escape(out, help, format == Format::OpenMetrics);
}

fn escape(out: &mut Vec<u8>, s: &str, quotes: bool) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let replacement: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'"' if quotes => b"\\\"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        out.extend_from_slice(replacement);
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

pub(crate) fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes a sample value: `+Inf`, `-Inf`, `NaN`, integers without a
/// fraction, anything else in the shortest form that reads back exactly.
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v == v.trunc() && v.abs() < 1e15 {
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    }
}

/// A histogram bound as an `le` value: always a float (`1.0`, not `1`),
/// `+Inf` for the last bucket.
pub(crate) fn le_value(bound: f64) -> String {
    if bound.is_infinite() && bound > 0.0 { "+Inf".to_owned() } else { ryu::Buffer::new().format(bound).to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escaping() {
        assert_eq!(s(|o| write_label_value(o, "a\"b\\c\nd é")), r#""a\"b\\c\nd é""#);
        assert_eq!(s(|o| write_help(o, "say \"hi\"\\\n", Format::Prometheus)), "say \"hi\"\\\\\\n");
        assert_eq!(s(|o| write_help(o, "say \"hi\"", Format::OpenMetrics)), "say \\\"hi\\\"");
    }

    #[test]
    fn numbers() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (3.0, "3"),
            (-2.0, "-2"),
            (0.25, "0.25"),
            (1e20, "1e20"),
            (1e-7, "1e-7"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(s(|o| write_f64(o, v)), want);
            if v.is_finite() {
                assert_eq!(want.parse::<f64>().unwrap(), v);
            }
        }
        assert_eq!(le_value(1.0), "1.0");
        assert_eq!(le_value(0.005), "0.005");
        assert_eq!(le_value(f64::INFINITY), "+Inf");
    }
}
