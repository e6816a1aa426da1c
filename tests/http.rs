//! The built-in endpoint, spoken to over loopback with plain sockets, the
//! way a misbehaving or hostile client would. Every wait is bounded; the
//! servers use small timeouts so that the suite stays fast.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use promshard::http::ServerOptions;
use promshard::{Counter, Opts};

static HITS: Counter = Counter::new(Opts::new("hits_total", "Hits."));
promshard::register!(HITS);

/// The server timeout of most tests.
const SHORT: Duration = Duration::from_millis(300);
/// How long a test client waits for anything: far above every timeout
/// under test, so that a hang fails instead of passing.
const PATIENCE: Duration = Duration::from_secs(5);
/// How late after `SHORT` a connection may still be closed on a loaded
/// machine: far below the 10 s default, so that the configured timeout is
/// what closed it.
const BOUND: Duration = Duration::from_secs(4);

/// A fixed renderer, for tests that are not about the registry.
fn fixed(_accept: Option<&str>) -> (Vec<u8>, &'static str) {
    (b"up 1\n".to_vec(), "text/plain; version=0.0.4; charset=utf-8")
}

fn short_server() -> promshard::MetricsServer {
    ServerOptions::new().timeout(SHORT).serve_with("127.0.0.1:0", fixed).unwrap()
}

#[derive(Debug)]
struct Reply {
    status: u16,
    /// Header lines, lower-cased.
    headers: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }
}

/// One client connection, read through a buffer so that pipelined
/// responses can be taken one by one.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        Client { reader: BufReader::new(stream) }
    }

    fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    fn send(&mut self, bytes: &str) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes.as_bytes())
    }

    /// The next response; `head` when it answers a HEAD request (no body).
    fn reply(&mut self, head: bool) -> io::Result<Reply> {
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let status = status_line.strip_prefix("HTTP/1.1 ").and_then(|s| s.get(..3)).and_then(|s| s.parse().ok());
        let status = status.unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut headers = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            headers.push_str(&line.trim_end().to_ascii_lowercase());
            headers.push('\n');
        }
        let mut reply = Reply { status, headers, body: String::new() };
        let length: usize = reply.header("content-length").expect("a content-length").parse().unwrap();
        if !head {
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body)?;
            reply.body = String::from_utf8(body).unwrap();
        }
        Ok(reply)
    }

    /// Whether the server has closed the connection: end of stream (or a
    /// reset) within `PATIENCE`, with nothing else sent.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

/// One request over a fresh connection that asks to be closed after it.
fn request(addr: SocketAddr, head: &str) -> Reply {
    let mut client = Client::connect(addr);
    client.send(&format!("{head}\r\nHost: test\r\nConnection: close\r\n\r\n")).unwrap();
    let reply = client.reply(head.starts_with("HEAD ")).unwrap();
    assert!(client.closed(), "`Connection: close` is honoured");
    reply
}

fn get(addr: SocketAddr) -> Reply {
    request(addr, "GET /metrics HTTP/1.1")
}

#[test]
fn serves_both_formats_by_accept_header() {
    HITS.inc_by(3);
    let server = promshard::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();

    let reply = get(addr);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert!(reply.body.contains("\nhits_total 3\n"), "{}", reply.body);

    let scrape = "GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let reply = request(addr, scrape);
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap().starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(reply.body.contains("# TYPE hits counter\n") && reply.body.ends_with("# EOF\n"), "{}", reply.body);

    server.shutdown();
    assert!(TcpStream::connect_timeout(&addr, PATIENCE).is_err(), "the port is closed once shutdown() returns");
}

