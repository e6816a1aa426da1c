//! The standard `process_*` metrics, read from `/proc` at scrape time
//! (Linux only; elsewhere nothing is written).
//!
//! One process alone reports its own values, unlabelled. In multiprocess
//! mode a scrape reports every live process of the shard directory
//! instead, each under a `pid` label ([`Workers`]): the scraping process
//! reads the others' `/proc/<pid>` files, so nothing runs in the workers
//! for it, and every scrape returns the same series whichever process
//! answers it (an unlabelled series would hold whichever process answered,
//! and flip between them from one scrape to the next).
//!
//! Why `pid` and not a bounded worker-slot label: the pid is the one name
//! of a worker that every scraper (any worker, the `promshard` CLI beside
//! them) reads from the directory alone and agrees on, and the lock on a
//! shard proves it (below). A slot number would need an assignment every
//! scraper agrees on, which means shared state written by someone, and a
//! slot reused by a replacement worker would splice two processes into one
//! series (its CPU counter would go down, its start time jump). The cost
//! is churn: each worker that ever lived leaves its own few series, which
//! Prometheus marks stale when the worker goes.

use std::collections::HashMap;
use std::path::Path;

use crate::collector::{Collector, MetricWriter, Target};
use crate::encode::format::Exposition;
use crate::encode::plan::SampleFn;
use crate::merge::read::{Shard, ShardCache};
use crate::shard::OwnShard;

/// Writes `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`
/// and `process_start_time_seconds` for the scraped process. A value that
/// cannot be read is left out; the rest of the scrape is unaffected.
///
/// In multiprocess mode (`PROMSHARD_DIR`) it writes nothing: the merged
/// scrape carries these families for every live process of the
/// directory, this one included, each with a `pid` label.
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        // The merge wrote them, this process's among them.
        if crate::shard::own().is_some() {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(stats) = linux::Stats::read(None, linux::boot_time()) {
            linux::write(out, &[(None, stats)]);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = out;
    }
}

/// The process statistics of the live processes of a shard directory,
/// read by the scrape that merged it; written with a `pid` label.
#[derive(Default)]
pub(crate) struct Workers {
    /// By pid, ascending.
    #[cfg(target_os = "linux")]
    stats: Vec<(u32, linux::Stats)>,
    /// Sample names of the directory's declared metrics: a metric some
    /// binary declared under a `process_*` name is kept, and ours left out.
    declared: HashMap<String, usize>,
}

