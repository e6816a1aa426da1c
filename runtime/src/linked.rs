//! The other promshard versions linked into this binary, as this one sees
//! them through `promshard_abi::VERSIONS`: who they are, what they declare,
//! their expositions and their shard mappings. (This version's own entry
//! is made at the top, in `versions`.)
//!
//! Cargo links two semver-incompatible versions (say an application on 0.1
//! and a dependency on 0.2) as two crates with their own types, registry
//! and shard file. The registry's `linkme` slices are named after the
//! crate version (see `build.rs`), so their link sections never mix; the
//! shared `VERSIONS` slice lets each version's exposition include the
//! others' families, and lets the shard code of one version read another's
//! file of this process through its mapping (opening it by name would drop
//! this process's liveness lock on it).

use core::cell::Cell;
use core::ffi::c_void;
use std::borrow::Cow;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::OnceLock;

use promshard_abi::{
    ESCAPING_ALLOW_UTF8, ESCAPING_DOTS, ESCAPING_VALUES, FORMAT_OPENMETRICS, FORMAT_PROMETHEUS, Sink, VERSIONS, Version,
};

use crate::descriptor::Descriptor;
use crate::encode::format::{Exposition, Format, Protocol};
use crate::encode::names::Escaping;

/// This crate's version.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The other versions linked into this binary.
pub(crate) fn others() -> impl Iterator<Item = &'static Version> {
    VERSIONS.iter().filter(|v| version_of(v) != VERSION)
}

/// Every linked version, this one included.
pub(crate) fn all_versions() -> impl Iterator<Item = &'static str> {
    VERSIONS.iter().map(version_of)
}

pub(crate) fn version_of(v: &Version) -> &'static str {
    // SAFETY: every entry's version is a `'static` str (`Str::new`).
    unsafe { v.version.as_str() }
}

