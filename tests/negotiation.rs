//! Content negotiation: random `Accept` headers (seeded, the seed printed;
//! `PROMSHARD_SEED` replays one) against a model of the rules Prometheus'
//! "Scrape protocol content negotiation" page sets, the headers real
//! scrapers send, and the `Content-Type` the built-in endpoint answers
//! with over HTTP.

mod rng;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use promshard::{Escaping, Exposition, Protocol, metric};
use rng::Rng;

/// Something to scrape, with a UTF-8 name.
#[metric(name = "negotiation.requests")]
static REQUESTS: promshard::Counter;

/// The protocols with their media type and version, in the order an equal
/// `q` prefers them.
const PROTOCOLS: [(Protocol, &str, &str); 5] = [
    (Protocol::PrometheusProtobuf, "application/vnd.google.protobuf", ""),
    (Protocol::OpenMetricsText1_0_0, "application/openmetrics-text", "1.0.0"),
    (Protocol::OpenMetricsText0_0_1, "application/openmetrics-text", "0.0.1"),
    (Protocol::PrometheusText1_0_0, "text/plain", "1.0.0"),
    (Protocol::PrometheusText0_0_4, "text/plain", "0.0.4"),
];

/// One media range as the model sees it.
#[derive(Debug)]
struct Range {
    media: &'static str,
    version: Option<&'static str>,
    /// protobuf's `proto` and `encoding`.
    proto: Option<&'static str>,
    encoding: Option<&'static str>,
    escaping: Option<&'static str>,
    /// `None`: no `q`; `Some(text)`: as written.
    q: Option<String>,
}

impl Range {
    fn header(&self, rng: &mut Rng) -> String {
        let mut params = Vec::new();
        if let Some(v) = self.version {
            params.push(format!("version={v}"));
        }
        if let Some(p) = self.proto {
            params.push(format!("proto={p}"));
        }
        if let Some(e) = self.encoding {
            params.push(format!("encoding={e}"));
        }
        if let Some(e) = self.escaping {
            params.push(format!("escaping={e}"));
        }
        if let Some(q) = &self.q {
            params.push(format!("q={q}"));
        }
        if rng.below(4) == 0 {
            params.push("charset=utf-8".into());
        }
        rng.shuffle(&mut params);
        let sep = if rng.below(2) == 0 { ";" } else { "; " };
        std::iter::once(self.media.to_owned()).chain(params).collect::<Vec<_>>().join(sep)
    }

    fn weight(&self) -> f32 {
        match &self.q {
            None => 1.0,
            Some(q) => q.parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0),
        }
    }

    /// Whether the range takes `protocol`, by the page's table: the
    /// version must be the protocol's; a bare `text/plain` and the
    /// wildcards mean 0.0.4, a bare OpenMetrics type any version;
    /// protobuf only by name, with its `proto` and `encoding` (the page's
    /// table, as client_golang reads it).
    fn takes(&self, protocol: Protocol, media: &str, version: &str) -> bool {
        if protocol == Protocol::PrometheusProtobuf {
            return self.media == media
                && self.proto == Some("io.prometheus.client.MetricFamily")
                && self.encoding == Some("delimited");
        }
        let wildcard = match self.media {
            "*/*" => true,
            "text/*" if media == "text/plain" => true,
            m if m == media => false,
            _ => return false,
        };
        match self.version {
            Some(v) => v == version,
            None if wildcard || media == "text/plain" => protocol == Protocol::PrometheusText0_0_4,
            None => true,
        }
    }
}

/// The model's choice for `ranges`.
fn model(ranges: &[Range]) -> (Protocol, Escaping) {
    let mut best: Option<(f32, usize, Protocol, Escaping)> = None;
    for range in ranges {
        let q = range.weight();
        if q <= 0.0 {
            continue;
        }
        for (rank, (protocol, media, version)) in PROTOCOLS.into_iter().enumerate() {
            if !range.takes(protocol, media, version) {
                continue;
            }
            if best.is_none_or(|(bq, brank, _, _)| q > bq || (q == bq && rank < brank)) {
                // Text before 1.0.0 has legacy names only.
                let legacy = matches!(protocol, Protocol::PrometheusText0_0_4 | Protocol::OpenMetricsText0_0_1);
                let escaping = match range.escaping {
                    _ if legacy => Escaping::Underscores,
                    Some("allow-utf-8" | "allow-utf8") => Escaping::AllowUtf8,
                    Some("dots") => Escaping::Dots,
                    Some("values") => Escaping::Values,
                    _ => Escaping::Underscores,
                };
                best = Some((q, rank, protocol, escaping));
            }
        }
    }
    best.map_or((Protocol::PrometheusText0_0_4, Escaping::Underscores), |(_, _, p, e)| (p, e))
}

