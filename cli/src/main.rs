//! `promshard`: reads a multiprocess shard directory (one `.promshard`
//! file per process, plus Python prometheus_client `.db` files) without
//! writing to it.
//!
//! - `dump` prints the merged exposition, as a scrape of any process in
//!   the directory would return it.
//! - `check` lists the shard files with their owner, liveness and size, and
//!   fails when one cannot be read.
//! - `serve` is a sidecar exporter: `GET /metrics` on a port of its own
//!   (127.0.0.1:9100 unless told otherwise), on the runtime's HTTP server
//!   (`promshard::http`) with its limits and optional authentication; the
//!   drop-in exporter of a Python pool's `PROMETHEUS_MULTIPROC_DIR`. Like
//!   a recording process's scrape, it folds dead workers' shards into the
//!   directory's archive (unless `--no-compact`), so that a pool whose
//!   workers never scrape does not pile them up; with `--prune-python`
//!   (and only then) it removes Python files that count for nothing.
//!   `dump` and `check` never change the directory.
//!
//! Everything goes through `promshard::multiprocess::{encode_dir,
//! encode_dir_and_compact, inspect, inspect_python, prune_python}`,
//! which never lays out this process's registry: the CLI has no metrics of
//! its own and never creates a shard.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use promshard::http::ServerOptions;
use promshard::multiprocess;
use promshard::{Exposition, Format};

const USAGE: &str = "\
promshard: read a promshard multiprocess shard directory (without recording into it)

Usage:
  promshard dump DIR [--openmetrics]   Print the merged exposition of DIR
                                       (Prometheus text 0.0.4 by default)
  promshard check DIR                  List DIR's shard files: pid, live/dead/archive,
                                       series, problem; and its Python .db files: pid,
                                       type, size, bytes used, series, live/dead, problem;
                                       exit 1 if any is unreadable
  promshard serve DIR [OPTIONS]        Serve GET /metrics with the merged exposition of DIR,
                                       in the format the Accept header asks for, until killed
  promshard --help | --version

Options of `serve`:
  --listen ADDR                 Address to listen on (default 127.0.0.1:9100; port 0
                                picks one). Keep /metrics off the public internet.
  --bearer-token-file FILE      Require `Authorization: Bearer TOKEN`, TOKEN being the
                                content of FILE (a trailing newline is ignored)
  --basic-auth-file FILE        Require HTTP basic auth; FILE holds `user:password`
  --timeout SECONDS             Drop a connection that takes longer to send a request,
                                idles longer between requests, or is slower to take a
                                response (default 10)
  --max-connections N           Serve at most N connections at once; past that, answer
                                503 and close (default 64)
  --prune-python                After each scrape, remove the Python .db files that count
                                for nothing: a previous run's, and dead workers' live-mode
                                gauges (what mark_process_dead removes). Only when promshard
                                is the only reader of DIR: Python's own collector would
                                count a previous run's files
  --no-compact                  Leave dead workers' shards where they are; by default each
                                scrape that meets some folds them into DIR's archive, as a
                                recording worker's scrape does (only when DIR belongs to
                                this user), so that they do not pile up
  --created-samples             Add a `_created` sample to every counter, histogram and
                                summary series in OpenMetrics scrapes (off by default:
                                Prometheus 2 stores each as a series of its own); the
                                protobuf format always carries the start

Exit status: 0 on success, 1 when DIR cannot be read (or `check` finds a bad
file, or `serve` cannot listen or read its secret), 2 on a usage error.
";

/// Where `serve` listens without `--listen`: Prometheus' node exporter
/// port, on loopback only, so that nothing is exposed by accident.
const DEFAULT_LISTEN: &str = "127.0.0.1:9100";

#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Version,
    Dump { dir: PathBuf, format: Format },
    Check { dir: PathBuf },
    Serve { dir: PathBuf, args: ServeArgs },
}

/// `serve`'s options; what is not given keeps the server's default.
#[derive(Debug, PartialEq)]
struct ServeArgs {
    listen: String,
    auth: Option<AuthFile>,
    timeout: Option<Duration>,
    max_connections: Option<usize>,
    /// `--prune-python`: remove Python files that count for nothing.
    prune_python: bool,
    /// `--created-samples`: OpenMetrics `_created` samples.
    created_samples: bool,
    /// `--no-compact`: never fold dead workers' shards into the archive.
    no_compact: bool,
}

