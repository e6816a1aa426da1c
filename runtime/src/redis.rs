//! Metrics whose one true value lives in Redis (feature `redis`): numbers
//! that must agree across workers and hosts ("signups today", "active
//! subscribers"), seed 000's pattern B, declared like any metric:
//!
//! ```no_run
//! use promshard::{Counter, metric};
//!
//! /// Signups, by plan, over every host.
//! #[metric(store = redis, labels(plan = ["free", "pro"]))]
//! static SIGNUPS_TOTAL: Counter;
//!
//! promshard::redis::configure(promshard::redis::Config::new("redis://127.0.0.1:6379/", "shop"));
//! SIGNUPS_TOTAL.with(("pro",)).inc();
//! ```
//!
//! Recording is one atomic add into this process's pending delta (a
//! gauge's `set` and the adds after it are kept together under a spin of
//! a few instructions): no network call on the caller's path. A thread per process (restarted in
//! forked children) sends the deltas every [`Config::flush_interval`]
//! (`INCRBY`, `INCRBYFLOAT`, `SET`, in one `MULTI`/`EXEC` round trip), and
//! a scrape sends its own process's first, then reads every declared key
//! with one `MGET` (never `KEYS`). Keys are
//! `metrics:{application}:{sample}{labels}`, so services sharing a Redis
//! never collide.
//!
//! When Redis is down or slow, deltas stay pending (nothing is lost while
//! the process lives) and are sent when it is back; a scrape waits at most
//! [`Config::timeout`] per connection step, leaves the Redis families out
//! and counts `promshard_collector_errors_total{collector="redis"}`. A
//! process that exits loses what it has not sent: at most one flush
//! interval, or nothing after [`flush`].
//!
//! Every label must have a fixed list of values (an inline list or a
//! `LabelValue` type): the keys a scrape reads are known in advance.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::collector::{Collector, MetricWriter};
use crate::descriptor::{Descriptor, Kind, Opts};
use crate::gate::GateCell;
use crate::instruments::counter::Counter;
use crate::label_set::LabelSet;
use crate::labels::LabelDomain;
use crate::longest_wait::LONGEST_WAIT;
use crate::metric::MetricCore;

/// Where the Redis metrics of this process live, and how long to wait.
#[derive(Clone, Debug)]
pub struct Config {
    url: String,
    application: String,
    timeout: Duration,
    flush_interval: Duration,
}

impl Config {
    /// Redis at `url` (`redis://host:port/db`), keys under
    /// `metrics:{application}:`; timeout 250 ms, flush every second.
    pub fn new(url: &str, application: &str) -> Config {
        Config {
            url: url.to_owned(),
            application: application.to_owned(),
            timeout: Duration::from_millis(250),
            flush_interval: Duration::from_secs(1),
        }
    }

    /// Bounds connecting, and each read and write, of one flush or scrape.
    /// A longer one than a century (`Duration::MAX` for "never") counts as
    /// a century.
    pub fn timeout(mut self, timeout: Duration) -> Config {
        self.timeout = timeout.clamp(Duration::from_millis(1), LONGEST_WAIT);
        self
    }

    /// How often each process sends its pending deltas (at most once a
    /// century).
    pub fn flush_interval(mut self, interval: Duration) -> Config {
        self.flush_interval = interval.clamp(Duration::from_millis(1), LONGEST_WAIT);
        self
    }
}

/// Under the gate, which a fork holds: a child never finds it locked.
static CONFIG: GateCell<Option<Config>> = GateCell::new(None);

/// Whether this process's flusher thread runs (reset in a forked child).
static FLUSHER: AtomicBool = AtomicBool::new(false);

/// Set while a flush is under way (reset in a forked child, whose copy
/// may say so of its parent's): one at a time, so that two cannot take
/// the same deltas, and never a lock a child could inherit held.
static FLUSHING: AtomicBool = AtomicBool::new(false);

// `REDIS_METRICS`, declared under this version's own name (see build.rs).
include!(concat!(env!("OUT_DIR"), "/redis_slice.rs"));

/// Sets where this process's Redis metrics live; call once at start,
/// before forking workers (they inherit it).
pub fn configure(config: Config) {
    let old = CONFIG.with(|c| c.replace(config));
    drop(old);
    crate::shard::fork::after_fork_in_child(after_fork_in_child);
    start_flusher();
}

