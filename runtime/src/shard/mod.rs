//! Multiprocess mode: with `PROMSHARD_DIR` set, this process's slots live
//! in a memory-mapped shard file in that directory, and a scrape merges
//! every shard there (and Python prometheus_client's `.db` files) into one
//! exposition.

pub(crate) mod file;
pub(crate) mod fork;
pub(crate) mod format;
pub(crate) mod guard;
pub(crate) mod log;
mod own;

pub(crate) use own::{OwnShard, own, own_file, own_in};

use core::sync::atomic::{AtomicU32, AtomicU64};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::arena::Arena;
use crate::descriptor::Descriptor;
use format::Header;
use log::StringLog;

/// The environment variable that selects multiprocess mode.
pub const DIR_ENV: &str = "PROMSHARD_DIR";

static CONFIGURED: OnceLock<PathBuf> = OnceLock::new();

/// The shard directory: set by [`init`](crate::multiprocess::init), else
/// `PROMSHARD_DIR`, made absolute against the working directory of the
/// moment (a relative path must not change meaning with a later `chdir`).
pub(crate) fn configured_dir() -> Option<PathBuf> {
    let dir =
        CONFIGURED.get().cloned().or_else(|| std::env::var_os(DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))?;
    Some(std::path::absolute(&dir).unwrap_or(dir))
}

/// Sets the shard directory, made absolute now; false when one was set
/// already.
pub(crate) fn configure(dir: PathBuf) -> bool {
    CONFIGURED.set(std::path::absolute(&dir).unwrap_or(dir)).is_ok()
}

/// The arena of slots inside the own shard's mapping.
pub(crate) struct ShardArena {
    shard: &'static OwnShard,
}

impl Arena for ShardArena {
    fn slots(&self) -> &[core::sync::atomic::AtomicU64] {
        let s = self.shard;
        // SAFETY: the slots region is 8-aligned, inside the mapping and
        // only ever accessed atomically.
        unsafe { core::slice::from_raw_parts(s.base.add(s.slots_offset) as *const _, s.slots_count) }
    }
}

/// Prepares `dir` (see [`file::prepare_dir`]) and takes its start lock,
/// for a start or an early join of the run: the directory as resolved,
/// its identity, and the lock (`None` when its holder does not finish
/// starting; said, and gone on without).
fn enter(dir: &Path) -> io::Result<(PathBuf, file::Identity, Option<file::DirLock>)> {
    let (dir, dir_id) = file::prepare_dir(dir)?;
    let start_lock = file::DirLock::start(&dir)?;
    if start_lock.is_none() {
        // The run's other steps are safe without it: a shard being created
        // is locked (never cleared), and a run is cleared only when no
        // shard's lock is held. What is lost is only the order of two
        // starts deciding at once.
        crate::notice::warn(format!(
            "{} has been held for {} s by a process that does not finish starting (stopped?); starting without it",
            dir.join(file::DIR_LOCK).display(),
            file::START_LOCK_WAIT.as_secs()
        ));
    }
    Ok((dir, dir_id, start_lock))
}

/// Makes this process part of the run in `dir` before it has a shard
/// (see `multiprocess::init`): under the start lock, takes the run lock
/// shared for the rest of the process, and clears a previous run when no
/// live process holds that lock, as a start does. The workers it forks
/// inherit the lock, so while it lives the run does: a shard it makes
/// after its workers exited (a job's master that then pushes, a master
/// that records late) joins their run instead of clearing their counts as
/// a previous run's. Its own start later finds the run live (its own
/// lock) and takes the run's start from the lock file.
pub(crate) fn join_before_start(dir: &Path) -> io::Result<()> {
    let (dir, _, _start_lock) = enter(dir)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    if !file::join_run(&dir, now)?.live {
        clear_previous_run(&dir)?;
    }
    Ok(())
}

