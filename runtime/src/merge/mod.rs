//! The scrape in multiprocess mode: every shard in the directory (this
//! process's, live siblings', dead workers', the archive) and every Python
//! `.db` file, merged into one set of families.
//!
//! Counters and histograms sum over every shard, dead ones included.
//! Gauges combine by their mode, the `live*` modes over live processes
//! only; `all` modes, enums and info keep one series per process (enums
//! and info of live processes only). Metrics defined the same way in every
//! shard, with fixed labels, merge slot by slot; the rest (bounded labels,
//! definitions that differ between binaries, Python files) merge by label
//! text.

use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

pub(crate) mod compact;
pub(crate) mod exact;
pub(crate) mod python;
pub(crate) mod python_db;
pub(crate) mod python_live;
pub(crate) mod read;
pub(crate) mod sparse;

use crate::descriptor::{Descriptor, Kind, Opts};
use crate::encode::format::{Exposition, Format};
use crate::encode::names::{Role, escaped};
use crate::encode::plan::Source;
use crate::encode::proto::ProtoWriter;
use crate::encode::sample::Value;
use crate::instruments::counter::Counter;
use crate::labels::{LabelDomain, LabelValue};
use crate::metric::MetricCore;
use crate::shard::file::{self, COMPACT_LOCK};
use crate::shard::format::{SchemaEntry, ShardError};
use exact::ExactSum;
use read::{Schema, Shard, ShardCache};
use sparse::{SparseFamily, add_sparse, counts_shard, per_process};

/// Shard files a scrape of this process's directory skipped, by reason:
/// counted in this process's shard, so that every process's scrape sums
/// the counts of all (dead ones' too, through the archive).
static SHARD_ERRORS: Counter<(ShardError,)> = Counter::new(
    Opts::new(
        crate::registry::SHARD_ERRORS_METRIC,
        "Shard files skipped by a scrape because they could not be used, by reason.",
    )
    .labels(&["reason"]),
);

#[linkme::distributed_slice(crate::registry::METRICS)]
static SHARD_ERRORS_ENTRY: &MetricCore = SHARD_ERRORS.core();

