//! Folding dead workers' shards into one archive shard, so a scrape reads
//! a file per live worker plus one, however many workers came and went.
//!
//! Under the exclusive compaction lock (readers take no lock: they check
//! that no archive was renamed during their read, see `collect_with`):
//! read the archive and the dead shards, write a
//! new archive that lists the files it absorbed, fsync it, rename it over
//! the old one, then delete the absorbed files. A crash before the rename
//! leaves the old archive and every dead shard; a crash after it leaves
//! files the archive lists as absorbed, which readers skip and the next
//! compaction deletes. Nothing is lost and nothing is counted twice.

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::read::Shard;
use super::sparse::{Acc, SparseFamily, SparseKind, add_sparse, per_process};
use crate::descriptor::{Descriptor, GaugeMode, Kind};
use crate::labels::LabelDomain;
use crate::native::{self, NativeBuckets};
use crate::shard::file::{self, ARCHIVE_NAME, COMPACT_LOCK, DirLock};
use crate::shard::format::{self, FLAG_ARCHIVE, Header, MetricSpec, ShardError};
use crate::shard::log::{self, ABSORBED_POSITION, DECLARED_POSITION, StringLog};

/// For crash tests: when set to 1, 2 or 3, the compactor `_exit`s after
/// writing the new archive, after renaming it, or after deleting the first
/// absorbed shard.
pub(crate) static CRASH_POINT: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

fn crash_point(point: u8) {
    if CRASH_POINT.load(core::sync::atomic::Ordering::Relaxed) == point {
        // SAFETY: ends the process at once, as a crash would.
        unsafe { libc::_exit(70) };
    }
}

/// Series an archived family may have; beyond this the family's dead
/// values stay in their shards rather than explode the archive.
const MAX_ARCHIVE_SERIES: usize = 1 << 20;

/// Compacts `dir` unless another process is compacting it right now.
pub(crate) fn compact(dir: &Path) {
    let Ok(Some(_lock)) = DirLock::acquire(dir, COMPACT_LOCK, true, false) else { return };
    if let Err(e) = compact_locked(dir) {
        crate::notice::warn(format!("compaction of {} failed: {e}; dead shards are kept", dir.display()));
    }
}

fn compact_locked(dir: &Path) -> io::Result<()> {
    let own = crate::shard::own_in(dir).map(|o| o.file_name());
    let listing = file::list_all(dir, own.as_deref())?;
    // Under the exclusive lock no one else is writing an archive: any
    // temporary archive is a compactor's that died.
    remove_stale_archive_temps(dir);
    for half_made in &listing.half_made {
        file::remove_if_abandoned(half_made, file::STALE_AFTER);
    }
    let archive_path = dir.join(ARCHIVE_NAME);
    let archive = match Shard::open(&archive_path) {
        Ok(shard) => Some(shard),
        Err(_) if !archive_path.exists() => None,
        Err(e) => {
            // Never overwrite an archive we cannot read: it holds counts.
            // (The scrape that called us has counted the error already.)
            return Err(io::Error::other(format!("unreadable archive ({e})")));
        }
    };
    let absorbed: HashSet<&str> = archive.iter().flat_map(|a| a.absorbed_names()).collect();
    let mut dead = Vec::new();
    let siblings = crate::linked::siblings();
    for path in listing.shards {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name == ARCHIVE_NAME || siblings.contains(&path) {
            continue;
        }
        if absorbed.contains(name.as_str()) {
            // Left by a compaction that stopped after its rename.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        match Shard::open(&path) {
            Ok(shard) if !shard.live => dead.push((path, shard)),
            // A shard file is only ever given its name complete, so an
            // empty or all-zero one holds no counts: an older version's
            // creator died there. Gone once no one holds it.
            Err(ShardError::Truncated | ShardError::Foreign) if is_blank(&path) => {
                file::remove_if_abandoned(&path, Duration::ZERO);
            }
            _ => {}
        }
    }
    if dead.is_empty() {
        return Ok(());
    }

    // One archived metric per name, kind, gauge mode and label names: the
    // shards of two versions of a binary (a rolling deploy) may define a
    // metric differently, and each definition's counts are kept.
    let mut families: BTreeMap<ArchiveKey, SparseFamily> = BTreeMap::new();
    // Each family's definition as the dead workers' binary declared it
    // (the previous archive's, where no dead worker has the family): the
    // archive keeps its label values in that order, so that it merges slot
    // by slot with the live shards of that binary.
    let mut declared: BTreeMap<ArchiveKey, &Descriptor> = BTreeMap::new();
    for shard in archive.iter().chain(dead.iter().map(|(_, s)| s)) {
        for (i, entry) in shard.schema.entries.iter().enumerate() {
            let desc = entry.desc;
            let mut labels: Vec<String> = desc.label_names.iter().map(|n| (*n).to_owned()).collect();
            if per_process(desc, shard) {
                labels.push("pid".to_owned());
            }
            let key = (desc.name.to_owned(), desc.kind.openmetrics_type(), desc.mode.as_str(), labels);
            if !shard.archive || !declared.contains_key(&key) {
                declared.insert(key.clone(), desc);
            }
            let family = families.entry(key).or_insert_with(|| SparseFamily::of(desc));
            add_sparse(family, shard, i);
        }
    }
    // A family with no series is kept (a reader of the dead shards showed
    // its HELP and TYPE), except the kinds only live shards give values.
    families.retain(|_, f| {
        !f.series.is_empty() || matches!(f.kind, SparseKind::Metric(Kind::Counter | Kind::Gauge | Kind::Histogram, _))
    });
    // A file that shrank while we read it gave zeros: archive nothing.
    if archive.iter().chain(dead.iter().map(|(_, s)| s)).any(Shard::damaged) {
        return Err(io::Error::other("a shard shrank while it was read"));
    }

    let names: Vec<String> = dead.iter().map(|(_, s)| s.name.clone()).collect();
    // The run's start is kept: the earliest of every file folded in.
    let run_started = archive.iter().chain(dead.iter().map(|(_, s)| s)).map(Shard::run_started).min();
    write_archive(dir, &families, &declared, &names, run_started)?;
    crash_point(2);
    for (path, _) in &dead {
        if let Err(e) = std::fs::remove_file(path) {
            crate::notice::warn(format!("could not remove absorbed shard {}: {e}", path.display()));
        }
        crash_point(3);
    }
    Ok(())
}

