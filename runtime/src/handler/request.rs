//! A request as the tower layer records it, into the same HTTP families
//! as `#[instrument_handler]`, and how the two agree to count it once.
//!
//! While the layer runs the inner service (its `call` and every poll of
//! its future), this thread's [`Scope`] points at the request. An
//! instrumented HTTP handler of the same families that starts inside it
//! counts no call of its own: the request is the layer's to count, once.
//! The router's route template names it; where the router gives none (a
//! plain tower service, a nested service), the first such handler's
//! route does. Its status is the response's.

use core::cell::Cell;

use super::clock::{self, Stamp};
use super::families::{CANCELLED_STATUS, PANIC_STATUS, method_index};
use super::layout::{LayerFamilies, layer_families};
use crate::instruments::counter::CounterSeries;
use crate::instruments::gauge::GaugeSeries;
use crate::instruments::histogram::HistogramSeries;
use crate::metric::MetricCore;

thread_local! {
    /// The request the layer is running on this thread, or null.
    static SCOPE: Cell<*const Scope> = const { Cell::new(core::ptr::null()) };
}

/// What a handler running inside the layer's request tells the layer.
struct Scope {
    families: &'static LayerFamilies,
    /// Whether the router named the request's route: handlers inside it
    /// then count nothing and rename nothing.
    named: bool,
    /// The `handler` index of the site that claimed the request.
    claimed: Cell<Option<usize>>,
    /// Where the request counts in flight (in the in-flight family).
    in_flight: Cell<usize>,
    /// The slot generation the request started in: a forked child (whose
    /// slots start from zero) neither moves nor ends its parent's request.
    generation: u32,
}

/// Called by a starting HTTP handler whose families the layer records
/// into: true when it is running inside a request the layer records, so
/// that the handler must not count itself. The first to start names the
/// request; handlers it calls in turn are part of the same request.
#[inline]
pub(crate) fn claim(handler: u32) -> bool {
    SCOPE.with(|current| {
        let scope = current.get();
        if scope.is_null() {
            return false;
        }
        // SAFETY: set by `Request::enter` to a scope that outlives the
        // closure it runs, on this thread only, and restored after it.
        let scope = unsafe { &*scope };
        let handler = handler as usize;
        // Defence in depth: an index from elsewhere must not address
        // slots past the families'.
        if handler >= scope.families.handlers() {
            return false;
        }
        if scope.named || scope.claimed.get().is_some() || scope.generation != crate::shard::fork::generation() {
            return true;
        }
        scope.claimed.set(Some(handler));
        // The request is in flight under the handler's route from now on.
        scope.families.in_flight(scope.in_flight.get()).dec();
        scope.families.in_flight(handler).inc();
        scope.in_flight.set(handler);
        true
    })
}

/// One request the layer records, from its start to its response.
pub(crate) struct Request {
    scope: Scope,
    method: usize,
    /// The `handler` index of the request's route, the same in every
    /// family (in flight: `scope.in_flight`, which a claim moves).
    route: usize,
    unmatched: usize,
    start: Stamp,
    done: bool,
}

impl Request {
    /// Starts recording a request for `method` that the framework matched
    /// to `route` (`None`: no route matched); `None` when the program has
    /// no HTTP families, which the layer's own entry in the handler list
    /// rules out.
    pub(crate) fn start(method: &str, route: Option<&str>) -> Option<Request> {
        crate::registry::get();
        let families = layer_families()?;
        let unmatched = families.unmatched;
        let named = route.is_some();
        let route = route.map_or(unmatched, |route| families.handler(route));
        families.in_flight(route).inc();
        Some(Request {
            scope: Scope {
                families,
                named,
                claimed: Cell::new(None),
                in_flight: Cell::new(route),
                generation: crate::shard::fork::generation(),
            },
            method: method_index(families.families.methods, method),
            route,
            unmatched,
            start: clock::now(),
            done: false,
        })
    }

