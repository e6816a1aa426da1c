//! Attacks "counters never go down" and "a bad file costs only itself"
//! with a Python worker that records one label value holding an unpaired
//! surrogate: what Python makes of bytes that are not UTF-8 under
//! `surrogateescape` (`os.fsdecode`, file names, `sys.argv`, environment
//! variables). prometheus_client writes it into the worker's `.db` file
//! as `\udc80`, a key with no UTF-8 form. Python's own collector then
//! fails every scrape; promshard skipped the whole file as corrupt, so
//! every other series of the file (every counter of that worker) dropped
//! out of the scrape the moment the odd value was recorded: counters went
//! down.
//!
//! Expected: the one entry that cannot be shown is skipped (and reported:
//! `promshard check` names it), the file's other entries still count, in
//! the worker's life and after its death. Needs python3 with
//! prometheus_client (skipped loudly without, a failure under
//! `PROMSHARD_ORACLES=require`).

mod harness;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use harness::{TempDir, encode_dir_text, value_in};

/// A worker that records what it is told, line by line, answering `ok`.
const PY_WORKER: &str = r#"
import sys
from prometheus_client import Counter
jobs = Counter("surrogate_jobs", "Jobs.", ["kind"])
files = Counter("surrogate_files", "Files seen.", ["name"])
for line in sys.stdin:
    command = line.strip()
    if command == "jobs":
        jobs.labels("email").inc(5)
        jobs.labels("sms").inc(7)
    elif command == "odd file":
        # A file name that is not UTF-8, as os.fsdecode gives it.
        files.labels(b"report-\xff.csv".decode("utf-8", "surrogateescape")).inc()
    elif command == "good file":
        files.labels("report.csv").inc(2)
    print("ok", flush=True)
"#;

struct Worker {
    child: Child,
    replies: BufReader<std::process::ChildStdout>,
}

impl Worker {
    fn start(python: &Path, dir: &Path) -> Worker {
        let mut child = Command::new(python)
            .args(["-c", PY_WORKER])
            .env("PROMETHEUS_MULTIPROC_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs");
        let replies = BufReader::new(child.stdout.take().unwrap());
        Worker { child, replies }
    }

    fn ask(&mut self, command: &str) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{command}").unwrap();
        let mut line = String::new();
        self.replies.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok", "the worker did {command:?}");
    }

    fn exit(mut self) {
        drop(self.child.stdin.take());
        self.child.wait().unwrap();
    }
}

fn jobs(text: &str) -> (Option<f64>, Option<f64>, Option<f64>) {
    (
        value_in(text, "surrogate_jobs_total", &[("kind", "email")]),
        value_in(text, "surrogate_jobs_total", &[("kind", "sms")]),
        value_in(text, "surrogate_files_total", &[("name", "report.csv")]),
    )
}

#[test]
fn one_unpaired_surrogate_costs_only_its_own_series() {
    let Some(python) = support::python_with_prometheus_client() else {
        support::skip_or_fail(support::PYTHON_MISSING);
        return;
    };
    let dir = TempDir::new("surrogate");
    let mut worker = Worker::start(&python, dir.path());
    worker.ask("jobs");
    worker.ask("good file");
    let before = jobs(&encode_dir_text(dir.path()));
    assert_eq!(before, (Some(5.0), Some(7.0), Some(2.0)), "the worker's counters");

    worker.ask("odd file");
    let text = encode_dir_text(dir.path());
    assert_eq!(
        jobs(&text),
        before,
        "after the worker counted a file name that is not UTF-8, its other counters must stay in the \
         scrape (they dropped out: counters went down)\n{text}"
    );
    assert!(!text.contains("report-"), "the value with no UTF-8 form is not shown\n{text}");

    // Still so once the worker is gone and its file folded.
    worker.exit();
    for scrape in 0..2 {
        assert_eq!(jobs(&encode_dir_text(dir.path())), before, "after the worker exited, scrape {scrape}");
    }

    // `promshard check` still names the entry it skipped, and counts the
    // others.
    let files = promshard::multiprocess::inspect_python(dir.path()).unwrap();
    let counters: Vec<_> = files.iter().filter(|f| f.file.starts_with("counter_")).collect();
    assert_eq!(counters.len(), 1, "{files:?}");
    assert_eq!(counters[0].series, 3, "the three entries that can be shown: {files:?}");
    assert!(
        counters[0].problem.as_deref().is_some_and(|p| p.contains("surrogate")),
        "the skipped entry is named: {files:?}"
    );
}
