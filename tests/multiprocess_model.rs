//! Model-based test of the whole multiprocess store, against real
//! processes: a seeded random sequence of operations, and after every
//! step the merged exposition compared with a simple model of what must
//! be visible.
//!
//! The guarantee attacked is the one the README promises: "any process's
//! scrape returns the merge of all shards … one correct view with no
//! hooks, through worker churn and crashes". The model:
//!
//! - counters (`model_requests_total{kind}`, `model_route_hits_total{route}`
//!   with a `bounded` label) and the histogram (`model_latency`): the exact
//!   sums of everything recorded in this run, by any process, dead or
//!   alive;
//! - the `livesum` gauge (`model_inflight`): the sum over live processes;
//! - `inspect`: the live shards are exactly the live processes;
//! - a restart (every process gone, a new master starts) begins a new run
//!   from zero.
//!
//! Processes: the driver (the test's own process) never records; it forks
//! a master, which `init`s the directory (absolute, or relative to its
//! working directory: chosen per run) and forks workers on command. The
//! driver talks to the master over pipes with a one-line protocol, and to
//! workers through the master. Operations: record a counter, histogram,
//! gauge or bounded value (new or seen before) in some process; fork a
//! worker; a worker exits cleanly; a worker is SIGKILLed; scrape from the
//! master or a worker; `compact_dir`; `chdir` in the master; scrape,
//! `inspect` or `compact_dir` through the absolute, a relative, a
//! symlinked or a `..` spelling of the directory; restart the run. After
//! every step the driver's `encode_dir` of the directory is checked too.
//!
//! `PROMSHARD_MODEL_ONLY_ABSOLUTE=1` leaves out the other spellings and
//! `chdir` (the known bugs of `multiprocess_own_shard_spellings.rs`), to
//! see whether anything else breaks.
//!
//! The seed comes from `PROMSHARD_MODEL_SEED` (or the clock) and is printed
//! at the start and in every failure, with the list of steps; the budget
//! is `PROMSHARD_MODEL_SECS` seconds of steps (default 20).
//!
//! Bounded values are drawn from 40 names while the label keeps 64 per
//! process, so no value is folded into `other` (that is attacked by
//! `multiprocess_lost_series.rs`).

mod harness;
mod rng;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use harness::{Sample, TempDir, Worker, isolated, parse_samples, unescape};
use promshard::{Counter, Gauge, Histogram, metric};
use rng::Rng;

/// Requests by kind.
#[metric(labels(kind = ["a", "b", "c"]))]
static MODEL_REQUESTS_TOTAL: Counter;

/// Hits by route.
#[metric(labels(route = bounded(64)))]
static MODEL_ROUTE_HITS_TOTAL: Counter;

/// Latency.
#[metric(buckets = [1.0, 5.0, 10.0])]
static MODEL_LATENCY: Histogram;

/// Requests in flight, over live processes.
#[metric(mode = livesum)]
static MODEL_INFLIGHT: Gauge;

const KINDS: [&str; 3] = ["a", "b", "c"];
const BOUNDS: [f64; 3] = [1.0, 5.0, 10.0];
const ROUTES: usize = 40;
const MAX_WORKERS: usize = 6;
const ASK: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------
// The processes under test (master and workers)
// ---------------------------------------------------------------------

/// The shard directory, absolute; and the symlink to it.
static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
/// The master's workers, by id.
static WORKERS: Mutex<BTreeMap<u32, Worker>> = Mutex::new(BTreeMap::new());
/// The master's own pipe ends to the driver, closed in its workers.
static MASTER_FDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The directory spelled `how`, from this process's working directory.
fn spelled(how: &str) -> PathBuf {
    let (abs, link) = PATHS.get().expect("init first");
    match how {
        "abs" => abs.clone(),
        "rel" => harness::relative_path(abs, &std::env::current_dir().unwrap()),
        "link" => link.clone(),
        "dotdot" => harness::dotdot_spelling(abs),
        other => panic!("unknown spelling {other}"),
    }
}

