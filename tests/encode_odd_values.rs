//! The encoder's fast path (`encode/line.rs`, `plan.rs`'s `encode_plain`)
//! against parsers we did not write, over label values it must copy and
//! escape exactly: empty ones, ones full of characters to escape, ones
//! past the inline copy's 256 bytes and past 64 KiB, eight long labels
//! on one series, UTF-8 metric and label names; gauges holding NaN, ±Inf,
//! -0.0 and subnormals; counters with huge counts and float fractions.
//! Every scrape is appended to a buffer that already holds bytes and has
//! an odd capacity, and is read back by Python's 0.0.4 and OpenMetrics
//! parsers and `promtool check metrics`, sample by sample against a
//! model of what was recorded. Then threads record while others scrape.
//! The seed is printed; `PROMSHARD_SEED` replays one.

mod rng;
mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

use promshard::{Counter, Escaping, Exposition, Gauge, LabelValue, Protocol, metric};
use rng::Rng;
use support::{
    PROMTOOL_MISSING, PYTHON_MISSING, promtool, python_with_prometheus_client, run_python, run_with_stdin,
    skip_or_fail, unhex,
};

/// `n` bytes of text in which every third byte needs escaping.
const fn escapes<const N: usize>() -> [u8; N] {
    let pattern = *b"a\"b\\c\nd";
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = pattern[i % pattern.len()];
        i += 1;
    }
    out
}

const fn text(bytes: &'static [u8]) -> &'static str {
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => panic!("ASCII"),
    }
}

static ESC_250: [u8; 250] = escapes::<250>();
static ESC_257: [u8; 257] = escapes::<257>();
static ESC_70K: [u8; 70_001] = escapes::<70_001>();
static PLAIN_300: [u8; 300] = [b'p'; 300];
static PLAIN_66K: [u8; 66_000] = [b'q'; 66_000];

#[derive(Clone, Copy)]
struct Odd(usize);

impl LabelValue for Odd {
    const VALUES: &'static [&'static str] = &[
        "",
        "plain",
        "a\"b",
        "back\\slash",
        "new\nline",
        "}{,=\" # ",
        "caf\u{e9} \u{4e2d} \u{1F600}",
        "\\n is not a newline",
        "exactly sixteen!",
        text(&ESC_250),
        text(&ESC_257),
        text(&PLAIN_300),
        text(&PLAIN_66K),
        text(&ESC_70K),
    ];
    fn index(self) -> usize {
        self.0
    }
}

/// One value only, long, for a series with many labels.
#[derive(Clone, Copy)]
struct One;

impl LabelValue for One {
    const VALUES: &'static [&'static str] = &["some value, with \"quotes\" and \\ and \n, on eight labels"];
    fn index(self) -> usize {
        0
    }
}

/// A second label's values: short, needing escapes.
#[derive(Clone, Copy)]
struct Short(usize);

impl LabelValue for Short {
    const VALUES: &'static [&'static str] = &["", "x", "\\\"\n", "GET"];
    fn index(self) -> usize {
        self.0
    }
}

/// Requests.
#[metric(labels(a: Odd, b: Short))]
static ODD_REQUESTS_TOTAL: Counter;

/// Levels (in multiprocess mode, one process's: `sum` of one).
#[metric(mode = sum, labels(a: Odd))]
static ODD_LEVEL: Gauge;

/// A counter with UTF-8 names.
#[metric(name = "odd.events", labels("label.ü": Odd))]
static ODD_EVENTS: Counter;

/// Eight labels, the most a metric can have.
#[metric(mode = sum, labels(l00: One, l01: One, l02: One, l03: One, l04: One, l05: One, l06: One, l07: One))]
static ODD_WIDE: Gauge;

const N: usize = Odd::VALUES.len();
const M: usize = Short::VALUES.len();

/// What was recorded: each counter series' whole count and float part
/// (added in the order the counter adds them), each gauge's last value.
struct Model {
    requests: Vec<(u64, f64)>,
    events: Vec<(u64, f64)>,
    level: Vec<f64>,
    wide: f64,
}

impl Rng {
    fn awkward(&mut self) -> f64 {
        match self.below(8) {
            0 => self.pick(&[
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                -0.0,
                0.0,
                5e-324,
                f64::MIN_POSITIVE / 3.0,
                -f64::MIN_POSITIVE,
                f64::MAX,
                f64::MIN,
                1e15,
                -1e15,
                999_999_999_999_999.0,
                1e15 + 1.0,
                9_007_199_254_740_993.0,
                0.1,
            ]),
            1 => self.below(1_000_000) as f64,
            2 => -(self.below(1000) as f64) / 8.0,
            _ => f64::from_bits(self.next()),
        }
    }

