#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine, in one run. The machine needs
# the NVIDIA driver, the CUDA 13 (or 12) libraries and python3 with PyTorch
# (CUDA build); no Rust and no network. It takes binaries built elsewhere,
# laid out by bench/gpu-carry.sh:
#
#   CARRY/bin/fairgrid                release `fairgrid`
#   CARRY/bin/{kernels-it,kernels-lib}
#                                     kernels test binaries (`cargo test --no-run`)
#   CARRY/bench/{gpu-check.sh,find-cuda-libs.sh,torch_gpu.py}
#   CARRY/data/                       Fashion-MNIST IDX files (the full set,
#                                     or the built-in subset)
#
#   bash CARRY/bench/gpu-check.sh            # everything
#   bash CARRY/bench/gpu-check.sh --smoke    # libraries, kernels, parity, a short timing
#
# It (1) finds libcuda/libnvrtc/libcublas and runs the CUDA parity and
# gradient tests, (2) trains the CNN on the GPU and on the CPU with the same
# seeds and schedule (SEEDS, default "1 2 3"; one run's accuracy differs
# from another's by float noise, so the means are compared), (3) times CNN
# training (batch 256, fp32; and TF32) against PyTorch eager on the same
# GPU with the same model, with each one's peak device memory, and cuBLAS
# SGEMM 4096^3 against torch.matmul. It prints tables last. Logs go to $OUT
# (or /tmp/gpu-check).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CARRY=$(dirname "$HERE")
BIN=$CARRY/bin
DATA=$CARRY/data
LOGS=${OUT:-/tmp/gpu-check}
mkdir -p "$LOGS"
MODE=${1:-full}
EPOCHS=${EPOCHS:-4}
TF32_EPOCHS=${TF32_EPOCHS:-$EPOCHS}
BATCH=256
T0=$(date +%s)
FAILURES=()

stage() { echo; echo "== [$(( $(date +%s) - T0 ))s] $*"; }
fail() { echo "FAILED: $*"; FAILURES+=("$*"); }
field() { # field NAME < line : the value of NAME=value
    sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" | tail -1
}

stage "machine"
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -4
ORIG_LD=${LD_LIBRARY_PATH:-}
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))" 2>&1 | tail -1
ldd --version 2>&1 | head -1

stage "CUDA libraries"
# shellcheck source=find-cuda-libs.sh
source "$HERE/find-cuda-libs.sh"
if ! "$BIN/fairgrid" --version >/dev/null 2>"$LOGS/fairgrid-start.log"; then
    cat "$LOGS/fairgrid-start.log"
    fail "the fairgrid binary does not start here (glibc too old?)"
fi

stage "fairgrid devices (probe, NVRTC compile, SGEMM 4096)"
"$BIN/fairgrid" devices --gemm-size 4096 --budget-ms 1500 2>&1 | tee "$LOGS/devices.log"
grep -q '^gpu0 .*sgemm_gflops=[0-9]' "$LOGS/devices.log" || fail "fairgrid devices found no usable GPU"
FG_SGEMM=$(grep '^gpu0' "$LOGS/devices.log" | field sgemm_gflops)

