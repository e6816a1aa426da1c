//! The per-worker `process_*` metrics read through descriptors the
//! scraper keeps open between scrapes (each live worker's
//! `/proc/<pid>/stat` and `/proc/<pid>/fd`, its own `stat`, the shard
//! files), attacked: values must be those of the moment, a descriptor
//! must never answer for another process (a forked child, a pid given to
//! a new process), none may leak over hundreds of workers come and gone,
//! and the descriptor budget holds with a low `RLIMIT_NOFILE`, where a
//! scraper out of descriptors still reads every process it kept and
//! counts the ones it cannot read. A worker killed between the two
//! questions to its lock is left out (the kill is placed there by a
//! tracer on the scraper's system calls), and a pid given to a new process
//! (placed there through `ns_last_pid` in a pid namespace of our own;
//! skipped where none can be made) never shows the old worker's values.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{TempDir, Worker, fork_child, isolated, own_text, parse_samples, value_in};
use promshard::{Counter, metric};

/// Things done, by every process of a scenario.
#[metric]
static KEPT_TOTAL: Counter;

const WAIT: Duration = Duration::from_secs(30);

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
    KEPT_TOTAL.inc();
    match command {
        "inc" => {}
        "burn" => burn(0.4),
        "fds" => {
            for _ in 0..50 {
                std::mem::forget(std::fs::File::open("/dev/null").unwrap());
            }
        }
        "memory" => std::mem::forget(std::hint::black_box(vec![1u8; 64 << 20])),
        "limit" => harness::set_rlimit(libc::RLIMIT_NOFILE, 777, harness::get_rlimit(libc::RLIMIT_NOFILE).1),
        "burn-and-scrape" => {
            burn(0.4);
            return own_text();
        }
        other => panic!("unknown command {other:?}"),
    }
    "done".into()
}

/// A process's values in one scrape.
#[derive(Clone, Copy, Debug, Default)]
struct Values {
    cpu: f64,
    fds: f64,
    max_fds: f64,
    rss: f64,
    start: f64,
}

/// The processes `text` reports, by pid; panics on an unlabelled
/// `process_*` sample.
fn processes(text: &str) -> BTreeMap<i32, Values> {
    let mut out: BTreeMap<i32, Values> = BTreeMap::new();
    for s in parse_samples(text).into_iter().filter(|s| s.name.starts_with("process_")) {
        let pid = match &s.labels[..] {
            [(key, pid)] if key == "pid" => pid.parse().unwrap(),
            other => panic!("{} with labels {other:?}:\n{text}", s.name),
        };
        let v = out.entry(pid).or_default();
        match s.name.as_str() {
            "process_cpu_seconds_total" => v.cpu = s.value,
            "process_open_fds" => v.fds = s.value,
            "process_max_fds" => v.max_fds = s.value,
            "process_resident_memory_bytes" => v.rss = s.value,
            "process_start_time_seconds" => v.start = s.value,
            _ => {}
        }
    }
    out
}

/// What this process's descriptors point at (but the one listing them).
fn fd_links() -> Vec<String> {
    let listing = format!("/proc/{}/fd", std::process::id());
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|l| *l != listing)
        .collect()
}

/// This process's descriptors of process `pid`'s `/proc` files.
fn proc_links(pid: i32) -> Vec<String> {
    fd_links().into_iter().filter(|l| l.starts_with(&format!("/proc/{pid}/"))).collect()
}

/// Descriptors a scrape keeps: shard files of `dir` (this process's own
/// excepted) and other processes' `/proc` files.
fn kept_links(dir: &Path) -> Vec<String> {
    let own = format!("{}/p{}-", dir.display(), std::process::id());
    fd_links()
        .into_iter()
        .filter(|l| (l.starts_with(&dir.display().to_string()) && !l.starts_with(&own)) || l.starts_with("/proc/"))
        .collect()
}

