//! Python prometheus_client's `.db` files in a scrape: merged as its
//! `MultiProcessCollector` merges them, at a cost that follows the live
//! writers rather than the history of worker churn.
//!
//! Python's collector parses every file at every scrape, and a pool that
//! recycles workers (gunicorn's `max_requests`) leaves a few files per dead
//! worker for ever, so its scrape slows down with every one. Here each
//! file's writer is told live or dead ([`python_live`](super::python_live)),
//! and a dead writer's file never changes again: it is parsed once, its
//! counters, histograms, summaries and gauges of the non-`live` modes are
//! folded into one set of series (the *fold*), exactly as Python's
//! collector would add them, and it is never parsed again. A scrape then
//! parses the live writers' files and adds the fold. Memory is the fold's
//! series (as many as the families' own, plus one per dead pid for gauges
//! of mode `all`, which Python shows too), and a few words per file.
//!
//! What a dead writer's file counts for:
//!
//! - gauges of the `live*` modes: nothing, as if the `child_exit` hook had
//!   called `mark_process_dead` (which deletes those files), so that hook
//!   no longer needs to be wired;
//! - nothing at all when it belongs to a previous run of the pool: once
//!   live writers show the pool's master (their parent), a dead file last
//!   changed before that master started was written by a run before it,
//!   the same rule as promshard's own shards, where a new run starts from
//!   zero: a restarted pool's counters no longer start inflated by the
//!   last run's, with no `rm -rf` at boot. A new master seen while one of
//!   the run's masters still lives (gunicorn's USR2 upgrade) joins the
//!   run, as a promshard process that finds a live shard joins its run.
//!   With no live writer in sight the last run's files are shown, as
//!   promshard shows a finished run's shards until a new run starts;
//! - everything else, as in Python.
//!
//! The fold is made again from the files (never patched by subtraction)
//! when a folded file vanishes or is replaced, when a new process is given
//! the pid of a dead writer and opens its file again (prometheus_client
//! appends to `counter_<pid>.db` when a new worker gets an old pid), and
//! when the pool's master changes. Files are only ever read here.
//!
//! Until a file has been seen held by its writer, nothing is taken for
//! dead and every file is parsed at every scrape, which is exactly what
//! Python's collector does: that is the behaviour where `/proc` cannot be
//! read, where the reader cannot see the writers (another pid namespace),
//! and of a one-shot reader (`promshard dump`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::exact::ExactSum;
use super::python_db::{self, Entry, PyFile, PyKind};
use super::python_live::{self, Holder, Liveness};
use super::read::KeptFile;
use super::sparse::{Acc, SparseFamily, SparseKind};
use crate::descriptor::{GaugeMode, Kind};
use crate::shard::file::{self, Identity};
use crate::shard::format::ShardError;

/// How long before the master's start a file must have last changed to be
/// taken for a previous run's: process start times are known to a clock
/// tick, file times to the nanosecond.
const START_MARGIN: f64 = 0.05;

/// What a file is, for the scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Not looked at yet, or to be looked at again.
    New,
    /// Its writer holds it: parsed at every scrape.
    Live,
    /// Its writer is dead but a process has its pid: parsed at every
    /// scrape, counted as a dead writer's, looked at again every scrape.
    Reused,
    /// A dead writer's, parsed once and folded.
    Folded,
    /// A dead writer's gauge of a `live*` mode: counts for nothing.
    DeadLiveGauge,
    /// A dead writer's from a run before the pool's master started.
    PreviousRun,
    /// A dead writer's that cannot be parsed: skipped, reported once.
    Broken,
}

impl State {
    /// Whether the file is settled: dead and dealt with.
    fn settled(self) -> bool {
        matches!(self, State::Folded | State::DeadLiveGauge | State::PreviousRun | State::Broken)
    }

    /// The word `promshard check` shows for what the file counts for.
    pub(crate) fn word(self) -> &'static str {
        match self {
            State::Live => "live",
            // No writer in sight: nothing proven dead, read as Python does.
            State::New => "counted",
            State::Reused => "dead-pid-reused",
            State::Folded => "dead-folded",
            State::Broken => "dead-unreadable",
            State::DeadLiveGauge => "dead-live-gauge",
            State::PreviousRun => "previous-run",
        }
    }
}

