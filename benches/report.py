"""Rewrites BENCHMARKS.md's generated blocks and benches/plots/*.svg from
one run of benches/run.sh, and from nothing else:

    python3 benches/report.py TARGET_DIR REPO_ROOT

It reads criterion's medians (TARGET_DIR/criterion/*/*/new/) and the
figures the benches wrote beside them (TARGET_DIR/promshard-bench/*.jsonl,
meta.txt, load.txt, durations.txt). A figure the run did not produce is
written as "not measured", never carried over. Standard library only.

Each block sits between `<!-- BEGIN name -->` and `<!-- END name -->` in
BENCHMARKS.md; everything outside the blocks is prose that quotes no
figure.
"""

import json
import math
import os
import re
import statistics
import sys

NOISE = 1.15  # differences under 15% are within the shared machine's noise
LOADED_ABOVE = 1.5  # median 1-minute load average that makes a run "loaded"

target, root = sys.argv[1], sys.argv[2]
out_dir = os.path.join(target, "promshard-bench")

# ---------------------------------------------------------------------------
# Inputs


def criterion_medians():
    """{(group, function): median ns per iteration} of this run."""
    medians = {}
    base = os.path.join(target, "criterion")
    for dirpath, _dirs, files in os.walk(base):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            estimates = json.load(f)
        medians[(bench["group_id"], bench["function_id"])] = estimates["median"]["point_estimate"]
    return medians


def jsonl(name):
    path = os.path.join(out_dir, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def keyvalues(name):
    path = os.path.join(out_dir, name)
    values = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    values[k] = v
    return values


def durations():
    path = os.path.join(out_dir, "durations.txt")
    result = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, seconds = line.split()
                result[name] = int(seconds)
    return result


def loads():
    path = os.path.join(out_dir, "load.txt")
    samples = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    samples.append(float(parts[1]))
    return samples


C = criterion_medians()
MEMORY = jsonl("memory.jsonl")
SCRAPE = jsonl("scrape.jsonl")
PYTHON = {r["case"]: r for r in jsonl("python.jsonl")}
GZIP = jsonl("gzip.jsonl")
META = keyvalues("meta.txt")
DURATIONS = durations()
LOADS = loads()
LOADED = bool(LOADS) and statistics.median(LOADS) > LOADED_ABOVE

NA = "not measured"

# ---------------------------------------------------------------------------
# Formatting


def t(ns):
    """An absolute time, or nothing on a loaded machine (ratios only)."""
    if ns is None:
        return NA
    if LOADED:
        return "–"
    if ns < 1_000:
        return f"{ns:.3g} ns" if ns < 100 else f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.3g} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e9:.3g} s"


def x(ratio):
    if ratio is None:
        return NA
    if ratio >= 100:
        return f"{ratio:,.0f}×"
    if ratio >= 10:
        return f"{ratio:.0f}×"
    return f"{ratio:.2f}×"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def b_per_series(v):
    return NA if v is None else f"{v:,.0f} B" if v >= 100 else f"{v:.1f} B"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


# Links to the code of each row: the line of its `bench_function("name"`
# (or of the named anchor) in the bench source, found after the line that
# names its group.
SOURCES = {}


def source(path):
    if path not in SOURCES:
        with open(os.path.join(root, path)) as f:
            SOURCES[path] = f.read().split("\n")
    return SOURCES[path]


def code(path, function, after=None):
    lines = source(path)
    start = 0
    if after:
        for i, line in enumerate(lines):
            if after in line:
                start = i
                break
    if function == "floor":
        patterns = ["fn floor("]
    else:
        patterns = [f'bench_function("{function}"', f'add("{function}"', f'"{function}"', function]
    for pattern in patterns:
        for i in range(start, len(lines)):
            if pattern in lines[i]:
                return f"[code]({path}#L{i + 1})"
    for pattern in patterns:
        for i in range(len(lines)):
            if pattern in lines[i]:
                return f"[code]({path}#L{i + 1})"
    return f"[code]({path})"


# ---------------------------------------------------------------------------
# Hot paths

HOT = "benches/hot_path.rs"

