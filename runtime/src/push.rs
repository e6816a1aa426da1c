//! Pushing to a Prometheus Pushgateway, for batch jobs that end before any
//! scrape (feature `push`).
//!
//! A [`Pusher`] names the group (a job and a grouping key) and sends the
//! exposition of everything this process holds: in multiprocess mode
//! (`PROMSHARD_DIR`) that is the merge of the whole directory, so a job
//! that forked workers pushes their sum. [`Pusher::directory`] pushes a
//! directory's merge from a process that records nothing itself.
//!
//! Every call is bounded by the pusher's timeout (connect, send and the
//! answer together) and reports failure as a [`PushError`] value; nothing
//! here panics or retries on its own.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # fn run_the_job() {}
//! // Pushed once, when the guard is dropped at the end of `main`.
//! let _push = promshard::push::on_exit(
//!     promshard::push::Pusher::new("http://127.0.0.1:9091", "nightly_export")
//!         .grouping("shard", "eu-1")
//!         .timeout(Duration::from_secs(5)),
//! );
//! run_the_job();
//! ```

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::expose::Format;
use crate::longest_wait::LONGEST_WAIT;

/// The timeout of a [`Pusher`] that was given none: a job's exit should
/// not wait long for a gateway that is down.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a refusing gateway's answer is kept in the error.
const MAX_ERROR_BODY: u64 = 4096;

/// One group of a Pushgateway and how to reach it.
///
/// ```
/// use promshard::push::Pusher;
///
/// let pusher = Pusher::new("http://gateway:9091/", "backup").grouping("path", "/var/lib/db");
/// // A value with a `/` travels in the URL as base64, as the Pushgateway documents.
/// assert_eq!(pusher.url().unwrap(), "http://gateway:9091/metrics/job/backup/path@base64/L3Zhci9saWIvZGI");
/// ```
#[derive(Clone, Debug)]
pub struct Pusher {
    gateway: String,
    job: String,
    grouping: Vec<(String, String)>,
    authorization: Option<String>,
    timeout: Duration,
    directory: Option<PathBuf>,
}

/// Why a push, push-add or delete did not happen.
#[derive(Debug)]
#[non_exhaustive]
pub enum PushError {
    /// The job name or a grouping label cannot form a group.
    Grouping(String),
    /// The gateway answered with an error status; `body` is the start of
    /// what it said (the Pushgateway explains refusals there).
    Status {
        /// The HTTP status.
        status: u16,
        /// The first 4 KiB of the answer.
        body: String,
    },
    /// The gateway could not be reached or did not answer in time.
    Transport(String),
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Grouping(why) => write!(f, "bad Pushgateway group: {why}"),
            PushError::Status { status, body } => write!(f, "the Pushgateway answered {status}: {}", body.trim()),
            PushError::Transport(why) => write!(f, "cannot reach the Pushgateway: {why}"),
        }
    }
}

impl std::error::Error for PushError {}

impl Pusher {
    /// A pusher for group `job` of the gateway at `gateway` (`http://host:port`,
    /// a path prefix allowed), with no other grouping label, no
    /// authentication and [`DEFAULT_TIMEOUT`].
    pub fn new(gateway: &str, job: &str) -> Pusher {
        Pusher {
            gateway: gateway.trim_end_matches('/').to_owned(),
            job: job.to_owned(),
            grouping: Vec::new(),
            authorization: None,
            timeout: DEFAULT_TIMEOUT,
            directory: None,
        }
    }

