//! Our exposition checked by parsers we did not write: `promtool check
//! metrics` (the Go parser and linter Prometheus itself uses) and Python's
//! `prometheus_client` parsers, the lenient 0.0.4 one and the strict
//! OpenMetrics one. A missing tool skips the test loudly, or fails it under
//! `PROMSHARD_ORACLES=require` (see `support`).
//!
//! The Python side only parses and prints what it read, text hex-encoded;
//! every comparison happens here, against values written down by hand.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Once;

use promshard::{Counter, Enum, Format, Info, LabelValue, Opts};
use support::{
    PROMTOOL_MISSING, PYTHON_MISSING, promtool, python_with_prometheus_client, quickstart_output, run_python,
    run_with_stdin, skip_or_fail, unhex,
};

// ---------------------------------------------------------------------
// Running the oracles
// ---------------------------------------------------------------------

/// Parses stdin with the parser named by `PARSER` and prints, one per line:
/// `F <name> <type> <unit> <hex help>` for a family and
/// `S <name> <value> <timestamp|-> <exemplar|-> <label>=<hex value>…` for
/// each of its samples. Hex keeps arbitrary text byte-exact through a
/// line-based format.
const PARSE_SCRIPT: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics

parse = {"prometheus": prometheus, "openmetrics": openmetrics}[PARSER]
text = sys.stdin.buffer.read().decode("utf-8")

def hx(s):
    return s.encode("utf-8").hex()

out = []
for family in parse(text):
    out.append("\t".join(["F", family.name, family.type, family.unit, hx(family.documentation)]))
    for s in family.samples:
        fields = [
            "S",
            s.name,
            repr(float(s.value)),
            "-" if s.timestamp is None else repr(s.timestamp),
            "-" if s.exemplar is None else "exemplar",
        ]
        fields += [k + "=" + hx(v) for k, v in s.labels.items()]
        out.append("\t".join(fields))
sys.stdout.write("".join(line + "\n" for line in out))
"#;

#[derive(Debug, PartialEq)]
struct Family {
    name: String,
    kind: String,
    unit: String,
    help: String,
    samples: Vec<Sample>,
}

#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    /// Anything but `None` is a bug: we never write timestamps.
    timestamp: Option<String>,
    /// We never write exemplars.
    exemplar: bool,
}

fn family(name: &str, kind: &str, unit: &str, help: &str, samples: Vec<Sample>) -> Family {
    Family { name: name.into(), kind: kind.into(), unit: unit.into(), help: help.into(), samples }
}

fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
    Sample {
        name: name.into(),
        labels: labels.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect(),
        value,
        timestamp: None,
        exemplar: false,
    }
}

/// Parses `text` with Python's parser for `format`.
fn python_parse(python: &Path, format: Format, text: &str) -> Vec<Family> {
    let parser = match format {
        Format::Prometheus => "prometheus",
        Format::OpenMetrics => "openmetrics",
        Format::Protobuf => unreachable!("text formats only"),
    };
    let script = format!("PARSER = {parser:?}\n{PARSE_SCRIPT}");
    let printed = run_python(python, &script, text);
    let mut families: Vec<Family> = Vec::new();
    for line in printed.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["F", name, kind, unit, help] => families.push(family(name, kind, unit, &unhex(help), Vec::new())),
            ["S", name, value, timestamp, exemplar, labels @ ..] => {
                let labels = labels
                    .iter()
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=hex");
                        (k.to_owned(), unhex(v))
                    })
                    .collect();
                let sample = Sample {
                    name: (*name).to_owned(),
                    labels,
                    value: value.parse().unwrap_or_else(|_| panic!("value {value:?}")),
                    timestamp: (*timestamp != "-").then(|| (*timestamp).to_owned()),
                    exemplar: *exemplar != "-",
                };
                families.last_mut().expect("a sample before any family").samples.push(sample);
            }
            _ => panic!("unexpected line from the parse script: {line:?}"),
        }
    }
    families
}

/// The families whose name starts with `prefix`, in exposition order.
fn with_prefix(families: Vec<Family>, prefix: &str) -> Vec<Family> {
    families.into_iter().filter(|f| f.name.starts_with(prefix)).collect()
}

