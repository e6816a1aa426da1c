//! Several promshard versions in one binary.
//!
//! Cargo links two semver-incompatible versions (say an application on 0.1
//! and a dependency on 0.2) as two crates with their own types, registry
//! and shard file. Three things keep them apart and together:
//!
//! - The registry's `linkme` slices are named after the crate version (see
//!   `build.rs`), so the versions' link sections never mix.
//! - Each version adds a [`Version`] entry to `promshard_abi::VERSIONS`,
//!   one slice shared by all of them. A scrape of any version appends the
//!   families the others expose and its own output lacks: every version's
//!   exposition is the whole binary's, each family once, `process_*` and
//!   `promshard_*` from the version that serves it.
//! - In multiprocess mode the versions of one process share its pid, and
//!   the liveness lock of a shard is the process's: one version opening
//!   another's file by name would see it as dead and, on closing it, drop
//!   the lock. The shard code asks [`siblings`] first and reads those
//!   files through their writer's mapping instead.
//!
//! A metric declared in two versions is reported (an error log, the
//! `promshard_version_conflicts` gauge) and each exposition keeps its own
//! version's declaration; in multiprocess mode both versions' shards hold
//! it, and they merge as the shards of two binaries do.

use core::cell::Cell;
use core::ffi::c_void;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::OnceLock;

use promshard_abi::{Bytes, FORMAT_OPENMETRICS, FORMAT_PROMETHEUS, Sink, Str, VERSIONS, Version};

use crate::collector::{Collector, MetricWriter};
use crate::expose::Format;
use crate::metric::MetricCore;

// `METRICS` and `COLLECTORS`, declared under this version's names.
include!(concat!(env!("OUT_DIR"), "/slices.rs"));

const VERSION: &str = env!("CARGO_PKG_VERSION");

promshard_abi::submit!(
    THIS = Version { version: Str::new(VERSION), shard_format: crate::shard::format::VERSION, render, declared, shard }
);

/// The other versions linked into this binary.
fn others() -> impl Iterator<Item = &'static Version> {
    VERSIONS.iter().filter(|v| !core::ptr::eq(*v, &THIS))
}

fn version_of(v: &Version) -> &'static str {
    // SAFETY: every entry's version is a `'static` str (`Str::new`).
    unsafe { v.version.as_str() }
}

thread_local! {
    /// Set while this version renders for another one, whose scrape adds
    /// the remaining versions itself.
    static FOR_OTHER: Cell<bool> = const { Cell::new(false) };
}

// ---------------------------------------------------------------------
// What this version offers the others
// ---------------------------------------------------------------------

fn write(out: Sink, bytes: &[u8]) {
    // SAFETY: the caller of our entry point gave a valid sink.
    unsafe { (out.write)(out.ctx, bytes.as_ptr(), bytes.len()) }
}

unsafe extern "C" fn render(format: u32, out: Sink) {
    let format = match format {
        FORMAT_PROMETHEUS => Format::Prometheus,
        FORMAT_OPENMETRICS => Format::OpenMetrics,
        _ => return,
    };
    let previous = FOR_OTHER.replace(true);
    // An unwinding panic must not cross into the other version's frames.
    let text = catch_unwind(|| crate::expose::encode(format));
    FOR_OTHER.set(previous);
    if let Ok(text) = text {
        write(out, &text);
    }
}

unsafe extern "C" fn declared(out: Sink) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let mut lines = String::new();
        for core in declared_here() {
            let desc = core.descriptor();
            let _ = writeln!(lines, "{}\t{}:{}", desc.name, desc.file, desc.line);
        }
        write(out, lines.as_bytes());
    }));
}

unsafe extern "C" fn shard(path: Sink) -> Bytes {
    // Never lays the registry out: the caller may be in the middle of its
    // own layout or scrape.
    match crate::shard::own() {
        Some(own) => {
            write(path, own.dir.join(own.file_name()).as_os_str().as_bytes());
            let bytes = own.bytes();
            Bytes { ptr: bytes.as_ptr(), len: bytes.len() }
        }
        None => Bytes { ptr: core::ptr::null(), len: 0 },
    }
}

