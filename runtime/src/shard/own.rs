//! This process's own shard, and how it is recognised: by the identity of
//! its directory (device and inode) and its file name there, never by the
//! text of a path.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::format::EXTENSION;
use super::log::StringLog;

/// A file's identity: device and inode.
pub(crate) type Identity = (u64, u64);

pub(crate) fn identity(meta: &fs::Metadata) -> Identity {
    (meta.dev(), meta.ino())
}

/// The identity of the directory `dir` names, following symlinks.
pub(crate) fn dir_identity(dir: &Path) -> Option<Identity> {
    fs::metadata(dir).ok().map(|m| identity(&m))
}

/// This process's shard.
pub(crate) struct OwnShard {
    /// The directory, absolute and free of symlinks, resolved once when
    /// the shard was created (a later `chdir` changes nothing).
    pub(crate) dir: PathBuf,
    /// The directory's identity: any spelling of it names the same one.
    pub(super) dir_id: Identity,
    /// The current file's identity; it changes in a forked child.
    pub(super) file_dev: AtomicU64,
    pub(super) file_ino: AtomicU64,
    pub(super) base: *mut u8,
    pub(super) len: usize,
    pub(super) slots_offset: usize,
    pub(super) slots_count: usize,
    /// Byte ranges of info metrics' slots: a forked child copies them, so
    /// it keeps exposing what its parent set (computed before any fork).
    pub(super) info_ranges: Vec<(usize, usize)>,
    pub(crate) log: StringLog,
    /// Identify the current file; they change in a forked child.
    pub(super) pid: AtomicU32,
    pub(super) nonce: AtomicU64,
    /// Keeps the descriptor (and so the liveness lock) open for good; the
    /// fork handler replaces it by raw descriptor number in the child.
    pub(super) fd: core::sync::atomic::AtomicI32,
}

// SAFETY: the mapping lives for the rest of the process; slots are atomics
// and the log is written under the gate.
unsafe impl Send for OwnShard {}
unsafe impl Sync for OwnShard {}

static OWN: OnceLock<OwnShard> = OnceLock::new();

/// The shard of this process, when in multiprocess mode.
pub(crate) fn own() -> Option<&'static OwnShard> {
    OWN.get()
}

/// This process's shard while it has a file of its own: not in a forked
/// child whose file could not be made. Such a child records into private
/// memory that no scrape sees, and its parent's file is still named in
/// the shard; it reads the directory as a process without a shard does,
/// its parent's file included.
pub(crate) fn own_file() -> Option<&'static OwnShard> {
    own().filter(|_| !super::fork::FAILED.load(Ordering::Relaxed))
}

/// This process's shard file, if `dir` (in any spelling: relative, through
/// a symlink, with `..`) is its directory.
pub(crate) fn own_in(dir: &Path) -> Option<&'static OwnShard> {
    let own = own_file()?;
    (dir_identity(dir) == Some(own.dir_id)).then_some(own)
}

/// Sets this process's shard, once; `None` if one was set already.
pub(super) fn install(shard: OwnShard) -> Option<&'static OwnShard> {
    OWN.set(shard).ok()?;
    OWN.get()
}

impl OwnShard {
    /// The identity of the current file.
    pub(crate) fn file_identity(&self) -> Identity {
        (self.file_dev.load(Ordering::Relaxed), self.file_ino.load(Ordering::Relaxed))
    }

    /// Whether the current file is no longer this process's shard in its
    /// directory: the file was deleted (with its directory, say), or the
    /// directory its path names is another one (removed and recreated).
    pub(crate) fn unlinked(&self) -> bool {
        let fd = self.fd.load(Ordering::Relaxed);
        // SAFETY: a zeroed `stat` is valid; fstat only writes it.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: a descriptor this process keeps open for good.
        let deleted = unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_nlink == 0;
        deleted || dir_identity(&self.dir).is_some_and(|id| id != self.dir_id)
    }

    /// The file name of the current shard.
    pub(crate) fn file_name(&self) -> String {
        own_name(self.pid.load(Ordering::Relaxed), self.nonce.load(Ordering::Relaxed))
    }

    /// The whole mapping, header to last slot.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `base` maps `len` bytes for the rest of the process. Bytes
        // other threads write are read as atomics where it matters.
        unsafe { core::slice::from_raw_parts(self.base, self.len) }
    }
}

pub(crate) fn own_name(pid: u32, nonce: u64) -> String {
    format!("p{pid}-{nonce:016x}.{EXTENSION}")
}
