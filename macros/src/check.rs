//! Rules that look at more than one argument, applied before expansion.
//! Every violation is recorded with the span of the token to change.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, Type};

use crate::ast::{Kind, Static};
use crate::attr::{Args, BucketSpec, Label, Native, Source};
use crate::ctxt::Ctxt;
use crate::names;

/// The default series budget of one metric.
pub(crate) const DEFAULT_MAX_SERIES: usize = 1000;

/// The modes a gauge accepts, with the runtime's variant names.
const MODES: &[(&str, &str)] = &[
    ("all", "All"),
    ("liveall", "LiveAll"),
    ("sum", "Sum"),
    ("livesum", "LiveSum"),
    ("min", "Min"),
    ("livemin", "LiveMin"),
    ("max", "Max"),
    ("livemax", "LiveMax"),
    ("mostrecent", "MostRecent"),
    ("livemostrecent", "LiveMostRecent"),
];

/// A declaration that passed every check, ready to expand.
pub(crate) struct Metric {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) max_series: usize,
    /// The runtime's `GaugeMode` variant.
    pub(crate) mode: Option<Ident>,
    /// Whether the series count depends on items the macro cannot see, so
    /// the expansion must check the budget in a `const`.
    pub(crate) budget_unchecked: bool,
    /// `store = redis`.
    pub(crate) redis: bool,
}