impl Rng {
    fn range(&mut self) -> Range {
        let media = self.pick(&[
            "application/openmetrics-text",
            "text/plain",
            "text/*",
            "*/*",
            "application/json",
            "application/vnd.google.protobuf",
        ]);
        let version = self.pick(&[None, Some("0.0.4"), Some("1.0.0"), Some("0.0.1"), Some("2.0.0")]);
        let escaping = self.pick(&[
            None,
            Some("allow-utf-8"),
            Some("allow-utf8"),
            Some("underscores"),
            Some("dots"),
            Some("values"),
            Some("bogus"),
        ]);
        let (proto, encoding) = if media == "application/vnd.google.protobuf" || self.below(8) == 0 {
            (
                self.pick(&[None, Some("io.prometheus.client.MetricFamily"), Some("io.prometheus.client.Metric")]),
                self.pick(&[None, Some("delimited"), Some("text"), Some("compact-text")]),
            )
        } else {
            (None, None)
        };
        let q = match self.below(6) {
            0 => None,
            1 => Some(self.pick(&["0", "1", "0.5", "x", "1.5", "-1", "0.000"]).to_owned()),
            // Few distinct values, so that ties happen.
            _ => Some(format!("0.{}", self.below(4) + 1)),
        };
        Range { media, version, proto, encoding, escaping, q }
    }
}

#[test]
fn random_headers_follow_the_model() {
    let seed = std::env::var("PROMSHARD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("random_headers_follow_the_model: PROMSHARD_SEED={seed}");
    let mut rng = Rng(seed);
    let mut chosen = std::collections::HashSet::new();
    for _ in 0..20_000 {
        let ranges: Vec<Range> = (0..1 + rng.below(5)).map(|_| rng.range()).collect();
        let parts: Vec<String> = ranges.iter().map(|r| r.header(&mut rng)).collect();
        let header = parts.join(if rng.below(2) == 0 { "," } else { ", " });
        let got = Exposition::from_accept(Some(&header));
        let want = model(&ranges);
        assert_eq!((got.protocol(), got.escaping()), want, "seed {seed}: {header}");
        chosen.insert(want);
    }
    // The walk reached every protocol and, for those that negotiate it,
    // every scheme: the model is not comparing one default with another.
    assert_eq!(chosen.len(), 2 + 3 * 4, "seed {seed}: {chosen:?}");
}

#[test]
fn what_scrapers_send() {
    let cases = [
        // Prometheus 3's default.
        (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
             application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
             text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
        ),
        // Prometheus 3 with `scrape_protocols: [PrometheusText1.0.0]` and
        // `metric_name_escaping_scheme: dots`.
        (
            "text/plain;version=1.0.0;escaping=dots;q=0.5,*/*;q=0.1",
            "text/plain; version=1.0.0; charset=utf-8; escaping=dots",
        ),
        // Prometheus 2.x.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
             text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
        ),
        // The content negotiation page's example, with its `/` for `*/*`.
        (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
             application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
             text/plain;version=0.0.4;q=0.2,/;q=0.1",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
        ),
        // Its protobuf-first example: no `escaping` on the protobuf
        // range, so legacy names.
        (
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,\
             application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.4,\
             application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.2,\
             text/plain;version=0.0.4;q=0.1,/;q=0.0",
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; \
             escaping=underscores",
        ),
        // Prometheus 2.42 with `--enable-feature=native-histograms`.
        (
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,\
             application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,\
             text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; \
             escaping=underscores",
        ),
        // Prometheus 3 with `scrape_protocols: [PrometheusProto, ...]` and
        // an `escaping` on the protobuf range (client_golang honours it).
        (
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;\
             escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.4,*/*;q=0.1",
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; \
             escaping=allow-utf-8",
        ),
        // curl, a browser, Python's older clients.
        ("*/*", "text/plain; version=0.0.4; charset=utf-8"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/plain; version=0.0.4; charset=utf-8"),
        (
            "application/openmetrics-text",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
        ),
    ];
    for (accept, content_type) in cases {
        assert_eq!(promshard::render(Some(accept)).1, content_type, "{accept}");
    }
}

/// The endpoint's `Content-Type` follows the choice, and its body the
/// escaping.
#[test]
fn the_endpoint_answers_with_the_chosen_content_type() {
    REQUESTS.inc();
    let server = promshard::serve("127.0.0.1:0").unwrap();
    let get = |accept: &str| -> (String, String) {
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        // Lossy: a protobuf body is binary.
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let content_type = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: ").or_else(|| l.strip_prefix("content-type: ")))
            .unwrap()
            .to_owned();
        (content_type, body.to_owned())
    };
    let (content_type, body) = get("text/plain;version=1.0.0;escaping=allow-utf-8");
    assert_eq!(content_type, "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8");
    assert!(body.contains("\n{\"negotiation.requests_total\"} 1\n"), "{body}");
    let (content_type, body) = get("application/openmetrics-text;version=1.0.0;escaping=values");
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=values");
    assert!(body.contains("\nU__negotiation_2e_requests_total 1\n"), "{body}");
    // Protobuf: the name as it is under `allow-utf-8`, escaped otherwise
    // (the messages themselves are checked by tests/oracle_protobuf.rs).
    let proto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
    let (content_type, body) = get(&format!("{proto};escaping=allow-utf-8"));
    assert_eq!(
        content_type,
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; \
         escaping=allow-utf-8"
    );
    assert!(body.contains("\n\u{1a}negotiation.requests_total"), "{body:?}");
    let (content_type, body) = get(proto);
    assert!(content_type.ends_with("; escaping=underscores"), "{content_type}");
    assert!(body.contains("\n\u{1a}negotiation_requests_total") && !body.contains("negotiation.requests"), "{body:?}");
    let (content_type, body) = get("text/plain;version=0.0.4");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(body.contains("\nnegotiation_requests_total 1\n"), "{body}");
    server.shutdown();
}
