//! Attacks "a scrape always answers": a `Collector` registered with
//! `promshard::register_collector` that panics must cost its own families
//! in that scrape only. Today `promshard::encode` propagates the panic, and
//! `promshard::serve` answers 500 once and then never answers again.
//!
//! Each scenario runs in a fresh process (collectors are process-wide),
//! with deadlines on every HTTP read, so a hang fails the test.

mod harness;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use harness::{TempDir, isolated, value_in};
use promshard::{Collector, Counter, Format, MetricWriter, metric};

/// Requests served.
#[metric]
static PANIC_REQUESTS_TOTAL: Counter;

/// Writes a good family.
struct Good;

impl Collector for Good {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        out.gauge("good_pool_size", "Connections in the pool.").sample(&[], 7.0);
    }
}

/// Writes half a family, then panics, every time.
struct AlwaysPanics;

impl Collector for AlwaysPanics {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        out.gauge("broken_partial", "Written before the panic.").sample(&[], 1.0);
        panic!("AlwaysPanics: a collector bug");
    }
}

/// Panics on its first call only.
struct PanicsOnce(AtomicU32);

impl Collector for PanicsOnce {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("PanicsOnce: the first scrape panics");
        }
        out.gauge("flaky_queue_depth", "Queue depth.").sample(&[], 3.0);
    }
}

fn encode_with_panicking_collectors(multiprocess: bool) {
    let _dir = multiprocess.then(|| {
        let base = TempDir::new("collector");
        promshard::multiprocess::init(base.path().join("shards")).unwrap();
        base
    });
    PANIC_REQUESTS_TOTAL.inc_by(4);
    promshard::register_collector(Good);
    promshard::register_collector(AlwaysPanics);
    promshard::register_collector(PanicsOnce(AtomicU32::new(0)));
    for scrape in 0..3 {
        let text = std::panic::catch_unwind(|| String::from_utf8(promshard::encode(Format::Prometheus)).unwrap());
        let text = text.unwrap_or_else(|_| {
            panic!("scrape {scrape}: promshard::encode panicked because a registered collector panicked")
        });
        assert_eq!(value_in(&text, "panic_requests_total", &[]), Some(4.0), "scrape {scrape}: declared metrics");
        assert_eq!(value_in(&text, "good_pool_size", &[]), Some(7.0), "scrape {scrape}: the good collector");
        assert_eq!(
            value_in(&text, "flaky_queue_depth", &[]),
            if scrape == 0 { None } else { Some(3.0) },
            "scrape {scrape}: a collector that panicked once is back in the next scrape"
        );
        assert!(!text.contains("broken_partial"), "scrape {scrape}: half a family from a panicking collector:\n{text}");
    }
}

#[test]
fn encode_survives_panicking_collectors() {
    isolated("encode_survives_panicking_collectors", Duration::from_secs(60), || {
        encode_with_panicking_collectors(false)
    });
}

#[test]
fn encode_survives_panicking_collectors_in_multiprocess_mode() {
    isolated("encode_survives_panicking_collectors_in_multiprocess_mode", Duration::from_secs(60), || {
        encode_with_panicking_collectors(true)
    });
}

/// One `GET /metrics` with a deadline: (status code, body), or why not.
fn get(addr: std::net::SocketAddr) -> Result<(u16, String), String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(e) if response.is_empty() => return Err(format!("no answer within 5 s ({e})")),
        Err(_) => {}
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    let body = response.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

