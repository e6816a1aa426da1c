//! The Prometheus protobuf exposition
//! (`application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;
//! encoding=delimited`): a stream of `MetricFamily` messages, each led by
//! its length as a varint.
//!
//! Every producer (declared metrics, merged shards and Python files,
//! collectors, process metrics, other linked versions) writes through one
//! [`ProtoWriter`], as the text producers write through the one sample
//! writer. A family is written in place: its header fields, then each
//! series as one `Metric` (a histogram's buckets, count and sum are one
//! message), then the length is put in front. Families with no series are
//! left out, as client_golang's registry leaves them out.
//!
//! How our kinds map onto the protocol's types, as client_golang, which
//! has neither info nor state sets, writes them: a counter is `COUNTER`
//! named with its `_total` (Prometheus names the series after the
//! family); an info metric is a `GAUGE` named with its `_info`, one series
//! of value 1 per label set (client_golang's `go_info`, `*_build_info`);
//! a state set is a `GAUGE` with one series per state, the state in a
//! label named after the metric, 1 for the current state, 0 for the
//! others; Python's summaries are `SUMMARY` with no quantiles. A
//! histogram's buckets are its finite bounds: the `+Inf` bucket is the
//! sample count (the file calls it optional, client_golang leaves it out,
//! and Prometheus adds it back from the count). A native histogram adds
//! its schema, zero bucket and sparse buckets (spans and deltas) to the
//! same message, beside its classic buckets if it has any; its count is
//! its native counts' total.

pub(crate) mod messages;
pub(crate) mod text;

use prost::Message;

use super::names::{Escaping, Role, escaped};
use crate::native::NativeCounts;
pub(crate) use messages::MetricType;
use messages::{
    Bucket, BucketSpan, Counter, Exemplar, Gauge, Histogram, LabelPair, Metric, MetricFamily, Quantile, Summary,
    Timestamp, Untyped,
};

/// Writes families and their series. Keeps its scratch messages between
/// series, so that a scrape allocates per family, not per series.
pub(crate) struct ProtoWriter {
    escaping: Escaping,
    /// The series being written; its label strings are overwritten in
    /// place.
    metric: Metric,
    /// The family being written: where it starts in the output, and how
    /// many series it holds so far.
    family: Option<(usize, usize)>,
    /// The last histogram written, kept for its bucket vector.
    spare: Histogram,
    /// The created timestamp of the counters, histograms and summaries
    /// written next.
    created: Option<Timestamp>,
}

impl ProtoWriter {
    pub(crate) fn new(escaping: Escaping) -> ProtoWriter {
        ProtoWriter { escaping, metric: Metric::default(), family: None, spare: Histogram::default(), created: None }
    }

    /// Sets when the next series' counts started (Unix nanoseconds), or
    /// that it is unknown.
    pub(crate) fn set_created(&mut self, nanos: Option<u64>) {
        self.created = nanos
            .map(|nanos| Timestamp { seconds: (nanos / 1_000_000_000) as i64, nanos: (nanos % 1_000_000_000) as i32 });
    }

    pub(crate) fn escaping(&self) -> Escaping {
        self.escaping
    }

    /// Starts family `family` + `suffix` (the name escaped by the
    /// scraper's scheme, UTF-8 as it is under `allow-utf-8`), ending the
    /// one before if it is still open.
    pub(crate) fn begin(
        &mut self,
        out: &mut Vec<u8>,
        family: &str,
        suffix: &str,
        help: &str,
        kind: MetricType,
        unit: Option<&str>,
    ) {
        self.end(out);
        self.created = None;
        let start = out.len();
        let mut name = escaped(family, Role::Metric, self.escaping).into_owned();
        name.push_str(suffix);
        let header = MetricFamily {
            name: Some(name),
            help: Some(help.to_owned()),
            r#type: Some(kind as i32),
            metric: Vec::new(),
            unit: unit.map(str::to_owned),
        };
        header.encode_raw(out);
        self.family = Some((start, 0));
    }

