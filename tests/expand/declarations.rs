// The declarations from the `#[metric]` documentation, expanded in
// `declarations.expanded.rs`.

#[derive(Clone, Copy, LabelValue)]
enum Method {
    Get,
    Post,
    #[label(rename = "other")]
    Other,
}

/// Orders placed, by product category.
#[metric(labels(category = ["digital", "physical"]))]
static ORDERS_PLACED_TOTAL: Counter;

/// Time spent processing an order.
#[metric(unit = "seconds", buckets = [0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0], labels(method: Method))]
static ORDER_PROCESSING_SECONDS: Histogram;

/// Orders currently being processed.
#[metric(mode = livesum)]
static IN_FLIGHT_ORDERS: Gauge;

/// Requests by route pattern; at most 64 distinct values, the rest counted as "other".
#[metric(labels(route = bounded(64)))]
static ROUTE_HITS_TOTAL: Counter;