    fn increment(&mut self) -> (Option<u64>, Option<f64>) {
        match self.below(6) {
            0 => (Some(self.next() >> 8), None),
            1 => (Some(u64::MAX / 64), None),
            2 => (None, Some(self.unit() * 1000.0)),
            3 => (None, Some(f64::from_bits(self.next() >> 2).abs())),
            4 => (None, Some(self.pick(&[1e300, 5e-324, 0.1, 1e-300, 2.5]))),
            _ => (Some(self.below(10)), None),
        }
    }
}

fn record(rng: &mut Rng, model: &mut Model) {
    for _ in 0..40 {
        match rng.below(4) {
            0 => {
                let (a, b) = (rng.below(N as u64) as usize, rng.below(M as u64) as usize);
                let series = ODD_REQUESTS_TOTAL.with((Odd(a), Short(b)));
                let slot = &mut model.requests[a * M + b];
                match rng.increment() {
                    (Some(n), _) => {
                        series.inc_by(n);
                        slot.0 = slot.0.wrapping_add(n);
                    }
                    (_, Some(v)) => {
                        series.inc_by_f64(v).unwrap();
                        slot.1 += v;
                    }
                    _ => unreachable!(),
                }
            }
            1 => {
                let a = rng.below(N as u64) as usize;
                let series = ODD_EVENTS.with((Odd(a),));
                match rng.increment() {
                    (Some(n), _) => {
                        series.inc_by(n);
                        model.events[a].0 = model.events[a].0.wrapping_add(n);
                    }
                    (_, Some(v)) => {
                        series.inc_by_f64(v).unwrap();
                        model.events[a].1 += v;
                    }
                    _ => unreachable!(),
                }
            }
            2 => {
                let a = rng.below(N as u64) as usize;
                let v = rng.awkward();
                ODD_LEVEL.with((Odd(a),)).set(v);
                model.level[a] = v;
            }
            _ => {
                let v = rng.awkward();
                ODD_WIDE.with((One, One, One, One, One, One, One, One)).set(v);
                model.wide = v;
            }
        }
    }
}

/// `sample name` + sorted `label=hex value` pairs → the value recorded.
type Samples = BTreeMap<String, f64>;

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", hex(v))).collect();
    pairs.sort();
    format!("{name}\t{}", pairs.join("\t"))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// What a scrape should show, with the sample names `escaping` writes.
fn expected(model: &Model, escaping: Escaping) -> Samples {
    let utf8 = escaping == Escaping::AllowUtf8;
    let (events, label) = if utf8 { ("odd.events_total", "label.ü") } else { ("odd_events_total", "label__") };
    // Only these two schemes are scraped.
    assert!(matches!(escaping, Escaping::AllowUtf8 | Escaping::Underscores));
    let mut samples = Samples::new();
    for (a, value) in Odd::VALUES.iter().copied().enumerate() {
        for (b, short) in Short::VALUES.iter().copied().enumerate() {
            let (count, fraction) = model.requests[a * M + b];
            samples.insert(key("odd_requests_total", &[("a", value), ("b", short)]), total(count, fraction));
        }
        let (count, fraction) = model.events[a];
        samples.insert(key(events, &[(label, value)]), total(count, fraction));
        samples.insert(key("odd_level", &[("a", value)]), model.level[a]);
    }
    let wide: Vec<(String, &str)> = (0..8).map(|i| (format!("l{i:02}"), One::VALUES[0])).collect();
    let wide: Vec<(&str, &str)> = wide.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    samples.insert(key("odd_wide", &wide), model.wide);
    samples
}

/// A counter's total as the library defines it: the whole count, then the
/// float part added to it.
fn total(count: u64, fraction: f64) -> f64 {
    count as f64 + fraction
}

/// Prints `name<TAB>repr(value)<TAB>label=hex…` for every sample of our
/// families.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = {"prometheus": prometheus, "openmetrics": openmetrics}[sys.argv[1]]
out = []
for family in parse(sys.stdin.buffer.read().decode("utf-8")):
    for s in family.samples:
        if not s.name.startswith("odd"):
            continue
        fields = [s.name, repr(float(s.value))] + [k + "=" + v.encode().hex() for k, v in s.labels.items()]
        out.append("\t".join(fields))
sys.stdout.write("".join(line + "\n" for line in out))
"#;