struct FileInfo {
    meta: PyFile,
    identity: Identity,
    /// The file's last change (the later of mtime and ctime), in seconds
    /// since the epoch.
    changed: f64,
    state: State,
    /// A file read at every scrape: the bytes it held last time, for a
    /// scrape that cannot read it for want of a descriptor (its counts
    /// must not vanish from that scrape).
    last: Option<Vec<u8>>,
    /// A file read at every scrape: its keys as parsed last time, by
    /// position (prometheus_client only ever appends entries and rewrites
    /// values in place), so that a scrape parses only new keys.
    keys: Vec<Arc<Prepared>>,
    /// Kept open while it is read at every scrape (within the process's
    /// descriptor budget), so a scrape reads it with one `pread`.
    kept: Option<KeptFile>,
    /// What the file's counting entries held when it was last seen dead,
    /// for a new run's writer given its pid: prometheus_client reopens
    /// `counter_<pid>.db` and goes on from the values in it, so only what
    /// it adds beyond these belongs to the new run.
    baseline: Option<Box<Baseline>>,
}

/// A dead file's counting values (counters, buckets, sums, counts) by key,
/// as of its last change.
struct Baseline {
    /// The file's last change when the values were read.
    changed: f64,
    /// By the hash of the raw key, sorted.
    values: Vec<(u64, f64)>,
}

impl Baseline {
    /// The values of `bytes`, or `None` for a layout without raw keys
    /// (prometheus_client before 0.18), which is then counted whole.
    fn read(bytes: &[u8], changed: f64) -> Option<Baseline> {
        let raw = python_db::raw_entries(bytes)?;
        let mut values: Vec<(u64, f64)> = raw.iter().map(|e| (key_hash(&bytes[e.key.0..e.key.1]), e.value)).collect();
        values.sort_unstable_by_key(|(hash, _)| *hash);
        values.dedup_by_key(|(hash, _)| *hash);
        values.shrink_to_fit();
        Some(Baseline { changed, values })
    }

    fn get(&self, hash: u64) -> f64 {
        self.values.binary_search_by_key(&hash, |(h, _)| *h).map_or(0.0, |at| self.values[at].1)
    }

    /// Whether these values were written before the run that started at
    /// `run_start`, so that none of them is the run's.
    fn before(&self, run_start: Option<f64>) -> bool {
        run_start.is_some_and(|start| self.changed < start - START_MARGIN)
    }
}

fn key_hash(raw: &[u8]) -> u64 {
    use core::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    raw.hash(&mut hasher);
    hasher.finish()
}

/// What a directory's Python files came to, kept between scrapes.
#[derive(Default)]
pub(crate) struct PyCache {
    dir: PathBuf,
    /// The listing the files were last matched against.
    listing: Option<Arc<Vec<PathBuf>>>,
    files: HashMap<PathBuf, FileInfo>,
    /// Files to look at in every scrape: not settled.
    active: Vec<PathBuf>,
    /// Settled files by their writer's pid, to look at again when that pid
    /// is handed to a new process.
    settled_by_pid: BTreeMap<u32, Vec<PathBuf>>,
    fold: BTreeMap<String, SparseFamily>,
    /// The pool's masters (pid and start ticks), earliest first, and when
    /// the run began, as last seen; kept while no writer is live.
    run_masters: Vec<(u32, u64)>,
    /// The live writers' pids the master was last looked for among.
    writers: Vec<u32>,
    run_start: Option<f64>,
    /// Pids handed to new processes that could not be asked about their
    /// files (out of descriptors): asked again at the next scrape.
    pending: std::collections::BTreeSet<u32>,
    /// Whether a file was ever seen held by its writer: only then can a
    /// writer be proven dead.
    seen_live: bool,
    live: Liveness,
}

/// One reading of a file for `promshard check`.
pub(crate) struct PyStatus {
    pub(crate) path: PathBuf,
    pub(crate) meta: Option<PyFile>,
    /// Whether the process the name names holds the file (or that cannot
    /// be told).
    pub(crate) live: bool,
    pub(crate) state: State,
    pub(crate) size: u64,
    pub(crate) used: u64,
    pub(crate) series: usize,
    pub(crate) problem: Option<String>,
}

