//! A blocking HTTP/1.1 client for tests that drive a server over real
//! loopback connections: one request per connection (`Connection:
//! close`), read to the end, with the response's framing checked
//! (`content-length`, chunked bodies, no body after `HEAD`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a connect, read or write may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A response read to the end of its connection.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// The bytes of a request without a body, `Connection: close`.
pub fn request_bytes(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Sends one request on a fresh connection and reads the whole response
/// (the server closes the connection after it).
pub fn fetch(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut stream = connect(addr);
    stream.write_all(&request_bytes(addr, method, target, headers)).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{method} {target}: reading the response: {e}"));
    parse_response(&raw, method == "HEAD").unwrap_or_else(|why| {
        panic!("{method} {target}: {why}:\n{}", String::from_utf8_lossy(&raw));
    })
}

pub fn status(addr: SocketAddr, method: &str, target: &str) -> u16 {
    fetch(addr, method, target, &[]).status
}

pub fn parse_response(raw: &[u8], head_only: bool) -> Result<Response, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of head")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "a head that is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if parts.next() != Some("HTTP/1.1") {
        return Err(format!("not an HTTP/1.1 status line: {status_line:?}"));
    }
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or("no status code")?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("a bad header line {line:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = Response { status, headers, body: Vec::new() };
    let rest = &raw[end + 4..];
    if head_only {
        if !rest.is_empty() {
            return Err("a body after a HEAD response".into());
        }
    } else if response.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        response.body = dechunk(rest)?;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().map_err(|_| "a bad content-length")?;
        if rest.len() != length {
            return Err(format!("content-length {length}, but {} bytes before the connection closed", rest.len()));
        }
        response.body = rest.to_vec();
    } else {
        response.body = rest.to_vec();
    }
    Ok(response)
}

pub fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or("a chunk without a size line")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "a bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("a bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err("a truncated chunk".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
