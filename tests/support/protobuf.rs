//! Reading our protobuf exposition with a decoder we did not write:
//! Google's `protobuf` package for Python, with the messages of
//! client_model's `metrics.proto` declared through its descriptor API
//! (field by field from the upstream file; `google.protobuf.Timestamp` is
//! the package's own), and the samples expanded as Prometheus' protobuf
//! parser expands them. The text exposition of the same state goes through
//! prometheus_client's parser, and the two are compared sample by sample.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{run_with_stdin_bytes, tool_from_env};

/// What Prometheus 2.42 started with `--enable-feature=native-histograms`
/// sends.
pub const PROMETHEUS_PROTOBUF_ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,\
     application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,\
     text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The `Content-Type` of a protobuf answer with legacy names.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; escaping=underscores";

/// Explains how to get the decoder, for [`super::skip_or_fail`].
pub const PROTOBUF_MISSING: &str = "python3 with prometheus_client and protobuf not found; \
     run `python3 -m pip install prometheus_client protobuf` or set PROMSHARD_PYTHON";

/// [`python_with_protobuf`], or `None` after skipping loudly (failing
/// under `PROMSHARD_ORACLES=require`).
pub fn python_or_skip() -> Option<PathBuf> {
    let python = python_with_protobuf();
    if python.is_none() {
        super::skip_or_fail(PROTOBUF_MISSING);
    }
    python
}

