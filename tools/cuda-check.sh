#!/usr/bin/env bash
# tools/cuda-check.sh: way 3 of verifying the CUDA backend (docs/CUDA.md), in two halves.
#
#   bash tools/cuda-check.sh pack   here, with Rust: builds in release the CUDA test binaries
#                                   (conformance_cuda, parity_cuda, nvrtc_compile) and `softcot`,
#                                   and packs them with every fixture folder into .cuda-check/
#                                   (ignored; at most 64 MiB; its size is printed).
#   bash tools/cuda-check.sh run    on a GPU machine (CUDA 13 driver and libraries,
#                                   compute-sanitizer; no Rust, no network), from the repository root
#                                   with .cuda-check/ carried beside it, or as
#                                   .cuda-check/cuda-check.sh run. Under 8 minutes: every step has
#                                   its own timeout and the whole run a budget; each step records
#                                   pass / fail / timeout / skipped and the run goes on. Everything
#                                   lands in $OUT (else ./cuda-check-out) as at most 8 files:
#                                   summary.txt, summary.json, bench.jsonl, results.log, logs.tar.gz.
#
# The test binaries run the GPU path because the script sets SOFTCOT_CUDA_DEVICE=0 (without it they
# run the host build of the kernels, as `cargo test` does). The kernel sources need no copying:
# build.rs embeds them in the binaries (include_str!) and NVRTC compiles them at run time.
#
# Settings (environment): CUDA_CHECK_DIR (pack folder, default .cuda-check), CUDA_CHECK_LAYERS
# (layers of the 8B-shaped bench model, default 3), CUDA_CHECK_PRESET (its shape, default
# llama-3.1-8b), CUDA_CHECK_BUDGET (seconds for the whole run, default 450), CUDA_CHECK_MODEL (an
# existing HF model folder to bench instead of making one).
set -u

here="$(cd "$(dirname "$0")" && pwd)"

