//! One instrumented call, from start to its end: returned (ok or error),
//! panicked, or dropped unfinished (cancelled).
//!
//! A [`Call`] is a guard: it raises the in-flight gauge when it starts
//! and its end is recorded exactly once, by [`Call::finish`] with the
//! outcome of the returned value, or by its `Drop`, which can only run
//! without `finish` while a panic unwinds or when its future is dropped.

use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll};

use super::clock::{self, Stamp};
use super::families::{CANCELLED_STATUS, HandlerKind, PANIC_STATUS};
use super::layout::{HandlerSite, SiteSlots};
use super::outcome::Outcome;
use crate::instruments::counter::CounterSeries;

/// How a call ended.
#[derive(Clone, Copy)]
enum End {
    Returned(Outcome),
    Panicked,
    Cancelled,
}

impl HandlerSite {
    /// This site's slots, laying the registry out on the first call.
    #[inline(always)]
    fn slots(&'static self) -> &'static SiteSlots {
        let slots = self.slots.load(Ordering::Acquire);
        if slots.is_null() {
            return self.attach();
        }
        // SAFETY: set once to a leaked `SiteSlots`, never changed.
        unsafe { &*slots }
    }

    #[cold]
    #[inline(never)]
    fn attach(&'static self) -> &'static SiteSlots {
        crate::registry::get();
        if self.slots.load(Ordering::Acquire).is_null() {
            crate::gate::locked(|| {
                if self.slots.load(Ordering::Acquire).is_null() {
                    super::layout::attach_unlisted(self);
                }
            });
        }
        // SAFETY: as in `slots`; set by the layout or just above.
        unsafe { &*self.slots.load(Ordering::Acquire) }
    }

    /// Starts a call: raises the in-flight gauge and starts the clock;
    /// or, inside a request the tower layer records into the same
    /// families, hands the request to the layer and counts nothing.
    #[inline(always)]
    pub fn start(&'static self) -> Call {
        let slots = self.slots();
        #[cfg(feature = "tower")]
        if let Some(handler) = slots.layer_handler {
            if super::request::claim(handler) {
                return Call { slots, start: clock::Stamp::ZERO, counted: false, generation: 0 };
            }
        }
        slots.in_flight.inc();
        Call { slots, start: clock::now(), counted: true, generation: crate::shard::fork::generation() }
    }

    /// Runs a synchronous body as one call; `classify` reads the outcome
    /// of what it returned.
    #[inline(always)]
    pub fn call<R>(&'static self, body: impl FnOnce() -> R, classify: impl FnOnce(&R) -> Outcome) -> R {
        let call = self.start();
        let value = body();
        call.finish(classify(&value));
        value
    }

    /// Wraps an asynchronous body: the call starts at the first poll and
    /// ends when it completes, panics or is dropped unfinished.
    #[inline(always)]
    pub fn instrument<F, C>(&'static self, future: F, classify: C) -> Instrumented<F, C>
    where
        F: Future,
        C: FnOnce(&F::Output) -> Outcome,
    {
        Instrumented { future, classify: Some(classify), site: self, call: None }
    }

    /// [`instrument`](Self::instrument) for the future `make` returns: the
    /// body of a `fn` returning a future, run as a closure so that its
    /// early `return`s give their future to the wrapper too.
    #[inline(always)]
    pub fn instrument_made<F, C>(&'static self, make: impl FnOnce() -> F, classify: C) -> Instrumented<F, C>
    where
        F: Future,
        C: FnOnce(&F::Output) -> Outcome,
    {
        self.instrument(make(), classify)
    }
}

/// A call in progress: its end is recorded once, by `finish` or, when
/// the body panicked or its future was dropped, by `Drop`.
#[must_use = "a call dropped without `finish` is counted as cancelled (or as a panic while unwinding)"]
pub struct Call {
    slots: &'static SiteSlots,
    start: Stamp,
    /// False when the tower layer counts the request this call serves.
    counted: bool,
    /// The slot generation it started in: a forked child (whose slots
    /// start from zero) ending its parent's call counts nothing.
    generation: u32,
}

impl Call {
    /// Ends the call with the outcome of its returned value.
    #[inline(always)]
    pub fn finish(self, outcome: Outcome) {
        ManuallyDrop::new(self).end(End::Returned(outcome));
    }

    /// Ends the call as cancelled: its future was dropped unfinished.
    fn cancel(self) {
        ManuallyDrop::new(self).end(End::Cancelled);
    }

    #[inline(always)]
    fn end(&self, end: End) {
        if !self.counted || self.generation != crate::shard::fork::generation() {
            return;
        }
        let slots = self.slots;
        let outcome = match (slots.kind, end) {
            (HandlerKind::Function, End::Returned(outcome)) => outcome.is_error() as usize,
            (HandlerKind::Function, End::Panicked) => 2,
            (HandlerKind::Function, End::Cancelled) => 3,
            (HandlerKind::Http, end) => {
                let code = match end {
                    End::Returned(outcome) => outcome.http_status(),
                    End::Panicked => PANIC_STATUS,
                    End::Cancelled => CANCELLED_STATUS,
                };
                let other = slots.statuses[0];
                *slots.statuses.get(code as usize).unwrap_or(&other) as usize
            }
        };
        let elapsed = self.start.elapsed_seconds();
        let width = slots.calls_core.descriptor().width;
        // SAFETY: `calls` is followed by one series per status or result
        // of this handler (and method), and `outcome` indexes one of them.
        let calls = unsafe { CounterSeries::of(slots.calls.add(outcome * width), slots.calls_core) };
        super::trace::record(slots.duration, calls, elapsed);
        slots.in_flight.dec();
    }
}

impl Drop for Call {
    /// Only reached without `finish` when the body did not return: it
    /// panicked, unless the future holding the call was dropped.
    fn drop(&mut self) {
        self.end(if std::thread::panicking() { End::Panicked } else { End::Cancelled });
    }
}

impl core::fmt::Debug for Call {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Call").field("start", &self.start).finish_non_exhaustive()
    }
}

/// An instrumented future; see [`HandlerSite::instrument`].
#[must_use = "futures do nothing unless polled"]
pub struct Instrumented<F, C> {
    future: F,
    /// `None` once the call completed.
    classify: Option<C>,
    site: &'static HandlerSite,
    /// The call, between polls.
    call: Option<Call>,
}

impl<F, C> Future for Instrumented<F, C>
where
    F: Future,
    C: FnOnce(&F::Output) -> Outcome,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is pinned with the wrapper and never moved out;
        // no other field is structurally pinned.
        let this = unsafe { self.get_unchecked_mut() };
        assert!(this.classify.is_some(), "`Instrumented` polled after completion");
        // On this stack during the poll, so that a panic in the body drops
        // it while unwinding and it counts the panic.
        let call = match this.call.take() {
            Some(call) => call,
            None => this.site.start(),
        };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        match future.poll(cx) {
            Poll::Pending => {
                this.call = Some(call);
                Poll::Pending
            }
            Poll::Ready(value) => {
                let classify = this.classify.take().expect("checked above");
                call.finish(classify(&value));
                Poll::Ready(value)
            }
        }
    }
}

impl<F, C> Drop for Instrumented<F, C> {
    fn drop(&mut self) {
        // Started and not finished: dropped while pending.
        if let Some(call) = self.call.take() {
            call.cancel();
        }
    }
}

impl<F, C> core::fmt::Debug for Instrumented<F, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Instrumented").field("call", &self.call).finish_non_exhaustive()
    }
}