impl PyCache {
    /// The directory this is about (empty for a fresh one).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The merged families of the Python files `paths` of `dir` for this
    /// scrape. `report` counts and logs a bad file (once per file and
    /// problem, as it does for shards).
    pub(crate) fn scrape(
        &mut self,
        dir: &Path,
        paths: &Arc<Vec<PathBuf>>,
        report: &mut dyn FnMut(&Path, ShardError),
    ) -> BTreeMap<String, SparseFamily> {
        if self.dir != dir {
            *self = PyCache { dir: dir.to_owned(), ..PyCache::default() };
        }
        self.live.begin_scrape();
        let mut refold = false;
        if !self.listing.as_ref().is_some_and(|l| Arc::ptr_eq(l, paths)) {
            refold |= self.match_listing(paths);
        }
        // Pids handed out since the last scrape: a settled file of such a
        // pid may have been opened again by its new owner.
        let new_pids = self.live.new_pids();
        let mut reused: Vec<PathBuf> = match new_pids {
            // Pids are handed out in increasing order, wrapping at
            // `pid_max`: one or two ranges of the map, not all of it.
            Some((after, up_to)) => {
                let ranges = if after <= up_to {
                    [(after.saturating_add(1), up_to), (1, 0)]
                } else {
                    [(after.saturating_add(1), u32::MAX), (0, up_to)]
                };
                ranges
                    .into_iter()
                    .filter(|(from, to)| from <= to)
                    .flat_map(|(from, to)| self.settled_by_pid.range(from..=to))
                    .filter(|(pid, _)| python_live::handed_out(**pid, (after, up_to)))
                    .flat_map(|(_, paths)| paths.iter().cloned())
                    .collect()
            }
            // Unknown: any pid taken by a process may be new.
            None if self.seen_live => {
                let pids: Vec<u32> = self.settled_by_pid.keys().copied().collect();
                let taken = pids.into_iter().filter(|pid| matches!(self.live.stat(*pid), Ok(Some(_))));
                taken.flat_map(|pid| self.settled_by_pid[&pid].clone()).collect()
            }
            None => Vec::new(),
        };
        // Pids whose new process could not be asked last time.
        for pid in core::mem::take(&mut self.pending) {
            reused.extend(self.settled_by_pid.get(&pid).into_iter().flatten().cloned());
        }
        reused.sort();
        reused.dedup();
        for path in reused {
            let Some(info) = self.files.get(&path) else { continue };
            // Only on evidence: another file under the name, or a process
            // with the pid (holding the file, or not yet: a new Python
            // worker opens its pid's old file when it first records, so it
            // is watched from now on). What cannot be told (out of
            // descriptors) leaves a dead file dead and asks again next time.
            let replaced = std::fs::symlink_metadata(&path).is_ok_and(|m| file::identity(&m) != info.identity);
            let holder = self.live.holds(info.meta.pid, info.identity);
            if holder == Holder::Unknown && !replaced {
                self.pending.insert(info.meta.pid);
            } else if replaced || matches!(holder, Holder::Live | Holder::Other) {
                refold |= info.state == State::Folded;
                self.unsettle(&path);
            }
        }

        // Who is alive, which tells the pool's master.
        let mut live_pids = HashSet::new();
        for path in &self.active {
            let info = self.files.get_mut(path).expect("active files are known");
            if info.identity == (0, 0) && !describe(path, info) {
                continue;
            }
            let mut holder = self.live.holds(info.meta.pid, info.identity);
            if holder == Holder::Gone && info.state != State::New {
                // Just died: its last change is its final one.
                if !describe(path, info) {
                    info.identity = (0, 0);
                    continue;
                }
                holder = self.live.holds(info.meta.pid, info.identity);
            }
            self.seen_live |= holder == Holder::Live;
            info.state = match holder {
                Holder::Live | Holder::Unknown => {
                    live_pids.insert(info.meta.pid);
                    State::Live
                }
                Holder::Other => State::Reused,
                // Settled below, once the run's start is known.
                Holder::Gone => State::New,
            };
        }
        let mut writers: Vec<u32> = live_pids.iter().copied().collect();
        writers.sort_unstable();
        // The masters follow from the writers: looked for again only when
        // they change.
        let masters = if writers == self.writers { Vec::new() } else { self.masters(&live_pids) };
        self.writers = writers;
        if !masters.is_empty() && masters != self.run_masters {
            // A master seen beside one of the run's (gunicorn's USR2
            // upgrade forks a new master before the old one leaves)
            // continues the run; masters with none of the run's alive
            // start a new one.
            let continued = masters.iter().any(|m| self.run_masters.contains(m));
            if !continued {
                refold |= !self.run_masters.is_empty() || self.fold.values().any(|f| !f.series.is_empty());
                refold |= self.files.values().any(|i| i.state == State::PreviousRun);
                // Read once per run: the clocks it is derived from move.
                let (pid, _) = masters[0];
                self.run_start = self.live.stat(pid).ok().flatten().and_then(|s| python_live::started_at(&s));
            }
            self.run_masters = masters;
        }
        if refold {
            self.refold();
        }

        let mut families = self.fold.clone();
        let active = core::mem::take(&mut self.active);
        let mut still_active = Vec::with_capacity(active.len());
        for path in active {
            let info = self.files.get_mut(&path).expect("active files are known");
            if info.identity == (0, 0) {
                // Gone between the listing and now: nothing to count.
                still_active.push(path);
                continue;
            }
            let live_gauge = matches!(info.meta.kind, PyKind::Gauge { mode } if mode.is_live());
            let previous = self.run_start.is_some_and(|start| info.changed < start - START_MARGIN);
            // Counted as a dead writer's: proven gone (`New` here), or its
            // pid taken by a process that does not hold it.
            let dead = self.seen_live && matches!(info.state, State::New | State::Reused);
            if dead && previous && info.baseline.as_ref().is_none_or(|b| b.changed != info.changed) {
                // Its pid may go to a writer of this run, which would go
                // on from the values in it.
                info.baseline =
                    read_bytes(&path, info).ok().and_then(|b| Baseline::read(&b, info.changed)).map(Box::new);
                info.kept = None;
            }
            if dead && (live_gauge || previous) {
                if info.state == State::New {
                    info.state = if previous { State::PreviousRun } else { State::DeadLiveGauge };
                }
            } else {
                let folding = dead && info.state == State::New;
                let run_start = self.run_start;
                // Entries that cannot be shown were left out: reported, the
                // file's others counted.
                let mut skipped = false;
                let read = read_bytes(&path, info).map_err(python_db::PyDbError::from).and_then(|bytes| {
                    if folding {
                        // Read once: no key worth keeping.
                        if info.baseline.as_ref().is_some_and(|b| b.before(run_start)) {
                            // A writer of this run went on from an earlier
                            // run's values: only its own count.
                            skipped |= add_bytes(&mut self.fold, info, &bytes, run_start)?;
                            add_bytes(&mut families, info, &bytes, run_start)?;
                        } else {
                            let (entries, left_out) = python_db::parse_skipping(&bytes)?;
                            skipped |= left_out.is_some();
                            add_entries(&mut self.fold, &info.meta, &entries);
                            add_entries(&mut families, &info.meta, &entries);
                            info.baseline = Baseline::read(&bytes, info.changed).map(Box::new);
                        }
                        info.last = None;
                        info.keys = Vec::new();
                        return Ok(());
                    }
                    skipped |= add_bytes(&mut families, info, &bytes, run_start)?;
                    info.last = Some(bytes);
                    Ok(())
                });
                if skipped && read.is_ok() {
                    report(&path, ShardError::Python);
                }
                match read {
                    Ok(()) if folding => info.state = State::Folded,
                    Ok(()) => {}
                    Err(python_db::PyDbError::Io(e))
                        if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) =>
                    {
                        // Out of descriptors is the reader's state, not the
                        // file's: count what it held last, never fold it.
                        report(&path, ShardError::Descriptors);
                        if let Some(last) = info.last.take() {
                            let _ = add_bytes(&mut families, info, &last, run_start);
                            info.last = Some(last);
                        }
                        if info.state == State::New {
                            info.identity = (0, 0);
                        }
                    }
                    // A live-mode gauge file is deleted when Python marks
                    // its process dead: not an error.
                    Err(_) if !path.exists() => {}
                    Err(_) => {
                        report(&path, ShardError::Python);
                        if dead && info.state == State::New {
                            info.state = State::Broken;
                        }
                    }
                }
            }
            if info.state.settled() {
                info.kept = None;
                info.keys = Vec::new();
                info.last = None;
                self.settled_by_pid.entry(info.meta.pid).or_default().push(path);
            } else {
                still_active.push(path);
            }
        }
        self.active = still_active;
        families
    }

    /// Matches the files against a new listing: new names are looked at,
    /// vanished ones forgotten. Returns whether the fold must be made again
    /// (a folded file vanished).
    fn match_listing(&mut self, paths: &Arc<Vec<PathBuf>>) -> bool {
        let listed: HashSet<&PathBuf> = paths.iter().collect();
        let mut refold = false;
        self.files.retain(|path, info| {
            let keep = listed.contains(path);
            refold |= !keep && info.state == State::Folded;
            keep
        });
        for path in paths.iter() {
            if self.files.contains_key(path) {
                continue;
            }
            let Some(meta) = path.file_name().and_then(|n| n.to_str()).and_then(python_db::parse_file_name) else {
                continue;
            };
            self.files.insert(
                path.clone(),
                FileInfo {
                    meta,
                    identity: (0, 0),
                    changed: 0.0,
                    state: State::New,
                    last: None,
                    keys: Vec::new(),
                    kept: None,
                    baseline: None,
                },
            );
            self.active.push(path.clone());
        }
        self.active.retain(|p| self.files.contains_key(p));
        self.active.sort();
        self.active.dedup();
        for paths in self.settled_by_pid.values_mut() {
            paths.retain(|p| self.files.contains_key(p));
        }
        self.settled_by_pid.retain(|_, paths| !paths.is_empty());
        let pids: HashSet<u32> = self.files.values().map(|i| i.meta.pid).collect();
        self.live.retain(&pids);
        self.listing = Some(paths.clone());
        refold
    }

    /// Takes a settled file back to be looked at afresh.
    fn unsettle(&mut self, path: &Path) {
        if let Some(info) = self.files.get_mut(path) {
            if let Some(paths) = self.settled_by_pid.get_mut(&info.meta.pid) {
                paths.retain(|p| p != path);
            }
            info.state = State::New;
            info.identity = (0, 0);
            self.active.push(path.to_owned());
        }
    }

    /// Forgets the fold: every settled file is looked at again.
    fn refold(&mut self) {
        self.fold.clear();
        for paths in core::mem::take(&mut self.settled_by_pid).into_values() {
            for path in paths {
                if let Some(info) = self.files.get_mut(&path) {
                    info.state = State::New;
                    self.active.push(path);
                }
            }
        }
        self.active.sort();
        self.active.dedup();
    }

    /// The pool's masters, as pid and start, earliest first: each live
    /// writer that has children of its own is one (a master that records
    /// before forking, as gunicorn's with `preload_app`), else its parent
    /// is (gunicorn's master when only workers record).
    fn masters(&mut self, live_pids: &HashSet<u32>) -> Vec<(u32, u64)> {
        let mut masters = HashSet::new();
        for &pid in live_pids {
            let Some(stat) = self.live.known(pid) else { continue };
            let master = match python_live::has_children(pid) {
                Some(true) => pid,
                // A master of the run that records, left without workers
                // for a moment (its only one retired and not yet
                // replaced): still the master, not its own parent.
                _ if self.run_masters.contains(&(pid, stat.start_ticks)) => pid,
                // No `children` file (CONFIG_PROC_CHILDREN): the parent.
                Some(false) | None => stat.ppid,
            };
            masters.insert(master);
        }
        let mut out: Vec<(u32, u64)> = masters
            .into_iter()
            .filter_map(|pid| Some((pid, self.live.stat(pid).ok().flatten()?)))
            .filter(|(_, stat)| !stat.zombie)
            .map(|(pid, stat)| (pid, stat.start_ticks))
            .collect();
        out.sort_by_key(|&(pid, ticks)| (ticks, pid));
        out
    }

    /// Removes the files of `dir` that count for nothing in the merge: a
    /// previous run's, and dead writers' gauges of the `live*` modes (what
    /// `mark_process_dead` removes). Each is removed only if no process has
    /// its pid right now and it is still the file that was classified (so
    /// a new writer that was just given the pid keeps its file). Returns
    /// how many were removed. What still counts (dead counters,
    /// histograms, summaries, gauges of the other modes) is never removed.
    pub(crate) fn prune(&mut self, dir: &Path) -> usize {
        if self.dir != dir {
            return 0;
        }
        let mut removed = 0;
        let candidates: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(_, i)| matches!(i.state, State::PreviousRun | State::DeadLiveGauge))
            .map(|(p, _)| p.clone())
            .collect();
        for path in candidates {
            let info = &self.files[&path];
            let unchanged = std::fs::symlink_metadata(&path).is_ok_and(|m| file::identity(&m) == info.identity);
            let pid_free = matches!(python_live::stat_now(info.meta.pid), Ok(None));
            if unchanged && pid_free && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Every Python file of `paths` as one fresh look sees it, for
    /// `promshard check`.
    pub(crate) fn inspect(dir: &Path, paths: &Arc<Vec<PathBuf>>) -> Vec<PyStatus> {
        let mut cache = PyCache::default();
        let _ = cache.scrape(dir, paths, &mut |_, _| {});
        paths
            .iter()
            .map(move |path| {
                let meta = path.file_name().and_then(|n| n.to_str()).and_then(python_db::parse_file_name);
                let info = cache.files.get(path);
                let state = info.map_or(State::New, |i| match i.state {
                    // A previous run's file whose pid a process has now:
                    // it counts for nothing still.
                    State::Reused if cache.run_start.is_some_and(|s| i.changed < s - START_MARGIN) => {
                        State::PreviousRun
                    }
                    state => state,
                });
                let live = info.is_some_and(|i| {
                    matches!(cache.live.holds(i.meta.pid, i.identity), Holder::Live | Holder::Unknown)
                });
                let size = std::fs::symlink_metadata(path).map_or(0, |m| m.len());
                let (used, series, problem) = match python_db::read_skipping(path) {
                    _ if meta.is_none() => (0, 0, Some("not a name prometheus_client gives its files".to_owned())),
                    Ok((entries, skipped)) => (used_bytes(path), entries.len(), skipped.map(|e| e.to_string())),
                    Err(e) => (used_bytes(path), 0, Some(e.to_string())),
                };
                PyStatus { path: path.clone(), meta, live, state, size, used, series, problem }
            })
            .collect()
    }
}

