//! The process-wide list of metrics, laid out once on first use.
//!
//! Declared metrics come from the [`METRICS`] distributed slice: no
//! registration call and no code before `main`. The first recording or
//! scrape walks the slice, sorts it by name, gives every series a fixed slot
//! in one arena and caches each metric's base address. Scrape-time
//! collectors are listed separately (`collector`).
//!
//! The recording paths that may have to lay the registry out first (a
//! metric's slot address, a bounded label's string table, a refused label
//! value's count) are methods of [`MetricCore`] defined here, so that the
//! metric itself knows nothing of the registry above it.
//!
//! The layout also builds promshard's per-metric counts of itself
//! ([`Tallies`]) and hides the built-in counters only a shard gives
//! meaning to when this process records in memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use core::sync::atomic::AtomicU64;

use crate::arena::{Arena, MemoryArena};
use crate::descriptor::{Descriptor, Kind, Opts};
use crate::encode::plan::FamilyPlan;
use crate::gate::GateCell;
use crate::interner::Interner;
use crate::labels::LabelDomain;
use crate::metric::MetricCore;

// `METRICS`, declared under this version's own name (see build.rs).
include!(concat!(env!("OUT_DIR"), "/metrics_slice.rs"));

/// A laid-out metric: where its slots are and how to render it.
pub(crate) struct Family {
    pub(crate) core: &'static MetricCore,
    pub(crate) offset: usize,
    pub(crate) plan: FamilyPlan,
}

pub(crate) struct Registry {
    /// Exposed metrics, sorted by name.
    pub(crate) families: Vec<Family>,
    pub(crate) arena: Box<dyn Arena>,
    problems: Vec<RegistryError>,
    /// Metrics used without a slice entry, each with its own arena. Under
    /// the gate: a fork must never find it locked.
    pub(crate) unregistered: GateCell<Vec<(Family, Box<dyn Arena>)>>,
    /// Sample names already taken, to refuse clashing collector output.
    pub(crate) sample_names: HashMap<String, usize>,
    /// When the slots were laid out (Unix nanoseconds), before anything
    /// was recorded in them: in process memory, when every counter and
    /// histogram started counting.
    pub(crate) started_nanos: u64,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The family name of `promshard_shard_errors_total`, declared beside the
/// merge that counts it.
pub(crate) const SHARD_ERRORS_METRIC: &str = "promshard_shard_errors";

/// Built-in counters that only a shard gives meaning to, hidden unless
/// this process records in one: forked children that could not make a
/// shard of their own (counted by the fork handler, in the shard), and
/// shard files a scrape of the directory skipped.
const MULTIPROCESS_ONLY: [&str; 2] = [crate::shard::fork::FALLBACKS_METRIC, SHARD_ERRORS_METRIC];

fn multiprocess_only(core: &MetricCore) -> bool {
    MULTIPROCESS_ONLY.contains(&core.descriptor().name)
}

/// Orders metrics as they are exposed (and as clashes are decided).
fn by_name(a: &&'static MetricCore, b: &&'static MetricCore) -> core::cmp::Ordering {
    let (a, b) = (a.descriptor(), b.descriptor());
    (a.name, a.file, a.line).cmp(&(b.name, b.file, b.line))
}

/// Whether the registry was laid out (and so the storage chosen).
pub(crate) fn is_laid_out() -> bool {
    REGISTRY.get().is_some()
}

/// The registry, laid out on first call.
pub(crate) fn get() -> &'static Registry {
    // Laid out under the gate, so that fork() never catches the layout
    // half done (a child would wait on the OnceLock forever).
    REGISTRY.get().unwrap_or_else(|| crate::gate::locked(|| REGISTRY.get_or_init(|| layout(&METRICS))))
}

