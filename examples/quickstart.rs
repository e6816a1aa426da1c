//! Declares a labelled counter, a gauge and a histogram, records a few
//! values and prints the exposition.
//!
//! ```sh
//! cargo run --example quickstart                   # Prometheus text 0.0.4
//! cargo run --example quickstart -- --openmetrics  # OpenMetrics 1.0.0
//! cargo run --example quickstart -- --serve 127.0.0.1:9100
//! ```

use std::time::Duration;

use promshard::{Counter, Format, Gauge, Histogram, LabelValue, Opts};

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
}

impl LabelValue for Method {
    const VALUES: &'static [&'static str] = &["get", "post"];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy)]
enum Status {
    Ok,
    NotFound,
    Error,
}

impl LabelValue for Status {
    const VALUES: &'static [&'static str] = &["200", "404", "500"];
    fn index(self) -> usize {
        self as usize
    }
}

static HTTP_REQUESTS: Counter<(Method, Status)> = Counter::new(
    Opts::new("http_requests_total", "HTTP requests served, by method and status.").labels(&["method", "status"]),
);

static IN_FLIGHT: Gauge = Gauge::new(Opts::new("http_requests_in_flight", "HTTP requests being served."));

static LATENCY: Histogram<(Method,)> = Histogram::new(
    Opts::new("http_request_duration_seconds", "Time to serve an HTTP request.")
        .unit("seconds")
        .labels(&["method"])
        .buckets(&[0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
);

promshard::register!(HTTP_REQUESTS, IN_FLIGHT, LATENCY);

fn handle(method: Method, status: Status, seconds: f64) {
    let _in_flight = IN_FLIGHT.track_inprogress();
    HTTP_REQUESTS.with((method, status)).inc();
    LATENCY.with((method,)).observe(seconds);
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();

    handle(Method::Get, Status::Ok, 0.003);
    handle(Method::Get, Status::Ok, 0.02);
    handle(Method::Get, Status::NotFound, 0.001);
    handle(Method::Post, Status::Ok, 0.3);
    handle(Method::Post, Status::Error, 2.0);
    IN_FLIGHT.add(2.0);

    match args.iter().position(|a| a == "--serve") {
        Some(i) => {
            let addr = args.get(i + 1).map_or("127.0.0.1:9100", String::as_str);
            let server = promshard::serve(addr)?;
            eprintln!("serving http://{}/metrics; Ctrl-C to stop", server.local_addr());
            loop {
                std::thread::sleep(Duration::from_millis(500));
                handle(Method::Get, Status::Ok, 0.01);
            }
        }
        None => {
            let format =
                if args.iter().any(|a| a == "--openmetrics") { Format::OpenMetrics } else { Format::Prometheus };
            let body = promshard::encode(format);
            print!("{}", String::from_utf8_lossy(&body));
            Ok(())
        }
    }
}