impl LabelValue for ShardError {
    const VALUES: &'static [&'static str] = &[
        "truncated",
        "foreign",
        "version",
        "checksum",
        "schema",
        "untrusted",
        "io",
        "python",
        "descriptors",
        "unlinked",
    ];
    fn index(self) -> usize {
        ShardError::ALL.iter().position(|e| *e == self).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
#[test]
fn every_reason_is_its_label_value() {
    let reasons: Vec<&str> = ShardError::ALL.iter().map(|e| e.reason()).collect();
    assert_eq!(reasons, ShardError::VALUES);
    assert!(ShardError::ALL.iter().enumerate().all(|(i, e)| e.index() == i));
}

/// Counts a bad file and logs it, once per file and problem however many
/// of this process's scrapes meet it; the scrape goes on without it.
/// Running out of descriptors is counted every time: it is the process's
/// state, not the file's. Returns whether the problem is new.
///
/// The count goes to this process's arena only once it is laid out: a
/// reader of a directory that records nothing (a sidecar, the CLI) must
/// not lay out, which would start a shard of its own.
fn report(cache: &mut ShardCache, path: &Path, error: ShardError) -> bool {
    let new = cache.newly_bad(path, error);
    if new || error == ShardError::Descriptors {
        if let Some(series) = SHARD_ERRORS.series_if_laid_out((error,)) {
            series.inc();
        }
    }
    if new {
        match error {
            // Not a file skipped: this process's own, which no other
            // scrape sees any more.
            ShardError::Unlinked => crate::notice::error(format!(
                "{} ({}); restart the process to record into the directory again",
                path.display(),
                error.describe()
            )),
            _ => crate::notice::warn(format!("skipping {} ({})", path.display(), error.describe())),
        }
    }
    new
}

/// The merged families, sorted by name.
pub(crate) struct Merged {
    families: Vec<Family>,
    /// Whether the directory holds files for a compaction to deal with:
    /// dead shards not yet folded into the archive, or abandoned files.
    pub(crate) compactable: bool,
    /// The `process_*` values of the directory's live processes.
    pub(crate) processes: crate::process::Workers,
}

enum Family {
    Dense(Dense),
    Sparse(SparseFamily),
}

/// A family merged slot by slot: one summed copy of the slots, and one
/// copy per process for per-process series.
struct Dense {
    merged: Option<SlotSet>,
    per_process: Vec<SlotSet>,
    /// The schema the family's descriptor and plan belong to; declared
    /// last so it outlives the references into it above.
    schema: Arc<Schema>,
    entry: usize,
}

struct SlotSet {
    source: PlainSource,
    slots: Vec<AtomicU64>,
}

/// A descriptor with no run-time strings, the pid of a per-process copy
/// (empty for the summed one), and the series any contributing shard
/// declared shown at zero.
struct PlainSource {
    desc: &'static Descriptor,
    extra: String,
    declared: Vec<(u32, u32)>,
    /// The run's start: see [`run_started`].
    created: Option<u64>,
}

impl Source for PlainSource {
    fn descriptor(&self) -> &Descriptor {
        self.desc
    }
    fn bounded(&self, _: usize, _: usize) -> Option<&str> {
        None
    }
    fn info(&self) -> Option<Vec<(String, String)>> {
        None
    }
    fn extra_pair(&self) -> Option<(&str, &str)> {
        (!self.extra.is_empty()).then_some(("pid", self.extra.as_str()))
    }
    fn declared(&self, series: usize) -> bool {
        crate::encode::plan::in_ranges(&self.declared, series)
    }
    fn created(&self) -> Option<u64> {
        self.created
    }
}

/// When the run of the merged shards started (Unix nanoseconds): every
/// process of a run writes its run's start in its shard, and an archive
/// keeps the earliest of the files it absorbed, so this stays the same
/// from scrape to scrape however workers come, go and are compacted, or
/// a shard is skipped for a scrape, and changes only when the directory
/// starts a new run (whose counts start from zero). The earliest, for
/// shards of older versions, which hold their own start only. It is the
/// created timestamp of every merged counter and histogram; families with
/// counts from Python's files have none (those files outlive our runs).
fn run_started(shards: &[Shard]) -> Option<u64> {
    shards.iter().map(Shard::run_started).min()
}

/// This process's scrape of its shard directory: the merge, then, when it
/// met dead workers' shards or abandoned files, a compaction.
///
/// Nothing here holds the gate: the caches are taken out of their tables
/// for the scrape, and the directory locks are `flock`s, which a fork
/// handler lets go of in the child.
pub(crate) fn scrape(own: &'static crate::shard::OwnShard) -> Merged {
    // A forked child whose file could not be made reads the directory as
    // a process without a shard does: its parent's file is not its own.
    let merged = collect_with(&own.dir, crate::shard::own_file());
    if merged.compactable {
        compact::compact(&own.dir);
        // Dead shards gone, disk is free again: what workers forked on a
        // full disk took from the spare goes back into it.
        crate::shard::top_up_spare(own);
    }
    merged
}

/// How many reads a scrape tries before it holds compactions off with
/// the compaction lock: each try that fails saw a compaction finish.
const UNLOCKED_READS: u32 = 20;

/// The merge of `dir` for a reader that may hold no shard (the CLI, a
/// sidecar), or holds `own` there.
///
/// Read without `.compact.lock`. A compactor deletes the shards it
/// absorbed only after renaming the new archive (which lists them) into
/// place, so a read during which no archive was renamed saw each dead
/// shard once: in its own file, or in the archive it read (which lists the
/// shards it absorbed, skipped if read too). A read that saw the archive
/// change is done again. Readers never hold the lock: a compaction then
/// never waits for them (readers that overlap, as a sidecar answering
/// several scrapers does, held it shared all the time, and dead shards
/// piled up), and a compactor that is stopped mid-compaction (SIGSTOP, a
/// debugger, a frozen cgroup) holds up no read. Only after
/// [`UNLOCKED_READS`] reads that each saw a compaction finish does a read
/// wait for the lock shared, which holds compactions off.
pub(crate) fn collect_with(dir: &Path, own: Option<&'static crate::shard::OwnShard>) -> Merged {
    for _ in 0..UNLOCKED_READS {
        if let Some(merged) = collect_once(dir, own, true) {
            return merged;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // The lock file is created by every recording process when it starts,
    // before any compaction can happen; a reader never creates it.
    let _lock = file::DirLock::acquire_with(dir, COMPACT_LOCK, false, true, false).ok().flatten();
    collect_once(dir, own, false).expect("a read that is not checked is kept")
}

/// What tells one archive file from the next: its identity, and its
/// change time and size (an archive's inode may be reused by a later one
/// once no one holds it).
fn archive_stamp(dir: &Path) -> Option<(file::Identity, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir.join(file::ARCHIVE_NAME)).ok()?;
    Some((file::identity(&meta), meta.ctime(), meta.ctime_nsec(), meta.size()))
}

/// One read of `dir`; with `checked` (read without the compaction lock),
/// `None` when a compaction renamed its archive into place meanwhile, and
/// the read must be done again.
fn collect_once(dir: &Path, own: Option<&'static crate::shard::OwnShard>, checked: bool) -> Option<Merged> {
    let archive_before = checked.then(|| archive_stamp(dir));
    let own_name = own.map(|o| o.file_name());
    let mut cache = ShardCache::take();
    let mut shards = Vec::new();
    if let Some(own) = own {
        match cache.own(own) {
            Ok(shard) => shards.push(shard),
            Err(e) => {
                report(&mut cache, &dir.join(own.file_name()), e);
            }
        }
    }
    let mut seen = HashSet::new();
    if let Some(own) = own {
        let path = dir.join(own.file_name());
        // Removed with its directory (`rm -rf`, a deploy script recreating
        // it) or replaced: this process records on into a file no other
        // scrape can see. Said once, and counted.
        if own.unlinked() {
            report(&mut cache, &path, ShardError::Unlinked);
        }
        // Kept in the table of bad files: counted once, not at each scrape.
        seen.insert(path);
    }
    let listed = cache.list(dir, own_name.as_deref());
    let (listing, relisted) = match &listed {
        Ok((listing, relisted)) => (listing.clone(), *relisted),
        Err(e) => {
            let error = match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE) => ShardError::Descriptors,
                _ => ShardError::Io,
            };
            report(&mut cache, dir, error);
            (cache.last_listing(dir), false)
        }
    };
    // A file newly found empty or foreign may be one a creator of an older
    // version left half made: compaction looks at it once.
    let mut suspect = false;
    let mut failed = Vec::new();
    let siblings = crate::linked::siblings();
    for path in &listing.shards {
        // Another promshard version of this process: read through its
        // mapping, never opened (that would drop our liveness lock on it).
        if let Some(bytes) = siblings.bytes(path) {
            match Shard::sibling(path, bytes) {
                Ok(shard) => shards.push(shard),
                Err(e) => {
                    report(&mut cache, path, e);
                }
            }
            seen.insert(path.clone());
            continue;
        }
        match cache.open(path) {
            Ok(shard) => shards.push(shard),
            Err(e) => failed.push((path.clone(), e)),
        }
        seen.insert(path.clone());
    }
    if let Some(before) = archive_before {
        if archive_stamp(dir) != before {
            cache.problems.clear();
            cache.put_back();
            return None;
        }
    }
    for (path, e) in failed {
        // Read unlocked, a shard that vanished was folded and deleted by
        // a compactor, or removed as blank: not a bad file.
        if checked && e == ShardError::Io && std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        suspect |= report(&mut cache, &path, e) && matches!(e, ShardError::Truncated | ShardError::Foreign);
    }
    for (path, e) in core::mem::take(&mut cache.problems) {
        report(&mut cache, &path, e);
    }
    // A directory that could not be listed forgets nothing; one listed as
    // before has nothing to forget (and thousands of Python files cost
    // nothing to pass over).
    if listed.is_ok() && relisted {
        seen.extend(listing.python.iter().cloned());
        cache.retain(dir, &seen);
    }
    let archives: Vec<Shard> = shards.iter().filter(|s| s.archive).cloned().collect();
    shards.retain(|s| !archives.iter().any(|a| a.absorbed(&s.name)));
    // One order for every scraper: float sums (a histogram's `_sum`, a
    // counter's fractions) round by the order they are added in, and a
    // scrape answered by another worker must not see one a last bit
    // smaller, which Prometheus would take for a counter reset.
    shards.sort_by(|a, b| a.name.cmp(&b.name));
    let dead = shards.iter().any(|s| !s.live && !s.archive);
    loop {
        let python = {
            let mut python = cache.take_python(dir);
            let mut problems = Vec::new();
            let families = python.scrape(dir, &listing.python, &mut |path, e| problems.push((path.to_owned(), e)));
            cache.put_python(python);
            for (path, e) in problems {
                report(&mut cache, &path, e);
            }
            families
        };
        let mut merged = merge(&shards, python);
        // A file that shrank under its mapping during the merge gave zeros
        // for the vanished pages: drop it and merge again without it.
        let damaged: Vec<String> = shards.iter().filter(|s| s.damaged()).map(|s| s.name.clone()).collect();
        if damaged.is_empty() {
            merged.compactable = listed.is_ok() && (dead || suspect || !listing.half_made.is_empty());
            merged.processes = crate::process::Workers::read(dir, own, &shards, &mut cache);
            for (path, e) in core::mem::take(&mut cache.problems) {
                report(&mut cache, &path, e);
            }
            cache.put_back();
            return Some(merged);
        }
        for name in &damaged {
            let path = dir.join(name);
            report(&mut cache, &path, ShardError::Truncated);
            cache.forget(&path);
        }
        shards.retain(|s| !damaged.contains(&s.name));
    }
}

