#!/usr/bin/env bash
# Everything a machine with an NVIDIA GPU must run for minillm, in one call of at most 7 minutes:
#
#   1. install    minillm into this Python, editable, without dependencies (the machine has
#                 cupy, numba, torch; nothing can be downloaded there)
#   2. pytest     pytest -m gpu -x over the test files that hold gpu tests
#   3. kernels    benchmarks/gpu/bench_kernels.py: every CUDA kernel version checked against its
#                 reference, then timed with CUDA events (median of >= 20, rotating buffers), in
#                 two runs (GPT-2 ops; attention, Llama ops, quantized products)
#   4. train      benchmarks/gpu/train_gpt2.py: GPT-2 124M steps, B 8, T 1024, float32 and
#                 bfloat16, minillm against PyTorch eager
#   5. decode     benchmarks/gpu/decode_llama.py: SmolLM2-135M-shaped Q4_1 decoding, tokens/s
#                 (the GGUF from $MINILLM_DECODE_GGUF or shared/SmolLM2-135M-Instruct.Q4_1.gguf
#                 when present and the gguf package is importable; else random weights)
#
# Each stage has its own time limit, and none runs past the whole budget (BUDGET_S, 395 s
# of stages). Full logs go to $OUT (default ./device_check_out), one file per stage; the last
# lines printed are a short table: stage, status, seconds, the headline. Exit status: 0 all
# stages passed, 1 a stage failed or ran out of time, 2 no usable GPU (checked first, in a few
# seconds, before anything is installed).
#
#   OUT=/tmp/out bash benchmarks/gpu/device_check.sh          # PYTHON=python3 by default
#   STAGES=pytest,decode OUT=/tmp/out bash benchmarks/gpu/device_check.sh   # a shorter rerun
set -u -o pipefail

PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-$ROOT/device_check_out}
BUDGET_S=${BUDGET_S:-395}
STAGES=${STAGES:-}  # e.g. STAGES=pytest,train-gpt2 for a rerun of two stages (install always runs)
mkdir -p "$OUT" || { echo "device_check: cannot write to $OUT" >&2; exit 2; }
cd "$ROOT" || exit 2

# ---------------------------------------------------------------- 0. a GPU, or stop here
if ! gpu=$(timeout 60 "$PY" - 2>&1 <<'EOF'
import cupy as cp
n = cp.cuda.runtime.getDeviceCount()
assert n >= 1, "no CUDA device"
p = cp.cuda.runtime.getDeviceProperties(0)
name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
print(f"{name}, {p['totalGlobalMem'] / 2**30:.0f} GiB, CuPy {cp.__version__}")
EOF
); then
    echo "device_check: no usable NVIDIA GPU here ($(echo "$gpu" | tail -n 1)); nothing was run" >&2
    exit 2
fi
echo "device_check: $gpu; logs in $OUT"
export PYTHONUNBUFFERED=1

T0=$(date +%s)
ROWS=()
FAILED=0

# stage NAME LIMIT_S LOG HEADLINE_CMD -- COMMAND...: runs COMMAND (its output to $OUT/LOG) under
# the smaller of LIMIT_S and what is left of the budget; HEADLINE_CMD reads the log for the table
stage() {
    local name=$1 limit=$2 log=$3 headline=$4
    shift 5
    if [[ -n "$STAGES" && ",$STAGES,install," != *",$name,"* ]]; then
        ROWS+=("$name|not run|0|not in STAGES=$STAGES")
        return
    fi
    local left=$((BUDGET_S - ($(date +%s) - T0)))
    if ((left < 15)); then
        ROWS+=("$name|SKIPPED|0|no time left in the ${BUDGET_S} s budget")
        FAILED=1
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit} s)"
    local t=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$log" 2>&1
    local rc=$? secs=$(($(date +%s) - t)) status=ok
    if ((rc == 124 || rc == 137)); then
        status="TIMEOUT"
        FAILED=1
    elif ((rc != 0)); then
        status="FAILED rc=$rc"
        FAILED=1
    fi
    local head
    head=$(eval "$headline" 2>/dev/null | tail -n 1)
    [[ -z "$head" ]] && head=$(grep -v '^[[:space:]]*$' "$OUT/$log" | tail -n 1)  # e.g. the error
    head=$(echo "$head" | cut -c1-110)
    ROWS+=("$name|$status|$secs|$head ($log)")
    echo "   $status in ${secs} s: $head"
}

summary_line='grep "^SUMMARY:" "$OUT/$log" | sed "s/^SUMMARY: //"'

stage install 60 install.log 'tail -n 1 "$OUT/$log"' -- \
    "$PY" -m pip install --no-deps --no-build-isolation --no-input -e .

# the files that hold gpu tests (collecting the whole suite would need the serve extras); tests/
# kernels runs each test through parallel and serial CPU threading, which means nothing on a GPU:
# the serial twins are left out
mapfile -t GPU_TESTS < <(grep -rl "mark.gpu" tests --include="test_*.py" | sort)
stage pytest 150 pytest.log 'grep -E "passed|failed|error" "$OUT/$log" | tail -n 1' -- \
    "$PY" -m pytest -m gpu -x -q -p no:cacheprovider -k "not serial" "${GPU_TESTS[@]}"

stage kernels-gpt2 70 kernels_gpt2.log "$summary_line" -- \
    "$PY" benchmarks/gpu/bench_kernels.py --only matmul,layernorm,softmax,crossentropy,gelu,adamw \
    --runs 20 --warmup 3

stage kernels-llm 60 kernels_llm.log "$summary_line" -- \
    "$PY" benchmarks/gpu/bench_kernels.py --only attention,llama,qmatmul --runs 20 --warmup 3

stage train-gpt2 90 train_gpt2.log "$summary_line" -- \
    "$PY" benchmarks/gpu/train_gpt2.py --steps 5 --warmup 2

GGUF=${MINILLM_DECODE_GGUF:-}
[[ -z "$GGUF" && -f shared/SmolLM2-135M-Instruct.Q4_1.gguf ]] && GGUF=shared/SmolLM2-135M-Instruct.Q4_1.gguf
stage decode 45 decode.log "$summary_line" -- \
    env MINILLM_DECODE_GGUF="$GGUF" "$PY" benchmarks/gpu/decode_llama.py --tokens 128

{
    echo
    echo "device_check on $gpu: $(($(date +%s) - T0)) s of stages (budget ${BUDGET_S} s)"
    printf '%-13s %-14s %5s  %s\n' stage status s headline
    for row in "${ROWS[@]}"; do
        IFS='|' read -r name status secs head <<<"$row"
        printf '%-13s %-14s %5s  %s\n' "$name" "$status" "$secs" "$head"
    done
} | tee "$OUT/summary.txt"
exit $FAILED
