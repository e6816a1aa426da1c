//! Series keyed by their label text, for merges the slot-by-slot path
//! cannot do: bounded labels (each process numbers its strings its own
//! way), metrics whose definition differs between binaries, the archive,
//! and Python's `.db` files.

use std::collections::BTreeMap;

use crate::descriptor::{GaugeMode, Kind};
use crate::expose::Format;
use crate::expose::plan::write_header;
use crate::expose::text::{le_value, write_f64, write_label, write_u64};

/// The type of a sparse family: the five of ours, and Python's summary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum SparseKind {
    Metric(Kind, GaugeMode),
    Summary,
}

/// An accumulated series value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Acc {
    Counter {
        count: u64,
        fraction: f64,
    },
    Gauge {
        value: f64,
        stamp: f64,
    },
    /// Non-cumulative bucket counts by upper bound, and the sum.
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: f64,
    },
    Summary {
        count: f64,
        sum: f64,
    },
    /// Info and state samples: present, with a value.
    Value(f64),
}

pub(crate) type Labels = Vec<(String, String)>;

pub(crate) struct SparseFamily {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) unit: Option<String>,
    pub(crate) kind: SparseKind,
    pub(crate) series: BTreeMap<Labels, Acc>,
}

impl SparseFamily {
    pub(crate) fn new(name: &str, help: &str, unit: Option<&str>, kind: SparseKind) -> SparseFamily {
        SparseFamily {
            name: name.to_owned(),
            help: help.to_owned(),
            unit: unit.map(str::to_owned),
            kind,
            series: BTreeMap::new(),
        }
    }

    /// Adds one process's value for a series, combining by kind and mode.
    pub(crate) fn add(&mut self, labels: Labels, value: Acc) {
        let mode = match self.kind {
            SparseKind::Metric(_, mode) => mode,
            SparseKind::Summary => GaugeMode::Sum,
        };
        match self.series.get_mut(&labels) {
            None => {
                self.series.insert(labels, value);
            }
            Some(current) => combine(current, value, mode),
        }
    }

    pub(crate) fn encode(&self, format: Format, out: &mut Vec<u8>) {
        let (kind_name, header_name) = match (self.kind, format) {
            (SparseKind::Summary, _) => ("summary", self.name.clone()),
            (SparseKind::Metric(kind, _), Format::Prometheus) => {
                (kind.prometheus_type(), format!("{}{}", self.name, kind.sample_suffix()))
            }
            (SparseKind::Metric(kind, _), Format::OpenMetrics) => (kind.openmetrics_type(), self.name.clone()),
        };
        write_header(out, &header_name, &self.help, kind_name, self.unit.as_deref(), format);
        self.visit(|name, labels, value| line(out, name, labels, value));
    }

    /// Calls `f(sample name, labels, value)` for every sample.
    pub(crate) fn visit(&self, mut f: impl FnMut(&str, &[(&str, &str)], Number)) {
        let name = &self.name;
        for (labels, acc) in &self.series {
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match acc {
                Acc::Counter { count, fraction } => {
                    let value =
                        if *fraction == 0.0 { Number::Int(*count) } else { Number::Float(*count as f64 + fraction) };
                    f(&format!("{name}_total"), &pairs, value);
                }
                Acc::Gauge { value, .. } => f(name, &pairs, Number::Float(*value)),
                Acc::Value(v) => {
                    let sample = if matches!(self.kind, SparseKind::Metric(Kind::Info, _)) {
                        format!("{name}_info")
                    } else {
                        name.clone()
                    };
                    f(&sample, &pairs, Number::Float(*v));
                }
                Acc::Summary { count, sum } => {
                    f(&format!("{name}_count"), &pairs, Number::Float(*count));
                    f(&format!("{name}_sum"), &pairs, Number::Float(*sum));
                }
                Acc::Histogram { buckets, sum } => {
                    let mut sorted = buckets.clone();
                    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                    if sorted.last().is_none_or(|b| b.0 != f64::INFINITY) {
                        sorted.push((f64::INFINITY, 0));
                    }
                    let bucket = format!("{name}_bucket");
                    let mut cumulative = 0;
                    for (bound, count) in sorted {
                        cumulative += count;
                        let le = le_value(bound);
                        let mut with_le = pairs.clone();
                        with_le.push(("le", &le));
                        f(&bucket, &with_le, Number::Int(cumulative));
                    }
                    f(&format!("{name}_count"), &pairs, Number::Int(cumulative));
                    f(&format!("{name}_sum"), &pairs, Number::Float(*sum));
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Number {
    Int(u64),
    Float(f64),
}

impl Number {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Number::Int(v) => v as f64,
            Number::Float(v) => v,
        }
    }
}

fn combine(current: &mut Acc, value: Acc, mode: GaugeMode) {
    match (current, value) {
        (Acc::Counter { count, fraction }, Acc::Counter { count: c, fraction: f }) => {
            *count = count.wrapping_add(c);
            *fraction += f;
        }
        (Acc::Histogram { buckets, sum }, Acc::Histogram { buckets: b, sum: s }) => {
            for (bound, n) in b {
                match buckets.iter_mut().find(|(x, _)| *x == bound) {
                    Some((_, count)) => *count += n,
                    None => buckets.push((bound, n)),
                }
            }
            *sum += s;
        }
        (Acc::Summary { count, sum }, Acc::Summary { count: c, sum: s }) => {
            *count += c;
            *sum += s;
        }
        (Acc::Gauge { value, stamp }, Acc::Gauge { value: v, stamp: t }) => match mode {
            GaugeMode::Min | GaugeMode::LiveMin => *value = value.min(v),
            GaugeMode::Max | GaugeMode::LiveMax => *value = value.max(v),
            GaugeMode::MostRecent | GaugeMode::LiveMostRecent => {
                if t > *stamp {
                    (*value, *stamp) = (v, t);
                }
            }
            // Sum, and `all` modes whose series differ by pid anyway.
            _ => *value += v,
        },
        (Acc::Value(current), Acc::Value(v)) => *current = current.max(v),
        // A kind mismatch between processes: keep the first.
        _ => {}
    }
}

fn line(out: &mut Vec<u8>, name: &str, labels: &[(&str, &str)], value: Number) {
    out.extend_from_slice(name.as_bytes());
    if !labels.is_empty() {
        out.push(b'{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_label(out, k, v);
        }
        out.push(b'}');
    }
    out.push(b' ');
    match value {
        Number::Int(v) => write_u64(out, v),
        Number::Float(v) => write_f64(out, v),
    }
    out.push(b'\n');
}
