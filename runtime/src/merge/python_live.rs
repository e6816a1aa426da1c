//! Whether the Python process that writes a `.db` file is alive, with no
//! `child_exit` hook and without trusting pids.
//!
//! prometheus_client names each file after its writer's pid
//! (`counter_<pid>.db`) and keeps it open and mapped for the writer's
//! whole life (`MmapedDict` holds both). A pid alone proves nothing: the
//! writer may be dead and its pid given to another process. So a file is
//! live only when the process its name names holds that very file (same
//! device and inode) among its open descriptors (`/proc/<pid>/fd`) or its
//! mappings (`/proc/<pid>/maps`). Three answers follow:
//!
//! - no such process (or a zombie): the writer is dead, for good, until a
//!   new process is given that pid;
//! - a process that does not hold the file: its writer is dead and the pid
//!   was reused; but that process may be a new Python worker that has not
//!   opened its files yet (prometheus_client reopens `counter_<pid>.db`,
//!   appending, when a new worker gets an old pid), so this answer is only
//!   good for the moment;
//! - a process that holds it: live, for as long as that process (pid and
//!   start time, its incarnation) lives.
//!
//! What each process holds is read once per incarnation and again only
//! when a file of its pid is not among what it held, and at most once per
//! scrape; between, a live pid costs one read of `/proc/<pid>/stat` per
//! scrape. Pids given out since the last scrape are read from
//! `/proc/loadavg` (the last pid the kernel handed out; pids are handed
//! out in increasing order, wrapping at `pid_max`), so a dead file is
//! looked at again only when its pid may have been handed to a new
//! process, not at every scrape.
//!
//! The reader must share the writers' pid namespace (the same container,
//! or Kubernetes' `shareProcessNamespace`): it sees their `/proc`. Until
//! it has seen one file held by its writer it proves nothing dead, and the
//! directory is read the way Python's own collector reads it. Elsewhere
//! than on Linux there is no `/proc` to ask: every file is treated that
//! way, as live.

use std::collections::{HashMap, HashSet};

use crate::shard::file::Identity;

/// What `/proc/<pid>/stat` says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Its parent's pid.
    pub(crate) ppid: u32,
    /// Clock ticks after boot at which it started: with the pid, this
    /// names one process, whatever reused the pid after it.
    pub(crate) start_ticks: u64,
    /// Exited but not yet reaped: it holds nothing any more.
    pub(crate) zombie: bool,
}

/// What is known of the process that a file's name names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// The process holds the file: its writer is alive.
    Live,
    /// No process has that pid (or only a zombie): the writer is dead.
    Gone,
    /// A process has that pid but does not hold the file.
    Other,
    /// It cannot be told (no `/proc`, no permission): taken as alive, so
    /// that nothing live is ever taken for dead.
    Unknown,
}

struct Known {
    stat: ProcStat,
    /// The files this incarnation was seen holding.
    held: HashSet<Identity>,
    /// The scrape in which `held` was last read.
    read_in: u64,
}

/// The processes met while reading one directory, kept between scrapes.
#[derive(Default)]
pub(crate) struct Liveness {
    known: HashMap<u32, Known>,
    /// `/proc/<pid>/stat` as read in this scrape (`None`: no process).
    stats: HashMap<u32, Option<ProcStat>>,
    scrape: u64,
    /// The last pid handed out, as of the last scrape.
    cursor: Option<u32>,
}

impl Liveness {
    /// Starts a scrape: what was read of `/proc` is read again when asked.
    pub(crate) fn begin_scrape(&mut self) {
        self.stats.clear();
        self.scrape += 1;
    }

    /// The process `pid` as of this scrape.
    pub(crate) fn stat(&mut self, pid: u32) -> Result<Option<ProcStat>, ()> {
        if let Some(stat) = self.stats.get(&pid) {
            return Ok(*stat);
        }
        let stat = read_stat(pid)?;
        self.stats.insert(pid, stat);
        Ok(stat)
    }