    /// Ends the open family: its length goes in front of it, or, when it
    /// has no series, it is taken back.
    pub(crate) fn end(&mut self, out: &mut Vec<u8>) {
        let Some((start, series)) = self.family.take() else { return };
        if series == 0 {
            out.truncate(start);
            return;
        }
        let mut prefix = Vec::with_capacity(10);
        prost::encoding::encode_varint((out.len() - start) as u64, &mut prefix);
        out.splice(start..start, prefix);
    }

    /// Sets the labels of the next series; names are escaped by the
    /// scraper's scheme, values are written as they are.
    pub(crate) fn labels<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> &mut Self {
        let escaping = self.escaping;
        let mut n = 0;
        for (name, value) in pairs {
            if n == self.metric.label.len() {
                self.metric.label.push(LabelPair { name: Some(String::new()), value: Some(String::new()) });
            }
            let pair = &mut self.metric.label[n];
            set(&mut pair.name, &escaped(name, Role::Label, escaping));
            set(&mut pair.value, value);
            n += 1;
        }
        self.metric.label.truncate(n);
        self
    }

    /// A counter, with its exemplar if it has one.
    pub(crate) fn counter(&mut self, out: &mut Vec<u8>, value: f64, exemplar: Option<&crate::exemplar::Exemplar>) {
        self.metric.counter =
            Some(Counter { value: Some(value), created_timestamp: self.created, exemplar: exemplar.map(message) });
        self.write(out);
    }

    pub(crate) fn gauge(&mut self, out: &mut Vec<u8>, value: f64) {
        self.metric.gauge = Some(Gauge { value: Some(value) });
        self.write(out);
    }

    pub(crate) fn untyped(&mut self, out: &mut Vec<u8>, value: f64) {
        self.metric.untyped = Some(Untyped { value: Some(value) });
        self.write(out);
    }

    /// A classic histogram from `(upper bound, cumulative count,
    /// exemplar)` in increasing order; an infinite bound is left out (the
    /// count is the `+Inf` bucket) unless it has an exemplar, which only a
    /// bucket can carry (client_golang writes it the same way).
    pub(crate) fn histogram(
        &mut self,
        out: &mut Vec<u8>,
        buckets: impl IntoIterator<Item = (f64, u64, Option<crate::exemplar::Exemplar>)>,
        count: u64,
        sum: f64,
    ) {
        let mut histogram = core::mem::take(&mut self.spare);
        histogram.bucket.clear();
        Self::clear_native(&mut histogram);
        (histogram.sample_count, histogram.sample_sum) = (Some(count), Some(sum));
        histogram.created_timestamp = self.created;
        Self::classic_buckets(&mut histogram, buckets);
        self.metric.histogram = Some(histogram);
        self.write(out);
    }

    /// A native histogram: its native counts (the count is theirs), the
    /// classic buckets kept alongside (`(upper bound, cumulative count,
    /// exemplar)`, none for a native-only one but an exemplar's `+Inf`)
    /// and the sum.
    pub(crate) fn native_histogram(
        &mut self,
        out: &mut Vec<u8>,
        buckets: impl IntoIterator<Item = (f64, u64, Option<crate::exemplar::Exemplar>)>,
        native: &NativeCounts,
        sum: f64,
    ) {
        let mut histogram = core::mem::take(&mut self.spare);
        histogram.bucket.clear();
        (histogram.sample_count, histogram.sample_sum) = (Some(native.total()), Some(sum));
        histogram.created_timestamp = self.created;
        Self::classic_buckets(&mut histogram, buckets);
        histogram.schema = Some(i32::from(native.schema));
        histogram.zero_threshold = Some(crate::native::ZERO_THRESHOLD);
        histogram.zero_count = Some(native.zero);
        let span = |(offset, length)| BucketSpan { offset: Some(offset), length: Some(length) };
        let (positive, positive_delta) = NativeCounts::spans(&native.positive);
        let (negative, negative_delta) = NativeCounts::spans(&native.negative);
        histogram.positive_span = positive.into_iter().map(span).collect();
        histogram.negative_span = negative.into_iter().map(span).collect();
        (histogram.positive_delta, histogram.negative_delta) = (positive_delta, negative_delta);
        if histogram.positive_span.is_empty() && histogram.negative_span.is_empty() {
            // No bucket yet: an empty span still says the histogram is a
            // native one (as client_golang writes it).
            histogram.positive_span.push(span((0, 0)));
        }
        self.metric.histogram = Some(histogram);
        self.write(out);
    }