# (group, floor variant used for "× bare atomic", rows); each row:
# (function, label, fairness note). Peers run in memory mode only.
HOT_GROUPS = [
    (
        "counter_inc",
        "Counter `inc()`, no labels",
        "floor",
        [
            ("floor", "bare `AtomicU64::fetch_add(1, Relaxed)`", "the floor: one locked add on a static"),
            ("promshard", "**promshard** `REQUESTS.inc()`", "one `fetch_add` on the slot"),
            ("prometheus", "prometheus `IntCounter::inc()`", "one `fetch_add`"),
            ("prometheus_client", "prometheus-client `Counter::inc()`", "one `fetch_add`"),
            ("metrics_macro", "metrics `counter!(name).increment(1)` each call", "the macro's key is hashed and looked up in the recorder's registry on every call"),
            ("metrics_cached", "metrics handle from `counter!` kept", "one `fetch_add` behind an `Arc`"),
            ("measured", "measured `Counter::inc()`", "one `fetch_add`"),
        ],
    ),
    (
        "labelled_counter_inc",
        "Counter `inc()`, 2 enum labels, 3×3 values cycled",
        "floor_cycled",
        [
            ("floor", "bare atomic, one static", "for scale"),
            ("floor_cycled", "bare atomic, 9 statics picked by the table index", "the floor here: the same table lookup and one `fetch_add`"),
            ("promshard", "**promshard** `LABELLED.with((method, status)).inc()`", "enum labels: the slot by arithmetic, no hashing"),
            ("prometheus_with_label_values", "prometheus `with_label_values(&[m, s]).inc()`", "its README's form: hashes the strings, read-locks the map, clones the child"),
            ("prometheus_cached", "prometheus children cached in an array", "what a user can do when every value is known: `with_label_values` once per combination"),
            ("prometheus_static_metric", "prometheus-static-metric `.get(m).get(s).inc()`", "the prometheus crate's own answer for known labels (`make_static_metric!`, `label_enum`)"),
            ("prometheus_client_get_or_create", "prometheus-client `family.get_or_create(&labels).inc()`", "its README's form: a derived label struct of enums, hashed, under a read lock"),
            ("prometheus_client_cached", "prometheus-client handles from `get_or_create_owned` kept", "cached by hand"),
            ("metrics_macro", "metrics `counter!(name, \"method\" => m, \"status\" => s).increment(1)`", "its README's form: builds the key, hashes it, looks it up"),
            ("metrics_cached", "metrics handles from `counter!` kept", "cached by hand"),
            ("measured", "measured `CounterVec::inc(LabelGroup)`", "its README's form: `FixedCardinalityLabel` enums, dense storage, index by arithmetic"),
        ],
    ),
    (
        "histogram_observe",
        "Histogram `observe()`, 10 buckets, 1 label of 3 values",
        "floor",
        [
            ("floor", "bare atomic", "for scale"),
            ("hand_written_atomic", "hand-written atomic histogram", "bucket search, then 3 atomic operations (bucket, count, sum by compare-and-swap): the least a histogram with a sum can do"),
            ("promshard", "**promshard** `LATENCY.with((region,)).observe(v)`", "bucket search, 2 atomic operations (bucket, sum); the count is the buckets' total, summed at scrape"),
            ("prometheus_with_label_values", "prometheus `with_label_values(&[r]).observe(v)`", "its README's form: a map lookup, then 4 atomic operations (hot/cold shards, so a scrape sees a consistent count)"),
            ("prometheus_cached", "prometheus children cached", "the same 4 operations without the lookup"),
            ("prometheus_static_metric", "prometheus-static-metric `.get(r).observe(v)`", "the same, through the generated struct"),
            ("prometheus_client_get_or_create", "prometheus-client `get_or_create(&labels).observe(v)`", "a map lookup, then a mutex around the histogram"),
            ("prometheus_client_cached", "prometheus-client handles kept", "the mutex alone"),
            ("metrics_macro", "metrics `histogram!(name, \"region\" => r).record(v)`", "a registry lookup, then the raw value is pushed onto a queue: the bucket counting happens later, in the exporter's upkeep (here every 100 ms on another thread) or scrape, and is not in this row"),
            ("metrics_cached", "metrics handles kept", "the push alone; same deferred work"),
            ("measured", "measured `HistogramVec::observe(labels, v)`", "`FixedCardinalityLabel` enum, `Thresholds<10>`"),
        ],
    ),
    (
        "gauge_set",
        "Gauge `set(f64)`",
        "floor",
        [
            ("floor", "bare atomic `fetch_add`", "for scale: a `set` is a store, cheaper than a read-modify-write"),
            ("promshard", "**promshard** `LEVEL.set(v)`", "a plain store of the f64's bits"),
            ("prometheus", "prometheus `Gauge::set(v)`", "a plain store"),
            ("prometheus_client", "prometheus-client `Gauge<f64, AtomicU64>::set(v)`", "a swap (it returns the old value)"),
            ("metrics_cached", "metrics handle `set(v)`", "a store behind an `Arc`"),
            ("measured", "measured `FloatGauge::set(v)`", "a plain store"),
        ],
    ),
    (
        "gauge_inc_dec",
        "Gauge `inc()` then `dec()` (an in-flight count)",
        "floor",
        [
            ("floor", "bare `fetch_add` + `fetch_sub`", "the floor: two locked adds"),
            ("promshard", "**promshard** `IN_FLIGHT.inc(); IN_FLIGHT.dec()`", "promshard's gauges are f64: a compare-and-swap loop each way"),
            ("prometheus", "prometheus `IntGauge`", "an integer gauge: one `fetch_add` each way"),
            ("prometheus_f64", "prometheus `Gauge` (f64)", "the same type as promshard's: compare-and-swap each way"),
            ("prometheus_client", "prometheus-client `Gauge` (i64, its default)", "one `fetch_add` each way"),
            ("metrics_cached", "metrics handle `increment(1.0)`, `decrement(1.0)`", "f64: compare-and-swap each way"),
            ("measured", "measured `Gauge` (i64)", "one `fetch_add` each way"),
        ],
    ),
    (
        "counter_inc_exemplar",
        "Counter `inc()` with exemplars",
        "floor",
        [
            ("floor", "bare atomic", "for scale"),
            ("promshard", "**promshard** `REQUESTS.inc()`, a counter without exemplars", "one `fetch_add`"),
            ("promshard_exemplars_enabled", "**promshard** `inc()` on a counter declared with `exemplars`", "the same `fetch_add`: the exemplar slots are only touched by `inc_with_exemplar`"),
            ("promshard_with_exemplar", "**promshard** `inc_with_exemplar(&[(\"trace_id\", id)])`", "the add, the wall clock, a try-lock on the series' exemplar seqlock, the labels written into its slots"),
            ("prometheus_client_with_exemplar", "prometheus-client `CounterWithExemplar::inc_by(1, Some(labels), Some(now))`", "the add under a lock that also keeps a clone of the label set"),
        ],
    ),
    (
        "native_observe",
        "Native histogram `observe()` (values over 6 powers of ten, about 160 buckets)",
        "floor",
        [
            ("floor", "bare atomic", "for scale"),
            ("promshard_native", "**promshard** `native(3, 160)` `observe(v)`", "bucket index from the float's exponent and mantissa, the entry found in a fixed table (claimed once by compare-and-swap), one add there, the sum by compare-and-swap"),
            ("promshard_native_full_table", "**promshard** native, its 160 entries all taken", "a miss marks the table full; the value is counted in the fixed schema -4 slots behind it"),
            ("promshard_classic", "**promshard** classic, 10 buckets, the same values", "for scale"),
            ("prometheus_client_native", "prometheus-client `Histogram::new_native(schema 3, 160 buckets)`", "its native histogram: buckets in a map under a lock"),
            ("prometheus_client_classic", "prometheus-client classic, 10 buckets", "for scale"),
        ],
    ),
    (
        "counter_inc_2_threads",
        "One counter `inc()` from 2 threads at once (time per increment per thread)",
        "floor",
        [
            ("floor", "bare atomic, 2 threads", "the floor: the cache line moves between the cores at every add"),
            ("promshard", "**promshard**", "one `fetch_add`, the same contention"),
            ("prometheus", "prometheus `IntCounter`", "one `fetch_add`"),
            ("prometheus_client", "prometheus-client `Counter`", "one `fetch_add`"),
            ("metrics_cached", "metrics handle kept", "one `fetch_add`"),
            ("measured", "measured `Counter`", "one `fetch_add`"),
        ],
    ),
]