impl Workers {
    /// Reads the statistics of the processes whose live shards are among
    /// `shards` (merged from `dir` through `cache`, where this process may
    /// write `own`).
    ///
    /// A shard's pid is trusted only while its lock proves it: the lock is
    /// asked for its holder before and after the process's files are read,
    /// and a process that held it at both moments existed throughout, so
    /// its pid cannot have been reused by another process in between (pids
    /// are reused quickly where `pid_max` is small). A worker that dies
    /// meanwhile, or one in another pid namespace, is left out of this
    /// scrape; so is one whose files this process has no descriptor left
    /// to open, and that is added to `cache`'s problems
    /// (`reason="descriptors"`).
    ///
    /// The descriptors `cache` keeps for a live shard are used rather than
    /// opening the files again: the shard's, for the lock, and the
    /// process's `stat` file and `fd` directory, kept there while
    /// descriptors are plentiful (and this process's own `stat` file).
    /// A scrape out of descriptors so still reads every process it read
    /// before.
    pub(crate) fn read(dir: &Path, own: Option<&OwnShard>, shards: &[Shard], cache: &mut ShardCache) -> Workers {
        let mut workers = Workers::default();
        for shard in shards {
            for entry in &shard.schema.entries {
                if entry.desc.name.starts_with("process_") {
                    let name = entry.desc.name.to_owned();
                    workers.declared.insert(name.clone(), 0);
                    workers.declared.insert(format!("{name}{}", entry.desc.kind.sample_suffix()), 0);
                }
            }
        }
        #[cfg(target_os = "linux")]
        {
            let siblings = crate::linked::siblings();
            let boot = linux::boot_time();
            for shard in shards.iter().filter(|s| s.live && !s.archive) {
                let path = dir.join(&shard.name);
                // This process (its own shard, or another promshard
                // version's in it): alive by definition, and its shard
                // must never be opened by name (closing that descriptor
                // would drop our lock).
                let this = own.is_some_and(|o| o.file_name() == shard.name) || siblings.contains(&path);
                let stats = if this {
                    linux::read_self(boot, cache.own_stat())
                } else {
                    linux::read_locked(&path, shard.pid, boot, cache.kept(&path, shard))
                };
                match stats {
                    Ok(Some(stats)) => workers.stats.push((shard.pid, stats)),
                    Ok(None) => {}
                    Err(e) => cache.problems.push((path, e)),
                }
            }
            workers.stats.sort_by_key(|(pid, _)| *pid);
            // Two versions' shards of one process are one process.
            workers.stats.dedup_by_key(|(pid, _)| *pid);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (dir, own, cache);
        workers
    }

    /// Appends the families as `x` writes them.
    pub(crate) fn encode(&self, x: Exposition, out: &mut Vec<u8>) {
        self.write(&mut MetricWriter::new(Target::output(out, x), &self.declared));
    }

    /// Calls `f(sample name, labels, value)` for every sample.
    pub(crate) fn visit(&self, f: &mut SampleFn<'_>) {
        let mut each = |name: &str, labels: &[(&str, &str)], value: f64| f(name, labels, value);
        self.write(&mut MetricWriter::new(Target::Samples(&mut each), &self.declared));
    }

    fn write(&self, out: &mut MetricWriter<'_>) {
        #[cfg(target_os = "linux")]
        {
            let pids: Vec<String> = self.stats.iter().map(|(pid, _)| pid.to_string()).collect();
            let labelled: Vec<_> = pids.iter().zip(&self.stats).map(|(pid, (_, s))| (Some(pid.as_str()), *s)).collect();
            linux::write(out, &labelled);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = out;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    use super::MetricWriter;
    use crate::merge::read::{KeptFile, KeptFor};
    use crate::shard::file;
    use crate::shard::format::ShardError;

    /// The fields of `/proc/<pid>/stat` we use.
    pub(super) struct Stat {
        pub(super) ticks_cpu: u64,
        pub(super) start_ticks: u64,
        pub(super) vsize: u64,
        pub(super) rss_pages: u64,
    }

    /// Parses `/proc/<pid>/stat`. The command name (field 2) can hold
    /// spaces and parentheses, so fields are counted from its last `)`.
    pub(super) fn parse_stat(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        // The first is field 3 (state) of proc(5); fields are numbered
        // from 1, so field n is `nth(n - 3)` from the start.
        let mut fields = rest.split_ascii_whitespace();
        let mut number = |skip: usize| fields.nth(skip)?.parse::<u64>().ok();
        let (utime, stime) = (number(14 - 3)?, number(0)?);
        let start_ticks = number(22 - 16)?;
        let (vsize, rss_pages) = (number(0)?, number(0)?);
        Some(Stat { ticks_cpu: utime + stime, start_ticks, vsize, rss_pages })
    }

    /// The soft limit on open files from `/proc/<pid>/limits`
    /// (`unlimited` as `RLIM_INFINITY`, as `getrlimit` reports it).
    pub(super) fn parse_max_files(text: &str) -> Option<u64> {
        let soft = text.lines().find_map(|l| l.strip_prefix("Max open files"))?.split_whitespace().next()?;
        if soft == "unlimited" { Some(libc::RLIM_INFINITY) } else { soft.parse().ok() }
    }

    /// When the machine booted, in seconds since the epoch, as `btime` in
    /// `/proc/stat` says it. Asked once per scrape, not per process; not
    /// once for good: it moves when the clock is stepped.
    ///
    /// The kernel makes `btime` as the whole seconds of the real-time
    /// clock less the boot-time clock (`getboottime64`; a time namespace
    /// shifts both alike), and those two clocks are read here without a
    /// system call, where `/proc/stat` is long on a machine with many CPUs
    /// and interrupts (14 µs on 2 CPUs). The boot-time clock is never
    /// stepped, so reading it either side of the real-time clock bounds
    /// the difference at that instant; only when the bounds straddle a
    /// whole second (a read preempted, a difference a hair from a second)
    /// is `/proc/stat` asked.
    pub(super) fn boot_time() -> Option<u64> {
        boot_time_from_clocks().or_else(boot_time_from_stat)
    }

    /// `btime` from the clocks, or `None` when they cannot tell.
    fn boot_time_from_clocks() -> Option<u64> {
        let now = |clock| {
            let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: a valid timespec to write into.
            (unsafe { libc::clock_gettime(clock, &mut t) } == 0)
                .then(|| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec))
        };
        let (early, real, late) = (now(libc::CLOCK_BOOTTIME)?, now(libc::CLOCK_REALTIME)?, now(libc::CLOCK_BOOTTIME)?);
        // A microsecond either side for the clocks' own rounding.
        let (low, high) = (real - late - 1_000, real - early + 1_000);
        let second = |ns: i128| ns.div_euclid(1_000_000_000);
        (low >= 0 && second(low) == second(high)).then(|| u64::try_from(second(low)).ok()).flatten()
    }

    /// `btime` from `/proc/stat`.
    fn boot_time_from_stat() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
    }

    fn sysconf(name: libc::c_int) -> Option<u64> {
        // SAFETY: sysconf has no preconditions.
        let v = unsafe { libc::sysconf(name) };
        (v > 0).then_some(v as u64)
    }

    /// One process's values, each `None` when it could not be read.
    #[derive(Clone, Copy)]
    pub(super) struct Stats {
        cpu_seconds: Option<f64>,
        open_fds: Option<f64>,
        max_fds: Option<f64>,
        resident_bytes: Option<f64>,
        start_time: Option<f64>,
        virtual_bytes: Option<f64>,
    }

    impl Stats {
        /// Reads this process's values (`None`), or process `pid`'s; `None`
        /// when its `stat` file cannot be read (it is gone). `boot` is
        /// [`boot_time`].
        pub(super) fn read(pid: Option<u32>, boot: Option<u64>) -> Option<Stats> {
            let dir = match pid {
                None => "/proc/self".to_owned(),
                Some(pid) => format!("/proc/{pid}"),
            };
            let stat = read_stat(&File::open(format!("{dir}/stat")).ok()?)?;
            Some(Stats::with(stat, open_fds(&dir, None), pid, &dir, boot))
        }

        /// The values of the process of `/proc/<pid>` (`dir`; this process
        /// for `None`) whose `stat` file said `stat`, with `open_fds`.
        fn with(stat: Stat, open_fds: Option<u64>, pid: Option<u32>, dir: &str, boot: Option<u64>) -> Stats {
            let ticks = sysconf(libc::_SC_CLK_TCK);
            let page = sysconf(libc::_SC_PAGESIZE);
            // Cheaper than reading `limits` (a fifth of the cost of a
            // whole worker's values); the same user may ask.
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: `limit` is a valid rlimit to write into; pid 0 is us.
            let asked = unsafe {
                libc::prlimit(pid.map_or(0, |p| p as libc::pid_t), libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit)
            };
            let max_fds = if asked == 0 {
                Some(limit.rlim_cur)
            } else {
                std::fs::read_to_string(format!("{dir}/limits")).ok().as_deref().and_then(parse_max_files)
            };
            Stats {
                cpu_seconds: ticks.map(|t| stat.ticks_cpu as f64 / t as f64),
                open_fds: open_fds.map(|n| n as f64),
                max_fds: max_fds.map(|m| m as f64),
                resident_bytes: page.map(|p| (stat.rss_pages * p) as f64),
                start_time: ticks.zip(boot).map(|(t, boot)| boot as f64 + stat.start_ticks as f64 / t as f64),
                virtual_bytes: Some(stat.vsize as f64),
            }
        }
    }

    /// How many descriptors the process of `/proc/<pid>` (`dir`) has open.
    /// Since Linux 6.2 the size of its `fd` directory says so, for one
    /// `stat` instead of reading the directory (a third of the cost of a
    /// whole worker's values). Another user's process, or one that made
    /// itself undumpable, keeps its descriptor table to itself.
    ///
    /// Given `kept`, the directory is asked through the descriptor kept
    /// there (an `fstat`, no path to look up), or opened and kept there
    /// for the next scrape if the budget has room. Like a kept `stat`
    /// file ([`read_locked`]), it answers for the process it was opened
    /// for only.
    fn open_fds(dir: &str, kept: Option<&mut Option<KeptFile>>) -> Option<u64> {
        let size = |meta: std::io::Result<std::fs::Metadata>| meta.ok().map(|m| m.len()).filter(|n| *n > 0);
        let mut kept = kept;
        if let Some(slot) = kept.as_deref_mut() {
            if let Some(n) = slot.as_ref().and_then(|f| size(f.file().metadata())) {
                return Some(n);
            }
            *slot = None;
        }
        let fd = format!("{dir}/fd");
        match std::fs::metadata(&fd) {
            Ok(meta) if meta.len() > 0 => {
                if let Some(slot) = kept {
                    *slot = File::open(&fd).ok().and_then(KeptFile::keep);
                }
                Some(meta.len())
            }
            // Older kernels say 0; so would a process with no descriptor
            // at all, which the count below then confirms.
            Ok(_) => std::fs::read_dir(&fd).ok().map(|d| d.count() as u64),
            Err(_) => None,
        }
    }

    /// Parses a `stat` file, read whole from its start with one `pread`:
    /// procfs makes the text afresh for each read from offset 0, so a
    /// descriptor kept open reads the process's values of the moment.
    fn read_stat(file: &File) -> Option<Stat> {
        // A stat line is a few hundred bytes; a read that fills the
        // buffer or does not end the line may be cut short.
        let mut buf = [0u8; 4096];
        // SAFETY: a valid descriptor and a buffer of that length.
        let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).ok().filter(|n| (1..buf.len()).contains(n) && buf[n - 1] == b'\n')?;
        parse_stat(core::str::from_utf8(&buf[..n]).ok()?)
    }