    /// A summary: `(quantile, value)` pairs, count and sum.
    pub(crate) fn summary(&mut self, out: &mut Vec<u8>, quantiles: &[(f64, f64)], count: u64, sum: f64) {
        let quantile = quantiles.iter().map(|&(q, v)| Quantile { quantile: Some(q), value: Some(v) }).collect();
        self.metric.summary = Some(Summary {
            sample_count: Some(count),
            sample_sum: Some(sum),
            quantile,
            created_timestamp: self.created,
        });
        self.write(out);
    }

    /// `(upper bound, cumulative count, exemplar)` as the histogram's
    /// classic buckets: `+Inf` is implied by the count, and listed only to
    /// carry an exemplar (as client_golang does).
    fn classic_buckets(
        histogram: &mut Histogram,
        buckets: impl IntoIterator<Item = (f64, u64, Option<crate::exemplar::Exemplar>)>,
    ) {
        histogram.bucket.extend(
            buckets.into_iter().filter(|(bound, _, exemplar)| *bound != f64::INFINITY || exemplar.is_some()).map(
                |(bound, cumulative, exemplar)| Bucket {
                    cumulative_count: Some(cumulative),
                    upper_bound: Some(bound),
                    exemplar: exemplar.as_ref().map(message),
                    ..Bucket::default()
                },
            ),
        );
    }

    /// Empties the native fields of a reused histogram.
    fn clear_native(h: &mut Histogram) {
        (h.schema, h.zero_threshold, h.zero_count) = (None, None, None);
        h.positive_span.clear();
        h.negative_span.clear();
        h.positive_delta.clear();
        h.negative_delta.clear();
    }

    /// Appends the series as the open family's field 4, and clears its value.
    fn write(&mut self, out: &mut Vec<u8>) {
        debug_assert!(self.family.is_some(), "a series outside a family");
        prost::encoding::message::encode(4, &self.metric, out);
        if let Some((_, series)) = &mut self.family {
            *series += 1;
        }
        if let Some(histogram) = self.metric.histogram.take() {
            self.spare = histogram;
        }
        let Metric { gauge, counter, summary, untyped, timestamp_ms, .. } = &mut self.metric;
        (*gauge, *counter, *summary, *untyped, *timestamp_ms) = (None, None, None, None, None);
    }
}

/// An exemplar as `io.prometheus.client.Exemplar`. Its label names are
/// legacy names, which every escaping scheme keeps.
fn message(exemplar: &crate::exemplar::Exemplar) -> Exemplar {
    Exemplar {
        label: exemplar
            .labels
            .iter()
            .map(|(k, v)| LabelPair { name: Some(k.clone()), value: Some(v.clone()) })
            .collect(),
        value: Some(exemplar.value),
        timestamp: Some(Timestamp {
            seconds: (exemplar.nanos / 1_000_000_000) as i64,
            nanos: (exemplar.nanos % 1_000_000_000) as i32,
        }),
    }
}

fn set(slot: &mut Option<String>, text: &str) {
    let s = slot.get_or_insert_with(String::new);
    s.clear();
    s.push_str(text);
}

/// The names of the families in `bytes`, a protobuf exposition, in order;
/// stops at the first message it cannot read.
pub(crate) fn family_names(mut bytes: &[u8]) -> Vec<String> {
    /// A family with only its name: prost skips the other fields.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Name {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
    }
    let mut names = Vec::new();
    while !bytes.is_empty() {
        match Name::decode_length_delimited(&mut bytes) {
            Ok(family) => names.push(family.name.unwrap_or_default()),
            Err(_) => break,
        }
    }
    names
}

