#!/usr/bin/env bash
# Where a decode step's time goes, hard and soft: the head (hard: the argmax; soft: the fused soft
# head, lm_head included), the noise, and the forward pass (hard: lm_head included), median ms per
# step over a `soft-decode --repeats 3` run (THINK: soft or fuzzy), for the commits given, each built
# with timers added to core/src/think.rs (below) and run in turn ROUNDS times. The "step timers"
# figures of docs/BENCHMARKS.md. Needs a release build's time per commit.
#   tools/kernel-probes/step_timers.sh MODEL_DIR ROUNDS THINK COMMIT...
set -euo pipefail
model=$1; rounds=$2; think=$3; shift 3
# --think came with 847b5c8; soft, the default, runs on older commits too.
think_flag=(); if [ "$think" != soft ]; then think_flag=(--think "$think"); fi
# Timers around the head, the noise and the forward pass (lines every version of 2026-12-01 has;
# the argmax read-back in its two forms, before and after d655031).
edits=$(cat <<'PY'
[
    ("        if head_pending {\n            let (head, e) = (model.lm_head(), model.embed());",
     "        let t_head = std::time::Instant::now();\n        if head_pending {\n            let (head, e) = (model.lm_head(), model.embed());"),
    [("        let argmax_h = be.download_ids(&argmax_ids, n)?;",
      "        let argmax_h = be.download_ids(&argmax_ids, n)?;\n        let d_head = t_head.elapsed().as_secs_f64();\n        let t_noise = std::time::Instant::now();"),
     ("        be.download_ids_into(&argmax_ids, n, &mut argmax_h)?;",
      "        be.download_ids_into(&argmax_ids, n, &mut argmax_h)?;\n        let d_head = t_head.elapsed().as_secs_f64();\n        let t_noise = std::time::Instant::now();")],
    ("        // --- advance each row's state machine; collect the next inputs ---",
     "        let d_noise = t_noise.elapsed().as_secs_f64();\n        // --- advance each row's state machine; collect the next inputs ---"),
    ("        model.forward(be, &mut ws, &mut cache, &batch)?;\n        for &(r, _) in &next_active {",
     "        let t_fwd = std::time::Instant::now();\n        model.forward(be, &mut ws, &mut cache, &batch)?;\n        eprintln!(\"STEP {} {:.3} {:.3} {:.3}\", head_pending as u8, d_head * 1e3, d_noise * 1e3, t_fwd.elapsed().as_secs_f64() * 1e3);\n        for &(r, _) in &next_active {"),
]
PY
)
source "$(dirname "$0")/worktrees.sh"
build_patched "$edits" core/src/think.rs "$@"
for r in $(seq "$rounds"); do
  for c in "$@"; do
    "$work/$c/target/release/softcot" bench --model "$model" --workload soft-decode "${think_flag[@]}" --repeats 3 2>&1 >/dev/null |
      grep '^STEP' | python3 -c "import sys, statistics as st
rows = [l.split()[1:] for l in sys.stdin]
out = []
for mode, name in (('0', 'hard'), ('1', '$think')):
    v = [[float(x) for x in r[1:]] for r in rows if r[0] == mode]
    med = [st.median(x[i] for x in v) for i in range(3)]
    out.append('%s: head %.3f, noise %.3f, forward %.3f ms' % (name, *med))
print('$c', len(rows), 'steps |', ' | '.join(out))"
  done
done