die() {
    echo "cuda-check: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# pack
# ---------------------------------------------------------------------------------------------

# The workspace root: the folder above tools/ (pack runs from the checkout).
pack() {
    local root pack_dir json
    root="$(cd "$here/.." && pwd)"
    [ -f "$root/Cargo.toml" ] && [ -d "$root/backend-cuda" ] || die "pack: run from a softcot checkout (tools/cuda-check.sh)"
    cd "$root" || die "pack: cannot enter $root"
    pack_dir="${CUDA_CHECK_DIR:-.cuda-check}"
    command -v cargo >/dev/null 2>&1 || die "pack: cargo not found (pack runs where Rust is; run is for the GPU machine)"

    echo "== building in release: softcot, and the tests conformance_cuda, parity_cuda, nvrtc_compile"
    # One cargo invocation for the program and the three test targets, so that features unify
    # once (softcot-tests turns on softcot-cuda's `host` feature; the program then has it too,
    # harmlessly: `--backend cuda` opens the GPU with CudaBackend::new). `cargo build --test NAME`
    # builds the same test executables as `cargo test --no-run` and names them in its JSON.
    json="$(mktemp)"
    if ! cargo build --release --message-format=json-render-diagnostics \
        -p softcot -p softcot-tests \
        --bin softcot --test conformance_cuda --test parity_cuda --test nvrtc_compile >"$json"; then
        rm -f "$json"
        die "pack: cargo build failed"
    fi

    rm -rf "$pack_dir"
    mkdir -p "$pack_dir/bin" "$pack_dir/fixtures" || die "pack: cannot create $pack_dir"

    # Executables from cargo's JSON: `"executable":"PATH"` of each compiler-artifact line whose
    # target is one of ours.
    local name exe
    for name in softcot conformance_cuda parity_cuda nvrtc_compile; do
        exe="$(grep '"reason":"compiler-artifact"' "$json" |
            grep "\"name\":\"$name\"" |
            grep -o '"executable":"[^"]*"' |
            sed 's/^"executable":"//; s/"$//' | tail -n 1)"
        [ -n "$exe" ] && [ -x "$exe" ] || {
            rm -f "$json"
            die "pack: no executable for $name in cargo's output"
        }
        cp "$exe" "$pack_dir/bin/$name" || die "pack: cannot copy $exe"
        # Line tables only come from the release profile; symbols stay for backtraces.
        if command -v strip >/dev/null 2>&1; then
            strip --strip-debug "$pack_dir/bin/$name" || echo "warning: strip failed on $name"
        fi
        echo "   $name <- $exe"
    done
    rm -f "$json"

    # Fixtures: the shared ones and the repository's own, in one root (SOFTCOT_FIXTURES takes one).
    local src dir fname
    for src in "${SOFTCOT_FIXTURES:-$root/../shared/fixtures}" "$root/tests/fixtures"; do
        [ -d "$src" ] || die "pack: fixtures folder $src missing (../shared beside the checkout, or SOFTCOT_FIXTURES)"
        for dir in "$src"/*/; do
            [ -f "$dir/reference.safetensors" ] || continue
            fname="$(basename "$dir")"
            [ -e "$pack_dir/fixtures/$fname" ] && die "pack: two fixture folders named $fname"
            cp -r "$dir" "$pack_dir/fixtures/$fname" || die "pack: cannot copy $dir"
        done
    done
    [ -n "$(ls "$pack_dir/fixtures")" ] || die "pack: no fixture folder found"

    cp "$here/cuda-check.sh" "$pack_dir/cuda-check.sh"
    {
        echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
        echo "rustc: $(rustc --version 2>/dev/null)"
        echo "build host: $(uname -srm), $(ldd --version 2>/dev/null | head -n 1)"
        echo "fixtures: $(ls "$pack_dir/fixtures" | tr '\n' ' ')"
        echo
        (cd "$pack_dir" && find . -type f ! -name MANIFEST.txt | sort | xargs sha256sum)
    } >"$pack_dir/MANIFEST.txt"

    local bytes mib
    bytes="$(du -sb "$pack_dir" | cut -f1)"
    mib="$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')"
    echo "== packed $pack_dir:"
    du -sh "$pack_dir/bin"/* "$pack_dir/fixtures" | sed 's/^/   /'
    echo "== size of $pack_dir: $bytes bytes ($mib MiB; the limit is 64 MiB with the checkout it travels with)"
    if [ "$bytes" -gt $((64 * 1048576)) ]; then
        die "pack: $pack_dir is over 64 MiB"
    fi
    echo "== on the GPU machine, from the repository root with $pack_dir carried:"
    echo "   bash tools/cuda-check.sh run      (or: bash $pack_dir/cuda-check.sh run)"
}

# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------

# Seconds since the epoch, with a fraction.
now() { date +%s.%N; }

# The pack folder: the script's own folder when it was run from there, else .cuda-check (or
# CUDA_CHECK_DIR) beside tools/.
find_pack() {
    if [ -x "$here/bin/softcot" ]; then
        echo "$here"
    elif [ -n "${CUDA_CHECK_DIR:-}" ] && [ -x "$CUDA_CHECK_DIR/bin/softcot" ]; then
        (cd "$CUDA_CHECK_DIR" && pwd)
    elif [ -x "$here/../.cuda-check/bin/softcot" ]; then
        (cd "$here/../.cuda-check" && pwd)
    else
        return 1
    fi
}

# Puts the folders holding the CUDA libraries the backend opens (libnvrtc, libcublasLt) on
# LD_LIBRARY_PATH when the loader does not already find them: the system CUDA first, then the
# nvidia-* wheels of the machine's python3 (PyTorch's CUDA 13 libraries).
cuda_libraries() {
    local lib dirs d sp found
    dirs="/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib"
    if command -v python3 >/dev/null 2>&1; then
        sp="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)"
        if [ -n "$sp" ]; then
            for d in "$sp"/nvidia/cu13/lib "$sp"/nvidia/*/lib; do
                [ -d "$d" ] && dirs="$dirs $d"
            done
        fi
    fi
    for lib in libcuda.so.1 libnvrtc.so.13 libcublasLt.so.13 libnccl.so.2; do
        if ldconfig -p 2>/dev/null | grep -q "$lib"; then
            echo "$lib: found by the loader's cache"
            continue
        fi
        found=""
        for d in $(echo "${LD_LIBRARY_PATH:-}" | tr ':' ' ') $dirs; do
            if [ -e "$d/$lib" ]; then
                found="$d"
                break
            fi
        done
        if [ -n "$found" ]; then
            case ":${LD_LIBRARY_PATH:-}:" in
                *":$found:"*) ;;
                *) LD_LIBRARY_PATH="$found${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
            esac
            echo "$lib: $found"
        else
            echo "$lib: NOT FOUND (steps that open the GPU will fail)"
        fi
    done
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
}

# Summary rows: "name|status|seconds|note", one per line, in $work/rows.
add_row() {
    printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" >>"$work/rows"
}