pub(crate) fn check(decl: &Static, args: &Args, cx: &mut Ctxt) -> Option<Metric> {
    if let Some(m) = &decl.mutability {
        cx.error(m.span, "a metric cannot be `static mut`: instruments are updated through shared references");
    }
    if let Some(init) = &decl.initializer {
        cx.error(init.span(), "remove the initializer: #[metric] writes it");
    }
    let Some(kind) = &decl.kind else {
        cx.error(decl.ty.span(), "expected one of `Counter`, `Gauge`, `Histogram`, `Info` or `Enum<States>`");
        return None;
    };

    let (name, name_span) = match &args.name {
        Some(lit) => (lit.value(), lit.span()),
        None => (decl.ident.unraw().to_string().to_lowercase(), decl.ident.span()),
    };
    check_name(&name, name_span, kind, cx);

    let help = match (&args.help, decl.doc_summary()) {
        (Some(lit), _) => lit.value(),
        (None, Some((doc, _))) => doc,
        (None, None) => {
            cx.error(
                decl.ident.span(),
                format!(
                    "metric `{name}` has no help text: add a doc comment (`/// What it counts.`) or `help = \"...\"`"
                ),
            );
            String::new()
        }
    };

    if let Some(unit) = &args.unit {
        let value = unit.value();
        let base = if matches!(kind, Kind::Counter) { name.strip_suffix("_total").unwrap_or(&name) } else { &name };
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            cx.error(unit.span(), "a unit is made of letters, digits and `_`, like `seconds` or `bytes`");
        } else if !base.ends_with(&format!("_{value}")) {
            cx.error(
                unit.span(),
                format!("the metric name must end with `_{value}` when its unit is `{value}`: `{base}_{value}`"),
            );
        }
    }

    let labels = args.labels.as_ref().map_or(&[][..], |l| &l.list[..]);
    if let (Kind::Info, Some(l)) = (kind, &args.labels) {
        cx.error(l.keyword.span(), "an Info metric takes its label pairs from `set(&[(name, value)])` at run time");
    }
    for (i, label) in labels.iter().enumerate() {
        check_label(label, &labels[..i], kind, &name, cx);
    }

    let mut series_factor = Some(1usize);
    match (&args.buckets, kind) {
        (Some(b), Kind::Histogram) => {
            series_factor = check_buckets(&b.spec, cx).map(|n| n + 2);
        }
        (None, Kind::Histogram) => series_factor = Some(11 + 2),
        (Some(b), _) => cx.error(b.keyword.span(), "`buckets` applies to histograms only"),
        (None, _) => {}
    }
    if let Kind::Enum(_) = kind {
        series_factor = None;
    }
    if let Some(native) = &args.native {
        check_native(native, kind, cx);
        // Without `buckets`, a native histogram's text shows `+Inf`,
        // `_count` and `_sum` only.
        if args.buckets.is_none() && matches!(kind, Kind::Histogram) {
            series_factor = Some(2);
        }
    }

    let mode = match (&args.mode, kind) {
        (Some(mode), Kind::Gauge) => match MODES.iter().find(|(m, _)| mode == m) {
            Some((_, variant)) => Some(Ident::new(variant, mode.span())),
            None => {
                let accepted: Vec<_> = MODES.iter().map(|(m, _)| *m).collect();
                cx.error(mode.span(), format!("unknown gauge mode `{mode}`; expected one of: {}", accepted.join(", ")));
                None
            }
        },
        (Some(mode), _) => {
            cx.error(mode.span(), "`mode` applies to gauges only: it says how values from several processes combine");
            None
        }
        (None, _) => None,
    };

    // In multiprocess mode a metric kept per process (an Enum, a gauge of
    // mode `all`, the default, or `liveall`) gets a `pid` label of its
    // own: a declared one would give every sample two, which Prometheus
    // refuses with the whole scrape.
    let per_process = args.store.is_none()
        && match kind {
            Kind::Enum(_) => true,
            Kind::Gauge => args.mode.as_ref().is_none_or(|mode| mode == "all" || mode == "liveall"),
            _ => false,
        };
    if per_process {
        for label in labels.iter().filter(|l| names::labels_clash(&l.name.text, "pid")) {
            let why = match kind {
                Kind::Enum(_) => "an Enum metric is kept per process".to_owned(),
                _ => format!(
                    "a gauge of mode `{}` is kept per process",
                    args.mode.as_ref().map_or("all".to_owned(), |m| m.to_string())
                ),
            };
            cx.error(
                label.name.span,
                format!(
                    "label `{}`: {why}, under a `pid` label of its own in multiprocess mode, so a declared `pid` \
                     would appear twice in every sample (Prometheus refuses the scrape): rename it{}",
                    label.name.text,
                    if matches!(kind, Kind::Gauge) {
                        ", or choose a mode that combines processes (`mode = livesum`, `max`...)"
                    } else {
                        ""
                    },
                ),
            );
        }
    }

    if let Some(flag) = &args.exemplars {
        if !matches!(kind, Kind::Counter | Kind::Histogram) {
            cx.error(flag.span(), "`exemplars` applies to counters and histograms only");
        }
        if args.store.is_some() {
            cx.error(flag.span(), "a Redis metric keeps no exemplars");
        }
    }

    let redis = match &args.store {
        None => false,
        Some(store) if store != "redis" => {
            cx.error(store.span(), format!("unknown store `{store}`; the one store besides this process is `redis`"));
            false
        }
        Some(store) => {
            if !matches!(kind, Kind::Counter | Kind::Gauge) {
                cx.error(store.span(), "`store = redis` applies to counters and gauges");
            }
            if let Some(mode) = &args.mode {
                cx.error(mode.span(), "a Redis metric has one value for every process: it takes no `mode`");
            }
            for label in args.labels.iter().flat_map(|l| &l.list) {
                if let Source::Bounded { span, .. } = &label.source {
                    cx.error(
                        *span,
                        "a Redis metric's labels need fixed lists of values (a scrape reads every key with one MGET): use a list or a LabelValue type",
                    );
                }
            }
            true
        }
    };

    let max_series = match &args.max_series {
        Some(lit) => match lit.base10_parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                cx.error(lit.span(), "`max_series` is a positive integer");
                DEFAULT_MAX_SERIES
            }
        },
        None => DEFAULT_MAX_SERIES,
    };

    // The budget is checked here when every factor is known, so the error
    // points at the labels; otherwise the expansion checks it in a const.
    let combinations = labels.iter().try_fold(1usize, |acc, l| Some(acc.saturating_mul(label_cardinality(&l.source)?)));
    let budget_unchecked = combinations.is_none() || series_factor.is_none();
    if let (Some(combinations), Some(factor)) = (combinations, series_factor) {
        let series = combinations.saturating_mul(factor);
        if series > max_series {
            let span =
                args.labels.as_ref().map(|l| l.keyword.span()).or(args.buckets.as_ref().map(|b| b.keyword.span()));
            let per = if factor > 1 { format!(" × {factor} per combination, buckets + 2") } else { String::new() };
            cx.error(
                span.unwrap_or(decl.ident.span()),
                format!(
                    "metric `{name}` can create {series} series ({combinations} label combinations{per}), over its budget of {max_series}; \
                     use fewer label values, or raise the budget with `max_series = {series}`"
                ),
            );
        }
    }

    Some(Metric { name, help, max_series, mode, budget_unchecked, redis })
}

