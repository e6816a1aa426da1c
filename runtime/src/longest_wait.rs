//! The longest wait a user-given timeout stands for. Deadlines are
//! `Instant::now() + timeout`, which panics past what the clock can hold:
//! `Duration::MAX`, the natural way to say "never", would panic every
//! caller that computes one (each connection of the endpoint, a push, a
//! Redis flush).

use std::time::Duration;

/// A century: far beyond any deployment, far within what an `Instant` can
/// be moved by.
pub(crate) const LONGEST_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
