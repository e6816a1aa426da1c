//! Attacks "in flight goes back to 0, each call counted once" when a
//! process forks inside an instrumented call, in multiprocess mode: the
//! natural shape of a master that starts its workers with an
//! instrumented `fork_worker()` returning which side of the fork it is
//! on, each worker then serving from the caller. Both sides return from
//! the one call. A forked child's shard starts from zero, so the child's
//! end of a call its parent started took its in-flight gauge to -1 (for
//! the worker's whole life: a pool of three showed
//! `function_calls_in_flight` at -3) and counted the call a second time.
//!
//! Expected: a call belongs to the process that started it; a forked
//! child ending its parent's call counts nothing. Calls the child starts
//! itself count as usual. The same holds for an instrumented HTTP
//! handler.

mod harness;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use harness::{TempDir, encode_dir_text, isolated, own_text, value_in, wait_timeout};
use promshard::instrument_handler;

enum Role {
    Master { pid: libc::pid_t, commands: std::fs::File, replies: BufReader<std::fs::File> },
    Worker { commands: BufReader<std::fs::File>, replies: std::fs::File },
}

/// Forks a worker; both sides return from this one call.
#[instrument_handler(name = "fork_worker")]
fn fork_worker() -> Result<Role, String> {
    let (cmd_r, cmd_w) = harness::pipe();
    let (rep_r, rep_w) = harness::pipe();
    // SAFETY: the child only serves this test's commands and `_exit`s.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error().to_string()),
        0 => Ok(Role::Worker { commands: BufReader::new(cmd_r), replies: rep_w }),
        pid => Ok(Role::Master { pid, commands: cmd_w, replies: BufReader::new(rep_r) }),
    }
}

#[instrument_handler(name = "serve_job")]
fn serve_job() -> Result<(), String> {
    Ok(())
}

/// An HTTP handler that forks a helper, which answers too.
#[instrument_handler(route = "/fork/report", method = "POST")]
fn report() -> Result<libc::pid_t, http::StatusCode> {
    // SAFETY: the child returns through this call and `_exit`s below.
    match unsafe { libc::fork() } {
        -1 => Err(http::StatusCode::SERVICE_UNAVAILABLE),
        pid => Ok(pid),
    }
}

fn calls(text: &str, handler: &str) -> (f64, f64) {
    let ok = value_in(text, "function_calls_total", &[("handler", handler), ("result", "ok")]);
    let in_flight = value_in(text, "function_calls_in_flight", &[("handler", handler)]);
    (ok.unwrap_or(f64::NAN), in_flight.unwrap_or(f64::NAN))
}

fn worker_main(mut commands: BufReader<std::fs::File>, mut replies: std::fs::File) -> ! {
    let mut line = String::new();
    while commands.read_line(&mut line).is_ok_and(|n| n > 0) {
        serve_job().unwrap();
        let _ = replies.write_all(b"done\n");
        line.clear();
    }
    // SAFETY: leave without the test harness's exit handlers.
    unsafe { libc::_exit(0) }
}

fn scenario() {
    let dir = TempDir::new("fork-in-call");
    promshard::multiprocess::init(dir.path()).unwrap();
    serve_job().unwrap();
    let mut workers = Vec::new();
    for _ in 0..3 {
        match fork_worker().unwrap() {
            Role::Worker { commands, replies } => {
                // The earlier workers' pipes are the master's to close.
                drop(workers);
                worker_main(commands, replies)
            }
            Role::Master { pid, commands, replies } => workers.push((pid, commands, replies)),
        }
    }
    for (_, commands, replies) in &mut workers {
        commands.write_all(b"job\n").unwrap();
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        assert_eq!(line, "done\n");
    }
    for (who, text) in [("the master's scrape", own_text()), ("encode_dir", encode_dir_text(dir.path()))] {
        assert_eq!(
            calls(&text, "fork_worker"),
            (3.0, 0.0),
            "{who}, three workers alive: fork_worker was called three times, and none is in flight (each \
             worker returned through its parent's call)"
        );
        assert_eq!(calls(&text, "serve_job"), (4.0, 0.0), "{who}: the jobs, the master's and each worker's");
    }

    // An HTTP handler whose helper child returns through it, then exits.
    let helper = report().unwrap();
    if helper == 0 {
        // SAFETY: the helper leaves at once.
        unsafe { libc::_exit(0) }
    }
    let status = wait_timeout(helper, Duration::from_secs(20)).expect("the helper exits");
    assert!(libc::WIFEXITED(status));

    for (_, commands, _) in &mut workers {
        commands.write_all(b"job\n").unwrap();
    }
    for (_, _, replies) in &mut workers {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
    }
    for (pid, commands, replies) in workers {
        drop((commands, replies));
        let status = wait_timeout(pid, Duration::from_secs(20)).expect("the worker exits");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
    let text = own_text();
    assert_eq!(calls(&text, "fork_worker"), (3.0, 0.0), "after the workers exited");
    assert_eq!(calls(&text, "serve_job"), (7.0, 0.0), "every job once");
    let labels = [("handler", "/fork/report"), ("method", "POST"), ("status", "200")];
    assert_eq!(value_in(&text, "http_requests_total", &labels), Some(1.0), "the request was handled once");
    assert_eq!(value_in(&text, "http_requests_in_flight", &[("handler", "/fork/report")]), Some(0.0));
}

#[test]
fn a_call_that_forks_is_counted_once_and_leaves_nothing_in_flight() {
    isolated("a_call_that_forks_is_counted_once_and_leaves_nothing_in_flight", Duration::from_secs(60), scenario);
}