    /// Opens `path` (a `/proc` file); `Ok(None)` when it is not there
    /// (the process is gone) or not ours to read, `Err` when this process
    /// has no descriptor left to open it with.
    fn open_proc(path: &str) -> Result<Option<File>, ShardError> {
        match File::open(path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => Err(ShardError::Descriptors),
            Err(_) => Ok(None),
        }
    }

    /// This process's values, its `stat` file read through the descriptor
    /// kept in `kept` (else opened and kept there, budget permitting; a
    /// forked child finds it empty, see [`ShardCache::own_stat`]); `Err`
    /// when it has no descriptor left to read them with (that is counted,
    /// not taken for an exit).
    ///
    /// [`ShardCache::own_stat`]: crate::merge::read::ShardCache::own_stat
    pub(super) fn read_self(boot: Option<u64>, kept: &mut Option<KeptFile>) -> Result<Option<Stats>, ShardError> {
        let dir = "/proc/self";
        let stat = match kept.as_ref().and_then(|f| read_stat(f.file())) {
            Some(stat) => stat,
            None => {
                *kept = None;
                let Some(file) = open_proc("/proc/self/stat")? else { return Ok(None) };
                let Some(stat) = read_stat(&file) else { return Ok(None) };
                *kept = KeptFile::keep(file);
                stat
            }
        };
        Ok(Some(Stats::with(stat, open_fds(dir, None), None, dir, boot)))
    }

