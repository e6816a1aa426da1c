//! The standard `process_*` metrics, read from `/proc` at scrape time
//! (Linux only; elsewhere the collector writes nothing).

use crate::collector::{Collector, MetricWriter};

/// Writes `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`
/// and `process_start_time_seconds` for the scraped process. A value that
/// cannot be read is left out; the rest of the scrape is unaffected.
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        #[cfg(target_os = "linux")]
        linux::collect(out);
        #[cfg(not(target_os = "linux"))]
        let _ = out;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::MetricWriter;

    /// The fields of `/proc/self/stat` we use.
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
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `fields[0]` is field 3 (state) of proc(5).
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            ticks_cpu: field(14)? + field(15)?,
            start_ticks: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }

    fn boot_time() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
    }

    fn sysconf(name: libc::c_int) -> Option<u64> {
        // SAFETY: sysconf has no preconditions.
        let v = unsafe { libc::sysconf(name) };
        (v > 0).then_some(v as u64)
    }

    pub(super) fn collect(out: &mut MetricWriter<'_>) {
        let stat = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| parse_stat(&s));
        let ticks = sysconf(libc::_SC_CLK_TCK);
        let page = sysconf(libc::_SC_PAGESIZE);
        if let (Some(stat), Some(ticks)) = (&stat, ticks) {
            out.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
                .unit("seconds")
                .sample(&[], stat.ticks_cpu as f64 / ticks as f64);
        }
        if let Some(fds) = std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count) {
            out.gauge("process_open_fds", "Number of open file descriptors.").sample(&[], fds as f64);
        }
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `limit` is a valid rlimit to write into.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            out.gauge("process_max_fds", "Maximum number of open file descriptors.").sample(&[], limit.rlim_cur as f64);
        }
        if let (Some(stat), Some(page)) = (&stat, page) {
            out.gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
                .unit("bytes")
                .sample(&[], (stat.rss_pages * page) as f64);
        }
        if let (Some(stat), Some(ticks), Some(boot)) = (&stat, ticks, boot_time()) {
            out.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.")
                .unit("seconds")
                .sample(&[], boot as f64 + stat.start_ticks as f64 / ticks as f64);
        }
        if let Some(stat) = &stat {
            out.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.")
                .unit("bytes")
                .sample(&[], stat.vsize as f64);
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
        }
    }
}
