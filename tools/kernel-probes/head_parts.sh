#!/usr/bin/env bash
# The untied fused soft head of 8 rows in parts, median ms per call over `softcot bench --workload
# head-products --batch 8 --repeats 10`: the lm_head pass, the mixture pass (wall), within it the
# chunks' exps and their transposition and the tiled mixture (each summed over the tasks, so over
# both threads), and the combination of the chunks; for the commits given (from cb3762d on), each
# built with timers added to backend-cpu/src/soft_head.rs (below) and run in turn ROUNDS times.
# The figures "where a soft step's extra time goes" of docs/BENCHMARKS.md (twelfth session).
#   tools/kernel-probes/head_parts.sh MODEL_DIR ROUNDS COMMIT...
set -euo pipefail
model=$1; rounds=$2; shift 2
edits=$(cat <<'PY'
[
    ("    let source = if std::ptr::eq(head, table) {",
     "    let tl = std::time::Instant::now();\n    let source = if std::ptr::eq(head, table) {"),
    ("            partial.fill(0.0);\n",
     "            partial.fill(0.0);\n            let t_lm = tl.elapsed().as_secs_f64();\n            let t0 = std::time::Instant::now();\n            EXPS.store(0, Relaxed);\n            MIX.store(0, Relaxed);\n"),
    ("                    let (at, e) = buf.split_at_mut(rows * NN_K_CHUNK);\n",
     "                    let (at, e) = buf.split_at_mut(rows * NN_K_CHUNK);\n                    let te = std::time::Instant::now();\n"),
    ("                    tiled.mix_chunk(ci, at, rows, live, part);\n",
     "                    let tm = std::time::Instant::now();\n                    EXPS.fetch_add((tm - te).as_nanos() as u64, Relaxed);\n                    tiled.mix_chunk(ci, at, rows, live, part);\n                    MIX.fetch_add(tm.elapsed().as_nanos() as u64, Relaxed);\n"),
    ("            combine(mix, ids, partial, stats, chunks, rows, d, inv_tau);\n",
     "            let t_mix = t0.elapsed().as_secs_f64();\n            let tc = std::time::Instant::now();\n            combine(mix, ids, partial, stats, chunks, rows, d, inv_tau);\n            eprintln!(\"PARTS {:.3} {:.3} {:.3} {:.3} {:.3}\", t_lm * 1e3, t_mix * 1e3, EXPS.load(Relaxed) as f64 / 1e6, MIX.load(Relaxed) as f64 / 1e6, tc.elapsed().as_secs_f64() * 1e3);\n"),
    ("#[cfg(test)]\nmod tests {",
     "use std::sync::atomic::{AtomicU64, Ordering::Relaxed};\nstatic EXPS: AtomicU64 = AtomicU64::new(0);\nstatic MIX: AtomicU64 = AtomicU64::new(0);\n\n#[cfg(test)]\nmod tests {"),
]
PY
)
source "$(dirname "$0")/worktrees.sh"
build_patched "$edits" backend-cpu/src/soft_head.rs "$@"
for r in $(seq "$rounds"); do
  for c in "$@"; do
    "$work/$c/target/release/softcot" bench --model "$model" --workload head-products --batch 8 --repeats 10 2>&1 >/dev/null |
      grep '^PARTS' | python3 -c "import sys, statistics as st
v = [[float(x) for x in l.split()[1:]] for l in sys.stdin]
m = [st.median(x[i] for x in v) for i in range(5)]
print('$c', len(v), 'calls: lm_head %.2f, mixture pass %.2f (exps %.2f, mix_chunk %.2f, summed over tasks), combine %.3f ms' % tuple(m))"
  done
done
