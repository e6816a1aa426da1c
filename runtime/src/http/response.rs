//! Writing a response, and closing a connection so that the client reads
//! it.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// How long a closing connection is drained: bytes left unread when a
/// socket closes make the kernel reset the connection, and a reset can
/// destroy the response before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
/// At most this much is drained, so that a client streaming a body cannot
/// keep a thread busy for the whole linger.
const LINGER_BYTES: usize = 1 << 20;

pub(super) struct Response {
    pub(super) status: u16,
    pub(super) content_type: &'static str,
    pub(super) body: Vec<u8>,
    /// More headers (`Allow`, `WWW-Authenticate`, `Content-Encoding`,
    /// `Vary`).
    pub(super) headers: Vec<(&'static str, &'static str)>,
    /// Tells the client this connection carries no further request.
    pub(super) close: bool,
}

impl Response {
    /// A plain-text response, which closes the connection when `close`.
    pub(super) fn text(status: u16, body: &str, close: bool) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            headers: Vec::new(),
            close,
        }
    }

    pub(super) fn with_header(mut self, name: &'static str, value: &'static str) -> Response {
        self.headers.push((name, value));
        self
    }

    /// Writes the response (without its body when `head_only`, for `HEAD`,
    /// but with the same `Content-Length`) by `deadline`.
    pub(super) fn write(&self, stream: &mut TcpStream, head_only: bool, deadline: Instant) -> io::Result<()> {
        let head = self.head();
        let body: &[u8] = if head_only { &[] } else { &self.body };
        write_all(stream, &mut [IoSlice::new(head.as_bytes()), IoSlice::new(body)], deadline)
    }

    /// The whole response as bytes, for small ones written in one go.
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.head().into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The status line and headers, up to the blank line.
    fn head(&self) -> String {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head
    }
}

/// `write_all` for slices (still unstable in std), each write bounded by
/// what is left until `deadline`: a client reading one byte at a time
/// cannot stretch it.
fn write_all(stream: &mut TcpStream, mut slices: &mut [IoSlice<'_>], deadline: Instant) -> io::Result<()> {
    while !slices.is_empty() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        stream.set_write_timeout(Some(left))?;
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends a connection after its last response: sends FIN, then reads and
/// drops what the client still sends, for a bounded time, so that closing
/// does not reset the connection under the response.
pub(super) fn close(mut stream: TcpStream, timeout: Duration) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + timeout.min(LINGER);
    let mut drained = 0;
    let mut sink = [0u8; 4096];
    while drained < LINGER_BYTES {
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { return };
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}
