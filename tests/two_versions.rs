//! Two promshard versions in one binary, as when an application on this
//! version links a dependency pinned to the next minor one.
//!
//! The test writes that next version from the current sources (the
//! facade, runtime and macros crates with their version bumped; the shared
//! `promshard-abi` is this checkout's), builds a small program depending
//! on both, and runs it. The build goes to its own target directory under
//! `CARGO_TARGET_TMPDIR` (this one is locked by the `cargo test` running
//! us), offline when the lockfile allows, so that later runs are cached:
//! about 30 s the first time on 2 cores, well under a second after, which
//! is why this test has no skip.
//!
//! A second copy also bumps the shard file format, for the case of two
//! versions that cannot read each other's shards.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Lines, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The program: a counter in each version, one name declared in both, and
/// each version's exposition in both formats, with a logger on stderr.
const MAIN: &str = r#"
use promshard::{metric, Counter, Gauge};

/// Work in progress in this process, as the older promshard sees it.
#[metric(mode = livesum)]
static OLD_IN_FLIGHT: Gauge;

/// Jobs counted through the older promshard.
#[metric]
static OLD_JOBS_TOTAL: Counter;

/// Declared in both versions.
#[metric]
static SHARED_TOTAL: Counter;

mod newer {
    use promshard_next::{metric, Counter, Gauge};

    /// Work in progress in this process, as the newer promshard sees it.
    #[metric(crate = promshard_next, mode = livesum)]
    pub static NEW_IN_FLIGHT: Gauge;

    /// Jobs counted through the newer promshard.
    #[metric(crate = promshard_next)]
    pub static NEW_JOBS_TOTAL: Counter;

    /// Declared in both versions, too.
    #[metric(crate = promshard_next)]
    pub static SHARED_TOTAL: Counter;
}

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("{} {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

fn main() {
    log::set_logger(&Stderr).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    OLD_JOBS_TOTAL.inc();
    newer::NEW_JOBS_TOTAL.inc_by(2);
    SHARED_TOTAL.inc_by(5);
    newer::SHARED_TOTAL.inc_by(7);
    OLD_IN_FLIGHT.set(3.0);
    newer::NEW_IN_FLIGHT.set(4.0);
    // One scrape of each version in each format, then another for each
    // line on stdin, until it closes: the test looks at our shards from
    // outside while we live.
    let mut line = String::new();
    loop {
        for (name, text) in [
            ("old openmetrics", promshard::encode(promshard::Format::OpenMetrics)),
            ("old prometheus", promshard::encode(promshard::Format::Prometheus)),
            ("new openmetrics", promshard_next::encode(promshard_next::Format::OpenMetrics)),
            ("new prometheus", promshard_next::encode(promshard_next::Format::Prometheus)),
        ] {
            println!("=== {name}");
            print!("{}", String::from_utf8(text).unwrap());
        }
        // The older version's protobuf, which has the newer one's families
        // from its text (the ABI carries text only), in hex.
        let proto = promshard::encode(promshard::Format::Protobuf);
        println!("=== protobuf");
        println!("{}", proto.iter().map(|b| format!("{b:02x}")).collect::<String>());
        println!("=== end");
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        line.clear();
        if std::io::stdin().read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
}
"#;

/// The next semver-incompatible version: 0.1.0 → 0.2.0, 1.4.2 → 2.0.0.
fn next_version() -> String {
    let mut parts = VERSION.split(['.', '-', '+']).map(|p| p.parse::<u64>().expect("numeric version"));
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    if major == 0 { format!("0.{}.0", minor + 1) } else { format!("{}.0.0", major + 1) }
}

fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("two_versions")
}

/// Writes `bytes` unless the file holds them already: an unchanged mtime
/// is what keeps cargo's cache of the copy valid.
fn write_if_changed(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Mirrors `from` into `to`: files are written only when they changed,
/// and what `from` no longer has is removed from `to` (a stale module file
/// left in the copy would not compile beside its replacement).
fn copy_tree(from: &Path, to: &Path, edit: &dyn Fn(&Path, Vec<u8>) -> Vec<u8>) {
    if let Ok(entries) = std::fs::read_dir(to) {
        for entry in entries.flatten() {
            if !from.join(entry.file_name()).exists() {
                let path = entry.path();
                let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            }
        }
    }
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&source, &target, edit);
        } else {
            write_if_changed(&target, &edit(&source, std::fs::read(&source).unwrap()));
        }
    }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "expected `{from}` once in a manifest");
    text.replacen(from, to, 1)
}

