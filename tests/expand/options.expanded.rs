#[cfg(feature = "payments")]
///Values of label `outcome` of `PAYMENTS`.
#[doc(hidden)]
#[allow(non_camel_case_types)]
pub(crate) struct __PAYMENTS_outcome;
#[cfg(feature = "payments")]
impl ::promshard::LabelType for __PAYMENTS_outcome {
    type Value<'a> = &'a str;
    const DOMAIN: ::promshard::LabelDomain = ::promshard::LabelDomain::Values(
        &["ok", "declined", "other"],
    );
    #[inline]
    fn index(value: &str, _: ::promshard::LabelContext<'_>) -> usize {
        match value {
            "ok" => 0,
            "declined" => 1,
            _ => 2,
        }
    }
}
/// Payments by outcome; unknown outcomes count as "other".
#[cfg(feature = "payments")]
pub(crate) static PAYMENTS: Counter<(__PAYMENTS_outcome, bool)> = ::promshard::Counter::new(
    ::promshard::Opts::new("payments_total", "Payments, by outcome.")
        .labels(&["outcome", "retried"])
        .declared_at(::core::file!(), ::core::line!()),
);
#[cfg(feature = "payments")]
const _: () = {
    #[::promshard::__private::linkme::distributed_slice(::promshard::__private::METRICS)]
    #[linkme(crate = ::promshard::__private::linkme)]
    static ENTRY: &::promshard::__private::MetricCore = PAYMENTS.core();
    ::promshard::__private::check_series_budget(
        "payments_total",
        <(__PAYMENTS_outcome, bool) as ::promshard::LabelSet>::CARDINALITY,
        1,
        10,
    );
};
/// Build information.
pub static BUILD_INFO: Info = ::promshard::Info::new(
    ::promshard::Opts::new("build_info", "Build information.")
        .declared_at(::core::file!(), ::core::line!()),
);
const _: () = {
    #[::promshard::__private::linkme::distributed_slice(::promshard::__private::METRICS)]
    #[linkme(crate = ::promshard::__private::linkme)]
    static ENTRY: &::promshard::__private::MetricCore = BUILD_INFO.core();
};
/// The server's lifecycle phase.
static PHASE: promshard::Enum<Phase, ()> = my_reexport::promshard::Enum::new(
    my_reexport::promshard::Opts::new("phase", "The server's lifecycle phase.")
        .declared_at(::core::file!(), ::core::line!()),
);
const _: () = {
    #[my_reexport::promshard::__private::linkme::distributed_slice(
        my_reexport::promshard::__private::METRICS
    )]
    #[linkme(crate = my_reexport::promshard::__private::linkme)]
    static ENTRY: &my_reexport::promshard::__private::MetricCore = PHASE.core();
    my_reexport::promshard::__private::check_series_budget(
        "phase",
        <() as my_reexport::promshard::LabelSet>::CARDINALITY,
        <Phase as my_reexport::promshard::LabelValue>::CARDINALITY,
        1000,
    );
};
/// Queue wait.
static QUEUE_WAIT_SECONDS: Histogram = ::promshard::Histogram::new(
    ::promshard::Opts::new("queue_wait_seconds", "Queue wait.")
        .unit("seconds")
        .buckets(&[0.001, 0.004, 0.016, 0.064, 0.256, 1.024])
        .declared_at(::core::file!(), ::core::line!()),
);
const _: () = {
    #[::promshard::__private::linkme::distributed_slice(::promshard::__private::METRICS)]
    #[linkme(crate = ::promshard::__private::linkme)]
    static ENTRY: &::promshard::__private::MetricCore = QUEUE_WAIT_SECONDS.core();
};
/// Reply sizes, native only, with the default schema.
static REPLY_BYTES: Histogram = ::promshard::Histogram::new(
    ::promshard::Opts::new(
            "reply_bytes",
            "Reply sizes, native only, with the default schema.",
        )
        .unit("bytes")
        .native(::promshard::NativeBuckets::DEFAULT_SCHEMA, 80)
        .declared_at(::core::file!(), ::core::line!()),
);
const _: () = {
    #[::promshard::__private::linkme::distributed_slice(::promshard::__private::METRICS)]
    #[linkme(crate = ::promshard::__private::linkme)]
    static ENTRY: &::promshard::__private::MetricCore = REPLY_BYTES.core();
};
/// Lock hold times, classic buckets kept alongside the native ones.
static LOCK_HOLD_SECONDS: Histogram = ::promshard::Histogram::new(
    ::promshard::Opts::new(
            "lock_hold_seconds",
            "Lock hold times, classic buckets kept alongside the native ones.",
        )
        .buckets(&[0.001, 0.01])
        .native(-1, 20)
        .declared_at(::core::file!(), ::core::line!()),
);
const _: () = {
    #[::promshard::__private::linkme::distributed_slice(::promshard::__private::METRICS)]
    #[linkme(crate = ::promshard::__private::linkme)]
    static ENTRY: &::promshard::__private::MetricCore = LOCK_HOLD_SECONDS.core();
};
