//! Files and locks: creating this process's shard, listing and opening the
//! others, and telling live shards from dead ones.
//!
//! Liveness is a POSIX record lock (`fcntl(F_SETLK)`) on the whole shard,
//! held by its process for its whole life. Such locks belong to a process:
//! a forked child does not inherit its parent's, and the kernel drops them
//! when the process dies, however it dies. `F_GETLK` asks whether someone
//! else holds one without taking it. The one trap: a process drops its
//! lock when it closes *any* descriptor of the file, so this process never
//! opens its own shard by name.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(crate) const EXTENSION: &str = "promshard";
pub(crate) const ARCHIVE_NAME: &str = "archive.promshard";
const DIR_LOCK: &str = ".promshard.lock";

/// Creates `dir` (0700) if missing and checks it is a real directory of
/// ours, not a symlink planted by someone else.
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!("{} is not a directory", dir.display())));
    }
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(io::Error::other(format!("{} belongs to another user", dir.display())));
    }
    Ok(())
}

/// An exclusive or shared `flock` on a lock file in the directory,
/// released on drop. Used for whole-directory operations: starting a run
/// and compaction (exclusive), reading (shared).
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path, name: &str, exclusive: bool, wait: bool) -> io::Result<Option<DirLock>> {
        Self::acquire_with(dir, name, exclusive, wait, true)
    }

    /// As [`acquire`](Self::acquire); with `create` false a missing lock
    /// file is an error (`NotFound`) rather than created, so that readers
    /// never write to the directory.
    pub(crate) fn acquire_with(
        dir: &Path,
        name: &str,
        exclusive: bool,
        wait: bool,
        create: bool,
    ) -> io::Result<Option<DirLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(create)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(name))?;
        let mut op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        if !wait {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: a valid descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Some(DirLock { _file: file }));
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => return Ok(None),
                _ => return Err(error),
            }
        }
    }

    /// The lock held while a process starts a run or creates its shard.
    pub(crate) fn start(dir: &Path) -> io::Result<DirLock> {
        Ok(Self::acquire(dir, DIR_LOCK, true, true)?.expect("a blocking lock is acquired"))
    }
}

/// Takes the process's liveness lock on `file`.
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
pub(crate) fn open_for_read(path: &Path) -> Result<File, super::format::ShardError> {
    use super::format::ShardError;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| if e.raw_os_error() == Some(libc::ELOOP) { ShardError::Untrusted } else { ShardError::Io })?;
    let meta = file.metadata().map_err(|_| ShardError::Io)?;
    // SAFETY: geteuid has no preconditions.
    if !meta.is_file() || meta.uid() != unsafe { libc::geteuid() } {
        return Err(ShardError::Untrusted);
    }
    Ok(file)
}

/// The `.promshard` files in `dir`, sorted by name.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(list_all(dir)?.0)
}

/// The `.promshard` and the `.db` files in `dir`, each sorted by name, in
/// one pass over the directory (a directory that saw thousands of workers
/// come and go stays large on some file systems, so it is read once).
pub(crate) fn list_all(dir: &Path) -> io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut shards, mut python) = (Vec::new(), Vec::new());
    for entry in fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let path = entry.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some(EXTENSION) => shards.push(path),
            Some("db") => python.push(path),
            _ => {}
        }
    }
    shards.sort();
    python.sort();
    Ok((shards, python))
}

/// Creates a new shard file for this process, exclusively, 0600, never
/// through a symlink, and takes its liveness lock.
pub(crate) fn create_own(dir: &Path, pid: u32, nonce: u64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(own_name(pid, nonce));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)?;
    lock_for_life(&file)?;
    Ok((file, path))
}

pub(crate) fn own_name(pid: u32, nonce: u64) -> String {
    format!("p{pid}-{nonce:016x}.{EXTENSION}")
}
