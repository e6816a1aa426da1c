use core::sync::atomic::AtomicU64;
use std::collections::BTreeMap;

use super::*;

fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..n)
        .map(|_| {
            let r = next();
            match r % 10 {
                0 => f64::from_bits(next()), // any bits: NaN, subnormal, huge
                1 => BOUNDS[(r >> 8) as usize % 8 + 1][0] * 2f64.powi((r >> 20) as i32 % 300 - 150),
                2 => {
                    let table = BOUNDS[(r >> 8) as usize % 8 + 1];
                    table[(r >> 12) as usize % table.len()] * 2f64.powi((r >> 20) as i32 % 40 - 20)
                }
                3 => [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, ZERO_THRESHOLD][(r >> 8) as usize % 6],
                _ => (r >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((r >> 4) as i32 % 12 - 6),
            }
        })
        .filter(|v: &f64| !v.is_nan())
        .collect()
}

#[test]
fn bounds_nest_and_are_powers_of_two() {
    for s in 1..=8usize {
        let n = 1 << s;
        assert_eq!(BOUNDS[s].len(), n);
        for (j, b) in BOUNDS[s].iter().enumerate() {
            let want = (j as f64 / n as f64).exp2() / 2.0;
            assert!((b - want).abs() <= want * 2.0 * f64::EPSILON, "schema {s} bound {j}");
            // Every bound of a schema is a bound of the next one: counts
            // reduce exactly.
            if s < 8 {
                assert_eq!(BOUNDS[s + 1][2 * j], *b);
            }
        }
    }
}

#[test]
fn an_index_reduces_to_the_index_at_the_lower_schema() {
    for v in values(7, 20_000) {
        let m = v.abs();
        if m <= ZERO_THRESHOLD {
            continue;
        }
        let finest = index(m, MAX_SCHEMA);
        for s in MIN_SCHEMA..MAX_SCHEMA {
            assert_eq!(reduce(finest, MAX_SCHEMA, s), index(m, s), "{v:e} at schema {s}");
        }
        assert!((first_index(MAX_SCHEMA)..=inf_index(MAX_SCHEMA)).contains(&finest), "{v:e}");
    }
}

#[test]
fn an_index_holds_its_value() {
    // Away from the bounds themselves (where rounding of the reference
    // could disagree), value v is in (2^((i-1)/2^s), 2^(i/2^s)].
    for s in MIN_SCHEMA..=MAX_SCHEMA {
        for v in [1.0, 1.5, 3.0, 1000.0, 0.001, 1e-30, 1e300, f64::MAX, 2.0, 0.5, 1024.0] {
            let i = index(v, s);
            let step = 2f64.powi(-i32::from(s));
            let (lo, hi) = ((f64::from(i) - 1.0) * step, f64::from(i) * step);
            let l = v.log2();
            assert!(l > lo - 1e-9 && l <= hi + 1e-9, "{v} at schema {s}: {i}");
        }
        for p in [-100, -1, 0, 1, 10, 1000] {
            // Powers of two are upper bounds, inclusive.
            let v = 2f64.powi(p);
            // The bucket whose upper bound is 2^p: p * 2^s, rounded up.
            assert_eq!(index(v, s), if s >= 0 { p << s } else { -((-p) >> -s) }, "2^{p} at {s}");
        }
        assert_eq!(index(f64::INFINITY, s), index(f64::MAX, s) + 1);
    }
}

fn slots(spec: NativeBuckets) -> Vec<AtomicU64> {
    (0..spec.width()).map(|_| AtomicU64::new(0)).collect()
}

/// The counts of `vs` at `schema`, by definition.
fn model(vs: &[f64], schema: i8) -> NativeCounts {
    let mut m = NativeCounts { schema, max_buckets: 400, ..NativeCounts::default() };
    for &v in vs {
        if v.abs() <= ZERO_THRESHOLD {
            m.zero += 1;
        } else {
            m.add(v < 0.0, index(v.abs(), schema), 1);
        }
    }
    m
}

#[test]
fn recorded_counts_read_back_at_the_declared_schema() {
    let spec = NativeBuckets::new(3, 64);
    let s = slots(spec);
    let vs = [0.0, -0.0, 1e-320, -1.5, 1.5, 1.5, 2.0, 3.0, -1e6, 1e6, 0.001];
    for v in vs {
        unsafe { record(s.as_ptr(), spec, v) };
    }
    let read = NativeCounts::read(&s, spec);
    assert_eq!(read, NativeCounts { max_buckets: 64, ..model(&vs, 3) });
    assert_eq!(read.total(), vs.len() as u64);
    assert_eq!(read.zero, 3);
}

#[test]
fn a_full_table_spills_to_schema_minus_4_and_nothing_is_lost() {
    let spec = NativeBuckets::new(2, 8);
    let s = slots(spec);
    let vs = values(11, 3000);
    for &v in &vs {
        unsafe { record(s.as_ptr(), spec, v) };
    }
    let read = NativeCounts::read(&s, spec);
    assert_eq!(read.schema, -4);
    assert_eq!(read, NativeCounts { max_buckets: 8, ..model(&vs, -4) });
    assert_eq!(read.total(), vs.len() as u64);
}

