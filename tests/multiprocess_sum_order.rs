//! Every process's scrape of a directory gives the same float sums, to
//! the last bit. Float addition rounds by order: a histogram `_sum` of
//! 1e16 + 1 + 1 is 1e16 added left to right and 1e16 + 2 added right to
//! left. When each process added its own shard first, a pre-fork pool's
//! scrapes, answered by one worker then another, saw `_sum` go down by a
//! last bit now and then, which Prometheus takes for a counter reset.

mod harness;

use std::time::Duration;

use harness::{TempDir, Worker, isolated, own_text, value_in};
use promshard::{Counter, Histogram, metric};

/// Sizes of things.
#[metric(buckets = [1.0, 1e20])]
static SUM_ORDER_SIZES: Histogram;

/// Work done, in fractional units.
#[metric]
static SUM_ORDER_WORK_TOTAL: Counter;

fn sums(text: &str) -> String {
    let sum = value_in(text, "sum_order_sizes_sum", &[]).expect("a _sum");
    let work = value_in(text, "sum_order_work_total", &[]).expect("a counter");
    format!("{:016x} {:016x}", sum.to_bits(), work.to_bits())
}

fn handle(command: &str) -> String {
    let record = |v: f64| {
        SUM_ORDER_SIZES.observe(v);
        SUM_ORDER_WORK_TOTAL.inc_by_f64(v).unwrap();
        "ok".to_owned()
    };
    match command {
        "record small" => record(1.0),
        "record large" => record(1e16),
        "scrape" => sums(&own_text()),
        other => panic!("unknown command {other:?}"),
    }
}

fn scenario() {
    let dir = TempDir::new("sum-order");
    promshard::multiprocess::init(dir.path()).unwrap();
    SUM_ORDER_SIZES.observe(1.0);
    SUM_ORDER_WORK_TOTAL.inc_by_f64(1.0).unwrap();
    let wait = Duration::from_secs(20);
    let mut workers: Vec<Worker> = (0..4).map(|_| Worker::spawn(handle)).collect();
    // 1 + 1e16 + 1 + 1 + 1: whoever adds its own 1 and another before
    // the large value gets a larger sum than whoever adds it second.
    for (i, worker) in workers.iter_mut().enumerate() {
        assert_eq!(worker.ask(if i == 1 { "record large" } else { "record small" }, wait), "ok");
    }
    let parent = sums(&own_text());
    for (i, worker) in workers.iter_mut().enumerate() {
        assert_eq!(worker.ask("scrape", wait), parent, "worker {i}'s scrape and the parent's agree to the last bit");
    }
    let from_dir = sums(&harness::encode_dir_text(dir.path()));
    assert_eq!(from_dir, parent, "and a reader's that holds no shard");
    // Last first: a later worker holds copies of the earlier ones' pipes.
    for worker in workers.iter_mut().rev() {
        worker.exit(wait).expect("the worker exits");
    }
}

#[test]
fn every_scrape_sums_floats_in_one_order() {
    isolated("every_scrape_sums_floats_in_one_order", Duration::from_secs(60), scenario);
}