    /// The values of the live process whose shard is at `path` and says
    /// it was made by `pid`, read between two questions to the shard's
    /// lock that both name `pid` as its holder; `Err` only when this
    /// process has no descriptor left to ask or read with.
    ///
    /// `kept` is what the scrape's cache keeps open for that shard: its
    /// descriptor answers for the lock (the same file the scrape merged,
    /// instead of opening it again), and the process's `stat` file and
    /// `fd` directory are read through the descriptors kept beside it,
    /// else opened and, once the process is proved alive and the budget
    /// has room, kept there for the next scrape.
    ///
    /// A kept `/proc/<pid>` descriptor refers to the process it was opened
    /// for, not to its number: once that process is reaped it reads
    /// `ESRCH`, never another process's values, even those of one given
    /// the same pid since. It is then dropped, and the file opened by name
    /// as if nothing had been kept (the lock, asked after, decides whose
    /// that is).
    pub(super) fn read_locked(
        path: &Path,
        pid: u32,
        boot: Option<u64>,
        kept: Option<KeptFor<'_>>,
    ) -> Result<Option<Stats>, ShardError> {
        let (kept_shard, mut slots) = match kept {
            Some(KeptFor { shard, stat, fds }) => (shard, Some((stat, fds))),
            None => (None, None),
        };
        let opened;
        let shard = match kept_shard {
            Some(shard) => shard,
            None => match file::open_for_read(path) {
                Ok(file) => {
                    opened = file;
                    &opened
                }
                Err(ShardError::Descriptors) => return Err(ShardError::Descriptors),
                // Gone since it was merged: found dead next time.
                Err(_) => return Ok(None),
            },
        };
        // The lock names its holder as this process's pid namespace sees
        // it; a holder we cannot see (0) or know by another number is
        // one whose /proc entry would not be its own.
        let held_by_pid = || file::holder(shard).ok().flatten() == Some(pid);
        if !held_by_pid() {
            return Ok(None);
        }
        let dir = format!("/proc/{pid}");
        let kept_stat = slots.as_mut().and_then(|(kept, _)| {
            let stat = kept.as_ref().and_then(|f| read_stat(f.file()));
            if stat.is_none() {
                // Gone with its process (or never kept): its place in the
                // budget is free again.
                **kept = None;
            }
            stat
        });
        let (stat, opened) = match kept_stat {
            Some(stat) => (Some(stat), None),
            None => match open_proc(&format!("{dir}/stat"))? {
                Some(file) => (read_stat(&file), Some(file)),
                None => (None, None),
            },
        };
        let stats = stat.map(|stat| {
            let fds = open_fds(&dir, slots.as_mut().map(|(_, fds)| &mut **fds));
            Stats::with(stat, fds, Some(pid), &dir, boot)
        });
        let alive = stats.is_some() && held_by_pid();
        if let Some((stat, fds)) = slots {
            if !alive {
                // Dead, or never the process we took it for: nothing of
                // it is kept.
                (*stat, *fds) = (None, None);
            } else if let Some(file) = opened {
                *stat = KeptFile::keep(file);
            }
        }
        Ok(if alive { stats } else { None })
    }

