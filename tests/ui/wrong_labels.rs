use promshard::{metric, Counter, LabelValue};

#[derive(Clone, Copy, LabelValue)]
enum Method {
    Get,
    Post,
}

/// Requests.
#[metric(labels(method: Method, status = ["ok", "error"]))]
static REQUESTS_TOTAL: Counter;

fn main() {
    REQUESTS_TOTAL.with((Method::Get,)).inc();
    REQUESTS_TOTAL.with(("ok", Method::Get)).inc();
}
