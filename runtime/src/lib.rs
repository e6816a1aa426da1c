//! Runtime of [`promshard`](https://docs.rs/promshard): instruments, the slot
//! arena, the registry and the exposition encoders.
//!
//! Depend on `promshard` instead; this crate's items are re-exported there
//! and documented with examples.

#![warn(missing_docs)]

mod arena;
mod budget;
mod builtin;
mod collector;
mod descriptor;
mod expose;
mod gate;
#[cfg(feature = "http")]
pub mod http;
mod instruments;
mod interner;
mod labels;
mod metric;
pub mod multiprocess;
mod notice;
mod process;
// used by the multiprocess merge (next)
#[allow(dead_code)]
mod python_db;
mod registry;
mod shard;
pub mod testing;
mod versions;

pub use collector::{Collector, FamilyWriter, MetricWriter};
pub use descriptor::{
    DEFAULT_BUCKETS, Descriptor, GaugeMode, Kind, Opts, exponential_buckets, is_label_name, is_metric_name,
    linear_buckets,
};
pub use expose::{Format, encode, encode_into, render};
#[cfg(feature = "http")]
pub use http::{MetricsServer, serve};
pub use instruments::counter::{Counter, CounterSeries, InvalidIncrement};
pub use instruments::gauge::{Gauge, GaugeSeries, InProgress};
pub use instruments::histogram::{Histogram, HistogramSeries, HistogramTimer};
pub use instruments::info::Info;
pub use instruments::state_set::{Enum, EnumSeries};
pub use labels::{Bounded, LabelContext, LabelDomain, LabelSet, LabelType, LabelValue, OTHER};
pub use metric::MetricCore;
pub use process::ProcessCollector;
pub use registry::{RegistryError, check_registry, register_collector};

/// Not a stable API: entry points for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod __fuzz {
    /// Parses bytes as a shard file (header, schema, string log), as a
    /// scrape would; must never panic.
    pub fn shard_file(bytes: &[u8]) -> bool {
        crate::shard::read::parse_bytes(bytes).is_ok()
    }

    /// Parses bytes as a Python prometheus_client `.db` file; must never
    /// panic.
    pub fn python_db(bytes: &[u8]) -> bool {
        crate::python_db::parse(bytes).is_ok()
    }
}

/// Not a stable API: what generated code and the facade's macros call.
#[doc(hidden)]
pub mod __private {
    pub use crate::budget::check_series_budget;

    /// For crash tests only: makes the next compaction end the process at
    /// `point` (1: archive written, 2: archive renamed, 3: one absorbed
    /// shard deleted).
    pub fn crash_compaction_at(point: u8) {
        crate::shard::compact::CRASH_POINT.store(point, core::sync::atomic::Ordering::Relaxed);
    }
    pub use crate::registry::{COLLECTORS, METRICS};

    /// For soak tests: how many distinct decoded shard schemas this
    /// process holds; it must follow the files in use, not history.
    pub fn schemas_in_use() -> usize {
        crate::shard::read::schemas_in_use()
    }
    pub use linkme;
}