fn config() -> Option<Config> {
    CONFIG.with(|c| c.clone())
}

/// Errors of scrape-time collectors, by collector.
static COLLECTOR_ERRORS: Counter<(CollectorName,)> = Counter::new(
    Opts::new("promshard_collector_errors", "Scrapes in which a collector could not read its source.")
        .labels(&["collector"]),
);

#[linkme::distributed_slice(crate::registry::METRICS)]
static COLLECTOR_ERRORS_ENTRY: &MetricCore = COLLECTOR_ERRORS.core();

#[derive(Clone, Copy)]
enum CollectorName {
    Redis,
}

impl crate::labels::LabelValue for CollectorName {
    const VALUES: &'static [&'static str] = &["redis"];
    fn index(self) -> usize {
        self as usize
    }
}

/// One change to send.
#[derive(Debug)]
enum Op {
    IncrBy(String, u64),
    IncrByFloat(String, f64),
    Set(String, f64),
}

/// What the flusher and the collector need of a Redis metric.
#[doc(hidden)]
pub trait RedisMetric: Sync {
    /// The declaration.
    fn descriptor(&self) -> &Descriptor;
    /// Takes every pending change, by series.
    #[doc(hidden)]
    fn take_pending(&self, out: &mut Vec<(usize, Pending)>);
    /// Puts back what could not be sent.
    #[doc(hidden)]
    fn restore(&self, series: usize, pending: Pending);
    /// Forgets the pending changes (a forked child's copy of its parent's).
    #[doc(hidden)]
    fn clear(&self);
}

/// A series' change waiting to be sent.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum Pending {
    /// A counter's increment.
    Count(u64),
    /// A gauge's last `set` (if any), then what was added after it.
    Gauge(Option<f64>, f64),
}

/// The bits of "no pending set" in a gauge's set slot: a NaN no `set`
/// stores (NaN sets are refused).
const NO_SET: u64 = 0x7ff8_dead_beef_0001;

/// The exposition name of a series, as its key's tail:
/// `signups_total{plan="pro"}`.
fn series_key(prefix: &str, desc: &Descriptor, series: usize) -> Option<String> {
    let mut values = Vec::with_capacity(desc.label_domains.len());
    let mut rest = series;
    for domain in desc.label_domains.iter().rev() {
        let LabelDomain::Values(list) = domain else { return None };
        values.push(list[rest % list.len()]);
        rest /= list.len();
    }
    values.reverse();
    let mut key = format!("{prefix}{}{}", desc.name, desc.kind.sample_suffix());
    if !values.is_empty() {
        let pairs: Vec<String> = desc
            .label_names
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
            .collect();
        key.push('{');
        key.push_str(&pairs.join(","));
        key.push('}');
    }
    Some(key)
}

/// Fails the build for a label without a fixed list of values.
const fn assert_fixed(domains: &[LabelDomain]) {
    let mut i = 0;
    while i < domains.len() {
        if let LabelDomain::Bounded { .. } = domains[i] {
            panic!("a Redis metric's labels need fixed lists of values: a scrape reads every key with one MGET");
        }
        i += 1;
    }
}

/// A counter whose value is the sum of every process's increments, kept
/// in Redis; declared with `#[metric(store = redis)]`.
pub struct RedisCounter<L: LabelSet = ()> {
    core: MetricCore,
    pending: OnceLock<Box<[AtomicU64]>>,
    labels: PhantomData<fn(L)>,
}

impl<L: LabelSet> RedisCounter<L> {
    /// Declares the counter; `opts` names one label per element of `L`.
    #[track_caller]
    pub const fn new(opts: Opts) -> Self {
        assert_fixed(L::DOMAINS);
        let desc = Descriptor::new(opts, Kind::Counter, L::DOMAINS, L::CARDINALITY, &[]);
        RedisCounter { core: MetricCore::new(desc), pending: OnceLock::new(), labels: PhantomData }
    }

    fn slots(&self) -> &[AtomicU64] {
        self.pending.get().unwrap_or_else(|| {
            first_recording();
            crate::gate::locked(|| {
                self.pending.get_or_init(|| (0..=L::CARDINALITY).map(|_| AtomicU64::new(0)).collect())
            })
        })
    }