    /// Whether process `pid` holds the file `identity`.
    pub(crate) fn holds(&mut self, pid: u32, identity: Identity) -> Holder {
        let stat = match self.stat(pid) {
            Ok(Some(stat)) => stat,
            Ok(None) => {
                self.known.remove(&pid);
                return Holder::Gone;
            }
            Err(()) => return Holder::Unknown,
        };
        if stat.zombie {
            return Holder::Gone;
        }
        let scrape = self.scrape;
        let known = self.known.entry(pid).or_insert_with(|| Known { stat, held: HashSet::new(), read_in: 0 });
        if known.stat.start_ticks != stat.start_ticks {
            // Another process under the same pid: nothing it held is known.
            *known = Known { stat, held: HashSet::new(), read_in: 0 };
        }
        known.stat = stat;
        if known.held.contains(&identity) {
            return Holder::Live;
        }
        if known.read_in == scrape {
            return Holder::Other;
        }
        let Ok(held) = held_files(pid) else { return Holder::Unknown };
        // Read after the stat: if the process is still the same one after
        // the read, what was read is what it holds.
        match read_stat(pid) {
            Ok(Some(after)) if after.start_ticks == stat.start_ticks => {}
            Ok(_) => return Holder::Gone,
            Err(()) => return Holder::Unknown,
        }
        known.held = held;
        known.read_in = scrape;
        if known.held.contains(&identity) { Holder::Live } else { Holder::Other }
    }

    /// The process `pid`'s parent and start, if it was seen alive.
    pub(crate) fn known(&self, pid: u32) -> Option<ProcStat> {
        self.known.get(&pid).map(|k| k.stat)
    }

    /// The pids handed out since the last call, as `(after, up_to)`: every
    /// pid in `after + 1 ..= up_to`, wrapping at `pid_max`. `None` when it
    /// cannot be told (the first call, or no `/proc/loadavg`): then any pid
    /// may be new.
    pub(crate) fn new_pids(&mut self) -> Option<(u32, u32)> {
        let now = last_pid()?;
        let before = self.cursor.replace(now)?;
        Some((before, now))
    }

    /// Forgets processes no file names any more (their pids).
    pub(crate) fn retain(&mut self, pids: &HashSet<u32>) {
        self.known.retain(|pid, _| pids.contains(pid));
    }
}

/// `/proc/<pid>/stat` read now (not as of the scrape).
pub(crate) fn stat_now(pid: u32) -> Result<Option<ProcStat>, ()> {
    read_stat(pid)
}

/// Whether process `pid` has children (`/proc/<pid>/task/<pid>/children`,
/// which needs `CONFIG_PROC_CHILDREN`); `None` when that cannot be read.
pub(crate) fn has_children(pid: u32) -> Option<bool> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    Some(!text.trim().is_empty())
}

/// Whether `pid` is in the pids handed out since `after` up to `up_to`.
pub(crate) fn handed_out(pid: u32, (after, up_to): (u32, u32)) -> bool {
    if after <= up_to { pid > after && pid <= up_to } else { pid > after || pid <= up_to }
}

/// When process `stat` started, in seconds since the epoch (to compare
/// with file times); `None` where that cannot be known.
pub(crate) fn started_at(stat: &ProcStat) -> Option<f64> {
    let boot = boot_time()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot + stat.start_ticks as f64 / hz as f64)
}

/// The wall-clock time of the boot, in seconds since the epoch, from the
/// real-time and boot-time clocks read now.
fn boot_time() -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        let read = |clock| {
            // SAFETY: clock_gettime with a valid timespec.
            let mut ts: libc::timespec = unsafe { core::mem::zeroed() };
            (unsafe { libc::clock_gettime(clock, &mut ts) } == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
        };
        Some(read(libc::CLOCK_REALTIME)? - read(libc::CLOCK_BOOTTIME)?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// `/proc/<pid>/stat`: `Ok(None)` when there is no such process, `Err`
/// when it cannot be told.
fn read_stat(pid: u32) -> Result<Option<ProcStat>, ()> {
    if !cfg!(target_os = "linux") {
        return Err(());
    }
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // ESRCH: the process went while it was read.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(_) => return Err(()),
    };
    parse_stat(&text).map(Some).ok_or(())
}

/// Parses `pid (comm) state ppid … starttime …`; `comm` may hold spaces
/// and parentheses, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After comm: state is field 3 of the line, ppid 4, starttime 22.
    let state = fields.first()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(ProcStat { ppid, start_ticks, zombie: matches!(*state, "Z" | "X" | "x") })
}

