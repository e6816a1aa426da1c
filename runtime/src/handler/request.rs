//! A request as the tower layer records it, into the same HTTP families
//! as `#[instrument_handler]`, and how the two agree to count it once.
//!
//! While the layer runs the inner service (its `call` and every poll of
//! its future), this thread's [`Scope`] points at the request. An
//! instrumented HTTP handler of the same families that starts inside it
//! claims the request instead of counting a call of its own: the layer
//! then labels the request with the handler's route, which is right even
//! where the framework's matched path is not (nested routers), and its
//! status with the response's.

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
    /// The `handler` index of the site that claimed the request.
    claimed: Cell<Option<usize>>,
    /// Where the request counts in flight (in the in-flight family).
    in_flight: Cell<usize>,
}

/// Called by a starting HTTP handler whose families the layer records
/// into: true when it is running inside a request the layer records and
/// is the first to claim it, so that the handler must not count itself.
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
        if scope.claimed.get().is_some() {
            return false;
        }
        let handler = handler as usize;
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
    /// The `handler` index of the request's route in the counter and the
    /// histogram (in flight: `scope.in_flight`); each family numbers the
    /// route templates it meets at run time its own way.
    routes: [usize; 2],
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
        let index = |family| route.map_or(unmatched, |route| families.handler(family, route));
        let in_flight = index(2);
        families.in_flight(in_flight).inc();
        Some(Request {
            scope: Scope { families, claimed: Cell::new(None), in_flight: Cell::new(in_flight) },
            method: method_index(families.families.methods, method),
            routes: [index(0), index(1)],
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

    fn record(&mut self, status: u16) {
        self.done = true;
        let families = self.scope.families;
        let routes = match self.scope.claimed.get() {
            // A handler's own index is the same in every family.
            Some(handler) => [handler; 2],
            // No handler of the app answered the method: a router's 405,
            // like its 404, names no route.
            None if status == 405 => [self.unmatched; 2],
            None => self.routes,
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
            let row = routes[1] * methods + self.method;
            HistogramSeries::at(duration.series(row), duration).observe(self.start.elapsed_seconds());
            let row = routes[0] * methods + self.method;
            CounterSeries::at(calls.series(row * outcomes + status)).inc();
        }
        families.in_flight(self.scope.in_flight.get()).dec();
    }
}

impl Drop for Request {
    /// A request dropped before its response: the inner service panicked
    /// (500, as a catch-panic layer answers) or the client went away or
    /// timed out (499).
    fn drop(&mut self) {
        if !self.done {
            self.record(if std::thread::panicking() { PANIC_STATUS } else { CANCELLED_STATUS });
        }
    }
}

impl LayerFamilies {
    /// The index of `route` in family `family` (0 calls, 1 duration,
    /// 2 in flight); `other` once its table is full.
    fn handler(&self, family: usize, route: &str) -> usize {
        self.cores[family].interner(0).index(route)
    }

    /// The in-flight series of `handler`.
    fn in_flight(&self, handler: usize) -> GaugeSeries {
        let core: &'static MetricCore = self.cores[2];
        // SAFETY: `handler` came from the family's own table, so it is
        // below its series count.
        GaugeSeries::untimed(unsafe { &*core.series(handler) })
    }
}
