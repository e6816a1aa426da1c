//! Multiprocess mode: one shard file per process in a shared directory,
//! merged at scrape time.
//!
//! Set `PROMSHARD_DIR` (or call [`init`] before the first recording) and
//! every process that records writes into its own memory-mapped shard in
//! that directory; any process's scrape returns the merge of all of them.
//! No hook is needed when workers exit or crash, and a restarted
//! deployment starts from zero:
//!
//! - Each process holds a lock on its shard for its whole life, so a shard
//!   whose lock is free belongs to a dead process, whatever its pid.
//! - After `fork()` the child records into a fresh shard of its own; its
//!   parent's values are never counted twice.
//! - Counters and histograms of dead processes keep counting; a scrape
//!   folds their shards into one archive shard, so scrape cost follows the
//!   live processes. Gauges follow their [`GaugeMode`](crate::GaugeMode).
//! - A process that starts recording and finds no live shard in the
//!   directory treats its contents as a finished run and removes our
//!   `.promshard` files (never Python's `.db` files). A run lasts while any
//!   process holding a shard lives: a pre-fork master that records before
//!   forking keeps it open while its workers are replaced. Processes that
//!   only read ([`encode_dir`], the `promshard` CLI) never remove anything.
//! - Python prometheus_client `.db` files in the directory are merged too,
//!   as its `MultiProcessCollector` would, with no `child_exit` hook: a
//!   file's writer is alive while the process its name names holds it
//!   open or mapped (`/proc/<pid>/fd`, `/proc/<pid>/maps`; a pid reused by
//!   another process does not hold it). A dead writer's file never
//!   changes: it is read once and its counters, histograms, summaries and
//!   non-live gauges folded into one set of series kept between scrapes,
//!   so recycled workers cost scrapes nothing; its `live*` gauges count
//!   for nothing, as if `mark_process_dead` had run; and once live writers
//!   show the pool's master, a dead file last changed before that master
//!   started is a previous run's and counts for nothing (no wipe at boot).
//!   The reader must see the writers' `/proc` (the same pid namespace);
//!   where it cannot (no `/proc` off Linux, another namespace) nothing is
//!   proven dead and every file is read at every scrape, as Python reads
//!   them. Python's files are never changed, except by [`prune_python`].
//! - The `process_*` metrics (CPU, memory, descriptors, start time) come
//!   for every live process of the directory, each under a `pid` label,
//!   read from `/proc` by the process that serves the scrape (or by
//!   [`encode_dir`]); nothing runs in the workers for it. A pid is
//!   reported only while the lock on its shard proves the process alive,
//!   so a dead worker's pid, even reused by another process, never is.
//!   `pid` rather than a worker-slot number: every scraper derives it
//!   from the directory alone and agrees on it, and a replacement worker
//!   never continues a dead one's series. Aggregate with
//!   `sum without (pid)` where one series per pool is wanted. Python
//!   processes sharing the directory get none (their liveness cannot be
//!   proved).
//!
//! The directory is resolved once, when the process creates its shard, to
//! an absolute path without symlinks (see [`shard_dir`]), and known by its
//! device and inode: a relative path followed by a `chdir`, a symlink or a
//! `..` spelling all name the same directory. It must belong to this user
//! and be writable by no one else (`chmod go-w`). A shard is created under
//! a temporary name with its whole size reserved on disk, then renamed, so
//! a full disk is found when the shard is made, not inside a later
//! `inc()`.
//!
//! A bad file (truncated, corrupt, foreign, of another format version, a
//! symlink, owned by someone else) is skipped, counted once per file and
//! problem in `promshard_shard_errors_total{reason}` and logged once; the
//! scrape goes on. If the directory cannot be used (refused, unwritable,
//! no space for the shard), the process records in memory and says so
//! once.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::expose::Format;
use crate::shard;

pub use crate::shard::DIR_ENV;

/// Selects multiprocess mode with `dir` as the shard directory, like
/// setting `PROMSHARD_DIR`. Call it before anything is recorded.
///
/// From this call on the process is one of the directory's run, shard or
/// not (it holds the run's lock, and so do the workers it forks): a
/// master that forks workers, waits for them and only then records,
/// scrapes or pushes finds their counts, where a process that joined only
/// at its first recording would have found no live process of the run
/// and started a new one from zero.
///
/// # Errors
///
/// When a directory was already chosen or metrics were already laid out
/// (the first recording or scrape decides the mode).
pub fn init(dir: impl AsRef<Path>) -> Result<(), AlreadyStarted> {
    if crate::registry::is_laid_out() || !shard::configure(dir.as_ref().to_owned()) {
        return Err(AlreadyStarted);
    }
    // This process is of the run from now on, shard or not: its workers'
    // counts outlive them while it lives. Best effort: a directory that
    // cannot be used now is reported by the shard's start.
    if let Some(dir) = shard::configured_dir() {
        let _ = shard::join_before_start(&dir);
    }
    // Worker collectors registered before now publish from now on, and
    // so do the workers this process forks.
    crate::worker_collector::start_publisher();
    Ok(())
}

