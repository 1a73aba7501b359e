#!/usr/bin/env bash
# The CUDA benchmarks in about four minutes, from the repository root, without installing anything:
#
#   bash benchmarks/run_cuda.sh OUT              # on a machine with a CUDA GPU
#   bash benchmarks/run_cuda.sh OUT --dry-run    # the same steps on CPU with --quick (checks this script)
#
# Writes into OUT (flat, at most eight files):
#   layers-cuda.md/.json          CGA, SE, SGE, SGAU next to timm's SE, the materializing SGE and the memory floor,
#                                 at GANet's shapes (batch 8, 512x384) and (4, 64, 96, 128); fp32 and bf16 autocast
#   models-cuda.md/.json          the six Table 1 variants (and MONAI/smp U-Nets when importable): training step,
#                                 inference, peak memory; batch 8 at 512x384, fp32 and bf16 autocast
#   layers-cuda-compile.md/.json  torch.compile'd CGA, SE and SGE at one shape, only if enough time is left
#                                 (and RUN_CUDA_COMPILE is not 0)
#   models-cuda-compile.md/.json  the Baseline and GANet eager and torch.compile'd in the same rounds (fp32, batch 8
#                                 at 512x384), only if 120 s are left (and RUN_CUDA_COMPILE is not 0): issue 22's
#                                 CUDA row; raise RUN_CUDA_BUDGET_S to leave room for inductor's first compilation
# Before them, CGA, SE, SGE and SGAU on CUDA are checked against float64 on CPU (printed, no file), and the Triton
# kernel tests and the CUDA-marked tests run.
#
# Every step runs under `timeout` and saves its results as it goes; a step that fails or runs out of time is
# reported and the next one still runs. The exit status is the number of failed steps.
set -u

OUT=${1:?usage: bash benchmarks/run_cuda.sh OUT [--dry-run]}
DRY_RUN=${2:-}
BUDGET_S=${RUN_CUDA_BUDGET_S:-240}
PYTHON=${PYTHON:-python3}

mkdir -p "$OUT"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
FAILED=()

if [ "$DRY_RUN" = "--dry-run" ]; then
    DEVICE=(--device cpu --quick --threads 1)
    SUFFIX="-dry-run"
    MODEL_SIZE=()
else
    DEVICE=(--device cuda)
    SUFFIX=""
    MODEL_SIZE=(--batch 8 --size 384,512)
fi

elapsed() { echo $(( $(date +%s) - START )); }

# step NAME LIMIT_S COMMAND...: run COMMAND under a time limit, report, never abort the script.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== [$(elapsed)s] $name (limit ${limit}s)"
    timeout --signal=INT --kill-after=15 "$limit" "$@"
    local status=$?
    if [ $status -eq 0 ]; then
        echo "== [$(elapsed)s] $name: done"
    else
        echo "== [$(elapsed)s] $name: FAILED (exit $status; 124 = out of time, partial results kept)"
        FAILED+=("$name")
    fi
}

# Seconds left of the budget, keeping RESERVE for the steps after this one.
left() { echo $(( BUDGET_S - $(elapsed) - $1 )); }

echo "== run_cuda.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), output in $OUT, budget ${BUDGET_S}s"
if [ "$DRY_RUN" != "--dry-run" ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PYTHON" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

step "check layers on ${DEVICE[1]} against float64 on CPU" 60 "$PYTHON" - "${DEVICE[1]}" <<'PY'
import copy
import sys

import torch

from group_attention import CGA, SE, SGAU, SGE

device = torch.device(sys.argv[1])
torch.manual_seed(0)
failures = []


def check(name, layer, shapes, channels_last=False, dtype=torch.float32):
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_(0, 0.5)
    reference = copy.deepcopy(layer).double()
    inputs = [torch.randn(shape, dtype=torch.float64) for shape in shapes]
    expected = reference(*[x.requires_grad_() for x in inputs])
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, inputs, grad)
    on_device = [x.detach().to(device, dtype) for x in inputs]
    if channels_last:
        on_device = [x.contiguous(memory_format=torch.channels_last) for x in on_device]
    on_device = [x.requires_grad_() for x in on_device]
    out = layer.to(device, dtype)(*on_device)
    grads = torch.autograd.grad(out, on_device, grad.to(device, dtype))
    tolerance = 1e-3 if dtype == torch.float32 else 5e-2
    errors = [((a.double().cpu() - b).abs().max() / b.abs().max()).item()
              for a, b in zip((out, *grads), (expected, *expected_grads))]
    ok = all(error < tolerance for error in errors)
    print(f"  {name:34s} relative errors {', '.join(f'{e:.1e}' for e in errors)} {'ok' if ok else 'MISMATCH'}")
    if not ok:
        failures.append(name)


