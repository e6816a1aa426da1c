//! The three families a set of handlers records into, and how they are
//! named, labelled and bucketed: a `const` value, checked when the program
//! is compiled, that `#[instrument_handler(families = ...)]` points at.

use crate::descriptor::{DEFAULT_BUCKETS, is_metric_name};

/// The request methods a `method` label can name; anything else is
/// counted as `other`.
pub const STANDARD_METHODS: [&str; 9] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// The status codes an HTTP handler's `status` label keeps by default:
/// those web APIs commonly answer, `405` and `408` (what routers and
/// timeout layers answer), `499` (the client went away, nginx's code for
/// it) and `500` (what a panicking handler's client gets from a
/// catch-panic layer). Any other code is counted as `other`.
pub const DEFAULT_STATUS_CODES: [u16; 21] =
    [200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 422, 429, 499, 500, 502, 503, 504];

/// Default buckets of `function_call_duration_seconds`: functions range
/// from in-memory work (a millisecond) to jobs (a minute), wider than the
/// request latencies [`DEFAULT_BUCKETS`] are made for. 15 bounds keep the
/// bucket search a linear scan.
pub const FUNCTION_BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The `handler` value of requests no route matched (404s, 405s,
/// fallbacks), as the tower layer records them: one series however many
/// paths scanners try.
#[cfg(feature = "tower")]
pub const UNMATCHED: &str = "<unmatched>";

/// The status code a cancelled HTTP call is counted under.
pub(crate) const CANCELLED_STATUS: u16 = 499;
/// The status code a panicking HTTP call is counted under.
pub(crate) const PANIC_STATUS: u16 = 500;

/// What the instrumented functions are: HTTP handlers or plain functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// Request handlers: `http_requests_total{handler,method,status}`.
    Http,
    /// Any function: `function_calls_total{handler,result}`.
    Function,
}

/// How the `status` label of HTTP handlers is spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusLabel {
    /// The listed codes (`"404"`), every other code as `other`.
    Codes(&'static [u16]),
    /// The class of the code: `1xx` to `5xx`, anything else as `other`.
    Classes,
}

/// The `result` label values of plain functions, in index order.
pub(crate) const RESULTS: [&str; 4] = ["ok", "error", "panic", "cancelled"];

/// The families a set of instrumented handlers records into, with their
/// name prefix, buckets, label values and series budget.
///
/// `#[instrument_handler]` uses [`HandlerFamilies::HTTP`] for handlers
/// with a `route`, [`HandlerFamilies::FUNCTIONS`] for the others; point
/// it at another with `families = PATH`:
///
/// ```
/// use promshard::{HandlerFamilies, instrument_handler};
///
/// const ADMIN: HandlerFamilies =
///     HandlerFamilies::http().prefix("admin").status_classes().buckets(&[0.01, 0.1, 1.0]);
///
/// #[instrument_handler(route = "/admin/reindex", method = "POST", families = ADMIN)]
/// fn reindex() -> u32 {
///     7
/// }
///
/// assert_eq!(reindex(), 7);
/// let count = promshard::testing::sample_value(
///     "admin_http_requests_total",
///     &[("handler", "/admin/reindex"), ("method", "POST"), ("status", "2xx")],
/// );
/// assert_eq!(count, Some(1.0));
/// ```
///
/// Handlers whose families have the same kind and prefix share them.
/// Handlers that name no families follow whichever settings the group
/// has; those that name some must agree: the tower layer's
/// (`http_layer!(FAMILIES)`) win, else the first handler's by name, and
/// [`check_registry`](crate::check_registry) reports each disagreement.
#[derive(Clone, Copy, Debug)]
pub struct HandlerFamilies {
    pub(crate) kind: HandlerKind,
    pub(crate) prefix: &'static str,
    pub(crate) buckets: &'static [f64],
    pub(crate) methods: &'static [&'static str],
    pub(crate) statuses: StatusLabel,
    pub(crate) max_series: usize,
}

