//! Compressing a `/metrics` response for the clients that accept it: the
//! choice from an HTTP `Accept-Encoding` header, gzip, and the headers
//! that describe the result. Every endpoint promshard serves (the
//! built-in server, `promshard serve`, the axum handler) and the examples
//! go through [`MetricsResponse`], so they make one choice and send one set of
//! headers.

use std::io::Write;

/// How a `/metrics` response body is encoded for the trip: the
/// `Content-Encoding` chosen from the client's `Accept-Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentEncoding {
    /// The body as rendered, with no `Content-Encoding` header.
    Identity,
    /// gzip (RFC 1952), sent as `Content-Encoding: gzip`.
    Gzip,
}

/// gzip's level, chosen by measuring a scrape of 100,000 series (`cargo
/// bench --bench encode_100k -- gzip`, and BENCHMARKS.md): at level 1 the body is
/// 10.8% of the text, at gzip's default level 6 it is 9.6%, but a scrape
/// at level 6 (encoding included) takes 6–8× the time of one at level 1,
/// which itself takes 3.3–4.4× the encoding alone. The scrape is paid for
/// by the process being scraped, often a worker serving requests, so the
/// CPU counts more than a tenth of an already small body.
const GZIP_LEVEL: u32 = 1;

/// The `Vary` value of every negotiated response: its format follows
/// `Accept`, its encoding `Accept-Encoding`, and a cache between scraper
/// and target must key on both.
const VARY: &str = "Accept, Accept-Encoding";

impl ContentEncoding {
    /// Chooses the encoding a client asked for in its `Accept-Encoding`
    /// header (several headers joined with `, `), following RFC 9110
    /// §12.5.3: codings are matched without regard to case, `x-gzip`
    /// means gzip, `*` stands for every coding not named, and `q=0`
    /// refuses a coding. gzip is chosen when the client accepts it and
    /// ranks nothing it names higher (`identity` included); a tie goes to
    /// gzip. Anything else gets the body as it is: no header (so a client
    /// that does not ask gets plain text), an empty one, codings
    /// promshard does not speak (`br`, `deflate`, `zstd`), a malformed
    /// weight (the item is ignored), and even a header refusing
    /// `identity` too, which RFC 9110 lets a server ignore. A coding named
    /// twice keeps its lowest weight.
    ///
    /// ```
    /// use promshard::ContentEncoding::{self, Gzip, Identity};
    ///
    /// // What Prometheus sends.
    /// assert_eq!(ContentEncoding::from_accept_encoding(Some("gzip")), Gzip);
    /// assert_eq!(ContentEncoding::from_accept_encoding(Some("br;q=1.0, GZIP;q=0.8, *;q=0.1")), Gzip);
    /// assert_eq!(ContentEncoding::from_accept_encoding(Some("gzip;q=0")), Identity);
    /// assert_eq!(ContentEncoding::from_accept_encoding(Some("gzip;q=0.5, identity")), Identity);
    /// assert_eq!(ContentEncoding::from_accept_encoding(Some("deflate, br")), Identity);
    /// assert_eq!(ContentEncoding::from_accept_encoding(None), Identity);
    /// ```
    pub fn from_accept_encoding(header: Option<&str>) -> ContentEncoding {
        let Some(header) = header else { return ContentEncoding::Identity };
        // Weights in thousandths, the precision a qvalue has.
        let mut gzip = None::<u16>;
        let mut identity = None::<u16>;
        let mut any = None::<u16>;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let slot = if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if coding.eq_ignore_ascii_case("identity") {
                &mut identity
            } else if coding == "*" {
                &mut any
            } else {
                continue;
            };
            let Some(q) = weight(parts) else { continue };
            // Said twice, differently: a refusal must not be overridden.
            *slot = Some(slot.map_or(q, |earlier| earlier.min(q)));
        }
        let gzip = gzip.or(any).unwrap_or(0);
        // Identity unnamed (by itself or by `*`) is acceptable, but does
        // not outrank a coding the client asked for by name.
        let preferred = identity.or(any).is_some_and(|identity| identity > gzip);
        if gzip > 0 && !preferred { ContentEncoding::Gzip } else { ContentEncoding::Identity }
    }

    /// The value of the `Content-Encoding` header a body in this encoding
    /// is sent with; `None` for [`Identity`](ContentEncoding::Identity),
    /// which is sent without one.
    ///
    /// ```
    /// use promshard::ContentEncoding;
    ///
    /// assert_eq!(ContentEncoding::Gzip.header_value(), Some("gzip"));
    /// assert_eq!(ContentEncoding::Identity.header_value(), None);
    /// ```
    pub const fn header_value(self) -> Option<&'static str> {
        match self {
            ContentEncoding::Identity => None,
            ContentEncoding::Gzip => Some("gzip"),
        }
    }
}

/// The weight of one `Accept-Encoding` item from its parameters (what
/// follows the coding): 1000 without `q`, `None` when malformed.
fn weight<'a>(parameters: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for parameter in parameters {
        let parameter = parameter.trim();
        if parameter.is_empty() {
            continue;
        }
        let (name, value) = parameter.split_once('=')?;
        // RFC 9110 gives codings no other parameter; one is ignored.
        if name.trim().eq_ignore_ascii_case("q") {
            q = qvalue(value.trim())?;
        }
    }
    Some(q)
}

