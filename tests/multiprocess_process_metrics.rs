//! `process_*` metrics in multiprocess mode: any process's scrape carries
//! every live process of the directory under a `pid` label, read from
//! `/proc` by the scraper; each worker's own load shows under its own pid
//! (CPU burnt, descriptors opened, memory touched, its file limit), a
//! killed worker drops out even while it lingers unreaped as a zombie,
//! and no unlabelled series is left to flip between workers.

mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::{Worker, encode_dir_text, isolated, own_text, parse_samples, value_in};
use promshard::{Counter, metric};

/// Commands handled.
#[metric]
static COMMANDS_TOTAL: Counter;

const FAMILIES: [&str; 6] = [
    "process_cpu_seconds_total",
    "process_max_fds",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_virtual_memory_bytes",
];

/// Burns CPU time in this thread until it has used `seconds` of it.
fn burn(seconds: f64) {
    let used = || {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    };
    let start = used();
    let mut x = 0u64;
    while used() - start < seconds {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn handle(command: &str) -> String {
    COMMANDS_TOTAL.inc();
    match command {
        "burn" => burn(0.4),
        "fds" => {
            for _ in 0..50 {
                std::mem::forget(std::fs::File::open("/dev/null").unwrap());
            }
        }
        "memory" => {
            // Written, so resident (a memset: little CPU time).
            std::mem::forget(std::hint::black_box(vec![1u8; 64 << 20]));
        }
        "limit" => harness::set_rlimit(libc::RLIMIT_NOFILE, 777, harness::get_rlimit(libc::RLIMIT_NOFILE).1),
        "scrape" => return own_text(),
        other => panic!("unknown command {other:?}"),
    }
    "done".into()
}

/// The pid labels of family `name` in `text`; panics on an unlabelled
/// sample or another label.
fn pids(text: &str, name: &str) -> BTreeSet<i32> {
    parse_samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| match &s.labels[..] {
            [(key, pid)] if key == "pid" => pid.parse().unwrap(),
            other => panic!("{name} with labels {other:?}, not one pid:\n{text}"),
        })
        .collect()
}

fn value(text: &str, name: &str, pid: i32) -> f64 {
    value_in(text, name, &[("pid", &pid.to_string())]).unwrap_or_else(|| panic!("no {name} for {pid}:\n{text}"))
}

/// User and system CPU time of `pid`, from `/proc/<pid>/stat`.
fn kernel_cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // After the name: state is field 3 of the line, utime 14, stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Whether `pid` is a zombie: exited, its files closed, not yet reaped.
fn is_zombie(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').is_some_and(|at| stat[at + 1..].trim_start().starts_with('Z'))
}

fn every_live_process_under_its_pid() {
    let dir = harness::TempDir::new("process-metrics");
    promshard::multiprocess::init(dir.path()).unwrap();
    COMMANDS_TOTAL.inc();
    let me = std::process::id() as i32;
    let wait = Duration::from_secs(30);
    let mut busy = Worker::spawn(handle);
    let mut heavy = Worker::spawn(handle);
    for command in ["burn", "fds", "limit"] {
        busy.ask(command, wait);
    }
    heavy.ask("memory", wait);
    let everyone: BTreeSet<i32> = [me, busy.pid, heavy.pid].into();

    let text = own_text();
    for family in FAMILIES {
        assert_eq!(pids(&text, family), everyone, "{family}:\n{text}");
    }
    let cpu = |text: &str, pid| value(text, "process_cpu_seconds_total", pid);
    // Clock ticks are 10 ms; the worker burnt 400 ms in one thread.
    assert!(cpu(&text, busy.pid) >= 0.38, "{text}");
    // Each pid's value is that process's own CPU time, as the kernel
    // counts it, read just before and after a scrape (a fixed margin
    // between workers does not hold on a loaded machine, where touching
    // memory can cost as much CPU as the busy loop).
    let before: Vec<f64> = everyone.iter().map(|&pid| kernel_cpu_seconds(pid)).collect();
    let text = own_text();
    let after: Vec<f64> = everyone.iter().map(|&pid| kernel_cpu_seconds(pid)).collect();
    for (i, &pid) in everyone.iter().enumerate() {
        let scraped = cpu(&text, pid);
        assert!(
            before[i] - 0.011 <= scraped && scraped <= after[i] + 0.011,
            "pid {pid}: {} ≤ {scraped} ≤ {}",
            before[i],
            after[i]
        );
    }
    let fds = |pid| value(&text, "process_open_fds", pid);
    // 50 opened, less the two pipe ends the later worker inherited.
    assert!(fds(busy.pid) >= fds(heavy.pid) + 45.0, "{text}");
    assert_eq!(value(&text, "process_max_fds", busy.pid), 777.0);
    assert_eq!(value(&text, "process_max_fds", heavy.pid), harness::get_rlimit(libc::RLIMIT_NOFILE).0 as f64);
    let rss = |pid| value(&text, "process_resident_memory_bytes", pid);
    assert!(rss(heavy.pid) >= rss(busy.pid) + 60.0 * 1024.0 * 1024.0, "{text}");
    let started = |pid| value(&text, "process_start_time_seconds", pid);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started(me) <= started(busy.pid) && started(busy.pid) <= started(heavy.pid) + 0.02, "{text}");
    assert!((now - 120.0..now + 2.0).contains(&started(me)), "{text}");

    // Whichever process answers, and a reader of the directory, report
    // the same processes, and the same start times.
    let theirs = harness::unescape(&heavy.ask("scrape", wait));
    let read = encode_dir_text(dir.path());
    for text in [&theirs, &read] {
        assert_eq!(pids(text, "process_start_time_seconds"), everyone, "{text}");
        for pid in &everyone {
            assert_eq!(started(*pid), value(text, "process_start_time_seconds", *pid));
        }
    }

    // Killed and not yet reaped: its /proc entry is still there, but its
    // lock is free, so it is gone from the scrape.
    // SAFETY: our own child.
    unsafe { libc::kill(heavy.pid, libc::SIGKILL) };
    let deadline = Instant::now() + wait;
    while !is_zombie(heavy.pid) {
        assert!(Instant::now() < deadline, "the killed worker never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = own_text();
    for family in FAMILIES {
        assert_eq!(pids(&text, family), [me, busy.pid].into(), "{family}:\n{text}");
    }
    heavy.kill();
    busy.exit(wait).expect("the worker exits");
    let text = own_text();
    assert_eq!(pids(&text, "process_open_fds"), [me].into(), "{text}");
    assert_eq!(value_in(&text, "commands_total", &[]), Some(6.0), "{text}");
}

#[test]
fn every_live_process_is_scraped_under_its_pid() {
    isolated("every_live_process_is_scraped_under_its_pid", Duration::from_secs(120), every_live_process_under_its_pid);
}
