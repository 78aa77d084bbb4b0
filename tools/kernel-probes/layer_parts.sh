#!/usr/bin/env bash
# A decode step's layer in parts, median ms per layer call of 8 rows (the decode steps of
# `softcot bench --workload decode --repeats 3`): q/k/v products, the attention (rope, cache
# writes and attention), the o product, gate and up, down, and the rest (norms, adds, swiglu);
# for the commits given, each built with timers added to core/src/model/layer.rs (below) and run
# in turn ROUNDS times. The attention figure of docs/BENCHMARKS.md (twelfth session).
#   tools/kernel-probes/layer_parts.sh MODEL_DIR ROUNDS COMMIT...
set -euo pipefail
model=$1; rounds=$2; shift 2
edits=$(cat <<'PY'
[
    ("        // --- attention sublayer ---\n",
     "        // --- attention sublayer ---\n        let mut parts = [0f64; 6];\n        let mut tt = std::time::Instant::now();\n        let mut lap = |i: usize| {\n            parts[i] += tt.elapsed().as_secs_f64() * 1e3;\n            tt = std::time::Instant::now();\n        };\n"),
    ("        be.gemm(&mut lb.q, &lb.xn1, self.w(li.q), Gemm::linear(n, qd, d))?;",
     "        lap(5);\n        be.gemm(&mut lb.q, &lb.xn1, self.w(li.q), Gemm::linear(n, qd, d))?;"),
    ("        be.gemm(&mut lb.v, &lb.xn1, self.w(li.v), Gemm::linear(n, kvd, d))?;\n",
     "        be.gemm(&mut lb.v, &lb.xn1, self.w(li.v), Gemm::linear(n, kvd, d))?;\n        lap(0);\n"),
    ("        be.gemm(tmp, &lb.att, self.w(li.o), Gemm::linear(n, d, qd))?;",
     "        lap(1);\n        be.gemm(tmp, &lb.att, self.w(li.o), Gemm::linear(n, d, qd))?;\n        lap(2);"),
    ("        be.gemm(&mut lb.gate, &lb.xn2, self.w(li.gate), Gemm::linear(n, f, d))?;",
     "        lap(5);\n        be.gemm(&mut lb.gate, &lb.xn2, self.w(li.gate), Gemm::linear(n, f, d))?;"),
    ("        be.swiglu(&mut lb.act, &lb.gate, &lb.up, n * f)?;\n        be.gemm(tmp, &lb.act, self.w(li.down), Gemm::linear(n, d, f))?;\n        be.add(x, tmp, n * d)\n",
     "        lap(3);\n        be.swiglu(&mut lb.act, &lb.gate, &lb.up, n * f)?;\n        lap(5);\n        be.gemm(tmp, &lb.act, self.w(li.down), Gemm::linear(n, d, f))?;\n        lap(4);\n        be.add(x, tmp, n * d)?;\n        lap(5);\n        if n == 8 {\n            eprintln!(\"LAYER {:.4} {:.4} {:.4} {:.4} {:.4} {:.4}\", parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]);\n        }\n        Ok(())\n"),
]
PY
)
source "$(dirname "$0")/worktrees.sh"
build_patched "$edits" core/src/model/layer.rs "$@"
for r in $(seq "$rounds"); do
  for c in "$@"; do
    "$work/$c/target/release/softcot" bench --model "$model" --workload decode --repeats 3 2>&1 >/dev/null |
      grep '^LAYER' | python3 -c "import sys, statistics as st
v = [[float(x) for x in l.split()[1:]] for l in sys.stdin]
m = [st.median(x[i] for x in v) for i in range(6)]
print('$c', len(v), 'layer calls: qkv %.3f, attention %.3f, o %.3f, gate+up %.3f, down %.3f, rest %.3f ms' % tuple(m))"
  done
done