/// RFC 9110's `qvalue` in thousandths: `0`, `1`, up to three decimals,
/// nothing over 1.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction.bytes().zip([100, 10, 1]).map(|(digit, scale)| u16::from(digit - b'0') * scale).sum();
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A `/metrics` response ready to send: the exposition in the format the
/// client's `Accept` asked for, compressed as its `Accept-Encoding`
/// allows, and the headers that say so. Send [`content_type`](MetricsResponse::content_type)
/// as `Content-Type`, every pair of [`headers`](MetricsResponse::headers), and
/// [`body`](MetricsResponse::body) with its length as `Content-Length` (for a
/// `HEAD` request too, so that it matches `GET`).
///
/// ```
/// use promshard::{ContentEncoding, MetricsResponse};
///
/// // What Prometheus sends.
/// let exposition = MetricsResponse::render(Some("application/openmetrics-text;version=1.0.0"), Some("gzip"));
/// assert!(exposition.content_type().starts_with("application/openmetrics-text"));
/// assert_eq!(exposition.content_encoding(), ContentEncoding::Gzip);
/// let headers: Vec<_> = exposition.headers().collect();
/// assert_eq!(headers, [("content-encoding", "gzip"), ("vary", "Accept, Accept-Encoding")]);
/// assert!(exposition.body().starts_with(&[0x1f, 0x8b])); // gzip's magic number
///
/// // A client that does not ask for gzip gets the text.
/// let exposition = MetricsResponse::render(None, None);
/// assert_eq!(exposition.content_encoding(), ContentEncoding::Identity);
/// assert_eq!(exposition.headers().collect::<Vec<_>>(), [("vary", "Accept, Accept-Encoding")]);
/// assert!(std::str::from_utf8(exposition.body()).is_ok());
/// ```
pub struct MetricsResponse {
    body: Vec<u8>,
    content_type: &'static str,
    encoding: ContentEncoding,
}

impl MetricsResponse {
    /// Renders this process's metrics (what [`render`](crate::render)
    /// returns for `accept`, merged over the shard directory in
    /// multiprocess mode) and compresses them as `accept_encoding` allows.
    /// Pass each header's value, several headers of one name joined with
    /// `, `, or `None` for a header the request does not have.
    pub fn render(accept: Option<&str>, accept_encoding: Option<&str>) -> MetricsResponse {
        let (body, content_type) = crate::render(accept);
        MetricsResponse::new(body, content_type, accept_encoding)
    }

    /// Compresses a body rendered elsewhere (by
    /// [`multiprocess::encode_dir`](crate::multiprocess::encode_dir), say)
    /// as `accept_encoding` allows.
    ///
    /// ```
    /// use promshard::{ContentEncoding, MetricsResponse, Format};
    ///
    /// let exposition = MetricsResponse::new(b"up 1\n".to_vec(), Format::Prometheus.content_type(), Some("x-gzip"));
    /// assert_eq!(exposition.content_encoding(), ContentEncoding::Gzip);
    /// ```
    pub fn new(body: Vec<u8>, content_type: &'static str, accept_encoding: Option<&str>) -> MetricsResponse {
        let encoding = ContentEncoding::from_accept_encoding(accept_encoding);
        match encoding {
            ContentEncoding::Identity => MetricsResponse { body, content_type, encoding },
            ContentEncoding::Gzip => match gzip(&body) {
                Ok(compressed) => MetricsResponse { body: compressed, content_type, encoding },
                // Writing into memory cannot fail; were it to, the text
                // is still a correct answer.
                Err(_) => MetricsResponse { body, content_type, encoding: ContentEncoding::Identity },
            },
        }
    }

    /// The body to send: compressed when
    /// [`content_encoding`](MetricsResponse::content_encoding) says so.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body to send, without a copy.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The `Content-Type` of the exposition (before compression).
    pub fn content_type(&self) -> &'static str {
        self.content_type
    }

    /// How [`body`](MetricsResponse::body) is encoded.
    pub fn content_encoding(&self) -> ContentEncoding {
        self.encoding
    }

    /// The headers to send besides `Content-Type` and `Content-Length`:
    /// `content-encoding` when the body is compressed, and always `vary:
    /// Accept, Accept-Encoding`, since a response to another client may
    /// differ. Names are in lower case, as HTTP/2 requires and
    /// `http::HeaderName::from_static` takes them.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &'static str)> + use<> {
        let encoding = self.encoding.header_value().map(|value| ("content-encoding", value));
        encoding.into_iter().chain([("vary", VARY)])
    }
}

impl std::fmt::Debug for MetricsResponse {
    // The body can be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsResponse")
            .field("content_type", &self.content_type)
            .field("content_encoding", &self.encoding)
            .field("body_len", &self.body.len())
            .finish()
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    // Text expositions shrink to a tenth or less: this capacity is enough
    // for most without being regrown.
    let out = Vec::with_capacity(body.len() / 8 + 64);
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::ContentEncoding::{self, Gzip, Identity};
    use super::*;

