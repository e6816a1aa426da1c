//! Names the registry's `linkme` slices after this crate's version.
//!
//! linkme derives a slice's link section from the static's name alone, so
//! two promshard versions in one binary that both declared `METRICS` would
//! share one section of two different element types; linkme panics at the
//! first use instead. A name per version keeps them apart, and generating
//! it here means no release can forget to change it.

use std::fmt::Write;

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    // Linkers only define start and stop symbols for sections named like C
    // identifiers: `0.2.0-rc.1` becomes `0_2_0_rc_1`.
    let suffix: String = version.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // One file per slice, each included by the module whose type it holds.
    for (file, name, element, doc) in [
        (
            "metrics_slice.rs",
            "METRICS",
            "&'static crate::metric::MetricCore",
            "Every metric declared with `#[metric]` or `promshard::register!`.",
        ),
        (
            "handlers_slice.rs",
            "HANDLERS",
            "&'static crate::handler::HandlerSite",
            "Every function instrumented with `#[instrument_handler]`.",
        ),
        (
            "redis_slice.rs",
            "REDIS_METRICS",
            "&'static dyn crate::redis::RedisMetric",
            "Every metric declared with `#[metric(store = redis)]`.",
        ),
        (
            "collectors_slice.rs",
            "COLLECTORS",
            "&'static dyn crate::collector::Collector",
            "Every collector declared with [`register_collector!`](crate::register_collector).",
        ),
    ] {
        let mut code = String::new();
        writeln!(
            code,
            "#[doc = {doc:?}]\n#[::linkme::distributed_slice]\npub static {name}_{suffix}: [{element}];\n\
             pub use {name}_{suffix} as {name};\n"
        )
        .expect("writing to a String");
        std::fs::write(out.join(file), code).expect("OUT_DIR is writable");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
