#!/usr/bin/env bash
# Trains the zoo CNN with PyTorch and with `fairgrid train` for the same
# number of steps, batch size and thread count, alternating the two for
# ROUNDS rounds in one run, and prints both throughputs, the ratio and each
# one's peak memory (VmHWM). Not part of CI: it installs PyTorch from PyPI
# into bench/.venv on first use (PyPI's Linux wheel also pulls CUDA
# libraries, which stay unused: training runs on the CPU).
#
#   bench/pytorch-compare.sh                  # builtin subset, 300 steps, batch 64, 2 threads
#   STEPS=500 ROUNDS=5 DATA=/usr/share/datasets/fashion-mnist bench/pytorch-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-300}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
BATCH=${BATCH:-64}
LR=${LR:-0.05}
DATA=${DATA:-builtin}
VENV=bench/.venv

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch, numpy" 2>/dev/null; then
    echo "== installing torch and numpy into $VENV (once)"
    "$VENV/bin/pip" install --quiet torch numpy
fi

echo "== building fairgrid (release)"
cargo build --release --quiet -p fairgrid-node
FAIRGRID=target/release/fairgrid

if [ "$DATA" = builtin ]; then
    TORCH_DATA=kernels/data
else
    TORCH_DATA=$DATA
fi
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round/$ROUNDS"
    "$VENV/bin/python" bench/torch_cnn.py --data "$TORCH_DATA" --steps "$STEPS" \
        --batch "$BATCH" --threads "$THREADS" --lr "$LR" | tee -a "$LOG"
    "$FAIRGRID" train --model cnn --data "$DATA" --batch "$BATCH" --threads "$THREADS" \
        --lr "$LR" --schedule constant --epochs 1000 --max-steps "$STEPS" \
        | grep '^result' | sed 's/^result/fairgrid/' | tee -a "$LOG"
done

"$VENV/bin/python" - "$LOG" "$STEPS" "$BATCH" "$THREADS" <<'PY'
import re, statistics, sys
log, steps, batch, threads = sys.argv[1:]
runs = {"torch": [], "fairgrid": []}
for line in open(log):
    kind = line.split()[0]
    if kind in runs:
        fields = dict(re.findall(r"(\w+)=([\w.+-]+)", line))
        sps = float(fields.get("samples_per_sec") or fields["train_samples_per_sec"])
        runs[kind].append((sps, float(fields["peak_rss_mb"])))
t, f = runs["torch"], runs["fairgrid"]
best = lambda rs: max(r[0] for r in rs)
med = lambda rs: statistics.median(r[0] for r in rs)
mem = lambda rs: max(r[1] for r in rs)
print()
print(f"CNN training, batch {batch}, {threads} threads, {steps} steps per run, {len(t)} rounds")
print("| | PyTorch | fairgrid | fairgrid / PyTorch |")
print("|---|---|---|---|")
print(f"| samples/s, best run | {best(t):.0f} | {best(f):.0f} | {best(f) / best(t):.2f}x |")
print(f"| samples/s, median | {med(t):.0f} | {med(f):.0f} | {med(f) / med(t):.2f}x |")
print(f"| peak RSS MiB | {mem(t):.0f} | {mem(f):.0f} | {mem(f) / mem(t):.2f}x |")
PY
