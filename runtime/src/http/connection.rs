//! One connection's life: requests in, responses out, until the client is
//! done, too slow, or misbehaves.

use std::net::TcpStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::auth::Credentials;
use super::head::{Head, HeadError, Method, read_head};
use super::response::{self, Response};
use crate::MetricsResponse;
use std::time::Duration;

/// What a renderer returns: the body and its `Content-Type`.
type Rendered = (Vec<u8>, &'static str);

/// The renderer a server calls for each scrape, given the `Accept` header.
pub(super) type Render = dyn Fn(Option<&str>) -> Rendered + Send + Sync;

/// The validated limits of a running server.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) max_header_bytes: usize,
}

/// What every connection of a server shares.
pub(super) struct Service {
    pub(super) limits: Limits,
    pub(super) credentials: Option<Credentials>,
    pub(super) render: std::sync::Arc<Render>,
}

/// Answers requests on `stream` until it should close, then closes it.
pub(super) fn serve(mut stream: TcpStream, service: &Service) {
    let timeout = service.limits.timeout;
    // Responses go out in one write each; delaying them buys nothing.
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    loop {
        // Counted from the connection's start or from the previous
        // response: one bound for a silent client, a dribbling one and an
        // idle keep-alive.
        let deadline = Instant::now() + timeout;
        let head = match read_head(&mut stream, &mut buffer, service.limits.max_header_bytes, deadline) {
            Ok(head) => head,
            Err(HeadError::Closed | HeadError::TimedOut { partial: false }) => return,
            Err(error) => {
                let response = match error {
                    HeadError::TimedOut { .. } => Response::text(408, "request timeout\n", true),
                    HeadError::TooLarge => Response::text(431, "request header fields too large\n", true),
                    _ => Response::text(400, "bad request\n", true),
                };
                if response.write(&mut stream, false, Instant::now() + timeout).is_ok() {
                    response::close(stream, timeout);
                }
                return;
            }
        };
        let mut response = answer(&head, service);
        response.close |= !head.keep_alive || head.has_body;
        let written = response.write(&mut stream, head.method == Method::Head, Instant::now() + timeout);
        match written {
            Ok(()) if response.close => return response::close(stream, timeout),
            Ok(()) => {}
            Err(e) => {
                log::debug!("promshard: /metrics response not sent: {e}");
                return;
            }
        }
    }
}

fn answer(head: &Head, service: &Service) -> Response {
    if let Some(credentials) = &service.credentials {
        if !credentials.admits(&head.authorization) {
            return Response::text(401, "unauthorized\n", false)
                .with_header("WWW-Authenticate", credentials.challenge());
        }
    }
    if head.path != "/metrics" {
        return Response::text(404, "not found; metrics are at /metrics\n", false);
    }
    if head.method == Method::Other {
        // Its body, if any, is left unread: the connection must close.
        return Response::text(405, "method not allowed\n", true).with_header("Allow", "GET, HEAD");
    }
    // The renderer is the caller's code, or ours over files other processes
    // write: a bug there must cost one response, not the endpoint.
    let rendered = catch_unwind(AssertUnwindSafe(|| {
        let (body, content_type) = (service.render)(head.accept.as_deref());
        MetricsResponse::new(body, content_type, head.accept_encoding.as_deref())
    }));
    match rendered {
        Ok(exposition) => Response {
            status: 200,
            content_type: exposition.content_type(),
            headers: exposition.headers().collect(),
            body: exposition.into_body(),
            close: false,
        },
        Err(_) => Response::text(500, "internal server error: rendering the metrics panicked\n", false),
    }
}