    /// Adds a grouping label (`instance`, a shard, a date): pushes with
    /// different values are different groups of the gateway. Any value is
    /// allowed, empty and `/` included.
    pub fn grouping(mut self, name: &str, value: &str) -> Pusher {
        self.grouping.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Authenticates with HTTP basic auth (the gateway's `--web.config.file`).
    pub fn basic_auth(mut self, user: &str, password: &str) -> Pusher {
        self.authorization = Some(format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))));
        self
    }

    /// Bounds every call: connecting, sending and reading the answer
    /// together. A longer one than a century (`Duration::MAX` for
    /// "never") counts as a century.
    pub fn timeout(mut self, timeout: Duration) -> Pusher {
        // The HTTP client adds it to `Instant::now()`, which panics past
        // what the clock can hold.
        self.timeout = timeout.min(LONGEST_WAIT);
        self
    }

    /// Pushes the merge of shard directory `dir` instead of this process's
    /// exposition: for a process that records nothing itself.
    pub fn directory(mut self, dir: impl Into<PathBuf>) -> Pusher {
        self.directory = Some(dir.into());
        self
    }

    /// The group's URL: `/metrics/job/<job>{/<label>/<value>}`, each value
    /// as base64url (`<label>@base64`) when it is empty or holds anything
    /// beyond letters, digits and `-._~`.
    pub fn url(&self) -> Result<String, PushError> {
        if self.job.is_empty() {
            return Err(PushError::Grouping("the job name is empty".to_owned()));
        }
        let mut url = format!("{}/metrics", self.gateway);
        push_segment(&mut url, "job", &self.job);
        for (name, value) in &self.grouping {
            if !valid_label_name(name) || name == "job" {
                return Err(PushError::Grouping(format!("`{name}` cannot be a grouping label")));
            }
            push_segment(&mut url, name, value);
        }
        Ok(url)
    }

    /// Replaces the whole group with the current exposition (HTTP `PUT`):
    /// what a job does when it ends.
    pub fn push(&self) -> Result<(), PushError> {
        self.send("PUT", Some(self.body()?))
    }

    /// Replaces, in the group, the families the current exposition holds
    /// and keeps the others (HTTP `POST`).
    pub fn push_add(&self) -> Result<(), PushError> {
        self.send("POST", Some(self.body()?))
    }

    /// Deletes the group from the gateway.
    pub fn delete(&self) -> Result<(), PushError> {
        self.send("DELETE", None)
    }

    /// The exposition to push, in protobuf: the text formats have no
    /// native buckets and no exemplars, and the gateway keeps what it is
    /// given and serves it back in protobuf.
    fn body(&self) -> Result<Vec<u8>, PushError> {
        let body = match &self.directory {
            Some(dir) => crate::multiprocess::encode_dir(dir, Format::Protobuf),
            None => crate::expose::encode(Format::Protobuf),
        };
        self.check_labels(&body)?;
        Ok(body)
    }

    /// Refuses a series that carries `job` or a grouping label: the
    /// gateway would overwrite its value with the group's (or refuse the
    /// push when series then collide), as client_golang refuses it too.
    fn check_labels(&self, mut body: &[u8]) -> Result<(), PushError> {
        use prost::Message;
        let grouped = |name: &str| name == "job" || self.grouping.iter().any(|(n, _)| n == name);
        while !body.is_empty() {
            let Ok(family) = crate::encode::proto::messages::MetricFamily::decode_length_delimited(&mut body) else {
                return Ok(());
            };
            for metric in &family.metric {
                if let Some(label) = metric.label.iter().find_map(|l| l.name.as_deref().filter(|n| grouped(n))) {
                    return Err(PushError::Grouping(format!(
                        "a series of `{}` carries the label `{label}`, which the group sets",
                        family.name.as_deref().unwrap_or_default()
                    )));
                }
            }
        }
        Ok(())
    }

    fn send(&self, method: &str, body: Option<Vec<u8>>) -> Result<(), PushError> {
        let url = self.url()?;
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            // A redirect would resend the body elsewhere; the gateway
            // never asks for one.
            .max_redirects(0)
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let result = match body {
            Some(body) => {
                let request = request
                    .header("Content-Type", Format::Protobuf.content_type())
                    .body(body)
                    .map_err(|e| PushError::Grouping(e.to_string()))?;
                agent.run(request)
            }
            None => agent.run(request.body(()).map_err(|e| PushError::Grouping(e.to_string()))?),
        };
        let mut response = result.map_err(|e| PushError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        // As bytes: the 4 KiB kept may end inside a character, and
        // `read_to_string` would then keep nothing.
        let mut body = Vec::new();
        let _ = response.body_mut().as_reader().take(MAX_ERROR_BODY).read_to_end(&mut body);
        Err(PushError::Status { status, body: String::from_utf8_lossy(&body).into_owned() })
    }
}

/// Appends `/name/value`, or `/name@base64/…` for a value that does not
/// travel as it is.
fn push_segment(url: &mut String, name: &str, value: &str) {
    let plain = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    // `.` and `..` alone are path steps, not values.
    if plain && value != "." && value != ".." {
        url.push_str(&format!("/{name}/{value}"));
    } else if value.is_empty() {
        url.push_str(&format!("/{name}@base64/="));
    } else {
        url.push_str(&format!("/{name}@base64/{}", URL_SAFE_NO_PAD.encode(value)));
    }
}

fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
}

/// Pushes once when dropped, as the last thing a batch job does.
///
/// Returned by [`on_exit`]. A failed push is logged (`log` crate, target
/// `promshard`); call [`ExitPush::finish`] instead to see the error. A
/// process that ends through `std::process::exit` or a signal drops
/// nothing: keep the guard in `main` and return from it.
#[must_use = "the push happens when this guard is dropped"]
pub struct ExitPush {
    pusher: Option<Pusher>,
}

