#!/usr/bin/env bash
# Jobs on a GPU, in one run on a GPU machine (issue 12): a testnet job whose
# workers (node processes sharing the GPU) train on CUDA, against
# `fairgrid train --device cuda` on the same data and number of samples;
# then fairgrid's CNN training against PyTorch eager, torch.compile
# (max-autotune) and a CUDA-graph step, at batch 256 and 1024.
#
# The machine needs the NVIDIA driver, the CUDA 13 (or 12) libraries and
# python3 with PyTorch; no Rust, no network. Laid out by
# bench/gpu-jobs-carry.sh:
#
#   CARRY/bin/fairgrid-testnet(.gz)   release build (its `node --` is `fairgrid`)
#   CARRY/bench/{gpu-jobs.sh,find-cuda-libs.sh,torch_gpu.py}
#   CARRY/data/                       Fashion-MNIST IDX files
#
#   bash CARRY/bench/gpu-jobs.sh            # everything
#   bash CARRY/bench/gpu-jobs.sh --smoke    # no GPU needed: the CPU paths,
#                                           # tiny settings (checks the script)
#
# Settings by environment: BATCH (per shard, 64), LOCAL (local steps, 200),
# ROUNDS (5), LR (0.05); SKIP_KERNELS=1 runs the job and its reference only.
#
# Logs go to $OUT (or /tmp/gpu-jobs); tables are printed last.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CARRY=$(dirname "$HERE")
BIN=$CARRY/bin
DATA=${DATA:-$CARRY/data}
LOGS=${OUT:-/tmp/gpu-jobs}
mkdir -p "$LOGS"
MODE=${1:-full}
T0=$(date +%s)
FAILURES=()

stage() { echo; echo "== [$(( $(date +%s) - T0 ))s] $*"; }
fail() { echo "FAILED: $*"; FAILURES+=("$*"); }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" | tail -1; }

if [ -f "$BIN/fairgrid-testnet.gz" ] && [ ! -x "$BIN/fairgrid-testnet" ]; then
    gzip -dc "$BIN/fairgrid-testnet.gz" >"$BIN/fairgrid-testnet" && chmod +x "$BIN/fairgrid-testnet"
fi
TESTNET=$BIN/fairgrid-testnet
fairgrid() { "$TESTNET" node -- "$@"; }

# The job: 3 owners x 4 shards of the training set; each worker steps on
# BATCH samples from each shard it holds (4 shards: 4 x BATCH), LOCAL
# steps a round, ROUNDS rounds. The reference trains the same number of
# samples at the batch of one owner's 4 shards.
DEVICE=cuda
SHARDS=12
BATCH=${BATCH:-64}
LOCAL=${LOCAL:-200}
ROUNDS=${ROUNDS:-5}
LR=${LR:-0.05}
TRAIN_SAMPLES=60000
EPOCHS=4
if [ "$MODE" = "--smoke" ]; then
    DEVICE=cpu
    BATCH=4
    LOCAL=5
    ROUNDS=2
    TRAIN_SAMPLES=2400
    EPOCHS=1
fi
JOB_SAMPLES=$(( SHARDS * BATCH * LOCAL * ROUNDS ))
REF_BATCH=$(( 4 * BATCH ))
REF_STEPS=$(( JOB_SAMPLES / REF_BATCH ))
REF_EPOCHS=$(( (REF_STEPS * REF_BATCH + TRAIN_SAMPLES - 1) / TRAIN_SAMPLES ))

stage "machine"
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tail -1
ORIG_LD=${LD_LIBRARY_PATH:-}
if [ "$DEVICE" = cuda ]; then
    # shellcheck source=find-cuda-libs.sh
    source "$HERE/find-cuda-libs.sh"
fi
fairgrid --version || fail "the binary does not start here"

DATA_ARG=$DATA
if [ "$MODE" = "--smoke" ]; then
    DATA_ARG=builtin
fi

stage "reference: fairgrid train --device $DEVICE, $JOB_SAMPLES samples ($REF_STEPS steps of $REF_BATCH)"
fairgrid train --device "$DEVICE" --model cnn --data "$DATA_ARG" --batch "$REF_BATCH" --lr "$LR" \
    --epochs "$REF_EPOCHS" --max-steps "$REF_STEPS" --seed 1 >"$LOGS/reference.log" 2>&1 ||
    fail "reference training"
grep -E '^(device|model|epoch|result|error)' "$LOGS/reference.log" | sed 's/^/  /'
REF_SPS=$(grep '^result' "$LOGS/reference.log" | field train_samples_per_sec)
REF_ACC=$(grep '^result' "$LOGS/reference.log" | field test_accuracy)

stage "the job: ${NODES:-4} node processes, 3 owners, workers on $DEVICE ($ROUNDS rounds x $LOCAL steps x $BATCH per shard)"
rm -rf /tmp/gpu-jobs-testnet
DEMO_DEVICE=()
[ "$DEVICE" = cuda ] && DEMO_DEVICE=(--device cuda)
MAX_SAMPLES=()
[ "$MODE" = "--smoke" ] && MAX_SAMPLES=(--max-train-samples "$TRAIN_SAMPLES")
"$TESTNET" demo "${DEMO_DEVICE[@]}" --data "$DATA_ARG" --nodes "${NODES:-4}" --owners 3 --model cnn \
    --batch "$BATCH" --local-steps "$LOCAL" --rounds "$ROUNDS" --lr "$LR" --bid-window-secs 10 \
    --round-timeout-secs 60 "${MAX_SAMPLES[@]}" --keep /tmp/gpu-jobs-testnet --timeout-secs 400 \
    >"$LOGS/job.log" 2>&1 || fail "the GPU job"