#[test]
fn head_404_405_and_garbage() {
    let server = short_server();
    let addr = server.local_addr();

    let reply = request(addr, "HEAD /metrics HTTP/1.1");
    assert_eq!((reply.status, reply.header("content-length")), (200, Some("5")), "{reply:?}");
    assert_eq!(request(addr, "GET / HTTP/1.1").status, 404);
    assert_eq!(request(addr, "GET /metricsx HTTP/1.1").status, 404);
    let reply = request(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0");
    assert_eq!((reply.status, reply.header("allow")), (405, Some("get, head")), "{reply:?}");
    assert_eq!(request(addr, "DELETE /metrics HTTP/1.1").status, 405);

    // A TLS client hello, and a request line that is not HTTP.
    for garbage in ["\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n", "HELLO\r\n\r\n"] {
        let mut client = Client::connect(addr);
        client.send(garbage).unwrap();
        assert_eq!(client.reply(false).unwrap().status, 400);
        assert!(client.closed());
    }
    assert_eq!(get(addr).status, 200);
    server.shutdown();
}

#[test]
fn a_silent_client_is_dropped_while_others_are_served() {
    let server = short_server();
    let addr = server.local_addr();
    let start = Instant::now();
    let mut silent = Client::connect(addr);
    // Served meanwhile, on other connections.
    for _ in 0..3 {
        assert_eq!(get(addr).status, 200);
    }
    assert!(silent.closed(), "nothing is sent to a client that sent nothing");
    let waited = start.elapsed();
    assert!(waited >= SHORT - Duration::from_millis(50), "closed before the timeout: {waited:?}");
    assert!(waited < BOUND, "closed long after the timeout: {waited:?}");
    server.shutdown();
}

#[test]
fn a_client_dribbling_headers_is_cut_off() {
    let server = short_server();
    let addr = server.local_addr();
    let mut slow = Client::connect(addr);
    slow.stream().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let start = Instant::now();
    slow.send("GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
    let mut answer = Vec::new();
    // One byte every 20 ms, so every read the server makes succeeds.
    for _ in 0..250 {
        if slow.send("a").is_err() {
            break;
        }
        let mut chunk = [0u8; 256];
        match slow.reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        assert_eq!(get(addr).status, 200, "others are served meanwhile");
    }
    let waited = start.elapsed();
    assert!(waited >= SHORT - Duration::from_millis(50), "cut off before the timeout: {waited:?}");
    assert!(waited < BOUND, "still connected after {waited:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408 "), "{answer}");
    server.shutdown();
}

#[test]
fn oversized_heads_get_431() {
    let server = ServerOptions::new().timeout(SHORT).max_header_bytes(1024).serve_with("127.0.0.1:0", fixed).unwrap();
    let addr = server.local_addr();

    // Just under the limit is fine.
    let reply = request(addr, &format!("GET /metrics HTTP/1.1\r\nX-Pad: {}", "p".repeat(900)));
    assert_eq!(reply.status, 200);

    // One huge header (sent whole, before reading), and many small ones.
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(64 * 1024));
    let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
    // A head that never ends within the limit.
    let endless = format!("GET /{} HTTP/1.1\r\n", "x".repeat(4096));
    for attack in [huge, many, endless] {
        let mut client = Client::connect(addr);
        client.send(&attack).unwrap();
        let reply = client.reply(false).unwrap();
        assert_eq!(reply.status, 431);
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(client.closed());
    }
    assert_eq!(get(addr).status, 200);
    server.shutdown();
}

