#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use promshard_runtime::*;

/// Declares a metric on a `static`, with its labels checked at compile
/// time.
///
/// ```
/// use promshard::{metric, Counter, Gauge, Histogram, LabelValue};
///
/// #[derive(Clone, Copy, LabelValue)]
/// enum Method { Get, Post, #[label(rename = "other")] Other }
///
/// /// Orders placed, by product category.
/// #[metric(labels(category = ["digital", "physical"]))]
/// static ORDERS_PLACED_TOTAL: Counter;
///
/// /// Time spent processing an order.
/// #[metric(unit = "seconds", buckets = [0.01, 0.1, 1.0, 10.0], labels(method: Method))]
/// static ORDER_PROCESSING_SECONDS: Histogram;
///
/// /// Orders currently being processed.
/// #[metric(mode = livesum)]
/// static IN_FLIGHT_ORDERS: Gauge;
///
/// /// Requests by route pattern; at most 64 distinct values, the rest counted as "other".
/// #[metric(labels(route = bounded(64)))]
/// static ROUTE_HITS_TOTAL: Counter;
///
/// /// Order sizes, as a native histogram (sparse exponential buckets).
/// #[metric(unit = "bytes", native(schema = 2, max_buckets = 80))]
/// static ORDER_SIZE_BYTES: Histogram;
///
/// ORDERS_PLACED_TOTAL.with(("digital",)).inc();
/// ORDER_PROCESSING_SECONDS.with((Method::Post,)).observe(0.042);
/// let _guard = IN_FLIGHT_ORDERS.track_inprogress();
/// ROUTE_HITS_TOTAL.with(("/orders/{id}",)).inc();
/// ORDER_SIZE_BYTES.observe(1520.0);
///
/// use promshard::testing::sample_value;
/// assert_eq!(sample_value("orders_placed_total", &[("category", "digital")]), Some(1.0));
/// assert_eq!(sample_value("order_processing_seconds_count", &[("method", "post")]), Some(1.0));
/// assert_eq!(sample_value("in_flight_orders", &[]), Some(1.0));
/// assert_eq!(sample_value("route_hits_total", &[("route", "/orders/{id}")]), Some(1.0));
/// assert_eq!(sample_value("order_size_bytes_count", &[]), Some(1.0));
/// ```
///
/// The static's type names the instrument: `Counter`, `Gauge`, `Histogram`,
/// `Info` or `Enum<States>`; the macro fills in its label types and its
/// `const` initializer, and registers it. It works on statics of any
/// visibility, in modules and functions, behind `#[cfg]`.
///
/// # Arguments
///
/// - The doc comment's first paragraph is the HELP text; `help = "..."`
///   overrides it. A metric without help does not compile.
/// - The name is the static's name in lower case; `name = "..."` overrides
///   it. A counter's `_total` and an info's `_info` suffix are implied.
/// - `unit = "seconds"`: the name must end with `_seconds` (before
///   `_total`).
/// - `labels(...)`, one entry per label:
///   - `method: Method`: a type implementing [`LabelValue`]
///     (`#[derive(LabelValue)]` on a fieldless enum) or [`LabelType`];
///     recording takes a value of that type. No hashing.
///   - `category = ["digital", "physical"]`: an inline list; recording takes
///     a `&str`, matched by one generated `match`. A string outside the list
///     is dropped and counted in `promshard_label_refused_total`, unless the
///     list ends in `else "other"`, which folds it into that value.
///   - `route = bounded(64)`: strings known only at run time; each process
///     keeps the first 64 and counts the rest under `other` (and in
///     `promshard_label_overflow_total`).
/// - `buckets = [0.1, 0.5, 1.0]`, `linear(start, width, count)`,
///   `exponential(start, factor, count)` or the path of a `const` array
///   (histograms only; Prometheus' defaults otherwise, unless `native`).
/// - `native`, or `native(schema = 3, max_buckets = 160)` with either
///   left out for its default (histograms only): a native histogram
///   ([`Opts::native`](crate::Opts::native)), sparse exponential buckets
///   of growth `2^(2^-schema)` (schema -4 to 8), at most `max_buckets`
///   (1 to 4096) per series. Classic buckets are kept alongside only when
///   `buckets` is given too.
/// - `mode = livesum` (gauges only): how values from several processes
///   combine: `all`, `liveall`, `sum`, `livesum`, `min`, `livemin`, `max`,
///   `livemax`, `mostrecent`, `livemostrecent`.
/// - `max_series = N`: the series budget, 1,000 by default.
/// - `exemplars` (counters and histograms only): keep each series' latest
///   exemplar (each bucket's, for a histogram), recorded with
///   `inc_with_exemplar` / `observe_with_exemplar` and shown in
///   OpenMetrics and protobuf scrapes; see [`Opts::exemplars`].
/// - `crate = path`: where `promshard` is, for crates that re-export it.
///
/// # Errors
///
/// Compile errors, each at the token to change, and all of them in one
/// build: invalid names, reserved labels (`le` on histograms, `quantile`,
/// `__*`), suffixes the exposition adds (`_total` on a non-counter,
/// `_created`, `_bucket`…), a unit that is not the name's suffix, buckets
/// that are empty, not finite or not strictly increasing, unbounded label
/// types (`String`, integers, floats…) with the bounded alternatives,
/// `mode` on a non-gauge, `buckets` or `native` on a non-histogram, a
/// native schema or `max_buckets` out of range, `exemplars` on a gauge,
/// info or enum, unknown or
/// duplicate arguments, and a series budget overrun: label combinations ×
/// (buckets + 2 for histograms) over `max_series`. When the count depends
/// on a type defined elsewhere, a `const` assertion at the declaration
/// reports the metric, its series count and the limit.
pub use promshard_macros::metric;