def hot_tables():
    parts = []
    for group, title, floor_name, rows in HOT_GROUPS:
        floor = C.get((group, floor_name))
        reference = REFERENCE.get(group, "promshard")
        ours = C.get((group, reference))
        floor_mmap = C.get((group + "_mmap", floor_name))
        ours_mmap = C.get((group + "_mmap", "promshard"))
        body = []
        for function, label, note in rows:
            ns = C.get((group, function))
            # A peer's row is set against the promshard row doing the same work.
            mine = C.get((group, COUNTERPART.get((group, function), reference)))
            body.append([label, t(ns), x(ratio(ns, floor)), x(ratio(ns, mine)), code(HOT, function, f'"{group}{{'), note])
            mmap = C.get((group + "_mmap", function))
            if function.startswith("promshard_") and mmap is not None:
                body.append(
                    [
                        f"{label}, multiprocess mode",
                        t(mmap),
                        x(ratio(mmap, floor_mmap)),
                        x(ratio(mmap, ours)),
                        code(HOT, "in_shard_process"),
                        "the same in a forked child recording into its shard",
                    ]
                )
            if function == "promshard":
                body.append(
                    [
                        "**promshard**, multiprocess mode (slots in the shard file)",
                        t(ours_mmap),
                        x(ratio(ours_mmap, floor_mmap)),
                        x(ratio(ours_mmap, ours)),
                        code(HOT, "in_shard_process"),
                        "the same code in a forked child whose slots are an mmap'd shard file; × bare atomic against that child's own floor",
                    ]
                )
        header = ["variant", "median", f"× bare atomic ({floor_name})", "× promshard", "code", "what it does"]
        parts.append(f"### {title}\n\n" + table(header, body))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------
# Handler and layer

HANDLER = "benches/handler.rs"
LAYER = "benches/layer.rs"


def handler_table():
    rows = []
    for group, label in [("handler_sync", "sync"), ("handler_async", "async"), ("handler_sync_mmap", "sync, multiprocess"), ("handler_async_mmap", "async, multiprocess")]:
        bare = C.get((group, "bare"))
        for function, what, note in [
            ("bare", "the function, uninstrumented", "does the same work"),
            ("promshard", "**promshard** `#[instrument_handler(route, method)]`", "counter by outcome, histogram of the duration (two clock reads), in-flight gauge up and down"),
            ("promshard_function", "**promshard** `#[instrument_handler]` (a function, no HTTP labels)", "the same families for a plain function"),
            ("prometheus", "hand-written prometheus: `IntCounterVec`, `HistogramVec`, `IntGaugeVec`", "what a careful user writes: the same three families, `with_label_values` at each call, `Instant::now()`"),
        ]:
            ns = C.get((group, function))
            if ns is None:
                continue
            added = None if function == "bare" or bare is None else ns - bare
            rows.append(
                [
                    label,
                    what,
                    t(ns),
                    x(ratio(ns, bare)),
                    "–" if added is None else (t(added) if not LOADED else x(ratio(added, C.get(("counter_inc", "floor")))) + " the bare atomic"),
                    code(HANDLER, function),
                    note,
                ]
            )
    return table(["mode", "variant", "median", "× bare call", "added per call", "code", "what it records"], rows)


def layer_table():
    rows = []
    for group, label in [("layer", "memory"), ("layer_mmap", "multiprocess")]:
        bare = C.get((group, "bare"))
        ours = C.get((group, "promshard"))
        for function, what in [
            ("bare", "axum router, no layer"),
            ("promshard", "**promshard** `http_layer!()`"),
            ("promshard_attribute", "**promshard** layer + `#[instrument_handler]` on the handler"),
            ("axum_prometheus", "axum-prometheus `PrometheusMetricLayer`"),
        ]:
            ns = C.get((group, function))
            if ns is None:
                continue
            rows.append([label, what, t(ns), x(ratio(ns, bare)), x(ratio(ns, ours)), code(LAYER, function)])
    return table(["mode", "variant", "median per request", "× bare router", "× promshard", "code"], rows)


# ---------------------------------------------------------------------------
# Encoding and memory

ENCODE = "benches/encode/mod.rs"
SIZES = [("1k", 1_000), ("100k", 100_000), ("1m", 1_000_000)]
ENCODERS = [
    ("promshard", "**promshard** `encode_into`, memory mode", "one buffer kept between scrapes; label text rendered once at layout, copied per line; includes its process metrics"),
    ("promshard_fresh_vec", "**promshard** `encode()` (a fresh `Vec` each scrape)", ""),
    ("promshard_mmap", "**promshard**, multiprocess mode (merge + encode)", "reads and merges the directory's shards (here one) first"),
    ("prometheus", "prometheus `gather()` + `TextEncoder`", "`gather` snapshots every series into protobuf structs and sorts them"),
    ("prometheus_client", "prometheus-client `text::encode`", "formats label values at every scrape"),
    ("measured", "measured `collect_group_into`", "lasso-interned label values, storage chosen by `with_label_set`"),
    ("metrics_exporter_prometheus", "metrics-exporter-prometheus `render_to_write`", "snapshots, groups and sorts the registry's keys at every scrape"),
]
PEER_ENCODERS = ["prometheus", "prometheus_client", "measured", "metrics_exporter_prometheus"]


def per_series(function, size):
    ns = C.get((f"encode_{size}", function))
    series = dict(SIZES)[size]
    return None if ns is None else ns / series


def fixed_part():
    """What a promshard scrape costs whatever its series: the 1k scrape
    less 1,000 times the cost of one more series, from the 1k and 100k
    runs."""
    small, large = C.get(("encode_1k", "promshard")), C.get(("encode_100k", "promshard"))
    if small is None or large is None:
        return None
    marginal = (large - small) / (100_000 - 1_000)
    fixed = small - 1_000 * marginal
    return fixed if 0 < fixed < small else None


def encode_table():
    header = ["library"]
    for size, n in SIZES:
        header += [f"{n:,} series: per series" if not LOADED else f"{n:,} series", "÷ promshard"]
    header += ["code", "what a scrape does"]
    rows = []
    for function, label, note in ENCODERS:
        row = [label]
        for size, _ in SIZES:
            v = per_series(function, size)
            ours = per_series("promshard", size)
            row += [t(v), x(ratio(v, ours))]
        row += [code(ENCODE, function), note]
        rows.append(row)
    growth = []
    for function, label, _ in ENCODERS:
        a, b2, c2 = (C.get((f"encode_{s}", function)) for s, _ in SIZES)
        growth.append([label, x(ratio(b2, a)), x(ratio(c2, b2))])
    return (
        table(header, rows)
        + "\n\nGrowth of the time of one scrape (100× the series each step; 100× is linear):\n\n"
        + table(["library", "1k → 100k", "100k → 1M"], growth)
        + "\n\n"
        + gzip_table()
    )