thread_local! {
    /// Set while this version renders for another one, whose scrape adds
    /// the remaining versions itself.
    static FOR_OTHER: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` marked as rendering for another version.
pub(crate) fn rendering_for_other<R>(f: impl FnOnce() -> R) -> R {
    let previous = FOR_OTHER.replace(true);
    let result = f();
    FOR_OTHER.set(previous);
    result
}

/// Whether this thread renders for another version right now.
pub(crate) fn for_other() -> bool {
    FOR_OTHER.get()
}

unsafe extern "C" fn append(ctx: *mut c_void, bytes: *const u8, len: usize) {
    // SAFETY: `ctx` is the `Vec` of `collect` below, alive and not
    // otherwise borrowed during the call; the writer passes valid bytes.
    unsafe { (*(ctx as *mut Vec<u8>)).extend_from_slice(core::slice::from_raw_parts(bytes, len)) }
}

/// What `f` writes into a sink.
fn collect<R>(f: impl FnOnce(Sink) -> R) -> (Vec<u8>, R) {
    let mut out = Vec::new();
    let result = f(Sink { ctx: &mut out as *mut Vec<u8> as *mut c_void, write: append });
    (out, result)
}

/// Writes `bytes` into a sink another version gave us.
pub(crate) fn write(out: Sink, bytes: &[u8]) {
    // SAFETY: the caller of our entry point gave a valid sink.
    unsafe { (out.write)(out.ctx, bytes.as_ptr(), bytes.len()) }
}

/// The ABI's code for `x`: the format, plus the escaping unless it is
/// `underscores`, which a bare format code has always meant. The text
/// version is not in it: 0.0.4 and 1.0.0 bodies differ only by escaping.
/// The ABI carries text only: a protobuf scrape asks for the Prometheus
/// text format, which `encode::proto::text` turns into messages.
pub(crate) fn format_code(x: Exposition) -> u32 {
    let format = match x.format() {
        Format::Prometheus | Format::Protobuf => FORMAT_PROMETHEUS,
        Format::OpenMetrics => FORMAT_OPENMETRICS,
    };
    let escaping = match x.escaping() {
        Escaping::Underscores => 0,
        Escaping::AllowUtf8 => ESCAPING_ALLOW_UTF8,
        Escaping::Dots => ESCAPING_DOTS,
        Escaping::Values => ESCAPING_VALUES,
    };
    format | escaping
}

/// The exposition a code of [`format_code`] (or of an older version)
/// asks for; `None` for a code this version does not know.
pub(crate) fn decode_format(code: u32) -> Option<Exposition> {
    let protocol = match code & 0xFF {
        FORMAT_PROMETHEUS => Protocol::PrometheusText1_0_0,
        FORMAT_OPENMETRICS => Protocol::OpenMetricsText1_0_0,
        _ => return None,
    };
    let escaping = match code & !0xFF {
        0 => Escaping::Underscores,
        ESCAPING_ALLOW_UTF8 => Escaping::AllowUtf8,
        ESCAPING_DOTS => Escaping::Dots,
        ESCAPING_VALUES => Escaping::Values,
        _ => return None,
    };
    Some(Exposition::new(protocol, escaping))
}

/// Another version's exposition as `x` writes it, without the other
/// versions'. A version older than the escaping codes writes nothing for
/// them: it is asked again for its (legacy-named) exposition as it is.
pub(crate) fn render(other: &Version, x: Exposition) -> Vec<u8> {
    let code = format_code(x);
    // SAFETY: a sink of ours, valid for the call.
    let text = collect(|sink| unsafe { (other.render)(code, sink) }).0;
    if text.is_empty() && code > 0xFF {
        // SAFETY: as above.
        return collect(|sink| unsafe { (other.render)(code & 0xFF, sink) }).0;
    }
    text
}

/// The metrics another version declares: name and `file:line`.
pub(crate) fn declared_by(other: &Version) -> Vec<(String, String)> {
    // SAFETY: a sink of ours, valid for the call.
    let (text, ()) = collect(|sink| unsafe { (other.declared)(sink) });
    let text = String::from_utf8_lossy(&text);
    text.lines().filter_map(|l| l.split_once('\t')).map(|(n, at)| (n.to_owned(), at.to_owned())).collect()
}

/// A metric declared in this version and in another one.
pub(crate) struct Conflict {
    pub(crate) name: String,
    here: String,
    pub(crate) version: &'static str,
    there: String,
}

static CONFLICTS: OnceLock<Vec<Conflict>> = OnceLock::new();

/// The metrics declared both here and in another version, as found by
/// [`report`] (none before the registry is laid out).
pub(crate) fn conflicts() -> &'static [Conflict] {
    CONFLICTS.get().map_or(&[], Vec::as_slice)
}

/// Reports, once, the other versions linked in and the metrics both this
/// one (`declared`) and another declare. The registry calls it when it is
/// laid out, under the gate (so the one-time table is never caught half
/// made by a fork, and the messages wait for the gate's release).
/// `shard_format` is this version's shard format, `multiprocess` whether
/// it writes a shard.
pub(crate) fn report(declared: &[&Descriptor], shard_format: u32, multiprocess: bool) {
    let versions: Vec<&str> = others().map(version_of).collect();
    if versions.is_empty() {
        return;
    }
    crate::notice::warn(format!(
        "version {VERSION}: promshard {} also linked into this binary; each version's exposition includes \
         the others' metrics",
        versions.join(", ")
    ));
    let found = CONFLICTS.get_or_init(|| {
        let mut found = Vec::new();
        for other in others() {
            for (name, there) in declared_by(other) {
                // promshard's own metrics are declared by every version and
                // exposed once, by the version that serves the scrape.
                if name.starts_with("promshard_") {
                    continue;
                }
                if let Some(desc) = declared.iter().find(|d| d.name == name) {
                    let here = format!("{}:{}", desc.file, desc.line);
                    found.push(Conflict { name, here, version: version_of(other), there });
                }
            }
        }
        found
    });
    for c in found {
        crate::notice::error(format!(
            "version {VERSION}: metric `{}` is declared both in promshard {VERSION} (at {}) and in promshard {} \
             (at {}); each version exposes only its own declaration of it (in multiprocess mode both merge, as \
             metrics of two binaries sharing the directory do)",
            c.name, c.here, c.version, c.there
        ));
    }
    // This version reads version 2 files too (see `shard::format`).
    let readable = crate::shard::format::VERSION_LEGACY_NAMES..=shard_format;
    let formats: Vec<String> = others()
        .filter(|o| !readable.contains(&o.shard_format))
        .map(|o| format!("{} (format {})", version_of(o), o.shard_format))
        .collect();
    if !formats.is_empty() && multiprocess {
        crate::notice::warn(format!(
            "version {VERSION} (shard format {}): promshard {} writes shards it cannot read; their metrics come \
             from that version's scrape, and its files count in promshard_shard_errors_total{{reason=\"version\"}}",
            shard_format,
            formats.join(", ")
        ));
    }
}

/// The families of an exposition, each with its name (unquoted) and its
/// text: a family starts at a `# HELP`, `# TYPE` or `# UNIT` line of a new
/// name and holds the sample lines that follow. `# EOF` ends it all.
pub(crate) fn families(text: &str) -> impl Iterator<Item = (Cow<'_, str>, &str)> {
    let mut blocks: Vec<(Cow<'_, str>, usize, usize)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        if line.trim_end() == "# EOF" {
            break;
        }
        let meta = ["# HELP ", "# TYPE ", "# UNIT "].iter().find_map(|p| line.strip_prefix(p));
        let name = match meta {
            Some(rest) => leading_name(rest),
            // A sample line: `name{…} v`, or `{"name",…} v`.
            None => leading_name(line.strip_prefix('{').filter(|l| l.starts_with('"')).unwrap_or(line)),
        };
        match blocks.last_mut() {
            Some((current, _, end)) if meta.is_none() || *current == name => *end = offset,
            _ => blocks.push((name, at, offset)),
        }
    }
    blocks.into_iter().map(move |(name, from, to)| (name, &text[from..to]))
}

