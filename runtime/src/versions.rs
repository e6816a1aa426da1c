//! This version's entry in `promshard_abi::VERSIONS`: what it offers the
//! other promshard versions linked into the binary (its exposition, its
//! declared metrics, its shard mapping). How this version uses the others
//! is `linked`; see there for why.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use promshard_abi::{Bytes, Sink, Str, Version};

use crate::linked::{VERSION, write};
use crate::metric::MetricCore;

promshard_abi::submit!(
    THIS = Version {
        version: Str::new(VERSION),
        shard_format: crate::shard::format::VERSION_NEWEST,
        render,
        declared,
        shard
    }
);

unsafe extern "C" fn render(code: u32, out: Sink) {
    let Some(x) = crate::linked::decode_format(code) else { return };
    // An unwinding panic must not cross into the other version's frames.
    let text = crate::linked::rendering_for_other(|| catch_unwind(|| crate::expose::encode(x)));
    if let Ok(text) = text {
        write(out, &text);
    }
}

unsafe extern "C" fn declared(out: Sink) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let mut lines = String::new();
        for core in declared_here() {
            let desc = core.descriptor();
            let _ = writeln!(lines, "{}\t{}:{}", desc.name, desc.file, desc.line);
        }
        write(out, lines.as_bytes());
    }));
}

unsafe extern "C" fn shard(path: Sink) -> Bytes {
    // Never lays the registry out: the caller may be in the middle of its
    // own layout or scrape. A forked child whose file could not be made
    // has none: its mapping is private memory, named as its parent's.
    match crate::shard::own_file() {
        Some(own) => {
            write(path, own.dir.join(own.file_name()).as_os_str().as_bytes());
            let bytes = own.bytes();
            Bytes { ptr: bytes.as_ptr(), len: bytes.len() }
        }
        None => Bytes { ptr: core::ptr::null(), len: 0 },
    }
}

/// This version's declared metrics, each once, read from the slice rather
/// than the registry so that asking never lays anything out.
fn declared_here() -> Vec<&'static MetricCore> {
    let mut cores: Vec<&'static MetricCore> = crate::registry::METRICS.to_vec();
    cores.sort_by_key(|c| *c as *const MetricCore as usize);
    cores.dedup_by(|a, b| core::ptr::eq(*a, *b));
    cores
}
