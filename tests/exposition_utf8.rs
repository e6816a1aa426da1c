//! Metric and label names beyond the legacy character set, as
//! OpenTelemetry's conventions name them (`http.server.request.duration`),
//! rendered under every escaping scheme a scraper may ask for: the
//! examples of Prometheus' specs, whole families written out by hand,
//! Python's parsers and escaping functions over random names (seeded,
//! the seed printed), promtool, and a real Prometheus server.

mod rng;
mod support;

use std::ffi::OsStr;
use std::sync::Mutex;

use promshard::{
    Collector, Counter, Enum, Escaping, Exposition, Format, Gauge, Histogram, LabelValue, MetricWriter, Protocol,
    metric,
};
use rng::Rng;
use support::{PROMTOOL_MISSING, PYTHON_MISSING, promtool, python_with_prometheus_client, run_python, skip_or_fail};

/// Duration of HTTP server requests.
#[metric(name = "http.server.request.duration", labels("http.request.method" = ["GET", "POST"]), buckets = [0.1, 1e6])]
static DURATION: Histogram;

/// HTTP server requests by route.
#[metric(name = "http.server.requests", labels("http.route" = bounded(4)))]
static REQUESTS: Counter;

/// Items, by a label with a dotted name.
#[metric(labels("server.address" = ["a:1"]))]
static UTF8_LABELLED_ITEMS: Gauge;

#[derive(Clone, Copy, LabelValue)]
enum Phase {
    Starting,
    Serving,
}

/// The server's phase.
#[metric(name = "server.phase")]
static PHASE: Enum<Phase>;

/// The examples of the specs, as a collector writes them: Prometheus'
/// escaping schemes page, its text format page, and OpenMetrics 2.0.
struct SpecExamples;

impl Collector for SpecExamples {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        out.gauge("metric.name/with/slashes", "Slashes.").sample(&[], 1.0);
        out.gauge("metric.name.with.dots", "Dots.").sample(&[], 2.0);
        out.gauge("metric.name", "A dot.").sample(&[], 3.0);
        out.gauge("my.dotted.metric", "Dotted.").sample(&[("error.message", "Not Found")], 4.0);
        out.counter("foodb.read.errors", "The number of errors in the read path for fooDb.")
            .sample(&[("service.name", "my_service")], 3482.0);
        // Canonical bounds from a collector too (the spec's examples).
        out.histogram("canonical.bounds", "Bounds.").histogram(&[], &[(1e-7, 1), (0.005, 1), (1.0, 2), (1e6, 3)], 1.5);
    }
}

/// Families a test sets at run time (the model test's random names).
static RANDOM: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct RandomNames;

impl Collector for RandomNames {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        for (i, (name, label)) in RANDOM.lock().unwrap().iter().enumerate() {
            out.gauge(name, "Random.").sample(&[(label.as_str(), "v")], i as f64);
        }
    }
}

static SPEC_EXAMPLES: SpecExamples = SpecExamples;
static RANDOM_NAMES: RandomNames = RandomNames;
promshard::register_collector!(SPEC_EXAMPLES);
promshard::register_collector!(RANDOM_NAMES);

/// Records the values every test expects, once per process (the tests
/// run in parallel on one registry).
fn record() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        DURATION.with(("GET",)).observe(0.05);
        DURATION.with(("POST",)).observe(2.0);
        REQUESTS.with(("/users/{id}",)).inc();
        UTF8_LABELLED_ITEMS.with(("a:1",)).set(7.0);
        PHASE.set(Phase::Starting);
        PHASE.set(Phase::Serving);
    });
}

fn text(x: Exposition) -> String {
    String::from_utf8(promshard::encode(x)).unwrap()
}

fn all() -> Vec<Exposition> {
    let protocols = [Protocol::PrometheusText1_0_0, Protocol::OpenMetricsText1_0_0];
    protocols.into_iter().flat_map(|p| Escaping::ALL.map(|e| Exposition::new(p, e))).collect()
}