/// The files process `pid` holds open or mapped, by identity.
fn held_files(pid: u32) -> Result<HashSet<Identity>, ()> {
    use std::os::unix::fs::MetadataExt;
    let mut held = HashSet::new();
    let mut asked = false;
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        asked = true;
        for fd in fds.flatten() {
            // Follows the link to the open file itself, deleted or not.
            if let Ok(meta) = std::fs::metadata(fd.path()) {
                held.insert((meta.dev(), meta.ino()));
            }
        }
    }
    if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        asked = true;
        for line in maps.lines() {
            if let Some(identity) = parse_map_line(line) {
                held.insert(identity);
            }
        }
    }
    if asked { Ok(held) } else { Err(()) }
}

/// `start-end perms offset major:minor inode [path]`, with the device in
/// hexadecimal; anonymous mappings (inode 0) give nothing.
fn parse_map_line(line: &str) -> Option<Identity> {
    let mut fields = line.split_ascii_whitespace();
    let device = fields.nth(3)?;
    let inode: u64 = fields.next()?.parse().ok()?;
    let (major, minor) = device.split_once(':')?;
    let (major, minor) = (u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?);
    (inode != 0).then(|| (libc::makedev(major, minor), inode))
}

/// The last pid the kernel handed out in this pid namespace.
fn last_pid() -> Option<u32> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_ascii_whitespace().nth(4)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let line = "4242 (gunicorn: worker [app] (x)) S 4200 4242 4200 0 -1 4194560 1 0 0 0 5 3 0 0 20 0 1 0 \
                    987654 12345678 1234 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(ProcStat { ppid: 4200, start_ticks: 987654, zombie: false }));
        let zombie = "7 (py) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0 0";
        assert_eq!(parse_stat(zombie).map(|s| (s.zombie, s.start_ticks)), Some((true, 55)));
        assert_eq!(parse_stat("7 (py"), None);
        assert_eq!(parse_stat("7 (py) S"), None);
    }

    #[test]
    fn map_lines() {
        let line = "7f1c2a000000-7f1c2a010000 rw-s 00000000 00:2f 1234567    /tmp/prom/counter_42.db";
        assert_eq!(parse_map_line(line), Some((libc::makedev(0, 0x2f), 1234567)));
        assert_eq!(parse_map_line("7f1c2a000000-7f1c2a010000 rw-p 00000000 00:00 0 "), None);
        assert_eq!(parse_map_line("garbage"), None);
    }

    #[test]
    fn handed_out_wraps() {
        assert!(handed_out(11, (10, 20)) && handed_out(20, (10, 20)));
        assert!(!handed_out(10, (10, 20)) && !handed_out(21, (10, 20)));
        assert!(handed_out(4_000_000, (3_999_990, 305)) && handed_out(301, (3_999_990, 305)));
        assert!(!handed_out(500, (3_999_990, 305)));
        assert!(!handed_out(7, (7, 7)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_holds_what_it_opens() {
        use std::os::unix::fs::MetadataExt;
        let path = std::env::temp_dir().join(format!("promshard-live-{}.db", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let identity = (meta.dev(), meta.ino());
        let mut live = Liveness::default();
        live.begin_scrape();
        assert_eq!(live.holds(std::process::id(), identity), Holder::Live);
        drop(file);
        // Known held for the process's life: a Python writer never closes.
        live.begin_scrape();
        assert_eq!(live.holds(std::process::id(), identity), Holder::Live);
        let mut fresh = Liveness::default();
        fresh.begin_scrape();
        assert_eq!(fresh.holds(std::process::id(), identity), Holder::Other);
        // Pid 0 is never a process's.
        assert_eq!(fresh.holds(0, identity), Holder::Gone);
        let _ = std::fs::remove_file(&path);
        assert!(fresh.new_pids().is_none(), "the first call knows no earlier pid");
        assert!(fresh.new_pids().is_some());
    }
}
