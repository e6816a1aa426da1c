//! Families of the Prometheus text format (0.0.4, or 1.0.0 with quoted
//! UTF-8 names) turned into protobuf: what another promshard version
//! linked into the binary renders for us through the ABI, which carries
//! text only. Every sample's value is kept exactly (the text writes the
//! shortest digits that read back to the same `f64`); what the text does
//! not carry is lost: the unit (no `# UNIT` line in that format).

use super::{MetricType, ProtoWriter};

/// One sample line: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A histogram's or summary's series: labels, (bound or quantile, value)
/// points, count, sum.
type Series = (Vec<(String, String)>, Vec<(f64, f64)>, f64, f64);

/// Appends family `text` (its `# HELP`/`# TYPE` lines and samples, as
/// [`crate::linked::families`] splits an exposition) to `out`; a family
/// that does not parse is left out, and the reason returned.
pub(crate) fn append_family(w: &mut ProtoWriter, text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut name = None;
    let mut help = String::new();
    let mut kind = MetricType::Untyped;
    let mut samples: Vec<Sample> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (n, rest) = read_name(rest)?;
            name.get_or_insert(n);
            help = unescape_help(rest.strip_prefix(' ').unwrap_or(rest));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (n, rest) = read_name(rest)?;
            name.get_or_insert(n);
            kind = match rest.trim() {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "histogram" => MetricType::Histogram,
                "summary" => MetricType::Summary,
                _ => MetricType::Untyped,
            };
        } else if line.starts_with('#') || line.trim().is_empty() {
            continue;
        } else {
            samples.push(read_sample(line)?);
        }
    }
    let Some(name) = name.or_else(|| samples.first().map(|s| s.0.clone())) else { return Ok(()) };
    let start = out.len();
    w.begin(out, &name, "", &help, kind, None);
    let result = write_samples(w, &name, kind, &samples, out);
    match result {
        Ok(()) => w.end(out),
        Err(_) => {
            w.end(out);
            out.truncate(start);
        }
    }
    result
}