/// A file's bytes, through its kept descriptor if it has one; else
/// opened, and kept when the descriptor budget allows and it is still the
/// file that was classified.
fn read_bytes(path: &Path, info: &mut FileInfo) -> std::io::Result<Vec<u8>> {
    if let Some(kept) = &info.kept {
        return python_db::read_bytes(&kept.0);
    }
    let file = python_db::open(path)?;
    let bytes = python_db::read_bytes(&file)?;
    let same = file.metadata().is_ok_and(|m| file::identity(&m) == info.identity);
    if same && KeptFile::reserve() {
        info.kept = Some(KeptFile(file));
    }
    Ok(bytes)
}

/// What one key of a file comes to in the merge, worked out once.
pub(crate) struct Prepared {
    /// The key's bytes, to tell that the entry at this position is still
    /// this key.
    raw: Box<[u8]>,
    /// The raw key's hash, to find it in a [`Baseline`].
    hash: u64,
    metric: String,
    help: String,
    kind: SparseKind,
    /// The series' labels: `le` taken out, the file's pid added for the
    /// per-process gauge modes.
    labels: super::sparse::Labels,
    what: What,
    /// A key that cannot be shown (see [`python_db::parse_skipping`]):
    /// its entry adds nothing, not even its family.
    skipped: bool,
}