#[test]
fn merge_and_limit_are_exact() {
    let spec = NativeBuckets::new(5, 400);
    let (a, b) = (values(1, 500), values(2, 500));
    let (sa, sb) = (slots(spec), slots(NativeBuckets::new(3, 400)));
    a.iter().for_each(|v| unsafe { record(sa.as_ptr(), spec, *v) });
    b.iter().for_each(|v| unsafe { record(sb.as_ptr(), NativeBuckets::new(3, 400), *v) });
    let mut merged = NativeCounts::read(&sa, spec);
    merged.merge(&NativeCounts::read(&sb, NativeBuckets::new(3, 400)));
    let all: Vec<f64> = a.iter().chain(&b).copied().collect();
    assert_eq!(merged, model(&all, merged.schema));
    assert!(merged.schema <= 3);
    merged.max_buckets = 20;
    let limited = merged.limited();
    let mut all_model = model(&all, limited.schema);
    all_model.max_buckets = 20;
    assert!(limited.positive.len() + limited.negative.len() <= 20 || limited.schema == MIN_SCHEMA);
    assert_eq!(limited, all_model);
    assert_eq!(limited.total(), all.len() as u64);
}

#[test]
fn written_counts_read_back() {
    let spec = NativeBuckets::new(1, 4);
    let vs = values(5, 200);
    let counts = NativeCounts { max_buckets: 4, ..model(&vs, 4) };
    let mut raw = vec![0u64; spec.width()];
    counts.write(&mut raw, spec);
    let back: Vec<AtomicU64> = raw.into_iter().map(AtomicU64::new).collect();
    let read = NativeCounts::read(&back, spec);
    let mut want = counts.clone();
    want.reduce_to(read.schema);
    assert_eq!(read, want);
    assert_eq!(read.total(), vs.len() as u64);
}

#[test]
fn hostile_slots_never_panic() {
    let spec = NativeBuckets::new(8, 4);
    let raw: Vec<AtomicU64> = (0..spec.width() as u64)
        .map(|i| AtomicU64::new(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | (i % 3) << 63))
        .collect();
    let read = NativeCounts::read(&raw, spec);
    let _ = (read.limited(), read.total(), NativeCounts::spans(&read.positive));
}

#[test]
fn spans_and_deltas() {
    let side: BTreeMap<i32, u64> = [(-2, 3), (-1, 1), (3, 4), (4, 4), (10, 1)].into_iter().collect();
    let (spans, deltas) = NativeCounts::spans(&side);
    assert_eq!(spans, [(-2, 2), (3, 2), (5, 1)]);
    assert_eq!(deltas, [3, -2, 3, 0, -3]);
}

/// Threads claiming table entries at once never lose a count nor put one
/// under another bucket's key, whether their buckets fit the table or
/// spill to schema -4.
#[test]
fn racing_threads_lose_nothing() {
    for capacity in [3, 64] {
        let spec = NativeBuckets::new(4, capacity);
        let s = slots(spec);
        let fits = |v: f64| if v.is_finite() { 0.5 + v.abs().fract() * 1.5 } else { 1.0 };
        let streams: Vec<Vec<f64>> = (0..4)
            .map(|t| values(100 + t, 5000).into_iter().map(|v| if capacity == 3 { v } else { fits(v) }).collect())
            .collect();
        std::thread::scope(|scope| {
            for stream in &streams {
                let s = &s;
                scope.spawn(move || stream.iter().for_each(|v| unsafe { record(s.as_ptr(), spec, *v) }));
            }
        });
        let all: Vec<f64> = streams.concat();
        let read = NativeCounts::read(&s, spec);
        assert_eq!(read, NativeCounts { max_buckets: capacity, ..model(&all, read.schema) }, "capacity {capacity}");
        assert_eq!(read.total(), all.len() as u64);
        // 0.5 to 2 is 32 buckets at schema 4: they fit a table of 64.
        assert_eq!(read.schema, if capacity == 3 { MIN_SCHEMA } else { 4 });
    }
}

/// Two threads that start together and claim entries for different
/// buckets at the same moment: each count stays under its own bucket's
/// key.
#[test]
fn simultaneous_claims_keep_their_keys() {
    use std::sync::atomic::AtomicUsize;
    let spec = NativeBuckets::new(0, 4);
    for round in 0..1000 {
        let s = slots(spec);
        let ready = AtomicUsize::new(0);
        let streams: Vec<Vec<f64>> =
            (0..2).map(|t| (0..4).map(|k| 2f64.powi((t * 5 + k * 3 + round) % 17 - 8)).collect()).collect();
        std::thread::scope(|scope| {
            for stream in &streams {
                let (s, ready) = (&s, &ready);
                scope.spawn(move || {
                    // Both spin until both are running, then record at once.
                    ready.fetch_add(1, Ordering::SeqCst);
                    while ready.load(Ordering::SeqCst) < 2 {
                        std::hint::spin_loop();
                    }
                    stream.iter().for_each(|v| unsafe { record(s.as_ptr(), spec, *v) });
                });
            }
        });
        let all: Vec<f64> = streams.concat();
        let read = NativeCounts::read(&s, spec);
        assert_eq!(read, NativeCounts { max_buckets: 4, ..model(&all, read.schema) }, "round {round}");
    }
}