/// After a merge of `dir` by this process, removes its Python files that
/// count for nothing (see [`python::PyCache::prune`]), once no other
/// scrape has the cache out.
pub(crate) fn prune_python(dir: &Path) -> usize {
    let mut cache = ShardCache::take();
    let mut python = cache.take_python(dir);
    let removed = python.prune(dir);
    cache.put_python(python);
    cache.put_back();
    removed
}

fn merge(shards: &[Shard], python: BTreeMap<String, SparseFamily>) -> Merged {
    // Family name → (shard, metric index) contributions.
    let mut groups: BTreeMap<&str, Vec<(&Shard, usize)>> = BTreeMap::new();
    for shard in shards {
        for (i, entry) in shard.schema.entries.iter().enumerate() {
            groups.entry(entry.desc.name).or_default().push((shard, i));
        }
    }
    let created = run_started(shards);
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (name, contributions) in groups {
        let (first_shard, first) = contributions[0];
        let fingerprint = first_shard.schema.fingerprints[first];
        let desc = first_shard.schema.entries[first].desc;
        let dense = !python.contains_key(name)
            && matches!(desc.kind, Kind::Counter | Kind::Gauge | Kind::Histogram | Kind::StateSet)
            // Native counts merge bucket by bucket, not slot by slot (each
            // process fills its table in its own order).
            && desc.native.is_none()
            && desc.label_domains.iter().all(|d| matches!(d, LabelDomain::Values(_)))
            && contributions.iter().all(|(s, i)| s.schema.fingerprints[*i] == fingerprint);
        let family = if dense {
            Family::Dense(merge_dense(first_shard, first, &contributions, created))
        } else {
            let mut sparse = SparseFamily::of(desc);
            sparse.created = created;
            for (shard, i) in &contributions {
                add_sparse(&mut sparse, shard, *i);
            }
            Family::Sparse(sparse)
        };
        families.insert(name.to_owned(), family);
    }
    for (name, family) in python {
        match families.get_mut(&name) {
            Some(Family::Sparse(existing)) => {
                // Python's files outlive our runs (and Python's own restarts
                // leave no start in them): when the sum started is unknown.
                existing.created = None;
                for (labels, acc) in family.series {
                    existing.add(labels, acc);
                }
            }
            _ => {
                families.insert(name, Family::Sparse(family));
            }
        }
    }
    Merged { families: families.into_values().collect(), compactable: false, processes: Default::default() }
}