    fn choose(header: &str) -> ContentEncoding {
        ContentEncoding::from_accept_encoding(Some(header))
    }

    #[test]
    fn negotiation() {
        let cases = [
            ("gzip", Gzip),
            ("GZIP", Gzip),
            ("Gzip;Q=1", Gzip),
            ("x-gzip", Gzip),
            ("X-GZIP;q=0.5", Gzip),
            ("gzip, deflate, br", Gzip),
            ("br;q=1.0, gzip;q=0.8, *;q=0.1", Gzip),
            (" \tgzip \t; q=0.3 ", Gzip),
            ("*", Gzip),
            ("*;q=0.5", Gzip),
            ("gzip;q=0.001", Gzip),
            ("gzip;q=1.000", Gzip),
            ("gzip;q=1.", Gzip),
            ("identity;q=0.5, gzip", Gzip),
            ("identity, gzip", Gzip),
            ("*;q=0, gzip", Gzip),
            ("gzip;level=9", Gzip),
            ("gzip;", Gzip),
            (",,gzip,,", Gzip),
            // Refused, outranked, or never offered.
            ("", Identity),
            (",", Identity),
            ("gzip;q=0", Identity),
            ("gzip;q=0.000", Identity),
            ("GZIP;Q=0", Identity),
            ("x-gzip;q=0", Identity),
            ("gzip, gzip;q=0", Identity),
            ("gzip;q=0, x-gzip", Identity),
            ("*;q=0", Identity),
            ("*;q=0, identity;q=0", Identity),
            ("identity;q=0", Identity),
            ("deflate, br", Identity),
            ("br, zstd, compress", Identity),
            ("identity", Identity),
            ("gzip;q=0.5, identity", Identity),
            ("gzip;q=0.5, *", Identity),
            ("identity;q=0.9, gzip;q=0.8", Identity),
            ("gzipx", Identity),
            ("g zip", Identity),
            ("gzip deflate", Identity),
            ("\"gzip\"", Identity),
            ("gzip\u{0}", Identity),
            // Malformed weights: the item means nothing.
            ("gzip;q=2", Identity),
            ("gzip;q=1.5", Identity),
            ("gzip;q=-1", Identity),
            ("gzip;q=0.5000", Identity),
            ("gzip;q=abc", Identity),
            ("gzip;q=", Identity),
            ("gzip;q=\"1\"", Identity),
            ("gzip;q=1e0", Identity),
            ("gzip;q=.5", Identity),
            ("gzip;foo", Identity),
            ("gzip;q=0.5;q=2", Identity),
            ("gzip;q=+1", Identity),
            ("gzip;q=٣", Identity),
        ];
        for (header, want) in cases {
            assert_eq!(choose(header), want, "{header:?}");
        }
        assert_eq!(ContentEncoding::from_accept_encoding(None), Identity);
    }

    #[test]
    fn qvalues() {
        for (text, want) in [("0", 0), ("0.", 0), ("0.1", 100), ("0.01", 10), ("0.001", 1), ("0.999", 999), ("1", 1000)]
        {
            assert_eq!(qvalue(text), Some(want), "{text}");
        }
        for text in ["", ".", "1.001", "1.1", "01", "00.5", "0.1234", "2", "0x1", "0.a"] {
            assert_eq!(qvalue(text), None, "{text}");
        }
    }

    #[test]
    fn hostile_headers_take_linear_time_and_never_panic() {
        let long = "gzip;q=0.5, ".repeat(200_000) + "gzip;q=0";
        assert_eq!(choose(&long), Identity);
        let long = format!("{}, gzip", "x".repeat(1 << 20));
        assert_eq!(choose(&long), Gzip);
        assert_eq!(choose(&";".repeat(1 << 20)), Identity);
        assert_eq!(choose(&"=;,".repeat(1 << 18)), Identity);
        let started = std::time::Instant::now();
        assert_eq!(choose(&"*;q=0.9,".repeat(1 << 17)), Gzip);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn exposition_headers_and_round_trip() {
        let text = b"# TYPE up gauge\nup 1\n".repeat(1000);
        let plain = MetricsResponse::new(text.clone(), "text/plain", Some("gzip;q=0"));
        assert_eq!(plain.body(), &text[..]);
        assert_eq!(plain.headers().collect::<Vec<_>>(), [("vary", VARY)]);

        let compressed = MetricsResponse::new(text.clone(), "text/plain", Some("gzip"));
        assert_eq!(compressed.content_encoding(), Gzip);
        assert_eq!(compressed.headers().collect::<Vec<_>>(), [("content-encoding", "gzip"), ("vary", VARY)]);
        assert!(compressed.body().len() < text.len() / 10);
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(compressed.body()), &mut decoded).unwrap();
        assert_eq!(decoded, text);

        // Even an empty body is a complete gzip stream.
        let empty = MetricsResponse::new(Vec::new(), "text/plain", Some("gzip"));
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(empty.body()), &mut decoded).unwrap();
        assert!(decoded.is_empty());
    }
}
