//! Any bytes as a `.promshard` file: the reader must return an error or a
//! value, never panic, hang or read out of bounds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = promshard_runtime::__fuzz::shard_file(data);
});
