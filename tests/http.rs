//! The built-in endpoint, spoken to over loopback with a plain socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use promshard::{Counter, Opts};

static HITS: Counter = Counter::new(Opts::new("hits_total", "Hits."));
promshard::register!(HITS);

fn request(addr: SocketAddr, head: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "{head}\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (headers, body) = response.split_once("\r\n\r\n").unwrap();
    let status = headers[9..12].parse().unwrap();
    let content_type = headers
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[test]
fn serves_both_formats_by_accept_header() {
    HITS.inc_by(3);
    let server = promshard::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();

    let (status, content_type, body) = request(addr, "GET /metrics HTTP/1.1");
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(body.contains("\nhits_total 3\n"), "{body}");

    let scrape = "GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (status, content_type, body) = request(addr, scrape);
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(body.contains("# TYPE hits counter\n") && body.ends_with("# EOF\n"), "{body}");

    assert_eq!(request(addr, "GET / HTTP/1.1").0, 404);
    assert_eq!(request(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0").0, 405);

    server.shutdown();
    // tiny_http closes its listener from its own accept thread, so the
    // port is released shortly after shutdown() returns, not at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the endpoint still accepts connections after shutdown()");
        std::thread::sleep(Duration::from_millis(20));
    }
}