#[test]
fn connections_past_the_cap_get_503_and_scrapes_resume() {
    const CAP: usize = 4;
    // A long timeout: the holders below must not be dropped for idling.
    let server = ServerOptions::new().timeout(PATIENCE).max_connections(CAP).serve_with("127.0.0.1:0", fixed).unwrap();
    let addr = server.local_addr();

    // Connections are accepted in order, so these hold every place.
    let mut holders: Vec<Client> = (0..CAP).map(|_| Client::connect(addr)).collect();
    for holder in &mut holders {
        holder.send("GET /metrics HTTP/1.1\r\n").unwrap();
    }
    let mut turned_away = 0;
    for _ in 0..2 * CAP {
        let start = Instant::now();
        let mut extra = Client::connect(addr);
        let _ = extra.send("GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
        match extra.reply(false) {
            Ok(reply) => {
                assert_eq!(reply.status, 503, "{reply:?}");
                assert_eq!(reply.header("retry-after"), Some("1"));
                assert!(extra.closed());
                turned_away += 1;
            }
            // Refused outright is fine too.
            Err(e) => assert!(matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof), "{e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(2), "turned away slowly: {:?}", start.elapsed());
    }
    assert!(turned_away > 0, "no connection past the cap got a 503");

    // The places come back as soon as their clients leave.
    drop(holders);
    get_soon(addr);
    // Concurrent scrapes count against the cap like idlers do; each is
    // served or turned away, and serving resumes after them.
    let scrapers: Vec<_> = (0..2 * CAP).map(|_| std::thread::spawn(move || get(addr).status)).collect();
    let statuses: Vec<u16> = scrapers.into_iter().map(|s| s.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| matches!(s, 200 | 503)) && statuses.contains(&200), "{statuses:?}");
    get_soon(addr);
    server.shutdown();
}

/// A scrape that succeeds within a moment: a connection's place is given
/// back once the server has seen its client close, a little after the
/// client's side of it ends.
fn get_soon(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut client = Client::connect(addr);
        client.send("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        match client.reply(false) {
            Ok(reply) if reply.status == 200 => return,
            _ => assert!(Instant::now() < deadline, "still turned away"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_panicking_renderer_costs_one_500() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = ServerOptions::new()
        .timeout(SHORT)
        .serve_with("127.0.0.1:0", {
            let calls = Arc::clone(&calls);
            move |accept| {
                calls.fetch_add(1, Ordering::Relaxed);
                assert_ne!(accept, Some("panic"), "the renderer was asked to panic");
                fixed(accept)
            }
        })
        .unwrap();
    let addr = server.local_addr();

    assert_eq!(request(addr, "GET /metrics HTTP/1.1\r\nAccept: panic").status, 500);
    assert_eq!(get(addr).status, 200);
    // On one kept-alive connection too.
    let mut client = Client::connect(addr);
    for accept in ["panic", "text/plain", "panic", "text/plain"] {
        client.send(&format!("GET /metrics HTTP/1.1\r\nAccept: {accept}\r\n\r\n")).unwrap();
        let expected = if accept == "panic" { 500 } else { 200 };
        assert_eq!(client.reply(false).unwrap().status, expected);
    }
    assert_eq!(calls.load(Ordering::Relaxed), 6);
    server.shutdown();
}

#[test]
fn keep_alive_and_pipelining_are_bounded_by_the_timeout() {
    let server = short_server();
    let addr = server.local_addr();
    let mut client = Client::connect(addr);
    for _ in 0..3 {
        client.send("GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let reply = client.reply(false).unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "up 1\n"));
        assert_eq!(reply.header("connection"), None);
    }
    // Three requests in one write, answered in order.
    client.send("GET /metrics HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(client.reply(false).unwrap().status, 200);
    assert_eq!(client.reply(true).unwrap().status, 200);
    assert_eq!(client.reply(false).unwrap().status, 404);
    // Then idle: closed after the timeout.
    let start = Instant::now();
    assert!(client.closed());
    assert!(start.elapsed() < BOUND, "an idle keep-alive outlived the timeout: {:?}", start.elapsed());

    // HTTP/1.0 gets one response per connection.
    let mut old = Client::connect(addr);
    old.send("GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(old.reply(false).unwrap().status, 200);
    assert!(old.closed());
    server.shutdown();
}

#[test]
fn bearer_token() {
    let server =
        ServerOptions::new().timeout(SHORT).bearer_token("s3cret-token").serve_with("127.0.0.1:0", fixed).unwrap();
    let addr = server.local_addr();

    assert_eq!(request(addr, "GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cret-token").status, 200);
    assert_eq!(request(addr, "GET /metrics HTTP/1.1\r\nAuthorization: bearer  s3cret-token").status, 200);
    let rejected = [
        "",
        "\r\nAuthorization: Bearer s3cret-tokem",
        "\r\nAuthorization: Bearer s3cret-toke",
        "\r\nAuthorization: Bearer s3cret-token2",
        "\r\nAuthorization: Bearer S3CRET-TOKEN",
        "\r\nAuthorization: Bearer ",
        "\r\nAuthorization: s3cret-token",
        // The token where a basic-auth pair would be.
        "\r\nAuthorization: Basic czNjcmV0LXRva2Vu",
        // One right among two is still ambiguous.
        "\r\nAuthorization: Bearer wrong\r\nAuthorization: Bearer s3cret-token",
    ];
    for headers in rejected {
        let reply = request(addr, &format!("GET /metrics HTTP/1.1{headers}"));
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.header("www-authenticate"), Some("bearer realm=\"metrics\""));
        assert!(!reply.body.contains("up 1"));
    }
    // Without credentials, not even whether a path exists is told.
    assert_eq!(request(addr, "GET /other HTTP/1.1").status, 401);
    assert_eq!(request(addr, "GET /other HTTP/1.1\r\nAuthorization: Bearer s3cret-token").status, 404);
    server.shutdown();
}

#[test]
fn basic_auth() {
    let server =
        ServerOptions::new().timeout(SHORT).basic_auth("prom", "pa:ss w0rd").serve_with("127.0.0.1:0", fixed).unwrap();
    let addr = server.local_addr();

    // base64("prom:pa:ss w0rd")
    assert_eq!(request(addr, "GET /metrics HTTP/1.1\r\nAuthorization: Basic cHJvbTpwYTpzcyB3MHJk").status, 200);
    let rejected = [
        "",
        // base64("prom:pa:ss w0rD")
        "\r\nAuthorization: Basic cHJvbTpwYTpzcyB3MHJE",
        // base64("prom:"), base64("prom")
        "\r\nAuthorization: Basic cHJvbTo=",
        "\r\nAuthorization: Basic cHJvbQ==",
        "\r\nAuthorization: Basic !!not base64!!",
        "\r\nAuthorization: Basic",
        "\r\nAuthorization: Bearer cHJvbTpwYTpzcyB3MHJk",
        "\r\nAuthorization: prom:pa:ss w0rd",
    ];
    for headers in rejected {
        let reply = request(addr, &format!("GET /metrics HTTP/1.1{headers}"));
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.header("www-authenticate"), Some("basic realm=\"metrics\", charset=\"utf-8\""));
    }
    server.shutdown();
}

#[test]
fn shutdown_ends_open_connections() {
    let server = ServerOptions::new().timeout(PATIENCE).serve_with("127.0.0.1:0", fixed).unwrap();
    let addr = server.local_addr();
    let mut idle = Client::connect(addr);
    let mut half = Client::connect(addr);
    half.send("GET /metrics HTTP/1.1\r\n").unwrap();
    // Both are being served before shutdown starts.
    idle.send("GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(idle.reply(false).unwrap().status, 200);

    let start = Instant::now();
    server.shutdown();
    assert!(start.elapsed() < Duration::from_secs(2), "shutdown waited for idle clients: {:?}", start.elapsed());
    assert!(idle.closed() && half.closed());
    assert!(TcpStream::connect_timeout(&addr, PATIENCE).is_err());
}

#[test]
fn invalid_options_are_refused() {
    let invalid = |options: ServerOptions| options.serve_with("127.0.0.1:0", fixed).unwrap_err().kind();
    assert_eq!(invalid(ServerOptions::new().timeout(Duration::ZERO)), io::ErrorKind::InvalidInput);
    assert_eq!(invalid(ServerOptions::new().max_connections(0)), io::ErrorKind::InvalidInput);
    assert_eq!(invalid(ServerOptions::new().max_header_bytes(0)), io::ErrorKind::InvalidInput);
    assert_eq!(invalid(ServerOptions::new().bearer_token("")), io::ErrorKind::InvalidInput);
    assert_eq!(invalid(ServerOptions::new().bearer_token("two words")), io::ErrorKind::InvalidInput);
    assert_eq!(invalid(ServerOptions::new().basic_auth("a:b", "c")), io::ErrorKind::InvalidInput);
    // Secrets stay out of Debug output.
    let debug = format!("{:?}", ServerOptions::new().basic_auth("user", "hunter2"));
    assert!(!debug.contains("hunter2") && debug.contains("Basic"), "{debug}");
    assert!(promshard::serve("256.0.0.1:0").is_err());
}

/// A renderer whose body is far larger than a loopback socket's buffers
/// (so a client that never reads leaves the server's write blocked), and
/// whose every byte says where it is, so that a wrong body shows.
fn large(_accept: Option<&str>) -> (Vec<u8>, &'static str) {
    (large_body().to_vec(), "text/plain; version=0.0.4; charset=utf-8")
}

fn large_body() -> &'static [u8] {
    static BODY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BODY.get_or_init(|| (0..400_000).flat_map(|i| format!("big_{i:06} {i}\n").into_bytes()).collect())
}

/// Clients that ask for a large scrape and never read it hold their
/// connection only until the timeout; meanwhile (cap permitting) others
/// get the whole body, byte for byte, and after it the places are free.
#[test]
fn clients_that_never_read_are_cut_off_and_others_get_the_whole_body() {
    const CAP: usize = 4;
    let timeout = Duration::from_millis(700);
    let server = ServerOptions::new().timeout(timeout).max_connections(CAP).serve_with("127.0.0.1:0", large).unwrap();
    let addr = server.local_addr();

    let fetch_on = |client: &mut Client| {
        let start = Instant::now();
        client.send("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let reply = client.reply(false).unwrap();
        assert_eq!(reply.status, 200);
        assert!(reply.body.as_bytes() == large_body(), "a wrong body of {} bytes", reply.body.len());
        start.elapsed()
    };
    let fetch_whole = move |addr| fetch_on(&mut Client::connect(addr));

    // Every place but one held by a client that asked and never reads,
    // several times on one connection (pipelined).
    let sleepers: Vec<TcpStream> = (0..CAP - 1)
        .map(|_| {
            let mut stream = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
            stream.write_all("GET /metrics HTTP/1.1\r\n\r\n".repeat(50).as_bytes()).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // The one place left serves a reading scraper, again and again.
    let mut reader = Client::connect(addr);
    for _ in 0..3 {
        let took = fetch_on(&mut reader);
        assert!(took < Duration::from_secs(3), "a reading scraper waited {took:?}");
    }
    drop(reader);

    // Past the timeout, the non-readers' places are given back: CAP readers
    // at once are all served.
    std::thread::sleep(timeout + Duration::from_millis(500));
    let readers: Vec<_> = (0..CAP).map(|_| std::thread::spawn(move || fetch_whole(addr))).collect();
    for reader in readers {
        let took = reader.join().unwrap();
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    // The non-readers were closed (end of stream or reset after what the
    // buffers held), not kept.
    for mut sleeper in sleepers {
        sleeper.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        let start = Instant::now();
        loop {
            match sleeper.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(start.elapsed() < PATIENCE, "a non-reader was never closed"),
            }
        }
    }
    server.shutdown();
}

/// Odd but legal requests, each answered as the docs say and never with
/// a wrong body: methods, targets, versions, repeated and huge headers,
/// `Connection: close` inside a pipeline.
#[test]
fn odd_requests_get_the_documented_answers() {
    let server = short_server();
    let addr = server.local_addr();
    // Queries (also holding `/`, `?` and `#`), and percent-encoding that is
    // not decoded into `/metrics`.
    for target in ["/metrics?", "/metrics?a=b&c=%2F", "/metrics?x=/metrics?y#z"] {
        let reply = request(addr, &format!("GET {target} HTTP/1.1"));
        assert_eq!((reply.status, reply.body.as_str()), (200, "up 1\n"), "{target}");
    }
    for target in ["/metrics/", "/%6Detrics", "//metrics", "/metrics%3F", "*"] {
        assert_eq!(request(addr, &format!("GET {target} HTTP/1.1")).status, 404, "{target}");
    }
    assert_eq!(request(addr, "OPTIONS /metrics HTTP/1.1").status, 405);
    assert_eq!(request(addr, "OPTIONS * HTTP/1.1").status, 404);
    // Huge and repeated Accept and Accept-Encoding under the head limit.
    let huge = format!("Accept: {}", "text/plain;q=0.1, ".repeat(350));
    let reply = request(addr, &format!("GET /metrics HTTP/1.1\r\n{huge}\r\nAccept: */*\r\nAccept: x"));
    assert_eq!((reply.status, reply.body.as_str()), (200, "up 1\n"));
    let repeated = "Accept-Encoding: identity\r\n".repeat(40);
    let reply = request(addr, &format!("GET /metrics HTTP/1.1\r\n{repeated}Accept-Encoding: gzip;q=0"));
    assert_eq!((reply.status, reply.body.as_str(), reply.header("content-encoding")), (200, "up 1\n", None));

    // HTTP/1.0 without Host, with and without keep-alive asked for: one
    // response, then closed.
    for head in ["GET /metrics HTTP/1.0\r\n\r\n", "GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"] {
        let mut client = Client::connect(addr);
        client.send(head).unwrap();
        let reply = client.reply(false).unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "up 1\n"));
        assert!(client.closed(), "{head:?}");
    }

    // A pipeline with `Connection: close` in the middle: answered up to
    // it, the rest ignored. A POST with a body ends the pipeline too.
    let mut client = Client::connect(addr);
    client
        .send("GET /metrics HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(client.reply(false).unwrap().status, 200);
    let reply = client.reply(true).unwrap();
    assert_eq!((reply.status, reply.header("connection")), (200, Some("close")));
    assert!(client.closed());
    let mut client = Client::connect(addr);
    client.send("POST /metrics HTTP/1.1\r\nContent-Length: 26\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let reply = client.reply(false).unwrap();
    assert_eq!((reply.status, reply.header("connection")), (405, Some("close")));
    assert!(client.closed(), "a body is never read as a request");
    server.shutdown();
}

/// Slowloris at and past the cap: clients sending their heads a byte at a
/// time hold their places no longer than the timeout, the ones past the
/// cap are turned away at once, and scrapes then succeed.
#[test]
fn dribblers_at_the_cap_give_their_places_back_after_the_timeout() {
    const CAP: usize = 6;
    let timeout = Duration::from_millis(800);
    let server = ServerOptions::new().timeout(timeout).max_connections(CAP).serve_with("127.0.0.1:0", fixed).unwrap();
    let addr = server.local_addr();
    let start = Instant::now();
    let dribblers: Vec<_> = (0..3 * CAP)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let began = Instant::now();
                for byte in "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".bytes() {
                    if client.reader.get_mut().write_all(&[byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    if began.elapsed() > PATIENCE {
                        break;
                    }
                }
                // Held to the end: cut off (408, 503 or nothing) by now.
                let _ = client.closed();
                began.elapsed()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // While they hold the places: a scrape is turned away quickly, never
    // left waiting.
    let asked = Instant::now();
    let mut extra = Client::connect(addr);
    let _ = extra.send("GET /metrics HTTP/1.1\r\n\r\n");
    if let Ok(reply) = extra.reply(false) {
        assert!(matches!(reply.status, 200 | 503), "{reply:?}");
    }
    assert!(asked.elapsed() < Duration::from_secs(1), "waited {:?}", asked.elapsed());
    for dribbler in dribblers {
        let held = dribbler.join().unwrap();
        assert!(held < timeout + BOUND, "a dribbler was kept {held:?}");
    }
    get_soon(addr);
    assert!(start.elapsed() < timeout + BOUND + Duration::from_secs(2));
    server.shutdown();
}

/// A timeout so long it means "never" (`Duration::MAX`, or `promshard
/// serve --timeout 1e19`, which the CLI accepts) is a valid option: the
/// server must still answer, and shut down.
#[test]
fn a_timeout_meaning_never_still_serves() {
    for timeout in [Duration::MAX, Duration::from_secs(u64::MAX / 2), Duration::from_secs_f64(1e19)] {
        let server = ServerOptions::new().timeout(timeout).serve_with("127.0.0.1:0", fixed).unwrap();
        let addr = server.local_addr();
        let mut client = Client::connect(addr);
        client.send("GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let reply = client.reply(false);
        assert!(reply.as_ref().is_ok_and(|r| r.status == 200), "timeout {timeout:?}: {reply:?}");
        assert_eq!(get(addr).status, 200);
        let start = Instant::now();
        server.shutdown();
        assert!(start.elapsed() < Duration::from_secs(2), "timeout {timeout:?}: shutdown took {:?}", start.elapsed());
    }
}
