//! Runtime of [`promshard`](https://docs.rs/promshard): instruments, the slot
//! arena, the registry and the exposition encoders.
//!
//! Depend on `promshard` instead; this crate's items are re-exported there
//! and documented with examples.

#![warn(missing_docs)]

//! # Layers
//!
//! The modules form layers that import only downward, so a reader can
//! start at the bottom and never meet a name from above:
//!
//! 0. support: `gate` (the one fork-safe lock, and the log queue of what
//!    was said under it), `notice` (every log message) and `user_code`
//!    (calling code that may panic without the panic hook);
//! 1. definitions, pure data and rules: `descriptor` (names and their
//!    validity, kinds, gauge modes and how each combines, buckets),
//!    `labels` (label values and domains), `exemplar` (an exemplar's
//!    rules and encoding), `seqlock` (the protocol of slots a reader
//!    must see whole) with `exemplar_slots` (an exemplar's slots, which
//!    the encoders read as they read counts), `budget`, and `encode`
//!    (formats, escaping, the one sample-line writer, rendering plans);
//! 2. storage: `arena` (memory), `info_slots` (how an info metric's
//!    slots hold its pairs), `shard` (this process's shard file, fork
//!    handling, the fault guard, the file format) and `linked` (other
//!    promshard versions linked into the binary);
//! 3. recording: `metric`, `interner`, `registry` (the layout, and
//!    the lazy paths of recording that may have to lay it out),
//!    `label_set`, the instruments, and `handler` (`#[instrument_handler]`:
//!    its families, built by `handler::layout`, which the registry calls
//!    and which imports nothing above the instruments, and the per-call
//!    guard, which may lay the registry out);
//! 4. collection: `collector`, `worker_collector` (collectors run in
//!    every worker of a pool), `process`, `builtin` and `merge`
//!    (reading, merging and compacting a shard directory, and Python's
//!    `.db` files);
//! 5. exposition: `expose` (encode and render) and `content_encoding`
//!    (the choice of gzip from `Accept-Encoding`, compression, and the
//!    headers every `/metrics` endpoint sends);
//! 6. serving: `http`, `layer` (the tower/axum layer), `multiprocess`,
//!    `push` (to a Pushgateway), `redis` (metrics kept in Redis), `testing` and `versions` (this version's
//!    entry for the others).

// 0. support
mod gate;
#[cfg(any(feature = "http", feature = "push", feature = "redis"))]
mod longest_wait;
mod notice;
mod user_code;
// 1. definitions
mod budget;
mod descriptor;
mod encode;
mod exemplar;
mod exemplar_slots;
mod labels;
mod native;
mod seqlock;
// 2. storage
mod arena;
mod info_slots;
mod linked;
mod shard;
// 3. recording
mod handler;
mod instruments;
mod interner;
mod label_set;
mod metric;
mod registry;
// 4. collection
mod builtin;
mod collector;
mod merge;
mod process;
mod worker_collector;
// 5. exposition
#[cfg(feature = "gzip")]
mod content_encoding;
mod expose;
// 6. serving
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "tower")]
pub mod layer;
pub mod multiprocess;
#[cfg(feature = "push")]
pub mod push;
#[cfg(feature = "redis")]
pub mod redis;
pub mod testing;
mod versions;

pub use collector::register_collector;
pub use collector::{Collector, FamilyWriter, MetricWriter};
#[cfg(feature = "gzip")]
pub use content_encoding::{ContentEncoding, MetricsResponse};
pub use descriptor::{
    DEFAULT_BUCKETS, Descriptor, GaugeMode, Kind, Opts, exponential_buckets, is_label_name, is_legacy_label_name,
    is_legacy_metric_name, is_metric_name, linear_buckets,
};
pub use expose::{Escaping, Exposition, Format, Protocol, encode, encode_into, render, set_created_samples};
pub use handler::{
    DEFAULT_STATUS_CODES, FUNCTION_BUCKETS, HandlerFamilies, HandlerKind, HandlerOutcome, Outcome, STANDARD_METHODS,
    StatusLabel,
};
#[cfg(feature = "http")]
pub use http::{MetricsServer, serve};
pub use instruments::callback::{interval as callback_interval, set_interval as set_callback_interval};
pub use instruments::counter::{Counter, CounterSeries, InvalidIncrement};
pub use instruments::gauge::{Gauge, GaugeSeries, InProgress};
pub use instruments::histogram::{Histogram, HistogramSeries, HistogramTimer};
pub use instruments::info::Info;
pub use instruments::state_set::{Enum, EnumSeries};
pub use label_set::{Bounded, LabelContext, LabelSet, LabelType};
pub use labels::{LabelDomain, LabelValue, OTHER};
pub use metric::MetricCore;
pub use native::NativeBuckets;
pub use process::ProcessCollector;
pub use registry::{RegistryError, check_registry};
pub use worker_collector::register_worker_collector;

/// Not a stable API: entry points for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod __fuzz {
    /// Parses bytes as a shard file (header, schema, string log), as a
    /// scrape would; must never panic.
    pub fn shard_file(bytes: &[u8]) -> bool {
        crate::merge::read::parse_bytes(bytes).is_ok()
    }

    /// Parses bytes as a Python prometheus_client `.db` file; must never
    /// panic.
    pub fn python_db(bytes: &[u8]) -> bool {
        crate::merge::python_db::parse(bytes).is_ok()
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
        crate::merge::compact::CRASH_POINT.store(point, core::sync::atomic::Ordering::Relaxed);
    }
    pub use crate::__promshard_outcome as outcome;
    pub use crate::collector::COLLECTORS;
    pub use crate::handler::{Call, HANDLERS, HandlerSite, Instrumented, check_handler_site, classify};
    pub use crate::registry::METRICS;

    /// For soak tests: how many distinct decoded shard schemas this
    /// process holds; it must follow the files in use, not history.
    pub fn schemas_in_use() -> usize {
        crate::merge::read::schemas_in_use()
    }
    pub use linkme;
}