/// Returns a guard that pushes (`PUT`) everything the process holds when
/// it is dropped: `let _push = promshard::push::on_exit(pusher);` at the
/// top of `main`.
pub fn on_exit(pusher: Pusher) -> ExitPush {
    ExitPush { pusher: Some(pusher) }
}

impl ExitPush {
    /// Pushes now and returns the outcome; nothing is pushed on drop.
    pub fn finish(mut self) -> Result<(), PushError> {
        self.pusher.take().map_or(Ok(()), |p| p.push())
    }
}

impl Drop for ExitPush {
    fn drop(&mut self) {
        if let Some(pusher) = self.pusher.take() {
            if let Err(e) = pusher.push() {
                crate::notice::warn(format!("the push at exit failed: {e}"));
            }
        }
    }
}

/// Pushes every interval from a background thread, and once more when
/// dropped: for a long job whose progress should show while it runs.
///
/// Returned by [`every`]. A failed push is logged when the error changes,
/// and tried again at the next tick.
#[must_use = "pushing stops when this guard is dropped"]
pub struct PeriodicPush {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<bool>>,
    pusher: Option<Pusher>,
}

/// Starts pushing (`PUT`) every `interval` until the returned guard is
/// dropped, which pushes a last time.
pub fn every(pusher: Pusher, interval: Duration) -> PeriodicPush {
    let (stop, ticks) = mpsc::channel::<()>();
    let periodic = pusher.clone();
    let thread = std::thread::Builder::new()
        .name("promshard-push".into())
        .spawn(move || {
            // Said when it changes, not at every tick of a gateway that
            // stays down.
            let mut last_error = None::<String>;
            // Returns whether the last push worked: a guard dropped while a
            // push hangs gives the last push only what is left of its timeout.
            loop {
                match ticks.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => match periodic.push() {
                        Ok(()) if last_error.take().is_some() => crate::notice::info("periodic pushes work again"),
                        Ok(()) => {}
                        Err(e) => {
                            let e = e.to_string();
                            if last_error.as_ref() != Some(&e) {
                                crate::notice::warn(format!("a periodic push failed: {e}"));
                                last_error = Some(e);
                            }
                        }
                    },
                    // Stopped, or the guard is gone.
                    _ => return last_error.is_none(),
                }
            }
        })
        .ok();
    if thread.is_none() {
        crate::notice::warn("no thread for periodic pushes; pushing only at the end");
    }
    PeriodicPush { stop: Some(stop), thread, pusher: Some(pusher) }
}

impl PeriodicPush {
    /// Stops the thread, pushes a last time and returns the outcome.
    ///
    /// A push of the thread's under way is waited for first (it must not
    /// land after the last one, with older values). If it failed, the last
    /// push gets only what is left of the timeout, so that stopping never
    /// waits more than one timeout on a gateway that does not answer.
    pub fn finish(mut self) -> Result<(), PushError> {
        self.last_push()
    }

    fn last_push(&mut self) -> Result<(), PushError> {
        let started = std::time::Instant::now();
        drop(self.stop.take());
        // Never panics: a panic in the thread counts as a failed push.
        let worked = self.thread.take().is_none_or(|thread| thread.join().unwrap_or(false));
        let Some(pusher) = self.pusher.take() else { return Ok(()) };
        if worked {
            return pusher.push();
        }
        let left = pusher.timeout.saturating_sub(started.elapsed());
        if left < Duration::from_millis(1) {
            return Err(PushError::Transport(
                "the push under way used the whole timeout; the last push was not tried".to_owned(),
            ));
        }
        pusher.timeout(left).push()
    }
}

impl Drop for PeriodicPush {
    fn drop(&mut self) {
        if self.pusher.is_some()
            && let Err(e) = self.last_push()
        {
            crate::notice::warn(format!("the last push failed: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_values_travel_plain_or_as_base64() {
        let url = Pusher::new("http://gw:9091/prefix/", "j/b")
            .grouping("instance", "host-1.example_~")
            .grouping("empty", "")
            .grouping("dot", ".")
            .grouping("unicode", "é")
            .url()
            .unwrap();
        assert_eq!(
            url,
            "http://gw:9091/prefix/metrics/job@base64/ai9i/instance/host-1.example_~/empty@base64/=/dot@base64/Lg/unicode@base64/w6k"
        );
        for bad in ["", "1x", "__x", "a-b", "job"] {
            assert!(Pusher::new("http://gw", "j").grouping(bad, "v").url().is_err(), "{bad}");
        }
        assert!(Pusher::new("http://gw", "").url().is_err());
    }
}
