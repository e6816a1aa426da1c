//! Metric and label names as an exposition writes them. A name of the
//! legacy character set is written as it is, for every scraper; any other
//! name is quoted for a scraper that reads UTF-8 names and escaped, by the
//! scheme it asked for, for one that does not (Prometheus' "UTF-8 metric
//! and label name escaping schemes").
//!
//! Where the schemes' prose and the reference implementations differ,
//! this follows the implementations (Go's `prometheus/common`, which
//! Prometheus and client_golang use, and Python's prometheus_client):
//!
//! - a legacy name is never changed, under any scheme (Go; Python's
//!   `dots` doubles the underscores of every name, which would rename
//!   every family for such a scraper);
//! - `dots` writes a character outside the set (other than `.`) as `__`,
//!   and `values` writes code points in lowercase hex (`U__a_2e_b`), as
//!   both implementations do (the prose says `_` and `2E`);
//! - a label name is escaped by the label rules: `:`, allowed in metric
//!   names, is escaped in label names (Python; Go keeps it, which makes
//!   a label name legacy scrapers refuse);
//! - a sample's name is its family's escaped name followed by the suffix
//!   (`_total`, `_bucket`…), so that a parser finds the family in it
//!   (Go; under `dots` Python escapes the suffix's `_` too).

use std::borrow::Cow;

use crate::descriptor::{is_legacy_label_name, is_legacy_metric_name, legacy_byte};

/// How an exposition writes metric and label names outside the legacy
/// character set (`[a-zA-Z_:][a-zA-Z0-9_:]*`, no `:` in label names), as
/// Prometheus 3 negotiates it with the `escaping` parameter of `Accept`
/// and `Content-Type`. Legacy names are written as they are under every
/// scheme.
///
/// ```
/// use promshard::Escaping;
///
/// assert_eq!(Escaping::from_param("allow-utf-8"), Some(Escaping::AllowUtf8));
/// // An older spelling some clients send.
/// assert_eq!(Escaping::from_param("allow-utf8"), Some(Escaping::AllowUtf8));
/// assert_eq!(Escaping::Dots.as_str(), "dots");
/// assert_eq!(Escaping::from_param("rot13"), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Escaping {
    /// `allow-utf-8`: names as they are, quoted where the legacy syntax
    /// cannot hold them: `{"http.server.request.duration_bucket",le="0.1"}`,
    /// `# TYPE "http.server.request.duration" histogram`, `"url.scheme"="https"`.
    AllowUtf8,
    /// `underscores`: every character outside the set becomes `_`
    /// (`http.server.request.duration` → `http_server_request_duration`).
    /// What a scraper gets that does not ask for a scheme.
    Underscores,
    /// `dots`: `.` becomes `_dot_`, `_` becomes `__`, any other character
    /// outside the set `__` (`http.server` → `http_dot_server`).
    Dots,
    /// `values`: `U__`, then `_` doubled and every other character outside
    /// the set as its code point in hex between underscores
    /// (`http.server` → `U__http_2e_server`).
    Values,
}

impl Escaping {
    /// Every scheme.
    pub const ALL: [Escaping; 4] = [Escaping::AllowUtf8, Escaping::Underscores, Escaping::Dots, Escaping::Values];

    /// The scheme's value of the `escaping` parameter.
    pub const fn as_str(self) -> &'static str {
        match self {
            Escaping::AllowUtf8 => "allow-utf-8",
            Escaping::Underscores => "underscores",
            Escaping::Dots => "dots",
            Escaping::Values => "values",
        }
    }

    /// The scheme an `escaping` parameter names, `allow-utf8` included
    /// (Prometheus' content negotiation page spelled it so for a while);
    /// `None` for any other value.
    pub fn from_param(value: &str) -> Option<Escaping> {
        match value {
            "allow-utf-8" | "allow-utf8" => Some(Escaping::AllowUtf8),
            "underscores" => Some(Escaping::Underscores),
            "dots" => Some(Escaping::Dots),
            "values" => Some(Escaping::Values),
            _ => None,
        }
    }
}

/// What a name names: label names have no `:` in the legacy set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Metric,
    Label,
}

