//! The builder: limits, credentials and the renderer of a server.

use std::io;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use super::auth::Credentials;
use super::connection::Limits;
use super::listener::MetricsServer;
use crate::longest_wait::LONGEST_WAIT;

/// How to run a `/metrics` endpoint: its limits and the credentials it
/// asks for. Start from [`ServerOptions::new`] (or
/// [`MetricsServer::builder`]), change what you need, then
/// [`serve`](ServerOptions::serve).
///
/// ```
/// use std::time::Duration;
///
/// let server = promshard::http::ServerOptions::new()
///     .timeout(Duration::from_millis(500))
///     .max_connections(8)
///     .max_header_bytes(4096)
///     .basic_auth("prometheus", "correct horse")
///     .serve("127.0.0.1:0")
///     .unwrap();
/// server.shutdown();
/// ```
#[derive(Clone)]
pub struct ServerOptions {
    timeout: Duration,
    max_connections: usize,
    max_header_bytes: usize,
    credentials: Option<Credentials>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions::new()
    }
}

impl std::fmt::Debug for ServerOptions {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("timeout", &self.timeout)
            .field("max_connections", &self.max_connections)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("auth", &self.credentials.as_ref().map(Credentials::scheme))
            .finish()
    }
}

impl ServerOptions {
    /// The default of [`timeout`](ServerOptions::timeout): 10 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default of [`max_connections`](ServerOptions::max_connections): 64.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
    /// The default of [`max_header_bytes`](ServerOptions::max_header_bytes):
    /// 8 KiB, what common proxies allow.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;

    /// The defaults: a 10 s timeout, 64 connections, 8 KiB of request
    /// head, no authentication.
    pub fn new() -> ServerOptions {
        ServerOptions {
            timeout: Self::DEFAULT_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            credentials: None,
        }
    }

    /// How long a client may take to send a complete request head, from
    /// connecting or from the previous response on a kept-alive connection,
    /// and how long it may take to receive a response. A connection over
    /// it is closed (with 408 when it had sent part of a request). Must
    /// not be zero; a longer one than a century (`Duration::MAX` for
    /// "never") counts as a century.
    pub fn timeout(mut self, timeout: Duration) -> ServerOptions {
        self.timeout = timeout;
        self
    }

    /// How many connections are served at once. Each holds one thread
    /// while it is open; a connection past the cap gets 503 and is closed.
    /// Must not be zero.
    pub fn max_connections(mut self, max: usize) -> ServerOptions {
        self.max_connections = max;
        self
    }

    /// The largest request head (request line and headers) read; a larger
    /// one gets 431 and its connection is closed. Must not be zero.
    pub fn max_header_bytes(mut self, max: usize) -> ServerOptions {
        self.max_header_bytes = max;
        self
    }

    /// Requires `Authorization: Bearer TOKEN` on every request (the form
    /// Prometheus sends for `authorization: {credentials_file: ...}`);
    /// others get 401. Replaces [`basic_auth`](ServerOptions::basic_auth).
    /// The token must be non-empty printable ASCII without spaces.
    pub fn bearer_token(mut self, token: impl Into<String>) -> ServerOptions {
        self.credentials = Some(Credentials::bearer(token.into()));
        self
    }

    /// Requires HTTP basic authentication with this user and password on
    /// every request (Prometheus' `basic_auth`); others get 401. Replaces
    /// [`bearer_token`](ServerOptions::bearer_token). The user must not
    /// contain `:`.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> ServerOptions {
        self.credentials = Some(Credentials::basic(user.into(), password.into()));
        self
    }

    /// Serves this process's metrics (what [`render`](crate::render)
    /// returns) on `addr`, like [`serve`](crate::serve) with these options.
    ///
    /// # Errors
    ///
    /// When an option is invalid (a zero limit, a bad credential) or the
    /// address cannot be resolved or bound.
    pub fn serve(self, addr: impl ToSocketAddrs) -> io::Result<MetricsServer> {
        self.serve_with(addr, crate::expose::render)
    }

    /// Serves what `render` returns on `addr`: it gets the request's
    /// `Accept` header (`None` without one) and returns the body and its
    /// `Content-Type`; the server gzips the body when the client's
    /// `Accept-Encoding` allows. It runs on the connection's thread,
    /// possibly on several at once; when it panics, that request gets 500
    /// and the server carries on (unless the program is built with
    /// `panic = "abort"`).
    ///
    /// ```
    /// use promshard::{Exposition, multiprocess};
    ///
    /// // A sidecar exporting a shard directory, as `promshard serve` does.
    /// let dir = std::env::temp_dir().join("promshard-doc-serve-with");
    /// let server = promshard::http::ServerOptions::new()
    ///     .serve_with("127.0.0.1:0", move |accept| {
    ///         let chosen = Exposition::from_accept(accept);
    ///         (multiprocess::encode_dir(&dir, chosen), chosen.content_type())
    ///     })
    ///     .unwrap();
    /// server.shutdown();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`serve`](ServerOptions::serve).
    pub fn serve_with<F>(self, addr: impl ToSocketAddrs, render: F) -> io::Result<MetricsServer>
    where
        F: Fn(Option<&str>) -> (Vec<u8>, &'static str) + Send + Sync + 'static,
    {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("promshard::http: {what}"));
        if self.timeout.is_zero() {
            return Err(invalid("the timeout must not be zero"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections must not be zero"));
        }
        if self.max_header_bytes == 0 {
            return Err(invalid("max_header_bytes must not be zero"));
        }
        if let Some(credentials) = &self.credentials {
            credentials.validate().map_err(invalid)?;
        }
        let limits = Limits {
            // Deadlines are `Instant::now() + timeout`, which panics past
            // what the clock can hold.
            timeout: self.timeout.min(LONGEST_WAIT),
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
        };
        MetricsServer::start(addr, limits, self.credentials, Arc::new(render))
    }
}

impl MetricsServer {
    /// The options to start a server from: the same as
    /// [`ServerOptions::new`].
    ///
    /// ```
    /// let server = promshard::MetricsServer::builder().max_connections(4).serve("127.0.0.1:0").unwrap();
    /// server.shutdown();
    /// ```
    pub fn builder() -> ServerOptions {
        ServerOptions::new()
    }
}
