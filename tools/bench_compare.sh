#!/usr/bin/env bash
# Runs softcot bench and shared/tools/pytorch_bench.py alternately on the same checkpoint, ROUNDS
# times, and prints one line per measurement (this machine drifts 10-25% between runs: compare
# within a round).
#   tools/bench_compare.sh MODEL_DIR [ROUNDS]     (needs a release build and torch + transformers)
set -euo pipefail
model=${1:?model dir}; rounds=${2:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
sc=${SOFTCOT:-$here/target/release/softcot}
pt="python3 $here/../shared/tools/pytorch_bench.py --model $model"
# The median of a summary metric, unrounded (a wall time of ~0.5 s rounded to 0.1 s first would
# quantize the rate derived from it, as this script did before 2026-12-01).
med() { python3 -c "import sys,json
for l in sys.stdin:
    r=json.loads(l)
    if r.get('kind')=='summary' and r['metric']=='$1': print(r['median'])"; }
for r in $(seq "$rounds"); do
  echo "round $r: $(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg)"
  echo "  softcot prefill      $($sc bench --model "$model" --workload prefill --repeats 5 --format json | python3 -c 'import sys,json; print(round(json.load(sys.stdin)["tokens_per_s"]["median"],1))') tok/s"
  w1=$($pt --workload W1 --repeats 3 2>/dev/null)
  pre=$(echo "$w1" | med prefill_wall_s)
  echo "  pytorch prefill      $(python3 -c "print(round(8*64/$pre,1))") tok/s"
  echo "  softcot decode       $($sc bench --model "$model" --workload decode --repeats 3 --format json | python3 -c 'import sys,json; print(round(json.load(sys.stdin)["tokens_per_s"]["median"],1))') tok/s"
  echo "  pytorch generate     $(echo "$w1" | med generate_tok_per_s | xargs printf '%.1f') tok/s"
  echo "  softcot soft-decode  $($sc bench --model "$model" --workload soft-decode --repeats 3 --format json | python3 -c 'import sys,json; print(round(json.load(sys.stdin)["tokens_per_s"]["median"],1))') tok/s"
  echo "  pytorch W3 (soft/hard manual loops)"; $pt --workload W3 --repeats 3 2>/dev/null | python3 -c "import sys,json
for l in sys.stdin:
    r=json.loads(l)
    if r.get('kind')=='summary': print('    ', r['metric'], round(r['median'],2), r['unit'])"
  echo "  softcot train-step   $($sc bench --model "$model" --workload train-step --repeats 3 --format json | python3 -c 'import sys,json; r=json.load(sys.stdin); print(round(r["tokens_per_s"]["median"],1), "tok/s", round(r["gflops"],1), "GFLOP/s rss", round(r["peak_rss_mib"]), "MiB")')"
  echo "  pytorch train-step   $($pt --workload W2 --repeats 2 2>/dev/null | med train_tok_per_s | xargs printf '%.1f') tok/s"
  echo "  softcot matmul 2048  $($sc bench --workload matmul --repeats 3 --format json | python3 -c 'import sys,json; print(round(json.load(sys.stdin)["gflops"]["median"],1))') GFLOP/s"
  echo "  pytorch matmul 2048  $($pt --workload MATMUL --repeats 3 2>/dev/null | python3 -c "import sys,json
for l in sys.stdin:
    r=json.loads(l)
    if r.get('kind')=='summary': print(round(r['median'],1), r['unit'])" | head -1)"
done