/// Waits until our child `pid` has exited, without reaping it: a zombie,
/// its files (and so its shard's lock) closed.
fn wait_zombie(pid: i32) {
    // SAFETY: a valid siginfo to write into; our own child.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
    assert_eq!(got, 0, "waitid({pid}): {}", std::io::Error::last_os_error());
}

fn reap(pid: i32) {
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) }, pid);
}

/// The `RLIMIT_NOFILE` under which exactly `spare` more descriptors can
/// be opened (the kernel gives the lowest free number).
fn limit_leaving(spare: usize) -> u64 {
    let open: BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    // The listing's own descriptor was closed again.
    let probe = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
    (0..).filter(|n| !open.contains(n) || *n == probe).nth(spare).unwrap()
}

fn descriptor_errors(text: &str) -> f64 {
    value_in(text, "promshard_shard_errors_total", &[("reason", "descriptors")]).unwrap_or(0.0)
}

/// Forks a worker that records once, says so, and waits to be killed.
fn pausing_worker(ready: &std::fs::File, ready_r: &mut std::fs::File) -> i32 {
    let fd = ready.as_raw_fd();
    let pid = fork_child(move || {
        KEPT_TOTAL.inc();
        // SAFETY: raw calls on an inherited descriptor.
        unsafe {
            libc::write(fd, b"r".as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    });
    let mut byte = [0u8; 1];
    assert_eq!(ready_r.read(&mut byte).unwrap(), 1, "worker {pid} started");
    pid
}

// ---------------------------------------------------------------------

fn afresh_scenario() {
    let dir = TempDir::new("kept-afresh");
    promshard::multiprocess::init(dir.path()).unwrap();
    KEPT_TOTAL.inc();
    let me = std::process::id() as i32;
    let mut busy = Worker::spawn(handle);
    let mut idle = Worker::spawn(handle);
    busy.ask("inc", WAIT);
    idle.ask("inc", WAIT);

    let first = processes(&own_text());
    assert_eq!(first.keys().copied().collect::<BTreeSet<_>>(), [me, busy.pid, idle.pid].into());
    // The scrape kept each worker's stat file and fd directory, and its
    // own stat file, open.
    for pid in [busy.pid, idle.pid] {
        let mut links = proc_links(pid);
        links.sort();
        assert_eq!(links, [format!("/proc/{pid}/fd"), format!("/proc/{pid}/stat")], "pid {pid}");
    }
    assert_eq!(proc_links(me), [format!("/proc/{me}/stat")]);

    for command in ["burn", "fds", "memory", "limit"] {
        busy.ask(command, WAIT);
    }
    // Read again through the same descriptors: the values of now.
    let kept = kept_links(dir.path());
    let second = processes(&own_text());
    assert_eq!(kept_links(dir.path()), kept, "the same descriptors");
    let (was, is) = (first[&busy.pid], second[&busy.pid]);
    // Clock ticks are 10 ms; the worker burnt 400 ms in one thread.
    assert!(is.cpu >= was.cpu + 0.38, "{was:?} then {is:?}");
    assert!(is.fds >= was.fds + 50.0, "{was:?} then {is:?}");
    assert!(is.rss >= was.rss + 60.0 * 1024.0 * 1024.0, "{was:?} then {is:?}");
    assert_eq!(is.max_fds, 777.0);
    for pid in [me, busy.pid, idle.pid] {
        assert_eq!(first[&pid].start, second[&pid].start, "pid {pid}");
    }

    // A child forked now inherits every kept descriptor, this process's
    // own stat file among them; its own scrape reads itself, not us.
    let mut child = Worker::spawn(handle);
    let theirs = processes(&harness::unescape(&child.ask("burn-and-scrape", WAIT)));
    let ours = processes(&own_text());
    assert!(theirs[&child.pid].cpu >= 0.38, "{theirs:?}");
    for pid in [me, busy.pid, idle.pid, child.pid] {
        assert_eq!(theirs[&pid].start, ours[&pid].start, "pid {pid}: {theirs:?}\n{ours:?}");
    }
    assert!(theirs[&child.pid].start > theirs[&me].start, "{theirs:?}");

    // Killed, not reaped: the kept descriptors still read its stat file,
    // but its lock is free: gone from the scrape, and its descriptors
    // closed.
    // SAFETY: our own child.
    unsafe { libc::kill(idle.pid, libc::SIGKILL) };
    wait_zombie(idle.pid);
    let third = processes(&own_text());
    assert_eq!(third.keys().copied().collect::<BTreeSet<_>>(), [me, busy.pid, child.pid].into());
    assert!(proc_links(idle.pid).is_empty(), "{:?}", proc_links(idle.pid));
    idle.kill();
    // The child holds copies of busy's pipe ends: it goes first.
    for worker in [&mut child, &mut busy] {
        worker.exit(WAIT).expect("the worker exits");
    }
    let last = own_text();
    assert_eq!(processes(&last).keys().copied().collect::<Vec<_>>(), [me]);
    assert_eq!(kept_links(dir.path()), [format!("/proc/{me}/stat")]);
    // Us, busy's five commands, idle's one, the child's one.
    assert_eq!(value_in(&last, "kept_total", &[]), Some(8.0), "{last}");
}

#[test]
fn kept_descriptors_read_each_process_afresh() {
    isolated("kept_descriptors_read_each_process_afresh", Duration::from_secs(120), afresh_scenario);
}

// ---------------------------------------------------------------------

/// Starts a process that is no promshard worker and takes the lock of
/// the shard at `path`, holding it until killed; its pid, once it holds
/// it. A raw clone, not `fork()`: no fork handler runs, so it makes no
/// shard of its own; it makes raw system calls only.
fn impostor(path: &Path) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let (mut ready_r, ready_w) = harness::pipe();
    let ready_fd = ready_w.as_raw_fd();
    // SAFETY: a clone without CLONE_VM copies the process like fork; the
    // child only makes raw system calls, and never returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let fd = libc::open(c_path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            let mut lock: libc::flock = std::mem::zeroed();
            lock.l_type = libc::F_WRLCK as i16;
            lock.l_whence = libc::SEEK_SET as i16;
            let locked = fd >= 0 && libc::fcntl(fd, libc::F_SETLK, &lock) == 0;
            libc::write(ready_fd, if locked { b"y" } else { b"n" }.as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
    drop(ready_w);
    let mut byte = [0u8; 1];
    assert_eq!(ready_r.read(&mut byte).unwrap(), 1);
    assert_eq!(&byte, b"y", "the impostor took the lock");
    pid as i32
}

/// Makes the next process of this pid namespace get `pid`.
fn next_pid_is(pid: i32) {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("ns_last_pid");
}

fn shard_of(dir: &Path, pid: i32) -> std::path::PathBuf {
    let name = harness::shard_files(dir).into_iter().find(|n| n.starts_with(&format!("p{pid}-"))).unwrap();
    dir.join(name)
}

/// Pid 1 of a fresh pid namespace, with its own `/proc`: worker A is
/// scraped (its descriptors kept), killed and reaped; an impostor given
/// A's pid takes the lock of A's shard; then a real worker B is given
/// A's pid. Whatever holds pid A, the scrape shows its values, never A's.
fn in_namespace() {
    // SAFETY: mount calls with valid NUL-terminated strings, in a mount
    // namespace of our own.
    unsafe {
        let none = std::ptr::null::<libc::c_char>();
        assert_eq!(libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()), 0);
        let proc_ = c"/proc".as_ptr();
        assert_eq!(libc::mount(c"proc".as_ptr(), proc_, c"proc".as_ptr(), 0, std::ptr::null()), 0, "mount /proc");
    }
    assert_eq!(std::process::id(), 1);
    let dir = TempDir::new("kept-pid-reuse");
    promshard::multiprocess::init(dir.path()).unwrap();
    KEPT_TOTAL.inc();

    let mut a = Worker::spawn(handle);
    a.ask("burn", WAIT);
    let pid = a.pid;
    let text = own_text();
    let first = processes(&text)[&pid];
    assert!(first.cpu >= 0.38, "{text}");
    assert_eq!(proc_links(pid).len(), 2, "the scrape keeps A's /proc files open");
    let a_shard = shard_of(dir.path(), pid);
    a.kill();
    // Later starts, by a clock tick at least.
    std::thread::sleep(Duration::from_millis(50));

    next_pid_is(pid);
    let impostor = impostor(&a_shard);
    assert_eq!(impostor, pid, "the impostor got A's pid");
    // The lock names pid A: the kept descriptors of A's stat file and fd
    // directory read nothing (A is reaped), so the files are opened
    // again, and show the impostor.
    let text = own_text();
    let second = *processes(&text).get(&pid).unwrap_or_else(|| panic!("pid {pid} holds a lock:\n{text}"));
    assert!(second.start >= first.start + 0.04, "the impostor's start time, not A's: {first:?}, then {second:?}");
    assert!(second.cpu < 0.1, "the impostor's CPU time, not A's: {first:?}, then {second:?}");
    // SAFETY: our own child.
    unsafe { libc::kill(impostor, libc::SIGKILL) };
    reap(impostor);
    let text = own_text();
    assert!(!processes(&text).contains_key(&pid), "nothing holds A's lock:\n{text}");
    assert!(proc_links(pid).is_empty(), "{:?}", proc_links(pid));
    std::thread::sleep(Duration::from_millis(50));

    next_pid_is(pid);
    let mut b = Worker::spawn(handle);
    assert_eq!(b.pid, pid, "B got A's pid");
    b.ask("inc", WAIT);
    let text = own_text();
    let third = processes(&text)[&pid];
    assert!(third.start >= second.start + 0.04 && third.cpu < 0.1, "B's values: {second:?}, then {third:?}");
    b.exit(WAIT).expect("B exits");
    let text = own_text();
    assert_eq!(processes(&text).keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(value_in(&text, "kept_total", &[]), Some(3.0), "{text}");
}

/// Exit code of a process that found no pid namespace to make.
const NO_NAMESPACE: i32 = 77;

fn pid_reuse_scenario() {
    // In a forked child: a user namespace can only be made by a process
    // with one thread.
    let outer = fork_child(|| {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWNS;
        if uid != 0 {
            flags |= libc::CLONE_NEWUSER;
        }
        // SAFETY: unshare has no memory preconditions.
        if unsafe { libc::unshare(flags) } != 0 {
            eprintln!("SKIPPED: no pid namespace here ({})", std::io::Error::last_os_error());
            return NO_NAMESPACE;
        }
        if uid != 0 {
            std::fs::write("/proc/self/setgroups", "deny").unwrap();
            std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).unwrap();
            std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).unwrap();
        }
        let init = fork_child(|| {
            in_namespace();
            0
        });
        let status = harness::wait_timeout(init, Duration::from_secs(90)).expect("the namespace's first process ends");
        if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 102 }
    });
    let status = harness::wait_timeout(outer, Duration::from_secs(100)).expect("the scenario ends");
    assert!(libc::WIFEXITED(status), "{}", harness::describe_status(status));
    match libc::WEXITSTATUS(status) {
        0 | NO_NAMESPACE => {}
        code => panic!("the scenario in the pid namespace failed (exit code {code})"),
    }
}