/// This version's declared metrics, each once, read from the slice rather
/// than the registry so that asking never lays anything out.
fn declared_here() -> Vec<&'static MetricCore> {
    let mut cores: Vec<&'static MetricCore> = METRICS.to_vec();
    cores.sort_by_key(|c| *c as *const MetricCore as usize);
    cores.dedup_by(|a, b| core::ptr::eq(*a, *b));
    cores
}

// ---------------------------------------------------------------------
// Calling the others
// ---------------------------------------------------------------------

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

/// A metric declared in this version and in another one.
struct Conflict {
    name: String,
    here: String,
    version: &'static str,
    there: String,
}

/// The metrics each other version declares, by version.
fn declared_by(other: &Version) -> Vec<(String, String)> {
    // SAFETY: a sink of ours, valid for the call.
    let (text, ()) = collect(|sink| unsafe { (other.declared)(sink) });
    let text = String::from_utf8_lossy(&text);
    text.lines().filter_map(|l| l.split_once('\t')).map(|(n, at)| (n.to_owned(), at.to_owned())).collect()
}

fn conflicts() -> &'static [Conflict] {
    static CONFLICTS: OnceLock<Vec<Conflict>> = OnceLock::new();
    CONFLICTS.get_or_init(|| {
        let here: Vec<(&str, String)> = declared_here()
            .iter()
            .map(|c| (c.descriptor().name, format!("{}:{}", c.descriptor().file, c.descriptor().line)))
            .collect();
        let mut found = Vec::new();
        for other in others() {
            for (name, there) in declared_by(other) {
                // promshard's own metrics are declared by every version and
                // exposed once, by the version that serves the scrape.
                if name.starts_with("promshard_") {
                    continue;
                }
                if let Some((_, at)) = here.iter().find(|(n, _)| *n == name) {
                    found.push(Conflict { name, here: at.clone(), version: version_of(other), there });
                }
            }
        }
        found
    })
}

/// Reports, once, the other versions linked in and the metrics both
/// declare. Called when the registry is laid out.
pub(crate) fn check() {
    let versions: Vec<&str> = others().map(version_of).collect();
    if versions.is_empty() {
        return;
    }
    crate::notice::warn(format!(
        "version {VERSION}: promshard {} also linked into this binary; each version's exposition includes \
         the others' metrics",
        versions.join(", ")
    ));
    for c in conflicts() {
        crate::notice::error(format!(
            "version {VERSION}: metric `{}` is declared both in promshard {VERSION} (at {}) and in promshard {} \
             (at {}); each version exposes only its own declaration of it (in multiprocess mode both merge, as \
             metrics of two binaries sharing the directory do)",
            c.name, c.here, c.version, c.there
        ));
    }
    let formats: Vec<String> = others()
        .filter(|o| o.shard_format != THIS.shard_format)
        .map(|o| format!("{} (format {})", version_of(o), o.shard_format))
        .collect();
    if !formats.is_empty() && crate::shard::configured_dir().is_some() {
        crate::notice::warn(format!(
            "version {VERSION} (shard format {}): promshard {} writes shards it cannot read; their metrics come \
             from that version's scrape, and its files count in promshard_shard_errors_total{{reason=\"version\"}}",
            THIS.shard_format,
            formats.join(", ")
        ));
    }
}

