//! Reading one request head off a connection, under a deadline and a size
//! limit, with httparse doing the parsing.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Instant;

/// More headers than this get 431, like an oversized head.
const MAX_HEADERS: usize = 64;

/// What the server needs of a request.
pub(super) struct Head {
    pub(super) method: Method,
    /// The target without its query string.
    pub(super) path: String,
    /// Every `Accept` header, joined as one list.
    pub(super) accept: Option<String>,
    /// Every `Accept-Encoding` header, joined as one list.
    pub(super) accept_encoding: Option<String>,
    pub(super) authorization: Vec<Vec<u8>>,
    /// HTTP/1.1 without `Connection: close`.
    pub(super) keep_alive: bool,
    /// The request announces a body, which the server never reads: the
    /// connection cannot carry another request after it.
    pub(super) has_body: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Head,
    Other,
}

/// Why no request head came.
#[derive(Debug)]
pub(super) enum HeadError {
    /// The client closed the connection (or it was reset) between requests.
    Closed,
    /// The deadline passed; `partial` when part of a head had arrived.
    TimedOut { partial: bool },
    /// Over the size limit or the header count.
    TooLarge,
    /// Not HTTP/1.x.
    Malformed,
}

/// Reads the next request head. `buffer` holds what was read past the
/// previous head (a pipelined request) and keeps what is read past this
/// one.
pub(super) fn read_head(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    max_bytes: usize,
    deadline: Instant,
) -> Result<Head, HeadError> {
    let mut chunk = [0u8; 4096];
    let mut fresh = !buffer.is_empty();
    loop {
        // Only a newline can complete a head: dribbled bytes are not
        // re-parsed one by one.
        if fresh {
            if let Some((head, len)) = parse(buffer)? {
                buffer.drain(..len);
                return Ok(head);
            }
        }
        // The buffer never grows past the limit, so a head that fits is
        // complete by now.
        if buffer.len() >= max_bytes {
            return Err(HeadError::TooLarge);
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            return Err(HeadError::TimedOut { partial: !buffer.is_empty() });
        };
        stream.set_read_timeout(Some(left)).map_err(|_| HeadError::Closed)?;
        let room = (max_bytes - buffer.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => {
                fresh = chunk[..n].contains(&b'\n');
                buffer.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => fresh = false,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut { partial: !buffer.is_empty() });
            }
            Err(_) => return Err(HeadError::Closed),
        }
    }
}

/// A complete head and its length, or `None` when more bytes are needed.
fn parse(bytes: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let method = match request.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let target = origin_form(request.path.unwrap_or(""));
    let path = target.split('?').next().unwrap_or("").to_owned();

    let mut accept: Option<String> = None;
    let mut accept_encoding: Option<String> = None;
    let mut authorization = Vec::new();
    let mut close = request.version != Some(1);
    let mut has_body = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("accept") {
            join(&mut accept, header.value);
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            join(&mut accept_encoding, header.value);
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization.push(header.value.to_vec());
        } else if name.eq_ignore_ascii_case("connection") {
            close |= header.value.split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("content-length") {
            has_body |= header.value.trim_ascii() != b"0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        }
    }
    let head = Head { method, path, accept, accept_encoding, authorization, keep_alive: !close, has_body };
    Ok(Some((head, len)))
}

/// Adds one header's value to the list of its name's values (RFC 9110
/// §5.3: repeated list headers mean their values joined with commas).
fn join(list: &mut Option<String>, value: &[u8]) {
    // A value that is not UTF-8 cannot name a format or a coding; skip it.
    let Ok(value) = std::str::from_utf8(value) else { return };
    match list {
        Some(list) => {
            list.push_str(", ");
            list.push_str(value);
        }
        None => *list = Some(value.to_owned()),
    }
}

/// The path and query of a request target: the target itself in origin
/// form (`/metrics?x`), or what follows the authority of an absolute one
/// (`http://host:9090/metrics?x`, which RFC 9112 §3.2.2 says a server must
/// accept; a proxy sends it), `/` when that is empty.
fn origin_form(target: &str) -> &str {
    let scheme =
        ["http://", "https://"].into_iter().find(|s| target.get(..s.len()).is_some_and(|t| t.eq_ignore_ascii_case(s)));
    let Some(scheme) = scheme else { return target };
    let rest = &target[scheme.len()..];
    match rest.find(['/', '?']) {
        Some(at) if rest.as_bytes()[at] == b'/' => &rest[at..],
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &str) -> Head {
        parse(bytes.as_bytes()).ok().flatten().expect("a complete head").0
    }

    #[test]
    fn heads() {
        let head = parsed("GET /metrics?a=b HTTP/1.1\r\nAccept: text/plain\r\naccept: */*\r\n\r\n");
        assert!(head.method == Method::Get && head.path == "/metrics" && head.keep_alive && !head.has_body);
        assert_eq!(head.accept.as_deref(), Some("text/plain, */*"));
        assert_eq!(head.accept_encoding, None);
        let head = parsed("GET / HTTP/1.1\r\nAccept-Encoding: br\r\nACCEPT-ENCODING: gzip;q=0\r\n\r\n");
        assert_eq!(head.accept_encoding.as_deref(), Some("br, gzip;q=0"));
        let bytes = b"GET / HTTP/1.1\r\naccept-encoding: \xff\r\naccept-encoding: gzip\r\n\r\n";
        let head = parse(bytes).ok().flatten().expect("a complete head").0;
        assert_eq!(head.accept_encoding.as_deref(), Some("gzip"));

        let head = parsed("HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(head.method == Method::Head && !head.keep_alive);
        let head = parsed("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(!head.keep_alive);
        let head = parsed("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert!(head.method == Method::Other && head.has_body);
        assert!(parsed("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").has_body);
        assert!(!parsed("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").has_body);
        let head = parsed("GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n");
        assert_eq!(head.authorization, [b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn absolute_targets_are_their_path() {
        for (target, path) in [
            ("http://localhost:9090/metrics?x=1", "/metrics"),
            ("HTTPS://h/metrics", "/metrics"),
            ("http://h", "/"),
            ("http://h?x=/metrics", "/"),
            ("http://[::1]:80/a/b", "/a/b"),
            ("/metrics", "/metrics"),
            ("*", "*"),
            ("httpx://h/metrics", "httpx://h/metrics"),
        ] {
            assert_eq!(parsed(&format!("GET {target} HTTP/1.1\r\n\r\n")).path, path, "{target}");
        }
    }

    #[test]
    fn partial_and_bad_heads() {
        assert!(matches!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
        assert!(matches!(parse(b"\x16\x03\x01 hello"), Err(HeadError::Malformed)));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let request = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(request.as_bytes()), Err(HeadError::TooLarge)));
    }
}
