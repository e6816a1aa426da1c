//! `promshard`: reads a multiprocess shard directory (one `.promshard`
//! file per process, plus Python prometheus_client `.db` files) without
//! writing to it.
//!
//! - `dump` prints the merged exposition, as a scrape of any process in
//!   the directory would return it.
//! - `check` lists the shard files with their owner, liveness and size, and
//!   fails when one cannot be read.
//! - `serve` is a sidecar exporter: `GET /metrics` on a port of its own.
//!
//! Everything goes through `promshard::multiprocess::{encode_dir, inspect}`,
//! which never lays out this process's registry: the CLI has no metrics of
//! its own and never creates a shard.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use promshard::Format;
use promshard::multiprocess;

const USAGE: &str = "\
promshard: read a promshard multiprocess shard directory (without recording into it)

Usage:
  promshard dump DIR [--openmetrics]   Print the merged exposition of DIR
                                       (Prometheus text 0.0.4 by default)
  promshard check DIR                  List DIR's shard files: pid, live/dead/archive,
                                       series, problem; exit 1 if any is unreadable
  promshard serve DIR --listen ADDR    Serve GET /metrics with the merged exposition of DIR,
                                       in the format the Accept header asks for, until
                                       killed (ADDR like 127.0.0.1:9100; port 0 picks one)
  promshard --help | --version

Exit status: 0 on success, 1 when DIR cannot be read (or `check` finds a bad
file, or `serve` cannot listen), 2 on a usage error.
";

/// How many requests `serve` answers at once.
const SERVE_THREADS: usize = 4;

#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Version,
    Dump { dir: PathBuf, format: Format },
    Check { dir: PathBuf },
    Serve { dir: PathBuf, listen: String },
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
        Command::Serve { dir, listen } => serve(dir, &listen),
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
        match (subcommand, name) {
            (_, "-h" | "--help") if inline_value.is_none() => return Ok(Command::Help),
            (_, "--") if inline_value.is_none() => options_done = true,
            ("dump", "--openmetrics") if inline_value.is_none() => openmetrics = true,
            ("serve", "--listen") => {
                let value = match inline_value {
                    Some(value) => value.to_owned(),
                    None => match args.next() {
                        Some(value) => value.into_string().map_err(|_| "`--listen` takes an address".to_owned())?,
                        None => return Err("`--listen` needs an address, like 127.0.0.1:9100".to_owned()),
                    },
                };
                if value.is_empty() {
                    return Err("`--listen` needs an address, like 127.0.0.1:9100".to_owned());
                }
                listen = Some(value);
            }
            _ => return Err(format!("unknown option `{text}` for `{subcommand}`")),
        }
    }

    let dir = dir.ok_or_else(|| format!("`{subcommand}` needs a directory"))?;
    Ok(match subcommand {
        "dump" => Command::Dump { dir, format: if openmetrics { Format::OpenMetrics } else { Format::Prometheus } },
        "check" => Command::Check { dir },
        _ => Command::Serve { dir, listen: listen.ok_or("`serve` needs `--listen ADDR`, like 127.0.0.1:9100")? },
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
    let python = python_files(dir);

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
    match python {
        0 => {}
        1 => out.push_str("; 1 Python .db file (merged, not checked)"),
        n => out.push_str(&format!("; {n} Python .db files (merged, not checked)")),
    }
    out.push('\n');
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

/// The Python prometheus_client files a merge would read: `*.db`.
fn python_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .count()
        })
        .unwrap_or(0)
}

/// `promshard serve`: answers until the process is killed.
fn serve(dir: PathBuf, listen: &str) -> ExitCode {
    let server = match tiny_http::Server::http(listen) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("promshard: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::read_dir(&dir) {
        // Workers create the directory when they start; serve it anyway.
        eprintln!("promshard: warning: cannot read {} yet ({e}); serving it anyway", dir.display());
    }
    let addr = server.server_addr().to_ip().map_or_else(|| listen.to_owned(), |a| a.to_string());
    eprintln!("promshard: serving {} at http://{addr}/metrics", dir.display());

    // A few threads, so one slow client does not hold up the scrapes.
    std::thread::scope(|scope| -> ExitCode {
        for _ in 1..SERVE_THREADS {
            scope.spawn(|| answer(&server, &dir));
        }
        answer(&server, &dir)
    })
}

/// Answers requests for ever (`serve` runs until killed).
fn answer(server: &tiny_http::Server, dir: &Path) -> ! {
    loop {
        match server.recv() {
            Ok(request) => respond(request, dir),
            Err(e) => {
                // Accepting failed (out of descriptors, say): try again
                // shortly rather than spin.
                eprintln!("promshard: could not accept a connection: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

fn respond(request: tiny_http::Request, dir: &Path) {
    use tiny_http::{Header, Method, Response};

    let path = request.url().split('?').next().unwrap_or("");
    let result = if path != "/metrics" {
        request.respond(Response::from_string("not found; metrics are at /metrics\n").with_status_code(404))
    } else if !matches!(request.method(), Method::Get | Method::Head) {
        let allow = Header::from_bytes(&b"Allow"[..], &b"GET, HEAD"[..]).expect("a valid header");
        request.respond(Response::from_string("method not allowed\n").with_status_code(405).with_header(allow))
    } else {
        let accept = request.headers().iter().find(|h| h.field.equiv("Accept")).map(|h| h.value.as_str());
        let format = Format::from_accept(accept);
        let body = multiprocess::encode_dir(dir, format);
        let content_type = Header::from_bytes(&b"Content-Type"[..], format.content_type().as_bytes())
            .expect("content types are valid header values");
        request.respond(Response::from_data(body).with_header(content_type))
    };
    if let Err(e) = result {
        eprintln!("promshard: response not sent: {e}");
    }
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
        let serve = Ok(Command::Serve { dir: dir(), listen: "127.0.0.1:0".into() });
        assert_eq!(parse_strs(&["serve", "d", "--listen", "127.0.0.1:0"]), serve);
        assert_eq!(parse_strs(&["serve", "--listen=127.0.0.1:0", "d"]), serve);
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
            &["serve", "d"],
            &["serve", "d", "--listen"],
            &["serve", "d", "--listen="],
            &["dump", "d", "--openmetrics=yes"],
        ] {
            assert!(parse_strs(args).is_err(), "{args:?}");
        }
    }
}