/// Whether the file at `path` is empty or all zeros in its first page.
fn is_blank(path: &Path) -> bool {
    let Ok(file) = file::open_for_read(path) else { return false };
    let mut head = [0u8; 4096];
    let n = std::io::Read::read(&mut &file, &mut head).unwrap_or(usize::MAX);
    n != usize::MAX && head[..n].iter().all(|b| *b == 0)
}

/// Removes temporary archives (`.archive*.tmp`) left by compactors that
/// died, or planted; whatever they are, they are not the archive.
fn remove_stale_archive_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(".archive") && name.ends_with(".tmp")) {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if let Err(e) = removed {
            crate::notice::warn(format!("could not remove stale {}: {e}", path.display()));
        }
    }
}

/// A sparse family laid out densely: each label's distinct values in the
/// order first seen, slots for every combination.
struct Archived<'a> {
    family: &'a SparseFamily,
    label_names: Vec<&'a str>,
    values: Vec<Vec<&'a str>>,
    buckets: Vec<f64>,
    /// The native buckets of a native histogram: see [`archived_native`].
    native: Option<NativeBuckets>,
    width: usize,
    /// Slots per series before the native ones and the exemplars.
    classic: usize,
    /// Whether the archived family keeps exemplars: the newest of the
    /// files it absorbed, per series and bucket.
    exemplars: bool,
    series: usize,
}