fn layout(declared: &[&'static MetricCore]) -> Registry {
    // A forked child repairs the exemplars of the slots it keeps (read
    // from `REGISTRY` once it is set; nothing before).
    crate::shard::fork::repair_slots_in_child(clear_interrupted_exemplars);
    let started_nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    // The handler families are metrics like the declared ones, built from
    // the `#[instrument_handler]` sites.
    let handlers = crate::handler::layout::lay_out(&crate::handler::layout::HANDLERS);
    let mut sorted: Vec<&'static MetricCore> = declared.iter().chain(&handlers.cores).copied().collect();
    sorted.sort_by(by_name);
    // The slice can hold the same core twice when a library is linked in
    // twice under one name; that is one metric, not a clash.
    sorted.dedup_by(|a, b| core::ptr::eq(*a, *b));
    let multiprocess = crate::shard::configured_dir().is_some();
    // Counted only in a shard (by the fork handler, by the directory's
    // scrape): meaningless in memory.
    let (mut sorted, mut hidden): (Vec<_>, Vec<_>) =
        sorted.into_iter().partition(|core| multiprocess || !multiprocess_only(core));
    // promshard's counts of itself per metric are families like the
    // others, built from the metrics they count.
    let tallies = Tallies::lay_out(&sorted);
    sorted.extend(tallies.cores());
    sorted.sort_by(by_name);

    let mut problems = Vec::new();
    for (family, message) in &handlers.problems {
        crate::notice::error(format!("handler family `{family}`: {message}"));
        problems.push(RegistryError::HandlerFamily { family: family.clone(), message: message.clone() });
    }
    let mut sample_names: HashMap<String, usize> = HashMap::new();
    let mut exposed: Vec<&'static MetricCore> = Vec::with_capacity(sorted.len());
    for core in sorted {
        let desc = core.descriptor();
        if let Some((first, second)) = crate::encode::names::label_clash(desc.label_names) {
            let error = RegistryError::LabelNameClash {
                metric: desc.name.to_owned(),
                first: first.to_owned(),
                second: second.to_owned(),
                at: location(desc),
            };
            crate::notice::error(format!("{error}; the metric is not exposed"));
            problems.push(error);
            hidden.push(core);
            continue;
        }
        // Every spelling a scraper may see: `a.b` and `a_b` are one name
        // to one that asked for escaped names.
        let names: Vec<String> =
            sample_names_of(desc).iter().flat_map(|n| crate::encode::names::spellings(n)).collect();
        let clash = names.iter().find_map(|n| sample_names.get(n).map(|&i| (n, i)));
        if let Some((sample, first)) = clash {
            let error = RegistryError::DuplicateName {
                sample: sample.clone(),
                first: location(exposed[first].descriptor()),
                second: location(core.descriptor()),
            };
            crate::notice::error(format!("{error}; the second declaration is not exposed"));
            problems.push(error);
            hidden.push(core);
            continue;
        }
        for name in names {
            sample_names.insert(name, exposed.len());
        }
        exposed.push(core);
    }

    let total: usize = exposed.iter().chain(&hidden).map(|c| c.descriptor().slots()).sum();
    let mut offsets = Vec::with_capacity(exposed.len() + hidden.len());
    let mut offset = 0;
    for core in exposed.iter().chain(&hidden) {
        offsets.push(offset);
        offset += core.descriptor().slots();
    }
    for (index, core) in exposed.iter().enumerate() {
        core.set_schema_index(index as u32);
    }
    if let Err(e) = crate::shard::fork::install_gate_handlers() {
        crate::notice::warn(format!("could not install fork handlers: {e}"));
    }
    let declared_records = handlers.declared_records() + tallies.declared_records();
    let arena = arena_for(&exposed, &offsets, total, declared_records);
    // A directory that cannot be used leaves the process in memory: the
    // shard-only counters are not shown after all.
    let sharded = crate::shard::own().is_some();
    let base = arena.slots().as_ptr() as *mut AtomicU64;
    let mut families = Vec::with_capacity(exposed.len());
    for (index, (core, offset)) in exposed.iter().chain(&hidden).zip(&offsets).enumerate() {
        // SAFETY: offsets stay within the `total` slots of the arena.
        core.set_base(unsafe { base.add(*offset) });
        if index < exposed.len() && (sharded || !multiprocess_only(core)) {
            let plan = FamilyPlan::new(core.descriptor());
            families.push(Family { core, offset: *offset, plan });
        }
    }
    // Before the handler families seed their string tables, which count
    // their overflow where `attach` says.
    tallies.attach(&exposed);
    handlers.attach();
    // The fork handler counts a child's failure in this slot (in the
    // parent's shard, before it lets go of it).
    if let Some(core) = exposed.iter().find(|c| c.descriptor().name == crate::shard::fork::FALLBACKS_METRIC) {
        crate::shard::fork::count_fallbacks_in(core.slot_if_attached().unwrap_or(core::ptr::null()));
    }
    let declared: Vec<&Descriptor> = exposed.iter().map(|c| c.descriptor()).collect();
    crate::linked::report(&declared, crate::shard::format::VERSION_NEWEST, multiprocess);
    Registry { families, arena, problems, unregistered: GateCell::new(Vec::new()), sample_names, started_nanos }
}

/// In a forked child, from its fork handler (the child's only thread,
/// holding the gate): clears the exemplars that the parent's threads were
/// in the middle of writing when it forked (see
/// [`MetricCore::clear_interrupted_exemplars`]), in the slots the child
/// kept: the registry's arena when `arena` (in memory, or a private copy
/// of a shard; not when the child was just given zeroed slots), and the
/// arenas of metrics used without registration (always process memory).
/// No allocation, no lock.
///
/// # Safety
///
/// Only from the fork child handler, with the gate held.
pub(crate) unsafe fn clear_interrupted_exemplars(arena: bool) {
    // A layout is made under the gate: here it is whole or not begun.
    let Some(registry) = REGISTRY.get() else { return };
    if arena {
        for family in &registry.families {
            family.core.clear_interrupted_exemplars();
        }
    }
    // SAFETY: the caller holds the gate.
    for (family, _) in unsafe { registry.unregistered.get_mut_holding_gate() }.iter() {
        family.core.clear_interrupted_exemplars();
    }
}

/// The arena: this process's shard file when `PROMSHARD_DIR` is set (and
/// usable), process memory otherwise.
fn arena_for(exposed: &[&'static MetricCore], offsets: &[usize], total: usize, declared: usize) -> Box<dyn Arena> {
    let Some(dir) = crate::shard::configured_dir() else {
        // Set but empty is a mistake (a deploy template's variable left
        // blank), not a choice of memory mode: said, once, at layout.
        if std::env::var_os(crate::shard::DIR_ENV).is_some_and(|v| v.is_empty()) {
            crate::notice::warn(format!(
                "{} is set but empty: recording in process memory, where no other process's scrape sees it; \
                 unset it, or name a directory",
                crate::shard::DIR_ENV
            ));
        }
        return Box::new(MemoryArena::new(total));
    };
    let metrics: Vec<(&Descriptor, usize)> =
        exposed.iter().map(|c| c.descriptor()).zip(offsets.iter().copied()).collect();
    let bounded = metrics.iter().flat_map(|(d, _)| d.label_domains).filter_map(|d| match d {
        LabelDomain::Bounded { capacity } => Some(*capacity),
        LabelDomain::Values(_) => None,
    });
    let log_capacity = crate::shard::log::capacity(bounded, declared);
    match crate::shard::start(&dir, &metrics, total, log_capacity) {
        Ok(arena) => Box::new(arena),
        Err(e) => {
            crate::notice::warn(format!(
                "cannot use shard directory {} ({e}); recording in process memory instead",
                dir.display()
            ));
            Box::new(MemoryArena::new(total))
        }
    }
}

/// Gives a metric that is missing from [`METRICS`] slots of its own, so a
/// forgotten registration degrades to a warning instead of a crash.
fn attach_unregistered(core: &'static MetricCore) -> *mut AtomicU64 {
    let registry = get();
    registry.unregistered.with(|list| {
        if !core.is_attached() {
            let desc = core.descriptor();
            crate::notice::warn(format!(
                "metric `{}` ({}:{}) is used but not registered; \
                 declare it with #[metric] or promshard::register!",
                desc.name, desc.file, desc.line
            ));
            let arena: Box<dyn Arena> = Box::new(MemoryArena::new(desc.slots()));
            core.set_base(arena.slots().as_ptr() as *mut AtomicU64);
            let plan = FamilyPlan::new(desc);
            list.push((Family { core, offset: 0, plan }, arena));
        }
    });
    core.series(0) as *mut AtomicU64
}

impl MetricCore {
    /// The address of series `index`'s first slot, laying the registry
    /// out on the first call.
    ///
    /// `index` must be at most `desc.series` (the discard series).
    #[inline(always)]
    pub(crate) fn series(&'static self, index: usize) -> *const AtomicU64 {
        debug_assert!(index <= self.descriptor().series);
        let base = match self.slot_if_attached() {
            Some(base) => base as *mut AtomicU64,
            None => self.attach(),
        };
        // SAFETY: the arena holds `desc.slots()` = (series + 1) * width slots
        // from `base`, and index <= series.
        unsafe { base.add(index * self.descriptor().width) }
    }

    #[cold]
    #[inline(never)]
    fn attach(&'static self) -> *mut AtomicU64 {
        get();
        match self.slot_if_attached() {
            Some(base) => base as *mut AtomicU64,
            None => attach_unregistered(self),
        }
    }

    /// Counts a recording refused for a label value that is not in an
    /// inline list (see [`LabelContext::refuse`](crate::LabelContext::refuse)),
    /// laying the registry out first: the refusal comes before the
    /// recording looks its slot up, and the count must land in the series
    /// the layout gives it.
    #[cold]
    pub(crate) fn refuse_label_value(&self, position: usize, value: &str) {
        get();
        self.count_refused_value(position, value);
    }

    /// The string table of the bounded label at `position`.
    pub(crate) fn interner(&self, position: usize) -> &Interner {
        if let Some(interner) = self.interner_if_used(position) {
            return interner;
        }
        // Lay out first: in multiprocess mode new values go to the shard's
        // string log, which needs this metric's schema index.
        get();
        self.init_interners(|position| self.string_sink(position));
        self.interner_if_used(position).expect("just initialised")
    }
}

/// promshard's counts of what it could not record as asked, one series
/// per metric (or bounded label): `promshard_label_overflow_total{metric,
/// label}`, `promshard_label_refused_total{metric}` and
/// `promshard_observations_dropped_total{metric}`.
///
/// They are families like the declared ones, built at layout from the
/// metrics they count, as `handler::layout` builds the handler families
/// from their sites. So each process counts in its own arena (in
/// multiprocess mode, its shard) and every scrape sums the counts of the
/// directory's processes, dead ones included, as it sums any counter.
/// Their labels are fixed lists of names, so they never overflow nor
/// refuse a value themselves, and a metric's count is one atomic add at
/// an address set here. They are sparse: a zero series is shown only
/// where declared. The overflow rows are declared, so each bounded label
/// has its series from the start; a metric's refused and dropped series
/// appear once they count something.
struct Tallies {
    /// `{metric, label}`: metrics with a bounded label, by the names of
    /// their bounded labels (only the rows of real pairs are declared).
    overflow: Option<&'static MetricCore>,
    /// `{metric}`: metrics with a fixed list of values for a label (inline
    /// lists among them) and info metrics, which may refuse a recording.
    refused: Option<&'static MetricCore>,
    /// `{metric}`: histograms, which drop NaN observations.
    dropped: Option<&'static MetricCore>,
    /// How many overflow rows `attach` declares, at most.
    overflow_rows: usize,
}

const OVERFLOW_HELP: &str = "Recordings whose bounded label value was folded into `other` because the label was full.";
const REFUSED_HELP: &str =
    "Recordings dropped because a label value was not in the metric's list (or info pairs too large).";
const DROPPED_HELP: &str = "Histogram observations dropped because they were NaN.";

impl Tallies {
    /// The families counting `metrics` (sorted by name); a family that
    /// would count no metric is not made.
    fn lay_out(metrics: &[&'static MetricCore]) -> Tallies {
        let names = |counted: fn(&Descriptor) -> bool| -> Vec<&'static str> {
            let mut names: Vec<&'static str> =
                metrics.iter().map(|c| c.descriptor()).filter(|d| counted(d)).map(|d| d.name).collect();
            names.dedup();
            names
        };
        let bounded = |d: &Descriptor| d.label_domains.iter().any(|d| matches!(d, LabelDomain::Bounded { .. }));
        let refusing = |d: &Descriptor| {
            d.kind == Kind::Info || d.label_domains.iter().any(|d| matches!(d, LabelDomain::Values(_)))
        };
        let mut labels: Vec<&'static str> = Vec::new();
        let mut overflow_rows = 0;
        for desc in metrics.iter().map(|c| c.descriptor()) {
            for (label, domain) in desc.label_names.iter().zip(desc.label_domains) {
                if matches!(domain, LabelDomain::Bounded { .. }) {
                    labels.push(label);
                    overflow_rows += 1;
                }
            }
        }
        labels.sort_unstable();
        labels.dedup();
        Tallies {
            overflow: tally(
                "promshard_label_overflow",
                OVERFLOW_HELP,
                &["metric", "label"],
                vec![names(bounded), labels],
            ),
            refused: tally("promshard_label_refused", REFUSED_HELP, &["metric"], vec![names(refusing)]),
            dropped: tally(
                "promshard_observations_dropped",
                DROPPED_HELP,
                &["metric"],
                vec![names(|d| d.kind == Kind::Histogram)],
            ),
            overflow_rows,
        }
    }

    fn cores(&self) -> impl Iterator<Item = &'static MetricCore> {
        [self.overflow, self.refused, self.dropped].into_iter().flatten()
    }

    /// String-log records [`attach`](Self::attach) may write.
    fn declared_records(&self) -> usize {
        self.overflow_rows
    }

    /// Points the counts of every exposed metric at their series and
    /// declares the overflow rows; every family must have its slots.
    fn attach(&self, exposed: &[&'static MetricCore]) {
        let mut declared = Vec::new();
        for core in exposed {
            if self.cores().any(|t| core::ptr::eq(t, *core)) {
                continue;
            }
            let desc = core.descriptor();
            let overflow = (desc.label_names.iter().zip(desc.label_domains))
                .map(|(label, domain)| match (domain, self.overflow_row(desc.name, label)) {
                    (LabelDomain::Bounded { .. }, Some((tally, row))) => {
                        declared.push((row as u32, 1));
                        tally.series(row)
                    }
                    _ => core::ptr::null(),
                })
                .collect();
            let row = |tally: Option<&'static MetricCore>| {
                let tally = tally?;
                let row = names_of(tally, 0).binary_search(&desc.name).ok()?;
                Some(tally.series(row))
            };
            core.count_in(row(self.refused), row(self.dropped), overflow);
        }
        if let Some(overflow) = self.overflow {
            overflow.declare(declared);
        }
    }

    /// The overflow family and the series of `metric`'s label `label`.
    fn overflow_row(&self, metric: &str, label: &str) -> Option<(&'static MetricCore, usize)> {
        let tally = self.overflow?;
        let (metrics, labels) = (names_of(tally, 0), names_of(tally, 1));
        let row = metrics.binary_search(&metric).ok()? * labels.len() + labels.binary_search(&label).ok()?;
        Some((tally, row))
    }
}

/// The values of a tally family's label at `position`, sorted.
fn names_of(tally: &MetricCore, position: usize) -> &'static [&'static str] {
    match tally.descriptor().label_domains[position] {
        LabelDomain::Values(values) => values,
        LabelDomain::Bounded { .. } => &[],
    }
}