/// Instruments a function or request handler: per call, a counter by
/// outcome, a latency histogram and an in-flight gauge.
///
/// (A crate of its own: other examples here declare `http_requests_total`.)
///
/// ```standalone_crate
/// use promshard::instrument_handler;
/// use promshard::testing::sample_value;
///
/// #[derive(Debug)]
/// struct NotFound;
///
/// #[instrument_handler(route = "/users/{id}", method = "GET")]
/// fn get_user(id: u64) -> Result<String, NotFound> {
///     if id == 0 { Err(NotFound)? }
///     Ok(format!("user {id}"))
/// }
///
/// #[instrument_handler]
/// fn settle_invoice(amount: i64) -> Result<i64, String> {
///     if amount < 0 {
///         return Err("negative".into());
///     }
///     Ok(amount)
/// }
///
/// get_user(7).unwrap();
/// get_user(0).unwrap_err();
/// settle_invoice(-1).unwrap_err();
///
/// let http = |status| [("handler", "/users/{id}"), ("method", "GET"), ("status", status)];
/// assert_eq!(sample_value("http_requests_total", &http("200")), Some(1.0));
/// assert_eq!(sample_value("http_requests_total", &http("500")), Some(1.0));
/// let latency = [("handler", "/users/{id}"), ("method", "GET")];
/// assert_eq!(sample_value("http_request_duration_seconds_count", &latency), Some(2.0));
/// assert_eq!(sample_value("http_requests_in_flight", &[("handler", "/users/{id}")]), Some(0.0));
///
/// let function = [("handler", "rust_out::settle_invoice"), ("result", "error")];
/// # let function = [("handler", concat!(module_path!(), "::settle_invoice")), ("result", "error")];
/// assert_eq!(sample_value("function_calls_total", &function), Some(1.0));
/// ```
///
/// It works on `fn` and `async fn`, free or in an `impl` (trait impls
/// too, and beside `#[async_trait]`), generic or returning `impl Trait`;
/// the body is the function's own, so `?` and `return` keep their
/// meaning and type errors point at it.
///
/// # Families and labels
///
/// With a `route`, an HTTP handler records into
/// `http_requests_total{handler,method,status}`,
/// `http_request_duration_seconds{handler,method}` and
/// `http_requests_in_flight{handler}`; without, a function records into
/// `function_calls_total{handler,result}`,
/// `function_call_duration_seconds{handler}` and
/// `function_calls_in_flight{handler}`, `handler` being its path
/// (`module::function`) and `result` one of `ok`, `error`, `panic`,
/// `cancelled`. The in-flight gauges combine across processes as
/// `livesum`. See [`HandlerFamilies`] for the defaults (buckets, status
/// codes, budget) and how to change them.
///
/// Every label is bounded by construction: `handler` takes its values from
/// the instrumented functions themselves, gathered when the program is
/// linked (so each has its series, at zero, from startup, with no
/// registration call); `method` from the standard methods plus `other`;
/// `status` from the family's status codes (or classes) plus `other`.
///
/// Of an HTTP handler's request counter and latency histogram, the series
/// of its own method (every status) are there from startup; those of
/// other methods appear once they count something, so that a handler
/// exposes the few dozen series it can produce, not the hundreds its
/// labels allow. A plain function's series are all there from startup.
///
/// # Beside the tower layer
///
/// Inside a request that the tower layer of `http_layer!` (feature `tower`) is
/// recording, an HTTP handler of the same families (no `families`
/// argument, or families without a prefix) counts no call of its own:
/// the request is counted once, by the layer, labelled with the router's
/// route template (or, where the router names none, this `route`) and
/// the response's status. Handlers with a prefix keep counting their own
/// families. A handler run on another task (`tokio::spawn`) is outside
/// the request and counts itself too.
///
/// # Outcomes
///
/// Read from the returned value, without glue: `Ok` is a success and
/// `Err` a failure (`200` and `500` for an HTTP handler, unless a side
/// tells its status), [`HandlerOutcome`] types tell their own, and so do
/// `http::StatusCode`, `http::Response<B>` and tuples led by a status
/// (feature `http-types`). Any other type is a success. A panic is counted
/// (`panic`, status `500`) and resumed; a future dropped before it
/// completes (a client that went away, a timeout, a `select!`) is counted
/// as `cancelled` (status `499`). Both release their in-flight count, and
/// every call is observed in the histogram, so its `_count` is the
/// counter's sum.
///
/// # Exemplars
///
/// With feature `opentelemetry`, a call that ends while an OpenTelemetry
/// span is active (in `opentelemetry::Context::current()`) records its
/// `trace_id` and `span_id` as the exemplar of its count and of its
/// duration's bucket, shown in OpenMetrics and protobuf scrapes. Calls
/// outside a span count as before.
///
/// # Arguments
///
/// - `route = "/users/{id}"` with `method = "GET"`: an HTTP handler,
///   labelled with the route pattern (never the path requested).
/// - `name = "..."`: the `handler` value instead of the route or path
///   (two methods of the same name in one module need it to differ).
/// - `families = PATH`: a [`HandlerFamilies`] constant instead of the
///   defaults (another prefix, buckets, statuses or budget).
/// - `crate = path`: where `promshard` is, for crates that re-export it.
///
/// # Errors
///
/// Compile errors for an unknown or duplicate argument, `method` without
/// `route` (and the reverse), an unknown method, a `const fn`, an item
/// that is not a function with a body, and a series budget that one
/// handler overruns. The number of handlers is known when the registry
/// lays out: a family that cannot hold them all keeps the first (by name)
/// and reports the others, by name, in
/// [`check_registry`] and the log.
pub use promshard_macros::instrument_handler;

