//! Reading current values back, for users' own tests.

/// The current value of the sample called `name` (with its suffix:
/// `_total`, `_bucket`, `_count`, `_sum`, `_info`) whose labels are exactly
/// `labels`, in any order; `None` when there is no such sample. Like
/// Python's `REGISTRY.get_sample_value`.
///
/// ```
/// use promshard::{Counter, LabelValue, Opts};
///
/// #[derive(Clone, Copy)]
/// enum Outcome { Ok, Failed }
/// impl LabelValue for Outcome {
///     const VALUES: &'static [&'static str] = &["ok", "failed"];
///     fn index(self) -> usize { self as usize }
/// }
///
/// static UPLOADS: Counter<(Outcome,)> =
///     Counter::new(Opts::new("uploads_total", "Uploads by outcome.").labels(&["outcome"]));
/// promshard::register!(UPLOADS);
///
/// UPLOADS.with((Outcome::Failed,)).inc();
/// assert_eq!(promshard::testing::sample_value("uploads_total", &[("outcome", "failed")]), Some(1.0));
/// assert_eq!(promshard::testing::sample_value("uploads_total", &[("outcome", "ok")]), Some(0.0));
/// assert_eq!(promshard::testing::sample_value("uploads_total", &[]), None);
/// ```
pub fn sample_value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    crate::expose::for_each_sample(|sample, sample_labels, value| {
        if found.is_none()
            && sample == name
            && sample_labels.len() == labels.len()
            && labels.iter().all(|l| sample_labels.contains(l))
        {
            found = Some(value);
        }
    });
    found
}