/// The facade, runtime and macros crates as the next version, in `dest`.
/// With `bump_format`, its shard format is one newer than ours.
fn write_next_version(dest: &Path, bump_format: bool) {
    let root = Path::new(ROOT);
    let next = next_version();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    // The package and its dependencies; dev-dependencies, benches and
    // profiles are the workspace's business, not a dependency's.
    let manifest = &manifest[..manifest.find("[dev-dependencies]").expect("a dev-dependencies table")];
    let mut manifest = replace_once(manifest, &format!("version = \"{VERSION}\""), &format!("version = \"{next}\""));
    manifest = manifest.replace(&format!("\"={VERSION}\""), &format!("\"={next}\""));
    let members = manifest.lines().find(|l| l.starts_with("members = ")).expect("a members list").to_owned();
    manifest = replace_once(&manifest, &members, "members = [\"macros\", \"runtime\"]");
    write_if_changed(&dest.join("Cargo.toml"), manifest.as_bytes());
    write_if_changed(&dest.join("README.md"), &std::fs::read(root.join("README.md")).unwrap());

    let abi = root.join("abi");
    let edit = |path: &Path, bytes: Vec<u8>| -> Vec<u8> {
        let name = path.file_name().unwrap().to_str().unwrap();
        let parent = path.parent().unwrap().file_name().unwrap().to_str().unwrap();
        match (parent, name) {
            ("runtime", "Cargo.toml") => {
                let text = String::from_utf8(bytes).unwrap();
                // Both versions must share one promshard-abi: this one.
                let text = replace_once(&text, "path = \"../abi\"", &format!("path = {:?}", abi.display().to_string()));
                replace_once(&text, "promshard = { path = \"..\" }\n", "").into_bytes()
            }
            ("shard", "format.rs") if bump_format => {
                // Every version the copy reads or writes (the newest, and
                // those for legacy names, UTF-8 names, exemplars) becomes
                // one above all of ours: neither version reads the other's.
                let text = String::from_utf8(bytes).unwrap();
                let versions: Vec<(String, u32)> = text
                    .lines()
                    .filter_map(|l| {
                        let rest = l.strip_prefix("pub(crate) const VERSION")?;
                        let (_, number) = rest.split_once(": u32 = ")?;
                        Some((l.to_owned(), number.strip_suffix(';')?.parse().ok()?))
                    })
                    .collect();
                let newer = versions.iter().map(|(_, v)| *v).max().expect("the shard format versions") + 1;
                let mut text = text;
                for (line, version) in &versions {
                    text = replace_once(&text, line, &line.replace(&format!("= {version};"), &format!("= {newer};")));
                }
                text.into_bytes()
            }
            _ => bytes,
        }
    };
    for dir in ["src", "runtime", "macros"] {
        copy_tree(&root.join(dir), &dest.join(dir), &edit);
    }
}

/// Writes and builds the program against this version and `next`; the
/// path of its binary.
fn build_program(name: &str, next: &Path) -> PathBuf {
    let app = work_dir().join(name);
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n[workspace]\n\n\
         [dependencies]\nlog = \"0.4\"\npromshard = {{ path = {root:?}, default-features = false }}\n\
         promshard_next = {{ package = \"promshard\", path = {next:?}, default-features = false }}\n",
        root = ROOT,
        next = next.display().to_string(),
    );
    write_if_changed(&app.join("Cargo.toml"), manifest.as_bytes());
    write_if_changed(&app.join("src/main.rs"), MAIN.as_bytes());
    let lock = app.join("Cargo.lock");
    if !lock.exists() {
        // Every crate it needs is in ours: a build with no network.
        std::fs::copy(Path::new(ROOT).join("Cargo.lock"), &lock).unwrap();
    }
    let target = work_dir().join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = |offline: bool| {
        let mut command = Command::new(&cargo);
        command.arg("build").arg("--quiet").arg("--manifest-path").arg(app.join("Cargo.toml"));
        if offline {
            command.arg("--offline");
        }
        command.env("CARGO_TARGET_DIR", &target).output().expect("cargo runs")
    };
    let mut output = build(true);
    if !output.status.success() {
        // Something the lockfile lacks locally: let cargo fetch it.
        output = build(false);
    }
    assert!(output.status.success(), "building {name} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    target.join("debug").join(name)
}

