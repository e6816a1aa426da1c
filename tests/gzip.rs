//! `Accept-Encoding: gzip` on the built-in endpoint (`promshard::serve`,
//! `ServerOptions::serve_with`, and so `promshard serve`), over loopback:
//!
//! - every header a client may send, hostile ones included (refusals,
//!   spellings, codings we do not speak, malformed weights, a 512 KiB
//!   header, 50 repeated ones), gets the right encoding, for `GET` and
//!   for `HEAD` with the same headers and `Content-Length`;
//! - heads over the limits get 431, never a compressed body;
//! - 100,000 series round-trip exactly, decoded by Python's `gzip` and
//!   parsed by prometheus_client's parsers (the strict OpenMetrics one
//!   for Prometheus' own `Accept`), and by `curl --compressed`.
//!
//! A missing outside tool skips its test loudly, or fails it under
//! `PROMSHARD_ORACLES=require`.

mod http_client;
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http_client::{Response, fetch};
use promshard::http::ServerOptions;
use promshard::{Counter, Format, LabelValue, MetricsServer, Opts};
use support::gzip::{CURL_MISSING, PROMETHEUS_ACCEPT, cases, curl, curl_scrape, decode, python_scrape};
use support::{PYTHON_MISSING, python_with_prometheus_client, skip_or_fail};

// ---------------------------------------------------------------------
// 100,000 series: 100 shards × 1,000 routes
// ---------------------------------------------------------------------

const SHARDS: usize = 100;
const ROUTES: usize = 1000;

/// `N` names: `prefix` then the index, zero-padded to `W` bytes.
const fn numbered<const N: usize, const W: usize>(prefix: u8) -> [[u8; W]; N] {
    let mut out = [[b'0'; W]; N];
    let mut i = 0;
    while i < N {
        out[i][0] = prefix;
        let (mut n, mut d) = (i, W);
        while d > 1 {
            d -= 1;
            out[i][d] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        i += 1;
    }
    out
}

const fn as_strs<const N: usize, const W: usize>(names: &'static [[u8; W]; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = match core::str::from_utf8(&names[i]) {
            Ok(s) => s,
            Err(_) => panic!("ASCII"),
        };
        i += 1;
    }
    out
}

static SHARD_BYTES: [[u8; 3]; SHARDS] = numbered(b's');
static ROUTE_BYTES: [[u8; 5]; ROUTES] = numbered(b'/');
const SHARD_NAMES: [&str; SHARDS] = as_strs(&SHARD_BYTES);
const ROUTE_NAMES: [&str; ROUTES] = as_strs(&ROUTE_BYTES);

#[derive(Clone, Copy)]
struct Shard(usize);

impl LabelValue for Shard {
    const VALUES: &'static [&'static str] = &SHARD_NAMES;
    fn index(self) -> usize {
        self.0
    }
}

#[derive(Clone, Copy)]
struct Route(usize);

impl LabelValue for Route {
    const VALUES: &'static [&'static str] = &ROUTE_NAMES;
    fn index(self) -> usize {
        self.0
    }
}

static GZIP_REQUESTS: Counter<(Shard, Route)> =
    Counter::new(Opts::new("gzip_requests_total", "Requests by shard and route.").labels(&["shard", "route"]));
promshard::register!(GZIP_REQUESTS);

/// This process's exposition in both formats, rendered once after
/// recording values that do not repeat in a pattern gzip could exploit
/// beyond what real counts allow.
fn rendered() -> &'static (Vec<u8>, Vec<u8>) {
    static RENDERED: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for s in 0..SHARDS {
            for r in 0..ROUTES {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                GZIP_REQUESTS.with((Shard(s), Route(r))).inc_by(x % 1_000_000);
            }
        }
        (promshard::encode(Format::Prometheus), promshard::encode(Format::OpenMetrics))
    })
}

