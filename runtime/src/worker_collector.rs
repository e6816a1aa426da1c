//! Collectors that run in every worker of a pool: a per-worker resource
//! (each worker's connection pool, its queue) reported for every live
//! worker, whichever process answers the scrape.
//!
//! A plain [`Collector`](crate::Collector) runs only in the process that
//! answers a scrape. One registered with [`register_worker_collector`]
//! also runs, in multiprocess mode, every
//! [`callback_interval`](crate::callback_interval) in each process, from a
//! thread of its own (restarted in forked children); its families are
//! written to a small file beside the process's shard,
//! `.collected-<shard>.w` (replaced whole, by rename). A scrape runs its
//! own process's collectors afresh, reads the files of the other live
//! workers (a file whose shard is no longer held by a live process is
//! removed), and combines each family's samples by the mode it was
//! registered with: `liveall` adds a `pid` label, `livesum` adds,
//! `livemax` and `livemin` keep the extreme, `livemostrecent` the value
//! of the file written last. Dead workers never count. Another worker's
//! values are at most one interval old.
//!
//! Counters, gauges and info families combine in every mode; histograms
//! in `liveall` and `livesum` only (others are left out with a warning).
//! In memory mode the collectors simply run at each scrape.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::collector::{Captured, CapturedSample, Collector, MetricWriter, Target};
use crate::descriptor::{GaugeMode, Kind};
use crate::gate::GateCell;

type Registered = (Arc<dyn Collector>, GaugeMode);

static COLLECTORS: GateCell<Vec<Registered>> = GateCell::new(Vec::new());

/// Whether this process's publishing thread runs (reset in a forked child).
static PUBLISHER: AtomicBool = AtomicBool::new(false);

const PREFIX: &str = ".collected-";
const SUFFIX: &str = ".w";

/// Registers `collector` to run in every worker of a multiprocess pool,
/// its families combined over the live workers by `mode` (one of the
/// gauge modes; `LiveAll` adds a `pid` label, `LiveSum` adds values …).
///
/// ```
/// use promshard::{Collector, GaugeMode, MetricWriter};
///
/// struct PoolStats;
/// impl Collector for PoolStats {
///     fn collect(&self, out: &mut MetricWriter<'_>) {
///         out.gauge("db_pool_idle", "Idle connections of this worker's pool.").sample(&[], 4.0);
///     }
/// }
///
/// promshard::register_worker_collector(PoolStats, GaugeMode::LiveAll);
/// assert_eq!(promshard::testing::sample_value("db_pool_idle", &[]), Some(4.0));
/// ```
pub fn register_worker_collector(collector: impl Collector, mode: GaugeMode) {
    crate::user_code::install();
    let collector: Arc<dyn Collector> = Arc::new(collector);
    COLLECTORS.with(|list| list.push((collector, mode)));
    crate::shard::fork::after_fork_in_child(after_fork_in_child);
    start_publisher();
}

fn registered() -> Vec<Registered> {
    COLLECTORS.with(|list| list.clone())
}

/// Runs this process's worker collectors; each family with its mode.
fn capture(collectors: &[Registered]) -> Vec<(Captured, GaugeMode)> {
    let registry = crate::registry::get();
    let mut out = Vec::new();
    for (collector, mode) in collectors {
        let mut families = Vec::new();
        let mut writer = MetricWriter::new(Target::Capture(&mut families), &registry.sample_names);
        crate::collector::run(collector.as_ref(), &mut writer);
        drop(writer);
        out.extend(families.into_iter().map(|f| (f, *mode)));
    }
    out
}

/// The side file of the shard called `shard_name` in `dir`.
fn side_file(dir: &Path, shard_name: &str) -> PathBuf {
    dir.join(format!("{PREFIX}{shard_name}{SUFFIX}"))
}

