//! The five instrument types. Each is a `const`-constructible static that
//! owns a [`MetricCore`](crate::metric::MetricCore) and turns a typed label
//! tuple into a slot address.

pub(crate) mod callback;
pub(crate) mod counter;
pub(crate) mod float;
pub(crate) mod gauge;
pub(crate) mod histogram;
pub(crate) mod info;
pub(crate) mod state_set;