/// Commands every process of the run answers.
fn common(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["c", kind, n] => MODEL_REQUESTS_TOTAL.with((*kind,)).inc_by(n.parse().unwrap()),
        ["r", route, n] => MODEL_ROUTE_HITS_TOTAL.with((*route,)).inc_by(n.parse().unwrap()),
        ["h", v] => MODEL_LATENCY.observe(v.parse().unwrap()),
        ["g", d] => MODEL_INFLIGHT.add(d.parse().unwrap()),
        ["ping"] => {}
        ["scrape"] => return harness::own_text(),
        ["dir", how] => return harness::encode_dir_text(&spelled(how)),
        ["compact", how] => promshard::multiprocess::compact_dir(spelled(how)),
        ["inspect", how] => {
            let statuses = promshard::multiprocess::inspect(spelled(how)).unwrap();
            let live: BTreeSet<u32> = statuses.iter().filter(|s| s.live && !s.archive).filter_map(|s| s.pid).collect();
            return live.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        }
        _ => panic!("unknown command {command:?}"),
    }
    "ok".into()
}

fn worker_prelude() {
    // Pipes that belong to the master: to the driver, to other workers.
    for fd in MASTER_FDS.lock().unwrap().drain(..) {
        // SAFETY: an inherited descriptor this process never uses.
        unsafe { libc::close(fd) };
    }
    for (_, worker) in std::mem::take(&mut *WORKERS.lock().unwrap()) {
        worker.forget();
    }
}

fn master(command: &str) -> String {
    let words: Vec<&str> = command.splitn(3, ' ').collect();
    match words.as_slice() {
        ["init", how, paths] => {
            let (abs, link) = paths.split_once('|').unwrap();
            PATHS.set((PathBuf::from(abs), PathBuf::from(link))).unwrap();
            let dir = if *how == "rel" { PathBuf::from(Path::new(abs).file_name().unwrap()) } else { abs.into() };
            promshard::multiprocess::init(&dir).unwrap();
            format!("{:?}", promshard::multiprocess::shard_dir())
        }
        ["fork", id] => {
            let mut worker = Worker::spawn_with(worker_prelude, common, || {});
            // fork() returns in the parent before the child has made its
            // shard: wait for the worker to answer once.
            assert_eq!(worker.ask("ping", ASK), "ok");
            let pid = worker.pid;
            WORKERS.lock().unwrap().insert(id.parse().unwrap(), worker);
            pid.to_string()
        }
        ["exit", id] => {
            let mut worker = WORKERS.lock().unwrap().remove(&id.parse().unwrap()).unwrap();
            worker.exit(ASK).map_or("timeout".into(), harness::describe_status)
        }
        ["kill", id] => {
            WORKERS.lock().unwrap().remove(&id.parse().unwrap()).unwrap().kill();
            "ok".into()
        }
        ["to", id, rest] => {
            let mut workers = WORKERS.lock().unwrap();
            let worker = workers.get_mut(&id.parse().unwrap()).unwrap();
            match worker.try_ask(rest, ASK) {
                Some(reply) => unescape(&reply),
                None => format!("NO-ANSWER from worker {id} (pid {})", worker.pid),
            }
        }
        ["chdir", path] => {
            std::env::set_current_dir(path).unwrap();
            "ok".into()
        }
        _ => common(command),
    }
}

fn master_epilogue() {
    for (_, mut worker) in std::mem::take(&mut *WORKERS.lock().unwrap()) {
        worker.kill();
    }
}

/// Forks the master; its end of the pipes is remembered so its workers
/// can close them.
fn spawn_master() -> Worker {
    Worker::spawn_with(
        || {
            // The master's two ends of its pipes to the driver are the
            // only pipes it holds above stderr when it starts (what it
            // inherited from the driver otherwise is regular files):
            // remember them, so that its workers can close them.
            let mut fds = MASTER_FDS.lock().unwrap();
            for fd in 3..1024 {
                // SAFETY: a zeroed stat buffer for fstat, which only
                // reads whether and what `fd` is.
                let mut stat: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::fstat(fd, &mut stat) } == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFIFO {
                    fds.push(fd);
                }
            }
        },
        master,
        master_epilogue,
    )
}

// ---------------------------------------------------------------------
// The model and the driver
// ---------------------------------------------------------------------

#[derive(Default, Clone)]
struct Model {
    counters: BTreeMap<&'static str, u64>,
    routes: BTreeMap<String, u64>,
    /// Observations (integers, so sums are exact).
    observations: Vec<u64>,
    /// Gauge value of each live process (0 = the master).
    gauges: BTreeMap<u32, i64>,
}

