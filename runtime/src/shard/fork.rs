//! What happens at `fork()`: the child gets a fresh shard of its own,
//! mapped at the very address of the parent's, so every slot pointer the
//! child inherited (in metrics and in series handles users cached) now
//! counts into the child's file, starting from zero. The parent's file is
//! never written by the child, so nothing is counted twice.
//!
//! The child handler runs in a copy of a possibly multi-threaded process:
//! it uses raw system calls on data prepared before the fork, with no
//! allocation and no lock (the [`gate`](crate::gate) is taken before the
//! fork and released on both sides).

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Once;

use super::format::{HEADER_LEN, checksum};
use super::own::{self, OwnShard};
use crate::gate::{self, GateCell};

/// Set in a child whose new shard could not be created; its recordings go
/// to private memory. The child also counts itself in its parent's
/// `promshard_fork_fallbacks_total` before it lets go of the parent's
/// file, so the parent's next scrape reports it.
pub(crate) static FAILED: AtomicBool = AtomicBool::new(false);

/// How many times this process's slots were replaced by zeroed ones at a
/// fork (in this process or, inherited, in its ancestors): a call in
/// flight at the fork started in the parent's slots and is the parent's
/// to end, so a forked child ending it must count nothing (its in-flight
/// gauge never counted it up). See [`generation`].
static GENERATION: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// The current slot generation; a call or request records its end only
/// in the generation it started in.
#[inline(always)]
pub(crate) fn generation() -> u32 {
    GENERATION.load(Ordering::Relaxed)
}

/// The counter of children that fell back to private memory, declared
/// with the built-in metrics.
pub(crate) const FALLBACKS_METRIC: &str = "promshard_fork_fallbacks";

/// Where a failed child counts itself: the slot of
/// `promshard_fork_fallbacks_total`, in the parent's shard.
static FALLBACK_SLOT: AtomicPtr<AtomicU64> = AtomicPtr::new(core::ptr::null_mut());

/// Sets the slot a child whose shard cannot be made counts itself in.
pub(crate) fn count_fallbacks_in(slot: *const AtomicU64) {
    FALLBACK_SLOT.store(slot as *mut AtomicU64, Ordering::Relaxed);
}

/// Descriptors of directory locks (`flock`s) this process has open. A
/// forked child shares the open file behind each, so it would hold the
/// lock for as long as it keeps its copy: the child handler closes them.
/// Opened and closed only under the gate, so no fork falls between a
/// descriptor's opening (or closing) and its entry here; as many as there
/// are concurrent directory operations, with no fixed number.
static LOCK_FDS: GateCell<Vec<i32>> = GateCell::new(Vec::new());

/// Registers a directory lock's descriptor; call under the gate, right
/// after opening it.
pub(crate) fn remember_lock_fd(fd: i32) {
    LOCK_FDS.with(|fds| fds.push(fd));
}

/// Unregisters a directory lock's descriptor; call under the gate, with
/// the descriptor's closing.
pub(crate) fn forget_lock_fd(fd: i32) {
    LOCK_FDS.with(|fds| fds.retain(|f| *f != fd));
}

/// What the registry repairs in the slots a forked child keeps as they
/// were (`unsafe fn(kept: bool)`, as usize; 0: nothing laid out): the
/// exemplars a thread of the parent was writing. Called from the child
/// handler with the gate held; set by the layer above, so that this one
/// never calls up into it.
static SLOT_REPAIR: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Sets what a forked child calls to repair its slots (see
/// [`SLOT_REPAIR`]): `repair(kept)`, `kept` when the child keeps its
/// registry's slots as they were (memory mode, or a private copy). It
/// must only load and store: it runs in the fork child handler.
pub(crate) fn repair_slots_in_child(repair: unsafe fn(bool)) {
    SLOT_REPAIR.store(repair as usize, Ordering::Release);
}

/// Called in a forked child after the handler's own work, with the gate
/// released: each restarts what threads a module above keeps (0: none).
/// One place per module that has threads, not per call.
static CHILD_HOOKS: [core::sync::atomic::AtomicUsize; 4] = [const { core::sync::atomic::AtomicUsize::new(0) }; 4];

/// Adds `hook` to what a forked child calls once the fork handler is
/// done; adding one twice keeps one.
pub(crate) fn after_fork_in_child(hook: fn()) {
    // The handlers may not be there yet: a process that has laid nothing
    // out (only Redis metrics, say) installed none.
    if let Err(e) = install_gate_handlers() {
        crate::notice::warn(format!("no fork handler ({e}): forked children start no threads of their own"));
    }
    let hook = hook as usize;
    for place in &CHILD_HOOKS {
        match place.compare_exchange(0, hook, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(current) if current == hook => return,
            Err(_) => {}
        }
    }
    panic!("more modules with fork hooks than places for them: raise CHILD_HOOKS");
}

/// Registers the fork handlers once. The gate handlers are needed even in
/// memory mode; the shard switch only when `own()` is set.
pub(crate) fn install(_shard: &'static OwnShard) -> io::Result<()> {
    install_gate_handlers()
}

pub(crate) fn install_gate_handlers() -> io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = 0;
    ONCE.call_once(|| {
        // SAFETY: the handlers are `extern "C"` functions valid for the
        // life of the process.
        result = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
    if result == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(result)) }
}

