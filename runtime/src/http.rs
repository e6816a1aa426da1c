//! A built-in `/metrics` endpoint for programs without a web server, like
//! Python's `start_http_server`.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running `/metrics` endpoint; see [`serve`].
///
/// Dropping the handle leaves the endpoint running for the rest of the
/// process; call [`shutdown`](MetricsServer::shutdown) to stop it.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

/// Serves `GET /metrics` on `addr` from a background thread, in the format
/// the client's `Accept` header asks for. Other paths get 404.
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
    let server = tiny_http::Server::http(addr).map_err(io::Error::other)?;
    let addr =
        server.server_addr().to_ip().ok_or_else(|| io::Error::other("the server is not bound to an IP address"))?;
    let server = Arc::new(server);
    let thread = std::thread::Builder::new().name("promshard-http".into()).spawn({
        let server = Arc::clone(&server);
        move || {
            for request in server.incoming_requests() {
                respond(request);
            }
        }
    })?;
    Ok(MetricsServer { server, addr, thread: Some(thread) })
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// The address the endpoint listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: waits for the thread that answers requests to end.
    /// The listening socket is closed by tiny_http's accept thread moments
    /// later.
    pub fn shutdown(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn respond(request: tiny_http::Request) {
    use tiny_http::{Header, Method, Response};

    let path = request.url().split('?').next().unwrap_or("");
    let method_ok = matches!(request.method(), Method::Get | Method::Head);
    let result = if path != "/metrics" {
        request.respond(Response::from_string("not found; metrics are at /metrics\n").with_status_code(404))
    } else if !method_ok {
        request.respond(Response::from_string("method not allowed\n").with_status_code(405))
    } else {
        let accept = request.headers().iter().find(|h| h.field.equiv("Accept")).map(|h| h.value.as_str().to_owned());
        let (body, content_type) = crate::render(accept.as_deref());
        let header = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
            .expect("content types are valid header values");
        request.respond(Response::from_data(body).with_header(header))
    };
    if let Err(e) = result {
        log::debug!("promshard: /metrics response not sent: {e}");
    }
}