/// The lines of `text` from the one starting with `first` to the next
/// `# HELP` (or `# EOF`).
fn family<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| *l != first);
    let head = lines.next().unwrap_or_else(|| panic!("no line {first:?} in:\n{text}"));
    std::iter::once(head).chain(lines.take_while(|l| !l.starts_with("# HELP") && *l != "# EOF")).collect()
}

#[test]
fn the_specs_examples_in_every_scheme() {
    record();
    let om = |e| text(Exposition::new(Protocol::OpenMetricsText1_0_0, e));
    let underscores = om(Escaping::Underscores);
    assert!(underscores.contains("\nmetric_name_with_slashes 1\n"), "{underscores}");
    let dots = om(Escaping::Dots);
    assert!(dots.contains("\nmetric_dot_name_dot_with_dot_dots 2\n"), "{dots}");
    // The page writes `2E`; Go's and Python's implementations write `2e`.
    let values = om(Escaping::Values);
    assert!(values.contains("\nU__metric_2e_name 3\n"), "{values}");
    // The text format page's example, without its blank after the comma.
    let utf8 = text(Exposition::new(Protocol::PrometheusText1_0_0, Escaping::AllowUtf8));
    assert!(utf8.contains("\n{\"my.dotted.metric\",\"error.message\"=\"Not Found\"} 4\n"), "{utf8}");
    for le in ["1e-07", "0.005", "1.0", "1e+06", "+Inf"] {
        assert!(underscores.contains(&format!("\ncanonical_bounds_bucket{{le=\"{le}\"}} ")), "{le}: {underscores}");
    }
    // OpenMetrics 2.0's, with the 1.0 counter's `_total` sample.
    assert_eq!(
        family(
            &om(Escaping::AllowUtf8),
            "# HELP \"foodb.read.errors\" The number of errors in the read path for fooDb."
        ),
        [
            "# HELP \"foodb.read.errors\" The number of errors in the read path for fooDb.",
            "# TYPE \"foodb.read.errors\" counter",
            "{\"foodb.read.errors_total\",\"service.name\"=\"my_service\"} 3482",
        ]
    );
}

