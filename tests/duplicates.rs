//! Two declarations of one name are reported with both locations, and
//! only one is exposed; recording through either never fails.

use promshard::{Counter, Gauge, Opts, RegistryError};

mod billing {
    use super::*;
    pub static INVOICES: Counter = Counter::new(Opts::new("invoices_total", "Invoices sent."));
    promshard::register!(INVOICES);
}

mod reports {
    use super::*;
    // Same family name as billing::INVOICES.
    pub static INVOICES: Counter = Counter::new(Opts::new("invoices", "Invoices counted again."));
    promshard::register!(INVOICES);
    // A gauge whose name equals the counter's `_total` sample.
    pub static INVOICES_TOTAL: Gauge = Gauge::new(Opts::new("invoices_total", "Clashes with a sample name."));
    promshard::register!(INVOICES_TOTAL);
}

#[test]
fn duplicates_are_reported_with_both_locations() {
    let errors = promshard::check_registry().unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for error in &errors {
        let RegistryError::DuplicateName { first, second, .. } = error else { panic!("unexpected {error:?}") };
        assert!(first.starts_with("tests/duplicates.rs:"), "{first}");
        assert!(second.starts_with("tests/duplicates.rs:"), "{second}");
        assert_ne!(first, second);
        assert!(error.to_string().contains(first.as_str()) && error.to_string().contains(second.as_str()));
    }

    billing::INVOICES.inc();
    reports::INVOICES.inc_by(10);
    reports::INVOICES_TOTAL.set(99.0);
    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    assert_eq!(text.matches("# TYPE invoices").count(), 1, "{text}");
    let exposed = promshard::testing::sample_value("invoices_total", &[]).unwrap();
    assert!(exposed == 1.0 || exposed == 10.0, "one declaration's value, never a merge: {exposed}");
}
