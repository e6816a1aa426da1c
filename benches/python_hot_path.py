"""Recording costs of Python's prometheus_client in multiprocess mode: the
hot paths of benches/hot_path.rs, timed with `timeit`.

    PROMSHARD_PYTHON=/path/to/venv/bin/python benches/run.sh

or alone (it installs nothing; it needs prometheus_client):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install prometheus_client
    /tmp/venv/bin/python benches/python_hot_path.py

Each case runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR set to a
fresh directory, as under gunicorn) on the same inputs as the Rust
benches: the 3x3 (method, status) label values and the 30 (region,
observation) pairs, taken in turn from a list. `loop_only` times the same
loop and indexing with nothing recorded; the other cases are reported
with and without it subtracted. Prints, and with PROMSHARD_BENCH_OUT set
appends to $PROMSHARD_BENCH_OUT/python.jsonl, one JSON object per case:
the median of 5 repeats, in nanoseconds per operation.
"""

import json
import os
import statistics
from importlib.metadata import version
import sys
import tempfile
import timeit

directory = tempfile.mkdtemp(prefix="promshard-bench-python-hot-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory

try:
    from prometheus_client import Counter, Gauge, Histogram
except ImportError:
    sys.exit(
        "python_hot_path.py: prometheus_client is not installed for "
        + sys.executable
        + "; install it (pip install prometheus_client) or point PROMSHARD_PYTHON at a Python that has it"
    )

BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
OBSERVATIONS = [0.0005, 0.002, 0.004, 0.008, 0.02, 0.04, 0.08, 0.2, 0.4, 0.8]
METHODS = ["GET", "POST", "DELETE"]
STATUSES = ["ok", "not_found", "error"]
REGIONS = ["us-west", "us-east", "eu-central"]

requests = Counter("bench_requests", "Unlabelled counter.")
labelled = Counter("bench_labelled_requests", "Counter with 3x3 labels.", ["method", "status"])
latency = Histogram("bench_latency_seconds", "Histogram with 10 buckets, 3 regions.", ["region"], buckets=BUCKETS)
level = Gauge("bench_level", "Unlabelled gauge.", multiprocess_mode="livesum")

COUNTER_LABELS = [(METHODS[i // 3], STATUSES[i % 3]) for i in range(9)]
HISTOGRAM_INPUTS = [(REGIONS[i % 3], OBSERVATIONS[i % 10]) for i in range(30)]
# Long enough that one pass of a loop is a useful timing unit.
N = 90_000
counter_table = COUNTER_LABELS * (N // len(COUNTER_LABELS))
histogram_table = HISTOGRAM_INPUTS * (N // len(HISTOGRAM_INPUTS))


def loop_only():
    for m, s in counter_table:
        pass


def counter_inc():
    inc = requests.inc
    for _ in counter_table:
        inc()


def labelled_counter_inc():
    c = labelled
    for m, s in counter_table:
        c.labels(m, s).inc()


cached_children = [labelled.labels(m, s) for m, s in COUNTER_LABELS] * (N // len(COUNTER_LABELS))


def labelled_counter_inc_cached():
    for child in cached_children:
        child.inc()


def histogram_observe():
    h = latency
    for r, v in histogram_table:
        h.labels(r).observe(v)


def gauge_set():
    g = level
    for _, v in histogram_table:
        g.set(v)


CASES = [
    ("loop_only", loop_only),
    ("counter_inc", counter_inc),
    ("labelled_counter_inc", labelled_counter_inc),
    ("labelled_counter_inc_cached", labelled_counter_inc_cached),
    ("histogram_observe", histogram_observe),
    ("gauge_set", gauge_set),
]


def main():
    results = {}
    for name, f in CASES:
        f()  # creates the series and the files
        median = statistics.median(timeit.repeat(f, number=1, repeat=5))
        results[name] = median / N * 1e9
    out = os.environ.get("PROMSHARD_BENCH_OUT")
    lines = []
    for name, ns in results.items():
        line = {
            "case": name,
            "ns": ns,
            "ns_without_loop": ns - results["loop_only"] if name != "loop_only" else ns,
            "python": sys.version.split()[0],
            "prometheus_client": version("prometheus_client"),
            "ops": N,
            "median_of": 5,
        }
        lines.append(json.dumps(line))
        print("python.jsonl: " + lines[-1])
    if out:
        with open(os.path.join(out, "python.jsonl"), "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    try:
        main()
    finally:
        for name in os.listdir(directory):
            os.remove(os.path.join(directory, name))
        os.rmdir(directory)
