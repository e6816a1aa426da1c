enum Method {
    Get,
    Post,
    #[label(rename = "other")]
    Other,
}
impl ::promshard::LabelValue for Method {
    const VALUES: &'static [&'static str] = &["get", "post", "other"];
    #[inline]
    fn index(self) -> usize {
        match self {
            Self::Get => 0,
            Self::Post => 1,
            Self::Other => 2,
        }
    }
}
///Values of label `category` of `ORDERS_PLACED_TOTAL`.
#[doc(hidden)]
#[allow(non_camel_case_types)]
struct __ORDERS_PLACED_TOTAL_category;
impl ::promshard::LabelType for __ORDERS_PLACED_TOTAL_category {
    type Value<'a> = &'a str;
    const DOMAIN: ::promshard::LabelDomain = ::promshard::LabelDomain::Values(
        &["digital", "physical"],
    );
    #[inline]
    fn index(value: &str, cx: ::promshard::LabelContext<'_>) -> usize {
        match value {
            "digital" => 0,
            "physical" => 1,
            _ => cx.refuse(value),
        }
    }
}
/// Orders placed, by product category.
static ORDERS_PLACED_TOTAL: Counter<(__ORDERS_PLACED_TOTAL_category,)> = ::promshard::Counter::new(
    ::promshard::Opts::new("orders_placed_total", "Orders placed, by product category.")
        .labels(&["category"])
        .declared_at(::core::file!(), ::core::line!()),
);
const _: () = {
    #[::promshard::__private::linkme::distributed_slice(::promshard::__private::METRICS)]
    #[linkme(crate = ::promshard::__private::linkme)]
    static ENTRY: &::promshard::__private::MetricCore = ORDERS_PLACED_TOTAL.core();
};
/// Time spent processing an order.
static ORDER_PROCESSING_SECONDS: Histogram<(Method,)> = ::promshard::Histogram::new(
    ::promshard::Opts::new("order_processing_seconds", "Time spent processing an order.")
        .unit("seconds")
        .labels(&["method"])
        .buckets(&[0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0])
        .declared_at(::core::file!(), ::core::line!()),
);
const _: () = {
    #[::promshard::__private::linkme::distributed_slice(::promshard::__private::METRICS)]
    #[linkme(crate = ::promshard::__private::linkme)]
    static ENTRY: &::promshard::__private::MetricCore = ORDER_PROCESSING_SECONDS.core();
    ::promshard::__private::check_series_budget(
        "order_processing_seconds",
        <(Method,) as ::promshard::LabelSet>::CARDINALITY,
        10,
        1000,
    );
};
/// Orders currently being processed.
static IN_FLIGHT_ORDERS: Gauge = ::promshard::Gauge::new(
    ::promshard::Opts::new("in_flight_orders", "Orders currently being processed.")
        .mode(::promshard::GaugeMode::LiveSum)
        .declared_at(::core::file!(), ::core::line!()),
);
const _: () = {
    #[::promshard::__private::linkme::distributed_slice(::promshard::__private::METRICS)]
    #[linkme(crate = ::promshard::__private::linkme)]
    static ENTRY: &::promshard::__private::MetricCore = IN_FLIGHT_ORDERS.core();
};
/// Requests by route pattern; at most 64 distinct values, the rest counted as "other".
static ROUTE_HITS_TOTAL: Counter<(::promshard::Bounded<64>,)> = ::promshard::Counter::new(
    ::promshard::Opts::new(
            "route_hits_total",
            "Requests by route pattern; at most 64 distinct values, the rest counted as \"other\".",
        )
        .labels(&["route"])
        .declared_at(::core::file!(), ::core::line!()),
);
const _: () = {
    #[::promshard::__private::linkme::distributed_slice(::promshard::__private::METRICS)]
    #[linkme(crate = ::promshard::__private::linkme)]
    static ENTRY: &::promshard::__private::MetricCore = ROUTE_HITS_TOTAL.core();
};
