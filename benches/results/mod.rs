//! Figures a bench measures outside criterion (bytes held, Python's
//! timings, interleaved medians), kept for `benches/report.py`: one JSON
//! object per line in `$PROMSHARD_BENCH_OUT/<file>`, which
//! `benches/run.sh` sets. Without it they are only printed.

#![allow(dead_code)]

use std::io::Write;

/// Appends `fields` (`"key": value` pairs, already JSON) as one line to
/// `$PROMSHARD_BENCH_OUT/<file>`, and prints them.
pub fn record(file: &str, fields: &[(&str, Value)]) {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\": {}", v.json())).collect();
    let line = format!("{{{}}}", body.join(", "));
    println!("{file}: {line}");
    let Some(dir) = std::env::var_os("PROMSHARD_BENCH_OUT") else { return };
    let path = std::path::Path::new(&dir).join(file);
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("results file");
    writeln!(out, "{line}").expect("results file");
}

/// A value of a recorded field.
pub enum Value {
    Str(String),
    Num(f64),
}

impl Value {
    fn json(&self) -> String {
        match self {
            Value::Str(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
            Value::Num(n) if n.is_finite() => format!("{n}"),
            Value::Num(_) => "null".to_owned(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Value {
        Value::Num(n)
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        Value::Num(n as f64)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Num(n as f64)
    }
}

/// The Python interpreter the benches compare with: `$PROMSHARD_PYTHON`,
/// else `python3` on `PATH`. It needs prometheus_client installed; the
/// benches install nothing.
pub fn python() -> std::ffi::OsString {
    std::env::var_os("PROMSHARD_PYTHON").unwrap_or_else(|| "python3".into())
}
