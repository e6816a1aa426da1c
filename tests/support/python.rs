//! Python's side of the tests of a prometheus_client multiprocess
//! directory: Python's own collector as the oracle, Python's parser to
//! compare texts, a scratch directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use promshard::Format;

use super::run_python;

/// Copies `dir` (only `.db` files, minus `skip`), calls `mark_process_dead`
/// there for every pid in `dead`, and prints Python's collector's text.
pub const ORACLE: &str = r#"
import os, shutil, sys, tempfile
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

src, dead, skip = sys.argv[1], sys.argv[2].split(','), set(sys.argv[3].split(','))
copy = tempfile.mkdtemp(prefix='promshard-oracle-')
try:
    for name in os.listdir(src):
        if name.endswith('.db') and name not in skip:
            shutil.copy(os.path.join(src, name), copy)
    for pid in dead:
        if pid:
            mark_process_dead(int(pid), copy)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=copy)
    sys.stdout.buffer.write(generate_latest(registry))
finally:
    shutil.rmtree(copy)
"#;

/// Python's 0.0.4 parser: one `name<TAB>value<TAB>k=v…` line per sample,
/// labels sorted, values as `repr(float)`, text as hex.
pub const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = sorted((k, v.encode().hex()) for k, v in s.labels.items())
        out.append('\t'.join([s.name, repr(float(s.value))] + ['%s=%s' % kv for kv in labels]))
print('\n'.join(sorted(out)))
"#;

/// A directory under the system temp dir (resolved: no symlinks),
/// removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("promshard-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(std::fs::canonicalize(&dir).unwrap())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub type Samples = BTreeMap<String, String>;

/// Python's parse of an exposition: `name{labels}` → value text.
pub fn parse(python: &Path, text: &str) -> Samples {
    run_python(python, PARSE, text)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next().unwrap();
            let value = fields.next().unwrap().to_owned();
            let labels: Vec<&str> = fields.collect();
            (format!("{name}{{{}}}", labels.join(",")), value)
        })
        .collect()
}

pub fn ours(python: &Path, dir: &Path) -> Samples {
    let text = String::from_utf8(promshard::multiprocess::encode_dir(dir, Format::Prometheus)).unwrap();
    // Our own self-metric is not Python's.
    let text: String = text.lines().filter(|l| !l.contains("promshard_")).map(|l| format!("{l}\n")).collect::<String>();
    parse(python, &text)
}

pub fn oracle(python: &Path, dir: &Path, dead: &[u32], skip: &[&str]) -> Samples {
    let dead: Vec<String> = dead.iter().map(u32::to_string).collect();
    let output = Command::new(python)
        .args(["-c", ORACLE])
        .arg(dir)
        .arg(dead.join(","))
        .arg(skip.join(","))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "oracle failed: {}", String::from_utf8_lossy(&output.stderr));
    parse(python, &String::from_utf8(output.stdout).unwrap())
}

/// Equal, the last bit of float sums aside (Python adds files in the
/// directory's order, we in another).
pub fn assert_same(step: &str, ours: &Samples, theirs: &Samples) {
    let diff = differences(ours, theirs);
    assert!(diff.is_empty(), "{step}: our merge differs from Python's with the hook:\n{diff}");
    assert!(!theirs.is_empty(), "{step}: the oracle saw nothing");
}

/// What [`assert_same`] would complain of; empty when they agree.
pub fn differences(ours: &Samples, theirs: &Samples) -> String {
    let mut diff = String::new();
    for (key, value) in theirs {
        match ours.get(key) {
            None => diff.push_str(&format!("only Python's: {key} {value}\n")),
            Some(v) if v != value => {
                let (a, b): (f64, f64) = (v.parse().unwrap(), value.parse().unwrap());
                if (a - b).abs() > 1e-12 * a.abs().max(b.abs()) {
                    diff.push_str(&format!("{key}: ours {v}, Python's {value}\n"));
                }
            }
            Some(_) => {}
        }
    }
    for (key, value) in ours {
        if !theirs.contains_key(key) {
            diff.push_str(&format!("only ours: {key} {value}\n"));
        }
    }
    diff
}

pub fn value(samples: &Samples, key: &str) -> f64 {
    samples.get(key).unwrap_or_else(|| panic!("no {key} in {samples:#?}")).parse().unwrap()
}