/// A sparse counter family `name` with one label per list of `values`
/// (sorted); `None` when a list is empty.
fn tally(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Vec<Vec<&'static str>>,
) -> Option<&'static MetricCore> {
    if values.iter().any(Vec::is_empty) {
        return None;
    }
    let domains: Vec<LabelDomain> =
        values.into_iter().map(|v| LabelDomain::Values(Box::leak(v.into_boxed_slice()))).collect();
    let series = domains.iter().map(|d| d.cardinality()).product();
    let opts = Opts::new(name, help).labels(labels).sparse();
    let desc = Descriptor::new(opts, Kind::Counter, Box::leak(domains.into_boxed_slice()), series, &[]);
    // One per family and process, like the handler families' cores.
    Some(Box::leak(Box::new(MetricCore::new(desc))))
}

/// The names of the samples a metric's exposition uses.
fn sample_names_of(desc: &Descriptor) -> Vec<String> {
    let n = desc.name;
    match desc.kind {
        Kind::Counter => vec![n.to_owned(), format!("{n}{}", desc.kind.sample_suffix()), format!("{n}_created")],
        Kind::Gauge | Kind::StateSet => vec![n.to_owned()],
        Kind::Histogram => ["", "_bucket", "_count", "_sum", "_created"].iter().map(|s| format!("{n}{s}")).collect(),
        Kind::Info => vec![n.to_owned(), format!("{n}{}", desc.kind.sample_suffix())],
    }
}

