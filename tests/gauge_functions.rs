//! `Gauge::set_function`, tried as a pre-fork app would use it: functions
//! registered before the fork read each worker's own pool, and a scrape
//! answered by one process shows every live worker's values, combined by
//! the gauge's mode, with dead workers gone, though workers never scrape
//! (their refresher threads, restarted in each child, write their
//! shards). Also: functions that panic, scrape, or set functions from
//! inside; many forks while the refresher runs.

mod harness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use harness::{POOL, TempDir, Worker, eventually, isolated, own_text, pool_worker, value_in};
use promshard::{Gauge, LabelValue, metric};

/// Idle connections, summed over live workers.
#[metric(mode = livesum)]
static FN_POOL_IDLE: Gauge;

/// Idle connections of each live worker.
#[metric(mode = liveall)]
static FN_POOL_IDLE_EACH: Gauge;

/// The largest queue among live workers.
#[metric(mode = livemax)]
static FN_QUEUE_MAX: Gauge;

#[derive(Clone, Copy, LabelValue)]
enum Pool {
    Read,
    Write,
}

/// Connections in use, per pool, summed over live workers.
#[metric(mode = livesum, labels(pool: Pool))]
static FN_POOL_BUSY: Gauge;

fn pool() -> f64 {
    POOL.load(Ordering::SeqCst) as f64
}

fn register() {
    FN_POOL_IDLE.set_function(pool);
    FN_POOL_IDLE_EACH.set_function(pool);
    FN_QUEUE_MAX.set_function(|| pool() * 2.0);
    FN_POOL_BUSY.with((Pool::Read,)).set_function(|| pool() + 1.0);
    FN_POOL_BUSY.with((Pool::Write,)).set_function(|| 1.0);
}

fn pool_scenario() {
    let dir = TempDir::new("gauge-fn");
    promshard::multiprocess::init(dir.path()).unwrap();
    promshard::set_callback_interval(Duration::from_millis(20));
    // Registered once, before the fork, as an app does at start.
    register();
    POOL.store(1, Ordering::SeqCst);
    let wait = Duration::from_secs(20);
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(pool_worker)).collect();
    let pids: Vec<String> = workers.iter_mut().map(|w| w.ask("pid", wait)).collect();
    for (i, worker) in workers.iter_mut().enumerate() {
        assert_eq!(worker.ask(&format!("pool {}", 10 * (i + 1)), wait), "ok");
    }
    // The parent's own 1 and the workers' 10, 20 and 30.
    let sum = |text: &str| value_in(text, "fn_pool_idle", &[]);
    eventually("livesum over every live worker", |t| sum(t) == Some(61.0));
    eventually("liveall shows each", |t| {
        pids.iter()
            .enumerate()
            .all(|(i, pid)| value_in(t, "fn_pool_idle_each", &[("pid", pid)]) == Some(10.0 * (i as f64 + 1.0)))
    });
    eventually("livemax", |t| value_in(t, "fn_queue_max", &[]) == Some(60.0));
    eventually("labelled series", |t| {
        value_in(t, "fn_pool_busy", &[("pool", "read")]) == Some(1.0 + 1.0 + 11.0 + 21.0 + 31.0)
            && value_in(t, "fn_pool_busy", &[("pool", "write")]) == Some(4.0)
    });
    // A worker's pool changes: the scrape follows within the interval.
    assert_eq!(workers[0].ask("pool 15", wait), "ok");
    eventually("a changed pool", |t| sum(t) == Some(66.0));
    // A worker dies: its values drop out.
    workers[2].kill();
    eventually("a dead worker drops out", |t| {
        sum(t) == Some(36.0) && value_in(t, "fn_pool_idle_each", &[("pid", &pids[2])]).is_none()
    });
    eventually("and from livemax", |t| value_in(t, "fn_queue_max", &[]) == Some(40.0));
    // The parent's own value is read at its scrape, not an interval late.
    POOL.store(100, Ordering::SeqCst);
    assert_eq!(sum(&own_text()), Some(100.0 + 15.0 + 20.0));
    workers.remove(2);
    for worker in workers.iter_mut().rev() {
        worker.exit(wait).expect("the worker exits");
    }
}

#[test]
fn a_pool_shows_every_live_workers_function_values() {
    isolated("a_pool_shows_every_live_workers_function_values", Duration::from_secs(90), pool_scenario);
}

/// A gauge whose function misbehaves.
#[metric(mode = livesum)]
static FN_ROGUE: Gauge;

