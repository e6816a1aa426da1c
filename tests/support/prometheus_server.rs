//! One real Prometheus server for a test: started with a config that
//! scrapes the given targets every second, on a free loopback port and a
//! data directory of its own, stopped by its pid when dropped; and its
//! HTTP API, read over a plain socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running Prometheus server; killed and reaped, and its data removed,
/// when dropped, however the test ends.
pub struct PrometheusServer {
    child: Child,
    dir: std::path::PathBuf,
    /// The port its API listens on (loopback).
    pub port: u16,
}

impl PrometheusServer {
    /// Starts `binary` scraping `targets` under job `job` every second,
    /// with `flags` added (`--enable-feature=…`); `tag` names its data
    /// directory.
    pub fn start(binary: &Path, tag: &str, job: &str, targets: &[SocketAddr], flags: &[&str]) -> PrometheusServer {
        let dir = std::env::temp_dir().join(format!("promshard-prometheus-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: {job}\n    \
                 static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(flags)
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        PrometheusServer { child, dir, port }
    }

    /// The JSON body of `GET path` on its API, or `None`.
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()
    }

    /// The value (as Prometheus writes it) of an instant query that
    /// returns exactly one sample, or `None`.
    pub fn query_one(&self, query: &str) -> Option<String> {
        let body = self.get(&format!("/api/v1/query?query={}", percent_encoded(query)))?;
        let result = body["data"]["result"].as_array()?;
        let [sample] = &result[..] else { return None };
        Some(sample["value"][1].as_str()?.to_owned())
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `query` percent-encoded for a URL's query string.
pub fn percent_encoded(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