    /// The series for one label combination.
    pub fn with(&'static self, labels: L::Values<'_>) -> RedisCounterSeries {
        let index = L::index(labels, &self.core).min(L::CARDINALITY);
        RedisCounterSeries { pending: &self.slots()[index] }
    }
}

impl RedisCounter<()> {
    /// Adds one.
    pub fn inc(&'static self) {
        self.with(()).inc()
    }

    /// Adds `n`.
    pub fn inc_by(&'static self, n: u64) {
        self.with(()).inc_by(n)
    }
}

/// One series of a [`RedisCounter`].
#[derive(Clone, Copy, Debug)]
pub struct RedisCounterSeries {
    pending: &'static AtomicU64,
}

impl RedisCounterSeries {
    /// Adds one.
    pub fn inc(self) {
        self.inc_by(1)
    }

    /// Adds `n`: sent with the next flush.
    pub fn inc_by(self, n: u64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
        start_flusher_if_needed();
    }
}

impl<L: LabelSet> RedisMetric for RedisCounter<L> {
    fn descriptor(&self) -> &Descriptor {
        self.core.descriptor()
    }

    fn take_pending(&self, out: &mut Vec<(usize, Pending)>) {
        let Some(slots) = self.pending.get() else { return };
        // The last slot holds refused label values: never sent.
        for (series, slot) in slots[..L::CARDINALITY].iter().enumerate() {
            let n = slot.swap(0, Ordering::AcqRel);
            if n != 0 {
                out.push((series, Pending::Count(n)));
            }
        }
    }

    fn restore(&self, series: usize, pending: Pending) {
        if let (Pending::Count(n), Some(slots)) = (pending, self.pending.get()) {
            slots[series].fetch_add(n, Ordering::AcqRel);
        }
    }

    fn clear(&self) {
        if let Some(slots) = self.pending.get() {
            slots.iter().for_each(|s| s.store(0, Ordering::Relaxed));
        }
    }
}

/// A gauge with one value for every process, kept in Redis; declared
/// with `#[metric(store = redis)]`.
pub struct RedisGauge<L: LabelSet = ()> {
    core: MetricCore,
    /// Three slots per series: the last pending `set` (or [`NO_SET`]),
    /// what was added since, and a lock word that keeps the two together
    /// (see [`GaugeSlots`]).
    pending: OnceLock<Box<[AtomicU64]>>,
    labels: PhantomData<fn(L)>,
}

/// A Redis gauge series' pending change: a `set` and what was added after
/// it must be read and changed together. Taken apart, a flush could pair
/// an older `set` with what was added after a newer one, and the newer
/// `set` would then arrive alone, its add lost. So each series has a
/// lock word, held for a few instructions by a recording or a flush (a
/// spin, never a wait on another thread's I/O). A forked child clears it
/// with the rest: a parent thread may have held it at the fork.
#[derive(Clone, Copy)]
struct GaugeSlots<'a> {
    set: &'a AtomicU64,
    delta: &'a AtomicU64,
    lock: &'a AtomicU64,
}

impl GaugeSlots<'_> {
    fn locked<R>(self, f: impl FnOnce() -> R) -> R {
        let mut spins = 0u32;
        while self.lock.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let result = f();
        self.lock.store(0, Ordering::Release);
        result
    }
}

impl<L: LabelSet> RedisGauge<L> {
    /// Declares the gauge; `opts` names one label per element of `L`.
    #[track_caller]
    pub const fn new(opts: Opts) -> Self {
        assert_fixed(L::DOMAINS);
        let desc = Descriptor::new(opts, Kind::Gauge, L::DOMAINS, L::CARDINALITY, &[]);
        RedisGauge { core: MetricCore::new(desc), pending: OnceLock::new(), labels: PhantomData }
    }

    fn slots(&'static self) -> &'static [AtomicU64] {
        self.pending.get().unwrap_or_else(|| {
            first_recording();
            crate::gate::locked(|| {
                self.pending.get_or_init(|| {
                    (0..=L::CARDINALITY)
                        .flat_map(|_| [AtomicU64::new(NO_SET), AtomicU64::new(0f64.to_bits()), AtomicU64::new(0)])
                        .collect()
                })
            })
        })
    }

    fn series_slots(slots: &[AtomicU64], index: usize) -> GaugeSlots<'_> {
        let s = &slots[3 * index..3 * index + 3];
        GaugeSlots { set: &s[0], delta: &s[1], lock: &s[2] }
    }

