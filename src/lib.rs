#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

// The macro crate is empty until `#[metric]` lands; the re-export is wired
// now so the two crates are versioned together from the start.
#[allow(unused_imports)]
pub use promshard_macros::*;
pub use promshard_runtime::*;

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