    /// Runs `f` (the inner service's `call` or `poll`) with this request
    /// as the thread's scope, so that a handler inside can claim it.
    #[inline]
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(*const Scope);
        impl Drop for Restore {
            fn drop(&mut self) {
                SCOPE.with(|current| current.set(self.0));
            }
        }
        let _restore = Restore(SCOPE.with(|current| current.replace(&self.scope)));
        f()
    }

    /// Ends the request with the response's status code.
    pub(crate) fn finish(mut self, status: u16) {
        self.record(status);
    }

    /// Ends the request as cancelled (499): its future was dropped
    /// between polls, so no panic of the service can be unwinding, whatever
    /// else may be (a `select!` whose other branch panicked).
    pub(crate) fn cancel(mut self) {
        self.record(CANCELLED_STATUS);
    }

    fn record(&mut self, status: u16) {
        self.done = true;
        if self.scope.generation != crate::shard::fork::generation() {
            return;
        }
        let families = self.scope.families;
        let route = match self.scope.claimed.get() {
            Some(handler) => handler,
            // No handler of the app answered the method: a router's 405,
            // like its 404, names no route.
            None if status == 405 => self.unmatched,
            None => self.route,
        };
        let [calls, duration, _] = families.cores;
        let methods = families.families.method_count();
        let outcomes = families.families.outcomes();
        let other = families.statuses[0];
        let status = *families.statuses.get(status as usize).unwrap_or(&other) as usize;
        // SAFETY: every index is below its family's series count: routes
        // come from the families' own tables (or `other`), the method and
        // status from their label lists.
        unsafe {
            let row = route * methods + self.method;
            let elapsed = self.start.elapsed_seconds();
            let duration = HistogramSeries::at(duration.series(row), duration);
            let calls = CounterSeries::of(calls.series(row * outcomes + status), calls);
            super::trace::record(duration, calls, elapsed);
        }
        families.in_flight(self.scope.in_flight.get()).dec();
    }
}

impl Drop for Request {
    /// A request dropped before its response and not cancelled by its
    /// future: it was on the stack of the service's `call` or `poll`, and
    /// that panicked (500, as a catch-panic layer answers).
    fn drop(&mut self) {
        if !self.done {
            self.record(if std::thread::panicking() { PANIC_STATUS } else { CANCELLED_STATUS });
        }
    }
}

impl LayerFamilies {
    /// The `handler` index of `route`, the same in all three families;
    /// `other` once their tables are full.
    ///
    /// The three tables stay numbered alike because every value enters
    /// them together: the sites' handlers when laid out, in one order,
    /// and a new route here, in all three under the gate. So one lookup
    /// answers for the three, and two routes racing for the last free
    /// value cannot each get it in a different family.
    fn handler(&self, route: &str) -> usize {
        let [calls, duration, in_flight] = self.cores.map(|core| core.interner(0));
        if let Some(index) = calls.lookup(route) {
            return index;
        }
        let count_overflow = || {
            duration.index(route);
            in_flight.index(route);
            calls.index(route)
        };
        // Full: `other`, counted as overflow in each family, with no lock.
        if calls.is_full() {
            return count_overflow();
        }
        crate::gate::locked(|| {
            let index = calls.index(route);
            let others = [duration.index(route), in_flight.index(route)];
            debug_assert!(others.iter().all(|other| *other == index), "the route tables agree");
            index
        })
    }

    /// How many values the `handler` label has, `other` included.
    fn handlers(&self) -> usize {
        self.cores[2].descriptor().series
    }

    /// The in-flight series of `handler`.
    fn in_flight(&self, handler: usize) -> GaugeSeries {
        let core: &'static MetricCore = self.cores[2];
        // SAFETY: `handler` came from the family's own table, so it is
        // below its series count.
        GaugeSeries::untimed(unsafe { &*core.series(handler) })
    }
}
