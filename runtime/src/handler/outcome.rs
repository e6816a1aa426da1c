//! How a call ended, read from what the function returned: a `Result`, an
//! HTTP status or response (feature `http-types`), a user type that
//! implements [`HandlerOutcome`], or anything else, which counts as `ok`.
//!
//! The choice is made where the return type is concrete, in the code
//! `#[instrument_handler]` writes, by autoref specialisation over the
//! [`classify`] traits: no glue in the user's code, and a type the rules
//! do not know still compiles.

/// How a call ended: a success or a failure, and the HTTP status it
/// answered with, if any.
///
/// Plain functions label it `result="ok"` or `"error"`; HTTP handlers
/// label the status, or `200` and `500` when there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    status: u16,
    error: bool,
}

impl Outcome {
    /// A success without a status (`200` for an HTTP handler).
    pub const OK: Outcome = Outcome { status: 0, error: false };
    /// A failure without a status (`500` for an HTTP handler).
    pub const ERROR: Outcome = Outcome { status: 0, error: true };

    /// An answer with `code`; a failure when it is a server error
    /// (`5xx`): a client's mistake is not the function's.
    pub const fn status(code: u16) -> Outcome {
        Outcome { status: code, error: code >= 500 }
    }

    /// The same status, as a failure: what an `Err` carrying it means.
    pub const fn into_error(self) -> Outcome {
        Outcome { error: true, ..self }
    }

    /// Whether the call failed.
    pub const fn is_error(self) -> bool {
        self.error
    }

    /// The HTTP status: the one given, else `200` or `500`.
    pub const fn http_status(self) -> u16 {
        match (self.status, self.error) {
            (0, false) => 200,
            (0, true) => 500,
            (code, _) => code,
        }
    }
}

/// A return value that tells how its call ended, for
/// `#[instrument_handler]`.
///
/// ```
/// use promshard::{HandlerOutcome, Outcome, instrument_handler};
///
/// enum Reply { Found(String), Missing }
///
/// impl HandlerOutcome for Reply {
///     fn outcome(&self) -> Outcome {
///         match self {
///             Reply::Found(_) => Outcome::status(200),
///             Reply::Missing => Outcome::status(404),
///         }
///     }
/// }
///
/// #[instrument_handler(route = "/pages/{name}", method = "GET")]
/// fn page(name: &str) -> Reply {
///     if name == "home" { Reply::Found("welcome".into()) } else { Reply::Missing }
/// }
///
/// page("nowhere");
/// let labels = [("handler", "/pages/{name}"), ("method", "GET"), ("status", "404")];
/// assert_eq!(promshard::testing::sample_value("http_requests_total", &labels), Some(1.0));
/// ```
///
/// `Result<T, E>` implements it when both sides do; when only one side
/// does (an error type with a status beside a `Json` body), or neither,
/// the instrumented function still reads `Ok` and `Err` and whichever
/// side tells more. With feature `http-types`: `http::StatusCode`,
/// `http::Response<B>`, and tuples led by a `StatusCode`.
pub trait HandlerOutcome {
    /// How the call that returned `self` ended.
    fn outcome(&self) -> Outcome;
}

impl HandlerOutcome for Outcome {
    fn outcome(&self) -> Outcome {
        *self
    }
}

impl<T: HandlerOutcome, E: HandlerOutcome> HandlerOutcome for Result<T, E> {
    fn outcome(&self) -> Outcome {
        match self {
            Ok(value) => value.outcome(),
            Err(error) => error.outcome().into_error(),
        }
    }
}

#[cfg(feature = "http-types")]
mod http_types {
    use super::{HandlerOutcome, Outcome};

    impl HandlerOutcome for ::http::StatusCode {
        fn outcome(&self) -> Outcome {
            Outcome::status(self.as_u16())
        }
    }

    impl<B> HandlerOutcome for ::http::Response<B> {
        fn outcome(&self) -> Outcome {
            Outcome::status(self.status().as_u16())
        }
    }

    macro_rules! status_tuples {
        ($($rest:ident)*) => {
            impl<$($rest),*> HandlerOutcome for (::http::StatusCode, $($rest,)*) {
                fn outcome(&self) -> Outcome {
                    self.0.outcome()
                }
            }
        };
    }
    status_tuples!(A);
    status_tuples!(A B);
    status_tuples!(A B C);
    status_tuples!(A B C D);
}