impl Role {
    fn is_legacy(self, name: &str) -> bool {
        match self {
            Role::Metric => is_legacy_metric_name(name),
            Role::Label => is_legacy_label_name(name),
        }
    }
}

/// `name` as a scraper using `escaping` reads it, without quotes:
/// unchanged when it is a legacy name or the scraper reads UTF-8.
pub(crate) fn escaped(name: &str, role: Role, escaping: Escaping) -> Cow<'_, str> {
    if escaping == Escaping::AllowUtf8 || role.is_legacy(name) {
        return Cow::Borrowed(name);
    }
    let colon = role == Role::Metric;
    let mut out = String::with_capacity(name.len() + 8);
    if escaping == Escaping::Values {
        out.push_str("U__");
    }
    for (i, c) in name.char_indices() {
        let legacy = c.is_ascii() && legacy_byte(c as u8, i, colon);
        match escaping {
            Escaping::Underscores => out.push(if legacy { c } else { '_' }),
            Escaping::Dots => match c {
                '_' => out.push_str("__"),
                '.' => out.push_str("_dot_"),
                c if legacy => out.push(c),
                _ => out.push_str("__"),
            },
            Escaping::Values => match c {
                '_' => out.push_str("__"),
                c if legacy => out.push(c),
                c => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "_{:x}_", c as u32);
                }
            },
            Escaping::AllowUtf8 => unreachable!("returned above"),
        }
    }
    Cow::Owned(out)
}

/// Writes the name of family `family`'s sample with `suffix` (`""`,
/// `_total`, `_bucket`…): quoted when the scraper reads UTF-8 names and
/// the legacy syntax cannot hold it, escaped when it does not. A quoted
/// name starts with `"`, which no legacy name does: the sample writer
/// moves it inside the braces.
pub(crate) fn write_sample_name(out: &mut Vec<u8>, family: &str, suffix: &str, escaping: Escaping) {
    if escaping == Escaping::AllowUtf8 {
        if is_legacy_metric_name(family) {
            out.extend_from_slice(family.as_bytes());
            out.extend_from_slice(suffix.as_bytes());
        } else {
            super::text::write_label_value(out, &format!("{family}{suffix}"));
        }
        return;
    }
    out.extend_from_slice(escaped(family, Role::Metric, escaping).as_bytes());
    out.extend_from_slice(suffix.as_bytes());
}

/// [`write_sample_name`] into a new string.
pub(crate) fn sample_name(family: &str, suffix: &str, escaping: Escaping) -> String {
    let mut out = Vec::with_capacity(family.len() + suffix.len() + 2);
    write_sample_name(&mut out, family, suffix, escaping);
    String::from_utf8(out).expect("escaping keeps UTF-8")
}

/// Writes a label name: quoted or escaped as [`write_sample_name`] does.
pub(crate) fn write_label_name(out: &mut Vec<u8>, name: &str, escaping: Escaping) {
    if escaping == Escaping::AllowUtf8 && !is_legacy_label_name(name) {
        super::text::write_label_value(out, name);
    } else {
        out.extend_from_slice(escaped(name, Role::Label, escaping).as_bytes());
    }
}

/// Whether a name written by [`write_sample_name`] is quoted.
pub(crate) fn is_quoted(token: &str) -> bool {
    token.starts_with('"')
}

/// The first pair of `names` (label names of one series) that one scheme
/// writes alike, which would make the series invalid for its scrapers;
/// `None` when every scheme keeps them apart.
pub(crate) fn label_clash<'a>(names: &[&'a str]) -> Option<(&'a str, &'a str)> {
    if names.iter().all(|n| is_legacy_label_name(n)) {
        // Every scheme writes legacy names as they are.
        return label_clash_in(names, Escaping::AllowUtf8);
    }
    Escaping::ALL.into_iter().find_map(|escaping| label_clash_in(names, escaping))
}

/// [`label_clash`] for scrapers using `escaping` only.
pub(crate) fn label_clash_in<'a>(names: &[&'a str], escaping: Escaping) -> Option<(&'a str, &'a str)> {
    let written: Vec<Cow<'_, str>> = names.iter().map(|n| escaped(n, Role::Label, escaping)).collect();
    written.iter().enumerate().find_map(|(i, a)| written[..i].iter().position(|b| b == a).map(|j| (names[j], names[i])))
}

