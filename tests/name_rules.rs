//! The macro crate repeats the runtime's name rules to report a bad name
//! at its span (`macros/src/names.rs`); the two must agree. Random names
//! (seeded, the seed printed; `PROMSHARD_SEED` replays one) go through
//! both: validity, the reserved `__` prefix as any scraper reads a label,
//! and two labels a scraper reads as one.

#[allow(dead_code)]
#[path = "../macros/src/names.rs"]
mod names;
mod rng;

use promshard::{Collector, Escaping, Exposition, MetricWriter, Protocol};
use rng::Rng;
use std::sync::Mutex;

impl Rng {
    fn name(&mut self) -> String {
        const CHARS: &[char] = &['a', 'Z', '_', ':', '0', '.', '-', ' ', 'é', '😀', '\n', '\u{85}', '"'];
        let len = self.next() % 5;
        (0..len).map(|_| CHARS[(self.next() % CHARS.len() as u64) as usize]).collect()
    }
}

/// Two labels the test hands a collector, to see whether the runtime
/// keeps the series (it drops one whose labels clash).
static PAIR: Mutex<(String, String)> = Mutex::new((String::new(), String::new()));

struct Pair;

impl Collector for Pair {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        let (a, b) = PAIR.lock().unwrap().clone();
        out.gauge("name_rules_pair", "Pair.").sample(&[(a.as_str(), "1"), (b.as_str(), "2")], 1.0);
    }
}

static PAIR_COLLECTOR: Pair = Pair;
promshard::register_collector!(PAIR_COLLECTOR);

#[test]
fn the_macro_and_the_runtime_agree() {
    let seed = std::env::var("PROMSHARD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("the_macro_and_the_runtime_agree: PROMSHARD_SEED={seed}");
    let mut rng = Rng(seed);
    let utf8 = Exposition::new(Protocol::PrometheusText1_0_0, Escaping::AllowUtf8);
    for i in 0..3000 {
        let (a, b) = (rng.name(), rng.name());
        assert_eq!(names::is_valid(&a), promshard::is_metric_name(&a), "seed {seed}: {a:?}");
        let label = names::is_valid(&a) && !names::is_reserved_label(&a);
        assert_eq!(label, promshard::is_label_name(&a), "seed {seed}: {a:?}");
        if i % 10 == 0 && promshard::is_label_name(&a) && promshard::is_label_name(&b) && a != "le" && b != "le" {
            *PAIR.lock().unwrap() = (a.clone(), b.clone());
            let text = String::from_utf8(promshard::encode(utf8)).unwrap();
            let kept = text.contains("\nname_rules_pair{");
            assert_eq!(kept, !names::labels_clash(&a, &b), "seed {seed}: {a:?} {b:?}:\n{text}");
        }
    }
}