struct Programs {
    /// The next version, same shard format.
    same_format: PathBuf,
    /// The next version with a newer shard format.
    newer_format: PathBuf,
}

fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Programs> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let started = std::time::Instant::now();
        let (next, next_format) = (work_dir().join("next"), work_dir().join("next-format"));
        write_next_version(&next, false);
        write_next_version(&next_format, true);
        let programs = Programs {
            same_format: build_program("two-versions", &next),
            newer_format: build_program("two-versions-format", &next_format),
        };
        eprintln!("two_versions: programs built in {:.1?}", started.elapsed());
        programs
    })
}

/// One scrape: each exposition's sample lines (name and labels, value),
/// in order, by exposition.
struct Run {
    expositions: HashMap<String, Vec<(String, String)>>,
    /// The older version's protobuf exposition.
    protobuf: Vec<u8>,
}

/// The program, running, with `PROMSHARD_DIR` set to `dir` if given.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    dir: Option<PathBuf>,
}

impl Running {
    fn start(program: &Path, dir: Option<&Path>) -> Running {
        let mut command = Command::new(program);
        command.env_remove("PROMSHARD_DIR").env_remove("RUST_LOG");
        if let Some(dir) = dir {
            command.env("PROMSHARD_DIR", dir);
        }
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("program runs");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Running { child, stdout, dir: dir.map(Path::to_owned) }
    }

    /// The next scrape. Every shard of this process in the directory must
    /// still be held by it then: a version that opened another's file
    /// would have dropped that lock.
    fn scrape(&mut self) -> Run {
        let mut expositions: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut protobuf = Vec::new();
        let mut current = String::new();
        loop {
            let line = self.stdout.next().expect("the program printed its scrape").unwrap();
            if line == "=== end" {
                break;
            }
            if line == "=== protobuf" {
                current = "protobuf".to_owned();
            } else if let Some(name) = line.strip_prefix("=== ") {
                current = name.to_owned();
                expositions.insert(current.clone(), Vec::new());
            } else if current == "protobuf" {
                protobuf =
                    (0..line.len()).step_by(2).map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap()).collect();
            } else if !line.starts_with('#') && !line.is_empty() {
                let (sample, value) = line.rsplit_once(' ').unwrap();
                expositions.get_mut(&current).unwrap().push((sample.to_owned(), value.to_owned()));
            }
        }
        assert_eq!(expositions.len(), 4, "four expositions");
        if let Some(dir) = &self.dir {
            let prefix = format!("p{}-", self.child.id());
            for shard in shard_files(dir).iter().filter(|f| f.starts_with(&prefix)) {
                assert_eq!(holder(&dir.join(shard)), Some(self.child.id()), "{shard} is not locked by its process");
            }
        }
        let run = Run { expositions, protobuf };
        run.no_repeats();
        run
    }

    /// Asks for another scrape.
    fn again(&mut self) -> Run {
        self.child.stdin.as_mut().unwrap().write_all(b"scrape\n").unwrap();
        self.scrape()
    }

    /// Ends the program; its stderr.
    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let Output { status, stderr, .. } = self.child.wait_with_output().unwrap();
        let stderr = String::from_utf8(stderr).unwrap();
        assert!(status.success(), "the program failed:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }
}