impl Model {
    /// What a scrape of the run must show, compared with `samples`.
    fn diff(&self, samples: &[Sample]) -> Vec<String> {
        let mut wrong = Vec::new();
        let find = |name: &str, labels: &[(&str, &str)]| {
            samples
                .iter()
                .find(|s| {
                    s.name == name
                        && s.labels.len() == labels.len()
                        && labels.iter().all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
                })
                .map(|s| s.value)
        };
        let mut check = |what: String, got: Option<f64>, want: f64| {
            if got != Some(want) {
                wrong.push(format!("{what}: got {got:?}, want {want}"));
            }
        };
        for kind in KINDS {
            let want = self.counters.get(kind).copied().unwrap_or(0) as f64;
            check(
                format!("model_requests_total{{kind={kind}}}"),
                find("model_requests_total", &[("kind", kind)]),
                want,
            );
        }
        for (route, n) in &self.routes {
            check(
                format!("model_route_hits_total{{route={route}}}"),
                find("model_route_hits_total", &[("route", route)]),
                *n as f64,
            );
        }
        for s in samples.iter().filter(|s| s.name == "model_route_hits_total") {
            let route = s.labels.iter().find(|(k, _)| k == "route").map_or("", |(_, v)| v.as_str());
            // `other` (the overflow series) is exposed from the start at
            // zero, as in memory mode; nothing is folded into it here.
            if route == "other" {
                check("model_route_hits_total{route=other}".into(), Some(s.value), 0.0);
            } else if !self.routes.contains_key(route) {
                check(
                    format!("model_route_hits_total{{route={route}}} (never recorded in this run)"),
                    Some(s.value),
                    f64::NAN,
                );
            }
        }
        let count = self.observations.len() as f64;
        check("model_latency_count".into(), find("model_latency_count", &[]), count);
        check("model_latency_sum".into(), find("model_latency_sum", &[]), self.observations.iter().sum::<u64>() as f64);
        for bound in BOUNDS {
            let want = self.observations.iter().filter(|&&v| v as f64 <= bound).count() as f64;
            let got = samples
                .iter()
                .find(|s| {
                    s.name == "model_latency_bucket"
                        && s.labels.iter().any(|(k, v)| k == "le" && v.parse::<f64>().ok() == Some(bound))
                })
                .map(|s| s.value);
            check(format!("model_latency_bucket{{le={bound}}}"), got, want);
        }
        check("model_latency_bucket{le=+Inf}".into(), find("model_latency_bucket", &[("le", "+Inf")]), count);
        // With no live process at all, the family may have no sample.
        let inflight = find("model_inflight", &[]).or(self.gauges.is_empty().then_some(0.0));
        check("model_inflight (livesum)".into(), inflight, self.gauges.values().sum::<i64>() as f64);
        wrong
    }
}

struct Driver {
    seed: u64,
    steps: Vec<String>,
    base: PathBuf,
    dir: PathBuf,
    link: PathBuf,
    master: Option<Worker>,
    master_pid: u32,
    init: &'static str,
    /// Live workers: id → pid.
    workers: BTreeMap<u32, u32>,
    next_id: u32,
    model: Model,
    routes_used: usize,
    runs: u32,
    /// `PROMSHARD_MODEL_ONLY_ABSOLUTE`: absolute spellings only and no
    /// chdir, to tell other failures from the known spelling bugs.
    only_absolute: bool,
}