#[derive(Clone, Copy)]
enum What {
    CounterTotal,
    Gauge {
        skip_unset: bool,
    },
    Bucket(f64),
    HistogramSum,
    SummaryCount,
    SummarySum,
    /// Not a sample the merge shows (`_created`, an unknown suffix).
    Nothing,
}

impl What {
    /// Whether prometheus_client accumulates the value from what the file
    /// held when its writer opened it: a count or a sum.
    fn counts(self) -> bool {
        matches!(
            self,
            What::CounterTotal | What::Bucket(_) | What::HistogramSum | What::SummaryCount | What::SummarySum
        )
    }
}

impl Prepared {
    fn new(meta: &PyFile, raw: &[u8]) -> Option<Prepared> {
        let (metric, sample, mut labels, help) = python_db::parse_current_key(raw)?;
        let (kind, mode) = sparse_kind(meta);
        let suffix = sample.strip_prefix(metric.as_str()).unwrap_or("");
        let what = match (meta.kind, suffix) {
            (PyKind::Counter, "_total") => What::CounterTotal,
            (PyKind::Gauge { .. }, "") => {
                if mode.is_some_and(GaugeMode::is_per_process) {
                    labels.push(("pid".to_owned(), meta.pid.to_string()));
                }
                What::Gauge { skip_unset: mode.is_some_and(GaugeMode::is_most_recent) }
            }
            (PyKind::Histogram, "_bucket") => match labels.iter().position(|(k, _)| k == "le") {
                Some(at) => {
                    let (_, le) = labels.remove(at);
                    match le.parse::<f64>().or_else(|_| parse_go_float(&le)) {
                        Ok(bound) => What::Bucket(bound),
                        Err(()) => What::Nothing,
                    }
                }
                None => What::Nothing,
            },
            (PyKind::Histogram, "_sum") => What::HistogramSum,
            (PyKind::Summary, "_count") => What::SummaryCount,
            (PyKind::Summary, "_sum") => What::SummarySum,
            _ => What::Nothing,
        };
        Some(Prepared { raw: raw.into(), hash: key_hash(raw), metric, help, kind, labels, what, skipped: false })
    }