fn check_name(name: &str, span: Span, kind: &Kind, cx: &mut Ctxt) {
    if !names::is_valid(name) {
        cx.error(
            span,
            format!("{name:?} is not a valid metric name: a name is UTF-8 text, not empty, with no control character"),
        );
        return;
    }
    let type_name = kind.type_name();
    let reserved: &[&str] = match kind {
        Kind::Counter => &["_total_total", "_created"],
        Kind::Histogram => &["_total", "_created", "_bucket", "_count", "_sum"],
        _ => &["_total", "_created"],
    };
    // Also as scrapers without UTF-8 support read it: `a.total` is their
    // `a_total`.
    let legacy = names::legacy_form(name);
    if let Some(suffix) = reserved.iter().find(|s| name.ends_with(*s) || legacy.ends_with(*s)) {
        let advice = match (*suffix, kind) {
            ("_total", _) => format!("only counters end in `_total`; a {type_name} would render as a counter's sample"),
            ("_total_total", _) => "a counter's `_total` is added once: drop one".to_owned(),
            _ => format!("`{suffix}` names a sample the exposition adds, so the family would clash with it"),
        };
        cx.error(span, format!("metric name `{name}`: {advice}"));
    }
}

fn check_label(label: &Label, before: &[Label], kind: &Kind, metric: &str, cx: &mut Ctxt) {
    let name = label.name.text.clone();
    let span = label.name.span;
    if !names::is_valid(&name) {
        cx.error(
            span,
            format!("{name:?} is not a valid label name: a name is UTF-8 text, not empty, with no control character"),
        );
    } else if name.starts_with("__") {
        cx.error(span, format!("label names starting with `__` are reserved for Prometheus: rename `{name}`"));
    } else if names::is_reserved_label(&name) {
        let [underscores, dots, _] = names::escaped(&name, false);
        let seen = if underscores.starts_with("__") { underscores } else { dots };
        cx.error(
            span,
            format!(
                "label `{name}` is `{seen}` to a scraper that asks for escaped names, and names starting with `__` \
                 are reserved for Prometheus: start it with a letter"
            ),
        );
    } else if name == "quantile" {
        cx.error(span, "the label name `quantile` is reserved for summaries");
    } else if name == "le" && matches!(kind, Kind::Histogram) {
        cx.error(span, "the label name `le` is reserved for histogram buckets");
    } else if names::labels_clash(&name, metric) && matches!(kind, Kind::Enum(_)) {
        cx.error(span, "an Enum metric uses its own name as the state label: rename this label");
    }
    if let Some(other) = before.iter().find(|b| names::labels_clash(&b.name.text, &name)) {
        if other.name.text == name {
            cx.error(span, format!("duplicate label `{name}`"));
        } else {
            cx.error(
                span,
                format!(
                    "labels `{}` and `{name}` are one label to a scraper that asks for escaped names: rename one",
                    other.name
                ),
            );
        }
    }
    match &label.source {
        Source::Type(ty) => {
            if let Some(unbounded) = unbounded_type(ty) {
                cx.error(
                    ty.span(),
                    format!(
                        "label `{name}`: `{unbounded}` is not bounded, so it could create any number of series. \
                         Use an enum with #[derive(LabelValue)] (`{name}: MyEnum`), an inline list \
                         (`{name} = [\"a\", \"b\"]`), or `{name} = bounded(N)` for strings known only at run time"
                    ),
                );
            }
        }
        Source::List { values, fallback, span } => {
            if values.is_empty() {
                cx.error(*span, format!("label `{name}` needs at least one value"));
            }
            for (i, v) in values.iter().enumerate() {
                if values[..i].iter().any(|w| w.value() == v.value()) {
                    cx.error(v.span(), format!("duplicate value {:?} for label `{name}`", v.value()));
                }
            }
            let _ = fallback;
        }
        Source::Bounded { capacity, span } => {
            if *capacity == 0 {
                cx.error(*span, "`bounded(N)` keeps N distinct values: N must be at least 1");
            }
        }
    }
}

