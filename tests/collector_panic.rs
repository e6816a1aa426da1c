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