/// Appends to `out` the families of the other versions' expositions that
/// `out[start..]`, this version's, does not have.
pub(crate) fn append_others(format: Format, start: usize, out: &mut Vec<u8>) {
    if FOR_OTHER.get() || others().next().is_none() {
        return;
    }
    let code = match format {
        Format::Prometheus => FORMAT_PROMETHEUS,
        Format::OpenMetrics => FORMAT_OPENMETRICS,
    };
    let ours = std::str::from_utf8(&out[start..]).unwrap_or_default();
    let mut taken: HashSet<String> = families(ours).map(|(name, _)| name.to_owned()).collect();
    for other in others() {
        // SAFETY: a sink of ours, valid for the call.
        let (theirs, ()) = collect(|sink| unsafe { (other.render)(code, sink) });
        let theirs = String::from_utf8_lossy(&theirs);
        let mut declared: Option<HashSet<String>> = None;
        for (name, family) in families(&theirs) {
            if taken.insert(name.to_owned()) {
                out.extend_from_slice(family.as_bytes());
                continue;
            }
            // Expected twice: self-metrics, the same shards merged by both
            // versions, and conflicts reported at start.
            if name.starts_with("process_") || name.starts_with("promshard_") {
                continue;
            }
            // Either version's declared metric: in multiprocess mode both
            // merge every shard, and declarations in both were reported.
            let declared = declared.get_or_insert_with(|| {
                let mut names: HashSet<String> = declared_by(other).into_iter().map(|(n, _)| n).collect();
                names.extend(declared_here().iter().map(|c| c.descriptor().name.to_owned()));
                names
            });
            // The text format names a counter's family with its `_total`.
            let bare = name.strip_suffix("_total").or_else(|| name.strip_suffix("_info")).unwrap_or(name);
            if !declared.contains(name) && !declared.contains(bare) {
                crate::notice::warn_once(&format!(
                    "family `{name}` of promshard {} is also exposed by promshard {VERSION}; exposing it once",
                    version_of(other)
                ));
            }
        }
    }
}

/// The families of an exposition, each with its text: a family starts at
/// a `# HELP`, `# TYPE` or `# UNIT` line of a new name and holds the
/// sample lines that follow. `# EOF` ends it all.
fn families(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut blocks: Vec<(&str, usize, usize)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        if line.trim_end() == "# EOF" {
            break;
        }
        let meta = ["# HELP ", "# TYPE ", "# UNIT "].iter().find_map(|p| line.strip_prefix(p));
        let name = match meta {
            Some(rest) => rest.split([' ', '\n']).next().unwrap_or(""),
            None => line.split(['{', ' ', '\n']).next().unwrap_or(""),
        };
        match blocks.last_mut() {
            Some((current, _, end)) if meta.is_none() || *current == name => *end = offset,
            _ => blocks.push((name, at, offset)),
        }
    }
    blocks.into_iter().map(move |(name, from, to)| (name, &text[from..to]))
}

// ---------------------------------------------------------------------
// Shards of the other versions of this process
// ---------------------------------------------------------------------

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

// ---------------------------------------------------------------------
// Self-metrics
// ---------------------------------------------------------------------

/// `promshard_linked_versions` and `promshard_version_conflicts`, when
/// more than one version is linked in.
pub(crate) struct VersionHealth;

impl Collector for VersionHealth {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        if others().next().is_none() {
            return;
        }
        let mut versions: Vec<&str> = VERSIONS.iter().map(version_of).collect();
        versions.sort_unstable();
        let mut family = out.gauge(
            "promshard_linked_versions",
            "promshard versions linked into this binary, one series each; every version's exposition includes the others' metrics.",
        );
        for version in versions {
            family.sample(&[("version", version)], 1.0);
        }
        drop(family);
        if !conflicts().is_empty() {
            let mut family = out.gauge(
                "promshard_version_conflicts",
                "Metrics declared in two linked promshard versions; this exposition has the `exposed` version's declaration only.",
            );
            for c in conflicts() {
                family.sample(&[("metric", &c.name), ("exposed", VERSION), ("hidden", c.version)], 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::families;

    #[test]
    fn families_split_at_new_names() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP h H.\n# TYPE h histogram\n\
                    h_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n";
        let found: Vec<(&str, &str)> = families(text).collect();
        assert_eq!(
            found,
            [
                ("a_total", "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"),
                ("h", "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"),
            ]
        );
    }
}
