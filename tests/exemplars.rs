//! Exemplars in one process (memory mode): what OpenMetrics and protobuf
//! scrapes show, checked with parsers we did not write (Python's strict
//! OpenMetrics parser, Google's protobuf decoder); OpenMetrics' 128
//! character limit; metrics declared without exemplars; and threads
//! racing to write one series' exemplar while scrapes read it.
//!
//! Each test has metrics of its own: the tests of this file run in
//! parallel threads of one process.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use promshard::{Counter, Format, Histogram, metric};
use serde_json::{Value, json};

/// Orders, by kind.
#[metric(labels(kind = ["book", "pen"]), exemplars)]
static EX_ORDERS_TOTAL: Counter;

/// Render time.
#[metric(buckets = [0.1, 1.0], exemplars)]
static EX_RENDER_SECONDS: Histogram;

/// A counter declared without exemplars.
#[metric]
static EX_PLAIN_TOTAL: Counter;

/// A histogram declared without exemplars.
#[metric(buckets = [1.0])]
static EX_PLAIN_SECONDS: Histogram;

/// Label sets at OpenMetrics' limit.
#[metric(labels(case = ["at", "over", "name", "repeat"]), exemplars)]
static EX_LIMIT_TOTAL: Counter;

/// Written by racing threads.
#[metric(exemplars)]
static EX_RACE_TOTAL: Counter;

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn openmetrics() -> String {
    String::from_utf8(promshard::encode(Format::OpenMetrics)).unwrap()
}

/// The lines of family `family`'s samples in `text`.
fn lines_of<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(family) && !l.starts_with('#')).collect()
}

/// Python's strict OpenMetrics parser: every sample's exemplar as
/// `[sample, [[label, value]…], [[exemplar label, value]…], value as
/// float.hex(), seconds, nanos]`, sorted; the parser refuses the whole
/// text if anything in it breaks the format.
const STRICT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        e = s.exemplar
        if e is None:
            continue
        t = e.timestamp
        out.append([s.name, sorted([k, v] for k, v in s.labels.items()), sorted([k, v] for k, v in e.labels.items()),
                    float.hex(float(e.value)), t.sec, t.nsec])
print(json.dumps(sorted(out)))
"#;

fn strict_exemplars(python: &std::path::Path, text: &str) -> Value {
    serde_json::from_str(&support::run_python(python, STRICT, text)).expect("the parser printed JSON")
}

/// What we recorded appears, exactly, in both formats and to both
/// parsers; never in the Prometheus text format. (No `"` in the values:
/// prometheus_client 0.26's exemplar parser takes an escaped quote for
/// the end of the value and refuses the line; `sample.rs` tests that we
/// escape it.)
#[test]
fn openmetrics_and_protobuf_show_the_latest_exemplar() {
    let before = now_nanos();
    EX_ORDERS_TOTAL.with(("book",)).inc_with_exemplar(&[("trace_id", "first")]);
    EX_ORDERS_TOTAL.with(("book",)).inc_by_with_exemplar(3, &[("trace_id", "4bf92f35"), ("user", "é \\\n日")]);
    EX_ORDERS_TOTAL.with(("pen",)).inc();
    EX_RENDER_SECONDS.observe_with_exemplar(0.05, &[("trace_id", "fast")]);
    EX_RENDER_SECONDS.observe_with_exemplar(0.07, &[("trace_id", "fast2")]);
    EX_RENDER_SECONDS.observe_with_exemplar(0.5, &[]);
    EX_RENDER_SECONDS.observe_with_exemplar(f64::INFINITY, &[("trace_id", "inf")]);
    EX_RENDER_SECONDS.observe(2.0);
    let after = now_nanos();

    let text = openmetrics();
    let prometheus = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
    assert!(!prometheus.contains(" # {"), "exemplars in the Prometheus text format:\n{prometheus}");
    assert!(lines_of(&text, "ex_orders_total{kind=\"pen\"}")[0].ends_with(" 1"), "no exemplar on pen:\n{text}");

    let Some(python) = support::protobuf::python_or_skip() else { return };
    let strict = strict_exemplars(&python, &text);
    // This test's families only: the other tests record in parallel.
    let mine = |e: &&Value| ["ex_orders", "ex_render"].iter().any(|p| e[0].as_str().unwrap().starts_with(p));
    let ours: Vec<Value> = strict.as_array().unwrap().iter().filter(mine).cloned().collect();
    let stamp = |e: &Value| e[4].as_u64().unwrap() * 1_000_000_000 + e[5].as_u64().unwrap();
    for e in &ours {
        assert!((before..=after).contains(&stamp(e)), "timestamp outside the recording: {e}");
    }
    let without_stamps: Vec<Value> = ours.iter().map(|e| json!([e[0], e[1], e[2], e[3]])).collect();
    let h = |v: f64| Value::from(hex(v));
    let want = vec![
        json!(["ex_orders_total", [["kind", "book"]], [["trace_id", "4bf92f35"], ["user", "é \\\n日"]], h(3.0)]),
        json!(["ex_render_seconds_bucket", [["le", "+Inf"]], [["trace_id", "inf"]], h(f64::INFINITY)]),
        json!(["ex_render_seconds_bucket", [["le", "0.1"]], [["trace_id", "fast2"]], h(0.07)]),
        json!(["ex_render_seconds_bucket", [["le", "1.0"]], [], h(0.5)]),
    ];
    assert_eq!(without_stamps, want, "\n{text}");

    // The same state in protobuf, decoded by Google's library: the same
    // exemplars, to the nanosecond.
    let proto = promshard::encode(Format::Protobuf);
    let work = support::python::TempDir::new("exemplars-proto");
    let decoded = support::protobuf::decode(&python, &work.0, &proto, &prometheus);
    let proto_ours: Vec<Value> = decoded.exemplars.as_array().unwrap().iter().filter(mine).cloned().collect();
    assert_eq!(proto_ours, ours, "protobuf and OpenMetrics disagree");
}