# Rewrites summary.txt and summary.json from the rows (after every step, so that a run cut short
# still leaves its table).
write_summary() {
    local total pass fail
    total="$(awk -v s="$start" -v n="$(now)" 'BEGIN { printf "%.0f", n - s }')"
    pass="$(grep -c '|pass|' "$work/rows" || true)"
    fail="$(grep -c -E '\|(FAIL|TIMEOUT)\|' "$work/rows" || true)"
    {
        echo "cuda-check on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ): ${total} s, $pass passed, $fail failed"
        echo "pack: $pack"
        echo
        awk -F'|' 'BEGIN { printf "%-56s %-10s %8s  %s\n", "step", "status", "seconds", "note";
                          printf "%-56s %-10s %8s  %s\n", "----", "------", "-------", "----" }
                   { printf "%-56s %-10s %8s  %s\n", $1, $2, $3, $4 }' "$work/rows"
    } >"$out/summary.txt"
    awk -F'|' -v total="$total" -v pass="$pass" -v fail="$fail" '
        function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, " ", s); return s }
        BEGIN { printf "{\"seconds\": %s, \"passed\": %s, \"failed\": %s, \"steps\": [", total, pass, fail }
        { printf "%s\n  {\"step\": \"%s\", \"status\": \"%s\", \"seconds\": \"%s\", \"note\": \"%s\"}",
                 (NR > 1 ? "," : ""), esc($1), esc($2), esc($3), esc($4) }
        END { print "\n]}" }' "$work/rows" >"$out/summary.json"
}

# A step's log file name: its name with anything but letters, digits, '.', '_' and '-' as '_'.
log_name() {
    printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_'
}

# step NAME TIMEOUT COMMAND: runs COMMAND (a bash command line) with at most TIMEOUT seconds, and
# never past the run's budget; its stdout and stderr go to $work/logs/NAME.log, appended to
# results.log. A command that prints `NOTE: text` lines has the last one as its note.
step() {
    local name="$1" limit="$2" cmd="$3" left t0 t1 rc status secs note log
    log="$work/logs/$(log_name "$name").log"
    left="$(awk -v d="$deadline" -v n="$(now)" 'BEGIN { printf "%d", d - n }')"
    if [ "$left" -lt 15 ]; then
        add_row "$name" "skipped" "0" "out of time (the run's budget of $budget s is spent)"
        write_summary
        echo "-- $name: skipped, out of time"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    echo "-- $name (at most $limit s)"
    t0="$(now)"
    timeout --kill-after=5 "$limit" bash -c "$cmd" >"$log" 2>&1
    rc=$?
    t1="$(now)"
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
    case "$rc" in
        0) status="pass" ;;
        124 | 137) status="TIMEOUT" ;;
        *) status="FAIL" ;;
    esac
    note="$(grep '^NOTE: ' "$log" | tail -n 1 | sed 's/^NOTE: //' | tr '|' '/')"
    if [ -z "$note" ]; then
        case "$status" in
            TIMEOUT) note="stopped after $limit s" ;;
            FAIL)
                # A panic's message is the line after "panicked at"; else the first line that
                # looks like an error.
                note="$(grep -m 1 -A 1 'panicked at' "$log" | tail -n 1)"
                [ -n "$note" ] || note="$(grep -i -m 1 -E 'error|fail|not found|cannot' "$log")"
                note="exit $rc: $(echo "$note" | cut -c1-160 | tr '|' '/')"
                ;;
        esac
    fi
    add_row "$name" "$status" "$secs" "$note"
    {
        echo "=================================================================="
        echo "== $name: $status (exit $rc, $secs s, limit $limit s)"
        echo "== $cmd"
        echo "=================================================================="
        cat "$log"
        echo
    } >>"$out/results.log"
    write_summary
    echo "   $status ($secs s) $note"
    return 0
}

# test_rows STEP LABEL BINARY: one row "  LABEL: TEST" per test that BINARY lists, from STEP's log:
# FAIL when libtest's closing list of failures names it, pass when the run reached its
# "test result:" line otherwise, unknown when it did not get that far (a timeout).
test_rows() {
    local prefix="$2" bin="$3" log t
    shift 3
    log="$work/logs/$(log_name "$1").log"
    [ -f "$log" ] || return 0
    # the tests the step ran: its filter arguments, if any, applied to the list
    "$bin" --list "$@" 2>/dev/null | sed -n 's/: test$//p' >"$work/tests.list"
    while read -r t; do
        if grep -q -x "    $t" "$log"; then
            add_row "  $prefix: $t" "FAIL" "-" "$(grep -m 1 -A 1 "'$t'.*panicked at" "$log" | tail -n 1 | cut -c1-160 | tr '|' '/')"
        elif grep -q '^test result:' "$log"; then
            add_row "  $prefix: $t" "pass" "-" ""
        else
            add_row "  $prefix: $t" "unknown" "-" "the run stopped before libtest's summary"
        fi
    done <"$work/tests.list"
    write_summary
}