def gzip_figures():
    for r in GZIP:
        if r["size"] == "100k":
            return r
    return None


def gzip_table():
    plain = C.get(("encode_100k", "promshard_fresh_vec"))
    level_1 = C.get(("encode_100k", "promshard_gzip"))
    level_6 = C.get(("encode_100k", "promshard_gzip_level_6"))
    g = gzip_figures()
    share = (lambda n: NA) if g is None else (lambda n: f"{100 * n / g['text_bytes']:.1f}% of the text")
    proto = C.get(("encode_100k", "promshard_protobuf"))
    proto_gzip = C.get(("encode_100k", "promshard_protobuf_gzip"))
    p = next((r for r in GZIP if r["size"] == "100k_protobuf"), None)
    pshare = (lambda n: NA) if p is None else (lambda n: f"{100 * n / p['text_bytes']:.1f}% of the text")
    rows = [
        ["**promshard** `encode()`, plain text", t(plain), "1.00×", share(g["text_bytes"]) if g else NA, code(ENCODE, "promshard_fresh_vec")],
        ["**promshard**, gzip as sent (`MetricsResponse`, promshard's level)", t(level_1), x(ratio(level_1, plain)), share(g["sent_bytes"]) if g else NA, code(ENCODE, "promshard_gzip")],
        ["the same at gzip's default level 6", t(level_6), x(ratio(level_6, plain)), share(g["level_6_bytes"]) if g else NA, code(ENCODE, "promshard_gzip_level_6")],
        ["**promshard** `encode(Format::Protobuf)`", t(proto), x(ratio(proto, plain)), pshare(p["protobuf_bytes"]) if p else NA, code(ENCODE, "promshard_protobuf")],
        ["**promshard** protobuf, gzip as sent", t(proto_gzip), x(ratio(proto_gzip, plain)), pshare(p["sent_bytes"]) if p else NA, code(ENCODE, "promshard_protobuf_gzip")],
    ]
    return "A scrape asking for gzip (Prometheus always does), and the protobuf exposition, 100,000 series:\n\n" + table(
        ["scrape", "median", "× plain encoding", "bytes", "code"], rows
    )


MEMORY_ROWS = [
    ("promshard", "memory", "**promshard**, memory mode", "the slots, and each series' label text rendered once for the scrape"),
    ("promshard", "shard_file", "**promshard** shard file (multiprocess mode)", "the file every process maps: header, schema with each label value once, the slots"),
    ("promshard", "shard_heap", "**promshard** heap beside the shard (multiprocess mode)", "the label text rendered for the scrape, as in memory mode"),
    ("prometheus", "memory", "prometheus", "a child per series in a hash map: label pairs as owned `String`s, the protobuf label structs"),
    ("prometheus_client", "memory", "prometheus-client", "a hash map of label struct (two `&'static str` here) → `Arc` counter"),
    ("measured", "memory", "measured", "label values interned once each; series in a sharded map of index pairs"),
    ("metrics_exporter_prometheus", "memory", "metrics-exporter-prometheus", "a registry of keys (name + labels) → `Arc` atomics, plus its generation tracking"),
]


def memory_lookup(library, mode, size):
    for r in MEMORY:
        if r["library"] == library and r["mode"] == mode and r["size"] == size:
            return r["bytes_per_series"]
    return None


def memory_table():
    rows = []
    for library, mode, label, note in MEMORY_ROWS:
        row = [label]
        for size, _ in SIZES:
            row.append(b_per_series(memory_lookup(library, mode, size)))
        if library == "promshard":
            anchor = "pub fn run<" if mode == "memory" else "multiprocess::init(&dir)"
        else:
            anchor = {"metrics_exporter_prometheus": "fn metrics_exporter("}.get(library, f"fn {library}(")
        row += [code(ENCODE, "held_by(|| {", anchor), note]
        rows.append(row)
    header = ["what", "1,000 series", "100,000 series", "1,000,000 series", "code", "what it holds"]
    return table(header, rows)


# ---------------------------------------------------------------------------
# Scrapes

WORKERS = [1, 8, 32, 128]


def python_scrape(size, name):
    for r in SCRAPE:
        if r.get("kind") == "python" and r.get("size") == size and r.get("name") == name:
            return r["ms"] * 1e6
    return None


def scrape_rows():
    """[(size, workers, name, promshard ns, python ns)]"""
    rows = []
    for size in ["1k", "10k"]:
        for w in WORKERS:
            name = f"{w}_workers"
            rows.append((size, w, name, C.get((f"scrape_{size}", name)), python_scrape(size, name)))
        if size == "1k":
            name = "32_workers_2000_dead"
            rows.append((size, 32, name, C.get((f"scrape_{size}", name)), python_scrape(size, name)))
    return rows


def dead_ratio():
    for r in SCRAPE:
        if r.get("kind") == "dead_ratio":
            return r
    return None


def scrape_table():
    rows = []
    for size, w, name, ours, py in scrape_rows():
        series = {"1k": 1004, "10k": 10_000}[size] * w
        first = C.get((f"scrape_{size}", "1_workers"))
        what = f"{w} workers × {'1,004' if size == '1k' else '10,000'} series" + (" + 2,000 dead workers (folded into the archive; Python: 2,032 files)" if "dead" in name else "")
        rows.append([what, f"{series:,}", t(ours), x(ratio(ours, first)), t(py), x(ratio(py, ours)), code("benches/support/mod.rs", "bench_dir(&mut c, &group")])
    table_text = table(["directory", "series merged", "promshard", "promshard ÷ its 1 worker", "Python", "Python ÷ promshard", "code"], rows)
    d = dead_ratio()
    if d:
        table_text += (
            f"\n\nWith 2,000 dead workers folded into the archive ({d['files']} files), a scrape of the 32 live workers' "
            f"directory costs {x(d['dead_ns'] / d['none_ns'])} the scrape of the same 32 workers without them "
            f"(medians of {d['rounds']} scrapes of each, interleaved"
            + ("" if LOADED else f": {t(d['dead_ns'])} against {t(d['none_ns'])}")
            + ")."
        )
    return table_text


def scrape_python_table():
    rows = []
    records = [r for r in SCRAPE if r.get("kind") == "python_pool"]
    if not records:
        return NA
    base = records[0]
    for r in records:
        py = r.get("python_ms")
        py0 = base.get("python_ms")
        rows.append(
            [
                r["name"].replace("_", " "),
                f"{r['files']:,}",
                t(r["median_ns"]),
                x(r["median_ns"] / base["median_ns"]),
                t(None if py is None else py * 1e6),
                x(None if py is None or py0 is None else py / py0),
                code("benches/scrape_python.rs", "median_scrapes(["),
            ]
        )
    return table(["Python pool directory", "files", "promshard serve (median)", "÷ no dead", "Python collector (median of a few)", "÷ no dead", "code"], rows)