    /// The series for one label combination.
    pub fn with(&'static self, labels: L::Values<'_>) -> RedisGaugeSeries {
        let index = L::index(labels, &self.core).min(L::CARDINALITY);
        RedisGaugeSeries { slots: Self::series_slots(self.slots(), index) }
    }
}

impl RedisGauge<()> {
    /// Sets the value.
    pub fn set(&'static self, v: f64) {
        self.with(()).set(v)
    }

    /// Adds `v`.
    pub fn add(&'static self, v: f64) {
        self.with(()).add(v)
    }

    /// Adds one.
    pub fn inc(&'static self) {
        self.with(()).add(1.0)
    }

    /// Subtracts one.
    pub fn dec(&'static self) {
        self.with(()).add(-1.0)
    }
}

/// One series of a [`RedisGauge`].
#[derive(Clone, Copy)]
pub struct RedisGaugeSeries {
    slots: GaugeSlots<'static>,
}

impl core::fmt::Debug for RedisGaugeSeries {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RedisGaugeSeries").finish_non_exhaustive()
    }
}

impl RedisGaugeSeries {
    /// Sets the value (`SET` at the next flush; what was added before it
    /// is dropped, what is added after it goes on top). NaN is ignored.
    pub fn set(self, v: f64) {
        if v.is_nan() {
            return;
        }
        let slots = self.slots;
        slots.locked(|| {
            slots.delta.store(0f64.to_bits(), Ordering::Relaxed);
            slots.set.store(v.to_bits(), Ordering::Relaxed);
        });
        start_flusher_if_needed();
    }

    /// Adds `v` (`INCRBYFLOAT` at the next flush).
    pub fn add(self, v: f64) {
        if !v.is_finite() {
            return;
        }
        let slots = self.slots;
        slots.locked(|| {
            let sum = f64::from_bits(slots.delta.load(Ordering::Relaxed)) + v;
            slots.delta.store(sum.to_bits(), Ordering::Relaxed);
        });
        start_flusher_if_needed();
    }

    /// Subtracts `v`.
    pub fn sub(self, v: f64) {
        self.add(-v)
    }

    /// Adds one.
    pub fn inc(self) {
        self.add(1.0)
    }

    /// Subtracts one.
    pub fn dec(self) {
        self.add(-1.0)
    }
}

impl<L: LabelSet> RedisMetric for RedisGauge<L> {
    fn descriptor(&self) -> &Descriptor {
        self.core.descriptor()
    }

    fn take_pending(&self, out: &mut Vec<(usize, Pending)>) {
        let Some(slots) = self.pending.get() else { return };
        for series in 0..L::CARDINALITY {
            let g = Self::series_slots(slots, series);
            let (set, delta) = g.locked(|| {
                (g.set.swap(NO_SET, Ordering::Relaxed), f64::from_bits(g.delta.swap(0f64.to_bits(), Ordering::Relaxed)))
            });
            let set = (set != NO_SET).then(|| f64::from_bits(set));
            if set.is_some() || delta != 0.0 {
                out.push((series, Pending::Gauge(set, delta)));
            }
        }
    }

    fn restore(&self, series: usize, pending: Pending) {
        let (Pending::Gauge(set, delta), Some(slots)) = (pending, self.pending.get()) else { return };
        let g = Self::series_slots(slots, series);
        g.locked(|| {
            // A set made since wins over the one that could not be sent,
            // and over what was added before it.
            if g.set.load(Ordering::Relaxed) != NO_SET {
                return;
            }
            if let Some(v) = set {
                g.set.store(v.to_bits(), Ordering::Relaxed);
            }
            let sum = f64::from_bits(g.delta.load(Ordering::Relaxed)) + delta;
            g.delta.store(sum.to_bits(), Ordering::Relaxed);
        });
    }

    fn clear(&self) {
        if let Some(slots) = self.pending.get() {
            for triple in slots.chunks(3) {
                triple[0].store(NO_SET, Ordering::Relaxed);
                triple[1].store(0f64.to_bits(), Ordering::Relaxed);
                triple[2].store(0, Ordering::Relaxed);
            }
        }
    }
}