extern "C" fn prepare() {
    gate::lock();
}

extern "C" fn parent() {
    gate::unlock();
}

extern "C" fn child() {
    // SAFETY: this thread holds the gate (taken in `prepare`) and is the
    // child's only thread.
    let fds = unsafe { LOCK_FDS.get_mut_holding_gate() };
    for &fd in fds.iter() {
        // SAFETY: our copy of an inherited descriptor; the parent's stays
        // open (and locked) on its side.
        unsafe { libc::close(fd) };
    }
    // No allocation: the child keeps the capacity.
    fds.clear();
    // A child of a process that records in private memory (its own
    // shard could not be made) keeps a private copy: the mapping holds no
    // header or schema to make a file from.
    let own = own::own().filter(|_| !FAILED.load(Ordering::Relaxed));
    // The slots this child keeps as they were (all of them in memory
    // mode, or in a private copy; the arenas of unregistered metrics
    // always) may hold an exemplar a thread of the parent was writing,
    // its sequence word odd for good: cleared here. A new shard, or the
    // zeroed memory a failed one falls back to, holds none.
    let repair = SLOT_REPAIR.load(Ordering::Acquire);
    if repair != 0 {
        // SAFETY: `repair` was stored from an `unsafe fn(bool)` by
        // `repair_slots_in_child`; we are the child's only thread and hold
        // the gate, as it requires.
        unsafe { core::mem::transmute::<usize, unsafe fn(bool)>(repair)(own.is_none()) };
    }
    if let Some(shard) = own {
        // SAFETY: we are the only thread of the child; see `switch`.
        if !unsafe { switch(shard) } {
            FAILED.store(true, Ordering::Relaxed);
        }
        // Either way this child's slots start from zero.
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    gate::unlock();
    for place in &CHILD_HOOKS {
        let hook = place.load(Ordering::Acquire);
        if hook != 0 {
            // SAFETY: only ever stored from a `fn()` in `after_fork_in_child`.
            let hook: fn() = unsafe { core::mem::transmute::<usize, fn()>(hook) };
            hook();
        }
    }
}

/// Creates, locks and fills the child's shard under a temporary name,
/// with its space reserved, renames it, then maps it over the parent's
/// mapping. On any failure, counts the failure in the parent's file and
/// maps private zeroed memory there instead, so the child never writes
/// into its parent's file.
///
/// # Safety
///
/// Only from the fork child handler: single-threaded, async-signal-safe
/// calls only.
unsafe fn switch(shard: &OwnShard) -> bool {
    let (mut path, mut temp) = ([0u8; 4096], [0u8; 4096]);
    // SAFETY: getpid and clock_gettime are async-signal-safe.
    let pid = unsafe { libc::getpid() } as u32;
    let mut now: libc::timespec = unsafe { core::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let nanos = (now.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(now.tv_nsec as u64);
    let mut seed = [0u8; 20];
    seed[..8].copy_from_slice(&shard.nonce.load(Ordering::Relaxed).to_le_bytes());
    seed[8..12].copy_from_slice(&pid.to_le_bytes());
    seed[12..].copy_from_slice(&nanos.to_le_bytes());
    let nonce = checksum(&seed);

    let dir = shard.dir.as_os_str().as_bytes();
    let (Some(len), Some(temp_len)) =
        (shard_path(&mut path, dir, pid, nonce, false), shard_path(&mut temp, dir, pid, nonce, true))
    else {
        return unsafe { fall_back(shard) };
    };
    let (path, temp) = (&path[..=len], &temp[..=temp_len]);
    let mut spare = [0u8; 4096];
    let spare = spare_path(&mut spare, dir).map(|end| &spare[..=end]);
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `temp` is NUL-terminated.
    let fd = unsafe { libc::open(temp.as_ptr().cast(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return unsafe { fall_back(shard) };
    }
    // SAFETY: raw calls on our new descriptor and on the mapping, which is
    // `shard.len` bytes at `shard.base` (and stays so until the mmap below
    // replaces it with the same length).
    let written = unsafe {
        let mut lock: libc::flock = core::mem::zeroed();
        lock.l_type = libc::F_WRLCK as i16;
        lock.l_whence = libc::SEEK_SET as i16;
        let mut header = [0u8; HEADER_LEN];
        core::ptr::copy_nonoverlapping(shard.base, header.as_mut_ptr(), HEADER_LEN);
        header[20..24].copy_from_slice(&pid.to_le_bytes());
        header[24..32].copy_from_slice(&nanos.to_le_bytes());
        header[32..40].copy_from_slice(&nonce.to_le_bytes());
        let sum = checksum(&header[..HEADER_LEN - 8]);
        header[HEADER_LEN - 8..].copy_from_slice(&sum.to_le_bytes());

        libc::fcntl(fd, libc::F_SETLK, &lock) == 0
            && reserve(fd, shard.len, spare)
            // Header, schema and string log (the values the parent had
            // interned stay valid in the child) and info pairs; counts
            // start from zero.
            && write_all(fd, shard.base.add(HEADER_LEN), shard.slots_offset - HEADER_LEN, HEADER_LEN)
            && write_all(fd, header.as_ptr(), HEADER_LEN, 0)
            && shard.info_ranges.iter().all(|&(at, len)| write_all(fd, shard.base.add(at), len, at))
    };
    // SAFETY: NUL-terminated paths.
    if !written || unsafe { libc::rename(temp.as_ptr().cast(), path.as_ptr().cast()) } != 0 {
        // SAFETY: our descriptor and NUL-terminated path.
        unsafe {
            libc::close(fd);
            libc::unlink(temp.as_ptr().cast());
            return fall_back(shard);
        }
    }
    // SAFETY: as above; `stat` is plain old data.
    let mapped = unsafe {
        let mut stat: libc::stat = core::mem::zeroed();
        libc::fstat(fd, &mut stat) == 0
            && libc::mmap(
                shard.base.cast(),
                shard.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                0,
            ) == shard.base.cast()
            && {
                shard.file_dev.store(stat.st_dev, Ordering::Relaxed);
                shard.file_ino.store(stat.st_ino, Ordering::Relaxed);
                true
            }
    };
    if !mapped {
        // SAFETY: our descriptor and NUL-terminated path.
        unsafe {
            libc::close(fd);
            libc::unlink(path.as_ptr().cast());
            return fall_back(shard);
        }
    }
    let inherited = shard.fd.swap(fd, Ordering::Relaxed);
    // SAFETY: the parent's descriptor, inherited; closing it in the child
    // does not touch the parent's lock (record locks are per process).
    unsafe { libc::close(inherited) };
    shard.pid.store(pid, Ordering::Relaxed);
    shard.nonce.store(nonce, Ordering::Relaxed);
    true
}

/// Reserves `len` bytes of disk for `fd`. A file system that cannot
/// reserve space (`EOPNOTSUPP`) gets a plain length, as before. On a full
/// disk, the directory's spare (`spare`, its NUL-terminated path) gives
/// back what is needed, as [`super::file::create_own`] does.
///
/// # Safety
///
/// As for [`switch`].
unsafe fn reserve(fd: libc::c_int, len: usize, spare: Option<&[u8]>) -> bool {
    let mut tries = 0;
    loop {
        // SAFETY: plain system calls on our descriptor.
        if unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) } == 0 {
            return true;
        }
        match unsafe { *libc::__errno_location() } {
            libc::EINTR => continue,
            libc::EOPNOTSUPP => return unsafe { libc::ftruncate(fd, len as libc::off_t) } == 0,
            libc::ENOSPC | libc::EDQUOT
                if tries < super::file::SPARE_SHARDS && spare.is_some_and(|p| unsafe { release_spare(p, len) }) =>
            {
                tries += 1;
            }
            _ => return false,
        }
    }
}

/// Shrinks the spare at `path` (NUL-terminated) by `need` bytes and a
/// page; whether there was any to give.
///
/// # Safety
///
/// As for [`switch`].
unsafe fn release_spare(path: &[u8], need: usize) -> bool {
    // SAFETY: a NUL-terminated path; plain system calls on the descriptor
    // opened here; `stat` is plain old data.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let mut stat: libc::stat = core::mem::zeroed();
        let ours = libc::fstat(fd, &mut stat) == 0
            && stat.st_mode & libc::S_IFMT == libc::S_IFREG
            && stat.st_uid == libc::geteuid()
            && stat.st_size > 0;
        let freed = ours && libc::ftruncate(fd, (stat.st_size - need as libc::off_t - 4096).max(0)) == 0;
        libc::close(fd);
        freed
    }
}

/// Writes `<dir>/.promshard.spare` and a NUL into `out`; the index of the
/// NUL.
fn spare_path(out: &mut [u8], dir: &[u8]) -> Option<usize> {
    let name = super::file::SPARE_NAME.as_bytes();
    let end = dir.len() + 1 + name.len();
    out.get_mut(..=end)?;
    out[..dir.len()].copy_from_slice(dir);
    out[dir.len()] = b'/';
    out[dir.len() + 1..end].copy_from_slice(name);
    out[end] = 0;
    Some(end)
}

/// Replaces the inherited mapping with private zeroed memory.
///
/// # Safety
///
/// As for [`switch`].
unsafe fn fall_back(shard: &OwnShard) -> bool {
    // Still the parent's file: count this child there, where the parent's
    // next scrape sees it.
    let slot = FALLBACK_SLOT.load(Ordering::Relaxed);
    if !slot.is_null() {
        // SAFETY: a counter slot inside the inherited mapping.
        unsafe { (*slot).fetch_add(1, Ordering::Relaxed) };
    }
    unsafe {
        libc::mmap(
            shard.base.cast(),
            shard.len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        );
    }
    false
}

/// `pwrite` until done.
///
/// # Safety
///
/// `data` must address `len` readable bytes.
unsafe fn write_all(fd: libc::c_int, mut data: *const u8, mut len: usize, mut offset: usize) -> bool {
    while len > 0 {
        // SAFETY: per the contract.
        let n = unsafe { libc::pwrite(fd, data.cast(), len, offset as libc::off_t) };
        if n < 0 {
            // SAFETY: errno is thread-local and async-signal-safe to read.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return false;
        }
        let n = n as usize;
        // SAFETY: n <= len.
        data = unsafe { data.add(n) };
        len -= n;
        offset += n;
    }
    true
}

/// Writes `<dir>/p<pid>-<nonce as 16 hex>.promshard` and a NUL into `out`
/// without allocating (with `temp`, the temporary name
/// `<dir>/.p…promshard.tmp`); returns the index of the NUL. Same names as
/// [`super::file::create_own`].
fn shard_path(out: &mut [u8], dir: &[u8], pid: u32, nonce: u64, temp: bool) -> Option<usize> {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        let end = at + bytes.len();
        out.get_mut(at..end)?.copy_from_slice(bytes);
        at = end;
        Some(())
    };
    put(dir)?;
    put(if temp { &b"/.p"[..] } else { &b"/p"[..] })?;
    let mut digits = [0u8; 10];
    let mut n = pid;
    let mut count = 0;
    loop {
        digits[9 - count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(&digits[10 - count..])?;
    put(b"-")?;
    let mut hex = [0u8; 16];
    for (i, h) in hex.iter_mut().enumerate() {
        *h = b"0123456789abcdef"[((nonce >> (60 - 4 * i)) & 0xf) as usize];
    }
    put(&hex)?;
    put(if temp { &b".promshard.tmp\0"[..] } else { &b".promshard\0"[..] })?;
    Some(at - 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fork_path_matches_own_name() {
        let mut out = [0u8; 128];
        let end = super::shard_path(&mut out, b"/tmp/d", 4021, 0xab, false).unwrap();
        let path = std::str::from_utf8(&out[..end]).unwrap();
        let name = super::super::file::own_name(4021, 0xab);
        assert_eq!(path, format!("/tmp/d/{name}"));
        assert_eq!(out[end], 0);
        let end = super::shard_path(&mut out, b"/tmp/d", 4021, 0xab, true).unwrap();
        let temp = std::str::from_utf8(&out[..end]).unwrap();
        assert_eq!(temp, format!("/tmp/d/.{name}{}", super::super::file::TEMP_SUFFIX));
        assert!(super::shard_path(&mut [0u8; 8], b"/tmp/d", 1, 1, false).is_none());
    }
}