/// Whole families under each scheme, written out by hand.
#[test]
fn declared_families_in_every_scheme() {
    record();
    let histogram = |x: Exposition, name: &str, bucket: &str, count: &str, sum: &str, method: &str| {
        let help = format!("# HELP {name} Duration of HTTP server requests.");
        let mut lines = vec![help.clone(), format!("# TYPE {name} histogram")];
        for (value, le) in [("GET", ["1", "1", "1"]), ("POST", ["0", "1", "1"])] {
            let quoted = bucket.starts_with('"');
            let sample = |sample: &str, extra: &str, v: &str| {
                let labels = format!("{method}=\"{value}\"{extra}");
                if quoted { format!("{{{sample},{labels}}} {v}") } else { format!("{sample}{{{labels}}} {v}") }
            };
            for (bound, n) in ["0.1", "1e+06", "+Inf"].iter().zip(le) {
                lines.push(sample(bucket, &format!(",le=\"{bound}\""), n));
            }
            lines.push(sample(count, "", "1"));
            lines.push(sample(sum, "", if value == "GET" { "0.05" } else { "2" }));
        }
        assert_eq!(family(&text(x), &help), lines, "{x:?}");
    };
    let d = "http.server.request.duration";
    for x in all() {
        match x.escaping() {
            Escaping::AllowUtf8 => histogram(
                x,
                &format!("\"{d}\""),
                &format!("\"{d}_bucket\""),
                &format!("\"{d}_count\""),
                &format!("\"{d}_sum\""),
                "\"http.request.method\"",
            ),
            Escaping::Underscores => {
                let n = "http_server_request_duration";
                histogram(
                    x,
                    n,
                    &format!("{n}_bucket"),
                    &format!("{n}_count"),
                    &format!("{n}_sum"),
                    "http_request_method",
                )
            }
            Escaping::Dots => {
                let n = "http_dot_server_dot_request_dot_duration";
                let m = "http_dot_request_dot_method";
                histogram(x, n, &format!("{n}_bucket"), &format!("{n}_count"), &format!("{n}_sum"), m)
            }
            Escaping::Values => {
                let n = "U__http_2e_server_2e_request_2e_duration";
                let m = "U__http_2e_request_2e_method";
                histogram(x, n, &format!("{n}_bucket"), &format!("{n}_count"), &format!("{n}_sum"), m)
            }
        }
    }
    // A legacy family name with a UTF-8 label, a bounded label, an enum
    // whose state label is its own dotted name.
    let om = text(Exposition::new(Protocol::OpenMetricsText1_0_0, Escaping::AllowUtf8));
    assert!(om.contains("\nutf8_labelled_items{\"server.address\"=\"a:1\"} 7\n"), "{om}");
    assert!(om.contains("\n{\"http.server.requests_total\",\"http.route\"=\"/users/{id}\"} 1\n"), "{om}");
    assert!(om.contains("\n# TYPE \"server.phase\" stateset\n"), "{om}");
    assert!(om.contains("\n{\"server.phase\",\"server.phase\"=\"serving\"} 1\n"), "{om}");
    assert!(om.contains("\n{\"server.phase\",\"server.phase\"=\"starting\"} 0\n"), "{om}");
    let legacy = text(Exposition::from(Format::Prometheus));
    assert!(legacy.contains("\nutf8_labelled_items{server_address=\"a:1\"} 7\n"), "{legacy}");
    assert!(legacy.contains("\n# TYPE http_server_requests_total counter\n"), "{legacy}");
    assert!(legacy.contains("\nhttp_server_requests_total{http_route=\"/users/{id}\"} 1\n"), "{legacy}");
    assert!(legacy.contains("\nserver_phase{server_phase=\"serving\"} 1\n"), "{legacy}");
    // A Format is the legacy rendering (the process metrics aside: the
    // open descriptors change between two scrapes while other tests run).
    let steady = |text: &str| text.lines().filter(|l| !l.contains("process_")).collect::<Vec<_>>().join("\n");
    assert_eq!(steady(&legacy), steady(&text(Exposition::new(Protocol::PrometheusText0_0_4, Escaping::AllowUtf8))));
}

/// Python's parser of each format returns what we wrote: under
/// `allow-utf-8` the names as declared, under the others the escaped ones.
const PARSE: &str = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = {"prometheus": prometheus, "openmetrics": openmetrics}[sys.argv[1]]
out = []
for family in parse(sys.stdin.read()):
    for s in family.samples:
        out.append([family.name, family.type, s.name, sorted(s.labels.items()), s.value])
print(json.dumps(out))
"#;

fn python_parse(python: &std::path::Path, x: Exposition, text: &str) -> Vec<serde_json::Value> {
    let parser = match x.format() {
        Format::Prometheus => "prometheus",
        Format::OpenMetrics => "openmetrics",
        Format::Protobuf => unreachable!("text formats only"),
    };
    let code = format!("import sys\nsys.argv = ['', {parser:?}]\n{PARSE}");
    let printed = run_python(python, &code, text);
    serde_json::from_str::<serde_json::Value>(&printed).unwrap().as_array().unwrap().clone()
}

/// The parsed sample `name` with `labels`, as `(family, type, value)`.
fn find(parsed: &[serde_json::Value], name: &str, labels: &[(&str, &str)]) -> Option<(String, String, f64)> {
    let want: Vec<serde_json::Value> = {
        let mut l: Vec<_> = labels.to_vec();
        l.sort();
        l.iter().map(|(k, v)| serde_json::json!([k, v])).collect()
    };
    parsed.iter().find_map(|s| {
        let s = s.as_array()?;
        (s[2] == name && s[3].as_array()? == &want)
            .then(|| (s[0].as_str().unwrap().to_owned(), s[1].as_str().unwrap().to_owned(), s[4].as_f64().unwrap()))
    })
}

