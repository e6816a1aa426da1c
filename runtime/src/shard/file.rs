//! Files and locks: the shard directory, creating this process's shard,
//! listing and opening the others, and telling live shards from dead ones.
//!
//! Liveness is a POSIX record lock (`fcntl(F_SETLK)`) on the whole shard,
//! held by its process for its whole life. Such locks belong to a process:
//! a forked child does not inherit its parent's, and the kernel drops them
//! when the process dies, however it dies. `F_GETLK` asks whether someone
//! else holds one without taking it. The one trap: a process drops its
//! lock when it closes *any* descriptor of the file, so this process never
//! opens its own shard: the directory is known by its identity (device and
//! inode), not by the text of its path, and its own file is skipped by
//! name inside that directory, with a check on the opened file's identity
//! behind that.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub(crate) use super::own::{Identity, identity, own_name};

pub(crate) use super::format::EXTENSION;
pub(crate) const ARCHIVE_NAME: &str = "archive.promshard";
pub(crate) const DIR_LOCK: &str = ".promshard.lock";
/// Held shared by every recording process of a run for its life, and by
/// the children it forks (they inherit the descriptor, and so the lock):
/// a start that cannot take it exclusively knows at once that the run is
/// live, without asking each shard of the directory (a start after 2,000
/// dead workers asked 2,000 files, one start at a time).
const RUN_LOCK: &str = ".run.lock";
/// Held shared by readers, exclusive by the compactor.
pub(crate) const COMPACT_LOCK: &str = ".compact.lock";
/// A shard is created as `.<final name>.tmp` and renamed when complete,
/// so a file with the final name is never half made.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
/// Half-made files younger than this are left alone: their creator may
/// be between creating the file and locking it.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(2);

/// Creates `dir` (0700) if missing, resolves it to one absolute path with
/// no symlinks, and checks it can be trusted: a directory of this user
/// that no one else can write to (as OpenSSH refuses a group-writable
/// `~/.ssh`). Anyone who can write there could plant files that stop
/// compaction or make every process record in memory.
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<(PathBuf, Identity)> {
    if fs::metadata(dir).is_err() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let dir = fs::canonicalize(dir)?;
    let meta = fs::metadata(&dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!("{} is not a directory", dir.display())));
    }
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(io::Error::other(format!(
            "{} belongs to another user (uid {}); use a directory of your own",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{} is writable by group or others (mode {:o}); run `chmod go-w {}`",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        )));
    }
    Ok((dir, identity(&meta)))
}

/// An exclusive or shared `flock` on a lock file in the directory,
/// released on drop. Used for whole-directory operations: starting a run
/// and compaction (exclusive), reading (shared).
///
/// A `flock` belongs to the open file, which a forked child shares: a
/// child forked while this process holds one would keep it held after
/// the parent lets go. So the descriptor is opened under the gate and
/// registered, and the fork handler closes the child's copies.
pub(crate) struct DirLock {
    file: core::mem::ManuallyDrop<File>,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path, name: &str, exclusive: bool, wait: bool) -> io::Result<Option<DirLock>> {
        Self::acquire_with(dir, name, exclusive, wait, true)
    }

    /// As [`acquire`](Self::acquire); with `create` false a missing lock
    /// file is an error (`NotFound`) rather than created, so that readers
    /// never write to the directory. A writer that finds something else
    /// planted under the lock's name (a symlink, a directory, a file of
    /// another user) moves it aside and uses a fresh lock file.
    pub(crate) fn acquire_with(
        dir: &Path,
        name: &str,
        exclusive: bool,
        wait: bool,
        create: bool,
    ) -> io::Result<Option<DirLock>> {
        let path = dir.join(name);
        let file = match open_lock_file(&path, create) {
            Err(e) if create && planted(&e) => {
                set_aside(&path, &e)?;
                open_lock_file(&path, create)?
            }
            other => other?,
        };
        let lock = DirLock { file: core::mem::ManuallyDrop::new(file) };
        let mut op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        if !wait {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: a valid descriptor.
            if unsafe { libc::flock(lock.file.as_raw_fd(), op) } == 0 {
                return Ok(Some(lock));
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => return Ok(None),
                _ => return Err(error),
            }
        }
    }

    /// The lock held while a process starts a run or creates its shard,
    /// waited for at most [`START_LOCK_WAIT`]: `None` after that. Its
    /// holder is another process starting, which takes milliseconds; one
    /// that holds it longer is stopped (SIGSTOP, a debugger, a frozen
    /// cgroup) or stuck, and must not hang every process that records
    /// after it.
    pub(crate) fn start(dir: &Path) -> io::Result<Option<DirLock>> {
        let deadline = std::time::Instant::now() + START_LOCK_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(lock) = Self::acquire(dir, DIR_LOCK, true, false)? {
                return Ok(Some(lock));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// Whether `meta` is a regular file of this process's user: the only
/// kind of file of the directory we open for locks, reading or the spare
/// (anything else was planted, or is another user's).
fn is_ours(meta: &fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    meta.is_file() && meta.uid() == unsafe { libc::geteuid() }
}

/// How long a process waits for another's start (see [`DirLock::start`]).
pub(crate) const START_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Whether a start joined a live run, and when that run started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// Another live process of the run holds the run lock.
    pub(crate) live: bool,
    /// When the run started (Unix nanoseconds): `now` for a process that
    /// starts a run, else what the run's first process wrote in the run
    /// lock file (`now` when it wrote nothing readable: a process of an
    /// older version started the run, and readers take the earliest).
    pub(crate) started: u64,
}

/// Takes the run lock shared for the rest of this process (call under the
/// start lock); says whether another live process of the run holds it,
/// and when the run started. A process that starts a run (`now`, Unix
/// nanoseconds) writes its start in the lock file for the later ones.
pub(crate) fn join_run(dir: &Path, now: u64) -> io::Result<Run> {
    let path = dir.join(RUN_LOCK);
    let file = match open_lock_file(&path, true) {
        Err(e) if planted(&e) => {
            set_aside(&path, &e)?;
            open_lock_file(&path, true)?
        }
        other => other?,
    };
    // Kept for good, and inherited by forked children, which are part of
    // the run: the fork handler must not close it as it does lock files.
    let fd = crate::gate::locked(|| {
        super::fork::forget_lock_fd(file.as_raw_fd());
        std::os::fd::IntoRawFd::into_raw_fd(file)
    });
    let flock = |op| loop {
        // SAFETY: our descriptor, never closed.
        if unsafe { libc::flock(fd, op) } == 0 {
            return Ok(true);
        }
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EINTR) => continue,
            e if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
            e => return Err(e),
        }
    };
    let alone = flock(libc::LOCK_EX | libc::LOCK_NB)?;
    let started = if alone {
        // Best effort: a start that cannot write it leaves the later ones
        // to their own start, and readers take the earliest of all.
        let _ = write_run_start(fd, now);
        now
    } else {
        read_run_start(fd).unwrap_or(now).min(now)
    };
    // From exclusive (or nothing) to shared: other starts wait on the
    // start lock meanwhile.
    flock(libc::LOCK_SH)?;
    Ok(Run { live: !alone, started })
}