/// Where `serve` reads the secret requests must present.
#[derive(Debug, PartialEq)]
enum AuthFile {
    Bearer(PathBuf),
    Basic(PathBuf),
}

fn main() -> ExitCode {
    // The CLI only reads. The runtime lays out its registry on the first
    // recording or local scrape and, when `PROMSHARD_DIR` is set, creates
    // this process's shard in that directory at that moment, first
    // removing a finished run's files when no process there is alive.
    // Nothing in this binary records or scrapes itself (`encode_dir` and
    // `inspect` read only), but a `PROMSHARD_DIR` inherited from the
    // workers' environment (the usual case for a sidecar) must never be
    // able to turn this process into a writer of the directory it
    // inspects. So drop it before anything else runs.
    //
    // SAFETY: no other thread exists yet, so nothing can be reading the
    // environment concurrently.
    unsafe { std::env::remove_var(multiprocess::DIR_ENV) };

    let command = match parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("promshard: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("promshard {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Dump { dir, format } => dump(&dir, format),
        Command::Check { dir } => check(&dir),
        Command::Serve { dir, args } => serve(dir, &args),
    }
}

/// Parses the arguments after the program name.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else { return Ok(Command::Help) };
    let subcommand = match first.to_str() {
        Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version") => return Ok(Command::Version),
        Some(s @ ("dump" | "check" | "serve")) => s,
        _ => return Err(format!("unknown command `{}`", first.to_string_lossy())),
    };

    let mut dir: Option<PathBuf> = None;
    let mut openmetrics = false;
    let mut listen: Option<String> = None;
    let mut auth: Option<AuthFile> = None;
    let mut timeout: Option<Duration> = None;
    let mut max_connections: Option<usize> = None;
    let mut prune_python = false;
    let mut created_samples = false;
    let mut no_compact = false;
    let mut options_done = false;
    while let Some(arg) = args.next() {
        let text = arg.to_str();
        let is_option = !options_done && text.is_some_and(|t| t.starts_with('-') && t != "-");
        if !is_option {
            if dir.is_some() {
                return Err(format!("`{subcommand}` takes one directory; unexpected `{}`", arg.to_string_lossy()));
            }
            dir = Some(PathBuf::from(arg));
            continue;
        }
        let text = text.expect("options are UTF-8");
        let (name, inline_value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (text, None),
        };
        // The option's value: after `=` or the next argument, never empty.
        let mut value = |what: &str| -> Result<OsString, String> {
            let value = match inline_value {
                Some(value) => OsString::from(value),
                None => args.next().unwrap_or_default(),
            };
            if value.is_empty() { Err(format!("`{name}` needs {what}")) } else { Ok(value) }
        };
        match (subcommand, name) {
            (_, "-h" | "--help") if inline_value.is_none() => return Ok(Command::Help),
            (_, "--") if inline_value.is_none() => options_done = true,
            ("dump", "--openmetrics") if inline_value.is_none() => openmetrics = true,
            ("serve", "--prune-python") if inline_value.is_none() => prune_python = true,
            ("serve", "--created-samples") if inline_value.is_none() => created_samples = true,
            ("serve", "--no-compact") if inline_value.is_none() => no_compact = true,
            ("serve", "--listen") => {
                let what = "an address, like 127.0.0.1:9100";
                listen = Some(value(what)?.into_string().map_err(|_| format!("`--listen` needs {what}"))?);
            }
            ("serve", "--bearer-token-file" | "--basic-auth-file") => {
                let file = PathBuf::from(value("a file")?);
                let new = if name == "--bearer-token-file" { AuthFile::Bearer(file) } else { AuthFile::Basic(file) };
                if auth.as_ref().is_some_and(|old| std::mem::discriminant(old) != std::mem::discriminant(&new)) {
                    return Err("`--bearer-token-file` and `--basic-auth-file` exclude each other".to_owned());
                }
                auth = Some(new);
            }
            ("serve", "--timeout") => {
                let what = "a positive number of seconds, like 10 or 0.5";
                let seconds = value(what)?.to_str().and_then(|v| v.parse::<f64>().ok());
                let duration = seconds.filter(|s| *s > 0.0).and_then(|s| Duration::try_from_secs_f64(s).ok());
                timeout = Some(duration.ok_or_else(|| format!("`--timeout` needs {what}"))?);
            }
            ("serve", "--max-connections") => {
                let what = "a positive number";
                let n = value(what)?.to_str().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
                max_connections = Some(n.ok_or_else(|| format!("`--max-connections` needs {what}"))?);
            }
            _ => return Err(format!("unknown option `{text}` for `{subcommand}`")),
        }
    }

    let dir = dir.ok_or_else(|| format!("`{subcommand}` needs a directory"))?;
    Ok(match subcommand {
        "dump" => Command::Dump { dir, format: if openmetrics { Format::OpenMetrics } else { Format::Prometheus } },
        "check" => Command::Check { dir },
        _ => Command::Serve {
            dir,
            args: ServeArgs {
                listen: listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
                auth,
                timeout,
                max_connections,
                prune_python,
                created_samples,
                no_compact,
            },
        },
    })
}