#[test]
fn pythons_parsers_read_every_scheme() {
    let Some(python) = python_with_prometheus_client() else { return skip_or_fail(PYTHON_MISSING) };
    record();
    for x in all() {
        let text = text(x);
        let parsed = python_parse(&python, x, &text);
        let (d, m, route) = match x.escaping() {
            Escaping::AllowUtf8 => ("http.server.request.duration", "http.request.method", "http.route"),
            Escaping::Underscores => ("http_server_request_duration", "http_request_method", "http_route"),
            Escaping::Dots => {
                ("http_dot_server_dot_request_dot_duration", "http_dot_request_dot_method", "http_dot_route")
            }
            Escaping::Values => {
                ("U__http_2e_server_2e_request_2e_duration", "U__http_2e_request_2e_method", "U__http_2e_route")
            }
        };
        let bucket = find(&parsed, &format!("{d}_bucket"), &[(m, "POST"), ("le", "1e+06")]);
        assert_eq!(bucket, Some((d.to_owned(), "histogram".to_owned(), 1.0)), "{x:?}:\n{text}");
        let requests = d.replace("request_2e_duration", "requests").replace("request_dot_duration", "requests");
        let requests = requests.replace("request.duration", "requests").replace("request_duration", "requests");
        let total = find(&parsed, &format!("{requests}_total"), &[(route, "/users/{id}")]);
        assert_eq!(total, Some((requests.clone(), "counter".to_owned(), 1.0)), "{x:?}:\n{text}");
    }
}

#[test]
fn promtool_accepts_the_escaped_schemes() {
    let Some(promtool) = promtool() else { return skip_or_fail(PROMTOOL_MISSING) };
    record();
    // promtool 2.x reads the 0.0.4 syntax only: every scheme but
    // `allow-utf-8` writes names it can read.
    for escaping in [Escaping::Underscores, Escaping::Dots, Escaping::Values] {
        let text = text(Exposition::new(Protocol::PrometheusText1_0_0, escaping));
        let output = support::run_with_stdin(&promtool, &[OsStr::new("check"), OsStr::new("metrics")], &text);
        let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        // Exit status 1 is a parse error; 3 lints about names' style
        // (`U__…` "contains abbreviated units"), not syntax.
        assert_ne!(output.status.code(), Some(1), "{escaping:?}: promtool could not parse:\n{text}");
        // Lints about our names' style are not errors of the syntax.
        let errors: Vec<&str> = said.lines().filter(|l| l.contains("error")).collect();
        assert!(errors.is_empty(), "{escaping:?}: promtool: {said}\n--- input ---\n{text}");
        assert!(!said.contains("parse"), "{escaping:?}: promtool: {said}");
    }
}

impl Rng {
    /// A name of 1 to 12 characters drawn from legacy ones, the
    /// characters the schemes treat specially, quotes and backslashes,
    /// and characters beyond ASCII.
    fn name(&mut self) -> String {
        const CHARS: &[char] =
            &['a', 'Z', '_', ':', '0', '9', '.', '-', '/', ' ', '"', '\\', '{', '}', '=', ',', 'é', 'λ', '€', '😀'];
        let len = 1 + self.next() % 12;
        (0..len).map(|_| self.pick(CHARS)).collect()
    }
}

/// Python's escaping functions, for the schemes where Go's and Python's
/// implementations agree (see `encode::names`): each line `name\tlabel`
/// in, each line the escaped metric and label names out.
const ESCAPE: &str = r#"
import sys, json
from prometheus_client.openmetrics.exposition import escape_metric_name, escape_label_name
for line in sys.stdin.read().splitlines():
    scheme, name, label = json.loads(line)
    print(json.dumps([escape_metric_name(name, scheme), escape_label_name(label, scheme)]))
"#;

