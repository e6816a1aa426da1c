//! Reading current values back, for users' own tests: one sample, a
//! snapshot of all of them to assert deltas on, and exposition text parsed
//! into samples.

/// The current value of the sample called `name` (with its suffix:
/// `_total`, `_bucket`, `_count`, `_sum`, `_info`) whose labels are exactly
/// `labels`, in any order; `None` when there is no such sample. Like
/// Python's `REGISTRY.get_sample_value`.
///
/// ```
/// use promshard::{Counter, LabelValue, Opts};
///
/// #[derive(Clone, Copy)]
/// enum Outcome { Ok, Failed }
/// impl LabelValue for Outcome {
///     const VALUES: &'static [&'static str] = &["ok", "failed"];
///     fn index(self) -> usize { self as usize }
/// }
///
/// static UPLOADS: Counter<(Outcome,)> =
///     Counter::new(Opts::new("uploads_total", "Uploads by outcome.").labels(&["outcome"]));
/// promshard::register!(UPLOADS);
///
/// UPLOADS.with((Outcome::Failed,)).inc();
/// assert_eq!(promshard::testing::sample_value("uploads_total", &[("outcome", "failed")]), Some(1.0));
/// assert_eq!(promshard::testing::sample_value("uploads_total", &[("outcome", "ok")]), Some(0.0));
/// assert_eq!(promshard::testing::sample_value("uploads_total", &[]), None);
/// ```
pub fn sample_value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    crate::expose::for_each_sample(|sample, sample_labels, value| {
        if found.is_none()
            && sample == name
            && sample_labels.len() == labels.len()
            && labels.iter().all(|l| sample_labels.contains(l))
        {
            found = Some(value);
        }
    });
    found
}

/// One sample of an exposition: its name (with its suffix), its labels in
/// the order they were written, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name: `http_requests_total`, `latency_seconds_bucket`.
    pub name: String,
    /// Label names and values, unescaped, as written.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why [`parse`] refused a text: the line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    /// What was expected.
    pub message: String,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Reads the samples of an exposition in the Prometheus text format or
/// OpenMetrics text (what an integration test gets from `/metrics`):
/// metadata lines are skipped, timestamps and exemplars ignored, label
/// values unescaped, quoted (UTF-8) names read, blanks around a line and
/// between a name and its labels allowed. A line after OpenMetrics'
/// `# EOF` is an error, as it is to Prometheus.
///
/// ```
/// let text = "# TYPE jobs_total counter\njobs_total{queue=\"a\\\"b\"} 3\njobs_created 1.7e9\n# EOF\n";
/// let samples = promshard::testing::parse(text).unwrap();
/// assert_eq!(samples[0].name, "jobs_total");
/// assert_eq!(samples[0].label("queue"), Some("a\"b"));
/// assert_eq!(samples[0].value, 3.0);
/// assert_eq!(samples.len(), 2);
/// ```
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    let mut ended = false;
    for (i, line) in text.lines().enumerate() {
        // Blanks and tabs around a line are not part of it (the text
        // format says so, and indented test fixtures have them).
        let line = line.trim_end_matches('\r').trim_matches([' ', '\t']);
        let error = |message: &str| ParseError { line: i + 1, message: message.to_owned() };
        if ended && !line.is_empty() {
            // Prometheus refuses such a scrape: a test must not pass on it.
            return Err(error("a line after `# EOF`"));
        }
        if line.is_empty() || line.starts_with('#') {
            ended |= line == "# EOF";
            continue;
        }
        out.push(parse_line(line).map_err(|m| error(&m))?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let mut rest = line;
    let mut name = String::new();
    if !rest.starts_with('{') {
        let end = rest.find(['{', ' ', '\t']).unwrap_or(rest.len());
        name = rest[..end].to_owned();
        // Blanks may stand between the name and its labels.
        rest = rest[end..].trim_start_matches([' ', '\t']);
        if name.is_empty() {
            return Err("a sample without a name".to_owned());
        }
    }
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            // A label name, or (UTF-8 names) a quoted one; a quoted
            // string alone is the metric's name.
            let (key, after) = if rest.starts_with('"') {
                let (text, after) = quoted(rest)?;
                if after.trim_start().starts_with('=') {
                    (Some(text), after.trim_start())
                } else {
                    if !name.is_empty() {
                        return Err("two names".to_owned());
                    }
                    name = text;
                    (None, after)
                }
            } else {
                let end = rest.find(|c: char| c == '=' || c.is_whitespace()).ok_or("a label without a value")?;
                (Some(rest[..end].to_owned()), rest[end..].trim_start())
            };
            rest = after;
            if let Some(key) = key {
                let after = rest.strip_prefix('=').ok_or("`=` expected after a label name")?.trim_start();
                let (value, after) = quoted(after)?;
                labels.push((key, value));
                rest = after;
            }
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("`,` or `}` expected in the labels".to_owned());
            }
        }
    }
    if name.is_empty() {
        return Err("a sample without a name".to_owned());
    }
    let value_text = rest.split_whitespace().next().ok_or("a sample without a value")?;
    let value = match value_text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other.parse().map_err(|_| format!("`{other}` is not a number"))?,
    };
    Ok(Sample { name, labels, value })
}