# ---------------------------------------------------------------------------
# Python's recording

PY_ROWS = [
    ("counter_inc", "`c.inc()`, no labels", "counter_inc"),
    ("labelled_counter_inc", "`c.labels(m, s).inc()`, 3×3", "labelled_counter_inc"),
    ("labelled_counter_inc_cached", "child from `labels()` kept, `.inc()`", "labelled_counter_inc"),
    ("histogram_observe", "`h.labels(r).observe(v)`, 10 buckets", "histogram_observe"),
    ("gauge_set", "`g.set(v)`, mode `livesum`", "gauge_set"),
]


def python_table():
    if not PYTHON:
        return NA + " (no Python with prometheus_client: see the command above)"
    rows = []
    for case, label, group in PY_ROWS:
        r = PYTHON.get(case)
        if r is None:
            continue
        ns = r["ns_without_loop"]
        rows.append([label, t(ns), x(ratio(ns, C.get((group, "floor")))), x(ratio(ns, C.get((group, "promshard")))), code("benches/python_hot_path.py", f"def {case}():")])
    first = next(iter(PYTHON.values()))
    return (
        table(["operation", "per operation", "× Rust bare atomic", "× promshard (memory mode)", "code"], rows)
        + f"\n\nPython {first['python']}, prometheus_client {first['prometheus_client']}, multiprocess mode; median of {first['median_of']} runs of {first['ops']:,} operations, less the same loop recording nothing."
    )


# ---------------------------------------------------------------------------
# Targets


def verdict(met, miss_text):
    return "**met**" if met else f"**missed**: {miss_text}"


def targets_table():
    rows = []
    # 1. labelled counter inc <= 1.1x the bare atomic, both modes.
    for group, mode in [("labelled_counter_inc", "memory"), ("labelled_counter_inc_mmap", "multiprocess")]:
        r = ratio(C.get((group, "promshard")), C.get((group, "floor_cycled")))
        rows.append([f"labelled counter inc ≤ 1.1× the bare atomic ({mode})", x(r), NA if r is None else verdict(r <= 1.1, f"{(r / 1.1 - 1) * 100:.0f}% over")])
    # 2. histogram observe faster than every peer's fastest path.
    ours = C.get(("histogram_observe", "promshard"))
    peers = {f: C.get(("histogram_observe", f)) for f, *_ in HOT_GROUPS[2][3] if f not in ("floor", "hand_written_atomic", "promshard")}
    peers = {k: v for k, v in peers.items() if v is not None}
    if ours is not None and peers:
        best = min(peers, key=peers.get)
        r = peers[best] / ours
        rows.append(["histogram observe faster than every peer's fastest path", f"fastest peer ({best}) takes {x(r)} promshard's time", verdict(r > 1, f"{best} is {(1 / r - 1) * 100:.0f}% faster")])
        for group, mode in [("histogram_observe_mmap", "multiprocess")]:
            m = C.get((group, "promshard"))
            fl = C.get((group, "floor"))
            mem_floor = C.get(("histogram_observe", "floor"))
            if m is not None and fl and mem_floor:
                # Against the peers' memory-mode times, each over its own run's floor.
                r2 = (peers[best] / mem_floor) / (m / fl)
                rows.append([f"the same, promshard in {mode} mode", f"fastest peer takes {x(r2)} promshard's time (each over its own floor)", verdict(r2 > 1, f"{best} is {(1 / r2 - 1) * 100:.0f}% faster")])
    # 3. encode >= 5x faster per series than the fastest peer.
    for size, n in SIZES:
        ours = per_series("promshard", size)
        peers = {p: per_series(p, size) for p in PEER_ENCODERS}
        peers = {k: v for k, v in peers.items() if v is not None}
        if ours is None or not peers:
            rows.append([f"encode ≥ 5× faster per series than the fastest peer ({n:,} series)", NA, NA])
            continue
        best = min(peers, key=peers.get)
        r = peers[best] / ours
        miss = f"{x(r)} instead of 5×, {(1 - r / 5) * 100:.0f}% short"
        fixed = fixed_part()
        if size == "1k" and fixed is not None:
            scrape = ours * n
            beyond = (scrape - fixed) / n
            miss += (
                f". About {fixed / scrape * 100:.0f}% of promshard's 1k scrape is the part every scrape has "
                f"whatever its series (its process metrics, read from `/proc/self`, and its self-metrics; "
                f"none of the peers' rows has either), estimated from this run's 1k and 100k times; "
                f"the series beyond it are {x(peers[best] / beyond)} faster than {best}'s"
            )
        rows.append([f"encode ≥ 5× faster per series than the fastest peer ({n:,} series)", f"{x(r)} ({best})", verdict(r >= 5, miss)])
    # 4. directory scrape >= 100x faster than Python per worker.
    for size, w, name, ours, py in scrape_rows():
        if "dead" in name:
            label = f"directory scrape ≥ 100× faster than Python: 32 workers × 1k + 2,000 dead"
        else:
            label = f"directory scrape ≥ 100× faster than Python: {w} × {size}"
        r = ratio(py, ours)
        rows.append([label, x(r), NA if r is None else verdict(r >= 100, f"{x(r)} instead of 100×, {(1 - r / 100) * 100:.0f}% short")])
    # 5. 2,000 dead workers <= 1.1x none.
    d = dead_ratio()
    if d:
        r = d["dead_ns"] / d["none_ns"]
        rows.append(["scrape after 2,000 dead workers ≤ 1.1× the scrape without them", x(r), verdict(r <= 1.1, f"{(r / 1.1 - 1) * 100:.0f}% over")])
    else:
        rows.append(["scrape after 2,000 dead workers ≤ 1.1× the scrape without them", NA, NA])
    # 6. instrumented call <= 50 ns added.
    for group, mode in [("handler_sync", "sync"), ("handler_async", "async"), ("handler_sync_mmap", "sync, multiprocess"), ("handler_async_mmap", "async, multiprocess")]:
        ours, bare = C.get((group, "promshard")), C.get((group, "bare"))
        if ours is None or bare is None:
            rows.append([f"`#[instrument_handler]` call ≤ 50 ns added ({mode})", NA, NA])
            continue
        added = ours - bare
        if LOADED:
            floor = C.get(("counter_inc", "floor"))
            shown = f"{x(ratio(added, floor))} the bare atomic"
            met = added <= 50
            v = "**met**, even on the loaded machine" if met else "not met in this loaded run (inconclusive: load inflates absolute times)"
        else:
            shown = t(added)
            v = verdict(added <= 50, f"{(added / 50 - 1) * 100:.0f}% over")
        rows.append([f"`#[instrument_handler]` call ≤ 50 ns added ({mode})", shown, v])
    return table(["target", "this run", "verdict"], rows)


