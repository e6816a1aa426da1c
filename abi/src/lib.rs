//! The one place where every promshard version linked into a binary meets
//! the others.
//!
//! An application on promshard 0.1 with a dependency on promshard 0.2
//! links two copies of the runtime, each with its own registry, types and
//! shard file. Cargo unifies this crate across them (they all depend on
//! its 1.x), so [`VERSIONS`] is declared once and each runtime adds one
//! [`Version`] to it: through that, each version's exposition includes the
//! others' metrics.
//!
//! A `linkme` slice cannot be declared by every version under one name:
//! linkme refuses a slice declared twice at its first use, with a panic.
//! Hence this crate, which holds the declaration once for all of them.
//!
//! The entry is `#[repr(C)]` with `extern "C"` functions and plain
//! pointers: it is the whole contract between versions that share no other
//! type, and it changes only with this crate's major version.

#![no_std]
#![warn(missing_docs)]

use core::ffi::c_void;

/// A borrowed UTF-8 string.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Str {
    /// The first byte.
    pub ptr: *const u8,
    /// The length in bytes.
    pub len: usize,
}

impl Str {
    /// A `'static` string, for the fields of a [`Version`].
    pub const fn new(s: &'static str) -> Str {
        Str { ptr: s.as_ptr(), len: s.len() }
    }

    /// The string.
    ///
    /// # Safety
    ///
    /// `ptr` and `len` describe valid UTF-8 that lives for `'a`.
    pub unsafe fn as_str<'a>(self) -> &'a str {
        // SAFETY: the caller's promise.
        unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(self.ptr, self.len)) }
    }
}

/// Where a version writes bytes for the version that called it: `write`
/// is called with `ctx` and each chunk, any number of times.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sink {
    /// The caller's state, passed back to `write`.
    pub ctx: *mut c_void,
    /// Appends `len` bytes at `bytes` to the caller's buffer.
    pub write: unsafe extern "C" fn(ctx: *mut c_void, bytes: *const u8, len: usize),
}

/// A borrowed byte range; null when there is none.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    /// The first byte, or null.
    pub ptr: *const u8,
    /// The length in bytes.
    pub len: usize,
}

/// Exposition format code for [`Version::render`]: Prometheus text 0.0.4.
pub const FORMAT_PROMETHEUS: u32 = 0;
/// Exposition format code for [`Version::render`]: OpenMetrics 1.0.0.
pub const FORMAT_OPENMETRICS: u32 = 1;

/// Added to a format code for [`Version::render`]: metric and label names
/// outside the legacy character set quoted, as Prometheus' `allow-utf-8`
/// escaping writes them. A code without an `ESCAPING_*` value asks for
/// `underscores`, the only escaping versions before 1.1 of this crate
/// knew. A version that does not know a code writes nothing: whoever asks
/// with an escaping value and gets nothing asks again without it (a
/// version that knows no escaping declares legacy names only, which every
/// escaping writes alike).
pub const ESCAPING_ALLOW_UTF8: u32 = 1 << 8;
/// Added to a format code: names escaped as Prometheus' `dots` does.
pub const ESCAPING_DOTS: u32 = 2 << 8;
/// Added to a format code: names escaped as Prometheus' `values` does.
pub const ESCAPING_VALUES: u32 = 3 << 8;

/// One promshard version linked into this binary.
///
/// The functions never unwind and are safe to call from any thread, at any
/// time, also before the version recorded anything.
#[repr(C)]
#[derive(Debug)]
pub struct Version {
    /// The crate version, such as `0.2.0`.
    pub version: Str,
    /// The version of the shard file format this version writes and reads.
    pub shard_format: u32,
    /// Writes this version's whole exposition in the format with the given
    /// code (`FORMAT_*`, plus an `ESCAPING_*` value; nothing for an
    /// unknown code), without the other versions' metrics.
    pub render: unsafe extern "C" fn(format: u32, out: Sink),
    /// Writes one line per declared metric: its name, a tab, `file:line`
    /// of the declaration, a newline.
    pub declared: unsafe extern "C" fn(out: Sink),
    /// Writes the path of the shard file this version maps in this process
    /// and returns the mapping, which lives for the rest of the process;
    /// writes nothing and returns null when it has none. Other versions
    /// read it through the mapping and never open it: closing any
    /// descriptor of a file drops the process's liveness lock on it.
    pub shard: unsafe extern "C" fn(path: Sink) -> Bytes,
}

// SAFETY: only `'static` strings and functions are shared.
unsafe impl Sync for Version {}

/// Every promshard version linked into this binary, one entry each.
#[linkme::distributed_slice]
pub static VERSIONS: [Version];

/// Not a stable API: for [`submit!`].
#[doc(hidden)]
pub mod __private {
    pub use linkme;
}

/// Adds a [`Version`] to [`VERSIONS`], as `static $name`.
#[macro_export]
macro_rules! submit {
    ($name:ident = $entry:expr) => {
        #[$crate::__private::linkme::distributed_slice($crate::VERSIONS)]
        #[linkme(crate = $crate::__private::linkme)]
        static $name: $crate::Version = $entry;
    };
}