/// `assert_eq!` for parsed families, naming the first difference instead
/// of printing two whole expositions' worth of structs on one line.
#[track_caller]
fn assert_families_eq(got: &[Family], want: &[Family], context: &str) {
    let names = |fs: &[Family]| fs.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "family names; {context}");
    for (g, w) in got.iter().zip(want) {
        let header = |f: &Family| (f.kind.clone(), f.unit.clone(), f.help.clone());
        assert_eq!(header(g), header(w), "family {} (type, unit, help); {context}", w.name);
        for (i, (gs, ws)) in g.samples.iter().zip(&w.samples).enumerate() {
            assert_eq!(gs, ws, "family {} sample {i}; {context}", w.name);
        }
        assert_eq!(g.samples.len(), w.samples.len(), "family {} sample count; {context}", w.name);
    }
}

/// Runs `promtool check metrics` on `text` and asserts it is accepted with
/// no lint complaint at all.
fn assert_promtool_accepts(promtool: &Path, text: &str) {
    let output = run_with_stdin(promtool, &[OsStr::new("check"), OsStr::new("metrics")], text);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics rejected or linted our output ({}):\n\
         --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- input ---\n{text}",
        output.status,
    );
}

fn encoded(format: Format) -> String {
    String::from_utf8(promshard::encode(format)).expect("exposition is UTF-8")
}

// ---------------------------------------------------------------------
// a, b: the quickstart example
// ---------------------------------------------------------------------

/// What examples/quickstart.rs records before printing, written out again
/// here: `handle(method, status, seconds)` calls, then `IN_FLIGHT.add(2)`.
const QUICKSTART_REQUESTS: [(&str, &str, f64); 5] =
    [("get", "200", 0.003), ("get", "200", 0.02), ("get", "404", 0.001), ("post", "200", 0.3), ("post", "500", 2.0)];

/// The quickstart's own families as a parser should return them (the
/// process collector's `process_*` families are checked separately).
fn quickstart_expected(format: Format) -> Vec<Family> {
    let mut latency = Vec::new();
    let bounds = [
        ("0.005", 0.005),
        ("0.01", 0.01),
        ("0.05", 0.05),
        ("0.1", 0.1),
        ("0.5", 0.5),
        ("1.0", 1.0),
        ("+Inf", f64::INFINITY),
    ];
    for method in ["get", "post"] {
        let observed: Vec<f64> = QUICKSTART_REQUESTS.iter().filter(|r| r.0 == method).map(|r| r.2).collect();
        for (le, bound) in bounds {
            let count = observed.iter().filter(|&&s| s <= bound).count();
            latency.push(sample(
                "http_request_duration_seconds_bucket",
                &[("method", method), ("le", le)],
                count as f64,
            ));
        }
        latency.push(sample("http_request_duration_seconds_count", &[("method", method)], observed.len() as f64));
        // Summed in recording order, as the histogram does.
        let sum = observed.iter().fold(0.0, |acc, s| acc + s);
        latency.push(sample("http_request_duration_seconds_sum", &[("method", method)], sum));
    }
    let mut requests = Vec::new();
    for method in ["get", "post"] {
        for status in ["200", "404", "500"] {
            let n = QUICKSTART_REQUESTS.iter().filter(|r| r.0 == method && r.1 == status).count();
            requests.push(sample("http_requests_total", &[("method", method), ("status", status)], n as f64));
        }
    }
    // The list above must match the quickstart's documented
    // `http_requests_total{method="get",status="200"} 2`.
    assert_eq!(requests[0].value, 2.0);
    let unit = match format {
        Format::Prometheus => "",
        Format::OpenMetrics => "seconds",
        Format::Protobuf => unreachable!("text formats only"),
    };
    vec![
        family("http_request_duration_seconds", "histogram", unit, "Time to serve an HTTP request.", latency),
        // Both parsers name a counter family without `_total`.
        family("http_requests", "counter", "", "HTTP requests served, by method and status.", requests),
        family(
            "http_requests_in_flight",
            "gauge",
            "",
            "HTTP requests being served.",
            vec![sample("http_requests_in_flight", &[], 2.0)],
        ),
    ]
}