impl Run {
    /// Asserts that every exposition has `sample` exactly once; its values.
    fn once(&self, sample: &str) -> Vec<String> {
        let mut names: Vec<&String> = self.expositions.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let found: Vec<&(String, String)> =
                    self.expositions[name].iter().filter(|(s, _)| s == sample).collect();
                assert_eq!(found.len(), 1, "`{sample}` in the {name} exposition: {:#?}", self.expositions[name]);
                found[0].1.clone()
            })
            .collect()
    }

    /// Asserts that each exposition's families appear once: no sample line
    /// is repeated.
    fn no_repeats(&self) {
        for (name, samples) in &self.expositions {
            let mut seen = std::collections::HashSet::new();
            for (sample, _) in samples {
                assert!(seen.insert(sample), "`{sample}` twice in the {name} exposition");
            }
        }
    }
}

/// Values per exposition, in the order of [`Run::once`]: new openmetrics,
/// new prometheus, old openmetrics, old prometheus.
fn values(new: &str, old: &str) -> Vec<String> {
    [new, new, old, old].map(str::to_owned).to_vec()
}

#[test]
fn each_version_exposes_both() {
    let mut program = Running::start(&programs().same_format, None);
    let run = program.scrape();
    let stderr = program.finish();
    let next = next_version();
    assert_eq!(run.once("old_jobs_total"), values("1", "1"));
    assert_eq!(run.once("new_jobs_total"), values("2", "2"));
    assert_eq!(run.once("old_in_flight"), values("3", "3"));
    assert_eq!(run.once("new_in_flight"), values("4", "4"));
    // Declared in both: each version shows its own.
    assert_eq!(run.once("shared_total"), values("7", "5"));
    run.once("process_cpu_seconds_total");
    run.once(&format!("promshard_linked_versions{{version=\"{VERSION}\"}}"));
    run.once(&format!("promshard_linked_versions{{version=\"{next}\"}}"));
    // The conflict, in each version's exposition from its side.
    for (exposition, exposed, hidden) in [("old", VERSION, next.as_str()), ("new", next.as_str(), VERSION)] {
        let sample =
            format!("promshard_version_conflicts{{metric=\"shared\",exposed=\"{exposed}\",hidden=\"{hidden}\"}}");
        for format in ["openmetrics", "prometheus"] {
            let samples = &run.expositions[&format!("{exposition} {format}")];
            assert_eq!(samples.iter().filter(|(s, _)| *s == sample).count(), 1, "{sample}: {samples:#?}");
        }
    }
    for (this, other) in [(VERSION, next.as_str()), (next.as_str(), VERSION)] {
        let error = format!(
            "ERROR promshard: version {this}: metric `shared` is declared both in promshard {this} (at src/main.rs:"
        );
        assert!(stderr.contains(&error) && stderr.contains(&format!("and in promshard {other} (at")), "{stderr}");
    }
    assert!(!stderr.contains("also exposed by"), "no clash beyond the reported one:\n{stderr}");
    // The protobuf exposition holds what the text does, the newer
    // version's families included, read by Python's protobuf.
    match support::protobuf::python_with_protobuf() {
        None => support::skip_or_fail(support::protobuf::PROTOBUF_MISSING),
        Some(python) => {
            let text: String =
                run.expositions["old prometheus"].iter().map(|(sample, value)| format!("{sample} {value}\n")).collect();
            let decoded = support::protobuf::decode(&python, &work_dir(), &run.protobuf, &text);
            support::protobuf::assert_same_samples("the older version's protobuf", &decoded, &["process_"]);
            let names: Vec<&str> =
                decoded.proto["samples"].as_array().unwrap().iter().filter_map(|s| s[0].as_str()).collect();
            assert!(names.contains(&"new_jobs_total") && names.contains(&"old_jobs_total"), "{names:?}");
        }
    }
    // Each version warns, once, naming the version it found linked in.
    for (this, other) in [(VERSION, next.as_str()), (next.as_str(), VERSION)] {
        let warning = format!("WARN promshard: version {this}: promshard {other} also linked into this binary");
        assert_eq!(
            stderr.matches(&warning).count(),
            1,
            "the first use must log, once, a warning naming the linked versions (`{warning}`):\n{stderr}"
        );
    }
}