# ---------------------------------------------------------------------------
# Where a peer is ahead

METRICS_QUEUE = (
        "metrics-exporter-prometheus's histograms do not count buckets when a value is observed: `record` "
        "pushes the raw f64 onto a lock-free queue, and the exporter's upkeep (or the next scrape) drains it "
        "into buckets. The recording row is cheap because the work is moved, not saved: the queue grows by "
        "one f64 an observation between upkeeps, and its draining costs a thread and the scrape."
    )
SAME_F64 = (
        "an f64 behind compare-and-swap too, the same work as promshard's, so the gap "
        "is code layout and the machine's noise."
    )

WHY = {
    "gauge_inc_dec": (
        "The peers ahead use integer gauges: one `fetch_add` each way. promshard's gauges hold an f64, "
        "as Prometheus values are (a gauge may be set to a fraction or NaN), so `inc`/`dec` is a compare-and-swap "
        "loop each way, the same cost as prometheus' own f64 `Gauge` in the table above. Closing it takes an "
        "integer gauge type (a new instrument, not a local fix); until then a count that only goes up and "
        "down by whole numbers pays the f64's compare-and-swap."
    ),
    "memory": (
        "promshard keeps each series' label text rendered once, at layout, in one buffer per family "
        "(`runtime/src/encode/plan.rs`), so that a scrape copies bytes instead of formatting them: that "
        "text is most of its bytes per series, and the reason its encoding leads. measured keeps each label "
        "value once (interned) and a series as a pair of indices, and formats the text at every scrape. "
        "Keeping the text of each value once and joining two pieces per line at scrape time was tried, "
        "measured by hand beside this encoder: it made encoding markedly slower, which would have cost the "
        "encoding target. "
        "A promshard shard file costs little (its row above); it is the rendered text beside it, in each "
        "process's heap, that costs."
    ),
    "counter_inc": (
        "Every one of these does the same single `fetch_add`; a difference between them is where the "
        "compiler put the loop and the machine's noise, not work one library skips."
    ),
    "counter_inc_2_threads": (
        "Every variant does the same single `fetch_add` on one cache line that moves between the two "
        "cores; with two threads on a two-core machine shared with other work, a difference here is how "
        "often a thread was descheduled, not the library."
    ),
    "labelled_counter_inc": (
        "A cached handle is a pointer per combination, picked by the table index: the floor's own shape. "
        "promshard computes the slot from the enum indices (a multiply-add on the label values) behind the "
        "same call, and needs no handle kept by hand."
    ),
    "gauge_set": (
        "A set is a plain store in every library but prometheus-client (a swap); a difference between "
        "stores is the code around them: promshard reads its slot's address from the metric (laid out on "
        "first use), prometheus from its `Arc`."
    ),
    ("labelled_counter_inc", "measured"): (
        "the same work as promshard's on this path (the index by arithmetic on the enum values, a check that "
        "the series exists, one `fetch_add`), with each series padded to a cache line of its own; no "
        "instruction separates the two, so the gap is code layout and the machine's noise."
    ),
    ("counter_inc_exemplar", "prometheus_client_with_exemplar"): (
        "compared with promshard's `inc_with_exemplar`. Both read the wall clock, the largest single cost of either row. "
        "prometheus-client's `CounterWithExemplar::inc_by` then takes a `parking_lot` write lock, stores the label "
        "set it is given as it is (here a struct holding one `&'static str`: a pointer and a length, the trace id's "
        "text not copied) with the value and the caller's timestamp, and adds. It checks nothing: no label name rule, "
        "no 128-character limit, no repeated names (whatever it is given is what its scrape writes). promshard checks "
        "the label set against OpenMetrics' rules and copies its bytes into the series' slots (a shard file's, in "
        "multiprocess mode, where other processes read them) under a seqlock's try-lock: that check and copy are "
        "what its row pays beyond the peer's."
    ),
    ("histogram_observe", "metrics_macro"): METRICS_QUEUE,
    ("histogram_observe", "metrics_cached"): METRICS_QUEUE,
    ("gauge_inc_dec", "prometheus_f64"): SAME_F64,
    ("gauge_inc_dec", "metrics_cached"): SAME_F64,
}


# The promshard row a peer's row is compared with in "Where a peer is
# ahead", where that is not the group's `promshard` row: a peer doing the
# work of one of promshard's variants against that variant (in
# `counter_inc_exemplar`, `promshard` is the plain counter, without an
# exemplar; `native_observe` has no `promshard` row at all).
# The promshard row of a group the "× promshard" column divides by, where
# the group has no row named `promshard`.
REFERENCE = {"native_observe": "promshard_native"}

# The promshard row a peer's row is compared with, where it is not the
# group's reference: the one doing the same work.
COUNTERPART = {
    ("counter_inc_exemplar", "prometheus_client_with_exemplar"): "promshard_with_exemplar",
    ("native_observe", "prometheus_client_native"): "promshard_native",
    ("native_observe", "prometheus_client_classic"): "promshard_classic",
}