impl<'a> Archived<'a> {
    /// `declared`: the family's definition, whose fixed label lists give
    /// the values and their order (values met beyond them follow).
    fn new(family: &'a SparseFamily, key: &'a ArchiveKey, declared: Option<&'a Descriptor>) -> Option<Archived<'a>> {
        let SparseKind::Metric(kind, mode) = family.kind else { return None };
        let label_names: Vec<&str> = key.3.iter().map(String::as_str).collect();
        let mut values: Vec<Vec<&str>> = label_names
            .iter()
            .map(|name| {
                let declared = declared.and_then(|d| {
                    let position = d.label_names.iter().position(|n| n == name)?;
                    match d.label_domains[position] {
                        LabelDomain::Values(list) => Some(list.to_vec()),
                        LabelDomain::Bounded { .. } => None,
                    }
                });
                declared.unwrap_or_default()
            })
            .collect();
        // The declared bounds first: the archive then has the live
        // shards' layout, and an empty histogram keeps its buckets.
        let mut buckets: Vec<f64> = declared.map(|d| d.buckets.to_vec()).unwrap_or_default();
        for (labels, acc) in &family.series {
            if labels.iter().map(|(k, _)| k.as_str()).ne(label_names.iter().copied()) {
                continue;
            }
            for (position, (_, v)) in labels.iter().enumerate() {
                if !values[position].contains(&v.as_str()) {
                    values[position].push(v);
                }
            }
            if let Acc::Histogram { buckets: b, .. } = acc {
                buckets.extend(b.iter().map(|(bound, _)| *bound).filter(|b| b.is_finite()));
            }
        }
        buckets.sort_by(f64::total_cmp);
        buckets.dedup();
        if matches!(kind, Kind::Info | Kind::StateSet) {
            return None;
        }
        let native = archived_native(family);
        let classic = kind.width(mode, buckets.len());
        let exemplars = family.keeps_exemplars || !family.exemplars.is_empty();
        let width = classic
            + native.map_or(0, NativeBuckets::width)
            + if exemplars { kind.exemplars(buckets.len()) * crate::exemplar::WIDTH } else { 0 };
        // No value of some label (a family with no series): no series.
        let series = values.iter().try_fold(1usize, |acc, v| acc.checked_mul(v.len()))?;
        (series <= MAX_ARCHIVE_SERIES).then_some(Archived {
            family,
            label_names,
            values,
            buckets,
            native,
            width,
            classic,
            exemplars,
            series,
        })
    }

    /// The index of the series `labels` names in this layout.
    fn index(&self, labels: &[(String, String)]) -> Option<usize> {
        if labels.len() != self.label_names.len() {
            return None;
        }
        let mut index = 0;
        for (position, (name, value)) in labels.iter().enumerate() {
            let at = self.values[position].iter().position(|v| v == value)?;
            if self.label_names[position] != name {
                return None;
            }
            index = index * self.values[position].len() + at;
        }
        Some(index)
    }

    /// The series a sparse family shows at zero, as ranges (first,
    /// count): every series the dead shards showed, so that none goes
    /// missing (stale, to Prometheus) when they are folded in.
    fn declared_ranges(&self) -> Vec<(u32, u32)> {
        if !self.family.sparse {
            return Vec::new();
        }
        let mut ranges: Vec<(u32, u32)> =
            self.family.series.keys().filter_map(|labels| self.index(labels)).map(|i| (i as u32, 1)).collect();
        crate::encode::plan::normalize_ranges(&mut ranges);
        ranges
    }

    /// Writes this family's slots, `(series + 1) * width` of them.
    fn slots(&self) -> Vec<u64> {
        let mut slots = vec![0u64; (self.series + 1) * self.width];
        for (labels, acc) in &self.family.series {
            let Some(index) = self.index(labels) else { continue };
            let s = &mut slots[index * self.width..(index + 1) * self.width];
            match acc {
                Acc::Counter { count, fraction } => {
                    s[0] = *count;
                    // Rounded up: added again at every scrape, the
                    // archive's value is never below its terms.
                    s[1] = fraction.value_up().to_bits();
                }
                Acc::Gauge { value, stamp } => {
                    s[0] = value.to_bits();
                    if self.classic == 2 {
                        s[1] = stamp.to_bits();
                    }
                }
                Acc::Histogram { buckets, sum, native } => {
                    for (bound, n) in buckets {
                        let b = self.buckets.iter().position(|x| x == bound).unwrap_or(self.buckets.len());
                        s[b] = s[b].saturating_add(*n);
                    }
                    s[self.classic - 1] = sum.value_up().to_bits();
                    if let (Some(spec), Some(counts)) = (self.native, native) {
                        counts.write(&mut s[self.classic..], spec);
                    }
                }
                Acc::Summary { .. } | Acc::Value(_) => {}
            }
            if !self.exemplars {
                continue;
            }
            // The newest exemplar of each series (bucket) of the files
            // absorbed, the previous archive's included.
            let bounds: Vec<Option<f64>> = match acc {
                Acc::Counter { .. } => vec![None],
                Acc::Histogram { .. } => self.buckets.iter().copied().chain([f64::INFINITY]).map(Some).collect(),
                _ => Vec::new(),
            };
            for (which, bound) in bounds.into_iter().enumerate() {
                if let Some(exemplar) = self.family.exemplar(labels, bound) {
                    let at =
                        self.classic + self.native.map_or(0, NativeBuckets::width) + which * crate::exemplar::WIDTH;
                    s[at..at + crate::exemplar::WIDTH].copy_from_slice(&crate::exemplar_slots::words(exemplar));
                }
            }
        }
        slots
    }

    fn spec(&self, offset: usize) -> MetricSpec<'_> {
        let SparseKind::Metric(kind, mode) = self.family.kind else { unreachable!("checked in new") };
        MetricSpec {
            name: &self.family.name,
            help: &self.family.help,
            unit: self.family.unit.as_deref(),
            kind,
            mode: if kind == Kind::Gauge { mode } else { GaugeMode::All },
            sparse: self.family.sparse,
            exemplars: self.exemplars,
            labels: self.label_names.iter().zip(&self.values).map(|(n, v)| (*n, Ok(v.clone()))).collect(),
            buckets: &self.buckets,
            states: &[],
            offset,
            series: self.series,
            width: self.width,
            native: self.native,
        }
    }
}