#[test]
fn multiprocess_shards_of_both_versions() {
    let dir = tempdir("same-format");
    let program = &programs().same_format;
    let mut first = Running::start(program, Some(&dir));
    let run = first.scrape();
    assert_eq!(run.once("old_jobs_total"), values("1", "1"));
    assert_eq!(run.once("new_jobs_total"), values("2", "2"));
    // Both shards hold `shared`: merged as any two shards are.
    assert_eq!(run.once("shared_total"), values("12", "12"));
    // Live gauges take each version's shard as live: it is this process's.
    assert_eq!(run.once("old_in_flight"), values("3", "3"));
    assert_eq!(run.once("new_in_flight"), values("4", "4"));
    assert_eq!(run.once("promshard_shard_errors_total{reason=\"version\"}"), values("0", "0"));
    assert_eq!(shard_files(&dir).len(), 2, "one shard per version");

    // A second process joins the run: nothing is cleared.
    let mut second = Running::start(program, Some(&dir));
    let run = second.scrape();
    assert_eq!(run.once("old_jobs_total"), values("2", "2"));
    assert_eq!(run.once("shared_total"), values("24", "24"));
    assert_eq!(run.once("new_in_flight"), values("8", "8"));
    assert_eq!(shard_files(&dir).len(), 4);

    // The first one exits: its shards are compacted into the archive, and
    // the second's, live, are left alone.
    first.finish();
    let run = second.again();
    assert_eq!(run.once("old_jobs_total"), values("2", "2"));
    assert_eq!(run.once("new_jobs_total"), values("4", "4"));
    assert_eq!(run.once("shared_total"), values("24", "24"));
    assert_eq!(run.once("old_in_flight"), values("3", "3"));
    assert_eq!(run.once("new_in_flight"), values("4", "4"));
    let files = shard_files(&dir);
    let own = format!("p{}-", second.child.id());
    assert_eq!(files.iter().filter(|f| f.starts_with(&own)).count(), 2, "{files:?}");
    assert_eq!(files.len(), 3, "and the archive: {files:?}");
    let stderr = second.finish();
    assert!(!stderr.contains("also exposed by"), "{stderr}");

    // A new run starts from zero.
    let mut third = Running::start(program, Some(&dir));
    let run = third.scrape();
    assert_eq!(run.once("old_jobs_total"), values("1", "1"));
    assert_eq!(run.once("shared_total"), values("12", "12"));
    third.finish();
}

#[test]
fn multiprocess_with_a_newer_shard_format() {
    let dir = tempdir("newer-format");
    let mut program = Running::start(&programs().newer_format, Some(&dir));
    let run = program.scrape();
    let stderr = program.finish();
    assert_eq!(run.once("old_jobs_total"), values("1", "1"));
    assert_eq!(run.once("new_jobs_total"), values("2", "2"));
    assert_eq!(run.once("old_in_flight"), values("3", "3"));
    assert_eq!(run.once("new_in_flight"), values("4", "4"));
    // Neither reads the other's shard, so each has its own `shared`.
    assert_eq!(run.once("shared_total"), values("7", "5"));
    // The older reader skipped the newer file, and counted it.
    let skipped = run.once("promshard_shard_errors_total{reason=\"version\"}");
    assert!(skipped[2..].iter().all(|n| n.parse::<u64>().unwrap() >= 1), "{skipped:?}");
    assert!(stderr.contains("writes shards it cannot read"), "{stderr}");
}

fn tempdir(name: &str) -> PathBuf {
    let dir = work_dir().join("dirs").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

/// The `.promshard` files in `dir`, sorted.
fn shard_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".promshard"))
        .collect();
    files.sort();
    files
}

/// The pid holding the liveness lock (a POSIX record lock) of `path`.
fn holder(path: &Path) -> Option<u32> {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: flock is plain old data; zero is a valid value of each field.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as i16;
    lock.l_whence = libc::SEEK_SET as i16;
    // SAFETY: a valid descriptor and flock struct.
    assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) }, 0);
    (lock.l_type != libc::F_UNLCK as i16).then_some(lock.l_pid as u32)
}