impl HandlerFamilies {
    /// HTTP handlers: `http_requests_total{handler,method,status}`,
    /// `http_request_duration_seconds{handler,method}` with Prometheus'
    /// default buckets (5 ms to 10 s, what dashboards for request latency
    /// expect), `http_requests_in_flight{handler}`. Every standard method,
    /// [`DEFAULT_STATUS_CODES`], and a budget of 10,000 series per family
    /// (ten times `#[metric]`'s, since one family holds every handler).
    pub const HTTP: HandlerFamilies = HandlerFamilies {
        kind: HandlerKind::Http,
        prefix: "",
        buckets: &DEFAULT_BUCKETS,
        methods: &STANDARD_METHODS,
        statuses: StatusLabel::Codes(&DEFAULT_STATUS_CODES),
        max_series: 10_000,
    };

    /// Plain functions: `function_calls_total{handler,result}`,
    /// `function_call_duration_seconds{handler}` with [`FUNCTION_BUCKETS`],
    /// `function_calls_in_flight{handler}`; 10,000 series per family.
    ///
    /// "Calls", not "requests": a job or a message consumer answers no
    /// one, so `result` (`ok`, `error`, `panic`, `cancelled`) replaces
    /// method and status. The names are those OpenTelemetry-style function
    /// metrics use, so existing dashboards carry over.
    pub const FUNCTIONS: HandlerFamilies = HandlerFamilies {
        kind: HandlerKind::Function,
        prefix: "",
        buckets: &FUNCTION_BUCKETS,
        methods: &[],
        statuses: StatusLabel::Codes(&[]),
        max_series: 10_000,
    };

    /// [`HandlerFamilies::HTTP`], to adjust.
    pub const fn http() -> HandlerFamilies {
        HandlerFamilies::HTTP
    }

    /// [`HandlerFamilies::FUNCTIONS`], to adjust.
    pub const fn functions() -> HandlerFamilies {
        HandlerFamilies::FUNCTIONS
    }

    /// Prefixes every family name with `prefix_`.
    pub const fn prefix(self, prefix: &'static str) -> HandlerFamilies {
        assert!(is_metric_name(prefix), "invalid prefix: empty, or with a control character");
        HandlerFamilies { prefix, ..self }
    }

    /// The duration histogram's bucket upper bounds: strictly increasing
    /// and finite, `+Inf` implied.
    pub const fn buckets(self, buckets: &'static [f64]) -> HandlerFamilies {
        assert!(!buckets.is_empty(), "histogram buckets must not be empty");
        let mut i = 0;
        while i < buckets.len() {
            assert!(buckets[i].is_finite(), "histogram buckets must be finite (+Inf is implied)");
            assert!(i == 0 || buckets[i - 1] < buckets[i], "histogram buckets must be strictly increasing");
            i += 1;
        }
        HandlerFamilies { buckets, ..self }
    }