fn merge_dense(first: &Shard, entry: usize, contributions: &[(&Shard, usize)], created: Option<u64>) -> Dense {
    let desc = first.schema.entries[entry].desc;
    let zeroed = || (0..desc.slots()).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
    let mut merged: Option<Vec<AtomicU64>> = None;
    // The float totals of counters and histograms, exact whatever the
    // grouping of the shards (see `exact`).
    let mut sums: Vec<ExactSum> = Vec::new();
    let mut copies = Vec::new();
    let mut stamps_seen = false;
    let mut declared = Vec::new();
    for (shard, i) in contributions {
        let entry: &SchemaEntry = &shard.schema.entries[*i];
        if !counts_shard(desc, shard) {
            continue;
        }
        let slots = shard.slots(entry);
        if per_process(desc, shard) {
            let copy = slots.iter().map(|s| AtomicU64::new(s.load(Ordering::Relaxed))).collect();
            let extra = shard.pid.to_string();
            let declared = shard.declared_ranges(*i).to_vec();
            copies.push(SlotSet { source: PlainSource { desc, extra, declared, created }, slots: copy });
            continue;
        }
        declared.extend_from_slice(shard.declared_ranges(*i));
        let target = merged.get_or_insert_with(zeroed);
        fold(desc, target, slots, stamps_seen, &mut sums);
        stamps_seen = true;
    }
    if let Some(target) = &mut merged {
        let at = match desc.kind {
            Kind::Counter => 1,
            _ => desc.classic_width() - 1,
        };
        for (series, sum) in sums.iter().enumerate() {
            *target[series * desc.width + at].get_mut() = sum.value().to_bits();
        }
    }
    crate::encode::plan::normalize_ranges(&mut declared);
    let merged =
        merged.map(|slots| SlotSet { source: PlainSource { desc, extra: String::new(), declared, created }, slots });
    Dense { merged, per_process: copies, schema: first.schema.clone(), entry }
}