fn check_quickstart_families(format: Format, families: Vec<Family>) {
    let (process, rest): (Vec<Family>, Vec<Family>) =
        families.into_iter().partition(|f| f.name.starts_with("process_"));
    let (own, ours): (Vec<Family>, Vec<Family>) = rest.into_iter().partition(|f| f.name.starts_with("promshard_"));
    assert_families_eq(&ours, &quickstart_expected(format), &format!("{format:?}"));
    // promshard's own counters: collector errors and panics, and gauge
    // function panics, at zero; nothing refused
    // nor dropped, so those two families have no series, which both
    // parsers read as families without samples.
    let shape: Vec<(&str, &str, Vec<f64>)> =
        own.iter().map(|f| (f.name.as_str(), f.kind.as_str(), f.samples.iter().map(|s| s.value).collect())).collect();
    assert_eq!(
        shape,
        [
            ("promshard_collector_errors", "counter", vec![0.0]),
            ("promshard_collector_panics", "counter", vec![0.0]),
            ("promshard_label_refused", "counter", vec![]),
            ("promshard_observations_dropped", "counter", vec![]),
            ("promshard_set_function_panics", "counter", vec![0.0]),
        ],
        "{format:?}"
    );
    // The process collector's values vary; their shape does not.
    for family in &process {
        assert!(matches!(family.kind.as_str(), "counter" | "gauge"), "{family:?}");
        assert!(!family.help.is_empty(), "{family:?}");
        assert_eq!(family.samples.len(), 1, "{family:?}");
        let s = &family.samples[0];
        assert!(s.labels.is_empty() && s.timestamp.is_none() && !s.exemplar, "{s:?}");
        assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
    }
    if cfg!(target_os = "linux") {
        let names: Vec<&str> = process.iter().map(|f| f.name.as_str()).collect();
        for want in ["process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }
}

/// a. promtool parses and lints the 0.0.4 text without a single complaint.
#[test]
fn promtool_accepts_quickstart() {
    let Some(promtool) = promtool() else {
        return skip_or_fail(PROMTOOL_MISSING);
    };
    let text = quickstart_output(&[]);
    assert!(text.contains("http_requests_total{"), "{text}");
    assert_promtool_accepts(&promtool, &text);
}

/// b. Python's 0.0.4 parser reads back what the quickstart recorded.
#[test]
fn python_parses_quickstart_prometheus_text() {
    let Some(python) = python_with_prometheus_client() else {
        return skip_or_fail(PYTHON_MISSING);
    };
    let text = quickstart_output(&[]);
    let families = python_parse(&python, Format::Prometheus, &text);
    check_quickstart_families(Format::Prometheus, families);
}

/// b. The strict OpenMetrics parser reads back what the quickstart
/// recorded, with units.
#[test]
fn python_parses_quickstart_openmetrics() {
    let Some(python) = python_with_prometheus_client() else {
        return skip_or_fail(PYTHON_MISSING);
    };
    let text = quickstart_output(&["--openmetrics"]);
    assert!(text.ends_with("# EOF\n"), "{text}");
    let families = python_parse(&python, Format::OpenMetrics, &text);
    check_quickstart_families(Format::OpenMetrics, families);
}

// ---------------------------------------------------------------------
// c: escaping
// ---------------------------------------------------------------------

/// Label values that need every escape, and some that look like escapes
/// but are not.
#[derive(Clone, Copy)]
struct Tricky(usize);

impl LabelValue for Tricky {
    const VALUES: &'static [&'static str] = &[
        "plain",
        "say \"hi\"",
        "back\\slash",
        "two\nlines",
        "café",
        "日本",
        "\\n is a backslash and an n",
        "\\\"",
        "trailing\\",
        "\n\"\\ é,日本=}{ #",
    ];
    fn index(self) -> usize {
        self.0
    }
}

const TRICKY_HELP: &str = "Backslash \\ then\na newline, \"quotes\", \\n literally, é 日本.";

static ESCAPES: Counter<(Tricky,)> = Counter::new(Opts::new("oracle_escapes_total", TRICKY_HELP).labels(&["text"]));

promshard::register!(ESCAPES);

/// Series `i` of [`ESCAPES`] counts `i + 1`, so a value that comes back
/// attached to the wrong series shows. Returns the expected samples.
fn record_escapes() -> Vec<Sample> {
    // Two tests need these counts and may run at once: record them once.
    static RECORDED: Once = Once::new();
    RECORDED.call_once(|| {
        for i in 0..Tricky::VALUES.len() {
            ESCAPES.with((Tricky(i),)).inc_by(i as u64 + 1);
        }
    });
    Tricky::VALUES
        .iter()
        .enumerate()
        .map(|(i, value)| sample("oracle_escapes_total", &[("text", value)], (i + 1) as f64))
        .collect()
}

/// c. Label values and HELP with `"`, `\`, newlines and non-ASCII come
/// back byte-identical from both Python parsers.
#[test]
fn escaping_round_trips_through_python() {
    let Some(python) = python_with_prometheus_client() else {
        return skip_or_fail(PYTHON_MISSING);
    };
    let expected = record_escapes();
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let text = encoded(format);
        let families = with_prefix(python_parse(&python, format, &text), "oracle_escapes");
        assert_families_eq(
            &families,
            &[family("oracle_escapes", "counter", "", TRICKY_HELP, expected.clone())],
            &format!("{format:?}; the exposition was:\n{text}"),
        );
    }
}