    /// A key whose entry is left out, if `raw` is one.
    fn skipped(meta: &PyFile, raw: &[u8]) -> Option<Prepared> {
        python_db::key_cannot_be_shown(raw).then(|| Prepared {
            raw: raw.into(),
            hash: key_hash(raw),
            metric: String::new(),
            help: String::new(),
            kind: sparse_kind(meta).0,
            labels: Vec::new(),
            what: What::Nothing,
            skipped: true,
        })
    }

    /// Adds the entry's value, as [`add_entries`] would: the family is
    /// there even when the entry shows no sample (Python shows its
    /// header).
    fn add(&self, families: &mut BTreeMap<String, SparseFamily>, value: f64, timestamp: f64) {
        if self.skipped {
            return;
        }
        let family = match families.get_mut(&self.metric) {
            Some(family) => family,
            None => families
                .entry(self.metric.clone())
                .or_insert_with(|| SparseFamily::new(&self.metric, &self.help, None, self.kind)),
        };
        let acc = match self.what {
            What::CounterTotal => Acc::Counter { count: 0, fraction: value.into() },
            What::Gauge { skip_unset: true } if timestamp == 0.0 => return,
            What::Gauge { .. } => Acc::Gauge { value, stamp: timestamp },
            What::Bucket(bound) => {
                Acc::Histogram { buckets: vec![(bound, value as u64)], sum: ExactSum::default(), native: None }
            }
            What::HistogramSum => Acc::Histogram { buckets: Vec::new(), sum: value.into(), native: None },
            What::SummaryCount => Acc::Summary { count: value.into(), sum: ExactSum::default() },
            What::SummarySum => Acc::Summary { count: ExactSum::default(), sum: value.into() },
            What::Nothing => return,
        };
        family.add_ref(&self.labels, acc);
    }
}