/// Writes this process's families beside its shard (replaced whole).
fn publish() {
    let Some(own) = crate::shard::own() else { return };
    // A forked child that could not make its shard records into private
    // memory, and the shard name it still has is its parent's: it has no
    // file of its own to publish beside (and must not write its parent's).
    if crate::shard::fork::FAILED.load(Ordering::Relaxed) {
        return;
    }
    let collectors = registered();
    if collectors.is_empty() {
        return;
    }
    let text = serialize(&capture(&collectors));
    let path = side_file(&own.dir, &own.file_name());
    let part = path.with_extension("w.part");
    let written = std::fs::File::create(&part)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&part, &path));
    // Said once per change of the error (a full disk fails every
    // interval), and again after a success.
    match written {
        Ok(()) => crate::notice::recovered("publish"),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            let message = format!("worker collectors not published ({e}): this worker's values are missing");
            if crate::notice::changed("publish", &message) {
                crate::notice::warn(message);
            }
        }
    }
}

pub(crate) fn start_publisher() {
    if PUBLISHER.load(Ordering::Acquire)
        || crate::shard::configured_dir().is_none()
        || COLLECTORS.with(|c| c.is_empty())
    {
        return;
    }
    if PUBLISHER.swap(true, Ordering::AcqRel) {
        return;
    }
    spawn_publisher();
}

fn spawn_publisher() {
    PUBLISHER.store(true, Ordering::Release);
    let spawned = std::thread::Builder::new().name("promshard-workers".into()).spawn(|| {
        // A worker that has recorded nothing yet has no shard: this makes
        // it, as a first recording would, so the worker can be told live.
        crate::registry::get();
        loop {
            publish();
            std::thread::sleep(crate::instruments::callback::interval());
        }
    });
    if spawned.is_err() {
        PUBLISHER.store(false, Ordering::Release);
    }
}

/// The parent's publisher did not come along; the child's is started
/// without reading the environment (a lock another thread of the parent
/// may have held at the fork).
fn after_fork_in_child() {
    if PUBLISHER.swap(false, Ordering::AcqRel) {
        spawn_publisher();
    }
}

/// Writes the worker collectors' families into a scrape: this process's
/// afresh, combined with the live workers' published ones.
pub(crate) fn write(writer: &mut MetricWriter<'_>) {
    let collectors = registered();
    if collectors.is_empty() {
        return;
    }
    // Started here too in case the directory came from the environment
    // after registration.
    start_publisher();
    let Some(own) = crate::shard::own() else {
        for (collector, _) in &collectors {
            crate::collector::run(collector.as_ref(), writer);
        }
        return;
    };
    let own_families = (std::process::id(), capture(&collectors));
    let others = read_live(&own.dir, Some(&own.file_name()), true);
    for family in combine(others, Some(own_families)) {
        emit(writer, &family);
    }
}

/// Writes the worker collectors' families of shard directory `dir` for a
/// reader of it ([`crate::multiprocess::encode_dir`]: `promshard serve`,
/// `dump`, `Pusher::directory`): the live workers' published files,
/// combined by their modes, and this process's own collectors afresh if
/// it holds a shard there. Nothing is removed: readers change nothing.
pub(crate) fn write_dir(writer: &mut MetricWriter<'_>, dir: &Path, own: Option<&'static crate::shard::OwnShard>) {
    let own_name = own.map(|o| o.file_name());
    let collectors = registered();
    let own_families = (own.is_some() && !collectors.is_empty()).then(|| (std::process::id(), capture(&collectors)));
    let others = read_live(dir, own_name.as_deref(), false);
    for family in combine(others, own_families) {
        emit(writer, &family);
    }
}