/// Before a metric's first pending delta exists: a child forked from now
/// on must forget its copy of this process's deltas, whether or not Redis
/// is configured yet (a worker that configures it after the fork would
/// otherwise send its parent's deltas again).
fn first_recording() {
    crate::shard::fork::after_fork_in_child(after_fork_in_child);
}

fn prefix(config: &Config) -> String {
    format!("metrics:{}:", config.application)
}

/// Connects to the configured Redis within its timeout, the name lookup
/// included: the redis crate looks a host name up with the system's
/// resolver, which no timeout bounds (a DNS server that does not answer
/// held `flush()` for as long as the resolver's own retries), so a name is
/// looked up here first, within the timeout, and each address it gives is
/// tried in turn.
fn connect(config: &Config) -> redis::RedisResult<redis::Connection> {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    let info = config.url.as_str().into_connection_info()?;
    let addresses = match info.addr() {
        ConnectionAddr::Tcp(host, port) if host.parse::<std::net::IpAddr>().is_err() => {
            let (host, port) = (host.clone(), *port);
            let lookup = move || std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map(Vec::from_iter);
            let found = resolve_within(config.timeout, lookup).map_err(|e| {
                redis::RedisError::from(std::io::Error::new(e.kind(), format!("looking up the Redis host: {e}")))
            })?;
            found.into_iter().map(|a| info.clone().set_addr(ConnectionAddr::Tcp(a.ip().to_string(), port))).collect()
        }
        _ => vec![info],
    };
    let mut last = None;
    for info in addresses {
        match redis::Client::open(info).and_then(|c| c.get_connection_with_timeout(config.timeout)) {
            Ok(connection) => {
                connection.set_read_timeout(Some(config.timeout))?;
                connection.set_write_timeout(Some(config.timeout))?;
                return Ok(connection);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::NotFound, "the Redis host has no address"))
    }))
}

/// What `lookup` returns, if it returns within `timeout`: it runs on a
/// thread of its own, left to finish alone when it does not (a lookup
/// cannot be cancelled).
fn resolve_within<T: Send + 'static>(
    timeout: Duration,
    lookup: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("promshard-redis-lookup".into()).spawn(move || {
        let _ = tx.send(lookup());
    })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}"))),
    }
}

