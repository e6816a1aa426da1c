//! `#[instrument_handler]` on function shapes real code has: early
//! `return`s in functions that return their work as a future, `unsafe
//! fn`, `self: Pin<&mut Self>`, `where` clauses, `#[cfg]`-gated
//! parameters, recursion, a
//! handler called from another (returning, panicking, cancelled), and
//! `return` inside nested closures and async blocks. Every call counts
//! once, with its outcome, and in flight goes back to 0.
//!
//! Every test uses handlers of its own, so exact counts hold while tests
//! run in parallel.

mod calls;
mod harness;

use std::fmt::Display;
use std::future::Future;
use std::panic::catch_unwind;
use std::pin::Pin;
use std::task::{Context, Waker};

use calls::{Yield, block_on, function_counts, path};
use promshard::instrument_handler;

// ---------------------------------------------------------------------
// Functions returning their work as a future, with an early `return`
// ---------------------------------------------------------------------

/// A hand-written "async" function, as code predating `async fn` (and
/// trait objects) write it: the cheap case answers at once.
#[instrument_handler]
fn lookup_boxed(id: u32) -> Pin<Box<dyn Future<Output = Result<u32, String>> + Send>> {
    if id == 0 {
        return Box::pin(async { Err("no id 0".to_owned()) });
    }
    Box::pin(async move {
        Yield(false).await;
        Ok(id * 2)
    })
}

#[test]
fn a_boxed_future_returned_early_is_counted_too() {
    let handler = path("lookup_boxed");
    assert_eq!(block_on(lookup_boxed(4)), Ok(8));
    assert!(block_on(lookup_boxed(0)).is_err());
    assert_eq!(
        function_counts(&handler),
        ([1.0, 1.0, 0.0, 0.0], 2.0, 0.0),
        "the early return's future is a call like the other"
    );
}

// ---------------------------------------------------------------------
// Receivers, `unsafe fn`, `where`, `#[cfg]`
// ---------------------------------------------------------------------

struct Counter {
    value: u64,
}

impl Counter {
    #[instrument_handler(name = "shapes::counter::slot")]
    fn slot(&mut self) -> &mut u64 {
        &mut self.value
    }

    #[instrument_handler(name = "shapes::counter::pinned")]
    fn pinned(self: Pin<&mut Self>, by: u64) -> u64 {
        let this = self.get_mut();
        this.value += by;
        this.value
    }

    #[instrument_handler(name = "shapes::counter::boxed")]
    fn boxed(self: Box<Self>) -> u64 {
        self.value
    }

    /// # Safety
    /// `at` is within `values`.
    #[instrument_handler(name = "shapes::counter::unchecked")]
    unsafe fn unchecked(&self, values: &[u64], at: usize) -> u64 {
        // SAFETY: the caller's promise.
        unsafe { *values.get_unchecked(at) + self.value }
    }
}

#[instrument_handler]
fn describe<T, U>(first: T, second: U) -> String
where
    T: Display,
    U: Display + Copy,
{
    format!("{first}/{second}/{second}")
}

#[instrument_handler]
fn gated(#[cfg(any())] never: u8, always: u8) -> u8 {
    always + 1
}

#[test]
fn receivers_unsafe_where_and_cfg() {
    let mut counter = Counter { value: 1 };
    *counter.slot() += 1;
    assert_eq!(Pin::new(&mut counter).pinned(3), 5);
    // SAFETY: 1 < 2.
    assert_eq!(unsafe { counter.unchecked(&[10, 20], 1) }, 25);
    assert_eq!(Box::new(counter).boxed(), 5);
    assert_eq!(describe("a", 2), "a/2/2");
    assert_eq!(gated(1), 2);
    for handler in
        ["shapes::counter::slot", "shapes::counter::pinned", "shapes::counter::boxed", "shapes::counter::unchecked"]
    {
        assert_eq!(function_counts(handler), ([1.0, 0.0, 0.0, 0.0], 1.0, 0.0), "{handler}");
    }
    assert_eq!(function_counts(&path("describe")), ([1.0, 0.0, 0.0, 0.0], 1.0, 0.0));
    assert_eq!(function_counts(&path("gated")), ([1.0, 0.0, 0.0, 0.0], 1.0, 0.0));
}