/// c. promtool accepts the escaped 0.0.4 text too (and so everything else
/// this test binary declares).
#[test]
fn escaping_accepted_by_promtool() {
    let Some(promtool) = promtool() else {
        return skip_or_fail(PROMTOOL_MISSING);
    };
    record_escapes();
    record_info_and_enums();
    let text = encoded(Format::Prometheus);
    assert!(text.contains("oracle_escapes_total{text=\"two\\nlines\"}"), "{text}");
    assert_promtool_accepts(&promtool, &text);
}

// ---------------------------------------------------------------------
// d: Info and Enum
// ---------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Phase {
    Starting,
    Serving,
    Draining,
}

impl LabelValue for Phase {
    const VALUES: &'static [&'static str] = &["starting", "serving", "draining"];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy)]
enum Shard {
    A,
    B,
}

impl LabelValue for Shard {
    const VALUES: &'static [&'static str] = &["a", "b"];
    fn index(self) -> usize {
        self as usize
    }
}

static BUILD: Info = Info::new(Opts::new("oracle_build", "Build information."));
static PHASE: Enum<Phase> = Enum::new(Opts::new("oracle_phase", "Lifecycle phase."));
static SHARD_PHASE: Enum<Phase, (Shard,)> =
    Enum::new(Opts::new("oracle_shard_phase", "Lifecycle phase by shard.").labels(&["shard"]));

promshard::register!(BUILD, PHASE, SHARD_PHASE);

const BUILD_COMMIT: &str = "abc \"quoted\" \\ back\nslash 日本";

fn record_info_and_enums() {
    BUILD.set(&[("version", "1.2.3"), ("commit", BUILD_COMMIT)]);
    PHASE.set(Phase::Serving);
    SHARD_PHASE.with((Shard::A,)).set(Phase::Draining);
    SHARD_PHASE.with((Shard::B,)).set(Phase::Starting);
}

/// The Info and Enum families as a parser for `format` should return them.
fn info_and_enums_expected(format: Format) -> Vec<Family> {
    let states = |family: &str, labels: &[(&str, &str)], current: &str| -> Vec<Sample> {
        Phase::VALUES
            .iter()
            .map(|state| {
                let mut l = labels.to_vec();
                l.push((family, state));
                sample(family, &l, f64::from(u8::from(*state == current)))
            })
            .collect()
    };
    let mut shard_samples = states("oracle_shard_phase", &[("shard", "a")], "draining");
    shard_samples.extend(states("oracle_shard_phase", &[("shard", "b")], "starting"));
    let (info_family, info_type, stateset) = match format {
        // 0.0.4 has neither type: both are plain gauges, and the info
        // family is named after its sample.
        Format::Prometheus => ("oracle_build_info", "gauge", "gauge"),
        Format::OpenMetrics => ("oracle_build", "info", "stateset"),
        Format::Protobuf => unreachable!("text formats only"),
    };
    vec![
        family(
            info_family,
            info_type,
            "",
            "Build information.",
            vec![sample("oracle_build_info", &[("version", "1.2.3"), ("commit", BUILD_COMMIT)], 1.0)],
        ),
        family("oracle_phase", stateset, "", "Lifecycle phase.", states("oracle_phase", &[], "serving")),
        family("oracle_shard_phase", stateset, "", "Lifecycle phase by shard.", shard_samples),
    ]
}

/// d. Info and Enum come back as `info` and `stateset` from the strict
/// OpenMetrics parser, and as gauges from the 0.0.4 parser.
#[test]
fn info_and_enum_types_through_python() {
    let Some(python) = python_with_prometheus_client() else {
        return skip_or_fail(PYTHON_MISSING);
    };
    record_info_and_enums();
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let text = encoded(format);
        let mut families = with_prefix(python_parse(&python, format, &text), "oracle_");
        families.retain(|f| !f.name.starts_with("oracle_escapes"));
        assert_families_eq(
            &families,
            &info_and_enums_expected(format),
            &format!("{format:?}; the exposition was:\n{text}"),
        );
    }
}