/// A quoted string at the start of `text`, unescaped, and what follows.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let body = text.strip_prefix('"').ok_or("`\"` expected")?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[at + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("an unterminated quoted string".to_owned())
}

/// Every sample's value at one moment, to assert on what changed since:
/// seed 001's before/after pattern without its boilerplate.
///
/// Metrics are process-wide statics, and `cargo test` runs the tests of a
/// binary in parallel threads: a delta is exact only for series no other
/// test records into meanwhile. Give each test series of its own (a label
/// value per test), or run such tests in a process of their own
/// (`cargo nextest`, which runs one process per test, or one test binary
/// per test file). In multiprocess mode (`PROMSHARD_DIR`) the values are
/// the directory's merge, so other processes' counts show too.
///
/// ```
/// use promshard::{Counter, LabelValue, Opts, assert_delta};
///
/// #[derive(Clone, Copy)]
/// enum Status { Ok, Failed }
/// impl LabelValue for Status {
///     const VALUES: &'static [&'static str] = &["200", "500"];
///     fn index(self) -> usize { self as usize }
/// }
///
/// static SENT: Counter<(Status,)> =
///     Counter::new(Opts::new("emails_sent_total", "Emails by status.").labels(&["status"]));
/// promshard::register!(SENT);
///
/// let before = promshard::testing::snapshot();
/// SENT.with((Status::Ok,)).inc();
/// assert_delta!(before, "emails_sent_total", [("status", "200")], 1.0);
/// assert_delta!(before, "emails_sent_total", [("status", "500")], 0.0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    values: std::collections::HashMap<String, f64>,
}

/// Takes a [`Snapshot`] of every sample the process exposes now.
pub fn snapshot() -> Snapshot {
    let mut values = std::collections::HashMap::new();
    crate::expose::for_each_sample(|name, labels, value| {
        values.insert(key(name, labels.iter().map(|(k, v)| (*k, *v))), value);
    });
    Snapshot { values }
}

impl Snapshot {
    /// Reads a [`Snapshot`] from exposition text (a `/metrics` body), for
    /// tests that go through HTTP.
    pub fn from_text(text: &str) -> Result<Snapshot, ParseError> {
        let values = parse(text)?
            .into_iter()
            .map(|s| (key(&s.name, s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))), s.value))
            .collect();
        Ok(Snapshot { values })
    }

    /// The value of sample `name` with exactly `labels` (any order) in
    /// this snapshot.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.values.get(&key(name, labels.iter().copied())).copied()
    }

    /// How much sample `name` with exactly `labels` changed from this
    /// snapshot to `later`; a sample absent from either counts as 0 there.
    pub fn delta_to(&self, later: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
        later.value(name, labels).unwrap_or(0.0) - self.value(name, labels).unwrap_or(0.0)
    }

    /// How much sample `name` with exactly `labels` changed since this
    /// snapshot was taken (a new snapshot is taken now).
    pub fn delta(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.delta_to(&snapshot(), name, labels)
    }
}

/// One string per sample: the name, then the labels sorted, each part
/// length-prefixed so that no two label sets can collide.
fn key<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut labels: Vec<(&str, &str)> = labels.collect();
    labels.sort_unstable();
    let mut out = format!("{}:{name}", name.len());
    for (k, v) in labels {
        out.push_str(&format!("|{}:{k}{}:{v}", k.len(), v.len()));
    }
    out
}

/// Asserts that a sample changed by exactly `delta` since `snapshot` (a
/// [`testing::Snapshot`](crate::testing::Snapshot)); the message shows
/// both values.
///
/// `assert_delta!(snapshot, "name", [("label", "value"), …], delta)`; see
/// [`testing::Snapshot`](crate::testing::Snapshot) for an example.
#[macro_export]
macro_rules! assert_delta {
    ($snapshot:expr, $name:expr, [$(($key:expr, $value:expr)),* $(,)?], $delta:expr $(,)?) => {{
        let labels: &[(&str, &str)] = &[$(($key, $value)),*];
        let now = $crate::testing::snapshot();
        let (before, after) = ($snapshot.value($name, labels), now.value($name, labels));
        let changed = $snapshot.delta_to(&now, $name, labels);
        let want: f64 = $delta;
        assert!(
            changed == want,
            "{} {:?} changed by {} (from {:?} to {:?}), expected {}",
            $name, labels, changed, before, after, want
        );
    }};
}