/// Another, set from inside a function.
#[metric(mode = livesum)]
static FN_SET_INSIDE: Gauge;

static CALLS: AtomicU64 = AtomicU64::new(0);

fn rogue_scenario(multiprocess: bool) {
    let _dir = multiprocess.then(|| {
        let dir = TempDir::new("gauge-fn-rogue");
        promshard::multiprocess::init(dir.path()).unwrap();
        dir
    });
    promshard::set_callback_interval(Duration::from_millis(5));
    FN_ROGUE.set_function(|| 7.0);
    assert_eq!(value_in(&own_text(), "fn_rogue", &[]), Some(7.0));
    // Panics from now on: the series keeps 7, every scrape answers, and
    // the panics are counted.
    FN_ROGUE.set_function(|| panic!("a gauge function bug"));
    let before = value_in(&own_text(), "promshard_set_function_panics_total", &[]).unwrap();
    for _ in 0..3 {
        let text = own_text();
        assert_eq!(value_in(&text, "fn_rogue", &[]), Some(7.0));
    }
    let after = value_in(&own_text(), "promshard_set_function_panics_total", &[]).unwrap();
    assert!(after >= before + 3.0, "{before} → {after}");
    // A function that scrapes and sets another function: not called
    // again from inside itself, no deadlock.
    FN_ROGUE.set_function(|| {
        CALLS.fetch_add(1, Ordering::SeqCst);
        let inner = own_text();
        FN_SET_INSIDE.set_function(|| 3.0);
        inner.len() as f64
    });
    let text = own_text();
    assert!(value_in(&text, "fn_rogue", &[]).unwrap() > 0.0);
    eventually("the function set from inside runs", |t| value_in(t, "fn_set_inside", &[]) == Some(3.0));
    assert!(CALLS.load(Ordering::SeqCst) >= 1);
}

#[test]
fn a_panicking_or_reentrant_function_costs_nothing_else() {
    isolated("a_panicking_or_reentrant_function_costs_nothing_else", Duration::from_secs(60), || rogue_scenario(false));
}

#[test]
fn a_panicking_or_reentrant_function_costs_nothing_else_multiprocess() {
    isolated("a_panicking_or_reentrant_function_costs_nothing_else_multiprocess", Duration::from_secs(60), || {
        rogue_scenario(true)
    });
}

fn fork_storm() {
    let dir = TempDir::new("gauge-fn-forks");
    promshard::multiprocess::init(dir.path()).unwrap();
    promshard::set_callback_interval(Duration::from_millis(1));
    register();
    POOL.store(1, Ordering::SeqCst);
    let wait = Duration::from_secs(10);
    // Forks while the refresher is calling functions: every child answers
    // and runs its own refresher.
    for round in 0..30 {
        let mut child = Worker::spawn(pool_worker);
        assert_eq!(child.ask(&format!("pool {}", 1000 + round), wait), "ok", "round {round}");
        let want = 1.0 + 1000.0 + round as f64;
        eventually("the child's refresher writes its shard", |t| value_in(t, "fn_pool_idle", &[]) == Some(want));
        child.exit(wait).expect("the child exits");
    }
}

#[test]
fn forks_while_functions_run_leave_every_child_working() {
    isolated("forks_while_functions_run_leave_every_child_working", Duration::from_secs(120), fork_storm);
}

/// Always fails.
#[metric(mode = livesum)]
static FN_ALWAYS_PANICS: Gauge;

fn forks_while_a_function_panics() {
    let dir = TempDir::new("gauge-fn-panic-forks");
    promshard::multiprocess::init(dir.path()).unwrap();
    promshard::set_callback_interval(Duration::from_millis(1));
    FN_ALWAYS_PANICS.set_function(|| panic!("the pool is gone"));
    // The pre-fork master forks while its refresher's function panics
    // (with RUST_BACKTRACE set, as in many deployments): every child must
    // answer its scrapes, which call the function (and panic) again.
    harness::forked_children_keep_scraping(60);
    let text = own_text();
    assert!(value_in(&text, "promshard_set_function_panics_total", &[]).unwrap() > 60.0);
    assert_eq!(value_in(&text, "fn_always_panics", &[]), Some(0.0));
}

#[test]
fn forks_while_a_function_panics_leave_every_child_working() {
    let setup = harness::Setup { env: vec![("RUST_BACKTRACE".into(), "1".into())], cwd: None };
    harness::isolated_with(
        "forks_while_a_function_panics_leave_every_child_working",
        Duration::from_secs(120),
        setup,
        forks_while_a_function_panics,
    );
}
