//! gzip-compressed `/metrics` responses, for the tests of every endpoint
//! that serves them: the `Accept-Encoding` headers a client may send and
//! the answer each must get, a check of one response, and two fetchers
//! we did not write (Python's `urllib` + `gzip` + prometheus_client's
//! parsers, and `curl --compressed`).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{find_in_path, run_with_stdin};

/// The `Accept` header Prometheus 2.42 scrapes with (its
/// `scrape.acceptHeader`); it sends `Accept-Encoding: gzip` beside it.
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
     application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `Accept-Encoding` headers (one string per header line; none at all
/// for the first) and whether the response must be gzip: the usual, the
/// refusals, the spellings, codings we do not speak, malformed weights,
/// repeated headers, and one header of `long_bytes` bytes (give the
/// server room for it).
pub fn cases(long_bytes: usize) -> Vec<(Vec<String>, bool)> {
    let fixed: &[(&[&str], bool)] = &[
        (&[], false),
        (&["gzip"], true),
        (&["GZIP"], true),
        (&["x-gzip"], true),
        (&["gzip, deflate, br"], true),
        (&["br;q=1.0, gzip;q=0.8, *;q=0.1"], true),
        (&["*"], true),
        (&["*;q=0, gzip"], true),
        (&["br", "gzip"], true),
        (&["deflate, br"], false),
        (&["gzip;q=0"], false),
        (&["GZip;Q=0.000"], false),
        (&["*;q=0"], false),
        (&["identity"], false),
        (&["gzip;q=0.5, identity"], false),
        (&["gzip", "gzip;q=0"], false),
        (&["gzip;q=2"], false),
        (&["gzip;q=x"], false),
        (&[""], false),
        (&[",;=;,"], false),
        (&["gzipgzip"], false),
    ];
    let mut cases: Vec<(Vec<String>, bool)> =
        fixed.iter().map(|(headers, gzip)| (headers.iter().map(|h| (*h).to_owned()).collect(), *gzip)).collect();
    // Many lines of one header, under the built-in server's 64 headers.
    cases.push(((0..50).map(|i| if i == 49 { "gzip".into() } else { "br".into() }).collect(), true));
    cases.push(((0..50).map(|i| if i == 49 { "x-gzip;q=0".into() } else { "gzip".into() }).collect(), false));
    // One absurdly long header: its last item decides.
    let filler = "br;q=0.5, ".repeat(long_bytes / 10);
    cases.push((vec![format!("{filler}gzip;q=0.1")], true));
    cases.push((vec![format!("{filler}gzip;q=0.1, *;q=0.2")], false));
    cases
}

/// Checks one `/metrics` response (`headers` as name, value) against the
/// encoding its request must get, and returns its body decoded: exactly
/// one `Content-Encoding: gzip` and a complete gzip stream with nothing
/// after it, or no `Content-Encoding` at all; `Vary` naming
/// `Accept-Encoding` either way.
pub fn decode(what: &str, headers: &[(String, String)], body: &[u8], gzip: bool) -> Vec<u8> {
    let named = |name: &str| -> Vec<&str> {
        headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    };
    let encodings = named("content-encoding");
    let vary = named("vary").join(", ").to_ascii_lowercase();
    assert!(vary.split(',').any(|v| v.trim() == "accept-encoding"), "{what}: Vary is {vary:?}");
    if !gzip {
        assert!(encodings.is_empty(), "{what}: Content-Encoding {encodings:?} for a client that did not ask for it");
        return body.to_vec();
    }
    assert_eq!(encodings, ["gzip"], "{what}: Content-Encoding");
    let mut decoder = flate2::read::GzDecoder::new(body);
    let mut decoded = Vec::new();
    decoder.read_to_end(&mut decoded).unwrap_or_else(|e| panic!("{what}: not gzip: {e}"));
    assert!(decoder.into_inner().is_empty(), "{what}: bytes after the gzip stream");
    decoded
}

/// Fetches a URL with `Accept` and `Accept-Encoding: gzip` through
/// Python's `urllib`, which does not decompress: the script checks the
/// framing, decompresses with `gzip`, writes the bytes to the file it is
/// given, and parses them with prometheus_client's parser for the
/// returned `Content-Type` (the strict OpenMetrics one or the 0.0.4 one).
const FETCH: &str = r#"
import gzip, sys, urllib.request
url, accept, out = sys.argv[1], sys.argv[2], sys.argv[3]
request = urllib.request.Request(url, headers={"Accept": accept, "Accept-Encoding": "gzip"})
with urllib.request.urlopen(request, timeout=60) as response:
    encodings = response.headers.get_all("Content-Encoding") or []
    vary = ", ".join(response.headers.get_all("Vary") or [])
    content_type = response.headers.get("Content-Type", "")
    length = response.headers.get("Content-Length")
    raw = response.read()
assert length is not None and int(length) == len(raw), (length, len(raw))
assert encodings == ["gzip"], encodings
data = gzip.decompress(raw)
with open(out, "wb") as f:
    f.write(data)
if content_type.startswith("application/openmetrics-text"):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse
else:
    from prometheus_client.parser import text_string_to_metric_families as parse
samples = sum(len(family.samples) for family in parse(data.decode("utf-8")))
print("\t".join([content_type, vary, str(len(raw)), str(samples)]))
"#;

/// What Python saw of one gzip'd scrape.
pub struct PythonScrape {
    pub content_type: String,
    pub vary: String,
    /// Bytes on the wire.
    pub compressed: usize,
    /// Samples its parser read.
    pub samples: usize,
    /// The decompressed body.
    pub body: Vec<u8>,
}

/// `GET http://addr/metrics` through [`FETCH`]; panics with Python's
/// error when any of its checks fails.
pub fn python_scrape(python: &Path, addr: SocketAddr, accept: &str) -> PythonScrape {
    let out = scratch_file("python");
    let url = format!("http://{addr}/metrics");
    let args = ["-c", FETCH, &url, accept, out.to_str().unwrap()];
    let output = run_with_stdin(python, &args.map(std::ffi::OsStr::new), "");
    let body = std::fs::read(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    assert!(
        output.status.success(),
        "python's gzip scrape of {url} with Accept {accept:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    let fields: Vec<&str> = printed.trim_end().split('\t').collect();
    let [content_type, vary, compressed, samples] = fields[..] else { panic!("python printed {printed:?}") };
    PythonScrape {
        content_type: content_type.to_owned(),
        vary: vary.to_owned(),
        compressed: compressed.parse().unwrap(),
        samples: samples.parse().unwrap(),
        body,
    }
}

/// `curl`, from `PATH`, if it runs.
pub fn curl() -> Option<PathBuf> {
    let curl = find_in_path("curl")?;
    let runs = Command::new(&curl).arg("--version").stdin(Stdio::null()).output().is_ok_and(|o| o.status.success());
    runs.then_some(curl)
}

/// Explains how to get curl, for [`skip_or_fail`](super::skip_or_fail).
pub const CURL_MISSING: &str = "curl not found; install Debian's `curl` package";

/// `curl --compressed` on `http://addr/metrics` with `accept`: the
/// response's headers (lower-case names) and the body curl decoded.
pub fn curl_scrape(curl: &Path, addr: SocketAddr, accept: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let (head, body) = (scratch_file("curl-head"), scratch_file("curl-body"));
    let output = Command::new(curl)
        .args(["--silent", "--show-error", "--fail", "--compressed", "--max-time", "60", "-H"])
        .arg(format!("Accept: {accept}"))
        .arg("--dump-header")
        .arg(&head)
        .arg("--output")
        .arg(&body)
        .arg(format!("http://{addr}/metrics"))
        .stdin(Stdio::null())
        .output()
        .expect("running curl");
    let (head_text, body_bytes) = (std::fs::read_to_string(&head), std::fs::read(&body));
    let _ = (std::fs::remove_file(&head), std::fs::remove_file(&body));
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let headers = head_text
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (headers, body_bytes.unwrap())
}

fn scratch_file(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("promshard-gzip-{tag}-{}-{n}", std::process::id()))
}