/// `promshard dump`: the merged exposition on stdout; files that had to be
/// skipped are named on stderr.
fn dump(dir: &Path, format: Format) -> ExitCode {
    // `encode_dir` renders an unreadable or missing directory as empty
    // output; say why instead.
    if let Err(e) = std::fs::read_dir(dir) {
        eprintln!("promshard: cannot read {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let body = multiprocess::encode_dir(dir, format);
    let mut stdout = io::stdout().lock();
    match stdout.write_all(&body).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        // `promshard dump DIR | head` is fine.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("promshard: cannot write the exposition: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The merge skips bad files without telling its caller; name them.
    for status in multiprocess::inspect(dir).unwrap_or_default() {
        if let Some(problem) = status.problem {
            eprintln!("promshard: skipped {}: {problem}", dir.join(&status.file).display());
        }
    }
    for status in multiprocess::inspect_python(dir).unwrap_or_default() {
        if let Some(problem) = status.problem {
            eprintln!("promshard: skipped {}: {problem}", dir.join(&status.file).display());
        }
    }
    ExitCode::SUCCESS
}

/// `promshard check`: one line per shard file and a summary; fails when a
/// file cannot be read.
fn check(dir: &Path) -> ExitCode {
    let statuses = match multiprocess::inspect(dir) {
        Ok(statuses) => statuses,
        Err(e) => {
            eprintln!("promshard: cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let python = multiprocess::inspect_python(dir).unwrap_or_default();

    let rows: Vec<[String; 5]> = statuses
        .iter()
        .map(|s| match &s.problem {
            Some(problem) => [s.file.clone(), "-".into(), "-".into(), "-".into(), problem.clone()],
            None => {
                let state = if s.archive {
                    "archive"
                } else if s.live {
                    "live"
                } else {
                    "dead"
                };
                [
                    s.file.clone(),
                    s.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                    state.into(),
                    s.series.to_string(),
                    "-".into(),
                ]
            }
        })
        .collect();
    let mut out = String::new();
    if !rows.is_empty() {
        let header = ["FILE", "PID", "STATE", "SERIES", "PROBLEM"].map(String::from);
        let mut widths = [0usize; 4];
        for row in std::iter::once(&header).chain(&rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let [file, pid, state, series, problem] = row;
            let [w0, w1, w2, w3] = widths;
            out.push_str(&format!("{file:<w0$}  {pid:>w1$}  {state:<w2$}  {series:>w3$}  {problem}\n"));
        }
    }

    let count = |f: fn(&multiprocess::ShardStatus) -> bool| statuses.iter().filter(|s| f(s)).count();
    let bad = count(|s| s.problem.is_some());
    let live = count(|s| s.problem.is_none() && s.live && !s.archive);
    let archive = count(|s| s.problem.is_none() && s.archive);
    let dead = statuses.len() - bad - live - archive;
    out.push_str(&format!("{}: ", dir.display()));
    match statuses.len() {
        0 => out.push_str("no shard files"),
        n => out.push_str(&format!(
            "{n} shard file{}: {live} live, {dead} dead, {archive} archive, {bad} with a problem",
            if n == 1 { "" } else { "s" }
        )),
    }
    if !python.is_empty() {
        let bad_python = python.iter().filter(|p| p.problem.is_some()).count();
        let live_python = python.iter().filter(|p| p.live).count();
        out.push_str(&format!(
            "; {} Python .db file{}: {live_python} live, {} dead, {bad_python} with a problem",
            python.len(),
            if python.len() == 1 { "" } else { "s" },
            python.len() - live_python,
        ));
    }
    out.push('\n');
    if !python.is_empty() {
        out.push('\n');
        out.push_str(&python_table(&python));
        let bytes: u64 = python.iter().map(|p| p.used).sum();
        let series: usize = python.iter().map(|p| p.series).sum();
        let on_disk: u64 = python.iter().map(|p| p.size).sum();
        out.push_str(&format!("Python files hold {series} series in {bytes} bytes ({on_disk} bytes on disk)\n"));
    }
    let bad = bad + python.iter().filter(|p| p.problem.is_some()).count();
    let mut stdout = io::stdout().lock();
    match stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            eprintln!("promshard: cannot write the report: {e}");
            return ExitCode::FAILURE;
        }
        _ => {}
    }
    if bad > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// One line per Python file: name, pid, type, state, size, bytes used,
/// series, problem.
fn python_table(files: &[multiprocess::PythonFileStatus]) -> String {
    let header = ["PYTHON FILE", "PID", "TYPE", "SIZE", "USED", "SERIES", "STATE", "PROBLEM"].map(String::from);
    let rows: Vec<[String; 8]> = files
        .iter()
        .map(|p| {
            [
                p.file.clone(),
                p.pid.map_or_else(|| "-".into(), |pid| pid.to_string()),
                p.kind.clone().unwrap_or_else(|| "-".into()),
                p.size.to_string(),
                p.used.to_string(),
                p.series.to_string(),
                p.state.to_owned(),
                p.problem.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let [file, pid, kind, size, used, series, state, problem] = row;
        let [w0, w1, w2, w3, w4, w5, w6] = widths;
        out.push_str(&format!(
            "{file:<w0$}  {pid:>w1$}  {kind:<w2$}  {size:>w3$}  {used:>w4$}  {series:>w5$}  {state:<w6$}  {problem}\n"
        ));
    }
    out
}

/// `promshard serve`: answers until the process is killed.
fn serve(dir: PathBuf, args: &ServeArgs) -> ExitCode {
    promshard::set_created_samples(args.created_samples);
    let mut options = ServerOptions::new();
    if let Some(timeout) = args.timeout {
        options = options.timeout(timeout);
    }
    if let Some(max) = args.max_connections {
        options = options.max_connections(max);
    }
    match &args.auth {
        None => {}
        Some(AuthFile::Bearer(file)) => match read_secret(file) {
            Ok(token) => options = options.bearer_token(token),
            Err(message) => return fail(&message),
        },
        Some(AuthFile::Basic(file)) => match read_secret(file) {
            Ok(pair) => match pair.split_once(':') {
                Some((user, password)) => options = options.basic_auth(user, password),
                None => return fail(&format!("{} must hold `user:password`", file.display())),
            },
            Err(message) => return fail(&message),
        },
    }

    if let Err(e) = std::fs::read_dir(&dir) {
        // Workers create the directory when they start; serve it anyway.
        eprintln!("promshard: warning: cannot read {} yet ({e}); serving it anyway", dir.display());
    }
    let server = {
        let dir = dir.clone();
        let prune = args.prune_python;
        let compact = !args.no_compact;
        options.serve_with(args.listen.as_str(), move |accept| {
            let chosen = Exposition::from_accept(accept);
            let body = if compact {
                multiprocess::encode_dir_and_compact(&dir, chosen)
            } else {
                multiprocess::encode_dir(&dir, chosen)
            };
            if prune {
                multiprocess::prune_python(&dir);
            }
            (body, chosen.content_type())
        })
    };
    let server = match server {
        Ok(server) => server,
        Err(e) => return fail(&format!("cannot serve on {}: {e}", args.listen)),
    };
    let addr = server.local_addr();
    if args.auth.is_none() && !addr.ip().is_loopback() {
        eprintln!("promshard: warning: {addr} is reachable from other hosts and no authentication is required");
    }
    eprintln!("promshard: serving {} at http://{addr}/metrics", dir.display());
    // The server's threads answer; this one only keeps the process alive.
    loop {
        std::thread::park();
    }
}

/// A secret file's content, without the newline editors leave at its end.
fn read_secret(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_owned())
}

fn fail(message: &str) -> ExitCode {
    eprintln!("promshard: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn commands() {
        let dir = || PathBuf::from("d");
        assert_eq!(parse_strs(&[]), Ok(Command::Help));
        assert_eq!(parse_strs(&["--help"]), Ok(Command::Help));
        assert_eq!(parse_strs(&["dump", "-h"]), Ok(Command::Help));
        assert_eq!(parse_strs(&["-V"]), Ok(Command::Version));
        assert_eq!(parse_strs(&["dump", "d"]), Ok(Command::Dump { dir: dir(), format: Format::Prometheus }));
        assert_eq!(
            parse_strs(&["dump", "--openmetrics", "d"]),
            Ok(Command::Dump { dir: dir(), format: Format::OpenMetrics })
        );
        assert_eq!(parse_strs(&["check", "d"]), Ok(Command::Check { dir: dir() }));
        assert_eq!(parse_strs(&["check", "--", "-d"]), Ok(Command::Check { dir: PathBuf::from("-d") }));
        let serve = |listen: &str, auth, timeout, max_connections| {
            let args = ServeArgs {
                listen: listen.into(),
                auth,
                timeout,
                max_connections,
                prune_python: false,
                created_samples: false,
                no_compact: false,
            };
            Ok(Command::Serve { dir: dir(), args })
        };
        assert_eq!(parse_strs(&["serve", "d", "--listen", "127.0.0.1:0"]), serve("127.0.0.1:0", None, None, None));
        assert_eq!(parse_strs(&["serve", "--listen=127.0.0.1:0", "d"]), serve("127.0.0.1:0", None, None, None));
        // Loopback by default: nothing is exposed unless asked for.
        assert_eq!(parse_strs(&["serve", "d"]), serve("127.0.0.1:9100", None, None, None));
        let bearer = Some(AuthFile::Bearer(PathBuf::from("tok")));
        assert_eq!(
            parse_strs(&["serve", "d", "--bearer-token-file", "tok"]),
            serve(DEFAULT_LISTEN, bearer, None, None)
        );
        let basic = Some(AuthFile::Basic(PathBuf::from("pw")));
        assert_eq!(parse_strs(&["serve", "--basic-auth-file=pw", "d"]), serve(DEFAULT_LISTEN, basic, None, None));
        let limits = serve(DEFAULT_LISTEN, None, Some(Duration::from_millis(300)), Some(3));
        assert_eq!(parse_strs(&["serve", "d", "--timeout", "0.3", "--max-connections=3"]), limits);
        let pruning = ServeArgs {
            listen: DEFAULT_LISTEN.into(),
            auth: None,
            timeout: None,
            max_connections: None,
            prune_python: true,
            created_samples: false,
            no_compact: false,
        };
        let created = ServeArgs {
            listen: DEFAULT_LISTEN.into(),
            auth: None,
            timeout: None,
            max_connections: None,
            prune_python: false,
            created_samples: true,
            no_compact: false,
        };
        assert_eq!(parse_strs(&["serve", "--prune-python", "d"]), Ok(Command::Serve { dir: dir(), args: pruning }));
        assert_eq!(parse_strs(&["serve", "d", "--created-samples"]), Ok(Command::Serve { dir: dir(), args: created }));
        let read_only = ServeArgs {
            listen: DEFAULT_LISTEN.into(),
            auth: None,
            timeout: None,
            max_connections: None,
            prune_python: false,
            created_samples: false,
            no_compact: true,
        };
        assert_eq!(parse_strs(&["serve", "--no-compact", "d"]), Ok(Command::Serve { dir: dir(), args: read_only }));
        assert_eq!(
            parse_strs(&["serve", "d", "--timeout=10", "--listen", "[::1]:0"]),
            serve("[::1]:0", None, Some(Duration::from_secs(10)), None)
        );
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["frobnicate"][..],
            &["--bogus"],
            &["dump"],
            &["dump", "a", "b"],
            &["dump", "d", "--listen", "x"],
            &["check", "d", "--openmetrics"],
            &["serve"],
            &["serve", "d", "--listen"],
            &["serve", "d", "--listen="],
            &["serve", "d", "--bearer-token-file"],
            &["serve", "d", "--basic-auth-file="],
            &["serve", "d", "--bearer-token-file", "a", "--basic-auth-file", "b"],
            &["serve", "d", "--timeout", "0"],
            &["serve", "d", "--timeout", "-1"],
            &["serve", "d", "--timeout", "soon"],
            &["serve", "d", "--timeout", "inf"],
            &["serve", "d", "--timeout", "NaN"],
            &["serve", "d", "--max-connections", "0"],
            &["serve", "d", "--max-connections", "many"],
            &["dump", "d", "--timeout", "1"],
            &["check", "d", "--bearer-token-file", "f"],
            &["dump", "d", "--openmetrics=yes"],
            &["serve", "d", "--prune-python=yes"],
            &["dump", "d", "--prune-python"],
            &["dump", "d", "--no-compact"],
            &["serve", "d", "--no-compact=yes"],
        ] {
            assert!(parse_strs(args).is_err(), "{args:?}");
        }
    }
}