/// `float.hex()` of `v`, as the Python scripts print values.
fn hex(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let bits = v.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    let mantissa = bits & ((1 << 52) - 1);
    let sign = if v.is_sign_negative() { "-" } else { "" };
    if exponent == 0 && mantissa == 0 {
        return format!("{sign}0x0.0p+0");
    }
    // Normal numbers only: the test's values are.
    format!("{sign}0x1.{mantissa:013x}p{:+}", exponent - 1023)
}

/// 128 characters of names and values (multi-byte characters counting
/// one each) are kept; 129 are refused, and so are bad names; the count
/// lands every time.
#[test]
fn the_label_limit_counts_characters_and_counts_always_land() {
    // `trace_id` (8) + 120: 40 two-byte, 40 three-byte, 40 four-byte.
    let at = format!("{}{}{}", "é".repeat(40), "日".repeat(40), "😀".repeat(40));
    assert_eq!(("trace_id".len() + at.chars().count(), at.len()), (128, 360));
    let over = format!("{at}x");
    EX_LIMIT_TOTAL.with(("at",)).inc_with_exemplar(&[("trace_id", &at)]);
    EX_LIMIT_TOTAL.with(("over",)).inc_with_exemplar(&[("trace_id", &over)]);
    EX_LIMIT_TOTAL.with(("name",)).inc_with_exemplar(&[("trace-id", "x")]);
    EX_LIMIT_TOTAL.with(("repeat",)).inc_with_exemplar(&[("a", "1"), ("a", "2")]);
    // Declared without exemplars: counted, the exemplar dropped.
    EX_PLAIN_TOTAL.inc_with_exemplar(&[("trace_id", "x")]);
    EX_PLAIN_SECONDS.observe_with_exemplar(0.5, &[("trace_id", "x")]);
    // A NaN observation is not counted, and neither is its exemplar.
    EX_RENDER_SECONDS.with(()).observe_with_exemplar(f64::NAN, &[("trace_id", "nan")]);

    let text = openmetrics();
    let line = |series: &str| -> String {
        lines_of(&text, series).first().unwrap_or_else(|| panic!("no {series} in\n{text}")).to_string()
    };
    assert_eq!(
        line("ex_limit_total{case=\"at\"}"),
        format!("ex_limit_total{{case=\"at\"}} 1 # {{trace_id=\"{at}\"}} 1 {}", {
            let l = line("ex_limit_total{case=\"at\"}");
            l.rsplit(' ').next().unwrap().to_owned()
        })
    );
    for refused in ["over", "name", "repeat"] {
        assert_eq!(
            line(&format!("ex_limit_total{{case=\"{refused}\"}}")),
            format!("ex_limit_total{{case=\"{refused}\"}} 1")
        );
    }
    assert_eq!(line("ex_plain_total "), "ex_plain_total 1");
    assert!(lines_of(&text, "ex_plain_seconds_bucket").iter().all(|l| !l.contains('#')), "\n{text}");
    assert!(text.contains("ex_plain_seconds_count 1\n"), "\n{text}");
    assert!(!text.contains("trace_id=\"nan\""), "\n{text}");

    let Some(python) = support::protobuf::python_or_skip() else { return };
    // The strict parser takes the 128-character set, and gives it back.
    let strict = strict_exemplars(&python, &text);
    let at_seen = strict.as_array().unwrap().iter().find(|e| e[1] == json!([["case", "at"]])).expect("kept");
    assert_eq!(at_seen[2], json!([["trace_id", at]]));
    // It refuses 129 characters, as we did: the limit is the same.
    let forged = line("ex_limit_total{case=\"at\"}").replace(&format!("\"{at}\""), &format!("\"{over}\""));
    let forged_text = format!("# TYPE ex_limit counter\n{forged}\n# EOF\n");
    let refused = support::run_with_stdin(&python, &["-c".as_ref(), STRICT.as_ref()], &forged_text);
    assert!(!refused.status.success(), "Python took a 129-character exemplar:\n{forged_text}");
}