/// Starts this process's shard in `dir`: clears a previous run if no live
/// process holds a shard there, creates and maps our file, writes the
/// header and schema. `metrics` are the exposed metrics with their slot
/// offsets; `slots` is the arena size.
pub(crate) fn start(
    dir: &Path,
    metrics: &[(&Descriptor, usize)],
    slots: usize,
    log_capacity: usize,
) -> io::Result<ShardArena> {
    let (dir, dir_id, _start_lock) = enter(dir)?;
    let created_nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    // A live process holds the run lock: the run is live, and nothing is
    // cleared. Otherwise each shard is asked, as a process of an older
    // version, which holds no run lock, may still be live.
    let run_started = match file::join_run(&dir, created_nanos) {
        Ok(file::Run { live: true, started }) => started,
        Ok(file::Run { live: false, started }) => {
            clear_previous_run(&dir)?;
            started
        }
        Err(e) => {
            crate::notice::warn(format!("cannot take the run lock in {} ({e}); asking each shard", dir.display()));
            clear_previous_run(&dir)?;
            created_nanos
        }
    };
    // Readers take it shared; it must exist before any compaction can run.
    drop(file::DirLock::acquire(&dir, file::COMPACT_LOCK, false, false)?);

    let schema = format::encode_schema(metrics);
    let pid = std::process::id();
    let nonce = random_nonce(pid, created_nanos);
    let mut header = Header::layout(0, pid, created_nanos, nonce, (&schema.0, schema.1), log_capacity, slots);
    header.run_started_nanos = run_started;
    let schema = schema.0;
    let (strings_offset, strings_len) = (header.strings_offset as usize, header.strings_len as usize);
    let slots_offset = header.slots_offset as usize;
    let len = header.file_len();

    let (file, _path) = file::create_own(&dir, pid, nonce, len, |file| {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&header.encode(), 0)?;
        file.write_all_at(&schema, header.schema_offset)
    })?;
    let identity = own::identity(&file.metadata()?);
    // SAFETY: the file is ours (created exclusively, locked) and sized;
    // the mapping is never unmapped, see below.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file)? };
    let base = map.as_ptr() as *mut u8;
    // The mapping must outlive every cached slot pointer: forever.
    core::mem::forget(map);
    let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
    // SAFETY: the strings region is inside the mapping, 8-aligned.
    let log = unsafe { StringLog::new(base.add(strings_offset), strings_len) };
    let shard = OwnShard {
        dir,
        dir_id,
        file_dev: AtomicU64::new(identity.0),
        file_ino: AtomicU64::new(identity.1),
        base,
        len,
        slots_offset,
        slots_count: slots,
        info_ranges: metrics
            .iter()
            .filter(|(d, _)| d.kind == crate::descriptor::Kind::Info)
            .map(|(d, offset)| (slots_offset + offset * 8, d.width * 8))
            .collect(),
        log,
        pid: AtomicU32::new(pid),
        nonce: AtomicU64::new(nonce),
        fd: core::sync::atomic::AtomicI32::new(fd),
    };
    let Some(shard) = own::install(shard) else { return Err(io::Error::other("the shard was already started")) };
    fork::install(shard)?;
    top_up_spare(shard);
    Ok(ShardArena { shard })
}

/// Grows the directory's spare disk back to [`file::SPARE_SHARDS`] of
/// this process's shards (at most 64 MiB, unless one shard is larger), if
/// the disk has room (see [`file::SPARE_NAME`]). On a tmpfs the spare is
/// memory: hence the cap.
pub(crate) fn top_up_spare(own: &OwnShard) {
    let len = own.len as u64;
    file::top_up_spare(&own.dir, (file::SPARE_SHARDS * len).min(64 << 20).max(len));
}

/// A process that starts recording and finds no live shard treats what is
/// in the directory as a finished run and removes it, so a restarted
/// deployment never starts with the old run's counters. Python's `.db`
/// files are never touched. Called under the directory's start lock.
fn clear_previous_run(dir: &Path) -> io::Result<()> {
    let listing = file::list_all(dir, None)?;
    for half_made in &listing.half_made {
        file::remove_if_abandoned(half_made, file::STALE_AFTER);
    }
    let shards = listing.shards;
    // Another promshard version's shard in this process is live, and must
    // not be opened: closing it would drop this process's lock on it.
    let siblings = crate::linked::siblings();
    let mut dead = Vec::new();
    for path in &shards {
        if siblings.contains(path) {
            return Ok(());
        }
        match file::open_for_read(path) {
            Ok(file) => match file::holder(&file) {
                Ok(None) => dead.push(path),
                // Live, or unknown: a run that may be live is never cleared.
                Ok(Some(_)) | Err(_) => return Ok(()),
            },
            // Not ours (a symlink, another user's file): left alone.
            Err(format::ShardError::Untrusted) => {}
            // Out of descriptors, or unreadable: cannot tell; keep the run.
            Err(_) => return Ok(()),
        }
    }
    let shards = dead;
    if shards.is_empty() {
        return Ok(());
    }
    for path in &shards {
        if let Err(e) = std::fs::remove_file(path) {
            crate::notice::warn(format!("could not remove {} of a previous run: {e}", path.display()));
        }
    }
    crate::notice::info(format!("cleared {} shard(s) of a previous run in {}", shards.len(), dir.display()));
    Ok(())
}

/// A nonce that differs between processes and restarts: pid, time and the
/// address of a stack variable (randomised by ASLR), mixed.
fn random_nonce(pid: u32, nanos: u64) -> u64 {
    let local = 0u8;
    let address = &local as *const u8 as u64;
    format::checksum(&[pid.to_le_bytes().as_slice(), &nanos.to_le_bytes(), &address.to_le_bytes()].concat())
}