def ahead():
    notes = []
    for group, title, _floor, rows in HOT_GROUPS:
        labels = {function: label for function, label, _ in rows}
        winners = []
        whys = []
        for function, label, _ in rows:
            # promshard's own variants are not peers.
            if function in ("floor", "floor_cycled", "hand_written_atomic") or function.startswith("promshard"):
                continue
            mine = COUNTERPART.get((group, function), "promshard")
            ours = C.get((group, mine))
            ns = C.get((group, function))
            if ours is not None and ns is not None and ns * NOISE < ours:
                against = "promshard's time" if mine == "promshard" else f"the time of {labels[mine]}"
                winners.append(f"{label} ({x(ns / ours)} {against})")
                if (group, function) in WHY:
                    whys.append(f"{label}: {WHY[(group, function)]}")
                else:
                    why = WHY.get(group) or "See the row's note for what it does differently."
                    if why not in whys:
                        whys.insert(0, why)
        if winners:
            notes.append(f"- **{title}**: " + "; ".join(winners) + ". " + " ".join(whys))
    for size, _ in SIZES:
        ours = per_series("promshard", size)
        for p in PEER_ENCODERS:
            v = per_series(p, size)
            if ours is not None and v is not None and v * NOISE < ours:
                notes.append(f"- **encoding, {size} series**: {p} ({x(v / ours)} promshard's time).")
    mem_winners = []
    for size, _ in SIZES[:2]:
        ours = memory_lookup("promshard", "memory", size)
        for library, mode, label, _ in MEMORY_ROWS:
            if library == "promshard":
                continue
            v = memory_lookup(library, mode, size)
            if ours is not None and v is not None and v * NOISE < ours:
                mem_winners.append(f"{label} at {size} series ({b_per_series(v)} against {b_per_series(ours)} a series)")
    if mem_winners:
        notes.append("- **memory in memory mode**: " + "; ".join(mem_winners) + ". " + WHY["memory"])
    if not notes:
        return "No peer is ahead of promshard by more than the 15% noise margin in this run."
    return "\n".join(notes)


# ---------------------------------------------------------------------------
# The machine