fn parse_with_python(python: &Path, parser: &str, text: &str) -> Samples {
    let code = format!("import sys; sys.argv = ['-', '{parser}']\n{PARSE}");
    let printed = run_python(python, &code, text);
    let mut samples = Samples::new();
    for line in printed.lines() {
        let mut fields = line.split('\t');
        let name = fields.next().unwrap();
        let value = match fields.next().unwrap() {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap(),
        };
        let pairs: Vec<(String, String)> = fields
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), unhex(v))
            })
            .collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let previous = samples.insert(key(name, &pairs), value);
        assert!(previous.is_none(), "{parser}: sample {name} {pairs:?} read twice");
    }
    samples
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn compare(what: &str, seed: u64, want: &Samples, got: &Samples) {
    let mut problems = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => problems.push(format!("missing {}", k.chars().take(200).collect::<String>())),
            Some(g) if !same(*w, *g) => {
                problems.push(format!("{}: want {w:?}, read {g:?}", k.chars().take(200).collect::<String>()))
            }
            Some(_) => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        problems.push(format!("unexpected {}", k.chars().take(200).collect::<String>()));
    }
    assert!(
        problems.is_empty(),
        "seed {seed}, {what}: {} problems:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
}

/// Encodes into a buffer that already holds `junk` and has an odd spare
/// capacity; checks the junk is intact and returns the rest.
fn encode_after_junk(rng: &mut Rng, x: Exposition) -> String {
    let junk: Vec<u8> = (0..rng.below(40)).map(|i| b'!' + (i % 90) as u8).collect();
    let capacity = junk.len() + rng.pick(&[0usize, 1, 3, 7, 255, 257, 4095, 65_537]);
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&junk);
    promshard::encode_into(x, &mut out);
    assert_eq!(&out[..junk.len()], &junk[..], "the bytes before the scrape changed");
    String::from_utf8(out[junk.len()..].to_vec()).expect("the exposition is UTF-8")
}

