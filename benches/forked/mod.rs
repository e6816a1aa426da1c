//! Benchmarks of multiprocess mode run in a forked child, since a process
//! chooses its storage once: before the parent lays out its own registry,
//! the child records into a shard file of its own.

use criterion::Criterion;

/// Runs `benches` in a forked child whose metrics live in a shard file in
/// a fresh directory; the parent waits for it, then goes on.
pub fn in_shard_process(tag: &str, benches: impl FnOnce(&mut Criterion)) {
    // SAFETY: the child runs the benchmarks and _exits; the parent waits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid != 0 {
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return;
    }
    let dir = std::env::temp_dir().join(format!("promshard-bench-{tag}-{}", std::process::id()));
    promshard::multiprocess::init(&dir).unwrap();
    promshard::check_registry().expect("benchmark metrics are consistent");
    assert!(promshard::multiprocess::shard_dir().is_some(), "recording into a shard file");
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY: leave without running the parent's remaining benchmarks.
    unsafe { libc::_exit(0) };
}