    /// The methods the `method` label keeps (standard methods, upper
    /// case); handlers with any other are counted as `other`.
    pub const fn methods(self, methods: &'static [&'static str]) -> HandlerFamilies {
        assert!(matches!(self.kind, HandlerKind::Http), "only HTTP handler families have a method label");
        let mut i = 0;
        while i < methods.len() {
            assert!(method_index(&STANDARD_METHODS, methods[i]) < STANDARD_METHODS.len(), "not a standard method");
            assert!(method_index(methods, methods[i]) == i, "a method is listed twice");
            i += 1;
        }
        HandlerFamilies { methods, ..self }
    }

    /// The status codes the `status` label keeps, in increasing order;
    /// every other code is counted as `other`.
    pub const fn status_codes(self, codes: &'static [u16]) -> HandlerFamilies {
        assert!(matches!(self.kind, HandlerKind::Http), "only HTTP handler families have a status label");
        let mut i = 0;
        while i < codes.len() {
            assert!(codes[i] >= 100 && codes[i] <= 999, "status codes are 100 to 999");
            assert!(i == 0 || codes[i - 1] < codes[i], "status codes must be strictly increasing");
            i += 1;
        }
        HandlerFamilies { statuses: StatusLabel::Codes(codes), ..self }
    }

    /// Labels statuses by class (`2xx`, `4xx`…) instead of by code.
    pub const fn status_classes(self) -> HandlerFamilies {
        assert!(matches!(self.kind, HandlerKind::Http), "only HTTP handler families have a status label");
        HandlerFamilies { statuses: StatusLabel::Classes, ..self }
    }

    /// The series budget of each of the three families: label
    /// combinations (× buckets + 2 for the histogram) over every handler.
    pub const fn max_series(self, max_series: usize) -> HandlerFamilies {
        HandlerFamilies { max_series, ..self }
    }

    /// Which kind of handler these families are for.
    pub const fn kind(&self) -> HandlerKind {
        self.kind
    }

    /// Values of the `status` label, `other` last (empty for functions).
    pub(crate) fn status_values(&self) -> Vec<String> {
        if self.kind == HandlerKind::Function {
            return Vec::new();
        }
        let mut values: Vec<String> = match self.statuses {
            StatusLabel::Codes(codes) => codes.iter().map(|c| c.to_string()).collect(),
            StatusLabel::Classes => (1..=5).map(|c| format!("{c}xx")).collect(),
        };
        values.push(crate::labels::OTHER.to_owned());
        values
    }

    /// How many values the label after `handler` (and `method`) of the
    /// calls counter has: statuses, or results.
    pub(crate) const fn outcomes(&self) -> usize {
        match (self.kind, self.statuses) {
            (HandlerKind::Function, _) => RESULTS.len(),
            (HandlerKind::Http, StatusLabel::Codes(codes)) => codes.len() + 1,
            (HandlerKind::Http, StatusLabel::Classes) => 6,
        }
    }

    /// Values of the `method` label (`other` last); 1 for functions,
    /// which have none.
    pub(crate) const fn method_count(&self) -> usize {
        match self.kind {
            HandlerKind::Http => self.methods.len() + 1,
            HandlerKind::Function => 1,
        }
    }

    /// Series each handler adds to the calls counter, the duration
    /// histogram (× buckets + 2) and the in-flight gauge.
    pub(crate) const fn series_per_handler(&self) -> [usize; 3] {
        let methods = self.method_count();
        [methods * self.outcomes(), methods * (self.buckets.len() + 2), 1]
    }

    /// Family names without prefix: calls, duration, in flight.
    pub(crate) const fn base_names(&self) -> [&'static str; 3] {
        match self.kind {
            HandlerKind::Http => ["http_requests_total", "http_request_duration_seconds", "http_requests_in_flight"],
            HandlerKind::Function => {
                ["function_calls_total", "function_call_duration_seconds", "function_calls_in_flight"]
            }
        }
    }

    /// Whether two settings describe the same families.
    pub(crate) fn same_as(&self, other: &HandlerFamilies) -> bool {
        self.kind == other.kind
            && self.prefix == other.prefix
            && self.buckets == other.buckets
            && self.methods == other.methods
            && self.statuses == other.statuses
            && self.max_series == other.max_series
    }
}

/// Where `method` is in `list`, or `list.len()`.
pub(crate) const fn method_index(list: &[&str], method: &str) -> usize {
    let mut i = 0;
    while i < list.len() {
        if crate::descriptor::eq(list[i], method) {
            return i;
        }
        i += 1;
    }
    list.len()
}

/// Fails const evaluation when one handler alone would overrun a family's
/// budget: what the macro can check where it sees the handler.
pub const fn check_handler_site(families: &HandlerFamilies, handler: &str) {
    let per_handler = families.series_per_handler();
    let names = families.base_names();
    let mut i = 0;
    while i < 3 {
        crate::budget::check_handler_budget(handler, names[i], per_handler[i], families.max_series);
        i += 1;
    }
}