/// The run lock file's content: the run's start (Unix nanoseconds) and
/// its FNV-1a checksum, both little-endian `u64`s.
fn write_run_start(fd: i32, nanos: u64) -> io::Result<()> {
    let mut record = [0u8; 16];
    record[..8].copy_from_slice(&nanos.to_le_bytes());
    let sum = super::format::checksum(&record[..8]);
    record[8..].copy_from_slice(&sum.to_le_bytes());
    // SAFETY: our descriptor, a buffer of 16 bytes.
    let written = unsafe { libc::pwrite(fd, record.as_ptr().cast(), record.len(), 0) };
    if written == record.len() as isize { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The run's start as [`write_run_start`] wrote it; `None` for an empty,
/// short or corrupt record.
fn read_run_start(fd: i32) -> Option<u64> {
    let mut record = [0u8; 16];
    // SAFETY: our descriptor, a buffer of 16 bytes.
    let read = unsafe { libc::pread(fd, record.as_mut_ptr().cast(), record.len(), 0) };
    let nanos = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(record[8..].try_into().expect("8 bytes"));
    (read == 16 && nanos != 0 && sum == super::format::checksum(&record[..8])).then_some(nanos)
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and never used again.
        close_lock_file(unsafe { core::mem::ManuallyDrop::take(&mut self.file) });
    }
}

/// Closes a lock file's descriptor and unregisters it in one gate
/// section, so that no fork sees one without the other.
fn close_lock_file(file: File) {
    crate::gate::locked(|| {
        super::fork::forget_lock_fd(file.as_raw_fd());
        drop(file);
    });
}

/// Opens a lock file (under the gate, registered for the fork handler)
/// and checks that it is a regular file of ours.
fn open_lock_file(path: &Path, create: bool) -> io::Result<File> {
    let file = crate::gate::locked(|| {
        let file = OpenOptions::new()
            .read(true)
            .write(create)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        super::fork::remember_lock_fd(file.as_raw_fd());
        Ok::<_, io::Error>(file)
    })?;
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(e) => {
            close_lock_file(file);
            return Err(e);
        }
    };
    if !is_ours(&meta) {
        close_lock_file(file);
        return Err(io::Error::other("not a regular file of ours"));
    }
    Ok(file)
}