/// A Python that imports both `prometheus_client` and `google.protobuf`.
pub fn python_with_protobuf() -> Option<PathBuf> {
    let candidate = tool_from_env("PROMSHARD_PYTHON").or_else(|| super::find_in_path("python3"))?;
    let imports = Command::new(&candidate)
        .args(["-c", "import prometheus_client.parser, google.protobuf.message_factory"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    imports.then_some(candidate)
}

/// The Python program: argv[1] is the text exposition's path, the
/// protobuf exposition comes on stdin. Prints one JSON object with both
/// sides: `families` as `[name, type, help]` and `samples` as
/// `[name, [[label, value]…], value as float.hex()]`, each sorted.
const SCRIPT: &str = r#"
import json, sys
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.internal.decoder import _DecodeVarint32
from google.protobuf.unknown_fields import UnknownFieldSet
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
file = descriptor_pb2.FileDescriptorProto(
    name='io/prometheus/client/metrics.proto', package='io.prometheus.client', syntax='proto2',
    dependency=['google/protobuf/timestamp.proto'])
def message(name, *fields):
    m = file.message_type.add(name=name)
    for field_name, number, label, kind, type_name in fields:
        f = m.field.add(name=field_name, number=number, label=label, type=kind)
        if type_name:
            f.type_name = type_name if type_name.startswith('.') else '.io.prometheus.client.' + type_name
TS = '.google.protobuf.Timestamp'
message('LabelPair', ('name', 1, OPT, F.TYPE_STRING, None), ('value', 2, OPT, F.TYPE_STRING, None))
enum = file.enum_type.add(name='MetricType')
for number, name in enumerate(['COUNTER', 'GAUGE', 'SUMMARY', 'UNTYPED', 'HISTOGRAM', 'GAUGE_HISTOGRAM']):
    enum.value.add(name=name, number=number)
message('Gauge', ('value', 1, OPT, F.TYPE_DOUBLE, None))
message('Counter', ('value', 1, OPT, F.TYPE_DOUBLE, None), ('exemplar', 2, OPT, F.TYPE_MESSAGE, 'Exemplar'),
        ('created_timestamp', 3, OPT, F.TYPE_MESSAGE, TS))
message('Quantile', ('quantile', 1, OPT, F.TYPE_DOUBLE, None), ('value', 2, OPT, F.TYPE_DOUBLE, None))
message('Summary', ('sample_count', 1, OPT, F.TYPE_UINT64, None), ('sample_sum', 2, OPT, F.TYPE_DOUBLE, None),
        ('quantile', 3, REP, F.TYPE_MESSAGE, 'Quantile'), ('created_timestamp', 4, OPT, F.TYPE_MESSAGE, TS))
message('Untyped', ('value', 1, OPT, F.TYPE_DOUBLE, None))
message('Histogram',
        ('sample_count', 1, OPT, F.TYPE_UINT64, None), ('sample_count_float', 4, OPT, F.TYPE_DOUBLE, None),
        ('sample_sum', 2, OPT, F.TYPE_DOUBLE, None), ('bucket', 3, REP, F.TYPE_MESSAGE, 'Bucket'),
        ('created_timestamp', 15, OPT, F.TYPE_MESSAGE, TS), ('schema', 5, OPT, F.TYPE_SINT32, None),
        ('zero_threshold', 6, OPT, F.TYPE_DOUBLE, None), ('zero_count', 7, OPT, F.TYPE_UINT64, None),
        ('zero_count_float', 8, OPT, F.TYPE_DOUBLE, None), ('negative_span', 9, REP, F.TYPE_MESSAGE, 'BucketSpan'),
        ('negative_delta', 10, REP, F.TYPE_SINT64, None), ('negative_count', 11, REP, F.TYPE_DOUBLE, None),
        ('positive_span', 12, REP, F.TYPE_MESSAGE, 'BucketSpan'), ('positive_delta', 13, REP, F.TYPE_SINT64, None),
        ('positive_count', 14, REP, F.TYPE_DOUBLE, None), ('exemplars', 16, REP, F.TYPE_MESSAGE, 'Exemplar'))
message('Bucket', ('cumulative_count', 1, OPT, F.TYPE_UINT64, None),
        ('cumulative_count_float', 4, OPT, F.TYPE_DOUBLE, None), ('upper_bound', 2, OPT, F.TYPE_DOUBLE, None),
        ('exemplar', 3, OPT, F.TYPE_MESSAGE, 'Exemplar'))
message('BucketSpan', ('offset', 1, OPT, F.TYPE_SINT32, None), ('length', 2, OPT, F.TYPE_UINT32, None))
message('Exemplar', ('label', 1, REP, F.TYPE_MESSAGE, 'LabelPair'), ('value', 2, OPT, F.TYPE_DOUBLE, None),
        ('timestamp', 3, OPT, F.TYPE_MESSAGE, TS))
message('Metric', ('label', 1, REP, F.TYPE_MESSAGE, 'LabelPair'), ('gauge', 2, OPT, F.TYPE_MESSAGE, 'Gauge'),
        ('counter', 3, OPT, F.TYPE_MESSAGE, 'Counter'), ('summary', 4, OPT, F.TYPE_MESSAGE, 'Summary'),
        ('untyped', 5, OPT, F.TYPE_MESSAGE, 'Untyped'), ('histogram', 7, OPT, F.TYPE_MESSAGE, 'Histogram'),
        ('timestamp_ms', 6, OPT, F.TYPE_INT64, None))
message('MetricFamily', ('name', 1, OPT, F.TYPE_STRING, None), ('help', 2, OPT, F.TYPE_STRING, None))
mf = file.message_type[-1]
t = mf.field.add(name='type', number=3, label=OPT, type=F.TYPE_ENUM, type_name='.io.prometheus.client.MetricType')
mf.field.add(name='metric', number=4, label=REP, type=F.TYPE_MESSAGE, type_name='.io.prometheus.client.Metric')
mf.field.add(name='unit', number=5, label=OPT, type=F.TYPE_STRING)

pool = descriptor_pool.DescriptorPool()
pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
pool.Add(file)
MetricFamily = message_factory.GetMessageClass(pool.FindMessageTypeByName('io.prometheus.client.MetricFamily'))

def known(message, where):
    # Every field on the wire is one metrics.proto declares.
    assert len(UnknownFieldSet(message)) == 0, 'unknown fields in ' + where
    for field, value in message.ListFields():
        if field.type == F.TYPE_MESSAGE:
            repeated = field.is_repeated if hasattr(field, 'is_repeated') else field.label == REP
            for item in (value if repeated else [value]):
                known(item, where + '.' + field.name)

def h(v):
    return float.hex(float(v) + 0.0) if v == v else 'nan'

TYPES = ['counter', 'gauge', 'summary', 'untyped', 'histogram', 'gaugehistogram']
VALUE = {0: 'counter', 1: 'gauge', 2: 'summary', 3: 'untyped', 4: 'histogram'}
data = sys.stdin.buffer.read()
pos, families, samples, created, exemplars = 0, [], [], [], []
while pos < len(data):
    size, pos = _DecodeVarint32(data, pos)
    assert pos + size <= len(data), 'a family runs past the end'
    family = MetricFamily()
    family.ParseFromString(data[pos:pos + size])
    pos += size
    known(family, family.name)
    name, kind = family.name, family.type
    assert family.HasField('type') and len(family.metric) > 0, name
    bare = name[:-6] if kind == 0 and name.endswith('_total') else name
    families.append([bare, TYPES[kind], family.help])
    for m in family.metric:
        set_fields = [f.name for f, _ in m.ListFields() if f.name != 'label']
        assert set_fields == [VALUE[kind]], (name, set_fields)
        labels = [[l.name, l.value] for l in m.label]
        assert len({l[0] for l in labels}) == len(labels), (name, labels)
        def add(sample, value, extra=()):
            samples.append([sample, sorted(labels + [list(e) for e in extra]), h(value)])
        def add_exemplar(sample, holder, extra=()):
            # As the OpenMetrics exemplar of the sample would be.
            if holder.HasField('exemplar'):
                e = holder.exemplar
                assert e.HasField('timestamp'), name
                exemplars.append([sample, sorted(labels + [list(x) for x in extra]),
                                  sorted([l.name, l.value] for l in e.label), h(e.value),
                                  e.timestamp.seconds, e.timestamp.nanos])
        def add_created(holder):
            # As the OpenMetrics `_created` sample of the series would be.
            if holder.HasField('created_timestamp'):
                t = holder.created_timestamp
                created.append([bare + '_created', sorted(labels), h(t.seconds + t.nanos / 1e9)])
        if kind == 0:
            add(name, m.counter.value)
            add_exemplar(name, m.counter)
            add_created(m.counter)
        elif kind == 1:
            add(name, m.gauge.value)
        elif kind == 3:
            add(name, m.untyped.value)
        elif kind == 2:
            for q in m.summary.quantile:
                add(name, q.value, [('quantile', floatToGoString(q.quantile))])
            add(name + '_count', m.summary.sample_count)
            add(name + '_sum', m.summary.sample_sum)
            add_created(m.summary)
        elif kind == 4:
            bounds = [b.upper_bound for b in m.histogram.bucket]
            assert bounds == sorted(bounds), (name, bounds)
            for b in m.histogram.bucket:
                add(name + '_bucket', b.cumulative_count, [('le', floatToGoString(b.upper_bound))])
                add_exemplar(name + '_bucket', b, [('le', floatToGoString(b.upper_bound))])
            if not bounds or bounds[-1] != float('inf'):
                add(name + '_bucket', m.histogram.sample_count, [('le', '+Inf')])
            add(name + '_count', m.histogram.sample_count)
            add(name + '_sum', m.histogram.sample_sum)
            add_created(m.histogram)

text_families, text_samples = [], []
for family in text_string_to_metric_families(open(sys.argv[1], encoding='utf-8').read()):
    if family.samples:
        text_families.append([family.name, family.type, family.documentation])
    for s in family.samples:
        text_samples.append([s.name, sorted([k, v] for k, v in s.labels.items()), h(s.value)])
print(json.dumps({
    'proto': {'families': sorted(families), 'samples': sorted(samples)},
    'created': sorted(created),
    'exemplars': sorted(exemplars),
    'text': {'families': sorted(text_families), 'samples': sorted(text_samples)},
}))
"#;

/// Both sides of one comparison, as the script printed them.
pub struct Decoded {
    pub proto: serde_json::Value,
    pub text: serde_json::Value,
    /// The protobuf's created timestamps, as the `_created` samples
    /// `[name, [[label, value]…], seconds as float.hex()]` OpenMetrics
    /// would show, sorted.
    pub created: serde_json::Value,
    /// The exemplars of counters and buckets, as
    /// `[sample, [[label, value]…], [[exemplar label, value]…], value as
    /// float.hex(), timestamp seconds, timestamp nanos]`, sorted.
    pub exemplars: serde_json::Value,
}

/// Decodes `proto` with Python's protobuf and parses `text` with
/// prometheus_client; `work` is a directory for the text file.
pub fn decode(python: &Path, work: &Path, proto: &[u8], text: &str) -> Decoded {
    let path = work.join(format!("exposition-{}.txt", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let output = run_with_stdin_bytes(python, &[OsStr::new("-c"), OsStr::new(SCRIPT), path.as_os_str()], proto);
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "the protobuf decoder failed ({}):\n{}\n--- text ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the decoder printed JSON");
    Decoded {
        proto: json["proto"].clone(),
        text: json["text"].clone(),
        created: json["created"].clone(),
        exemplars: json["exemplars"].clone(),
    }
}

/// Panics with the differences when the two sides do not hold the same
/// families (name, type, help) and samples, leaving out the names that
/// start with one of `skip`.
pub fn assert_same(what: &str, decoded: &Decoded, skip: &[&str]) {
    assert_parts_same(what, decoded, skip, &[], &["families", "samples"]);
}

/// [`assert_same`], also leaving out the samples with a label of one of
/// `values` (a server's `/metrics` series, which count each scrape).
pub fn assert_same_but(what: &str, decoded: &Decoded, skip: &[&str], values: &[&str]) {
    assert_parts_same(what, decoded, skip, values, &["families", "samples"]);
}

/// [`assert_same`] for the samples only (a text without `# TYPE` lines
/// has no families to compare).
pub fn assert_same_samples(what: &str, decoded: &Decoded, skip: &[&str]) {
    assert_parts_same(what, decoded, skip, &[], &["samples"]);
}

fn assert_parts_same(what: &str, decoded: &Decoded, skip: &[&str], values: &[&str], parts: &[&str]) {
    let kept = |side: &serde_json::Value| -> Vec<serde_json::Value> {
        let name = |x: &serde_json::Value| x[0].as_str().unwrap_or_default().to_owned();
        // A sample's labels are its second item, `[[name, value]…]`.
        let labelled = |x: &serde_json::Value| {
            x[1].as_array().is_some_and(|l| l.iter().any(|p| values.iter().any(|v| p[1] == *v)))
        };
        let all = side.as_array().unwrap().iter();
        all.filter(|x| !skip.iter().any(|s| name(x).starts_with(s)) && !labelled(x)).cloned().collect()
    };
    for part in parts {
        let (ours, theirs) = (kept(&decoded.proto[part]), kept(&decoded.text[part]));
        let only_proto: Vec<_> = ours.iter().filter(|x| !theirs.contains(x)).collect();
        let only_text: Vec<_> = theirs.iter().filter(|x| !ours.contains(x)).collect();
        assert!(
            only_proto.is_empty() && only_text.is_empty() && ours.len() == theirs.len(),
            "{what}: {part} differ\n--- only in protobuf ---\n{only_proto:#?}\n--- only in text ---\n{only_text:#?}"
        );
    }
}

/// The native-histogram oracle: decodes the protobuf exposition on stdin
/// with the same hand-declared `metrics.proto` as [`SCRIPT`], and checks
/// each family named in argv[1] (a JSON object: family name → the bits of
/// every value observed, as integers) against the histogram of those
/// values, computed here as client_golang computes a bucket (`frexp`, the
/// bounds `2^(j/2^schema)/2`) at the schema the exposition chose. NaN is
/// not an observation. Prints, per family, what was decoded and what was
/// expected.
const NATIVE_SCRIPT: &str = r#"
import bisect, json, math, struct, sys
exec(sys.argv[2])  # the message declarations of SCRIPT, up to MetricFamily

def bucket(v, schema):
    if math.isinf(v):
        return (1024 << schema if schema >= 0 else 1024 >> -schema) + 1
    frac, exp = math.frexp(v)
    if schema > 0:
        bounds = [2 ** (j / 2 ** schema) / 2 for j in range(2 ** schema)]
        return bisect.bisect_left(bounds, frac) + (exp - 1) * 2 ** schema
    key = exp - 1 if frac == 0.5 else exp
    return (key + (1 << -schema) - 1) >> -schema

def exact_sum(values):
    # fsum raises when a partial sum overflows (two values near f64::MAX);
    # JSON has no Infinity either.
    try:
        total = math.fsum(values)
    except OverflowError:
        return None
    return total if math.isfinite(total) else None

def expand(spans, deltas):
    out, index, count, deltas = {}, 0, 0, list(deltas)
    assert sum(s.length for s in spans) == len(deltas), 'spans and deltas disagree'
    at = 0
    for i, span in enumerate(spans):
        index = span.offset if i == 0 else index + span.offset
        for _ in range(span.length):
            count += deltas[at]
            at += 1
            assert count > 0, 'an empty or negative bucket'
            out[index] = count
            index += 1
    return out

wanted = json.load(open(sys.argv[1]))
data = sys.stdin.buffer.read()
pos, report = 0, {}
while pos < len(data):
    size, pos = _DecodeVarint32(data, pos)
    family = MetricFamily()
    family.ParseFromString(data[pos:pos + size])
    pos += size
    if family.name not in wanted:
        continue
    assert len(family.metric) == 1, family.name
    h = family.metric[0].histogram
    schema = h.schema
    values = [struct.unpack('<d', struct.pack('<Q', b))[0] for b in wanted[family.name]]
    values = [v for v in values if v == v]
    threshold = 2.0 ** -128
    expected = {'zero': 0, 'positive': {}, 'negative': {}}
    for v in values:
        if abs(v) <= threshold:
            expected['zero'] += 1
            continue
        side = expected['negative' if v < 0 else 'positive']
        i = bucket(abs(v), schema)
        side[str(i)] = side.get(str(i), 0) + 1
    finite = [v for v in values if math.isfinite(v)]
    report[family.name] = {
        'schema': schema,
        'zero_threshold': h.zero_threshold,
        'count': h.sample_count,
        'sum': h.sample_sum if math.isfinite(h.sample_sum) else repr(h.sample_sum),
        # `+Inf` is listed when it carries an exemplar; JSON has no Infinity.
        'classic': [[b.upper_bound if math.isfinite(b.upper_bound) else repr(b.upper_bound), b.cumulative_count]
                    for b in h.bucket],
        'got': {
            'zero': h.zero_count,
            'positive': {str(k): v for k, v in expand(h.positive_span, h.positive_delta).items()},
            'negative': {str(k): v for k, v in expand(h.negative_span, h.negative_delta).items()},
        },
        'expected': expected,
        'expected_count': len(values),
        'expected_sum': exact_sum(finite) if len(finite) == len(values) else None,
    }
print(json.dumps(report))
"#;

/// What [`native_histograms`] found for one family.
pub struct NativeReport {
    pub schema: i64,
    pub json: serde_json::Value,
}

/// Checks every family of `observed` in the protobuf exposition `proto`
/// against the histogram of its observations (see [`NATIVE_SCRIPT`]):
/// panics with both sides when a bucket, the zero bucket, the count or
/// the threshold differs, or a family is missing. Returns each family's
/// report.
pub fn check_native(
    python: &Path,
    work: &Path,
    proto: &[u8],
    observed: &[(&str, Vec<f64>)],
) -> std::collections::BTreeMap<String, NativeReport> {
    let wanted: serde_json::Map<String, serde_json::Value> = observed
        .iter()
        .map(|(name, values)| ((*name).to_owned(), values.iter().map(|v| v.to_bits()).collect::<Vec<u64>>().into()))
        .collect();
    let path = work.join(format!("observed-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::Value::Object(wanted).to_string()).unwrap();
    let declarations = &SCRIPT[..SCRIPT.find("def known").expect("the declarations end before `known`")];
    let args = [OsStr::new("-c"), OsStr::new(NATIVE_SCRIPT), path.as_os_str(), OsStr::new(declarations)];
    let output = run_with_stdin_bytes(python, &args, proto);
    let _ = std::fs::remove_file(&path);
    assert!(output.status.success(), "the native oracle failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the oracle printed JSON");
    let mut reports = std::collections::BTreeMap::new();
    for (name, values) in observed {
        let report = &json[*name];
        assert!(report.is_object(), "{name}: not in the protobuf exposition");
        assert_eq!(report["zero_threshold"].as_f64(), Some(2f64.powi(-128)), "{name}: zero threshold");
        assert_eq!(report["got"], report["expected"], "{name}: buckets differ from the observations'\n{report:#}");
        assert_eq!(report["count"], report["expected_count"], "{name}: count\n{report:#}");
        let nan = values.iter().filter(|v| v.is_nan()).count();
        assert_eq!(report["count"].as_u64(), Some((values.len() - nan) as u64), "{name}: count");
        reports.insert(
            (*name).to_owned(),
            NativeReport { schema: report["schema"].as_i64().unwrap(), json: report.clone() },
        );
    }
    reports
}