/// Sends this process's pending changes now: call before a clean exit so
/// that nothing waits for a flush that will not come.
pub fn flush() -> Result<(), String> {
    let Some(config) = config() else { return Ok(()) };
    // A flush under way (the flusher's) may have taken deltas recorded
    // before this call: it is waited for, then what is left is sent. It
    // ends within its own timeouts (connecting, writing, reading, each
    // bounded), or it is given up on.
    let deadline = std::time::Instant::now() + config.timeout.saturating_mul(4) + Duration::from_millis(100);
    while FLUSHING.swap(true, Ordering::AcqRel) {
        if std::time::Instant::now() >= deadline {
            return Err("another flush of Redis metrics is still under way".to_owned());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let result = flush_with(&config, &mut None);
    FLUSHING.store(false, Ordering::Release);
    result
}

/// The flusher's round: skipped when another thread is sending. `kept`
/// is the flusher's connection, kept between rounds.
fn flush_if_idle(kept: &mut Option<Kept>) -> Result<(), String> {
    let Some(config) = config() else { return Ok(()) };
    if FLUSHING.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let result = flush_with(&config, kept);
    FLUSHING.store(false, Ordering::Release);
    result
}

/// A connection the flusher keeps between rounds, with the address it
/// was opened to. It lives on the flusher thread's stack: a forked child
/// (which shares the socket, and whose flusher is a new thread) never
/// sees it, so two processes never talk over one connection.
type Kept = (String, redis::Connection);

/// Sends `pipe` over the kept connection, or a new one; keeps the
/// connection after a whole answer only (one that failed in any way may
/// be out of step with the server, and is closed).
fn send(
    config: &Config,
    kept: &mut Option<Kept>,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> {
    let mut connection = match kept.take() {
        Some((url, connection)) if url == config.url => connection,
        _ => connect(config)?,
    };
    let answer = pipe.query::<Vec<redis::RedisResult<redis::Value>>>(&mut connection);
    if answer.is_ok() {
        *kept = Some((config.url.clone(), connection));
    }
    answer
}

fn flush_with(config: &Config, kept: &mut Option<Kept>) -> Result<(), String> {
    let prefix = prefix(config);
    let mut taken: Vec<(&'static dyn RedisMetric, usize, Pending)> = Vec::new();
    for metric in REDIS_METRICS {
        let mut pending = Vec::new();
        metric.take_pending(&mut pending);
        taken.extend(pending.into_iter().map(|(s, p)| (*metric, s, p)));
    }
    if taken.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    // Redis runs every command of a transaction even when one fails (a
    // key someone else stored another type at, an overflow): the outcome
    // of each is read, and only what failed is kept for later. Resending
    // the whole batch would count every other series again.
    pipe.atomic().ignore_errors();
    // For each command, the index in `taken` of the change it sends.
    let mut sent_by: Vec<usize> = Vec::new();
    for (at, (metric, series, pending)) in taken.iter().enumerate() {
        let Some(key) = series_key(&prefix, metric.descriptor(), *series) else { continue };
        let op = match *pending {
            Pending::Count(n) => vec![Op::IncrBy(key, n)],
            Pending::Gauge(set, delta) => {
                let mut ops: Vec<Op> = set.map(|v| Op::Set(key.clone(), v)).into_iter().collect();
                if delta != 0.0 {
                    ops.push(Op::IncrByFloat(key, delta));
                }
                ops
            }
        };
        for op in op {
            match op {
                Op::IncrBy(key, n) => pipe.cmd("INCRBY").arg(key).arg(n),
                Op::IncrByFloat(key, d) => pipe.cmd("INCRBYFLOAT").arg(key).arg(d),
                Op::Set(key, v) => pipe.cmd("SET").arg(key).arg(v),
            };
            sent_by.push(at);
        }
    }
    let sent = send(config, kept, &pipe);
    let outcomes = match sent {
        Ok(outcomes) if outcomes.len() == sent_by.len() => outcomes,
        Ok(_) | Err(_) => {
            // Nothing was applied (or the answer was lost): kept for the
            // next flush, so nothing is lost while we live.
            for (metric, series, pending) in taken {
                metric.restore(series, pending);
            }
            return Err(match sent {
                Err(e) => e.to_string(),
                Ok(_) => "Redis answered the transaction with the wrong number of replies".to_owned(),
            });
        }
    };
    // A gauge's `SET` and `INCRBYFLOAT` travel together: what failed of
    // a series is kept.
    let mut failed: Vec<(usize, String)> = Vec::new();
    for (at, outcome) in sent_by.iter().zip(&outcomes) {
        if let Err(e) = outcome
            && failed.last().is_none_or(|(f, _)| f != at)
        {
            failed.push((*at, e.to_string()));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    let mut first = None;
    for (at, error) in &failed {
        let (metric, series, pending) = taken[*at];
        // What of the series did succeed is not sent again: a gauge whose
        // `SET` went through keeps only its delta.
        let commands: Vec<&redis::RedisResult<redis::Value>> =
            sent_by.iter().zip(&outcomes).filter(|(a, _)| *a == at).map(|(_, o)| o).collect();
        let left = match pending {
            Pending::Gauge(Some(_), delta) if commands.first().is_some_and(|o| o.is_ok()) => {
                Pending::Gauge(None, delta)
            }
            other => other,
        };
        metric.restore(series, left);
        let key = series_key(&prefix, metric.descriptor(), series).unwrap_or_default();
        first.get_or_insert_with(|| format!("{key}: {error}"));
    }
    Err(format!(
        "{} of {} series refused by Redis and kept for later (first: {})",
        failed.len(),
        taken.len(),
        first.unwrap_or_default()
    ))
}

fn start_flusher_if_needed() {
    if !FLUSHER.load(Ordering::Relaxed) {
        start_flusher();
    }
}

fn start_flusher() {
    let Some(config) = config() else { return };
    if FLUSHER.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new().name("promshard-redis".into()).spawn(move || {
        // Said when it changes, not at every flush while Redis is down.
        let mut last_error: Option<String> = None;
        let mut kept = None;
        loop {
            std::thread::sleep(config.flush_interval);
            match flush_if_idle(&mut kept) {
                Ok(()) if last_error.take().is_some() => crate::notice::info("Redis metrics are sent again"),
                Ok(()) => {}
                Err(e) if last_error.as_ref() != Some(&e) => {
                    crate::notice::warn(format!("Redis metrics could not be sent (kept for later): {e}"));
                    last_error = Some(e);
                }
                Err(_) => {}
            }
        }
    });
    if spawned.is_err() {
        FLUSHER.store(false, Ordering::Release);
    }
}

/// A forked child: its copy of the parent's pending deltas is the
/// parent's to send, and the parent's flusher did not come along.
fn after_fork_in_child() {
    for metric in REDIS_METRICS {
        metric.clear();
    }
    FLUSHING.store(false, Ordering::Release);
    FLUSHER.store(false, Ordering::Release);
    start_flusher();
}

/// Reads every declared key at scrape time, after sending this process's
/// own pending changes.
struct RedisCollector;

impl Collector for RedisCollector {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        if REDIS_METRICS.is_empty() {
            return;
        }
        let Some(config) = config() else { return };
        let prefix = prefix(&config);
        let keyed: Vec<(&'static dyn RedisMetric, Vec<String>)> = REDIS_METRICS
            .iter()
            .map(|m| {
                let desc = m.descriptor();
                (*m, (0..desc.series).filter_map(|s| series_key(&prefix, desc, s)).collect())
            })
            .collect();
        let keys: Vec<&String> = keyed.iter().flat_map(|(_, k)| k).collect();
        // A failed flush keeps its deltas for later; the read goes on.
        let _ = flush();
        let values =
            connect(&config).and_then(|mut c| redis::cmd("MGET").arg(&keys).query::<Vec<Option<String>>>(&mut c));
        let values = match values {
            Ok(values) if values.len() == keys.len() => values,
            Ok(_) | Err(_) => {
                COLLECTOR_ERRORS.with((CollectorName::Redis,)).inc();
                if let Err(e) = values {
                    crate::notice::warn(format!("Redis metrics left out of this scrape: {e}"));
                }
                return;
            }
        };
        let mut values = values.into_iter();
        for (metric, keys) in keyed {
            let desc = metric.descriptor();
            let mut family = match desc.kind {
                Kind::Counter => out.counter(desc.name, desc.help),
                _ => out.gauge(desc.name, desc.help),
            };
            for (series, key) in keys.iter().enumerate() {
                // No key yet: nothing was counted. A key holding something
                // else than a number is left out, not shown as a reset.
                let value = match values.next().flatten() {
                    None => 0.0,
                    Some(text) => match text.parse::<f64>() {
                        Ok(value) => value,
                        Err(_) => {
                            crate::notice::warn_once(&format!("Redis key {key} does not hold a number: left out"));
                            continue;
                        }
                    },
                };
                let labels = labels_of(desc, series);
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, *v)).collect();
                family.sample(&pairs, value);
            }
        }
    }

    fn name(&self) -> &str {
        "redis"
    }
}

fn labels_of(desc: &Descriptor, series: usize) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::with_capacity(desc.label_domains.len());
    let mut rest = series;
    for (name, domain) in desc.label_names.iter().zip(desc.label_domains).rev() {
        if let LabelDomain::Values(list) = domain {
            out.push((*name, list[rest % list.len()]));
            rest /= list.len();
        }
    }
    out.reverse();
    out
}

#[linkme::distributed_slice(crate::collector::COLLECTORS)]
static REDIS_COLLECTOR: &dyn Collector = &RedisCollector;

#[cfg(test)]
mod lookup_tests {
    use super::resolve_within;
    use std::time::{Duration, Instant};

    #[test]
    fn a_lookup_that_does_not_answer_is_given_up_on_at_the_timeout() {
        let started = Instant::now();
        let slow = resolve_within(Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(3));
            Ok(1)
        });
        assert_eq!(slow.map_err(|e| e.kind()), Err(std::io::ErrorKind::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
        assert_eq!(resolve_within(Duration::from_secs(5), || Ok(7)).unwrap(), 7);
        let failed = resolve_within::<()>(Duration::from_secs(5), || Err(std::io::ErrorKind::NotFound.into()));
        assert_eq!(failed.map_err(|e| e.kind()), Err(std::io::ErrorKind::NotFound));
    }
}