/// Whether opening a lock file failed because something other than a
/// lock file of ours stands under its name.
fn planted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EISDIR | libc::ENXIO | libc::EACCES | libc::ENOTDIR))
        || e.kind() == io::ErrorKind::Other
}

/// Moves whatever was planted at `path` out of the way, keeping it for
/// whoever wants to look at it.
fn set_aside(path: &Path, why: &io::Error) -> io::Result<()> {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let aside = path.with_file_name(format!("{name}.planted-{nanos}"));
    fs::rename(path, &aside)?;
    crate::notice::warn(format!(
        "{} could not be used as a lock file ({why}); moved it to {} and made a new one",
        path.display(),
        aside.display()
    ));
    Ok(())
}

/// Takes the process's liveness lock on `fd`.
pub(crate) fn lock_for_life(file: &File) -> io::Result<()> {
    let lock = whole_file(libc::F_WRLCK as i16);
    // SAFETY: a valid descriptor and flock struct.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The pid of the process holding `file`'s liveness lock, or `None` when
/// no other process holds it (its writer is dead).
pub(crate) fn holder(file: &File) -> io::Result<Option<u32>> {
    let mut lock = whole_file(libc::F_WRLCK as i16);
    // SAFETY: a valid descriptor and flock struct.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lock.l_type != libc::F_UNLCK as i16).then_some(lock.l_pid as u32))
}

fn whole_file(kind: i16) -> libc::flock {
    // SAFETY: flock is plain old data; zero is a valid value for each field.
    let mut lock: libc::flock = unsafe { core::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as i16;
    lock
}

/// Opens a shard for reading: no symlinks, regular files owned by us only.
///
/// If the file turns out to be this process's own shard (reached under
/// another name), its descriptor is kept open for good rather than
/// closed: closing it would drop this process's liveness lock.
pub(crate) fn open_for_read(path: &Path) -> Result<File, super::format::ShardError> {
    use super::format::ShardError;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => ShardError::Untrusted,
            Some(libc::EMFILE | libc::ENFILE) => ShardError::Descriptors,
            _ => ShardError::Io,
        })?;
    let meta = file.metadata().map_err(|_| ShardError::Io)?;
    if super::own::own_file().is_some_and(|own| own.file_identity() == identity(&meta)) {
        core::mem::forget(file);
        crate::notice::warn(format!("{} is this process's own shard; not reading it by name", path.display()));
        return Err(ShardError::Io);
    }
    if !is_ours(&meta) {
        return Err(ShardError::Untrusted);
    }
    Ok(file)
}

/// What a directory holds for a scrape.
#[derive(Clone, Default)]
pub(crate) struct Listing {
    /// `.promshard` files, sorted by name, without this process's own.
    pub(crate) shards: Vec<PathBuf>,
    /// Python prometheus_client `.db` files, sorted by name; shared, so
    /// that a listing kept between scrapes is not copied file by file (a
    /// Python pool can leave thousands).
    pub(crate) python: std::sync::Arc<Vec<PathBuf>>,
    /// Shards being created, or left half made by a creator that died.
    pub(crate) half_made: Vec<PathBuf>,
}

/// Lists `dir` in one pass (a directory that saw thousands of workers
/// come and go stays large on some file systems, so it is read once),
/// leaving out `own_name`.
pub(crate) fn list_all(dir: &Path, own_name: Option<&str>) -> io::Result<Listing> {
    let mut listing = Listing::default();
    let mut python = Vec::new();
    for entry in fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if Some(name) == own_name {
            continue;
        }
        let path = entry.path();
        if name.starts_with('.') && name.ends_with(&format!(".{EXTENSION}{TEMP_SUFFIX}")) {
            listing.half_made.push(path);
        } else if name.ends_with(&format!(".{EXTENSION}")) && !name.starts_with('.') {
            listing.shards.push(path);
        } else if name.ends_with(".db") {
            python.push(path);
        }
    }
    listing.shards.sort();
    python.sort();
    listing.python = std::sync::Arc::new(python);
    Ok(listing)
}

/// The `.promshard` files in `dir`, sorted by name, without `own_name`.
pub(crate) fn list(dir: &Path, own_name: Option<&str>) -> io::Result<Vec<PathBuf>> {
    Ok(list_all(dir, own_name)?.shards)
}