/// [`init`] was called after the storage was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyStarted;

impl fmt::Display for AlreadyStarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("promshard's storage was already chosen: call multiprocess::init before recording")
    }
}

impl std::error::Error for AlreadyStarted {}

/// The directory this process writes its shard in, if it does.
///
/// It is absolute and free of symlinks: resolved once, when the shard was
/// created, whatever the working directory does after that.
pub fn shard_dir() -> Option<PathBuf> {
    crate::registry::get();
    shard::own().map(|own| own.dir.clone())
}

/// Renders the merged exposition of a shard directory without recording
/// into it: for a sidecar exporter or a tool. `how` is an
/// [`Exposition`](crate::Exposition) or a [`Format`] (legacy names), as
/// for [`encode`](crate::encode). OpenMetrics output ends with `# EOF`.
pub fn encode_dir(dir: impl AsRef<Path>, how: impl Into<crate::Exposition>) -> Vec<u8> {
    encode_dir_then(dir.as_ref(), how.into(), false)
}

/// Like [`encode_dir`], then, when the read met shards of dead processes
/// (or files their creators abandoned), folds them into the directory's
/// archive, as the scrape of a recording process does: for a sidecar
/// exporter, so that a pool whose workers never scrape keeps one file per
/// live worker however many came and went, instead of reading every dead
/// one at every scrape. Nothing is lost or counted twice (see
/// [`compact_dir`]).
///
/// The compaction is skipped, with a one-time warning, when `dir` belongs
/// to another user than this process's effective one (a sidecar run as
/// root, say): the archive it wrote would be its own, unreadable to the
/// workers.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("promshard-doc-compacting-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let body = promshard::multiprocess::encode_dir_and_compact(&dir, promshard::Format::Prometheus);
/// assert!(String::from_utf8(body).is_ok());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn encode_dir_and_compact(dir: impl AsRef<Path>, how: impl Into<crate::Exposition>) -> Vec<u8> {
    encode_dir_then(dir.as_ref(), how.into(), true)
}

fn encode_dir_then(dir: &Path, how: crate::Exposition, compact: bool) -> Vec<u8> {
    let x = crate::expose::with_process_settings(how);
    let dir = resolve(dir);
    let own = shard::own_in(&dir);
    let mut out = Vec::new();
    let merged = crate::merge::collect_with(&dir, own);
    merged.encode(x, &mut out);
    let compactable = merged.compactable;
    drop(merged);
    // The workers' collectors, from the files they publish beside their
    // shards (their names were checked against their own metrics there).
    let reserved = std::collections::HashMap::new();
    let mut writer =
        crate::collector::MetricWriter::new(crate::collector::Target::Text { out: &mut out, x }, &reserved);
    crate::worker_collector::write_dir(&mut writer, &dir, own);
    drop(writer);
    if x.format() == Format::OpenMetrics {
        out.extend_from_slice(b"# EOF\n");
    }
    if compact && compactable && owned_by_this_user(&dir) {
        crate::merge::compact::compact(&dir);
    }
    out
}

/// Whether `dir` belongs to this process's effective user; said once per
/// process when it does not, as the reason dead shards stay.
fn owned_by_this_user(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // Not a `Once`: the message goes to the logger, user code, which
    // must not run inside a lock of ours.
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.uid() == euid => true,
        Ok(meta) => {
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                crate::notice::warn(format!(
                    "not compacting {}: it belongs to uid {}, this process runs as uid {euid}; \
                     dead workers' shards stay until a process of its owner compacts them",
                    dir.display(),
                    meta.uid()
                ));
            }
            false
        }
        Err(_) => false,
    }
}

/// Removes the Python prometheus_client files of `dir` that count for
/// nothing in [`encode_dir`]'s merge, as the last `encode_dir` of `dir` in
/// this process classified them: a previous run's files (dead, last
/// changed before the pool's master started) and dead writers' gauges of
/// the `live*` modes (the files `mark_process_dead` removes). Returns how
/// many it removed. Call it after `encode_dir`; it reads nothing itself.
///
/// Only for a directory that promshard alone reads: Python's own
/// `MultiProcessCollector` would count a previous run's files again (that
/// is what it does without a wipe), so removing them changes what it
/// shows. `promshard serve --fold-python` calls this after each scrape.
/// Files that still count (dead writers' counters, histograms, summaries
/// and gauges of the other modes) are never removed: their values have
/// nowhere else to live. A file is removed only while no process has its
/// writer's pid and it is still the file that was classified; the window
/// between that check and the removal is the one `mark_process_dead` has.
pub fn prune_python(dir: impl AsRef<Path>) -> usize {
    crate::merge::prune_python(&resolve(dir.as_ref()))
}

