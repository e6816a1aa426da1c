//! Helpers for tests that check our output with tools we did not write
//! (`promtool`, Python's `prometheus_client`, `curl`): finding them,
//! skipping loudly when they are missing, and running them.
//!
//! A missing tool skips its test with a banner on stderr, so that a
//! developer without the tools can still run `cargo test`; CI sets
//! `PROMSHARD_ORACLES=require` so that a missing tool fails instead of
//! silently passing. `PROMSHARD_PROMTOOL` and `PROMSHARD_PYTHON` point at
//! specific binaries (a path that does not exist counts as missing, which
//! is how the skip path itself is tested).

// Each test crate that includes this module uses a different subset.
#![allow(dead_code)]

pub mod gzip;
pub mod prometheus_server;
pub mod protobuf;
pub mod python;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Whether a missing oracle must fail the test (`PROMSHARD_ORACLES=require`,
/// set by CI) rather than skip it.
pub fn oracles_required() -> bool {
    std::env::var("PROMSHARD_ORACLES").is_ok_and(|v| v.trim().eq_ignore_ascii_case("require"))
}

/// Reports a missing oracle: a loud skip notice, or a panic when oracles
/// are required. The caller returns from the test after this.
pub fn skip_or_fail(what: &str) {
    if oracles_required() {
        panic!("oracle missing and PROMSHARD_ORACLES=require: {what}");
    }
    // Straight to the process's stderr: libtest captures `eprintln!`, and
    // a skip nobody sees is how a missing oracle goes unnoticed.
    let banner = format!("\n=== SKIPPED: {what} (set PROMSHARD_ORACLES=require to make this fail) ===\n");
    let _ = std::io::stderr().write_all(banner.as_bytes());
}

/// Explains how to get promtool, for [`skip_or_fail`].
pub const PROMTOOL_MISSING: &str =
    "promtool not found; install Debian's `prometheus` package or set PROMSHARD_PROMTOOL";

/// Explains how to get the Prometheus server, for [`skip_or_fail`].
pub const PROMETHEUS_MISSING: &str =
    "the prometheus server not found; install Debian's `prometheus` package or set PROMSHARD_PROMETHEUS";

/// Explains how to get the Python parsers, for [`skip_or_fail`].
pub const PYTHON_MISSING: &str = "python3 with prometheus_client not found; \
     run `python3 -m pip install prometheus_client` or set PROMSHARD_PYTHON";

/// `promtool`, from `PROMSHARD_PROMTOOL` or `PATH`, if it runs.
pub fn promtool() -> Option<PathBuf> {
    let candidate = tool_from_env("PROMSHARD_PROMTOOL").or_else(|| find_in_path("promtool"))?;
    let runs =
        Command::new(&candidate).arg("--version").stdin(Stdio::null()).output().is_ok_and(|o| o.status.success());
    runs.then_some(candidate)
}

/// The Prometheus server, from `PROMSHARD_PROMETHEUS` or `PATH`, if it runs.
pub fn prometheus() -> Option<PathBuf> {
    let candidate = tool_from_env("PROMSHARD_PROMETHEUS").or_else(|| find_in_path("prometheus"))?;
    let runs =
        Command::new(&candidate).arg("--version").stdin(Stdio::null()).output().is_ok_and(|o| o.status.success());
    runs.then_some(candidate)
}

/// Explains how to get the Pushgateway, for [`skip_or_fail`].
pub const PUSHGATEWAY_MISSING: &str = "the Pushgateway not found; install Debian's `prometheus-pushgateway` \
     package or set PROMSHARD_PUSHGATEWAY";

/// The Pushgateway, from `PROMSHARD_PUSHGATEWAY`, or `prometheus-pushgateway`
/// (Debian's name) or `pushgateway` on `PATH`, if it runs.
pub fn pushgateway() -> Option<PathBuf> {
    let candidate = tool_from_env("PROMSHARD_PUSHGATEWAY")
        .or_else(|| find_in_path("prometheus-pushgateway"))
        .or_else(|| find_in_path("pushgateway"))?;
    let runs =
        Command::new(&candidate).arg("--version").stdin(Stdio::null()).output().is_ok_and(|o| o.status.success());
    runs.then_some(candidate)
}

/// A Python 3 that can `import prometheus_client`, from `PROMSHARD_PYTHON`
/// or `python3` on `PATH`.
pub fn python_with_prometheus_client() -> Option<PathBuf> {
    let candidate = tool_from_env("PROMSHARD_PYTHON").or_else(|| find_in_path("python3"))?;
    let imports = Command::new(&candidate)
        .args(["-c", "import prometheus_client.parser, prometheus_client.openmetrics.parser"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    imports.then_some(candidate)
}

/// The tool named by `var`: `Some(path)` when the variable is set, even if
/// the path does not exist (so that a bogus path simulates a missing tool
/// rather than falling back to `PATH`).
fn tool_from_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
        .find(|p| p.is_file())
}

/// Runs `program args…` with `stdin` written to its standard input.
pub fn run_with_stdin(program: &Path, args: &[&OsStr], stdin: &str) -> Output {
    run_with_stdin_bytes(program, args, stdin.as_bytes())
}

/// [`run_with_stdin`] with bytes that need not be text (a gzip stream).
pub fn run_with_stdin_bytes(program: &Path, args: &[&OsStr], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    // Written from another thread so that a child filling its output pipe
    // before reading all of its input cannot deadlock us.
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        // A child that exits without reading everything closes the pipe;
        // its exit status tells the real story.
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {}: {e}", program.display()));
    writer.join().expect("stdin writer thread");
    output
}

/// Runs the Python program `code` with `stdin` as its input and returns
/// its standard output; panics with Python's stderr if it fails.
pub fn run_python(python: &Path, code: &str, stdin: &str) -> String {
    let output = run_with_stdin(python, &[OsStr::new("-c"), OsStr::new(code)], stdin);
    assert!(
        output.status.success(),
        "python failed ({}):\n--- stderr ---\n{}\n--- input ---\n{stdin}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    String::from_utf8(output.stdout).expect("python printed UTF-8")
}

/// The standard output of the `quickstart` example run with `args`.
///
/// Uses the binary `cargo test` built next to this test's own binary
/// (`target/<profile>/deps/<test>` → `target/<profile>/examples/quickstart`)
/// when it is at least as new as this test binary; otherwise (only this
/// test target was built, or the example is stale) `cargo run` builds and
/// runs it.
pub fn quickstart_output(args: &[&str]) -> String {
    example_output("quickstart", args)
}

/// Runs the example `name` that `cargo test` built (or `cargo run` if it
/// is missing or stale), asserts it succeeded, and returns its stdout.
pub fn example_output(name: &str, args: &[&str]) -> String {
    let output = example_command(name)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the example {name}: {e}"));
    assert!(
        output.status.success(),
        "{name} {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    String::from_utf8(output.stdout).expect("the example printed UTF-8")
}

/// A command running the example `name`, to add arguments to: the binary
/// `cargo test` built, or `cargo run` when it is missing or stale.
pub fn example_command(name: &str) -> Command {
    match built_example(name) {
        Some(exe) => Command::new(exe),
        None => {
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args(["run", "-q", "--example", name, "--manifest-path"])
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .arg("--");
            cargo
        }
    }
}

fn built_example(name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let profile_dir = me.parent()?.parent()?;
    let exe = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    // A binary older than this test may predate the library changes this
    // test was rebuilt for; one older than its source, the example's own
    // (`cargo test --test X` builds no example).
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(format!("{name}.rs"));
    let newest = modified(&me)?.max(modified(&source).unwrap_or(std::time::SystemTime::UNIX_EPOCH));
    (modified(&exe)? >= newest).then_some(exe)
}

/// Decodes the lowercase hex the Python helpers use for arbitrary text.
pub fn unhex(hex: &str) -> String {
    assert!(hex.len() % 2 == 0, "odd hex length: {hex:?}");
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit")).collect();
    String::from_utf8(bytes).expect("hex of UTF-8")
}