/// The name `s` starts with: a legacy name up to a space or `{`, or a
/// quoted one, unescaped.
fn leading_name(s: &str) -> Cow<'_, str> {
    let Some(quoted) = s.strip_prefix('"') else {
        return Cow::Borrowed(s.split([' ', '{', '\n']).next().unwrap_or(""));
    };
    let mut name = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => name.push('\n'),
                Some(other) => name.push(other),
                None => break,
            },
            c => name.push(c),
        }
    }
    Cow::Owned(name)
}

/// The shard files the other versions of this process map.
pub(crate) struct Siblings(Vec<(OsString, &'static [u8])>);

/// The other versions' shards, asked once per directory operation.
pub(crate) fn siblings() -> Siblings {
    let mut found = Vec::new();
    for other in others() {
        // SAFETY: a sink of ours, valid for the call.
        let (path, bytes) = collect(|sink| unsafe { (other.shard)(sink) });
        if bytes.ptr.is_null() {
            continue;
        }
        let path = std::path::PathBuf::from(OsString::from_vec(path));
        if let Some(name) = path.file_name() {
            // SAFETY: the mapping lives for the rest of the process.
            found.push((name.to_owned(), unsafe { core::slice::from_raw_parts(bytes.ptr, bytes.len) }));
        }
    }
    Siblings(found)
}

impl Siblings {
    /// The mapping of the shard at `path` when another version of this
    /// process writes it. File names are unique (pid and a random nonce),
    /// so the name alone tells, however the directory is spelled.
    pub(crate) fn bytes(&self, path: &Path) -> Option<&'static [u8]> {
        let name = path.file_name()?;
        self.0.iter().find(|(n, _)| n.as_os_str() == name).map(|(_, b)| *b)
    }

    /// Whether another version of this process writes the shard at `path`.
    pub(crate) fn contains(&self, path: &Path) -> bool {
        self.bytes(path).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::families;

    #[test]
    fn families_split_at_new_names() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP h H.\n# TYPE h histogram\n\
                    h_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n";
        let found: Vec<(String, &str)> = families(text).map(|(n, t)| (n.into_owned(), t)).collect();
        assert_eq!(
            found,
            [
                ("a_total".to_owned(), "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"),
                ("h".to_owned(), "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"),
            ]
        );
    }

    #[test]
    fn quoted_names_are_read_unescaped() {
        let text = "# HELP \"a.b\" A.\n# TYPE \"a.b\" counter\n{\"a.b_total\",\"x.y\"=\"1\"} 1\n\
                    # TYPE \"q\\\"\\\\\\n\" gauge\n{\"q\\\"\\\\\\n\"} 2\n# EOF\n";
        let found: Vec<String> = families(text).map(|(n, _)| n.into_owned()).collect();
        assert_eq!(found, ["a.b", "q\"\\\n"]);
    }

    /// A version older than the escaping codes writes nothing for them:
    /// it is asked again with the bare format code.
    #[test]
    fn an_older_version_is_asked_again_without_escaping() {
        use promshard_abi::{Bytes, Sink, Str, Version};
        unsafe extern "C" fn old_render(code: u32, out: Sink) {
            if code <= 1 {
                super::write(out, format!("old:{code}").as_bytes());
            }
        }
        unsafe extern "C" fn nothing(_: Sink) {}
        unsafe extern "C" fn no_shard(_: Sink) -> Bytes {
            Bytes { ptr: core::ptr::null(), len: 0 }
        }
        let old = Version {
            version: Str::new("0.0.1"),
            shard_format: 2,
            render: old_render,
            declared: nothing,
            shard: no_shard,
        };
        use super::{Escaping, Exposition, Protocol, render};
        for escaping in Escaping::ALL {
            let x = Exposition::new(Protocol::OpenMetricsText1_0_0, escaping);
            assert_eq!(render(&old, x), b"old:1", "{escaping:?}");
            let x = Exposition::new(Protocol::PrometheusText1_0_0, escaping);
            assert_eq!(render(&old, x), b"old:0", "{escaping:?}");
        }
    }

    #[test]
    fn format_codes_round_trip_and_old_codes_mean_underscores() {
        use super::{Escaping, Exposition, Format, Protocol, decode_format, format_code};
        for protocol in [Protocol::PrometheusText1_0_0, Protocol::OpenMetricsText1_0_0] {
            for escaping in Escaping::ALL {
                let x = Exposition::new(protocol, escaping);
                assert_eq!(decode_format(format_code(x)), Some(x));
            }
        }
        assert_eq!(
            decode_format(0).map(|x| (x.format(), x.escaping())),
            Some((Format::Prometheus, Escaping::Underscores))
        );
        assert_eq!(decode_format(1).map(|x| x.format()), Some(Format::OpenMetrics));
        assert_eq!(decode_format(2), None);
        assert_eq!(decode_format(4 << 8), None);
        assert_eq!(format_code(Exposition::from(Format::OpenMetrics)), 1);
    }
}