/// A server answering with [`rendered`] (so that every scrape has the
/// same bytes to compare with), in the format `Accept` asks for.
fn fixed_server(options: ServerOptions) -> MetricsServer {
    let (text, openmetrics) = rendered();
    let (text, openmetrics) = (Arc::new(text.clone()), Arc::new(openmetrics.clone()));
    options
        .serve_with("127.0.0.1:0", move |accept| match Format::from_accept(accept) {
            Format::Prometheus | Format::Protobuf => (text.to_vec(), Format::Prometheus.content_type()),
            Format::OpenMetrics => (openmetrics.to_vec(), Format::OpenMetrics.content_type()),
        })
        .unwrap()
}

fn scrape(addr: SocketAddr, method: &str, accept_encoding: &[String]) -> Response {
    let mut headers = vec![("Accept", "text/plain")];
    headers.extend(accept_encoding.iter().map(|value| ("Accept-Encoding", value.as_str())));
    fetch(addr, method, "/metrics", &headers)
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

#[test]
fn every_accept_encoding_gets_its_answer_for_get_and_head() {
    let server = fixed_server(ServerOptions::new().max_header_bytes(1 << 20));
    let addr = server.local_addr();
    let text = &rendered().0;
    for (accept_encoding, gzip) in cases(512 * 1024) {
        let what = format!("Accept-Encoding {:.80?} ({} lines)", accept_encoding.first(), accept_encoding.len());
        let get = scrape(addr, "GET", &accept_encoding);
        assert_eq!(get.status, 200, "{what}");
        let decoded = decode(&what, &get.headers, &get.body, gzip);
        assert!(decoded == *text, "{what}: the body is not the exposition");
        if gzip {
            assert!(get.body.len() < text.len() / 5, "{what}: {} bytes of {}", get.body.len(), text.len());
        }

        let head = scrape(addr, "HEAD", &accept_encoding);
        assert_eq!(head.status, 200, "{what}");
        assert_eq!(head.header("content-length"), Some(get.body.len().to_string().as_str()), "HEAD, {what}");
        assert_eq!(head.header("content-encoding"), get.header("content-encoding"), "HEAD, {what}");
        assert_eq!(head.header("vary"), get.header("vary"), "HEAD, {what}");
    }
    server.shutdown();
}

#[test]
fn a_kept_alive_connection_switches_encodings_per_request() {
    use std::io::{Read, Write};
    let server = fixed_server(ServerOptions::new());
    let addr = server.local_addr();
    let mut stream = http_client::connect(addr);
    // Pipelined: gzip, plain, gzip refused, x-gzip; the last closes.
    let requests = ["gzip", "", "gzip;q=0", "x-gzip"];
    for (i, accept_encoding) in requests.iter().enumerate() {
        let close = if i + 1 == requests.len() { "Connection: close\r\n" } else { "" };
        let header =
            if accept_encoding.is_empty() { String::new() } else { format!("Accept-Encoding: {accept_encoding}\r\n") };
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n{header}{close}\r\n").unwrap();
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let mut rest = &raw[..];
    for (accept_encoding, gzip) in requests.iter().zip([true, false, false, true]) {
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
        let head = http_client::parse_response(&rest[..end], true).unwrap();
        let length: usize = head.header("content-length").unwrap().parse().unwrap();
        let body = &rest[end..end + length];
        let decoded = decode(accept_encoding, &head.headers, body, gzip);
        assert!(decoded == rendered().0, "{accept_encoding:?}: the body is not the exposition");
        rest = &rest[end + length..];
    }
    assert!(rest.is_empty(), "{} bytes after the last response", rest.len());
    server.shutdown();
}

#[test]
fn heads_over_the_limits_get_431_and_nothing_compressed() {
    let server = fixed_server(ServerOptions::new());
    let addr = server.local_addr();
    let long = vec![format!("{}gzip", "br, ".repeat(16 * 1024))];
    let many: Vec<String> = (0..70).map(|_| "gzip".to_owned()).collect();
    for accept_encoding in [long, many] {
        let response = scrape(addr, "GET", &accept_encoding);
        assert_eq!(response.status, 431);
        assert_eq!(response.header("content-encoding"), None);
        assert!(response.text().starts_with("request header fields too large"));
    }
    // The endpoint is unharmed.
    let response = scrape(addr, "GET", &["gzip".to_owned()]);
    assert!(decode("after 431", &response.headers, &response.body, true) == rendered().0);
    server.shutdown();
}

#[test]
fn errors_are_never_compressed() {
    let server = ServerOptions::new().bearer_token("s3cret").serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    for (method, target, status) in [("GET", "/metrics", 401), ("GET", "/", 401), ("POST", "/metrics", 401)] {
        let response = fetch(addr, method, target, &[("Accept-Encoding", "gzip")]);
        assert_eq!(response.status, status, "{method} {target}");
        assert_eq!(response.header("content-encoding"), None, "{method} {target}");
    }
    let auth = ("Authorization", "Bearer s3cret");
    for (method, target, status) in [("GET", "/", 404), ("POST", "/metrics", 405)] {
        let response = fetch(addr, method, target, &[auth, ("Accept-Encoding", "gzip")]);
        assert_eq!(response.status, status, "{method} {target}");
        assert_eq!(response.header("content-encoding"), None, "{method} {target}");
    }
    let response = fetch(addr, "GET", "/metrics", &[auth, ("Accept-Encoding", "gzip")]);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    server.shutdown();
}

#[test]
fn a_hundred_thousand_series_round_trip_through_python() {
    let Some(python) = python_with_prometheus_client() else {
        skip_or_fail(PYTHON_MISSING);
        return;
    };
    let server = fixed_server(ServerOptions::new());
    let (text, openmetrics) = rendered();
    for (accept, plain) in [(PROMETHEUS_ACCEPT, openmetrics), ("text/plain;version=0.0.4", text)] {
        let scrape = python_scrape(&python, server.local_addr(), accept);
        assert!(scrape.body == *plain, "{accept}: Python's gunzip of the body is not the exposition");
        assert!(scrape.samples >= SHARDS * ROUTES, "{accept}: Python parsed {} samples", scrape.samples);
        assert!(scrape.vary.to_ascii_lowercase().contains("accept-encoding"), "{}", scrape.vary);
        assert!(scrape.compressed * 5 < plain.len(), "{} bytes sent for {}", scrape.compressed, plain.len());
        eprintln!(
            "{}: {} bytes of text, {} sent ({:.3})",
            scrape.content_type,
            plain.len(),
            scrape.compressed,
            scrape.compressed as f64 / plain.len() as f64
        );
    }
    server.shutdown();
}

#[test]
fn promshard_serve_gzips_the_live_registry_for_python() {
    let Some(python) = python_with_prometheus_client() else {
        skip_or_fail(PYTHON_MISSING);
        return;
    };
    rendered();
    let server = promshard::serve("127.0.0.1:0").unwrap();
    for accept in [PROMETHEUS_ACCEPT, "text/plain"] {
        let scrape = python_scrape(&python, server.local_addr(), accept);
        let text = String::from_utf8(scrape.body).unwrap();
        assert!(text.contains("gzip_requests_total{shard=\"s99\",route=\"/0999\"} "), "{accept}");
        assert!(scrape.samples > SHARDS * ROUTES, "{accept}: {} samples", scrape.samples);
    }
    server.shutdown();
}

#[test]
fn curl_compressed_reads_the_exposition() {
    let Some(curl) = curl() else {
        skip_or_fail(CURL_MISSING);
        return;
    };
    let server = fixed_server(ServerOptions::new());
    let (text, openmetrics) = rendered();
    for (accept, plain) in [(PROMETHEUS_ACCEPT, openmetrics), ("text/plain", text)] {
        let (headers, body) = curl_scrape(&curl, server.local_addr(), accept);
        let encoding = headers.iter().find(|(name, _)| name == "content-encoding").map(|(_, v)| v.as_str());
        assert_eq!(encoding, Some("gzip"), "{accept}: {headers:?}");
        assert!(body == *plain, "{accept}: curl's decoding is not the exposition");
    }
    server.shutdown();
}
