//! Turning away connections past the cap: a 503 at once, from one thread
//! for all of them, whatever they send or fail to send.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use super::response::Response;

/// Connections waiting for their 503; past this many, a connection is
/// closed without one, so that a flood costs no memory.
const QUEUE: usize = 64;
/// Connections answered and being drained at once; past this many the
/// oldest is closed.
const LINGERING: usize = 256;
/// How long an answered connection is drained: closing a socket with
/// unread bytes resets it, and a reset can destroy the 503 before the
/// client reads it.
const LINGER: Duration = Duration::from_millis(250);
/// How often lingering connections are looked at. Non-blocking reads on
/// one thread, rather than a blocking read each, keep a silent flood from
/// delaying the next 503.
const POLL: Duration = Duration::from_millis(10);

/// The acceptor's end: hands over connections to turn away.
pub(super) struct Rejecter {
    queue: SyncSender<TcpStream>,
}

impl Rejecter {
    pub(super) fn turn_away(&self, stream: TcpStream) {
        // When the queue is full the stream is dropped: closed without a
        // response.
        let _ = self.queue.try_send(stream);
    }
}

/// Starts the thread; it ends once the [`Rejecter`] is dropped and the
/// connections it had are closed.
pub(super) fn start() -> io::Result<Rejecter> {
    let (queue, incoming) = std::sync::mpsc::sync_channel(QUEUE);
    thread::Builder::new().name("promshard-http-reject".into()).spawn(move || run(&incoming))?;
    Ok(Rejecter { queue })
}

fn run(incoming: &Receiver<TcpStream>) {
    let response =
        Response::text(503, "too many connections; try again later\n", true).with_header("Retry-After", "1").to_bytes();
    let mut lingering: VecDeque<(TcpStream, Instant)> = VecDeque::new();
    let mut open = true;
    let mut next_sweep = Instant::now();
    while open || !lingering.is_empty() {
        let next = if lingering.is_empty() {
            incoming.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else if open {
            incoming.recv_timeout(POLL)
        } else {
            thread::sleep(POLL);
            Err(RecvTimeoutError::Timeout)
        };
        match next {
            Ok(stream) => {
                if let Some(stream) = answer(stream, &response) {
                    if lingering.len() == LINGERING {
                        lingering.pop_front();
                    }
                    lingering.push_back((stream, Instant::now() + LINGER));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        // Every poll interval, even while a flood keeps the queue full.
        let now = Instant::now();
        if now >= next_sweep {
            lingering.retain_mut(|(stream, until)| now < *until && still_open(stream));
            next_sweep = now + POLL;
        }
    }
}

/// Sends the 503 and FIN without waiting for anything; `None` when the
/// connection is already done with.
fn answer(mut stream: TcpStream, response: &[u8]) -> Option<TcpStream> {
    stream.set_nonblocking(true).ok()?;
    // A fresh socket's send buffer always has room for a few hundred bytes;
    // a short write means the connection is broken.
    match stream.write(response) {
        Ok(n) if n == response.len() => {}
        _ => return None,
    }
    stream.shutdown(Shutdown::Write).ok()?;
    Some(stream)
}

/// Reads away what has arrived; whether the client has yet to close.
fn still_open(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    // Bounded, so that one client streaming bytes cannot hold the thread.
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