#[test]
fn serve_survives_a_panicking_collector() {
    isolated("serve_survives_a_panicking_collector", Duration::from_secs(60), || {
        PANIC_REQUESTS_TOTAL.inc();
        promshard::register_collector(Good);
        promshard::register_collector(PanicsOnce(AtomicU32::new(0)));
        let server = promshard::serve("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        let mut answers = Vec::new();
        for scrape in 0..4 {
            answers.push(match get(addr) {
                Ok((200, body)) if value_in(&body, "good_pool_size", &[]) == Some(7.0) => "200 ok".to_owned(),
                Ok((status, body)) => format!("{status} {:?}", body.lines().next().unwrap_or("")),
                Err(e) => format!("scrape {scrape}: {e}"),
            });
        }
        assert!(
            answers.iter().all(|a| a == "200 ok"),
            "promshard::serve with a collector that panics on its first call: every scrape must be answered with \
             200 and the other families; answers: {answers:?}"
        );
        server.shutdown();
    });
}

/// Which collectors of [`counting_panics`] panic in the current scrape:
/// 0 none, 1 [`Switched`], 2 [`Switched`] and [`SwitchedAny`].
static PANIC_MODE: AtomicU32 = AtomicU32::new(0);

/// Writes a whole family and half of another, then panics, when
/// [`PANIC_MODE`] says so; else writes one family.
struct Switched;

impl Collector for Switched {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        if PANIC_MODE.load(Ordering::SeqCst) == 0 {
            out.gauge("switched_ok", "Written when it does not panic.").sample(&[], 1.0);
            return;
        }
        out.gauge("switched_complete", "A whole family, then a panic.")
            .sample(&[("a", "1")], 1.0)
            .sample(&[("a", "2")], 2.0);
        let mut partial = out.counter("switched_partial", "Half a family, then a panic.");
        partial.sample(&[("b", "1")], 5.0);
        panic!("Switched: a collector bug in the middle of a family");
    }
}

/// Starts a histogram, then panics with a payload that is not a string.
struct SwitchedAny;

impl Collector for SwitchedAny {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        if PANIC_MODE.load(Ordering::SeqCst) < 2 {
            return;
        }
        out.gauge("any_partial", "Written before a non-string panic.").sample(&[], 9.0);
        std::panic::panic_any(42u32);
    }
}

/// `promshard_collector_panics_total` in `text`, if exposed.
fn panics_exposed(text: &str) -> Option<f64> {
    value_in(text, "promshard_collector_panics_total", &[])
}

/// `promshard_collector_panics_total` is there from the start, at zero,
/// then counts each panicking collector once per scrape (not per family,
/// not per scrape); what a panicking collector wrote never shows, in
/// any format (protobuf included), while the others' families do.
fn counting_panics(multiprocess: bool) {
    let _dir = multiprocess.then(|| {
        let base = TempDir::new("collector-count");
        promshard::multiprocess::init(base.path().join("shards")).unwrap();
        base
    });
    PANIC_REQUESTS_TOTAL.inc_by(2);
    promshard::register_collector(Good);
    let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
    assert_eq!(panics_exposed(&text), Some(0.0), "at zero before any collector panicked:\n{text}");
    promshard::register_collector(Switched);
    promshard::register_collector(SwitchedAny);

    // Panicking collectors per scrape, and the count so far.
    let modes = [0, 0, 1, 2, 2, 0, 1, 0, 2, 0];
    let mut panicked = 0u32;
    // Whether the exposed count includes the scrape's own panics (the
    // count may be written before or after the collectors run); fixed by
    // the first scrape that tells.
    let mut includes_own: Option<bool> = None;
    for (scrape, &mode) in modes.iter().enumerate() {
        PANIC_MODE.store(mode, Ordering::SeqCst);
        let format = if scrape % 2 == 0 { Format::Prometheus } else { Format::OpenMetrics };
        let before = panicked;
        panicked += mode;
        let text = String::from_utf8(promshard::encode(format)).unwrap();
        let shown = panics_exposed(&text);
        let want = |n: u32| Some(n as f64);
        let ok = match includes_own {
            Some(true) => shown == want(panicked),
            Some(false) => shown == want(before),
            None if before == panicked => shown == want(before),
            None => {
                includes_own = Some(shown == want(panicked));
                shown == want(panicked) || shown == want(before)
            }
        };
        assert!(
            ok,
            "scrape {scrape} ({mode} collector(s) panicking, {before} panics before it, {panicked} with it): \
             promshard_collector_panics_total is {shown:?}"
        );
        assert_eq!(value_in(&text, "panic_requests_total", &[]), Some(2.0), "scrape {scrape}: declared metrics");
        assert_eq!(value_in(&text, "good_pool_size", &[]), Some(7.0), "scrape {scrape}: the good collector");
        for family in ["switched_complete", "switched_partial", "any_partial"] {
            assert!(
                !text.contains(family),
                "scrape {scrape}: `{family}`, written by a collector that then panicked, must not appear:\n{text}"
            );
        }
        assert_eq!(text.contains("switched_ok"), mode == 0, "scrape {scrape}: the collector's family when it is fine");
        if format == Format::OpenMetrics {
            assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1, "scrape {scrape}: one # EOF");
        }
        // The same in protobuf, whose families are framed by their length:
        // a family taken back leaves no frame behind. (Every scrape panics
        // as often as the text's, so the count moves on.)
        panicked += mode;
        let families = protobuf_families(&promshard::encode(Format::Protobuf));
        for family in ["switched_complete", "switched_partial", "any_partial"] {
            assert!(!families.iter().any(|f| f.starts_with(family)), "scrape {scrape}: {families:?}");
        }
        assert!(families.iter().any(|f| f == "good_pool_size"), "scrape {scrape}: {families:?}");
        assert_eq!(families.iter().any(|f| f.starts_with("switched_ok")), mode == 0, "scrape {scrape}: {families:?}");
    }
    // Read without a scrape of its own panicking: the final count.
    PANIC_MODE.store(0, Ordering::SeqCst);
    let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
    assert_eq!(panics_exposed(&text), Some(panicked as f64), "the total after {} scrapes", modes.len());
}