/// Adds one shard's slots into `target`, by kind and gauge mode; the
/// float totals of counters and histograms go to `sums` (one per series,
/// written into `target` once every shard is added). Each exemplar of
/// `target` becomes the newer of its own and the shard's.
fn fold(desc: &Descriptor, target: &mut [AtomicU64], slots: &[AtomicU64], seen: bool, sums: &mut Vec<ExactSum>) {
    let get = |s: &AtomicU64| s.load(Ordering::Relaxed);
    let float = |s: &AtomicU64| f64::from_bits(get(s));
    let (width, classic) = (desc.width, desc.classic_width());
    for series in 0..desc.series {
        for which in 0..desc.exemplar_count() {
            let Some(theirs) = crate::encode::plan::exemplar_at(desc, slots, series, which) else { continue };
            let ours = crate::encode::plan::exemplar_at(desc, target, series, which);
            if ours.is_none_or(|ours| theirs.newer_than(&ours)) {
                let start = series * width + desc.exemplar_start() + which * crate::exemplar::WIDTH;
                for (slot, word) in target[start..].iter_mut().zip(crate::exemplar_slots::words(&theirs)) {
                    *slot.get_mut() = word;
                }
            }
        }
    }
    if matches!(desc.kind, Kind::Counter | Kind::Histogram) && sums.is_empty() {
        sums.resize_with(desc.series, ExactSum::default);
    }
    // One float total per series for counters and histograms; none for
    // the other kinds.
    let mut totals = sums.iter_mut();
    for series in 0..desc.series {
        let base = series * width;
        let (t, s) = (&mut target[base..base + width], &slots[base..base + width]);
        match desc.kind {
            Kind::Counter => {
                *t[0].get_mut() = get(&t[0]).saturating_add(get(&s[0]));
                totals.next().expect("a total per series").add(float(&s[1]));
            }
            Kind::Histogram => {
                for b in 0..classic - 1 {
                    *t[b].get_mut() = get(&t[b]).saturating_add(get(&s[b]));
                }
                totals.next().expect("a total per series").add(float(&s[classic - 1]));
            }
            Kind::Gauge => {
                let stamped = desc.mode.is_most_recent();
                let stamp = |slots: &[AtomicU64]| if stamped { float(&slots[1]) } else { 0.0 };
                let theirs = (float(&s[0]), stamp(s));
                let (value, at) = if seen { desc.mode.combine((float(&t[0]), stamp(t)), theirs) } else { theirs };
                *t[0].get_mut() = value.to_bits();
                if stamped {
                    *t[1].get_mut() = at.to_bits();
                }
            }
            Kind::StateSet | Kind::Info => {}
        }
    }
}