/// FNV-1a of `text`, the checksum the racing writers put in their label.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The exemplar of `ex_race_total` in `text`, checked: `Err` when it is
/// not one a writer wrote whole (its label, of varying length, carries a
/// checksum of itself and of the value).
fn check_race_exemplar(text: &str) -> Result<Option<String>, String> {
    let line = lines_of(text, "ex_race_total ").first().map(|l| l.to_string()).unwrap_or_default();
    let Some((_, exemplar)) = line.split_once(" # ") else { return Ok(None) };
    // `{w="thread:i:n:padding:checksum"} n stamp`
    let torn = || Err(format!("torn exemplar: {line}"));
    let Some((labels, rest)) = exemplar.split_once("} ") else { return torn() };
    let Some(body) = labels.strip_prefix("{w=\"").and_then(|l| l.strip_suffix('"')) else { return torn() };
    let Some((signed, sum)) = body.rsplit_once(':') else { return torn() };
    if format!("{:016x}", fnv(signed)) != sum || rest.split(' ').next() != signed.split(':').nth(2) {
        return torn();
    }
    Ok(Some(body.to_owned()))
}

/// Threads hammer one series' exemplar while scrapes read it: every
/// exemplar a scrape shows is one a writer wrote whole, and the total
/// counts every increment. The writers start each burst together (so
/// they overlap as much as the machine allows) and stop together, and
/// the exemplar is checked after each burst too: two writers whose
/// stores interleaved would leave a torn one for good.
#[test]
fn racing_writers_never_tear_an_exemplar_and_lose_no_count() {
    const THREADS: usize = 4;
    // Not a multiple of the 80 labels: each burst ends on another one.
    const BURST: usize = 1999;
    let done = AtomicBool::new(false);
    let barrier = std::sync::Barrier::new(THREADS + 1);
    let (mut checked, mut seen, mut failure) = (0u64, std::collections::HashSet::new(), None);
    let total: u64 = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (done, barrier) = (&done, &barrier);
                scope.spawn(move || {
                    // Made beforehand, so that the loop does little but
                    // write, and the writers' stores overlap often.
                    let labels: Vec<(u64, String)> = (0..80u64)
                        .map(|i| {
                            let n = i % 7 + 1;
                            let signed = format!("{t}:{i}:{n}:{}", "x".repeat(i as usize));
                            (n, format!("{signed}:{:016x}", fnv(&signed)))
                        })
                        .collect();
                    let (mut sum, mut next) = (0u64, 0usize);
                    loop {
                        barrier.wait();
                        if done.load(Ordering::Relaxed) {
                            return sum;
                        }
                        for _ in 0..BURST {
                            let (n, label) = &labels[next % labels.len()];
                            EX_RACE_TOTAL.inc_by_with_exemplar(*n, &[("w", label)]);
                            (sum, next) = (sum + n, next + 1);
                        }
                        barrier.wait();
                    }
                })
            })
            .collect();
        // Failures end the loop rather than panic: the writers wait at
        // the barrier, and must be let go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while failure.is_none() && std::time::Instant::now() < deadline {
            barrier.wait();
            // During the burst.
            match check_race_exemplar(&openmetrics()) {
                Ok(body) => seen.extend(body),
                Err(e) => failure = Some(e),
            }
            barrier.wait();
            // After it, every writer stopped.
            match check_race_exemplar(&openmetrics()) {
                Ok(body) => seen.extend(body),
                Err(e) => failure = Some(e),
            }
            checked += 2;
        }
        done.store(true, Ordering::Relaxed);
        barrier.wait();
        writers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(failure, None, "after {checked} checks");
    assert!(seen.len() > 10 && checked >= 20, "{checked} checks saw {} distinct exemplars", seen.len());
    let text = openmetrics();
    let line = lines_of(&text, "ex_race_total ")[0];
    assert!(line.starts_with(&format!("ex_race_total {total} # {{w=\"")), "want {total}: {line}");
}
