//! `#[instrument_handler]`'s runtime: the families handlers record into,
//! their call sites, outcomes read from return values, and the per-call
//! guard.
//!
//! `layout` builds the families and sits below the registry, which calls
//! it; `call` is the hot path and lays the registry out on first use, so
//! it sits above.

pub(crate) mod call;
mod clock;
pub(crate) mod families;
pub(crate) mod layout;
pub(crate) mod outcome;
#[cfg(feature = "tower")]
pub(crate) mod request;
mod trace;

pub use call::{Call, Instrumented};
pub use families::{
    DEFAULT_STATUS_CODES, FUNCTION_BUCKETS, HandlerFamilies, HandlerKind, STANDARD_METHODS, StatusLabel,
    check_handler_site,
};
pub use layout::{HANDLERS, HandlerSite};
pub use outcome::{HandlerOutcome, Outcome, classify};
