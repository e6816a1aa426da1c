//! The handler families, built once when the registry lays out, from the
//! [`HANDLERS`] slice of call sites.
//!
//! A family's `handler` label takes its values from the sites themselves,
//! so every handler's series exist at zero from startup and adding one
//! needs no registration call. The descriptors are leaked: there is one
//! set per distinct family prefix in the code, never more.
//!
//! The registry calls [`lay_out`] before it sizes the arena (the families
//! are metrics like the declared ones) and [`HandlerLayout::attach`] once
//! every metric has its slots, which gives each site the addresses its
//! calls record at.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
#[cfg(feature = "tower")]
use std::sync::OnceLock;

use super::families::{HandlerFamilies, HandlerKind, RESULTS, StatusLabel, method_index};
use crate::arena::{Arena, MemoryArena};
use crate::descriptor::{Descriptor, GaugeMode, Kind, Opts};
use crate::instruments::gauge::GaugeSeries;
use crate::instruments::histogram::HistogramSeries;
use crate::labels::{LabelDomain, OTHER};
use crate::metric::MetricCore;

// `HANDLERS`, declared under this version's own name (see build.rs).
include!(concat!(env!("OUT_DIR"), "/handlers_slice.rs"));

/// One function instrumented with `#[instrument_handler]`: which
/// families it records into, under which `handler` (and `method`), and,
/// once laid out, where.
///
/// Not a stable API: generated code declares one per instrumented
/// function and lists it in the handler slice.
#[derive(Debug)]
pub struct HandlerSite {
    pub(crate) families: &'static HandlerFamilies,
    pub(crate) handler: &'static str,
    /// The method an HTTP handler answers; empty for functions and for
    /// the layer's `<unmatched>` entry, which answers none of its own.
    pub(crate) method: &'static str,
    pub(crate) file: &'static str,
    pub(crate) line: u32,
    /// Null until laid out, then this site's slots for good. Written
    /// with `Release` once the slots are zeroed, read with `Acquire`.
    pub(crate) slots: AtomicPtr<SiteSlots>,
}

