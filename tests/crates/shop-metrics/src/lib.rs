//! A library crate that declares metrics, as a real dependency would.

use promshard::{Counter, metric};

/// Orders placed, counted by the library.
#[metric]
pub static ORDERS_TOTAL: Counter;

/// Records one order.
pub fn place_order() {
    ORDERS_TOTAL.inc();
}
