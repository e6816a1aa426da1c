use promshard::{metric, Counter};

/// Requests, by two labels that scrapers without UTF-8 support would read
/// as one.
#[metric(name = "http.server.requests", labels("url.scheme" = ["http", "https"], url_scheme = ["x"]))]
static REQUESTS: Counter;

fn main() {}