/// Every spelling scrapers may see of metric (or sample) name `name`:
/// as written, then escaped by each scheme; each once.
pub(crate) fn spellings(name: &str) -> Vec<String> {
    let mut all = vec![name.to_owned()];
    if !is_legacy_metric_name(name) {
        for escaping in [Escaping::Underscores, Escaping::Dots, Escaping::Values] {
            let spelled = escaped(name, Role::Metric, escaping).into_owned();
            if !all.contains(&spelled) {
                all.push(spelled);
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(family: &str, suffix: &str, escaping: Escaping) -> String {
        sample_name(family, suffix, escaping)
    }

    /// The examples of Prometheus' escaping schemes page, with the two
    /// differences the module's doc explains (`2e` in lowercase).
    #[test]
    fn the_specs_examples() {
        assert_eq!(
            escaped("metric.name/with/slashes", Role::Metric, Escaping::Underscores),
            "metric_name_with_slashes"
        );
        assert_eq!(escaped("metric.name.with.dots", Role::Metric, Escaping::Dots), "metric_dot_name_dot_with_dot_dots");
        assert_eq!(escaped("metric.name", Role::Metric, Escaping::Values), "U__metric_2e_name");
        assert_eq!(sample("my.dotted.metric", "", Escaping::AllowUtf8), "\"my.dotted.metric\"");
    }

    #[test]
    fn schemes() {
        let name = "http.server_1:é\"\\\n";
        assert_eq!(escaped(name, Role::Metric, Escaping::Underscores), "http_server_1:____");
        assert_eq!(escaped(name, Role::Label, Escaping::Underscores), "http_server_1_____");
        assert_eq!(escaped(name, Role::Metric, Escaping::Dots), "http_dot_server__1:________");
        assert_eq!(escaped(name, Role::Metric, Escaping::Values), "U__http_2e_server__1:_e9__22__5c__a_");
        assert_eq!(escaped(name, Role::Label, Escaping::Values), "U__http_2e_server__1_3a__e9__22__5c__a_");
        assert_eq!(escaped("1a", Role::Metric, Escaping::Underscores), "_a");
        assert_eq!(escaped("1a", Role::Metric, Escaping::Dots), "__a");
        assert_eq!(escaped("😀", Role::Metric, Escaping::Values), "U___1f600_");
        assert_eq!(sample(name, "_total", Escaping::AllowUtf8), "\"http.server_1:é\\\"\\\\\\n_total\"");
        assert_eq!(sample("a.b", "_bucket", Escaping::Dots), "a_dot_b_bucket");
        assert_eq!(sample("a.b", "_bucket", Escaping::Values), "U__a_2e_b_bucket");
        // Legacy names are the same under every scheme.
        for escaping in Escaping::ALL {
            assert_eq!(sample("http_requests", "_total", escaping), "http_requests_total");
            assert_eq!(escaped("job:rate_5m", Role::Metric, escaping), "job:rate_5m");
        }
        let mut out = Vec::new();
        write_label_name(&mut out, "a:b", Escaping::AllowUtf8);
        write_label_name(&mut out, "a:b", Escaping::Underscores);
        assert_eq!(String::from_utf8(out).unwrap(), "\"a:b\"a_b");
    }

    #[test]
    fn clashes() {
        assert_eq!(label_clash(&["a", "b", "a"]), Some(("a", "a")));
        assert_eq!(label_clash(&["a.b", "a_b"]), Some(("a.b", "a_b")));
        assert_eq!(label_clash(&["a-b", "a__b"]), Some(("a-b", "a__b")), "dots writes `-` as `__`");
        assert_eq!(label_clash(&["a.b", "a_dot_b"]), Some(("a.b", "a_dot_b")));
        assert_eq!(label_clash(&["a.b", "b.a"]), None);
        assert_eq!(spellings("a.b"), ["a.b", "a_b", "a_dot_b", "U__a_2e_b"]);
        assert_eq!(spellings("a_b"), ["a_b"]);
    }
}