#[test]
fn a_reused_pid_never_shows_the_old_workers_values() {
    isolated("a_reused_pid_never_shows_the_old_workers_values", Duration::from_secs(120), pid_reuse_scenario);
}

// ---------------------------------------------------------------------

const CHURNED: usize = 300;

/// A worker's life, as the test saw it.
#[derive(Clone, Copy, Debug)]
struct Life {
    pid: i32,
    forked: Instant,
    ready: Instant,
    /// Its start time, as its own `/proc` files say.
    start: f64,
    killed: Option<Instant>,
    /// Seen to have exited (its lock free), not yet reaped.
    dead: Option<Instant>,
}

/// One scrape by the scraping thread.
struct Seen {
    began: Instant,
    ended: Instant,
    processes: BTreeMap<i32, Values>,
    total: f64,
}

/// `process_start_time_seconds` of `pid`, computed as the scrape does.
fn start_time(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ticks: f64 = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().parse().unwrap();
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .unwrap();
    // SAFETY: sysconf has no preconditions.
    btime + ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A small xorshift: random enough to land kills anywhere in a scrape.
fn random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// 300 workers forked, killed at random moments (some left unreaped for
/// a while), while another thread scrapes flat out. Every scrape: no
/// process that had exited before it began, every worker alive
/// throughout it, each with its own start time, CPU never going down,
/// the count between what was recorded before it began and after it
/// ended. At the end: every descriptor the scrapes kept is closed.
fn churn_scenario() {
    let dir = TempDir::new("kept-churn");
    promshard::multiprocess::init(dir.path()).unwrap();
    KEPT_TOTAL.inc();
    let me = std::process::id() as i32;
    let (mut ready_r, ready_w) = harness::pipe();
    own_text();
    let fds_before = fd_links();

    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Vec::new());
    let mut lives: Vec<Life> = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let text = own_text();
                let ended = Instant::now();
                let total = value_in(&text, "kept_total", &[]).unwrap();
                seen.lock().unwrap().push(Seen { began, ended, processes: processes(&text), total });
            }
        });
        let mut rng = 0x9e3779b97f4a7c15u64 ^ Instant::now().elapsed().as_nanos() as u64 ^ me as u64;
        let mut alive: Vec<usize> = Vec::new();
        let mut zombies: Vec<usize> = Vec::new();
        for _ in 0..CHURNED {
            let forked = Instant::now();
            let pid = pausing_worker(&ready_w, &mut ready_r);
            let ready = Instant::now();
            lives.push(Life { pid, forked, ready, start: start_time(pid), killed: None, dead: None });
            alive.push(lives.len() - 1);
            while alive.len() > 1 + (random(&mut rng) % 8) as usize {
                let victim = alive.swap_remove((random(&mut rng) as usize) % alive.len());
                std::thread::sleep(Duration::from_micros(random(&mut rng) % 1500));
                lives[victim].killed = Some(Instant::now());
                // SAFETY: our own child.
                unsafe { libc::kill(lives[victim].pid, libc::SIGKILL) };
                wait_zombie(lives[victim].pid);
                lives[victim].dead = Some(Instant::now());
                zombies.push(victim);
            }
            while zombies.len() > (random(&mut rng) % 4) as usize {
                reap(lives[zombies.remove(0)].pid);
            }
            std::thread::sleep(Duration::from_micros(random(&mut rng) % 1500));
        }
        for victim in alive {
            lives[victim].killed = Some(Instant::now());
            // SAFETY: our own child.
            unsafe { libc::kill(lives[victim].pid, libc::SIGKILL) };
            wait_zombie(lives[victim].pid);
            lives[victim].dead = Some(Instant::now());
            zombies.push(victim);
        }
        for victim in zombies {
            reap(lives[victim].pid);
        }
        stop.store(true, Ordering::Relaxed);
    });

    let seen = seen.into_inner().unwrap();
    assert!(seen.len() > 100, "only {} scrapes", seen.len());
    // (Where pid_max is small a pid may come round again.)
    let mut by_pid: BTreeMap<i32, Vec<&Life>> = BTreeMap::new();
    for life in &lives {
        by_pid.entry(life.pid).or_default().push(life);
    }
    let mut problems = Vec::new();
    let mut cpu: BTreeMap<i32, f64> = BTreeMap::new();
    let mut last_total = 0.0;
    for (i, s) in seen.iter().enumerate() {
        for (pid, v) in &s.processes {
            if *pid == me {
                continue;
            }
            let Some(lives) = by_pid.get(pid) else {
                problems.push(format!("scrape {i}: pid {pid} is none of ours"));
                continue;
            };
            let during = |l: &&&Life| l.forked <= s.ended && l.dead.is_none_or(|d| d >= s.began);
            match lives.iter().find(during) {
                None => problems.push(format!("scrape {i}: pid {pid} shown while it was not alive: {lives:?}")),
                Some(life) if (v.start - life.start).abs() > 0.005 => problems
                    .push(format!("scrape {i}: pid {pid} start time {} (it started at {})", v.start, life.start)),
                Some(_) => {}
            }
            if v.cpu < cpu.get(pid).copied().unwrap_or(0.0) {
                problems.push(format!("scrape {i}: pid {pid} CPU went down to {}", v.cpu));
            }
            cpu.insert(*pid, v.cpu);
        }
        for life in &lives {
            let throughout = life.ready < s.began && life.killed.is_none_or(|k| k > s.ended);
            if throughout && !s.processes.contains_key(&life.pid) {
                problems.push(format!("scrape {i}: pid {} alive throughout, not shown", life.pid));
            }
        }
        let recorded_before = 1 + lives.iter().filter(|l| l.ready < s.began).count();
        let forked_before = 1 + lives.iter().filter(|l| l.forked < s.ended).count();
        if s.total < recorded_before as f64 || s.total > forked_before as f64 || s.total < last_total {
            problems.push(format!(
                "scrape {i}: kept_total {} (recorded before it: {recorded_before}, forked before its end: \
                 {forked_before}, previous scrape: {last_total})",
                s.total
            ));
        }
        last_total = s.total;
    }
    assert!(problems.is_empty(), "{} scrapes, problems:\n{}", seen.len(), problems.join("\n"));

    // Everyone gone: the scrapes that see it close what they kept.
    own_text();
    let text = own_text();
    assert_eq!(processes(&text).keys().copied().collect::<Vec<_>>(), [me]);
    assert_eq!(value_in(&text, "kept_total", &[]), Some(1.0 + CHURNED as f64));
    let fds_after = fd_links();
    assert_eq!(fds_after, fds_before, "descriptors before and after {CHURNED} workers");
    assert_eq!(kept_links(dir.path()), [format!("/proc/{me}/stat")]);
}