stage "parity and gradient tests on the GPU"
export FAIRGRID_PARITY_SEED=${FAIRGRID_PARITY_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "FAIRGRID_PARITY_SEED=$FAIRGRID_PARITY_SEED"
# name:binary:filter (the kernels' integration tests are one binary, `it`,
# with a module per former test file).
for t in parity:kernels-it:parity:: ops-gradcheck:kernels-it:::cuda kernels-lib:kernels-lib:""; do
    name=${t%%:*}
    rest=${t#*:}
    binary=${rest%%:*}
    filter=${rest#*:}
    if [ ! -x "$BIN/$binary" ]; then
        fail "test binary $binary missing"
        continue
    fi
    # shellcheck disable=SC2086
    # --nocapture: a skipped CUDA case says so on stderr, and that must show.
    "$BIN/$binary" $filter --test-threads=4 --nocapture >"$LOGS/test-$name.log" 2>&1
    rc=$?
    grep -E '^test result|skipping|^test .* FAILED|panicked' "$LOGS/test-$name.log" | head -20
    grep -E '^TF32|TF32 ' "$LOGS/test-$name.log" | head -10
    [ $rc -eq 0 ] || fail "tests $name (see test-$name.log)"
    if grep -q "skipping .* on cuda" "$LOGS/test-$name.log"; then
        fail "tests $name skipped their CUDA cases"
    fi
done

median_epochs() { # median samples_per_sec of epochs 2.. in a fairgrid log
    grep '^epoch ' "$1" | tail -n +2 | field samples_per_sec | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

SEEDS=${SEEDS:-1 2 3}
if [ "$MODE" = "--smoke" ]; then
    EPOCHS=3
    TF32_EPOCHS=0
    SEEDS=1
fi

train_run() { # train_run LOG ARGS... : fairgrid train, CNN, batch 256
    local log=$1
    shift
    "$BIN/fairgrid" train --model cnn --data "$DATA" --batch $BATCH --lr 0.05 \
        --epochs "$EPOCHS" "$@" >"$LOGS/$log.log" 2>&1
    local rc=$?
    grep -E '^(device|model|epoch|result|error|profile)' "$LOGS/$log.log" | sed 's/^/  /'
    return $rc
}

stage "CNN training on the GPU, fp32 ($EPOCHS epochs, batch $BATCH, seeds: $SEEDS)"
for seed in $SEEDS; do
    extra=()
    [ "$seed" = "${SEEDS%% *}" ] && extra=(--profile-steps 20)
    train_run "fairgrid-cuda-seed$seed" --device cuda --seed "$seed" "${extra[@]}" ||
        fail "fairgrid train --device cuda --seed $seed"
done
FIRST=${SEEDS%% *}
FG_SPS=$(median_epochs "$LOGS/fairgrid-cuda-seed$FIRST.log")
FG_MEM=$(grep '^result' "$LOGS/fairgrid-cuda-seed$FIRST.log" | field device_peak_mb)
FG_USED=$(grep '^result' "$LOGS/fairgrid-cuda-seed$FIRST.log" | field device_used_mb)

stage "PyTorch eager on the same GPU, fp32"
env LD_LIBRARY_PATH="$ORIG_LD" python3 "$HERE/torch_gpu.py" cnn --data "$DATA" --epochs "$EPOCHS" \
    --batch $BATCH 2>&1 | tee "$LOGS/torch-cnn.log" | grep -E '^torch' || fail "PyTorch CNN"
TORCH_LINE=$(grep '^torch_cnn' "$LOGS/torch-cnn.log")
TORCH_SPS=$(echo "$TORCH_LINE" | field median_samples_per_sec)
TORCH_MEM=$(echo "$TORCH_LINE" | field peak_mem_without_data_mb)
TORCH_USED=$(echo "$TORCH_LINE" | field device_used_mb)
TORCH_ACC=$(echo "$TORCH_LINE" | field test_accuracy)

stage "torch.matmul 4096^3 fp32"
env LD_LIBRARY_PATH="$ORIG_LD" python3 "$HERE/torch_gpu.py" sgemm --n 4096 --seconds 1.5 2>&1 |
    tee "$LOGS/torch-sgemm.log" | grep -E '^torch' || fail "PyTorch SGEMM"
TORCH_SGEMM=$(grep '^torch_sgemm' "$LOGS/torch-sgemm.log" | field gflops)

FG_TF32_SPS=""
TORCH_TF32_SPS=""
FG_TF32_ACC=""
if [ "$TF32_EPOCHS" -gt 0 ]; then
    stage "TF32: fairgrid --tf32 and PyTorch with TF32 ($TF32_EPOCHS epochs)"
    EPOCHS=$TF32_EPOCHS train_run fairgrid-cuda-tf32 --device cuda --tf32 --seed "$FIRST" ||
        fail "fairgrid --tf32"
    FG_TF32_SPS=$(median_epochs "$LOGS/fairgrid-cuda-tf32.log")
    FG_TF32_ACC=$(grep '^result' "$LOGS/fairgrid-cuda-tf32.log" | field test_accuracy)
    env LD_LIBRARY_PATH="$ORIG_LD" python3 "$HERE/torch_gpu.py" cnn --data "$DATA" \
        --epochs "$TF32_EPOCHS" --batch $BATCH --tf32 2>&1 | tee "$LOGS/torch-cnn-tf32.log" |
        grep -E '^torch_cnn' || fail "PyTorch CNN TF32"
    TORCH_TF32_SPS=$(grep '^torch_cnn' "$LOGS/torch-cnn-tf32.log" | field median_samples_per_sec)
fi

if [ "$MODE" != "--smoke" ]; then
    stage "the same trainings on the CPU backend ($(nproc) threads, seeds: $SEEDS)"
    for seed in $SEEDS; do
        train_run "fairgrid-cpu-seed$seed" --device cpu --seed "$seed" ||
            fail "fairgrid train --device cpu --seed $seed"
    done
fi
ACCURACY=""
for seed in $SEEDS; do
    cuda=$(grep '^result' "$LOGS/fairgrid-cuda-seed$seed.log" 2>/dev/null | field test_accuracy)
    cpu=$(grep '^result' "$LOGS/fairgrid-cpu-seed$seed.log" 2>/dev/null | field test_accuracy)
    ACCURACY="$ACCURACY $seed:${cuda:-}:${cpu:-}"
done

stage "summary"
python3 - "$FG_SPS" "$TORCH_SPS" "$FG_MEM" "$TORCH_MEM" "$FG_USED" "$TORCH_USED" \
    "$FG_SGEMM" "$TORCH_SGEMM" "$ACCURACY" "$TORCH_ACC" "$FG_TF32_SPS" \
    "$TORCH_TF32_SPS" "$FG_TF32_ACC" <<'PY'
import sys
(fg_sps, t_sps, fg_mem, t_mem, fg_used, t_used, fg_gemm, t_gemm, accuracy,
 t_acc, fg_tf32, t_tf32, fg_tf32_acc) = (sys.argv[1:] + [""] * 13)[:13]
num = lambda s: float(s) if s not in ("", None) else None
def ratio(a, b):
    a, b = num(a), num(b)
    return f"{a / b:.2f}x" if a and b else "-"
def show(v, fmt="{:.0f}"):
    v = num(v)
    return fmt.format(v) if v is not None else "-"
rows = [
    ("CNN training, samples/s (batch 256, fp32, median epoch)", show(fg_sps), show(t_sps), ratio(fg_sps, t_sps), ">= 1.0x"),
    ("peak device memory, MiB (allocator; PyTorch without its GPU-resident data set)", show(fg_mem, "{:.1f}"), show(t_mem, "{:.1f}"), ratio(fg_mem, t_mem), "<= 1.5x"),
    ("device memory in use after training, MiB (driver)", show(fg_used), show(t_used), ratio(fg_used, t_used), "(info)"),
    ("SGEMM 4096^3, GFLOP/s (fp32)", show(fg_gemm), show(t_gemm), ratio(fg_gemm, t_gemm), ">= 0.9x"),
    ("CNN training, samples/s, TF32", show(fg_tf32), show(t_tf32), ratio(fg_tf32, t_tf32), "(info)"),
]
print("| measure | fairgrid (CUDA) | PyTorch eager | ratio | target |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
acc = lambda s: f"{100 * num(s):.2f}%" if num(s) is not None else "-"
print()
print("| test accuracy (same seed and schedule) | fairgrid CUDA | fairgrid CPU | difference |")
print("|---|---|---|---|")
pairs = []
for item in accuracy.split():
    seed, cuda, cpu = item.split(":")
    d = f"{100 * (num(cuda) - num(cpu)):+.2f} pp" if num(cuda) is not None and num(cpu) is not None else "-"
    print(f"| seed {seed} | {acc(cuda)} | {acc(cpu)} | {d} |")
    if num(cuda) is not None and num(cpu) is not None:
        pairs.append((num(cuda), num(cpu)))
if pairs:
    mc = sum(p[0] for p in pairs) / len(pairs)
    mp = sum(p[1] for p in pairs) / len(pairs)
    verdict = "within 0.3 pp" if abs(mc - mp) <= 0.003 else "NOT within 0.3 pp"
    print(f"| mean of {len(pairs)} | {100 * mc:.2f}% | {100 * mp:.2f}% | {100 * (mc - mp):+.2f} pp ({verdict}) |")
print()
print(f"PyTorch eager, fp32, same schedule: {acc(t_acc)}; fairgrid CUDA with TF32: {acc(fg_tf32_acc)}")
PY
echo
echo "total $(( $(date +%s) - T0 ))s; logs in $LOGS"
if [ ${#FAILURES[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILURES[@]}"
    exit 1
fi