/// Derives [`LabelValue`](trait@LabelValue) for a fieldless enum: each variant is a value,
/// written in snake_case (`NotFound` → `not_found`) unless renamed with
/// `#[label(rename = "...")]`. `#[label(crate = path)]` on the enum points
/// at a re-exported `promshard`.
///
/// ```
/// use promshard::LabelValue;
///
/// #[derive(Clone, Copy, LabelValue)]
/// enum Status { Ok, NotFound, #[label(rename = "5xx")] ServerError }
///
/// assert_eq!(Status::VALUES, &["ok", "not_found", "5xx"]);
/// assert_eq!(Status::NotFound.index(), 1);
/// ```
pub use promshard_macros::LabelValue;

/// Adds declared instruments to the registry, so that they are laid out
/// and exposed. `#[metric]` will emit this for you; with the `const`
/// constructors, name each static once:
///
/// ```
/// use promshard::{Counter, Gauge, Opts};
///
/// static STARTS: Counter = Counter::new(Opts::new("starts_total", "Process starts."));
/// static TEMPERATURE: Gauge = Gauge::new(Opts::new("temperature_celsius", "Room temperature.").unit("celsius"));
/// promshard::register!(STARTS, TEMPERATURE);
/// # STARTS.inc();
/// # assert_eq!(promshard::testing::sample_value("starts_total", &[]), Some(1.0));
/// ```
///
/// Registration is a `linkme` distributed-slice entry: no code runs before
/// `main` and no call is needed at startup. An instrument used without
/// registration still records, into slots of its own, and is exposed after
/// its first use with a warning.
#[macro_export]
macro_rules! register {
    ($($metric:path),+ $(,)?) => {
        $(
            const _: () = {
                #[$crate::__private::linkme::distributed_slice($crate::__private::METRICS)]
                #[linkme(crate = $crate::__private::linkme)]
                static ENTRY: &$crate::__private::MetricCore = $metric.core();
            };
        )+
    };
}

/// Registers a [`Collector`] held in a `static`, with no call at startup.
///
/// ```
/// use promshard::{Collector, MetricWriter};
///
/// struct PoolStats;
/// impl Collector for PoolStats {
///     fn collect(&self, out: &mut MetricWriter<'_>) {
///         out.gauge("pool_connections", "Connections by state.")
///             .sample(&[("state", "idle")], 4.0)
///             .sample(&[("state", "busy")], 2.0);
///     }
/// }
///
/// static POOL_STATS: PoolStats = PoolStats;
/// promshard::register_collector!(POOL_STATS);
///
/// assert_eq!(promshard::testing::sample_value("pool_connections", &[("state", "busy")]), Some(2.0));
/// ```
#[macro_export]
macro_rules! register_collector {
    ($collector:path) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::COLLECTORS)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: &dyn $crate::Collector = &$collector;
        };
    };
}

/// Not a stable API: what generated code and this crate's macros call.
#[doc(hidden)]
pub mod __private {
    pub use promshard_runtime::__private::*;
    pub use promshard_runtime::MetricCore;
}