fn write_samples(
    w: &mut ProtoWriter,
    family: &str,
    kind: MetricType,
    samples: &[Sample],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    fn pairs(labels: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    match kind {
        MetricType::Counter | MetricType::Gauge | MetricType::Untyped | MetricType::GaugeHistogram => {
            for (name, labels, value) in samples {
                if name != family {
                    return Err(format!("sample `{name}` in family `{family}`"));
                }
                w.labels(pairs(labels));
                match kind {
                    MetricType::Counter => w.counter(out, *value, None),
                    MetricType::Gauge => w.gauge(out, *value),
                    _ => w.untyped(out, *value),
                }
            }
        }
        MetricType::Histogram | MetricType::Summary => {
            // Series by their labels (without `le` or `quantile`), in the
            // order they first appear.
            let magic = if kind == MetricType::Histogram { "le" } else { "quantile" };
            let mut series: Vec<Series> = Vec::new();
            for (name, labels, value) in samples {
                let what = name.strip_prefix(family).unwrap_or("?");
                let mut labels = labels.clone();
                let bound = labels.iter().position(|(k, _)| k == magic).map(|i| labels.remove(i).1);
                let at = match series.iter().position(|(l, ..)| *l == labels) {
                    Some(at) => at,
                    None => {
                        series.push((labels, Vec::new(), 0.0, 0.0));
                        series.len() - 1
                    }
                };
                let entry = &mut series[at];
                match (what, bound, kind) {
                    ("_bucket", Some(bound), MetricType::Histogram) | ("", Some(bound), MetricType::Summary) => {
                        let bound = parse_float(&bound).ok_or_else(|| format!("{magic}=\"{bound}\""))?;
                        entry.1.push((bound, *value));
                    }
                    ("_count", None, _) => entry.2 = *value,
                    ("_sum", None, _) => entry.3 = *value,
                    _ => return Err(format!("sample `{name}` in family `{family}`")),
                }
            }
            for (labels, points, count, sum) in &series {
                w.labels(pairs(labels));
                if kind == MetricType::Histogram {
                    w.histogram(out, points.iter().map(|&(b, c)| (b, c as u64, None)), *count as u64, *sum);
                } else {
                    w.summary(out, points, *count as u64, *sum);
                }
            }
        }
    }
    Ok(())
}

/// A metric name at the start of `s`: legacy, up to a space or `{`, or
/// quoted; and the rest.
fn read_name(s: &str) -> Result<(String, &str), String> {
    if s.starts_with('"') {
        return read_quoted(s);
    }
    let end = s.find([' ', '{']).unwrap_or(s.len());
    Ok((s[..end].to_owned(), &s[end..]))
}

/// A double-quoted string at the start of `s`, unescaped, and the rest.
fn read_quoted(s: &str) -> Result<(String, &str), String> {
    let body = s.strip_prefix('"').ok_or("expected `\"`")?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, c)) => value.push(c),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err(format!("unterminated string in `{s}`"))
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c) => out.push(c),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// `name{labels} value`, or `{"name",labels} value`; a timestamp after
/// the value is ignored (promshard writes none).
fn read_sample(line: &str) -> Result<Sample, String> {
    let mut name = None;
    let mut rest = line;
    if !rest.starts_with('{') {
        let (n, r) = read_name(rest)?;
        name = Some(n);
        rest = r;
    }
    let mut labels = Vec::new();
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            inside = inside.trim_start_matches([' ', ',']);
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = if inside.starts_with('"') {
                read_quoted(inside)?
            } else {
                let end = inside.find(['=', ',', '}']).ok_or_else(|| format!("bad labels in `{line}`"))?;
                (inside[..end].trim().to_owned(), &inside[end..])
            };
            match after.trim_start().strip_prefix('=') {
                Some(value) => {
                    let (value, after) = read_quoted(value.trim_start())?;
                    labels.push((key, value));
                    inside = after;
                }
                // A quoted name alone: the metric's.
                None if name.is_none() => {
                    name = Some(key);
                    inside = after;
                }
                None => return Err(format!("bad labels in `{line}`")),
            }
        }
    }
    let name = name.ok_or_else(|| format!("no name in `{line}`"))?;
    let value = rest.split_whitespace().next().ok_or_else(|| format!("no value in `{line}`"))?;
    let value = parse_float(value).ok_or_else(|| format!("bad value in `{line}`"))?;
    Ok((name, labels, value))
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::names::Escaping;
    use crate::encode::proto::tests::decode;

    #[test]
    fn text_families_become_messages() {
        let text = "# HELP a_total Jobs \\\\ done\\n.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                    a_total 0.5\n";
        let mut out = Vec::new();
        let mut w = ProtoWriter::new(Escaping::Underscores);
        append_family(&mut w, text, &mut out).unwrap();
        let histogram = "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                         h_count 2\nh_sum 0.25\nh_bucket{k=\"v\",le=\"0.1\"} 0\nh_bucket{k=\"v\",le=\"+Inf\"} 0\n\
                         h_count{k=\"v\"} 0\nh_sum{k=\"v\"} 0\n";
        append_family(&mut w, histogram, &mut out).unwrap();
        let utf8 = "# HELP \"a.b\" G.\n# TYPE \"a.b\" gauge\n{\"a.b\",\"c.d\"=\"e\"} -Inf\n";
        let mut w8 = ProtoWriter::new(Escaping::AllowUtf8);
        append_family(&mut w8, utf8, &mut out).unwrap();
        let families = decode(&out);
        assert_eq!(families[0].help.as_deref(), Some("Jobs \\ done\n."));
        assert_eq!(families[0].metric.len(), 2);
        assert_eq!(families[0].metric[0].label[1].value.as_deref(), Some("q\""));
        assert_eq!(families[0].metric[0].counter.as_ref().unwrap().value, Some(3.0));
        let h = &families[1].metric;
        assert_eq!(h.len(), 2);
        let first = h[0].histogram.as_ref().unwrap();
        assert_eq!((first.sample_count, first.sample_sum, first.bucket.len()), (Some(2), Some(0.25), 1));
        assert_eq!(h[1].label[0].name.as_deref(), Some("k"));
        assert_eq!(families[2].name.as_deref(), Some("a.b"));
        assert_eq!(families[2].metric[0].label[0].name.as_deref(), Some("c.d"));
        assert_eq!(families[2].metric[0].gauge.as_ref().unwrap().value, Some(f64::NEG_INFINITY));
        assert!(append_family(&mut w, "# TYPE g gauge\nother 1\n", &mut out).is_err());
        assert_eq!(decode(&out).len(), 3, "a family that does not parse is taken back");
    }
}