def machine():
    lines = []
    lines.append(f"- Run: {META.get('date', NA)}, commit `{META.get('commit', NA)}`, `{META.get('rustc', NA)}`" + (f", criterion arguments `{META['args']}`" if META.get("args") else ""))
    lines.append(f"- Machine: {META.get('cpu', NA)}, {META.get('cores', NA)} cores, {META.get('memory', NA)}, Linux {META.get('kernel', NA)}; Python {META.get('python', NA)}")
    if LOADS:
        lines.append(
            f"- Load average (1 min) during the run, sampled every 10 s: median {statistics.median(LOADS):.1f}, "
            f"min {min(LOADS):.1f}, max {max(LOADS):.1f}."
        )
    if LOADED:
        lines.append(
            "- **The machine was loaded** (other builds and tests shared its cores): absolute times are left out "
            "and every figure is a ratio between variants measured in the same run, back to back."
        )
    if DURATIONS:
        total = DURATIONS.get("total")
        each = ", ".join(f"{k} {v} s" for k, v in DURATIONS.items() if k != "total")
        if total is not None:
            lines.append(f"- The suite took {total // 60} min {total % 60} s after building ({each}).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plots


def svg_plot(path, title, xlabel, ylabel, series, xticks):
    """A log-log line plot: series = [(name, colour, dash, [(x, y)])]."""
    w, h = 720, 440
    left, right, top, bottom = 80, 230, 40, 60
    pts = [p for _, _, _, s in series for p in s if p[1] is not None and p[1] > 0]
    if not pts:
        return False
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    if y1 == y0:
        y1 += 1
    if x1 == x0:
        x1 += 1

    def px(v):
        return left + (math.log10(v) - x0) / (x1 - x0) * (w - left - right)

    def py(v):
        return h - bottom - (math.log10(v) - y0) / (y1 - y0) * (h - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for e in range(int(y0), int(y1) + 1):
        yy = py(10**e)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{w - right}" y2="{yy:.1f}" stroke="#ddd"/>')
        label = f"1e{e}" if abs(e) > 3 else f"{10**e:g}"
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{label}</text>')
    for v in xticks:
        xx = px(v)
        out.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{h - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{xx:.1f}" y="{h - bottom + 16}" text-anchor="middle">{v:,}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 18}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text x="18" y="{(top + h - bottom) / 2}" text-anchor="middle" transform="rotate(-90 18 {(top + h - bottom) / 2})">{ylabel}</text>')
    ly = top + 10
    for name, colour, dash, s in series:
        s = [(a, b) for a, b in s if b is not None and b > 0]
        if not s:
            continue
        d = " ".join(f"{'M' if i == 0 else 'L'}{px(a):.1f},{py(b):.1f}" for i, (a, b) in enumerate(s))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        for a, b in s:
            out.append(f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="{colour}"/>')
        out.append(f'<line x1="{w - right + 15}" y1="{ly}" x2="{w - right + 40}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{w - right + 46}" y="{ly + 4}">{name}</text>')
        ly += 18
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def plots():
    os.makedirs(os.path.join(root, "benches", "plots"), exist_ok=True)
    unit = 1e6  # ms
    scale = None
    if LOADED:
        scale = C.get(("scrape_1k", "1_workers"))
    series = []
    for size, colour in [("1k", "#1f77b4"), ("10k", "#2ca02c")]:
        ours = [(w, C.get((f"scrape_{size}", f"{w}_workers"))) for w in WORKERS]
        py = [(w, python_scrape(size, f"{w}_workers")) for w in WORKERS]
        norm = (lambda v: None if v is None else v / scale) if scale else (lambda v: None if v is None else v / unit)
        series.append((f"promshard, {size} series/worker", colour, "", [(a, norm(b)) for a, b in ours]))
        series.append((f"Python, {size} series/worker", colour, "6 4", [(a, norm(b)) for a, b in py]))
    ylabel = "scrape time, × promshard's 1 worker × 1k" if scale else "scrape time (ms)"
    svg_plot(os.path.join(root, "benches", "plots", "scrape.svg"), "Directory scrape: time against live workers (log-log)", "live workers", ylabel, series, WORKERS)

    scale = C.get(("encode_1k", "promshard")) if LOADED else None
    colours = {
        "promshard": "#1f77b4",
        "promshard_mmap": "#17becf",
        "prometheus": "#d62728",
        "prometheus_client": "#ff7f0e",
        "measured": "#9467bd",
        "metrics_exporter_prometheus": "#8c564b",
    }
    series = []
    for function, colour in colours.items():
        pts = []
        for size, n in SIZES:
            v = C.get((f"encode_{size}", function))
            pts.append((n, None if v is None else (v / scale if scale else v / unit)))
        name = function.replace("_", "-").replace("promshard-mmap", "promshard (multiprocess)").replace("metrics-exporter-prometheus", "metrics-exporter")
        series.append((name, colour, "" if function.startswith("promshard") else "6 4", pts))
    ylabel = "time of one scrape, × promshard at 1k" if scale else "time of one scrape (ms)"
    svg_plot(os.path.join(root, "benches", "plots", "encode.svg"), "Text encoding: time against series (log-log)", "series", ylabel, series, [n for _, n in SIZES])


# ---------------------------------------------------------------------------
# The README's summary

PEER_NAMES = {
    "prometheus": "prometheus `IntCounter`",
    "prometheus_with_label_values": "prometheus `with_label_values`",
    "prometheus_cached": "prometheus, cached children",
    "prometheus_static_metric": "prometheus-static-metric",
    "prometheus_f64": "prometheus f64 `Gauge`",
    "prometheus_client": "prometheus-client",
    "prometheus_client_get_or_create": "prometheus-client `get_or_create`",
    "prometheus_client_cached": "prometheus-client, cached handles",
    "metrics_macro": "metrics `counter!`",
    "metrics_cached": "metrics, cached handle",
    "measured": "measured",
    "metrics_exporter_prometheus": "metrics-exporter-prometheus",
}


def fastest_peer(group):
    rows = next(r for g, _, _, r in HOT_GROUPS if g == group)
    peers = {f: C.get((group, f)) for f, *_ in rows if f not in ("floor", "floor_cycled", "promshard", "hand_written_atomic")}
    peers = {k: v for k, v in peers.items() if v is not None}
    if not peers:
        return None, None
    best = min(peers, key=peers.get)
    return best, peers[best]


def summary():
    rows = []
    for group, label, floor_name in [
        ("counter_inc", "counter inc, no labels", "floor"),
        ("labelled_counter_inc", "counter inc, 2 enum labels, 3×3", "floor_cycled"),
        ("histogram_observe", "histogram observe, 10 buckets, 1 label", "floor"),
        ("gauge_inc_dec", "gauge inc + dec", "floor"),
    ]:
        floor = C.get((group, floor_name))
        ours, mmap = C.get((group, "promshard")), C.get((group + "_mmap", "promshard"))
        best, ns = fastest_peer(group)
        rows_of_group = next(r for g, _, _, r in HOT_GROUPS if g == group)
        name = next((label for f, label, _ in rows_of_group if f == best), best)
        peer = NA if best is None else f"{name} {x(ratio(ns, floor))}"
        rows.append([label, f"{x(ratio(ours, floor))} (multiprocess {x(ratio(mmap, C.get((group + '_mmap', floor_name))))})", peer])
    for size, n in SIZES[1:2]:
        ours = per_series("promshard", size)
        peers = {p: per_series(p, size) for p in PEER_ENCODERS}
        peers = {k: v for k, v in peers.items() if v is not None}
        if ours is not None and peers:
            best = min(peers, key=peers.get)
            rows.append([f"text encoding, {n:,} series", "1×" if LOADED else f"{t(ours)} a series", f"{PEER_NAMES.get(best, best)} {x(peers[best] / ours)} promshard's time"])
    plain, level_1 = C.get(("encode_100k", "promshard_fresh_vec")), C.get(("encode_100k", "promshard_gzip"))
    g = gzip_figures()
    if plain is not None and level_1 is not None and g is not None:
        rows.append(["the same, gzipped as sent", f"{x(level_1 / plain)} the plain encoding, for {100 * g['sent_bytes'] / g['text_bytes']:.1f}% of its bytes", "–"])
    proto, proto_gzip = C.get(("encode_100k", "promshard_protobuf")), C.get(("encode_100k", "promshard_protobuf_gzip"))
    p = next((r for r in GZIP if r["size"] == "100k_protobuf"), None)
    if plain is not None and proto is not None and p is not None:
        rows.append(
            [
                "the protobuf exposition of the same",
                f"{x(proto / plain)} the text encoding, for {100 * p['protobuf_bytes'] / p['text_bytes']:.1f}% of its bytes "
                f"(gzipped as sent: {x(ratio(proto_gzip, plain))}, {100 * p['sent_bytes'] / p['text_bytes']:.1f}%)",
                "–",
            ]
        )
    ours = memory_lookup("promshard", "memory", "100k")
    shard = memory_lookup("promshard", "shard_file", "100k")
    peers = {lib: memory_lookup(lib, "memory", "100k") for lib in PEER_ENCODERS}
    peers = {k: v for k, v in peers.items() if v is not None}
    if ours is not None and peers:
        best = min(peers, key=peers.get)
        rows.append(["memory, 100,000 series", f"{b_per_series(ours)} a series (shard file: {b_per_series(shard)})", f"{PEER_NAMES.get(best, best)} {b_per_series(peers[best])}"])
    for size, w, name, ours, py in scrape_rows():
        if name == "32_workers" and size == "1k":
            rows.append(["scrape of a directory, 32 workers × 1,004 series", "1×", f"Python `MultiProcessCollector` {x(ratio(py, ours))} promshard's time"])
    d = dead_ratio()
    if d:
        rows.append(["the same after 2,000 dead workers", f"{x(d['dead_ns'] / d['none_ns'])} the scrape without them", "Python: reads every dead worker's file at every scrape"])
    ours, bare, hand = (C.get(("handler_sync", f)) for f in ("promshard", "bare", "prometheus"))
    if None not in (ours, bare, hand):
        rows.append(["`#[instrument_handler]` call", f"{x(ours / bare)} the bare call", f"hand-written prometheus {x(hand / bare)}"])
    note = "Ratios to the bare `AtomicU64::fetch_add` of the same run unless said otherwise"
    if LOADED:
        note += "; the machine was loaded, so BENCHMARKS.md gives ratios only"
    return table(["operation", "promshard", "fastest peer"], rows) + f"\n\n{note} ({META.get('date', NA)}, {META.get('cores', NA)} cores)."


# ---------------------------------------------------------------------------
# Writing BENCHMARKS.md


def main():
    path = os.path.join(root, "BENCHMARKS.md")
    with open(path) as f:
        text = f.read()
    blocks = {
        "machine": machine(),
        "targets": targets_table(),
        "ahead": ahead(),
        "hot_path": hot_tables(),
        "handler": handler_table(),
        "layer": layer_table(),
        "encode": encode_table(),
        "memory": memory_table(),
        "scrape": scrape_table(),
        "scrape_python": scrape_python_table(),
        "python": python_table(),
    }
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            sys.exit(f"report.py: BENCHMARKS.md has no block {name}")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    with open(path, "w") as f:
        f.write(text)
    readme = os.path.join(root, "README.md")
    with open(readme) as f:
        text = f.read()
    pattern = re.compile(r"(<!-- BEGIN speed -->\n).*?(<!-- END speed -->)", re.S)
    text = pattern.sub(lambda m: m.group(1) + summary() + "\n" + m.group(2), text)
    with open(readme, "w") as f:
        f.write(text)
    plots()
    print(f"report.py: wrote {path} and benches/plots/ ({'loaded machine: ratios only' if LOADED else 'idle machine'})")


main()