    /// Writes the six families, one sample per process: unlabelled for
    /// `None`, else with that `pid` label.
    pub(super) fn write(out: &mut MetricWriter<'_>, processes: &[(Option<&str>, Stats)]) {
        type Field = fn(&Stats) -> Option<f64>;
        let families: [(&str, &str, Option<&str>, bool, Field); 6] = [
            ("process_cpu_seconds", "Total user and system CPU time spent in seconds.", Some("seconds"), true, |s| {
                s.cpu_seconds
            }),
            ("process_max_fds", "Maximum number of open file descriptors.", None, false, |s| s.max_fds),
            ("process_open_fds", "Number of open file descriptors.", None, false, |s| s.open_fds),
            ("process_resident_memory_bytes", "Resident memory size in bytes.", Some("bytes"), false, |s| {
                s.resident_bytes
            }),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Some("seconds"),
                false,
                |s| s.start_time,
            ),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", Some("bytes"), false, |s| {
                s.virtual_bytes
            }),
        ];
        for (name, help, unit, counter, field) in families {
            let values: Vec<(Option<&str>, f64)> =
                processes.iter().filter_map(|(pid, stats)| Some((*pid, field(stats)?))).collect();
            // A family with no value is left out, not written empty.
            if values.is_empty() {
                continue;
            }
            let mut family = if counter { out.counter(name, help) } else { out.gauge(name, help) };
            if let Some(unit) = unit {
                family = family.unit(unit);
            }
            for (pid, value) in values {
                match pid {
                    Some(pid) => family.sample(&[("pid", pid)], value),
                    None => family.sample(&[], value),
                };
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn stat_with_awkward_command_name() {
            let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 1 0 999 1048576 256 18446744073709551615";
            let stat = super::parse_stat(line).unwrap();
            assert_eq!(stat.ticks_cpu, 200);
            assert_eq!(stat.start_ticks, 999);
            assert_eq!(stat.vsize, 1048576);
            assert_eq!(stat.rss_pages, 256);
            assert!(super::parse_stat("garbage").is_none());
            // Cut short before field 24.
            assert!(super::parse_stat(&line[..line.rfind(' ').unwrap()]).is_some());
            assert!(super::parse_stat(&line[..line.rfind(" 256").unwrap()]).is_none());
        }

        #[test]
        fn max_open_files_from_limits() {
            let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                          Max processes             127436               127436               processes \n\
                          Max open files            1024                 524288               files     \n";
            assert_eq!(super::parse_max_files(limits), Some(1024));
            let unlimited = "Max open files            unlimited            unlimited            files\n";
            assert_eq!(super::parse_max_files(unlimited), Some(libc::RLIM_INFINITY));
            assert_eq!(super::parse_max_files("Max processes 5 5 processes\n"), None);
        }

        #[test]
        fn boot_time_from_the_clocks_is_btime() {
            // Whenever the clocks can tell, they tell what /proc/stat
            // says; and they nearly always can.
            let mut told = 0;
            for _ in 0..2000 {
                let before = super::boot_time_from_stat();
                let clocks = super::boot_time_from_clocks();
                let after = super::boot_time_from_stat();
                assert!(before.is_some());
                // (A clock stepped meanwhile moves btime.)
                if clocks.is_some() && before == after {
                    assert_eq!(clocks, before);
                    told += 1;
                }
            }
            assert!(told > 1900, "the clocks told btime {told} times in 2000");
        }

        #[test]
        fn another_process_reads_like_this_one() {
            // This process, read as another would read it.
            let boot = super::boot_time();
            let me = super::Stats::read(Some(std::process::id()), boot).unwrap();
            let mine = super::Stats::read(None, boot).unwrap();
            assert_eq!(me.start_time, mine.start_time);
            assert_eq!(me.max_fds, mine.max_fds);
            assert!(me.open_fds.unwrap() > 0.0 && me.resident_bytes.unwrap() > 0.0);
            assert!(super::Stats::read(Some(u32::MAX), boot).is_none(), "no such process");
        }
    }
}