impl Driver {
    fn fail(&self, message: &str) -> ! {
        let mut steps = String::new();
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(steps, "  {i:4}: {step}");
        }
        panic!(
            "model test failed (PROMSHARD_MODEL_SEED={} to replay; init spelling {:?}, run {}):\n{message}\nsteps:\n{steps}",
            self.seed, self.init, self.runs
        );
    }

    /// Sends `command` to the master (`to ID …` reaches a worker).
    fn ask(&mut self, command: &str) -> String {
        let master = self.master.as_mut().expect("a master is running");
        match master.try_ask(command, ASK) {
            Some(reply) if reply.starts_with("NO-ANSWER") => self.fail(&format!("{command:?}: {reply}")),
            Some(reply) => unescape(&reply),
            None => self.fail(&format!("the master gave no answer to {command:?} within {ASK:?} (hang or death)")),
        }
    }

    /// A process of the run: `None` for the master, else a worker id.
    fn process(&mut self, rng: &mut Rng) -> Option<u32> {
        let ids: Vec<u32> = self.workers.keys().copied().collect();
        if ids.is_empty() || rng.below(3) == 0 { None } else { Some(*rng.pick_ref(&ids)) }
    }

    fn to(&mut self, process: Option<u32>, command: &str) -> String {
        match process {
            None => self.ask(command),
            Some(id) => self.ask(&format!("to {id} {command}")),
        }
    }

    fn spelling(&self, rng: &mut Rng) -> &'static str {
        const SPELLINGS: [&str; 4] = ["abs", "rel", "link", "dotdot"];
        if self.only_absolute { "abs" } else { SPELLINGS[rng.below(4) as usize] }
    }

    fn name(process: Option<u32>) -> String {
        process.map_or("master".into(), |id| format!("worker {id}"))
    }

    fn compare(&self, what: &str, text: &str) {
        let wrong = self.model.diff(&parse_samples(text));
        if !wrong.is_empty() {
            self.fail(&format!(
                "{what} differs from the model:\n  {}\n--- that scrape ---\n{text}",
                wrong.join("\n  ")
            ));
        }
    }

    fn start_run(&mut self, rng: &mut Rng) {
        self.init = if rng.below(2) == 0 || self.only_absolute { "abs" } else { "rel" };
        self.runs += 1;
        let master = spawn_master();
        self.master_pid = master.pid as u32;
        self.master = Some(master);
        let paths = format!("{}|{}", self.dir.display(), self.link.display());
        let reply = self.ask(&format!("init {} {paths}", self.init));
        self.steps.push(format!("run {}: new master pid {} (init {}): {reply}", self.runs, self.master_pid, self.init));
        if !reply.starts_with("Some(") {
            self.fail(&format!("the new master did not start a shard: shard_dir() = {reply}"));
        }
        self.model = Model::default();
        self.model.gauges.insert(0, 0);
        self.workers.clear();
        self.routes_used = 0;
    }

    fn step(&mut self, rng: &mut Rng) {
        let roll = rng.below(100);
        match roll {
            0..=29 => {
                let p = self.process(rng);
                let key = p.unwrap_or(0);
                match rng.below(3) {
                    0 => {
                        let kind = *rng.pick_ref(&KINDS);
                        let n = rng.below(5) + 1;
                        self.steps.push(format!("{}: requests{{kind={kind}}} += {n}", Self::name(p)));
                        self.to(p, &format!("c {kind} {n}"));
                        *self.model.counters.entry(kind).or_default() += n;
                    }
                    1 => {
                        let v = rng.below(13);
                        self.steps.push(format!("{}: latency.observe({v})", Self::name(p)));
                        self.to(p, &format!("h {v}"));
                        self.model.observations.push(v);
                    }
                    _ => {
                        let d = rng.below(7) as i64 - 3;
                        self.steps.push(format!("{}: inflight += {d}", Self::name(p)));
                        self.to(p, &format!("g {d}"));
                        *self.model.gauges.get_mut(&key).unwrap() += d;
                    }
                }
            }
            30..=37 => {
                // A bounded value: a new one, or one used before.
                let p = self.process(rng);
                let fresh = self.routes_used < ROUTES && (self.routes_used == 0 || rng.below(2) == 0);
                let index = if fresh {
                    self.routes_used += 1;
                    self.routes_used - 1
                } else {
                    rng.below(self.routes_used.max(1) as u64) as usize
                };
                let route = format!("/r{index}");
                let n = rng.below(3) + 1;
                let new = if fresh { " (new value)" } else { "" };
                self.steps.push(format!("{}: route_hits{{route={route}}} += {n}{new}", Self::name(p)));
                self.to(p, &format!("r {route} {n}"));
                *self.model.routes.entry(route).or_default() += n;
            }
            38..=45 if self.workers.len() < MAX_WORKERS => {
                let id = self.next_id;
                self.next_id += 1;
                let pid: u32 = self.ask(&format!("fork {id}")).parse().unwrap();
                self.steps.push(format!("master forks worker {id} (pid {pid})"));
                self.workers.insert(id, pid);
                self.model.gauges.insert(id, 0);
            }
            46..=50 if !self.workers.is_empty() => {
                let id = *rng.pick_ref(&self.workers.keys().copied().collect::<Vec<_>>());
                self.steps.push(format!("worker {id} exits cleanly"));
                let status = self.ask(&format!("exit {id}"));
                if status != "exit code 0" {
                    self.fail(&format!("worker {id} did not exit cleanly: {status}"));
                }
                self.workers.remove(&id);
                self.model.gauges.remove(&id);
            }
            51..=54 if !self.workers.is_empty() => {
                let id = *rng.pick_ref(&self.workers.keys().copied().collect::<Vec<_>>());
                self.steps.push(format!("worker {id} is SIGKILLed"));
                self.ask(&format!("kill {id}"));
                self.workers.remove(&id);
                self.model.gauges.remove(&id);
            }
            55..=66 => {
                let p = self.process(rng);
                self.steps.push(format!("{}: scrapes its own view", Self::name(p)));
                let text = self.to(p, "scrape");
                self.compare(&format!("{}'s own scrape", Self::name(p)), &text);
            }
            67..=74 => {
                let p = self.process(rng);
                let how = self.spelling(rng);
                self.steps.push(format!("{}: encode_dir({how} spelling)", Self::name(p)));
                let text = self.to(p, &format!("dir {how}"));
                self.compare(&format!("{}'s encode_dir through the {how} spelling", Self::name(p)), &text);
            }
            75..=80 => {
                let p = self.process(rng);
                let how = self.spelling(rng);
                self.steps.push(format!("{}: inspect({how} spelling)", Self::name(p)));
                let got = self.to(p, &format!("inspect {how}"));
                let mut live: BTreeSet<u32> = self.workers.values().copied().collect();
                live.insert(self.master_pid);
                let want = live.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
                if got != want {
                    self.fail(&format!(
                        "{}'s inspect through the {how} spelling: live shards of pids [{got}], want the live \
                         processes [{want}]",
                        Self::name(p)
                    ));
                }
            }
            81..=87 => {
                let p = self.process(rng);
                let how = if rng.below(2) == 0 { "abs" } else { self.spelling(rng) };
                self.steps.push(format!("{}: compact_dir({how} spelling)", Self::name(p)));
                self.to(p, &format!("compact {how}"));
            }
            88..=92 if !self.only_absolute => {
                let to = rng.below(4);
                let path = match to {
                    0 => PathBuf::from("/"),
                    1 => self.base.clone(),
                    2 => self.dir.clone(),
                    _ => self.base.join("elsewhere"),
                };
                self.steps.push(format!("master: set_current_dir({})", path.display()));
                self.ask(&format!("chdir {}", path.display()));
            }
            93..=94 => {
                self.steps.push(format!("restart: every process of run {} ends", self.runs));
                let mut master = self.master.take().unwrap();
                if master.exit(ASK).is_none() {
                    self.fail("the master did not exit within its deadline");
                }
                // The old run is over: its counts are still in the directory
                // (dead shards), no live gauge is.
                self.model.gauges.clear();
                let text = harness::encode_dir_text(&self.dir);
                self.compare("the driver's encode_dir after every process ended", &text);
                self.start_run(rng);
            }
            _ => {
                self.steps.push("driver: encode_dir(abs) only".into());
            }
        }
        if self.master.is_some() {
            let text = harness::encode_dir_text(&self.dir);
            self.compare("the driver's encode_dir of the directory (absolute path, reads only)", &text);
        }
    }
}

