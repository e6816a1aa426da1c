use crate::descriptor::{Descriptor, INFO_PAYLOAD_MAX, Kind, Opts};
use crate::info_slots;
use crate::metric::MetricCore;

/// Label pairs describing the process, exposed with the value 1
/// (`build_info{version="1.4.2"} 1`), like Python's `Info`.
///
/// ```
/// use promshard::{Info, Opts};
///
/// static BUILD: Info = Info::new(Opts::new("build", "Build information."));
/// promshard::register!(BUILD);
///
/// BUILD.set(&[("version", env!("CARGO_PKG_VERSION")), ("profile", "release")]);
/// assert_eq!(
///     promshard::testing::sample_value("build_info", &[("version", env!("CARGO_PKG_VERSION")), ("profile", "release")]),
///     Some(1.0)
/// );
/// ```
pub struct Info {
    core: MetricCore,
}

impl Info {
    /// Declares an info metric; a trailing `_info` in the name is implied.
    #[track_caller]
    pub const fn new(opts: Opts) -> Info {
        Info { core: MetricCore::new(Descriptor::new(opts, Kind::Info, &[], 1, &[])) }
    }

    /// Replaces the exposed label pairs. Pairs with an invalid or reserved
    /// label name are dropped with a warning; nothing is exposed until the
    /// first call. A set of pairs whose text exceeds 8 KiB is refused, in
    /// every mode alike: the previous pairs stay, and the refusal is
    /// logged and counted in `promshard_label_refused_total{metric}`.
    pub fn set(&'static self, pairs: &[(&str, &str)]) {
        let mut kept = Vec::with_capacity(pairs.len());
        for &(name, value) in pairs {
            // `le` and `quantile` belong to histograms and summaries.
            let valid = crate::descriptor::is_label_name(name) && !matches!(name, "le" | "quantile");
            // A name a scheme writes like a kept one (`a.b`, `a_b`) is a repeat.
            let repeated =
                kept.iter().any(|(n, _): &(String, String)| crate::encode::names::label_clash(&[n, name]).is_some());
            if !valid || repeated {
                crate::notice::warn(format!(
                    "info `{}`: label `{name}` dropped (invalid or repeated)",
                    self.core.descriptor().name
                ));
                continue;
            }
            kept.push((name.to_owned(), value.to_owned()));
        }
        let payload = info_slots::encode_pairs(&kept);
        self.core.series(0); // lays the registry out and attaches the slots
        let written = crate::gate::locked(|| {
            let Some(slots) = self.core.info_slots() else { return false };
            info_slots::read_pairs(slots).as_deref() == Some(&kept[..]) || info_slots::write_payload(slots, &payload)
        });
        if !written {
            self.core.refuse_info();
            crate::notice::warn(format!(
                "info `{}`: label pairs of {} bytes refused (at most {INFO_PAYLOAD_MAX} bytes); the previous ones stay",
                self.core.descriptor().name,
                payload.len(),
            ));
        }
    }

    /// The descriptor-carrying core, for registration.
    pub const fn core(&'static self) -> &'static MetricCore {
        &self.core
    }
}