impl HandlerSite {
    /// An HTTP handler for `route`, answering `method`.
    pub const fn http(
        families: &'static HandlerFamilies,
        route: &'static str,
        method: &'static str,
        file: &'static str,
        line: u32,
    ) -> HandlerSite {
        assert!(matches!(families.kind, HandlerKind::Http), "a route needs HTTP handler families");
        HandlerSite { families, handler: route, method, file, line, slots: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// The entry of [`http_layer!`](crate::http_layer): the families the
    /// tower layer records into, with `<unmatched>` among its handlers.
    #[cfg(feature = "tower")]
    pub const fn layer(families: &'static HandlerFamilies, file: &'static str, line: u32) -> HandlerSite {
        assert!(matches!(families.kind, HandlerKind::Http), "the layer records into HTTP handler families");
        assert!(families.prefix.is_empty(), "the layer records into families without a prefix");
        let handler = super::families::UNMATCHED;
        HandlerSite { families, handler, method: "", file, line, slots: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// Whether this is [`http_layer!`](crate::http_layer)'s entry.
    fn is_layer(&self) -> bool {
        self.families.kind == HandlerKind::Http && self.method.is_empty()
    }

    /// A plain function called `name`.
    pub const fn function(
        families: &'static HandlerFamilies,
        name: &'static str,
        file: &'static str,
        line: u32,
    ) -> HandlerSite {
        assert!(matches!(families.kind, HandlerKind::Function), "a function without a route needs function families");
        HandlerSite { families, handler: name, method: "", file, line, slots: AtomicPtr::new(core::ptr::null_mut()) }
    }
}

/// Where one site's calls record.
#[derive(Debug)]
pub(crate) struct SiteSlots {
    pub(crate) kind: HandlerKind,
    /// The calls counter's series for this handler (and method) and the
    /// first status or result; the `i`-th is `i` counter widths further.
    pub(crate) calls: *const AtomicU64,
    /// The calls counter, for its width and exemplars.
    pub(crate) calls_core: &'static MetricCore,
    pub(crate) duration: HistogramSeries,
    pub(crate) in_flight: GaugeSeries,
    /// HTTP status code → index of its `status` value; entry 0 is `other`.
    pub(crate) statuses: &'static [u16],
    /// The site's `handler` index when it records into the families the
    /// HTTP layer records into (kind HTTP, no prefix), so that a request
    /// the layer is recording is counted there, once; else `None`.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) layer_handler: Option<u32>,
}

// SAFETY: the pointers address process-lifetime atomics.
unsafe impl Send for SiteSlots {}
unsafe impl Sync for SiteSlots {}

/// One set of three families and the sites that record into it.
struct Group {
    families: HandlerFamilies,
    /// Calls, duration, in flight.
    cores: [&'static MetricCore; 3],
    /// Values of the `handler` label the sites give, sorted: for HTTP
    /// families the first values of a bounded label, which keeps room
    /// for route templates the layer meets at run time.
    handlers: Vec<&'static str>,
    statuses: &'static [u16],
    sites: Vec<&'static HandlerSite>,
}

/// The HTTP families the tower layer records into (kind HTTP, no
/// prefix), once laid out.
#[cfg(feature = "tower")]
#[derive(Debug)]
pub(crate) struct LayerFamilies {
    pub(crate) families: HandlerFamilies,
    /// Calls, duration, in flight.
    pub(crate) cores: [&'static MetricCore; 3],
    pub(crate) statuses: &'static [u16],
    /// The `handler` index of `<unmatched>`, the same in every family.
    pub(crate) unmatched: usize,
}

#[cfg(feature = "tower")]
static LAYER_FAMILIES: OnceLock<LayerFamilies> = OnceLock::new();

/// The families the tower layer records into, once the registry is laid
/// out.
#[cfg(feature = "tower")]
pub(crate) fn layer_families() -> Option<&'static LayerFamilies> {
    LAYER_FAMILIES.get()
}

/// Whether sites of `families` record where the layer does.
fn is_layer_group(families: &HandlerFamilies) -> bool {
    families.kind == HandlerKind::Http && families.prefix.is_empty()
}

/// The handler families of one layout, between [`lay_out`] and
/// [`HandlerLayout::attach`].
pub(crate) struct HandlerLayout {
    /// The families to lay out with the declared metrics.
    pub(crate) cores: Vec<&'static MetricCore>,
    /// `(family, message)` for each problem found.
    pub(crate) problems: Vec<(String, String)>,
    groups: Vec<Group>,
    /// Sites refused for the budget: they record into families of their
    /// own that are never exposed.
    refused: Vec<Group>,
}

impl HandlerLayout {
    /// String-log records the layout will write: the rows each HTTP
    /// site declares shown at zero, in its counter and its histogram.
    pub(crate) fn declared_records(&self) -> usize {
        let sites = self.groups.iter().filter(|g| g.families.kind == HandlerKind::Http).map(|g| g.sites.len());
        2 * sites.sum::<usize>()
    }
}

/// Builds the families of `sites`, grouped by kind and prefix.
pub(crate) fn lay_out(sites: &[&'static HandlerSite]) -> HandlerLayout {
    if !sites.is_empty() {
        super::clock::calibrate();
    }
    let mut sites = sites.to_vec();
    sites.sort_by(|a, b| {
        let key =
            |s: &HandlerSite| (s.families.kind == HandlerKind::Function, s.families.prefix, s.handler, s.file, s.line);
        key(a).cmp(&key(b))
    });
    sites.dedup_by(|a, b| core::ptr::eq(*a, *b));
    let mut layout = HandlerLayout { cores: Vec::new(), problems: Vec::new(), groups: Vec::new(), refused: Vec::new() };
    let mut rest = &sites[..];
    while let Some(first) = rest.first() {
        let same =
            |s: &&&HandlerSite| s.families.kind == first.families.kind && s.families.prefix == first.families.prefix;
        let count = rest.iter().take_while(same).count();
        let (members, tail) = rest.split_at(count);
        rest = tail;
        layout.add_group(members);
    }
    layout
}

impl HandlerLayout {
    fn add_group(&mut self, members: &[&'static HandlerSite]) {
        // Sites with settings of their own set the group up: the layer's
        // (`http_layer!(FAMILIES)`) first, else the first by name; the
        // others follow it.
        let default = match members[0].families.kind {
            HandlerKind::Http => HandlerFamilies::HTTP,
            HandlerKind::Function => HandlerFamilies::FUNCTIONS,
        };
        let own_settings = |s: &&&HandlerSite| !s.families.same_as(&default);
        let chosen = (members.iter().filter(|s| s.is_layer()).find(own_settings))
            .or_else(|| members.iter().find(own_settings))
            .unwrap_or(&members[0]);
        let families = *chosen.families;
        let names = family_names(&families);
        let disagree = |s: &&&HandlerSite| !s.families.same_as(&families) && !s.families.same_as(&default);
        for site in members.iter().filter(disagree) {
            self.problems.push((
                names[0].to_owned(),
                format!(
                    "the handler `{}` ({}:{}) sets the families up differently from `{}` ({}:{}); \
                     the latter's settings are used",
                    site.handler, site.file, site.line, chosen.handler, chosen.file, chosen.line
                ),
            ));
        }
        let mut handlers: Vec<&'static str> = members.iter().map(|s| s.handler).collect();
        handlers.dedup();
        // Every handler adds the same number of series to each family, so
        // the budget keeps the first handlers (by name) that fit; the
        // layer's entry comes first whatever its name, since without it the
        // layer could record nothing.
        if let Some(layer) = members.iter().find(|s| s.is_layer()) {
            let at = handlers.iter().position(|h| *h == layer.handler).expect("every site's handler is listed");
            let entry = handlers.remove(at);
            handlers.insert(0, entry);
        }
        let per_handler = families.series_per_handler();
        let (fits, limit) = fits(&families);
        if handlers.len() > fits {
            let refused = &handlers[fits..];
            let site = members.iter().find(|s| s.handler == refused[0]).expect("a site per handler");
            self.problems.push((
                names[limit].to_owned(),
                format!(
                    "handler `{}` ({}:{}){} would take the family past its budget of {} series \
                     ({} per handler, {} handlers); {} not recorded: raise HandlerFamilies::max_series \
                     or keep fewer methods or statuses",
                    refused[0],
                    site.file,
                    site.line,
                    match refused.len() {
                        1 => String::new(),
                        n => format!(" and {} more", n - 1),
                    },
                    families.max_series,
                    per_handler[limit],
                    handlers.len(),
                    if refused.len() == 1 { "it is" } else { "they are" },
                ),
            ));
            let (kept, refused): (Vec<_>, Vec<_>) = members.iter().partition(|s| handlers[..fits].contains(&s.handler));
            let refused_handlers = handlers.split_off(fits);
            self.refused.push(group(families, refused_handlers, refused));
            if kept.is_empty() {
                return;
            }
            let group = group(families, handlers, kept);
            self.cores.extend(group.cores);
            self.groups.push(group);
            return;
        }
        let group = group(families, handlers, members.to_vec());
        self.cores.extend(group.cores);
        self.groups.push(group);
    }

    /// Points every site at its slots; the families' cores must have
    /// theirs, and their schema indices in multiprocess mode.
    pub(crate) fn attach(self) {
        for group in &self.groups {
            group.seed(|core, position| core.string_sink(position));
            group.declare();
            group.attach(true);
            #[cfg(feature = "tower")]
            if is_layer_group(&group.families) && group.routes_at_run_time() {
                let _ = LAYER_FAMILIES.set(LayerFamilies {
                    families: group.families,
                    cores: group.cores,
                    statuses: group.statuses,
                    unmatched: group.handler_index(super::families::UNMATCHED),
                });
            }
        }
        for group in self.refused {
            attach_private(group);
        }
    }
}

/// Gives the families of a site that is missing from [`HANDLERS`] (or
/// over budget) slots of their own, never exposed, so that its calls
/// still work.
pub(crate) fn attach_unlisted(site: &'static HandlerSite) {
    super::clock::calibrate();
    crate::notice::warn(format!(
        "handler `{}` ({}:{}) is not in the handler list; its calls are not exposed",
        site.handler, site.file, site.line
    ));
    attach_private(group(*site.families, vec![site.handler], vec![site]));
}

fn attach_private(group: Group) {
    let total: usize = group.cores.iter().map(|c| c.descriptor().slots()).sum();
    let arena: &'static MemoryArena = Box::leak(Box::new(MemoryArena::new(total)));
    let mut base = arena.slots().as_ptr() as *mut AtomicU64;
    for core in group.cores {
        core.set_base(base);
        // SAFETY: the cores' slots add up to the arena's `total`.
        base = unsafe { base.add(core.descriptor().slots()) };
    }
    group.seed(|_, _| None);
    group.attach(false);
}

impl Group {
    /// Gives the sites' `handler` values the first indices of a bounded
    /// `handler` label, in every core and in the same order, so a site's
    /// index is the same in all three; `sink` is where each core logs its
    /// values.
    fn seed(&self, sink: impl Fn(&MetricCore, usize) -> Option<&'static crate::interner::StringSink>) {
        if !self.routes_at_run_time() {
            return;
        }
        for core in self.cores {
            core.init_interners(|position| sink(core, position));
            let interner = core.interner_if_used(0).expect("just initialised");
            for handler in &self.handlers {
                interner.index(handler);
            }
        }
    }

    /// The index of a site's `handler` value: its place in the seeded
    /// label of HTTP families (`other` for a value the label cannot keep,
    /// such as one over 256 bytes), its place in the list for functions.
    fn handler_index(&self, handler: &str) -> usize {
        match self.cores[0].interner_if_used(0) {
            Some(interner) if self.routes_at_run_time() => interner.index(handler),
            _ => self.handlers.binary_search(&handler).expect("every site's handler is listed"),
        }
    }

    /// Whether the `handler` label is bounded, keeping room for the
    /// layer's route templates.
    fn routes_at_run_time(&self) -> bool {
        matches!(self.cores[0].descriptor().label_domains[0], LabelDomain::Bounded { .. })
    }

    /// Declares the rows of each HTTP site's own method shown at zero:
    /// its statuses in the counter, its series in the histogram.
    fn declare(&self) {
        if self.families.kind != HandlerKind::Http {
            return;
        }
        let (methods, outcomes) = (self.families.method_count(), self.families.outcomes());
        let (mut calls, mut duration) = (Vec::new(), Vec::new());
        for site in self.sites.iter().filter(|s| !s.method.is_empty()) {
            let handler = self.handler_index(site.handler);
            let row = handler * methods + method_index(self.families.methods, site.method);
            calls.push(((row * outcomes) as u32, outcomes as u32));
            duration.push((row as u32, 1));
        }
        self.cores[0].declare(calls);
        self.cores[1].declare(duration);
    }

    /// Gives each site its slots; `exposed` when these are the families
    /// the program exposes, not private ones of refused or unlisted sites.
    fn attach(&self, exposed: bool) {
        let [calls, duration, in_flight] = self.cores;
        let methods = self.families.method_count();
        let outcomes = self.families.outcomes();
        for site in &self.sites {
            if !site.slots.load(Ordering::Acquire).is_null() {
                continue;
            }
            let handler = self.handler_index(site.handler);
            let method = match site.families.kind {
                HandlerKind::Http => method_index(self.families.methods, site.method),
                HandlerKind::Function => 0,
            };
            // Only the exposed families are the layer's: a refused site's
            // index numbers its private families, not the layer's.
            let layer_handler = (exposed && is_layer_group(&self.families)).then_some(handler as u32);
            let row = handler * methods + method;
            // SAFETY: each index is below its family's series count, and
            // the arena lives for the rest of the process.
            let slots = unsafe {
                SiteSlots {
                    kind: self.families.kind,
                    calls: calls.series(row * outcomes),
                    calls_core: calls,
                    duration: HistogramSeries::at(duration.series(row), duration),
                    in_flight: GaugeSeries::untimed(&*in_flight.series(handler)),
                    statuses: self.statuses,
                    layer_handler,
                }
            };
            site.slots.store(Box::leak(Box::new(slots)), Ordering::Release);
        }
    }
}

/// The three families' names: calls, duration, in flight.
fn family_names(families: &HandlerFamilies) -> [&'static str; 3] {
    families.base_names().map(|base| match families.prefix {
        "" => base,
        prefix => Box::leak(format!("{prefix}_{base}").into_boxed_str()),
    })
}

/// How many handlers fit each family's budget, and the family (index)
/// that allows the fewest.
fn fits(families: &HandlerFamilies) -> (usize, usize) {
    let per_handler = families.series_per_handler();
    (0..3).map(|i| (families.max_series / per_handler[i], i)).min().expect("three families")
}

/// How many values the `handler` label of HTTP families with the tower
/// layer keeps: every handler the budget fits, less one row for `other`,
/// and never fewer than the sites' own. `None` without the layer: the
/// sites' handlers are then the label's whole list.
fn route_capacity(families: &HandlerFamilies, sites: &[&'static HandlerSite], handlers: usize) -> Option<usize> {
    let layer = families.kind == HandlerKind::Http && sites.iter().any(|s| s.is_layer());
    layer.then(|| fits(families).0.saturating_sub(1).max(handlers))
}

fn group(families: HandlerFamilies, handlers: Vec<&'static str>, sites: Vec<&'static HandlerSite>) -> Group {
    let [calls_name, duration_name, in_flight_name] = family_names(&families);
    let first = sites[0];
    let leak_domains = |d: Vec<LabelDomain>| -> &'static [LabelDomain] { Box::leak(d.into_boxed_slice()) };
    // With the layer, a bounded label that keeps room for the route
    // templates it meets at run time; the sites' handlers are its first
    // values (see `seed`).
    let handler_domain = match route_capacity(&families, &sites, handlers.len()) {
        Some(capacity) => LabelDomain::Bounded { capacity },
        None => LabelDomain::Values(Box::leak(handlers.clone().into_boxed_slice())),
    };
    let h = handler_domain.cardinality();
    let (calls_help, duration_help, in_flight_help, outcome_domain) = match families.kind {
        HandlerKind::Http => (
            "HTTP requests handled, by handler (route), method and status.",
            "Time to handle an HTTP request, by handler (route) and method.",
            "HTTP requests being handled now, by handler (route).",
            LabelDomain::Values(Box::leak(
                families.status_values().into_iter().map(|v| &*Box::leak(v.into_boxed_str())).collect(),
            )),
        ),
        HandlerKind::Function => (
            "Calls of instrumented functions, by function and result.",
            "Time an instrumented function call took, by function.",
            "Instrumented function calls running now, by function.",
            LabelDomain::Values(&RESULTS),
        ),
    };
    let (calls_labels, duration_labels, calls_domains, duration_domains): (&[&str], &[&str], _, _) = match families.kind
    {
        HandlerKind::Http => {
            let methods: Vec<&'static str> = families.methods.iter().copied().chain([OTHER]).collect();
            let method_domain = LabelDomain::Values(Box::leak(methods.into_boxed_slice()));
            (
                &["handler", "method", "status"],
                &["handler", "method"],
                vec![handler_domain, method_domain, outcome_domain],
                vec![handler_domain, method_domain],
            )
        }
        HandlerKind::Function => {
            (&["handler", "result"], &["handler"], vec![handler_domain, outcome_domain], vec![handler_domain])
        }
    };
    let methods = families.method_count();
    // HTTP handlers answer one method each and a few statuses: their other
    // method and status series appear once they count something.
    let at = |opts: Opts| {
        let opts = opts.declared_at(first.file, first.line);
        let opts = if super::trace::EXEMPLARS { opts.exemplars() } else { opts };
        if families.kind == HandlerKind::Http { opts.sparse() } else { opts }
    };
    let core = |desc: Descriptor| -> &'static MetricCore { Box::leak(Box::new(MetricCore::new(desc))) };
    let calls = core(Descriptor::new(
        at(Opts::new(calls_name, calls_help).labels(calls_labels)),
        Kind::Counter,
        leak_domains(calls_domains),
        h * methods * families.outcomes(),
        &[],
    ));
    let duration = core(Descriptor::new(
        at(Opts::new(duration_name, duration_help).unit("seconds").labels(duration_labels).buckets(families.buckets)),
        Kind::Histogram,
        leak_domains(duration_domains),
        h * methods,
        &[],
    ));
    let in_flight = core(Descriptor::new(
        Opts::new(in_flight_name, in_flight_help)
            .labels(&["handler"])
            .mode(GaugeMode::LiveSum)
            .declared_at(first.file, first.line),
        Kind::Gauge,
        leak_domains(vec![handler_domain]),
        h,
        &[],
    ));
    Group { families, cores: [calls, duration, in_flight], handlers, statuses: status_table(&families), sites }
}

/// Status code → index of its `status` value, for codes 0 to 999; entry
/// 0 (never a valid code) holds the index of `other`.
fn status_table(families: &HandlerFamilies) -> &'static [u16] {
    if families.kind == HandlerKind::Function {
        return &[];
    }
    let other = (families.outcomes() - 1) as u16;
    let mut table = vec![other; 1000];
    match families.statuses {
        StatusLabel::Codes(codes) => {
            for (index, code) in codes.iter().enumerate() {
                table[*code as usize] = index as u16;
            }
        }
        StatusLabel::Classes => {
            for (code, entry) in table.iter_mut().enumerate().take(600).skip(100) {
                *entry = (code / 100 - 1) as u16;
            }
        }
    }
    Box::leak(table.into_boxed_slice())
}