/// The native buckets the archive keeps a native family's counts in:
/// its declared `max_buckets`, at the lowest schema at which every
/// series shows at most that many buckets (the schema its exposition
/// would show anyway), so each series fits its table. A series already
/// at schema -4 (one whose table filled) goes to the schema -4 slots and
/// does not lower the others. Every count is kept, exactly.
fn archived_native(family: &SparseFamily) -> Option<NativeBuckets> {
    let (mut schema, mut max): (Option<i8>, Option<u32>) = (None, None);
    for acc in family.series.values() {
        let Acc::Histogram { native: Some(counts), .. } = acc else { continue };
        max = Some(max.map_or(counts.max_buckets, |m| m.min(counts.max_buckets)));
        if counts.schema > native::MIN_SCHEMA {
            let limited = counts.limited().schema;
            schema = Some(schema.map_or(limited, |s| s.min(limited)));
        }
    }
    max.map(|max| NativeBuckets::new(schema.unwrap_or(native::MIN_SCHEMA), max))
}

/// What tells archived metrics apart: name, kind, gauge mode, label names.
type ArchiveKey = (String, &'static str, &'static str, Vec<String>);

fn write_archive(
    dir: &Path,
    families: &BTreeMap<ArchiveKey, SparseFamily>,
    declared: &BTreeMap<ArchiveKey, &Descriptor>,
    absorbed: &[String],
    run_started: Option<u64>,
) -> io::Result<()> {
    let archived: Vec<Archived<'_>> =
        families.iter().filter_map(|(key, family)| Archived::new(family, key, declared.get(key).copied())).collect();
    if archived.len() != families.len() {
        return Err(io::Error::other("a family cannot be archived; dead shards are kept"));
    }
    let mut slots = Vec::new();
    let mut specs = Vec::new();
    for family in &archived {
        specs.push(family.spec(slots.len()));
        slots.extend(family.slots());
    }
    let schema = format::encode_specs(&specs);

    let declared_ranges: Vec<Vec<(u32, u32)>> = archived.iter().map(Archived::declared_ranges).collect();
    let ranges = declared_ranges.iter().map(Vec::len).sum::<usize>();
    let log_len = log::capacity(std::iter::empty(), ranges)
        + absorbed.iter().map(|n| (log::RECORD_HEADER + n.len()).next_multiple_of(8)).sum::<usize>();
    let mut log_words = vec![0u64; log_len / 8];
    {
        // SAFETY: the buffer outlives the log, scoped to this block.
        let log = unsafe { StringLog::new(log_words.as_mut_ptr() as *mut u8, log_len) };
        for name in absorbed {
            if !log.append(0, ABSORBED_POSITION, 0, name.as_bytes()) {
                return Err(io::Error::other("the archive's log is too small"));
            }
        }
        for (metric, ranges) in declared_ranges.iter().enumerate() {
            for &(first, count) in ranges {
                if !log.append(metric as u32, DECLARED_POSITION, first, &count.to_le_bytes()) {
                    return Err(io::Error::other("the archive's log is too small"));
                }
            }
        }
    }

    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let nonce = format::checksum(&nanos.to_le_bytes());
    let mut header =
        Header::layout(FLAG_ARCHIVE, std::process::id(), nanos, nonce, (&schema.0, schema.1), log_len, slots.len());
    header.run_started_nanos = run_started.unwrap_or(nanos);
    let schema = schema.0;
    let (strings_offset, slots_offset) = (header.strings_offset as usize, header.slots_offset as usize);
    let mut bytes = Vec::with_capacity(slots_offset + slots.len() * 8);
    bytes.extend_from_slice(&header.encode());
    bytes.extend_from_slice(&schema);
    bytes.resize(strings_offset, 0);
    bytes.extend(log_words.iter().flat_map(|w| w.to_ne_bytes()));
    bytes.resize(slots_offset, 0);
    bytes.extend(slots.iter().flat_map(|w| w.to_le_bytes()));

    // A name of our own, created exclusively: nothing planted under a
    // fixed name can stop compaction.
    let tmp = dir.join(format!(".archive-{}-{nanos:x}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let written = file.write_all(&bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crash_point(1);
    std::fs::rename(&tmp, dir.join(ARCHIVE_NAME))?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
