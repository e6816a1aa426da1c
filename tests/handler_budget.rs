//! A handler family too small for the program's handlers: the first
//! handlers (by name) are laid out, the others are named in
//! `check_registry` and record into slots that are never exposed.

use promshard::testing::sample_value;
use promshard::{HandlerFamilies, RegistryError, instrument_handler};

/// Each function handler takes 4 series of the counter and 17 of the
/// histogram (15 buckets + 2): 40 series hold two handlers.
const SMALL: HandlerFamilies = HandlerFamilies::functions().prefix("small").max_series(40);

#[instrument_handler(name = "a", families = SMALL)]
fn a() {}

#[instrument_handler(name = "b", families = SMALL)]
fn b() {}

#[instrument_handler(name = "c", families = SMALL)]
fn c() {}

#[test]
fn handlers_past_the_budget_are_reported_by_name() {
    let problems = promshard::check_registry().unwrap_err();
    let [RegistryError::HandlerFamily { family, message }] = &problems[..] else { panic!("{problems:?}") };
    assert_eq!(family, "small_function_call_duration_seconds");
    assert!(message.starts_with("handler `c` (tests/handler_budget.rs:"), "{message}");
    a();
    b();
    c();
    let calls = |handler| sample_value("small_function_calls_total", &[("handler", handler), ("result", "ok")]);
    assert_eq!((calls("a"), calls("b"), calls("c")), (Some(1.0), Some(1.0), None));
}
