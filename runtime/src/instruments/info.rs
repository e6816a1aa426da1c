use crate::descriptor::{Descriptor, Kind, Opts};
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
    /// first call.
    pub fn set(&'static self, pairs: &[(&str, &str)]) {
        let mut kept = Vec::with_capacity(pairs.len());
        for &(name, value) in pairs {
            let valid = crate::descriptor::is_label_name(name) && !name.starts_with("__");
            if !valid || kept.iter().any(|(n, _): &(String, String)| n == name) {
                crate::notice::warn(format!(
                    "info `{}`: label `{name}` dropped (invalid or repeated)",
                    self.core.descriptor().name
                ));
                continue;
            }
            kept.push((name.to_owned(), value.to_owned()));
        }
        crate::registry::get();
        self.core.set_info(kept.into_boxed_slice());
    }

    /// The descriptor-carrying core, for registration.
    pub const fn core(&'static self) -> &'static MetricCore {
        &self.core
    }
}
