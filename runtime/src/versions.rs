//! Several promshard versions in one binary.
//!
//! Cargo links two semver-incompatible versions (say an application on 0.1
//! and a dependency on 0.2) as two crates with their own types and
//! registry. The registry's `linkme` slices are named after the crate
//! version (see `build.rs`), so the versions' link sections never mix.

// `METRICS` and `COLLECTORS`, declared under this version's names.
include!(concat!(env!("OUT_DIR"), "/slices.rs"));
