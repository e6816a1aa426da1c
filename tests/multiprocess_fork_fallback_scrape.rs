//! Attacks "counters never go down between scrapes, whichever worker
//! answers" when a worker is forked at a moment its shard cannot be made
//! (no descriptor or disk space left: a pre-fork pool on a nearly full
//! tmpfs hits it at every retirement). Such a worker records into private
//! memory that no scrape sees, as documented; but it still answers
//! `/metrics`, and its scrape must be the directory's merged view, the
//! same as any other worker's. It used to take its parent's shard for its
//! own: it left the parent's file out of the listing and read its own
//! zeroed private memory in its place, so every count the master held
//! (`promshard_fork_fallbacks_total` itself among them) dropped to zero
//! in the scrapes it answered, and came back in the next worker's.
//!
//! A worker forked by such a worker in turn must not write a shard file
//! made from that zeroed memory either (a file with a blank header that
//! every scrape reports as bad).

mod harness;

use std::time::Duration;

use harness::{TempDir, fork_child, isolated, own_text, shard_errors, shard_files, value_in, wait_timeout};
use promshard::{Counter, metric};

/// Jobs done.
#[metric]
static FALLBACK_SCRAPE_JOBS_TOTAL: Counter;

/// Checks one scrape's text from the fallback child's point of view.
fn check_merged_view(text: &str, who: &str) {
    assert_eq!(
        value_in(text, "fallback_scrape_jobs_total", &[]),
        Some(7.0),
        "{who}: the parent's 7 jobs, as every scrape of the directory shows them (the child's own 100 \
         are in private memory no scrape sees)\n{text}"
    );
    assert_eq!(
        value_in(text, "promshard_fork_fallbacks_total", &[]),
        Some(1.0),
        "{who}: the parent counted this child's fallback in its shard\n{text}"
    );
    assert_eq!(shard_errors(text), 0.0, "{who}: no file of the directory is bad\n{text}");
}

fn scenario() {
    let base = TempDir::new("fallback-scrape");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    FALLBACK_SCRAPE_JOBS_TOTAL.inc_by(7);
    let _ = own_text();

    // No descriptor left: the child's open() of its new shard fails.
    let (soft, hard) = harness::get_rlimit(libc::RLIMIT_NOFILE);
    harness::set_rlimit(libc::RLIMIT_NOFILE, 64, hard);
    let mut filler = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        filler.push(file);
    }
    let filler_fds: Vec<i32> = filler.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    let scrape_dir = dir.clone();
    let child = fork_child(move || {
        FALLBACK_SCRAPE_JOBS_TOTAL.inc_by(100);
        // Descriptors again, as a worker gets them back once its client
        // connections close: the scrape itself must be able to run.
        for fd in &filler_fds {
            // SAFETY: this process's copies of the parent's filler.
            unsafe { libc::close(*fd) };
        }
        harness::set_rlimit(libc::RLIMIT_NOFILE, soft, hard);
        check_merged_view(&own_text(), "the fallback child's own scrape");
        let sampled = promshard::testing::sample_value("fallback_scrape_jobs_total", &[]);
        assert_eq!(sampled, Some(7.0), "the fallback child's sample_value");
        check_merged_view(&harness::encode_dir_text(&scrape_dir), "the fallback child's encode_dir");

        // A worker it forks, now that descriptors are back.
        let grandchild = fork_child(|| {
            FALLBACK_SCRAPE_JOBS_TOTAL.inc_by(1000);
            check_merged_view(&own_text(), "the fallback child's child's scrape");
            0
        });
        let status = wait_timeout(grandchild, Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0),
            "the grandchild's checks passed (its panic is above): {status:?}"
        );
        check_merged_view(&own_text(), "the fallback child's scrape after its own child");
        0
    });
    drop(filler);
    harness::set_rlimit(libc::RLIMIT_NOFILE, soft, hard);
    let status = wait_timeout(child, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0),
        "the fallback child's checks passed (its panic is above): {}",
        status.map_or("timed out".to_owned(), harness::describe_status)
    );

    let text = own_text();
    check_merged_view(&text, "the parent's scrape");
    let files = shard_files(&dir);
    assert!(
        files.iter().all(|f| f == "archive.promshard" || f.starts_with(&format!("p{}-", std::process::id()))),
        "only the parent's shard (and an archive) are left: no file made from a fallback's blank memory: \
         {files:?}"
    );
}

#[test]
fn a_fallback_childs_scrape_is_the_merged_view() {
    isolated("a_fallback_childs_scrape_is_the_merged_view", Duration::from_secs(60), scenario);
}