/// Adds a file read at every scrape, parsing only the keys it did not
/// hold last time; a file not in the current layout, or with a key that
/// does not parse, goes through [`python_db::parse`] (which says why).
/// Counting values less the file's baseline when that was written before
/// the run that started at `run_start`.
fn add_bytes(
    families: &mut BTreeMap<String, SparseFamily>,
    info: &mut FileInfo,
    bytes: &[u8],
    run_start: Option<f64>,
) -> Result<bool, python_db::PyDbError> {
    let base = info.baseline.as_deref().filter(|b| b.before(run_start));
    let fast = python_db::raw_entries(bytes).and_then(|raw| {
        let mut keys = core::mem::take(&mut info.keys);
        keys.truncate(raw.len());
        for (i, entry) in raw.iter().enumerate() {
            let key = &bytes[entry.key.0..entry.key.1];
            if keys.get(i).is_none_or(|k| *k.raw != *key) {
                let prepared = Arc::new(Prepared::new(&info.meta, key).or_else(|| Prepared::skipped(&info.meta, key))?);
                if i < keys.len() {
                    keys[i] = prepared;
                } else {
                    keys.push(prepared);
                }
            }
        }
        Some((raw, keys))
    });
    match fast {
        Some((raw, keys)) => {
            for (entry, key) in raw.iter().zip(&keys) {
                let value = match base {
                    Some(base) if key.what.counts() => {
                        let own = entry.value - base.get(key.hash);
                        // A count never below zero, whatever the file
                        // holds; a sum may be (negative observations).
                        if matches!(key.what, What::HistogramSum | What::SummarySum) { own } else { own.max(0.0) }
                    }
                    _ => entry.value,
                };
                key.add(families, value, entry.timestamp);
            }
            let skipped = keys.iter().any(|key| key.skipped);
            info.keys = keys;
            Ok(skipped)
        }
        None => {
            info.keys = Vec::new();
            let (entries, skipped) = python_db::parse_skipping(bytes)?;
            add_entries(families, &info.meta, &entries);
            Ok(skipped.is_some())
        }
    }
}