#[test]
fn workers_churning_under_concurrent_scrapes() {
    isolated("workers_churning_under_concurrent_scrapes", Duration::from_secs(300), churn_scenario);
}

// ---------------------------------------------------------------------

const LIMITED_WORKERS: usize = 40;

/// 40 workers and a scraper whose `RLIMIT_NOFILE` lets it keep 16
/// descriptors: every worker is read at every scrape (the rest through
/// descriptors opened for the question), and no more are kept. Then the
/// limit leaves it none to open: every process shown is live, every one
/// left out is counted as `reason="descriptors"`, workers killed
/// meanwhile are never shown. With descriptors back, every live worker.
fn low_limit_scenario() {
    let dir = TempDir::new("kept-low-limit");
    promshard::multiprocess::init(dir.path()).unwrap();
    KEPT_TOTAL.inc();
    let me = std::process::id() as i32;
    let (mut ready_r, ready_w) = harness::pipe();
    let pids: Vec<i32> = (0..LIMITED_WORKERS).map(|_| pausing_worker(&ready_w, &mut ready_r)).collect();
    let everyone: BTreeSet<i32> = pids.iter().copied().chain([me]).collect();

    let (soft, hard) = harness::get_rlimit(libc::RLIMIT_NOFILE);
    harness::set_rlimit(libc::RLIMIT_NOFILE, 64, hard);
    for scrape in 0..3 {
        let text = own_text();
        assert_eq!(processes(&text).keys().copied().collect::<BTreeSet<_>>(), everyone, "scrape {scrape}");
        let kept = kept_links(dir.path());
        assert!(kept.len() <= 64 / 4, "scrape {scrape} keeps {} descriptors: {kept:?}", kept.len());
        assert_eq!(descriptor_errors(&text), 0.0, "{text}");
    }

    // None to spare. Between scrapes the limit is lifted (the test needs
    // descriptors to look), never while one runs.
    let starved = |spare: usize| {
        harness::set_rlimit(libc::RLIMIT_NOFILE, limit_leaving(spare), hard);
        let text = own_text();
        harness::set_rlimit(libc::RLIMIT_NOFILE, 64, hard);
        text
    };
    let mut counted = descriptor_errors(&own_text());
    let mut live = everyone.clone();
    let mut check = |text: &str, live: &BTreeSet<i32>, what: &str| {
        let shown: BTreeSet<i32> = processes(text).keys().copied().collect();
        assert!(shown.is_subset(live), "{what}: shown {shown:?}, live {live:?}");
        let left_out = live.len() - shown.len();
        let said = descriptor_errors(text) - counted;
        assert!(said >= left_out as f64, "{what}: {left_out} live processes left out, {said} counted:\n{text}");
        assert_eq!(value_in(text, "kept_total", &[]), Some(1.0 + LIMITED_WORKERS as f64), "{what}");
        counted = descriptor_errors(text);
        left_out
    };
    let mut left_out = 0;
    for spare in [0, 1, 2, 0] {
        left_out += check(&starved(spare), &live, &format!("leaving {spare}"));
    }
    assert!(left_out > 0, "a scraper with no descriptor to spare read every worker's /proc files");
    for &pid in &pids[..5] {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_zombie(pid);
        live.remove(&pid);
    }
    for spare in [0, 3] {
        check(&starved(spare), &live, &format!("5 killed, leaving {spare}"));
    }
    for &pid in &pids[..5] {
        reap(pid);
    }
    harness::set_rlimit(libc::RLIMIT_NOFILE, soft, hard);
    let text = own_text();
    assert_eq!(processes(&text).keys().copied().collect::<BTreeSet<_>>(), live);

    // Plenty again: each worker's three descriptors are kept, and then a
    // scraper with none to spare still reads every one of them.
    let text = own_text();
    assert_eq!(processes(&text).keys().copied().collect::<BTreeSet<_>>(), live);
    for spare in [0, 1] {
        harness::set_rlimit(libc::RLIMIT_NOFILE, limit_leaving(spare), hard);
        let text = own_text();
        harness::set_rlimit(libc::RLIMIT_NOFILE, soft, hard);
        assert_eq!(processes(&text).keys().copied().collect::<BTreeSet<_>>(), live, "leaving {spare}:\n{text}");
    }
    for &pid in &pids[5..] {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reap(pid);
    }
}