fn seed() -> u64 {
    let seed = std::env::var("PROMSHARD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("seed {seed} (PROMSHARD_SEED={seed} replays it)");
    seed
}

#[test]
fn odd_values_read_back_exactly_through_every_parser() {
    let Some(python) = python_with_prometheus_client() else {
        return skip_or_fail(PYTHON_MISSING);
    };
    let promtool = promtool();
    if promtool.is_none() {
        skip_or_fail(PROMTOOL_MISSING);
    }
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut model =
        Model { requests: vec![(0, 0.0); N * M], events: vec![(0, 0.0); N], level: vec![0.0; N], wide: 0.0 };
    for round in 0..4 {
        record(&mut rng, &mut model);
        let scrapes = [
            ("prometheus", Exposition::new(Protocol::PrometheusText0_0_4, Escaping::Underscores)),
            ("prometheus", Exposition::new(Protocol::PrometheusText1_0_0, Escaping::AllowUtf8)),
            ("openmetrics", Exposition::new(Protocol::OpenMetricsText1_0_0, Escaping::Underscores)),
            ("openmetrics", Exposition::new(Protocol::OpenMetricsText1_0_0, Escaping::AllowUtf8)),
        ];
        for (parser, x) in scrapes {
            let text = encode_after_junk(&mut rng, x);
            let what = format!("round {round}, {x:?}");
            let got = parse_with_python(&python, parser, &text);
            compare(&what, seed, &expected(&model, x.escaping()), &got);
            if let (Some(promtool), Escaping::Underscores, "prometheus") = (&promtool, x.escaping(), parser) {
                let output = run_with_stdin(promtool, &[OsStr::new("check"), OsStr::new("metrics")], &text);
                let stderr = String::from_utf8_lossy(&output.stderr);
                // Lint findings (exit 3) are about names and help; a parse
                // error is a failure (exit 1).
                assert!(
                    output.status.success()
                        || !stderr.contains("error while linting") && output.status.code() == Some(3),
                    "seed {seed}, {what}: promtool: {}\n{stderr}",
                    output.status
                );
            }
        }
    }
}

/// The same model in multiprocess mode: this test again, in a child
/// process with `PROMSHARD_DIR` set, so that every scrape is the merge of
/// the shard directory (the long values in the shard's schema).
#[test]
fn odd_values_read_back_exactly_in_multiprocess_mode() {
    if std::env::var_os(promshard::multiprocess::DIR_ENV).is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("promshard-odd-values-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "odd_values_read_back_exactly_through_every_parser", "--nocapture"])
        .env(promshard::multiprocess::DIR_ENV, &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "in multiprocess mode:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the test ran in the child:\n{stdout}\n{stderr}");
}

/// Counted by racing threads, under long label values.
#[metric(labels(a: Odd))]
static RACE_HITS_TOTAL: Counter;

/// Counted by racing threads, under values first seen while scraped.
#[metric(labels(route = bounded(40)))]
static RACE_ROUTES_TOTAL: Counter;

fn escaped(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
}

/// A route value: short, long (up to the 256 bytes a bounded value may
/// have), needing escapes, or past the limit (counted in `other`).
fn route(n: u64) -> String {
    match n % 4 {
        0 => format!("r{n}"),
        1 => format!("{n}\"\\\n{}", "x".repeat((n as usize * 7) % 240)),
        2 => format!("{n}{}", "y".repeat(250)),
        _ => format!("{n}{}", "z".repeat(300)),
    }
}

/// Threads record (counts, and bounded values never seen before) while
/// other threads scrape, in both text formats into buffers of odd
/// capacities: every line of every scrape is whole, every label value is
/// one that was recorded, no count goes down between two scrapes of one
/// thread, and the last scrape holds every count.
#[test]
fn scrapes_are_whole_while_threads_record() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seed = seed();
    const RECORDERS: u64 = 3;
    let hits: HashMap<String, usize> =
        (0..N).map(|a| (format!("race_hits_total{{a=\"{}\"}}", escaped(Odd::VALUES[a])), a)).collect();
    let routes: HashMap<String, ()> = (0..RECORDERS * 100)
        .map(|n| (format!("race_routes_total{{route=\"{}\"}}", escaped(&route(n))), ()))
        .chain([("race_routes_total{route=\"other\"}".to_owned(), ())])
        .collect();
    let check = |text: &str, last: &mut HashMap<String, u64>| {
        for line in text.lines().filter(|l| l.starts_with("race_")) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("seed {seed}: no value: {line:.300}"));
            let value: u64 = value.parse().unwrap_or_else(|_| panic!("seed {seed}: value of {line:.300}"));
            assert!(
                hits.contains_key(series) || routes.contains_key(series),
                "seed {seed}: a series never recorded: {series:.400}"
            );
            let before = last.insert(series.to_owned(), value).unwrap_or(0);
            assert!(value >= before, "seed {seed}: {series:.300} went from {before} to {value}");
        }
    };
    // Recorders go on until the scrapers have made `SCRAPES` scrapes
    // between them, so that every scrape overlaps recording.
    const SCRAPES: usize = 24;
    let scraped = AtomicUsize::new(0);
    let (hit_count, route_count) = std::thread::scope(|s| {
        let recorders: Vec<_> = (0..RECORDERS)
            .map(|t| {
                let scraped = &scraped;
                s.spawn(move || {
                    let mut rng = Rng::new(seed ^ (t + 1));
                    let (mut hits, mut routes) = (0u64, 0u64);
                    while scraped.load(Ordering::Relaxed) < SCRAPES {
                        RACE_HITS_TOTAL.with((Odd(rng.below(N as u64) as usize),)).inc();
                        hits += 1;
                        if hits % 300 == 0 && routes < 100 {
                            RACE_ROUTES_TOTAL.with((route(t * 100 + routes).as_str(),)).inc();
                            routes += 1;
                        }
                    }
                    (hits, routes)
                })
            })
            .collect();
        for t in 0..2u64 {
            let (scraped, check) = (&scraped, &check);
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (t + 100));
                let mut last = HashMap::new();
                while scraped.load(Ordering::Relaxed) < SCRAPES {
                    let protocol = rng.pick(&[Protocol::PrometheusText0_0_4, Protocol::OpenMetricsText1_0_0]);
                    let text = encode_after_junk(&mut rng, Exposition::new(protocol, Escaping::Underscores));
                    check(&text, &mut last);
                    scraped.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        recorders.into_iter().map(|r| r.join().unwrap()).fold((0, 0), |(h, r), (h1, r1)| (h + h1, r + r1))
    });
    let text =
        encode_after_junk(&mut Rng::new(seed), Exposition::new(Protocol::PrometheusText0_0_4, Escaping::Underscores));
    let mut last = HashMap::new();
    check(&text, &mut last);
    let counted: u64 = last.iter().filter(|(k, _)| hits.contains_key(*k)).map(|(_, v)| v).sum();
    assert_eq!(counted, hit_count, "seed {seed}: every hit counted");
    let routed: u64 = last.iter().filter(|(k, _)| routes.contains_key(*k)).map(|(_, v)| v).sum();
    assert_eq!(routed, route_count, "seed {seed}: every route counted");
}