/// Random names through a collector, under every scheme: the names we
/// write are Python's (underscores, values, dots for names outside the
/// legacy set) and, under `allow-utf-8`, Python's parsers read back the
/// names themselves.
#[test]
fn random_names_agree_with_python() {
    let Some(python) = python_with_prometheus_client() else { return skip_or_fail(PYTHON_MISSING) };
    let seed = std::env::var("PROMSHARD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("random_names_agree_with_python: PROMSHARD_SEED={seed}");
    let mut rng = Rng(seed);
    let mut pairs: Vec<(String, String)> = Vec::new();
    while pairs.len() < 150 {
        // The index keeps the names apart under every scheme: a family
        // whose name another one's escaping takes is left out.
        let (name, label) = (format!("rnd{}x{}", pairs.len(), rng.name()), rng.name());
        // Names the rules refuse are dropped by the writer.
        if promshard::is_label_name(&label) && label != "le" && label != "quantile" {
            pairs.push((name, label));
        }
    }
    *RANDOM.lock().unwrap() = pairs.clone();
    for x in all() {
        let text = text(x);
        if x.escaping() == Escaping::AllowUtf8 {
            let parsed = python_parse(&python, x, &text);
            for (i, (name, label)) in pairs.iter().enumerate() {
                let found = find(&parsed, name, &[(label, "v")]);
                assert_eq!(
                    found,
                    Some((name.clone(), "gauge".to_owned(), i as f64)),
                    "seed {seed}: {name:?} {label:?}"
                );
            }
            continue;
        }
        let input: String =
            pairs.iter().map(|(n, l)| serde_json::json!([x.escaping().as_str(), n, l]).to_string() + "\n").collect();
        let escaped: Vec<(String, String)> =
            run_python(&python, ESCAPE, &input).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        for ((name, label), (metric, label_written)) in pairs.iter().zip(&escaped) {
            // Python's `dots` doubles the underscores of legacy names too,
            // which Go's does not (nor do we).
            let dots = x.escaping() == Escaping::Dots;
            let metric = if dots && promshard::is_legacy_metric_name(name) { name } else { metric };
            let label_written = if dots && promshard::is_legacy_label_name(label) { label } else { label_written };
            let line = format!("\n{metric}{{{label_written}=\"v\"}} ");
            assert!(text.contains(&line), "seed {seed}, {x:?}: {name:?} {label:?}: no {line:?} in\n{text}");
        }
    }
    RANDOM.lock().unwrap().clear();
}

/// Debian's Prometheus (2.42) knows no UTF-8 names and asks for none: it
/// scrapes the `underscores` rendering and stores the escaped names.
#[test]
fn a_prometheus_2_server_scrapes_the_escaped_names() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let Some(binary) = support::prometheus() else { return skip_or_fail(support::PROMETHEUS_MISSING) };
    record();
    let endpoint = promshard::serve("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("promshard-prometheus-utf8-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: utf8\n    \
             static_configs:\n      - targets: ['{}']\n",
            endpoint.local_addr()
        ),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Server(
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = |q: &str| -> Option<String> {
        let encoded: String = q
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET /api/v1/query?query={encoded} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let value = response.split("\"value\":[").nth(1)?.split_once(",\"")?.1;
        Some(value.split_once('"')?.0.to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while query("up{job=\"utf8\"}").as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "Prometheus never scraped us successfully");
        std::thread::sleep(Duration::from_millis(200));
    }
    let expect = [
        ("http_server_request_duration_bucket{http_request_method=\"POST\",le=\"0.1\"}", "0"),
        ("http_server_request_duration_bucket{http_request_method=\"POST\",le=\"1e+06\"}", "1"),
        ("http_server_request_duration_count{http_request_method=\"GET\"}", "1"),
        ("http_server_requests_total{http_route=\"/users/{id}\"}", "1"),
        ("utf8_labelled_items{server_address=\"a:1\"}", "7"),
        ("server_phase{server_phase=\"serving\"}", "1"),
        ("metric_name_with_slashes", "1"),
        ("my_dotted_metric{error_message=\"Not Found\"}", "4"),
    ];
    for (series, value) in expect {
        assert_eq!(query(series).as_deref(), Some(value), "{series}");
    }
    endpoint.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
