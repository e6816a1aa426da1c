//! Attacks "an Info's pairs can change any number of times and every
//! reader, in any process, sees one whole set": a forked worker changes
//! its Info as fast as it can between two sets of different sizes (a torn
//! read would mix their lengths and texts), while the parent, another
//! process, scrapes the directory over and over and also kills the
//! worker mid-write at the end.

mod harness;

use std::time::{Duration, Instant};

use harness::{TempDir, encode_dir_text, fork_child, isolated, parse_samples, wait_timeout};
use promshard::{Info, Opts};

static BUILD: Info = Info::new(Opts::new("flip", "Changes all the time."));
promshard::register!(BUILD);

const SHORT: [(&str, &str); 1] = [("v", "a")];

fn long_value() -> String {
    "b".repeat(3000)
}

fn scenario() {
    let base = TempDir::new("info-concurrent");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    BUILD.set(&SHORT);
    let long = long_value();
    let worker = fork_child(|| {
        let long = long_value();
        let pairs_long = [("v", long.as_str()), ("w", "2")];
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0u64;
        while Instant::now() < deadline {
            if i % 2 == 0 {
                BUILD.set(&pairs_long)
            } else {
                BUILD.set(&SHORT)
            }
            i += 1;
        }
        0
    });
    let started = Instant::now();
    let (mut short_seen, mut long_seen, mut scrapes) = (0, 0, 0);
    while started.elapsed() < Duration::from_secs(3) {
        let text = encode_dir_text(&dir);
        scrapes += 1;
        for sample in parse_samples(&text).iter().filter(|s| s.name == "flip_info") {
            let mut labels: Vec<(&str, &str)> = sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            labels.sort();
            if labels == SHORT {
                short_seen += 1;
            } else if labels == [("v", long.as_str()), ("w", "2")] {
                long_seen += 1;
            } else {
                panic!(
                    "scrape {scrapes}: a torn info set: {:?}",
                    labels.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
                );
            }
        }
    }
    // SAFETY: our own child; killed mid-write, its shard is dead and its
    // info gone, and nothing else may suffer.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    assert!(wait_timeout(worker, Duration::from_secs(10)).is_some(), "the worker ended");
    let text = encode_dir_text(&dir);
    let infos: Vec<_> = parse_samples(&text).into_iter().filter(|s| s.name == "flip_info").collect();
    assert_eq!(infos.len(), 1, "only the live parent's info is left:\n{text}");
    assert!(scrapes > 50 && long_seen > 0 && short_seen > 0, "{scrapes} scrapes, {long_seen} long, {short_seen} short");
}

#[test]
fn info_changed_while_another_process_scrapes_is_never_torn() {
    isolated("info_changed_while_another_process_scrapes_is_never_torn", Duration::from_secs(60), scenario);
}