/// The family type and gauge mode of a file's entries.
fn sparse_kind(meta: &PyFile) -> (SparseKind, Option<GaugeMode>) {
    match meta.kind {
        PyKind::Counter => (SparseKind::Metric(Kind::Counter, GaugeMode::Sum), None),
        PyKind::Histogram => (SparseKind::Metric(Kind::Histogram, GaugeMode::Sum), None),
        PyKind::Summary => (SparseKind::Summary, None),
        PyKind::Gauge { mode } => (SparseKind::Metric(Kind::Gauge, mode), Some(mode)),
    }
}

/// The bytes a file says it uses (its header), 0 if unreadable.
fn used_bytes(path: &Path) -> u64 {
    let mut head = [0u8; 4];
    let read = python_db::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    read.map_or(0, |()| i32::from_ne_bytes(head).max(0) as u64)
}

/// Fills in a new file's identity and last change; false when it is gone.
fn describe(path: &Path, info: &mut FileInfo) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    info.identity = file::identity(&meta);
    let time = |s: i64, ns: i64| s as f64 + ns as f64 * 1e-9;
    info.changed = time(meta.mtime(), meta.mtime_nsec()).max(time(meta.ctime(), meta.ctime_nsec()));
    true
}

/// Adds one file's entries to `families`, as `MultiProcessCollector`
/// reads them: a counter's `_total`, a gauge's value (with the file's pid
/// for the per-process modes; a `mostrecent` gauge never set is left
/// out), a histogram's buckets and sum, a summary's count and sum.
pub(crate) fn add_entries(families: &mut BTreeMap<String, SparseFamily>, meta: &PyFile, entries: &[Entry]) {
    let (kind, mode) = sparse_kind(meta);
    for entry in entries {
        let family = match families.get_mut(&entry.metric) {
            Some(family) => family,
            None => families
                .entry(entry.metric.clone())
                .or_insert_with(|| SparseFamily::new(&entry.metric, &entry.help, None, kind)),
        };
        let mut labels = entry.labels.clone();
        let suffix = entry.sample.strip_prefix(entry.metric.as_str()).unwrap_or("");
        let acc = match (meta.kind, suffix) {
            (PyKind::Counter, "_total") => Acc::Counter { count: 0, fraction: entry.value.into() },
            (PyKind::Gauge { .. }, "") => {
                if mode.is_some_and(GaugeMode::is_most_recent) && entry.timestamp == 0.0 {
                    continue;
                }
                if mode.is_some_and(GaugeMode::is_per_process) {
                    labels.push(("pid".to_owned(), meta.pid.to_string()));
                }
                Acc::Gauge { value: entry.value, stamp: entry.timestamp }
            }
            (PyKind::Histogram, "_bucket") => {
                let Some(at) = labels.iter().position(|(k, _)| k == "le") else { continue };
                let (_, le) = labels.remove(at);
                let Ok(bound) = le.parse::<f64>().or_else(|_| parse_go_float(&le)) else { continue };
                Acc::Histogram { buckets: vec![(bound, entry.value as u64)], sum: ExactSum::default(), native: None }
            }
            (PyKind::Histogram, "_sum") => {
                Acc::Histogram { buckets: Vec::new(), sum: entry.value.into(), native: None }
            }
            (PyKind::Summary, "_count") => Acc::Summary { count: entry.value.into(), sum: ExactSum::default() },
            (PyKind::Summary, "_sum") => Acc::Summary { count: ExactSum::default(), sum: entry.value.into() },
            _ => continue,
        };
        family.add(labels, acc);
    }
}

fn parse_go_float(s: &str) -> Result<f64, ()> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => Err(()),
    }
}
