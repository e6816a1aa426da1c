use promshard::{metric, Counter, LabelValue};

#[derive(Clone, Copy)]
struct Shard(u8);

impl LabelValue for Shard {
    const VALUES: &'static [&'static str] = &[
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18",
        "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32", "33", "34", "35",
        "36", "37", "38", "39",
    ];
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// Writes by source and destination shard.
#[metric(labels(from: Shard, to: Shard))]
static WRITES_TOTAL: Counter;

fn main() {}