#[test]
fn a_scraper_short_of_descriptors_keeps_within_budget_and_counts_what_it_cannot_read() {
    isolated(
        "a_scraper_short_of_descriptors_keeps_within_budget_and_counts_what_it_cannot_read",
        Duration::from_secs(120),
        low_limit_scenario,
    );
}

// ---------------------------------------------------------------------

/// The system call a ptrace-stopped `pid` is entering: its number and
/// first argument.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn entering(pid: i32) -> (i64, u64) {
    // SAFETY: plain data, filled by the kernel.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    let mut iov =
        libc::iovec { iov_base: (&mut regs as *mut libc::user_regs_struct).cast(), iov_len: size_of_val(&regs) };
    // SAFETY: a stopped tracee of ours, a buffer of the size given.
    let got = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, pid, libc::NT_PRSTATUS as usize, &mut iov) };
    assert_eq!(got, 0, "PTRACE_GETREGSET: {}", std::io::Error::last_os_error());
    #[cfg(target_arch = "x86_64")]
    return (regs.orig_rax as i64, regs.rdi);
    #[cfg(target_arch = "aarch64")]
    return (regs.regs[8] as i64, regs.regs[0]);
}

/// A scraper run under ptrace by this process: when it reads worker V1's
/// `/proc/<pid>/stat` in its first scrape (through a descriptor opened
/// then), and worker V2's in its second (through the descriptor kept
/// since), the worker is killed and seen exited before the read goes on.
/// So each dies after the first question to its lock and before the
/// second: the scrape must leave it out, and count every other one.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn between_checks_scenario() {
    let dir = TempDir::new("kept-between-checks");
    promshard::multiprocess::init(dir.path()).unwrap();
    KEPT_TOTAL.inc();
    let me = std::process::id() as i32;
    let mut victims = [Worker::spawn(handle), Worker::spawn(handle)];
    for v in &mut victims {
        v.ask("inc", WAIT);
    }
    let pids = [victims[0].pid, victims[1].pid];
    let (phase_r, phase_w) = harness::pipe();
    let phase_fd = phase_w.as_raw_fd();
    let scraper = fork_child(move || {
        // SAFETY: PTRACE_TRACEME and raise have no memory preconditions.
        unsafe {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::raise(libc::SIGSTOP);
        }
        let scraper = std::process::id() as i32;
        for (phase, victim) in pids.iter().enumerate() {
            // Tells the tracer which scrape this is.
            // SAFETY: an inherited descriptor, a one-byte buffer.
            unsafe { libc::write(phase_fd, b"p".as_ptr().cast(), 1) };
            let text = own_text();
            let shown: BTreeSet<i32> = processes(&text).keys().copied().collect();
            let want: BTreeSet<i32> = [me, scraper].into_iter().chain(pids[phase + 1..].iter().copied()).collect();
            assert_eq!(shown, want, "scrape {phase}: pid {victim} died between the two questions to its lock:\n{text}");
            assert_eq!(value_in(&text, "kept_total", &[]), Some(3.0), "{text}");
        }
        0
    });
    drop(phase_r);
    let wait = |what: &str| {
        let mut status = 0;
        // SAFETY: our own child.
        assert_eq!(unsafe { libc::waitpid(scraper, &mut status, 0) }, scraper, "{what}");
        status
    };
    let status = wait("the scraper stops itself");
    assert!(libc::WIFSTOPPED(status), "{}", harness::describe_status(status));
    // SAFETY (ptrace calls below): our stopped tracee.
    unsafe {
        let options = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL;
        assert_eq!(libc::ptrace(libc::PTRACE_SETOPTIONS, scraper, 0, options), 0);
        libc::ptrace(libc::PTRACE_SYSCALL, scraper, 0, 0);
    }
    let (mut phase, mut killed, mut entry) = (0usize, 0usize, true);
    let status = loop {
        let status = wait("the scraper under ptrace");
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            break status;
        }
        let mut signal = 0;
        if libc::WSTOPSIG(status) == libc::SIGTRAP | 0x80 {
            if entry {
                let (call, fd) = entering(scraper);
                if call == libc::SYS_write && fd == phase_fd as u64 {
                    phase += 1;
                } else if (call == libc::SYS_read || call == libc::SYS_pread64) && killed < phase {
                    let target = std::fs::read_link(format!("/proc/{scraper}/fd/{fd}")).unwrap_or_default();
                    let victim = &mut victims[phase - 1];
                    if target == Path::new(&format!("/proc/{}/stat", victim.pid)) {
                        // SAFETY: our own child.
                        unsafe { libc::kill(victim.pid, libc::SIGKILL) };
                        wait_zombie(victim.pid);
                        killed += 1;
                    }
                }
            }
            entry = !entry;
        } else {
            signal = libc::WSTOPSIG(status);
        }
        // SAFETY: our stopped tracee.
        unsafe { libc::ptrace(libc::PTRACE_SYSCALL, scraper, 0, signal) };
    };
    assert_eq!(killed, 2, "the scraper read each victim's stat file in its scrape");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the scraper: {}",
        harness::describe_status(status)
    );
}

#[test]
fn a_worker_killed_between_the_two_lock_checks_is_left_out() {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    isolated(
        "a_worker_killed_between_the_two_lock_checks_is_left_out",
        Duration::from_secs(120),
        between_checks_scenario,
    );
}