for channels_last in (False, True):
    tag = " channels_last" if channels_last else ""
    check("CGA" + tag, CGA(64, 32), [(4, 64, 24, 32)], channels_last)
    check("CGA (stage 1, one channel/group)" + tag, CGA(32, 32), [(2, 32, 48, 64)], channels_last)
    check("SE" + tag, SE(64), [(4, 64, 24, 32)], channels_last)
    check("SGE" + tag, SGE(128, 32), [(2, 128, 24, 32)], channels_last)
    check("SGAU" + tag, SGAU(32, 64, 32), [(2, 32, 48, 64), (2, 64, 24, 32)], channels_last)
check("CGA bf16", CGA(64, 32), [(2, 64, 24, 32)], dtype=torch.bfloat16)
check("SGAU bf16", SGAU(64, 128, 32), [(2, 64, 24, 32), (2, 128, 12, 16)], dtype=torch.bfloat16)
sys.exit(1 if failures else 0)
PY

if [ "$DRY_RUN" != "--dry-run" ]; then
    step "Triton kernel tests and CUDA tests" 150 \
        bash -c "$PYTHON -m pytest -q -p no:cacheprovider tests/test_layers_kernels.py && $PYTHON -m pytest -q -p no:cacheprovider -m cuda tests"
fi

step "layer benchmark, fp32 and bf16 autocast, eager" "$(( $(left 110) > 40 ? $(left 110) : 40 ))" \
    "$PYTHON" benchmarks/bench_layers.py "${DEVICE[@]}" --dtype fp32,bf16 --rounds 9 --max-seconds 1.5 \
    --out "$OUT" --stem "layers-cuda$SUFFIX"

step "model benchmark, fp32 and bf16 autocast" "$(( $(left 35) > 40 ? $(left 35) : 40 ))" \
    "$PYTHON" benchmarks/bench_models.py "${DEVICE[@]}" "${MODEL_SIZE[@]}" --dtype fp32,bf16 --rounds 7 \
    --max-seconds 8 --out "$OUT" --stem "models-cuda$SUFFIX"

if [ "${RUN_CUDA_COMPILE:-1}" != 1 ]; then
    echo "== [$(elapsed)s] layer and model benchmarks, torch.compile: skipped (RUN_CUDA_COMPILE=${RUN_CUDA_COMPILE})"
else
    if [ "$(left 0)" -ge 30 ]; then
        step "layer benchmark, torch.compile" "$(left 0)" \
            "$PYTHON" benchmarks/bench_layers.py "${DEVICE[@]}" --compile --no-ganet-shapes --no-skip \
            --shape 8,64,192,256 --contenders "timm SE,SE,CGA,SGE" --rounds 10 --max-seconds 3 \
            --out "$OUT" --stem "layers-cuda-compile$SUFFIX"
    else
        echo "== [$(elapsed)s] layer benchmark, torch.compile: skipped ($(left 0)s left of ${BUDGET_S}s)"
    fi
    if [ "$(left 0)" -ge 120 ]; then
        step "model benchmark, torch.compile (Baseline, GANet)" "$(left 0)" \
            "$PYTHON" benchmarks/bench_models.py "${DEVICE[@]}" "${MODEL_SIZE[@]}" --compile --models baseline,ganet \
            --rounds 7 --max-seconds 8 --out "$OUT" --stem "models-cuda-compile$SUFFIX"
    else
        echo "== [$(elapsed)s] model benchmark, torch.compile: skipped ($(left 0)s left of ${BUDGET_S}s)"
    fi
fi

echo "== [$(elapsed)s] finished; files in $OUT:"
ls -l "$OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "== failed steps: ${FAILED[*]}"
fi
exit ${#FAILED[@]}
