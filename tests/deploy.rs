//! The ops assets in `deploy/` as Prometheus' own tool judges them:
//! `promtool check config` (with the rule files it names), `promtool
//! check rules`, and `promtool test rules`, whose test files show each
//! alert firing on synthetic series (only after its `for`, and not on a
//! healthy job) and each recording rule computing what its name says.
//! The Grafana dashboard is checked for shape here; its every expression
//! is run against a real Prometheus by `tests/prefork_prometheus.rs`.
//!
//! Without `promtool` the promtool tests print SKIPPED, or fail under
//! `PROMSHARD_ORACLES=require`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

/// Runs `promtool args…` in `deploy/`; panics with its output unless it
/// succeeds. `None` when promtool is missing (after the skip notice).
fn promtool(args: &[&str]) -> Option<String> {
    let Some(promtool) = support::promtool() else {
        support::skip_or_fail(support::PROMTOOL_MISSING);
        return None;
    };
    let output = Command::new(promtool)
        .args(args)
        .current_dir(deploy(""))
        .stdin(Stdio::null())
        .output()
        .expect("cannot run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?} failed ({}):\n{text}", output.status);
    Some(text)
}

#[test]
fn the_prometheus_config_and_its_rule_files_are_valid() {
    if let Some(out) = promtool(&["check", "config", "prometheus.yml"]) {
        assert!(out.contains("2 rule files found"), "{out}");
    }
}

#[test]
fn the_rules_are_valid() {
    if let Some(out) = promtool(&["check", "rules", "rules.yml", "alerts.yml"]) {
        assert!(out.contains("9 rules found") && out.contains("2 rules found"), "{out}");
    }
}

#[test]
fn each_alert_fires_and_each_recording_rule_computes() {
    let alerts = std::fs::read_to_string(deploy("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("alerts_test.yml")).unwrap();
    let names: BTreeSet<&str> = alerts.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert_eq!(names, BTreeSet::from(["HighErrorRate", "HighLatency"]));
    // Each alert has a case expecting it to fire (a non-empty exp_alerts).
    for name in names {
        let case = format!("alertname: {name}\n        exp_alerts:\n          - exp_labels:");
        assert!(tests.contains(&case), "no test in alerts_test.yml expects {name} to fire");
    }
    if let Some(out) = promtool(&["test", "rules", "alerts_test.yml", "rules_test.yml"]) {
        assert_eq!(out.matches("SUCCESS").count(), 2, "{out}");
    }
}

#[test]
fn the_dashboard_is_importable_as_is() {
    let text = std::fs::read_to_string(deploy("grafana/prefork.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    // Import asks for the data source declared here; panels point at it.
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40));
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels.iter().map(|p| p["title"].as_str().unwrap()).collect();
    for wanted in ["Request rate", "Error ratio", "Latency quantiles", "Requests in flight", "Live processes"] {
        assert!(titles.iter().any(|t| t.starts_with(wanted)), "no {wanted} panel in {titles:?}");
    }
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate panel id");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            // Only the variables tests/prefork_prometheus.rs fills in.
            let rest = expr.replace("$job", "").replace("$__rate_interval", "");
            assert!(!rest.contains('$'), "unknown variable in {expr}");
            assert!(expr.contains("job=~\"$job\""), "{expr} ignores the job selector");
        }
    }
    let job = &dashboard["templating"]["list"][0];
    assert_eq!(job["name"], "job");
}