impl Merged {
    /// Renders the families. Families of different names (from different
    /// binaries, or Python files) that the scraper's escaping writes alike
    /// would make two families of one name: the first by name is
    /// rendered, the others are left out of that scrape with a warning.
    pub(crate) fn encode(&self, x: Exposition, out: &mut Vec<u8>) {
        let mut proto = (x.format() == Format::Protobuf).then(|| ProtoWriter::new(x.escaping()));
        let mut written: HashMap<String, &str> = HashMap::new();
        for family in &self.families {
            let name = match family {
                Family::Sparse(sparse) => sparse.name.as_str(),
                Family::Dense(dense) => dense.schema.entries[dense.entry].desc.name,
            };
            match written.entry(escaped(name, Role::Metric, x.escaping()).into_owned()) {
                Entry::Occupied(first) => {
                    crate::notice::warn_once(&format!(
                        "family `{name}` left out of `escaping={}` scrapes: `{}` is written `{}` there too",
                        x.escaping().as_str(),
                        first.get(),
                        first.key()
                    ));
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(name);
                }
            }
            match (family, &mut proto) {
                (Family::Sparse(sparse), None) => sparse.encode(x, out),
                (Family::Sparse(sparse), Some(w)) => sparse.encode_proto(w, out),
                (Family::Dense(dense), None) => {
                    let plan = &dense.schema.plans[dense.entry];
                    plan.encode_header(x, out);
                    for set in dense.merged.iter().chain(&dense.per_process) {
                        plan.encode_samples(&set.source, &set.slots, x, out);
                    }
                }
                (Family::Dense(dense), Some(w)) => {
                    let plan = &dense.schema.plans[dense.entry];
                    plan.begin_proto(dense.schema.entries[dense.entry].desc, w, out);
                    for set in dense.merged.iter().chain(&dense.per_process) {
                        plan.encode_proto_series(&set.source, &set.slots, w, out);
                    }
                    w.end(out);
                }
            }
        }
        self.processes.encode(x, out);
    }

    /// Calls `f(sample name, labels, value)` for every sample.
    pub(crate) fn for_each_sample(&self, f: &mut crate::encode::plan::SampleFn<'_>) {
        for family in &self.families {
            match family {
                Family::Sparse(sparse) => sparse.visit(|name, labels, value: Value| f(name, labels, value.as_f64())),
                Family::Dense(dense) => {
                    for set in dense.merged.iter().chain(&dense.per_process) {
                        crate::encode::plan::visit_family(&dense.schema.plans[dense.entry], &set.source, &set.slots, f);
                    }
                }
            }
        }
        self.processes.visit(f);
    }
}
