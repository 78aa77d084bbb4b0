#!/usr/bin/env bash
# The untied soft head's lm_head and mixture, ms per decode step (median over a
# `soft-decode --repeats 3` run), for the commits given, each built with timers added to
# backend-cpu/src/soft_head.rs (below) and run in turn ROUNDS times. The figures "the mixture
# inside the decode loop" of docs/BENCHMARKS.md. Needs a release build's time per commit.
#   tools/kernel-probes/mixture_in_loop.sh MODEL_DIR ROUNDS COMMIT...
set -euo pipefail
model=$1; rounds=$2; shift 2
# Timers around the lm_head and the mixture pass (lines every version since 8f72cbe has, in
# their two forms, after and before cb3762d moved the pass into scratch buffers: the first form
# present is used, and the old anchors are in the new code too).
edits=$(cat <<'PY'
[
    ("    let source = if std::ptr::eq(head, table) {",
     "    let tl = std::time::Instant::now();\n    let source = if std::ptr::eq(head, table) {"),
    [("            partial.fill(0.0);\n",
      "            partial.fill(0.0);\n            let t_lm = tl.elapsed().as_secs_f64();\n            let t0 = std::time::Instant::now();\n"),
     ("    partial\n        .par_chunks_mut(rows * d)",
      "    let t_lm = tl.elapsed().as_secs_f64();\n    let t0 = std::time::Instant::now();\n    partial\n        .par_chunks_mut(rows * d)")],
    [("            combine(mix, ids, partial, stats, chunks, rows, d, inv_tau);",
      "            eprintln!(\"MIXT {:.3} {:.3}\", t_lm * 1e3, t0.elapsed().as_secs_f64() * 1e3);\n            combine(mix, ids, partial, stats, chunks, rows, d, inv_tau);"),
     ("    for r in 0..rows {\n        // The row's maximum",
      "    eprintln!(\"MIXT {:.3} {:.3}\", t_lm * 1e3, t0.elapsed().as_secs_f64() * 1e3);\n    for r in 0..rows {\n        // The row's maximum")],
]
PY
)
source "$(dirname "$0")/worktrees.sh"
build_patched "$edits" backend-cpu/src/soft_head.rs "$@"
for r in $(seq "$rounds"); do
  for c in "$@"; do
    "$work/$c/target/release/softcot" bench --model "$model" --workload soft-decode --repeats 3 2>&1 >/dev/null |
      grep MIXT | python3 -c "import sys, statistics as st
v = [[float(x) for x in l.split()[1:]] for l in sys.stdin]
print('$c', len(v), 'steps: lm_head %.3f ms, mixture %.3f ms' % (st.median(x[0] for x in v), st.median(x[1] for x in v)))"
  done
done