/// The published families of every other live worker of `dir`, oldest
/// file first; files of shards no live process holds are removed when
/// `remove` says so.
fn read_live(dir: &Path, own_name: Option<&str>, remove: bool) -> Vec<(u32, Vec<(Captured, GaugeMode)>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let siblings = crate::linked::siblings();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else { continue };
        // A file being written (or left half written by a worker that
        // died writing it): removed with its worker, never read.
        let (shard, partial) = match rest.strip_suffix(".w.part") {
            Some(shard) => (shard, true),
            None => match rest.strip_suffix(SUFFIX) {
                Some(shard) => (shard, false),
                None => continue,
            },
        };
        if Some(shard) == own_name {
            continue;
        }
        let shard_path = dir.join(shard);
        // Another promshard version of this process: alive, and never
        // opened (closing a descriptor of it would drop the liveness lock
        // this process holds on it; and a lock of our own is invisible
        // to F_GETLK, so the shard would pass for dead).
        let holder = if siblings.contains(&shard_path) {
            Ok(Ok(Some(std::process::id())))
        } else {
            std::fs::File::open(&shard_path).map(|f| crate::shard::file::holder(&f))
        };
        let pid = match holder {
            Ok(Ok(Some(pid))) => pid,
            // The shard is gone or held by no one: its worker is dead.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if remove {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            Ok(Ok(None)) => {
                if remove {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            // Cannot tell (out of descriptors): left out of this scrape.
            _ => continue,
        };
        if partial {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        match parse(&text) {
            Some(families) => found.push((modified, pid, families)),
            None => crate::notice::warn(format!("{} is not a worker collector file: left out", entry.path().display())),
        }
    }
    found.sort_by_key(|(modified, pid, _)| (*modified, *pid));
    found.into_iter().map(|(_, pid, families)| (pid, families)).collect()
}

/// One family over every worker, ready to write.
struct Combined {
    kind: Kind,
    name: String,
    help: String,
    samples: Vec<CapturedSample>,
}

/// Combines the workers' families by their modes; `others` come oldest
/// file first, and this process's own (the freshest) last: `mostrecent`
/// takes the last value seen.
fn combine(
    mut inputs: Vec<(u32, Vec<(Captured, GaugeMode)>)>,
    own: Option<(u32, Vec<(Captured, GaugeMode)>)>,
) -> Vec<Combined> {
    inputs.extend(own);
    let mut families: BTreeMap<String, (Combined, GaugeMode, BTreeMap<SampleKey, f64>)> = BTreeMap::new();
    for (pid, captured) in inputs {
        for (family, mode) in captured {
            let entry = families.entry(family.name.clone()).or_insert_with(|| {
                let combined = Combined {
                    kind: family.kind,
                    name: family.name.clone(),
                    help: family.help.clone(),
                    samples: Vec::new(),
                };
                (combined, mode, BTreeMap::new())
            });
            if entry.0.kind != family.kind {
                crate::notice::warn(format!("worker collector family `{}` has two types: one kept", family.name));
                continue;
            }
            for sample in family.samples {
                let mut labels = sample.labels;
                if entry.1.is_per_process() {
                    labels.push(("pid".to_owned(), pid.to_string()));
                }
                let key = (sample.suffix, labels, sample.le);
                let value = sample.value;
                entry
                    .2
                    .entry(key)
                    .and_modify(|v| {
                        *v = match entry.1 {
                            GaugeMode::Sum | GaugeMode::LiveSum => *v + value,
                            GaugeMode::Max | GaugeMode::LiveMax => v.max(value),
                            GaugeMode::Min | GaugeMode::LiveMin => v.min(value),
                            // Per process (a pid each) or the most recent.
                            _ => value,
                        }
                    })
                    .or_insert(value);
            }
        }
    }
    families
        .into_values()
        .filter_map(|(mut combined, mode, samples)| {
            let sums = matches!(mode, GaugeMode::Sum | GaugeMode::LiveSum) || mode.is_per_process();
            if combined.kind == Kind::Histogram && !sums {
                crate::notice::warn(format!(
                    "worker collector histogram `{}` left out: histograms combine by sum or per process only",
                    combined.name
                ));
                return None;
            }
            combined.samples = samples
                .into_iter()
                .map(|((suffix, labels, le), value)| CapturedSample { suffix, labels, le, value })
                .collect();
            Some(combined)
        })
        .collect()
}

type SampleKey = (String, Vec<(String, String)>, Option<String>);

/// A histogram series put back together: cumulative buckets and the sum.
type HistogramSeries = (Vec<(f64, u64)>, f64);

fn emit(writer: &mut MetricWriter<'_>, family: &Combined) {
    let mut out = match family.kind {
        Kind::Counter => writer.counter(&family.name, &family.help),
        Kind::Histogram => writer.histogram(&family.name, &family.help),
        Kind::Info => writer.info(&family.name, &family.help),
        _ => writer.gauge(&family.name, &family.help),
    };
    if family.kind != Kind::Histogram {
        for sample in &family.samples {
            let labels: Vec<(&str, &str)> = sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            out.sample(&labels, sample.value);
        }
        return;
    }
    // Buckets, count and sum back together, per label set.
    let mut series: BTreeMap<&[(String, String)], HistogramSeries> = BTreeMap::new();
    for sample in &family.samples {
        let entry = series.entry(&sample.labels[..]).or_default();
        match (sample.suffix.as_str(), &sample.le) {
            ("_bucket", Some(le)) => {
                let bound = match le.as_str() {
                    "+Inf" => f64::INFINITY,
                    other => other.parse().unwrap_or(f64::NAN),
                };
                if !bound.is_nan() {
                    entry.0.push((bound, sample.value as u64));
                }
            }
            ("_sum", None) => entry.1 = sample.value,
            _ => {}
        }
    }
    for (labels, (mut buckets, sum)) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        out.histogram(&labels, &buckets, sum);
    }
}