/// The name of a type that cannot be a label because it has no fixed set
/// of values.
pub(crate) fn unbounded_type(ty: &Type) -> Option<String> {
    match ty {
        Type::Reference(r) => unbounded_type(&r.elem).map(|t| format!("&{t}")),
        Type::Path(p) => {
            let last = p.path.segments.last()?.ident.to_string();
            const UNBOUNDED: &[&str] = &[
                "String", "str", "Cow", "Box", "Arc", "Rc", "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16",
                "u32", "u64", "u128", "usize", "f32", "f64", "char", "Vec",
            ];
            UNBOUNDED.contains(&last.as_str()).then_some(last)
        }
        _ => None,
    }
}

/// The number of values a label can take, when the macro can tell.
fn label_cardinality(source: &Source) -> Option<usize> {
    match source {
        Source::Type(_) => None,
        Source::List { values, fallback, .. } => {
            let extra = fallback.as_ref().is_some_and(|f| values.iter().all(|v| v.value() != f.value()));
            Some(values.len() + extra as usize)
        }
        Source::Bounded { capacity, .. } => Some(capacity + 1),
    }
}

/// The ranges the runtime's `NativeBuckets::new` accepts, checked here
/// with the span of the value to change.
fn check_native(native: &Native, kind: &Kind, cx: &mut Ctxt) {
    if !matches!(kind, Kind::Histogram) {
        cx.error(native.keyword.span(), "`native` applies to histograms only");
    }
    if let Some((schema, span)) = native.schema {
        if !(-4..=8).contains(&schema) {
            cx.error(
                span,
                format!("a native histogram's schema is from -4 to 8 (bucket growth 2^(2^-schema)), not {schema}"),
            );
        }
    }
    if let Some((max, span)) = native.max_buckets {
        if !(1..=4096).contains(&max) {
            cx.error(span, format!("`max_buckets` is from 1 to 4096, not {max}"));
        }
    }
}

/// Checks literal buckets and returns their count when known.
fn check_buckets(spec: &BucketSpec, cx: &mut Ctxt) -> Option<usize> {
    let (values, span): (Vec<(f64, Span)>, Span) = match spec {
        BucketSpec::Listed(values, span) => (values.clone(), *span),
        BucketSpec::Generated(values, span) => (values.iter().map(|v| (*v, *span)).collect(), *span),
        BucketSpec::Path(_) => return None,
    };
    if values.is_empty() {
        cx.error(span, "a histogram needs at least one bucket; `+Inf` is added for you");
    }
    for (i, (v, s)) in values.iter().enumerate() {
        if !v.is_finite() {
            cx.error(*s, "histogram buckets must be finite; the `+Inf` bucket is always added");
        } else if i > 0 && values[i - 1].0 >= *v {
            cx.error(*s, format!("histogram buckets must be strictly increasing: {} follows {}", v, values[i - 1].0));
        }
    }
    Some(values.len())
}
