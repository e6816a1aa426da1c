//! Declares a labelled counter, a gauge and a histogram, records a few
//! values and prints the exposition.
//!
//! ```sh
//! cargo run --example quickstart                   # Prometheus text 0.0.4
//! cargo run --example quickstart -- --openmetrics  # OpenMetrics 1.0.0
//! cargo run --example quickstart -- --serve 127.0.0.1:9100
//! ```

use std::time::Duration;

use promshard::{Counter, Format, Gauge, Histogram, LabelValue, metric};

#[derive(Clone, Copy, LabelValue)]
enum Method {
    Get,
    Post,
}

#[derive(Clone, Copy, LabelValue)]
enum Status {
    #[label(rename = "200")]
    Ok,
    #[label(rename = "404")]
    NotFound,
    #[label(rename = "500")]
    Error,
}

/// HTTP requests served, by method and status.
#[metric(labels(method: Method, status: Status))]
static HTTP_REQUESTS_TOTAL: Counter;

/// HTTP requests being served.
#[metric(mode = livesum)]
static HTTP_REQUESTS_IN_FLIGHT: Gauge;

/// Time to serve an HTTP request.
#[metric(unit = "seconds", buckets = [0.005, 0.01, 0.05, 0.1, 0.5, 1.0], labels(method: Method))]
static HTTP_REQUEST_DURATION_SECONDS: Histogram;

fn handle(method: Method, status: Status, seconds: f64) {
    let _in_flight = HTTP_REQUESTS_IN_FLIGHT.track_inprogress();
    HTTP_REQUESTS_TOTAL.with((method, status)).inc();
    HTTP_REQUEST_DURATION_SECONDS.with((method,)).observe(seconds);
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();

    handle(Method::Get, Status::Ok, 0.003);
    handle(Method::Get, Status::Ok, 0.02);
    handle(Method::Get, Status::NotFound, 0.001);
    handle(Method::Post, Status::Ok, 0.3);
    handle(Method::Post, Status::Error, 2.0);
    HTTP_REQUESTS_IN_FLIGHT.add(2.0);

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
            print!("{}", String::from_utf8_lossy(&promshard::encode(format)));
            Ok(())
        }
    }
}