// ---------------------------------------------------------------------
// Recursion, and handlers calling handlers
// ---------------------------------------------------------------------

#[instrument_handler]
fn factorial(n: u64) -> u64 {
    if n <= 1 {
        return 1;
    }
    n * factorial(n - 1)
}

#[instrument_handler]
fn fibonacci_async(n: u32) -> Pin<Box<dyn Future<Output = u64> + Send>> {
    Box::pin(async move {
        Yield(false).await;
        if n < 2 { u64::from(n) } else { fibonacci_async(n - 1).await + fibonacci_async(n - 2).await }
    })
}

#[instrument_handler]
fn inner_step(fail: bool) -> Result<u8, String> {
    if fail {
        panic!("expected: the inner step panics");
    }
    Ok(1)
}

#[instrument_handler]
fn outer_step(fail: bool) -> Result<u8, String> {
    // The inner panic is caught here: the outer call returns an error.
    match catch_unwind(|| inner_step(fail)) {
        Ok(value) => value,
        Err(_) => Err("inner step panicked".into()),
    }
}

#[instrument_handler]
async fn inner_wait() -> u8 {
    Yield(false).await;
    Yield(false).await;
    1
}

#[instrument_handler]
async fn outer_wait() -> u8 {
    inner_wait().await + 1
}

#[test]
fn recursion_and_handlers_inside_handlers_count_each_call_once() {
    harness::quiet_expected_panics();
    assert_eq!(factorial(5), 120);
    assert_eq!(function_counts(&path("factorial")), ([5.0, 0.0, 0.0, 0.0], 5.0, 0.0));
    assert_eq!(block_on(fibonacci_async(5)), 5);
    // fib(5) makes 15 calls.
    assert_eq!(function_counts(&path("fibonacci_async")), ([15.0, 0.0, 0.0, 0.0], 15.0, 0.0));

    assert_eq!(outer_step(false), Ok(1));
    assert!(outer_step(true).is_err());
    assert_eq!(function_counts(&path("inner_step")), ([1.0, 0.0, 1.0, 0.0], 2.0, 0.0));
    assert_eq!(function_counts(&path("outer_step")), ([1.0, 1.0, 0.0, 0.0], 2.0, 0.0));

    // Dropped while the inner call waits: both are cancelled, once.
    let mut waiting = Box::pin(outer_wait());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    assert_eq!(function_counts(&path("inner_wait")).2, 1.0);
    assert_eq!(function_counts(&path("outer_wait")).2, 1.0);
    drop(waiting);
    assert_eq!(block_on(outer_wait()), 2);
    assert_eq!(function_counts(&path("inner_wait")), ([1.0, 0.0, 0.0, 1.0], 2.0, 0.0));
    assert_eq!(function_counts(&path("outer_wait")), ([1.0, 0.0, 0.0, 1.0], 2.0, 0.0));
}

// ---------------------------------------------------------------------
// `return` inside nested closures and async blocks
// ---------------------------------------------------------------------

#[instrument_handler]
fn first_negative(values: &[i64]) -> Result<usize, String> {
    let negative = |v: &i64| -> bool {
        if *v >= 0 {
            return false;
        }
        true
    };
    for (at, v) in values.iter().enumerate() {
        if negative(v) {
            return Ok(at);
        }
    }
    Err("none".into())
}

#[instrument_handler]
async fn nested_async_return(fail: bool) -> Result<u8, String> {
    let inner = async {
        if fail {
            return Err::<u8, String>("inner".into());
        }
        Ok(3)
    };
    let value = inner.await?;
    let closure = |by: u8| {
        if by == 0 {
            return value;
        }
        value + by
    };
    Ok(closure(1))
}

#[test]
fn returns_in_nested_closures_and_async_blocks_end_only_their_block() {
    assert_eq!(first_negative(&[1, -2]), Ok(1));
    assert!(first_negative(&[1]).is_err());
    assert_eq!(function_counts(&path("first_negative")), ([1.0, 1.0, 0.0, 0.0], 2.0, 0.0));
    assert_eq!(block_on(nested_async_return(false)), Ok(4));
    assert!(block_on(nested_async_return(true)).is_err());
    assert_eq!(function_counts(&path("nested_async_return")), ([1.0, 1.0, 0.0, 0.0], 2.0, 0.0));
}
