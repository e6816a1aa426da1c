//! The built-in `/metrics` endpoint, for programs without a web server of
//! their own (like Python's `start_http_server`), and the server behind
//! `promshard serve`.
//!
//! [`serve`] starts it with the defaults; [`ServerOptions`] sets the limits,
//! adds authentication, or swaps in another renderer. The server answers
//! `GET` and `HEAD` on `/metrics` (any query string), 404 on other paths and
//! 405 for other methods. A `/metrics` body is gzip-compressed for clients
//! whose `Accept-Encoding` allows it (Prometheus always sends
//! `Accept-Encoding: gzip`; see [`MetricsResponse`](crate::MetricsResponse)), and
//! sent as rendered to the others. It is written to stay up when it faces
//! the network:
//!
//! - every connection must send a complete request head within
//!   [`ServerOptions::timeout`], and may stay idle between keep-alive
//!   requests no longer than that; a response must be taken by the client
//!   within it too;
//! - request heads over [`ServerOptions::max_header_bytes`] get 431;
//! - at most [`ServerOptions::max_connections`] connections are served at
//!   once, each by one thread; past that, a new connection gets a quick 503
//!   and is closed, and is never queued;
//! - a renderer that panics costs its client a 500, not the endpoint;
//! - [`ServerOptions::bearer_token`] or [`ServerOptions::basic_auth`] make
//!   every request prove it knows a secret (401 otherwise).
//!
//! The endpoint still belongs on a private network: the limits keep one
//! client from taking it down, not a determined flood.
//!
//! ```
//! use std::time::Duration;
//!
//! let server = promshard::http::ServerOptions::new()
//!     .timeout(Duration::from_secs(5))
//!     .max_connections(16)
//!     .bearer_token("s3cret")
//!     .serve("127.0.0.1:0")
//!     .unwrap();
//! println!("scrape http://{}/metrics with `Authorization: Bearer s3cret`", server.local_addr());
//! server.shutdown();
//! ```

mod auth;
mod connection;
mod head;
mod listener;
mod options;
mod reject;
mod response;

use std::io;
use std::net::ToSocketAddrs;

pub use listener::MetricsServer;
pub use options::ServerOptions;

/// Serves `GET /metrics` on `addr` from background threads, in the format
/// the client's `Accept` header asks for, gzip-compressed when its
/// `Accept-Encoding` allows, with the default limits of [`ServerOptions`].
/// Other paths get 404, other methods 405.
///
/// ```
/// let server = promshard::serve("127.0.0.1:0").unwrap();
/// println!("scrape http://{}/metrics", server.local_addr());
/// server.shutdown();
/// ```
///
/// # Errors
///
/// When the address cannot be resolved or bound.
pub fn serve(addr: impl ToSocketAddrs) -> io::Result<MetricsServer> {
    ServerOptions::new().serve(addr)
}