/// The side file's text: a line per family and per sample, fields split
/// by tabs, with `\t`, `\n` and `\\` escaped.
fn serialize(families: &[(Captured, GaugeMode)]) -> String {
    let mut out = String::from("promshard-worker-collectors 1\n");
    for (family, mode) in families {
        out.push_str(&format!(
            "F\t{}\t{}\t{}\t{}\n",
            kind_code(family.kind),
            mode.as_str(),
            escape(&family.name),
            escape(&family.help)
        ));
        for s in &family.samples {
            out.push_str(&format!(
                "S\t{}\t{}\t{:016x}",
                escape(&s.suffix),
                s.le.as_deref().map_or("-".to_owned(), escape),
                s.value.to_bits()
            ));
            for (k, v) in &s.labels {
                out.push_str(&format!("\t{}\t{}", escape(k), escape(v)));
            }
            out.push('\n');
        }
    }
    out
}

fn parse(text: &str) -> Option<Vec<(Captured, GaugeMode)>> {
    let mut lines = text.lines();
    if lines.next()? != "promshard-worker-collectors 1" {
        return None;
    }
    let mut out: Vec<(Captured, GaugeMode)> = Vec::new();
    for line in lines {
        let fields: Vec<String> = line.split('\t').map(unescape).collect();
        match fields.first()?.as_str() {
            "F" if fields.len() == 5 => {
                let kind = kind_of(&fields[1])?;
                let mode = GaugeMode::from_name(&fields[2])?;
                out.push((
                    Captured { kind, name: fields[3].clone(), help: fields[4].clone(), samples: Vec::new() },
                    mode,
                ));
            }
            "S" if fields.len() >= 4 && fields.len() % 2 == 0 => {
                let value = f64::from_bits(u64::from_str_radix(&fields[3], 16).ok()?);
                let le = (fields[2] != "-").then(|| fields[2].clone());
                let labels = fields[4..].chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                out.last_mut()?.0.samples.push(CapturedSample { suffix: fields[1].clone(), labels, le, value });
            }
            _ => return None,
        }
    }
    Some(out)
}

fn kind_code(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "c",
        Kind::Histogram => "h",
        Kind::Info => "i",
        _ => "g",
    }
}

fn kind_of(code: &str) -> Option<Kind> {
    Some(match code {
        "c" => Kind::Counter,
        "h" => Kind::Histogram,
        "i" => Kind::Info,
        "g" => Kind::Gauge,
        _ => return None,
    })
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n")
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_read_back_what_was_written() {
        let family = Captured {
            kind: Kind::Gauge,
            name: "pool.idle".into(),
            help: "Tabs\tand\nlines \\ too".into(),
            samples: vec![CapturedSample {
                suffix: String::new(),
                labels: vec![("a".into(), "x\ty\\".into())],
                le: None,
                value: -0.0,
            }],
        };
        let text = serialize(&[(family.clone(), GaugeMode::LiveMax)]);
        let back = parse(&text).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, family);
        assert_eq!(back[0].0.samples[0].value.to_bits(), (-0.0f64).to_bits());
        assert_eq!(back[0].1, GaugeMode::LiveMax);
        assert!(parse("garbage").is_none());
        assert!(parse("promshard-worker-collectors 1\nS\tx").is_none());
    }
}