/// The type a family of `kind` is written as, and the suffix its name
/// takes.
pub(crate) fn type_of(kind: crate::descriptor::Kind) -> (MetricType, &'static str) {
    use crate::descriptor::Kind;
    match kind {
        Kind::Counter => (MetricType::Counter, "_total"),
        Kind::Gauge | Kind::StateSet => (MetricType::Gauge, ""),
        Kind::Info => (MetricType::Gauge, "_info"),
        Kind::Histogram => (MetricType::Histogram, ""),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Decodes a whole exposition with prost's derived decoders.
    pub(crate) fn decode(mut bytes: &[u8]) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        while !bytes.is_empty() {
            families.push(MetricFamily::decode_length_delimited(&mut bytes).expect("a delimited MetricFamily"));
        }
        families
    }

    #[test]
    fn families_are_delimited_and_empty_ones_left_out() {
        let mut out = Vec::new();
        let mut w = ProtoWriter::new(Escaping::Underscores);
        w.begin(&mut out, "requests", "_total", "Requests.", MetricType::Counter, None);
        w.labels([("method", "get"), ("url.scheme", "https")]).counter(&mut out, 3.0, None);
        w.labels([]).counter(&mut out, 0.5, None);
        w.begin(&mut out, "empty", "", "Nothing.", MetricType::Gauge, None);
        w.begin(&mut out, "latency.seconds", "", "Latency.", MetricType::Histogram, Some("seconds"));
        w.labels([("a", "b")]).histogram(&mut out, [(0.1, 1, None), (1.0, 4, None), (f64::INFINITY, 5, None)], 5, 2.5);
        w.end(&mut out);
        let families = decode(&out);
        assert_eq!(families.len(), 2);
        assert_eq!(families[0].name.as_deref(), Some("requests_total"));
        assert_eq!(families[0].r#type, Some(MetricType::Counter as i32));
        let labels: Vec<_> = families[0].metric[0].label.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
        assert_eq!(
            labels,
            [(Some("method".into()), Some("get".into())), (Some("url_scheme".into()), Some("https".into()))]
        );
        assert!(families[0].metric[1].label.is_empty());
        assert_eq!(families[0].metric[1].counter.as_ref().and_then(|c| c.value), Some(0.5));
        let h = families[1].metric[0].histogram.as_ref().unwrap();
        assert_eq!(families[1].name.as_deref(), Some("latency_seconds"));
        assert_eq!(families[1].unit.as_deref(), Some("seconds"));
        assert_eq!((h.sample_count, h.sample_sum, h.bucket.len()), (Some(5), Some(2.5), 2));
        assert_eq!((h.bucket[1].upper_bound, h.bucket[1].cumulative_count), (Some(1.0), Some(4)));
        assert_eq!(family_names(&out), ["requests_total", "latency_seconds"]);
    }

    #[test]
    fn utf8_names_are_kept_under_allow_utf_8() {
        let mut out = Vec::new();
        let mut w = ProtoWriter::new(Escaping::AllowUtf8);
        w.begin(&mut out, "http.server.duration", "", "D.", MetricType::Gauge, None);
        w.labels([("url.scheme", "https")]).gauge(&mut out, 1.0);
        w.end(&mut out);
        let families = decode(&out);
        assert_eq!(families[0].name.as_deref(), Some("http.server.duration"));
        assert_eq!(families[0].metric[0].label[0].name.as_deref(), Some("url.scheme"));
    }

    /// Field numbers as bytes on the wire, against client_model's
    /// `metrics.proto`: family 1 name, 2 help, 3 type, 4 metric, 5 unit;
    /// metric 1 label, 2 gauge, 3 counter, 7 histogram; histogram 1 count,
    /// 2 sum, 3 bucket; bucket 1 cumulative count, 2 upper bound.
    #[test]
    fn wire_bytes() {
        let mut out = Vec::new();
        let mut w = ProtoWriter::new(Escaping::Underscores);
        w.begin(&mut out, "h", "", "", MetricType::Histogram, Some("s"));
        w.labels([("a", "b")]).histogram(&mut out, [(1.0, 2, None)], 3, 0.5);
        w.end(&mut out);
        let mut want = vec![0x0a, 1, b'h', 0x12, 0, 0x18, 4, 0x2a, 1, b's'];
        let bucket = [0x08, 2, 0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f];
        let mut histogram = vec![0x08, 3, 0x11, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f, 0x1a, bucket.len() as u8];
        histogram.extend(bucket);
        let mut metric = vec![0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b', 0x3a, histogram.len() as u8];
        metric.extend(histogram);
        want.extend([0x22, metric.len() as u8]);
        want.extend(metric);
        want.insert(0, want.len() as u8);
        assert_eq!(out, want);
    }
}