/// Removes a half-made shard whose creator is gone: not locked by anyone
/// and at least `min_age` old. Returns whether it did.
pub(crate) fn remove_if_abandoned(path: &Path, min_age: Duration) -> bool {
    let Ok(file) = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path) else {
        return false;
    };
    let Ok(meta) = file.metadata() else { return false };
    if super::own::own_file().is_some_and(|own| own.file_identity() == identity(&meta)) {
        core::mem::forget(file);
        return false;
    }
    let old =
        min_age.is_zero() || meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age >= min_age);
    if !old || !matches!(holder(&file), Ok(None)) {
        return false;
    }
    fs::remove_file(path).is_ok()
}

/// Creates this process's shard: a temporary file, locked, with `len`
/// bytes reserved on disk (a sparse file would fault inside a plain
/// `inc()` when the disk fills up), filled by `fill`, then renamed to
/// its final name.
///
/// On a full disk, disk kept aside in the directory's spare (see
/// [`SPARE_NAME`]) is given back and the creation tried again, so that a
/// worker started while the disk is full still records where scrapes
/// see it.
pub(crate) fn create_own(
    dir: &Path,
    pid: u32,
    nonce: u64,
    len: usize,
    fill: impl Fn(&File) -> io::Result<()>,
) -> io::Result<(File, PathBuf)> {
    let mut tries = 0;
    loop {
        match create_once(dir, pid, nonce, len, &fill) {
            Err(e) if no_space(&e) && tries < SPARE_SHARDS && release_spare(dir, len as u64) => tries += 1,
            other => return other,
        }
    }
}

/// The name of the spare: a file of disk reserved (`fallocate`) while
/// there is room, [`SPARE_SHARDS`] shards' worth, that a process unable
/// to reserve its shard's disk shrinks by what it needs. Refilled by a
/// process that starts, or whose scrape compacted dead shards, while
/// the disk has room for it twice over (the spare never takes the last
/// of the disk from the application).
pub(crate) const SPARE_NAME: &str = ".promshard.spare";

/// How many shards' worth of disk the spare holds.
pub(crate) const SPARE_SHARDS: u64 = 4;

fn no_space(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// Gives back `need` bytes (and a page more, for the new file's own
/// blocks) of the directory's spare; whether there was any to give.
fn release_spare(dir: &Path, need: u64) -> bool {
    let Ok(file) =
        OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(dir.join(SPARE_NAME))
    else {
        return false;
    };
    let Ok(meta) = file.metadata() else { return false };
    if !is_ours(&meta) || meta.len() == 0 {
        return false;
    }
    let freed = file.set_len(meta.len().saturating_sub(need + 4096)).is_ok();
    if freed {
        crate::notice::warn(format!(
            "the disk of {} is full: took {need} bytes from the spare kept for this",
            dir.display()
        ));
    }
    freed
}

/// Grows the directory's spare back to `target` bytes, if the disk has
/// room for that twice over; best effort.
pub(crate) fn top_up_spare(dir: &Path, target: u64) {
    let path = dir.join(SPARE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path);
    let Ok(file) = file else { return };
    let Ok(meta) = file.metadata() else { return };
    if !is_ours(&meta) || meta.len() >= target {
        return;
    }
    let missing = target - meta.len();
    // SAFETY: statvfs is plain old data, filled by the call.
    let mut fs: libc::statvfs = unsafe { core::mem::zeroed() };
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut fs) } != 0 {
        return;
    }
    let available = (fs.f_bavail as u64).saturating_mul(fs.f_frsize as u64);
    if available < missing.saturating_add(target) {
        return;
    }
    // The system call, not `posix_fallocate`: where the file system cannot
    // reserve (EOPNOTSUPP), glibc's fallback writes the blocks one by one,
    // a slow start for a spare that would not be a reservation anyway.
    // SAFETY: a valid descriptor.
    let _ = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, target as libc::off_t) };
}

fn create_once(
    dir: &Path,
    pid: u32,
    nonce: u64,
    len: usize,
    fill: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<(File, PathBuf)> {
    let name = own_name(pid, nonce);
    let temp = dir.join(format!(".{name}{TEMP_SUFFIX}"));
    let path = dir.join(&name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)?;
    let made = (|| {
        lock_for_life(&file)?;
        reserve(&file, len)?;
        fill(&file)?;
        fs::rename(&temp, &path)
    })();
    if let Err(e) = made {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok((file, path))
}

/// Reserves `len` bytes of disk for `file` (and sets its length).
fn reserve(file: &File, len: usize) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) } {
        0 => Ok(()),
        code => {
            let cause = io::Error::from_raw_os_error(code);
            let message = format!("cannot reserve {len} bytes for the shard ({cause}); is the disk full?");
            Err(io::Error::new(cause.kind(), message))
        }
    }
}