fn location(desc: &Descriptor) -> String {
    format!("{}:{}", desc.file, desc.line)
}

/// A problem with the set of declared metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two declarations produce the same metric or sample name, as
    /// written or as a scraper that asked for escaped names sees it
    /// (`a.b` and `a_b` are both `a_b` to a Prometheus 2 server). The
    /// first (by name, then file and line) is exposed; the second records
    /// into slots of its own that are never exposed.
    DuplicateName {
        /// The clashing name.
        sample: String,
        /// `file:line` of the exposed declaration.
        first: String,
        /// `file:line` of the hidden declaration.
        second: String,
    },
    /// Two label names of one metric that a scraper asking for escaped
    /// names would see as one (`a.b` and `a_b`): `#[metric]` refuses them
    /// when it can see them. The metric records into slots of its own
    /// that are never exposed.
    LabelNameClash {
        /// The metric.
        metric: String,
        /// The first of the two labels.
        first: String,
        /// The second.
        second: String,
        /// `file:line` of the declaration.
        at: String,
    },
    /// `#[instrument_handler]` sites that disagree on their families'
    /// settings, or that do not fit a family's series budget (those
    /// record into slots that are never exposed).
    HandlerFamily {
        /// The family.
        family: String,
        /// What is wrong, naming the handler.
        message: String,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::DuplicateName { sample, first, second } => {
                write!(f, "metric name `{sample}` is declared twice: at {first} and at {second}")
            }
            RegistryError::LabelNameClash { metric, first, second, at } => write!(
                f,
                "metric `{metric}` (at {at}): labels `{first}` and `{second}` are written alike for scrapers \
                 that ask for escaped names"
            ),
            RegistryError::HandlerFamily { family, message } => write!(f, "handler family `{family}`: {message}"),
        }
    }
}

impl std::error::Error for RegistryError {}

/// Lays out the registry now (instead of at the first recording) and
/// reports problems with the declared metrics, such as duplicate names.
///
/// Call it at startup or in a test to turn a clash into a failure:
///
/// ```
/// promshard::check_registry().expect("metric declarations are consistent");
/// ```
pub fn check_registry() -> Result<(), Vec<RegistryError>> {
    let problems = &get().problems;
    if problems.is_empty() { Ok(()) } else { Err(problems.clone()) }
}