run() {
    start="$(now)"
    budget="${CUDA_CHECK_BUDGET:-450}"
    deadline="$(awk -v s="$start" -v b="$budget" 'BEGIN { printf "%.3f", s + b }')"
    out="${OUT:-./cuda-check-out}"
    mkdir -p "$out" || die "run: cannot create $out"
    out="$(cd "$out" && pwd)"
    work="$(mktemp -d "${TMPDIR:-/tmp}/cuda-check.XXXXXX")" || die "run: no temporary folder"
    mkdir -p "$work/logs"
    : >"$work/rows"
    : >"$out/results.log"
    : >"$out/bench.jsonl"
    pack="$(find_pack)" || {
        pack="(missing)"
        add_row "pack" "FAIL" "0" "no packed folder: run 'bash tools/cuda-check.sh pack' where Rust is, and carry .cuda-check"
        write_summary
        cat "$out/summary.txt"
        exit 1
    }
    export PACK="$pack" SOFTCOT="$pack/bin/softcot" SOFTCOT_FIXTURES="$pack/fixtures" WORK="$work" OUT_DIR="$out"
    export SOFTCOT_CUDA_DEVICE="${SOFTCOT_CUDA_DEVICE:-0}" RUST_BACKTRACE=1
    # A carried folder may lose its modes on the way.
    chmod +x "$pack"/bin/* 2>/dev/null
    local layers preset model init_pid=""
    layers="${CUDA_CHECK_LAYERS:-3}"
    preset="${CUDA_CHECK_PRESET:-llama-3.1-8b}"
    model="${CUDA_CHECK_MODEL:-$work/$preset-widths}"
    export MODEL="$model"

    echo "cuda-check run: pack $pack, results in $out, budget $budget s"
    {
        echo "== machine"
        uname -a
        echo "== libraries"
        cuda_libraries
        echo "== compute-sanitizer: $(command -v compute-sanitizer || echo 'not on PATH')"
        echo "== pack manifest"
        cat "$pack/MANIFEST.txt" 2>/dev/null
    } >"$work/logs/environment.log" 2>&1
    cat "$work/logs/environment.log" >>"$out/results.log"
    # compute-sanitizer is often beside nvcc rather than on the PATH.
    for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
        [ -d "$d" ] && PATH="$PATH:$d"
    done
    export PATH

    # 0. The bench model, in the background from the start: `init-model` draws its weights on one
    # CPU thread (about a minute per 10^9 values), which the GPU steps below then hide. Llama-3.1-8B's
    # widths (hidden 4096, 32 heads, 8 KV heads, MLP 14336, vocabulary 128256), random bf16 weights,
    # $layers layers. CUDA_CHECK_MODEL names an existing HF folder to bench instead.
    if [ -z "${CUDA_CHECK_MODEL:-}" ]; then
        (
            t0="$(date +%s)"
            timeout --kill-after=5 240 "$SOFTCOT" init-model --preset "$preset" --layers "$layers" \
                --out "$MODEL" --overwrite >"$work/init-model.out" 2>&1 &
            echo $! >"$work/init.pid"
            wait $!
            rc=$?
            echo "NOTE: made in $(($(date +%s) - t0)) s in the background, $(du -sh "$MODEL" 2>/dev/null | cut -f1) on disk (exit $rc)" >>"$work/init-model.out"
            echo "$rc" >"$work/init.rc"
        ) &
        init_pid=$!
    fi

    # 1. The machine and the probe.
    step "nvidia-smi" 20 'nvidia-smi && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv &&
        echo "NOTE: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1)"'
    step "softcot devices (probe)" 30 '"$SOFTCOT" devices; rc=$?; echo "(softcot devices exit $rc: non-zero also when no wgpu adapter is found)";
        line="$("$SOFTCOT" devices 2>/dev/null | grep -E "^cuda [0-9]+:" | head -n 1)";
        if [ -n "$line" ]; then echo "NOTE: $line"; else echo "NOTE: no CUDA device: $("$SOFTCOT" devices 2>&1 | grep "^cuda" | head -n 1)"; exit 1; fi'

    # 2. Correctness on the GPU, float32 mode.
    step "nvrtc compile (sm_90, no spills)" 90 'SOFTCOT_REQUIRE_NVRTC=1 "$PACK/bin/nvrtc_compile" --nocapture --test-threads 1'
    step "conformance (f32)" 150 '"$PACK/bin/conformance_cuda" --exact cuda_backend_conforms --nocapture --test-threads 1'
    step "fixtures: every section (f32)" 180 '"$PACK/bin/parity_cuda" --skip bf16_mode_ --nocapture --test-threads 1'
    test_rows "fixtures: every section (f32)" "fixtures (f32)" "$PACK/bin/parity_cuda" --skip bf16_mode_
    step "nccl collectives (one rank)" 60 '"$PACK/bin/conformance_cuda" --exact nccl_on_one_rank --nocapture --test-threads 1'
    # 2b. The bf16 compute mode (bf16 weights, cuBLASLt on bf16 operands with f32 accumulation):
    # the suite with bf16-rounding references, and the fixtures with the tolerances of docs/CUDA.md.
    step "conformance (bf16)" 150 '"$PACK/bin/conformance_cuda" --exact cuda_backend_conforms_in_bf16 --nocapture --test-threads 1'
    step "fixtures (bf16)" 180 '"$PACK/bin/parity_cuda" bf16_mode_ --nocapture --test-threads 1'
    test_rows "fixtures (bf16)" "fixtures (bf16)" "$PACK/bin/parity_cuda" bf16_mode_
    write_summary

    # 3. compute-sanitizer over a small subset: elementwise, rmsnorm, rope, attention, heads, noise,
    # sampling (conformance_cuda's cuda_kernel_subset).
    local san='compute-sanitizer --error-exitcode 99 --print-limit 50'
    step "memcheck (kernel subset)" 120 "$san"' --tool memcheck "$PACK/bin/conformance_cuda" --exact cuda_kernel_subset --nocapture --test-threads 1'
    step "racecheck (kernel subset)" 120 "$san"' --tool racecheck "$PACK/bin/conformance_cuda" --exact cuda_kernel_subset --nocapture --test-threads 1'

    # 4. Benchmarks: GEMM and memory rates, then the model's workloads once step 0 has made it.
    if [ -n "${CUDA_CHECK_MODEL:-}" ]; then
        add_row "init-model" "skipped" "0" "benching CUDA_CHECK_MODEL=$model instead"
        write_summary
    else
        step "init-model ($preset widths, $layers layers)" 240 'while [ ! -f "$WORK/init.rc" ]; do sleep 1; done;
            cat "$WORK/init-model.out"; exit "$(cat "$WORK/init.rc")"'
    fi
    # The medians of a bench's JSON line, for the summary's note.
    cat >"$work/note.py" <<'PY'
import json, sys
lines = [l for l in sys.stdin.read().splitlines() if l.strip().startswith("{")]
v = json.loads(lines[-1])
parts = []
def walk(prefix, x):
    for k, y in x.items():
        if isinstance(y, dict):
            if "median" in y:
                parts.append("%s%s %.4g" % (prefix, k, y["median"]))
            else:
                walk(prefix + k + ".", y)
walk("", v)
if isinstance(v.get("gflops"), (int, float)):
    parts.append("gflops %.4g" % v["gflops"])
print("NOTE: " + ", ".join(parts)[:220])
PY
    bench() {
        local label="$1" limit="$2"
        shift 2
        step "bench $label" "$limit" '"$SOFTCOT" bench --backend cuda --format json '"$*"' > "$WORK/bench.out"; rc=$?;
            cat "$WORK/bench.out"; [ $rc -eq 0 ] || exit $rc;
            printf "{\"bench\": \"%s\", \"result\": %s}\n" "'"$label"'" "$(tail -n 1 "$WORK/bench.out")" >> "$OUT_DIR/bench.jsonl";
            python3 "$WORK/note.py" < "$WORK/bench.out" 2>/dev/null || echo "NOTE: $(tail -n 1 "$WORK/bench.out" | cut -c1-160 | tr -d "\"{}")"'
    }
    bench "matmul 8192 (f32)" 45 --workload matmul --size 8192 --repeats 5 --dtype f32
    bench "matmul 8192 (bf16)" 45 --workload matmul --size 8192 --repeats 5 --dtype bf16
    bench "memory (read GB/s)" 30 --workload memory --repeats 5
    if [ -n "${CUDA_CHECK_MODEL:-}" ] || [ "$(cat "$work/init.rc" 2>/dev/null)" = 0 ]; then
        bench "prefill 8x256" 60 '--model "$MODEL"' --workload prefill --batch 8 --prompt-len 256 --repeats 3
        bench "decode 8x64+64" 60 '--model "$MODEL"' --workload decode --batch 8 --prompt-len 64 --new-tokens 64 --repeats 3
        bench "soft-decode 8x64+64" 75 '--model "$MODEL"' --workload soft-decode --batch 8 --prompt-len 64 --new-tokens 64 --repeats 3
        bench "train-step 4x256" 75 '--model "$MODEL"' --workload train-step --batch 4 --seq-len 256 --repeats 3
        bench "rl-step 2x8 rollouts" 90 '--model "$MODEL"' --workload rl-step --batch 2 --samples 8 --new-tokens 64 --answer-tokens 16 --repeats 2
        # The memory plan against the GPU: `softcot plan`'s total for a short RL run beside the
        # run's peak device memory (nvidia-smi every 0.2 s, less the idle GPU's), within 10%; with
        # f32 moments and with the one-GPU option, bf16 moments. In the float32 mode, whose plan is
        # exact (the bf16 mode's GEMM scratch is planned as an upper bound).
        local moments
        for moments in f32 bf16; do
        step "plan vs measured memory (train, 2 steps, $moments moments)" 180 'D="$WORK/plan-data.jsonl";
            python3 -c "import json; [print(json.dumps({\"prompt\": f\"{i}+1\", \"answer\": str(i + 1)})) for i in range(32)]" > "$D";
            S="--model $MODEL --data $D --steps 2 --prompts-per-step 2 --samples-per-prompt 4 --think-tokens 32 --answer-tokens 8 --val-size 4 --val-every 100 --save-every 100 --recompute --adam-moments '"$moments"'";
            "$SOFTCOT" plan $S --format json > "$WORK/plan.json" || exit 1;
            idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0);
            (while sleep 0.2; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; done) > "$WORK/mem.log" & w=$!;
            "$SOFTCOT" train --backend cuda --dtype f32 $S --out "$WORK/plan-run-'"$moments"'" --overwrite; rc=$?; kill $w;
            [ $rc -eq 0 ] || exit $rc;
            python3 - "$WORK/plan.json" "$WORK/mem.log" "$idle" <<'"'"'PY'"'"'
import json, sys
plan = json.load(open(sys.argv[1]))["total_bytes"] / 2**20
used = [int(l) for l in open(sys.argv[2]) if l.strip().isdigit()]
peak = max(used) - int(sys.argv[3])
print(f"NOTE: plan {plan:.0f} MiB, measured peak {peak} MiB above idle (CUDA context included), ratio {peak / plan:.3f}")
sys.exit(0 if abs(peak / plan - 1) <= 0.10 else 1)
PY'
        done
    else
        local w
        for w in prefill decode soft-decode train-step rl-step; do
            add_row "bench $w" "skipped" "0" "no model: init-model failed or did not finish"
        done
        write_summary
    fi

    # 5. If time is left: memcheck over the forward pass of every fixture (embedding, gemm through
    # cuBLASLt, rmsnorm, rope, attention, swiglu, heads).
    step "memcheck (fixtures: forward)" 90 "$san"' --tool memcheck "$PACK/bin/parity_cuda" --exact forward_logits_match_hf --nocapture --test-threads 1'

    # Everything back as few files: the per-step logs in one archive.
    if [ -n "$init_pid" ] && [ ! -f "$work/init.rc" ] && [ -f "$work/init.pid" ]; then
        kill "$(cat "$work/init.pid")" 2>/dev/null
        wait "$init_pid" 2>/dev/null
    fi
    [ -n "${CUDA_CHECK_MODEL:-}" ] || rm -rf "$model"
    tar -C "$work" -czf "$out/logs.tar.gz" logs 2>/dev/null
    write_summary
    echo
    cat "$out/summary.txt"
    echo
    echo "results: $out (summary.txt, summary.json, bench.jsonl, results.log, logs.tar.gz)"
    rm -rf "$work"
    if grep -q -E '"status": "(FAIL|TIMEOUT)"' "$out/summary.json"; then
        exit 1
    fi
    exit 0
}

case "${1:-}" in
    pack) pack ;;
    run) run ;;
    *)
        echo "usage: bash tools/cuda-check.sh pack|run   (see the comment at the top, and docs/CUDA.md)" >&2
        exit 2
        ;;
esac
