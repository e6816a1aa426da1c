//! Any bytes as a Python prometheus_client `.db` file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = promshard_runtime::__fuzz::python_db(data);
});
