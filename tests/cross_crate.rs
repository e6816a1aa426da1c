//! Metrics declared in a library are registered in the binary that links
//! it, and a name clash across crates is reported with both locations.

use promshard::{Counter, RegistryError, metric};

/// Orders placed, counted again by the application: a clash.
#[metric]
static ORDERS_TOTAL: Counter;

#[test]
fn library_metrics_are_exposed_and_clashes_name_both_crates() {
    shop_metrics::place_order();
    ORDERS_TOTAL.inc_by(5);

    let errors = promshard::check_registry().unwrap_err();
    let [RegistryError::DuplicateName { sample, first, second }] = &errors[..] else {
        panic!("expected one clash, got {errors:?}")
    };
    assert_eq!(sample, "orders");
    let mut locations = [first.as_str(), second.as_str()];
    locations.sort();
    assert!(locations[0].starts_with("tests/crates/shop-metrics/src/lib.rs:"), "{locations:?}");
    assert!(locations[1].starts_with("tests/cross_crate.rs:"), "{locations:?}");

    // One declaration is exposed, never a sum of both.
    let exposed = promshard::testing::sample_value("orders_total", &[]).unwrap();
    assert!(exposed == 1.0 || exposed == 5.0, "{exposed}");
}
