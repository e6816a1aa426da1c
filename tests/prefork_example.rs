//! The main demo's self-check runs end to end: a pre-fork pool under a
//! sequential client, with workers retired every 60 requests, crashing
//! mid-request (SIGKILL raised in the handler) and SIGKILLed between
//! requests, whose merged metrics match what its client saw, exactly. The
//! example checks the counts itself and fails otherwise; this test holds
//! it to that and to the churn it claims.

mod support;

#[test]
fn prefork_server_self_check_counts_every_request_exactly_once() {
    let out = support::example_output("prefork_server", &["--self-check"]);
    assert!(out.contains("every request counted exactly once"), "{out}");
    // The merged series it printed add up to the requests its client saw
    // answered.
    let merged: f64 = out
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    let summary = out.lines().find(|l| l.starts_with("client: ")).unwrap_or_else(|| panic!("{out}"));
    let number_before = |what: &str| -> f64 {
        let before = summary.split(what).next().unwrap();
        before.rsplit(' ').find(|w| !w.is_empty()).unwrap().parse().unwrap_or_else(|_| panic!("{what}: {summary}"))
    };
    assert_eq!(merged, number_before(" requests answered"), "{out}");
    assert_eq!(merged, 600.0, "{out}");
    assert!(number_before(" crashed their worker") >= 1.0, "{summary}");
    assert!(number_before(" idle workers SIGKILLed") >= 1.0, "{summary}");
    // 4 at start, one per crash and kill, and retirements on top.
    assert!(number_before(" started") > 4.0 + 10.0, "{summary}");
    assert!(out.contains("http_requests_total{handler=\"/error\",method=\"GET\",status=\"500\"}"), "{out}");
    assert!(!out.contains("handler=\"/slow\",method=\"GET\",status=\"500\""), "crashes are never counted: {out}");
}
