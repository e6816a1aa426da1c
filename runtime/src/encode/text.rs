//! Escaping and number formatting shared by both formats.

use super::format::Format;
use super::names::{Escaping, write_label_name};

/// Whether a histogram's (or summary's) `_count` and `_sum` are written:
/// always in the Prometheus text format (and protobuf); in OpenMetrics only when the sum
/// is not negative (and not NaN), since OpenMetrics allows a sum only for
/// observations that cannot make it negative, requires `_sum` wherever
/// `_count` is, and strict parsers refuse the whole exposition otherwise.
/// The buckets (whose `+Inf` is the count) are always written.
pub(crate) fn sum_shown(format: Format, sum: f64) -> bool {
    format != Format::OpenMetrics || sum >= 0.0
}

/// Writes a label value between double quotes, escaping `\`, `"` and
/// newline (the same rule in both formats).
pub(crate) fn write_label_value(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    escape(out, value, true);
    out.push(b'"');
}

/// Writes `name="value"`, the name quoted or escaped by `escaping`.
pub(crate) fn write_label(out: &mut Vec<u8>, name: &str, value: &str, escaping: Escaping) {
    write_label_name(out, name, escaping);
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

/// A histogram bound (or a quantile) as an `le` (`quantile`) value, in
/// OpenMetrics' canonical form: Go's `strconv.FormatFloat(v, 'g', -1, 64)`
/// (the shortest digits that read back exactly, in exponent form when the
/// decimal exponent is below -4 or at least 6, with a signed exponent of
/// at least two digits), plus `.0` when that has neither a point nor an
/// exponent: `1.0`, `0.005`, `100000.0`, `1e+06`, `2.5e-07`, `+Inf`.
///
/// For every positive bound this is exactly the text of Python's
/// `floatToGoString`, which prometheus_client writes into its `.db` files
/// and exposition, so the same bucket reads the same on both sides. Python
/// changes only positive values (its comment: "we only need to care about
/// positive values for le/quantile") and keeps `repr` for negative ones
/// (`-1000000.0` where Go writes `-1e+06`); here the sign is the only
/// difference between `v` and `-v`. `-0.0` keeps its sign.
pub(crate) fn le_value(bound: f64) -> String {
    if bound.is_nan() {
        return "NaN".to_owned();
    }
    if bound.is_infinite() {
        return if bound > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let mut out = String::with_capacity(24);
    if bound.is_sign_negative() {
        out.push('-');
    }
    // `{:e}` gives the shortest round-trip digits: `1.234567e6`, `5e-3`,
    // `0e0`.
    let sci = format!("{:e}", bound.abs());
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` always writes an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` writes a decimal exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(if exp < 0 { "e-" } else { "e+" });
        let magnitude = exp.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(&magnitude.to_string());
    } else if exp < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    } else {
        // 0 <= exp < 6: the point falls inside or right after the digits.
        let point = exp as usize + 1;
        if digits.len() > point {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        } else {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point - digits.len()));
            out.push_str(".0");
        }
    }
    out
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

    /// The OpenMetrics spec's "Canonical Numbers": its list of common
    /// `le` and `quantile` values, and powers of ten from 1e-10 to 1e+10.
    #[test]
    fn the_openmetrics_canonical_table() {
        for text in ["0.0", "0.001", "0.002", "0.01", "0.1", "0.9", "0.95", "0.99", "0.999", "1.0", "1.7", "10.0"] {
            assert_eq!(le_value(text.parse().unwrap()), text);
        }
        let powers = ["1e-10", "1e-09", "1e-05", "0.0001", "0.1", "1.0", "100000.0", "1e+06", "1e+10"];
        for text in powers {
            assert_eq!(le_value(text.parse().unwrap()), text);
        }
        for e in -10i32..=10 {
            let text = le_value(format!("1e{e}").parse().unwrap());
            let want = match e {
                -4..=-1 => format!("0.{}1", "0".repeat((-e - 1) as usize)),
                0..=5 => format!("1{}.0", "0".repeat(e as usize)),
                _ => format!("1e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()),
            };
            assert_eq!(text, want);
        }
        // The spec's histogram example.
        for (v, text) in [(1e23, "1e+23"), (1.1e23, "1.1e+23")] {
            assert_eq!(le_value(v), text);
        }
    }

    #[test]
    fn canonical_bounds() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (10.0, "10.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (100000.0, "100000.0"),
            (100000.5, "100000.5"),
            (123456.0, "123456.0"),
            (999999.0, "999999.0"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1234567.5, "1.2345675e+06"),
            (2.5e10, "2.5e+10"),
            (1e16, "1e+16"),
            (1e100, "1e+100"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-1e6, "-1e+06"),
            (-0.25, "-0.25"),
            (-3.0, "-3.0"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(le_value(v), want, "{v:e}");
            if v.is_finite() {
                let back: f64 = want.parse().unwrap();
                assert_eq!(back.to_bits(), v.to_bits(), "{want} reads back");
            }
        }
    }

    /// Python's own `floatToGoString` over thousands of positive values
    /// (powers of ten and their neighbours, every decimal exponent, round
    /// and random bit patterns): the text must be the same, byte for byte.
    #[test]
    fn le_text_is_pythons_float_to_go_string() {
        use crate::merge::python_db::tests::{python, skip_or_fail};
        let Some(python) = python() else {
            return skip_or_fail("python3 with prometheus_client not found (PROMSHARD_PYTHON)");
        };
        let mut values = vec![0.0, 1.0, 0.5, 5e-324, f64::MAX, f64::MIN_POSITIVE, f64::INFINITY];
        for e in -320..=308 {
            let p = format!("1e{e}").parse::<f64>().unwrap();
            if p == 0.0 {
                continue;
            }
            values.extend([p, f64::from_bits(p.to_bits() + 1), f64::from_bits(p.to_bits() - 1), 2.5 * p, 1.234567 * p]);
        }
        for n in [1u64, 7, 99, 100_000, 999_999, 1_000_000, 1_000_001, 123_456_789, 1 << 53, u64::MAX] {
            values.push(n as f64);
            values.push(n as f64 + 0.5);
        }
        // A xorshift walk over bit patterns of positive finite floats.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        while values.len() < 6000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x >> 1);
            if v.is_finite() {
                values.push(v);
            }
        }
        let input: String = values.iter().map(|v| format!("{}\n", v.to_bits())).collect();
        let code = "import sys, struct\nfrom prometheus_client.utils import floatToGoString\n\
                    for line in sys.stdin:\n    \
                    print(floatToGoString(struct.unpack('<d', struct.pack('<Q', int(line)))[0]))\n";
        let mut child = std::process::Command::new(&python)
            .args(["-c", code])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success());
        let theirs = String::from_utf8(output.stdout).unwrap();
        let theirs: Vec<&str> = theirs.lines().collect();
        assert_eq!(theirs.len(), values.len());
        for (v, text) in values.iter().zip(theirs) {
            assert_eq!(le_value(*v), text, "bits {:#x}", v.to_bits());
            // Python keeps `repr` for negatives; ours differs only by the sign.
            let negative = if v.is_infinite() { "-Inf".to_owned() } else { format!("-{text}") };
            assert_eq!(le_value(-v), negative, "bits {:#x}", (-v).to_bits());
        }
    }
}
