//! Procedural macros of [`promshard`](https://docs.rs/promshard).
//!
//! This crate is an implementation detail: depend on `promshard`, which
//! re-exports everything here and provides the runtime the generated code
//! calls into. `#[metric]` and `#[instrument_handler]` arrive in the next
//! milestone; the crate is wired into the facade now so its version is
//! pinned with the runtime's from the start.