/// The family names of a protobuf exposition, walking its frames: each
/// is a varint length, then a `MetricFamily` whose first field is its
/// name (field 1, length-delimited). Panics if a frame runs past the end.
fn protobuf_families(mut bytes: &[u8]) -> Vec<String> {
    fn varint(bytes: &mut &[u8]) -> usize {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = bytes.split_first().expect("a varint");
            *bytes = rest;
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut names = Vec::new();
    while !bytes.is_empty() {
        let len = varint(&mut bytes);
        assert!(len <= bytes.len(), "a frame of {len} bytes in {} left", bytes.len());
        let (mut family, rest) = bytes.split_at(len);
        bytes = rest;
        assert_eq!(family.first(), Some(&0x0a), "the name first");
        family = &family[1..];
        let name_len = varint(&mut family);
        names.push(String::from_utf8(family[..name_len].to_vec()).unwrap());
    }
    names
}

#[test]
fn panics_are_counted_per_collector_and_scrape() {
    isolated("panics_are_counted_per_collector_and_scrape", Duration::from_secs(60), || counting_panics(false));
}

#[test]
fn panics_are_counted_per_collector_and_scrape_in_multiprocess_mode() {
    isolated("panics_are_counted_per_collector_and_scrape_in_multiprocess_mode", Duration::from_secs(60), || {
        counting_panics(true)
    });
}

/// `promshard::testing::sample_value` scrapes too (through a sample
/// callback rather than text): a collector that panics after writing
/// must not leave its samples there either.
#[test]
fn sample_value_does_not_see_a_panicking_collectors_output() {
    isolated("sample_value_does_not_see_a_panicking_collectors_output", Duration::from_secs(60), || {
        promshard::register_collector(Good);
        promshard::register_collector(Switched);
        PANIC_MODE.store(1, Ordering::SeqCst);
        assert_eq!(promshard::testing::sample_value("good_pool_size", &[]), Some(7.0));
        let partial = promshard::testing::sample_value("switched_partial_total", &[("b", "1")]);
        let complete = promshard::testing::sample_value("switched_complete", &[("a", "2")]);
        assert!(
            partial.is_none() && complete.is_none(),
            "sample_value reads the families of a collector that panicked in that very scrape \
             (switched_partial_total{{b=\"1\"}}: {partial:?}, switched_complete{{a=\"2\"}}: {complete:?}); \
             the text exposition leaves them out"
        );
    });
}