grep -E '^(fairgrid testnet|job:|result|error)|^ *[0-9]+ +[0-9.-]+ ' "$LOGS/job.log" | head -30 | sed 's/^/  /'
JOB_SPS=$(grep '^result' "$LOGS/job.log" | field samples_per_sec)
JOB_ACC=$(grep '^result' "$LOGS/job.log" | field test_accuracy)
echo "  trainers built (device, batch), all nodes:"
# The node logs carry ANSI colours: strip them before matching.
sed 's/\x1b\[[0-9;]*m//g' /tmp/gpu-jobs-testnet/node*/node.log 2>/dev/null | grep "trainer built" |
    sed -n 's/.*device=\(.*\) batch=\([0-9]*\).*/\1 batch \2/p' | sort | uniq -c | sed 's/^/    /' |
    tee "$LOGS/trainers.txt"
echo "  evaluators and speed probes:"
sed 's/\x1b\[[0-9;]*m//g' /tmp/gpu-jobs-testnet/node*/node.log 2>/dev/null |
    grep -E "evaluator built|measured this node's speed" | sed 's/^.*INFO *//' | sort | uniq -c | sed 's/^/    /'
if [ "$DEVICE" = cuda ] && ! grep -q "cuda:" "$LOGS/trainers.txt"; then
    fail "no worker trained on the GPU"
fi
tar -czf "$LOGS/job-node-logs.tgz" -C /tmp/gpu-jobs-testnet $(cd /tmp/gpu-jobs-testnet && ls -d node*/node.log) 2>/dev/null

median_epochs() { # median samples_per_sec of epochs 2.. of a fairgrid train log
    grep '^epoch ' "$1" | tail -n +2 | field samples_per_sec | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

KERNEL_ROWS=""
KERNEL_BATCHES="256 1024"
[ -n "${SKIP_KERNELS:-}" ] && KERNEL_BATCHES=""
for batch in $KERNEL_BATCHES; do
    stage "kernel bar, batch $batch: fairgrid train --device $DEVICE ($EPOCHS epochs)"
    fairgrid train --device "$DEVICE" --model cnn --data "$DATA_ARG" --batch "$batch" --lr 0.05 \
        --epochs $(( EPOCHS + 1 )) --seed 1 >"$LOGS/fairgrid-b$batch.log" 2>&1 ||
        fail "fairgrid train batch $batch"
    grep -E '^(epoch|result)' "$LOGS/fairgrid-b$batch.log" | sed 's/^/  /'
    row="$batch:$(median_epochs "$LOGS/fairgrid-b$batch.log")"
    for mode in eager graphs compile; do
        [ "$MODE" = "--smoke" ] && break
        stage "PyTorch $mode, batch $batch"
        limit=150
        [ "$mode" = compile ] && limit=140
        timeout "$limit" env LD_LIBRARY_PATH="$ORIG_LD" PYTHONUNBUFFERED=1 python3 "$HERE/torch_gpu.py" cnn \
            --data "$DATA" --epochs $(( EPOCHS + 1 )) --batch "$batch" --mode "$mode" \
            >"$LOGS/torch-$mode-b$batch.log" 2>&1 || fail "PyTorch $mode batch $batch (rc $?)"
        grep -E '^torch' "$LOGS/torch-$mode-b$batch.log" | sed 's/^/  /'
        tail -3 "$LOGS/torch-$mode-b$batch.log" | grep -iE 'error|exception' | sed 's/^/  /'
        row="$row:$(grep '^torch_cnn' "$LOGS/torch-$mode-b$batch.log" | field median_samples_per_sec)"
    done
    KERNEL_ROWS="$KERNEL_ROWS $row"
done

stage "summary"
python3 - "$REF_SPS" "$REF_ACC" "$JOB_SPS" "$JOB_ACC" "$JOB_SAMPLES" "$KERNEL_ROWS" <<'PY'
import sys
ref_sps, ref_acc, job_sps, job_acc, samples, kernel_rows = (sys.argv[1:] + [""] * 6)[:6]
num = lambda s: float(s) if s not in ("", None) else None
show = lambda v, f="{:.0f}": f.format(num(v)) if num(v) is not None else "-"
pct = lambda v: f"{100 * num(v):.2f}%" if num(v) is not None else "-"
print(f"| {samples} samples | samples/s | test accuracy |")
print("|---|---|---|")
print(f"| fairgrid train (one process) | {show(ref_sps)} | {pct(ref_acc)} |")
print(f"| the job (workers in node processes sharing the GPU) | {show(job_sps)} | {pct(job_acc)} |")
if num(ref_sps) and num(job_sps):
    over = 1 - num(job_sps) / num(ref_sps)
    print(f"throughput overhead {100 * over:+.1f}% (target <= 15%); ", end="")
if num(ref_acc) is not None and num(job_acc) is not None:
    print(f"accuracy {100 * (num(job_acc) - num(ref_acc)):+.2f} pp (target within 0.5 pp)")
print()
print("| batch | fairgrid | PyTorch eager | compile (max-autotune) | CUDA graph | fairgrid / best PyTorch |")
print("|---|---|---|---|---|---|")
for row in kernel_rows.split():
    parts = (row.split(":") + [""] * 5)[:5]
    batch, fg, eager, graphs, comp = parts
    best = max([v for v in (num(eager), num(graphs), num(comp)) if v], default=None)
    ratio = f"{num(fg) / best:.2f}x" if best and num(fg) else "-"
    print(f"| {batch} | {show(fg)} | {show(eager)} | {show(comp)} | {show(graphs)} | {ratio} |")
PY
echo
echo "total $(( $(date +%s) - T0 ))s; logs in $LOGS"
if [ ${#FAILURES[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILURES[@]}"
    exit 1
fi