/// Folds the shards of dead processes in `dir` into its archive now,
/// rather than at the next scrape of a recording process; safe while other
/// processes record and scrape. Does nothing while another process is
/// compacting.
pub fn compact_dir(dir: impl AsRef<Path>) {
    crate::merge::compact::compact(&resolve(dir.as_ref()));
}

/// `dir` as one absolute path without symlinks, so that every spelling of
/// a directory (relative, through a link, with `..`) is read the same way
/// and shares one cache; left as given when it cannot be resolved.
fn resolve(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
}

/// What [`inspect`] finds about one file of a shard directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatus {
    /// The file's name.
    pub file: String,
    /// The pid that wrote it (for the archive, the last compactor's);
    /// `None` when the file cannot be read.
    pub pid: Option<u32>,
    /// Whether its process is alive (holds the file's lock).
    pub live: bool,
    /// Whether it is the archive of dead workers.
    pub archive: bool,
    /// Series it describes, over all its metrics.
    pub series: usize,
    /// Why it cannot be read, if it cannot.
    pub problem: Option<String>,
}

/// Lists the `.promshard` files of `dir` with their owner, liveness and
/// size, and any problem; reads only.
///
/// # Errors
///
/// When the directory cannot be listed.
pub fn inspect(dir: impl AsRef<Path>) -> std::io::Result<Vec<ShardStatus>> {
    let dir = resolve(dir.as_ref());
    let own = shard::own_in(&dir);
    let own_name = own.map(|o| o.file_name());
    let mut out = Vec::new();
    let mut files: Vec<String> = shard::file::list(&dir, own_name.as_deref())?
        .iter()
        .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    files.extend(own_name.clone());
    files.sort();
    let siblings = crate::linked::siblings();
    for file in files {
        let path = dir.join(&file);
        let opened = match (own, siblings.bytes(&path)) {
            (Some(own), _) if Some(&file) == own_name.as_ref() => crate::merge::read::Shard::own(own),
            // Another promshard version of this process: never by name.
            (_, Some(bytes)) => crate::merge::read::Shard::sibling(&path, bytes),
            _ => crate::merge::read::Shard::open(&path),
        };
        out.push(match opened {
            Ok(s) => ShardStatus {
                file,
                pid: Some(s.pid),
                live: s.live,
                archive: s.archive,
                series: s.schema.entries.iter().map(|e| e.desc.series).sum(),
                problem: None,
            },
            Err(e) => {
                ShardStatus { file, pid: None, live: false, archive: false, series: 0, problem: Some(e.describe()) }
            }
        });
    }
    Ok(out)
}

/// What [`inspect_python`] finds about one Python prometheus_client `.db`
/// file of a directory.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PythonFileStatus {
    /// The file's name.
    pub file: String,
    /// The writer's pid, from the name (`counter_<pid>.db`); `None` when
    /// the name is not one prometheus_client gives (such a file is not
    /// merged).
    pub pid: Option<u32>,
    /// The metric type from the name: `counter`, `histogram`, `summary`,
    /// or `gauge_<mode>` (`gauge_livesum`, …).
    pub kind: Option<String>,
    /// Whether its writer is alive: the process its name names holds it
    /// open or mapped (see [the module docs](self)); also true where that
    /// cannot be told (no `/proc`, no permission).
    pub live: bool,
    /// What it counts for in a merge: `live`; `counted` (no writer of the
    /// directory in sight, so nothing is proven dead: read as Python's
    /// collector reads it); `dead-folded` (read once, counted as Python
    /// counts it); `dead-pid-reused` (counted the same way, its pid now
    /// another process's); `dead-live-gauge` (a gauge of a `live*` mode:
    /// not counted); `previous-run` (last changed before the pool's master
    /// started: not counted); `dead-unreadable`.
    pub state: &'static str,
    /// Its size on disk, preallocated by Python (64 KiB at first).
    pub size: u64,
    /// The bytes its header says are in use.
    pub used: u64,
    /// The series (entries) it holds.
    pub series: usize,
    /// Why it cannot be parsed, if it cannot.
    pub problem: Option<String>,
}

/// Lists the Python prometheus_client `.db` files of `dir`: writer pid,
/// live or dead, type, size, bytes and series held, and any parse
/// problem; reads only.
///
/// # Errors
///
/// When the directory cannot be listed.
pub fn inspect_python(dir: impl AsRef<Path>) -> std::io::Result<Vec<PythonFileStatus>> {
    let dir = resolve(dir.as_ref());
    let listing = shard::file::list_all(&dir, None)?;
    let statuses = crate::merge::python::PyCache::inspect(&dir, &listing.python);
    Ok(statuses
        .into_iter()
        .map(|s| PythonFileStatus {
            file: s.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            pid: s.meta.map(|m| m.pid),
            kind: s.meta.map(|m| m.kind.name()),
            live: s.live,
            state: s.state.word(),
            size: s.size,
            used: s.used,
            series: s.series,
            problem: s.problem,
        })
        .collect())
}