/// Not a stable API: the autoref-specialisation ladder generated code
/// climbs with `(&&&&Classify(&value)).__promshard_outcome()`. Method
/// lookup tries the most referenced receiver first, so each rung is a
/// trait on one reference level fewer, and the first whose bounds hold
/// answers.
#[doc(hidden)]
pub mod classify {
    use super::{HandlerOutcome, Outcome};

    /// The returned value, borrowed.
    pub struct Classify<'a, R>(pub &'a R);

    // By hand: a derive would ask for `R: Copy`. Copy lets the last rung
    // take the wrapper by value behind the references.
    impl<R> Clone for Classify<'_, R> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<R> Copy for Classify<'_, R> {}

    /// Rung 1: the type tells its own outcome.
    pub trait ByOutcome {
        /// The outcome.
        fn __promshard_outcome(self) -> Outcome;
    }
    impl<R: HandlerOutcome> ByOutcome for &&&&Classify<'_, R> {
        #[inline(always)]
        fn __promshard_outcome(self) -> Outcome {
            self.0.outcome()
        }
    }

    /// Rung 2: a `Result` whose error tells its status.
    pub trait ByErrorOutcome {
        /// The outcome.
        fn __promshard_outcome(self) -> Outcome;
    }
    impl<T, E: HandlerOutcome> ByErrorOutcome for &&&Classify<'_, Result<T, E>> {
        #[inline(always)]
        fn __promshard_outcome(self) -> Outcome {
            match self.0 {
                Ok(_) => Outcome::OK,
                Err(error) => error.outcome().into_error(),
            }
        }
    }

    /// Rung 3: a `Result` whose success value tells its status.
    pub trait ByValueOutcome {
        /// The outcome.
        fn __promshard_outcome(self) -> Outcome;
    }
    impl<T: HandlerOutcome, E> ByValueOutcome for &&Classify<'_, Result<T, E>> {
        #[inline(always)]
        fn __promshard_outcome(self) -> Outcome {
            match self.0 {
                Ok(value) => value.outcome(),
                Err(_) => Outcome::ERROR,
            }
        }
    }

    /// Rung 4: any `Result`.
    pub trait ByResult {
        /// The outcome.
        fn __promshard_outcome(self) -> Outcome;
    }
    impl<T, E> ByResult for &Classify<'_, Result<T, E>> {
        #[inline(always)]
        fn __promshard_outcome(self) -> Outcome {
            if self.0.is_ok() { Outcome::OK } else { Outcome::ERROR }
        }
    }

    /// Rung 5: anything else returned, which is a success.
    pub trait Fallback {
        /// The outcome.
        fn __promshard_outcome(self) -> Outcome;
    }
    impl<R> Fallback for Classify<'_, R> {
        #[inline(always)]
        fn __promshard_outcome(self) -> Outcome {
            Outcome::OK
        }
    }
}

/// Not a stable API: the outcome of the value behind `$value` (a
/// reference), as `#[instrument_handler]`'s generated code reads it.
#[doc(hidden)]
#[macro_export]
macro_rules! __promshard_outcome {
    ($value:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::classify::{
            ByErrorOutcome as _, ByOutcome as _, ByResult as _, ByValueOutcome as _, Fallback as _,
        };
        (&&&&$crate::__private::classify::Classify($value)).__promshard_outcome()
    }};
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    struct NotFound;
    impl super::HandlerOutcome for NotFound {
        fn outcome(&self) -> Outcome {
            Outcome::status(404)
        }
    }
    struct Plain;

    #[test]
    fn the_ladder_picks_the_most_specific_rule() {
        let ok: Result<Plain, NotFound> = Ok(Plain);
        let err: Result<Plain, NotFound> = Err(NotFound);
        assert_eq!(crate::__promshard_outcome!(&ok), Outcome::OK);
        assert_eq!(crate::__promshard_outcome!(&err), Outcome::status(404).into_error());
        let value: Result<NotFound, Plain> = Ok(NotFound);
        assert_eq!(crate::__promshard_outcome!(&value), Outcome::status(404));
        let plain: Result<Plain, Plain> = Err(Plain);
        assert_eq!(crate::__promshard_outcome!(&plain), Outcome::ERROR);
        assert_eq!(crate::__promshard_outcome!(&Plain), Outcome::OK);
        assert_eq!(crate::__promshard_outcome!(&NotFound), Outcome::status(404));
        let both: Result<NotFound, NotFound> = Err(NotFound);
        assert_eq!(crate::__promshard_outcome!(&both).http_status(), 404);
        assert!(crate::__promshard_outcome!(&both).is_error());
    }
}
