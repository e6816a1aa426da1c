#!/usr/bin/env bash
# Runs every benchmark and rewrites BENCHMARKS.md's tables and the plots in
# benches/plots/ from what this run measured, and nothing else:
#
#   benches/run.sh
#
# The Python comparisons use $PROMSHARD_PYTHON (else python3), which must
# have prometheus_client; this script installs nothing. For example:
#
#   python3 -m venv /tmp/venv && /tmp/venv/bin/pip install prometheus_client
#   PROMSHARD_PYTHON=/tmp/venv/bin/python benches/run.sh
#
# Without it the Python rows say "not measured". The report itself needs
# only python3's standard library. Arguments are passed to every criterion
# bench (e.g. `benches/run.sh --quick` for a rough, fast pass).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
out=$target/promshard-bench
python=${PROMSHARD_PYTHON:-python3}

# Only this run's figures: criterion keeps its past results otherwise.
rm -rf "$out" "$target/criterion"
mkdir -p "$out"
export PROMSHARD_BENCH_OUT=$out PROMSHARD_PYTHON=$python

benches=(hot_path handler layer encode_1k encode_100k encode_1m scrape scrape_wide scrape_python)
bench_args=()
for b in "${benches[@]}"; do bench_args+=(--bench "$b"); done

# Built first, so that the timed part measures benchmarks, not the compiler.
cargo bench "${bench_args[@]}" --no-run

{
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    # "+changes": the benches ran on uncommitted changes (this script's own
    # outputs aside).
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- . ':!BENCHMARKS.md' ':!README.md' ':!benches/plots' 2>/dev/null || echo '+changes')"
    echo "rustc=$(rustc --version)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cores=$(nproc)"
    echo "memory=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "python=$("$python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo none)"
    echo "args=$*"
} >"$out/meta.txt"

# The load average every 10 s while the benchmarks run.
(while true; do
    echo "$(date +%s) $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/load.txt"
    sleep 10
done) &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

start=$(date +%s)
for b in "${benches[@]}"; do
    echo "== $b (load $(cut -d' ' -f1 /proc/loadavg))"
    bench_start=$(date +%s)
    cargo bench --bench "$b" -- "$@"
    echo "$b $(($(date +%s) - bench_start))" >>"$out/durations.txt"
done
echo "== python_hot_path"
py_start=$(date +%s)
"$python" benches/python_hot_path.py || echo "python_hot_path.py failed: no Python recording figures" >&2
echo "python_hot_path $(($(date +%s) - py_start))" >>"$out/durations.txt"
echo "total $(($(date +%s) - start))" >>"$out/durations.txt"
kill "$sampler" 2>/dev/null || true

python3 benches/report.py "$target" "$root"