fn run_model() {
    let seed = std::env::var("PROMSHARD_MODEL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    let secs: u64 = std::env::var("PROMSHARD_MODEL_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    eprintln!("model test: PROMSHARD_MODEL_SEED={seed}, {secs} s of steps");
    let base = TempDir::new("model");
    let dir = base.path().join("shards");
    let link = base.path().join("link");
    std::fs::create_dir(base.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    // Relative spellings of the master's init are relative to this.
    std::env::set_current_dir(base.path()).unwrap();
    let mut rng = Rng(seed);
    let mut driver = Driver {
        seed,
        steps: Vec::new(),
        base: base.path().to_owned(),
        dir,
        link,
        master: None,
        master_pid: 0,
        init: "abs",
        workers: BTreeMap::new(),
        next_id: 1,
        model: Model::default(),
        routes_used: 0,
        runs: 0,
        only_absolute: std::env::var_os("PROMSHARD_MODEL_ONLY_ABSOLUTE").is_some(),
    };
    driver.start_run(&mut rng);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        driver.step(&mut rng);
    }
    if let Some(mut master) = driver.master.take() {
        let _ = master.exit(ASK);
    }
    eprintln!("model test: {} steps over {} runs, all matched the model", driver.steps.len(), driver.runs);
    std::env::set_current_dir("/").unwrap();
    drop(base);
}

#[test]
fn merged_view_matches_the_model() {
    let secs: u64 = std::env::var("PROMSHARD_MODEL_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    isolated("merged_view_matches_the_model", Duration::from_secs(secs + 90), run_model);
}
