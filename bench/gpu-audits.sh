#!/usr/bin/env bash
# Audits with a GPU (issue 13), in one run on a GPU machine: honest rounds
# trained on CUDA and on 1 or 16 CPU threads, each recomputed on one CPU
# thread, their distance against the tolerance; the cheats; the detection
# draw; then a testnet job whose workers train on the GPU while the
# coordinator audits them on the CPU (0 false positives expected).
#
# Laid out by bench/gpu-audits-carry.sh:
#   CARRY/bin/{fairgrid-testnet,audits}.gz   release builds, stripped
#   CARRY/bench/{gpu-audits.sh,find-cuda-libs.sh}
#   CARRY/data/                              Fashion-MNIST IDX files
#
#   bash CARRY/bench/gpu-audits.sh           # on the GPU machine
#   bash CARRY/bench/gpu-audits.sh --smoke   # anywhere: CPU, tiny settings
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CARRY=$(dirname "$HERE")
BIN=$CARRY/bin
DATA=${DATA:-$CARRY/data}
LOGS=${OUT:-/tmp/gpu-audits}
MODE=${1:-full}
mkdir -p "$LOGS"
T0=$(date +%s)
FAILURES=()
stage() { echo; echo "== [$(( $(date +%s) - T0 ))s] $*"; }
fail() { echo "FAILED: $*"; FAILURES+=("$*"); }

for b in fairgrid-testnet audits; do
    if [ -f "$BIN/$b.gz" ] && [ ! -x "$BIN/$b" ]; then
        gzip -dc "$BIN/$b.gz" >"$BIN/$b" && chmod +x "$BIN/$b"
    fi
done

CNN_CASES=30
MLP_CASES=40
DEVICE=(--device cuda)
ROUNDS=10
DATA_ARG=$DATA
if [ "$MODE" = "--smoke" ]; then
    CNN_CASES=2
    MLP_CASES=3
    DEVICE=()
    ROUNDS=3
    DATA_ARG=builtin
else
    # shellcheck source=find-cuda-libs.sh
    source "$HERE/find-cuda-libs.sh"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
fi
THREADS=$(nproc)

stage "honest and cheating rounds, CNN ($CNN_CASES cases per device)"
"$BIN/audits" --model cnn --cases "$CNN_CASES" --threads "1,$THREADS" --jobs 1000 2>&1 |
    tee "$LOGS/cnn.txt" || fail "cnn bench"
stage "honest and cheating rounds, MLP ($MLP_CASES cases per device)"
"$BIN/audits" --model mlp --cases "$MLP_CASES" --threads "1,$THREADS" --jobs 10 2>&1 |
    tee "$LOGS/mlp.txt" || fail "mlp bench"

stage "a job on the GPU, audited on the coordinator's CPU ($ROUNDS rounds)"
rm -rf /tmp/gpu-audits-testnet
"$BIN/fairgrid-testnet" demo "${DEVICE[@]}" --data "$DATA_ARG" --nodes 4 --owners 3 --model cnn \
    --batch 32 --local-steps 20 --rounds "$ROUNDS" --lr 0.05 --bid-window-secs 10 \
    --round-timeout-secs 90 --keep /tmp/gpu-audits-testnet --timeout-secs 240 \
    >"$LOGS/job.log" 2>&1 || fail "the GPU job"
grep -E '^(result|error)' "$LOGS/job.log" | sed 's/^/  /'
sed 's/\x1b\[[0-9;]*m//g' /tmp/gpu-audits-testnet/node*/node.log 2>/dev/null |
    grep -E "trainer built" | sed -n 's/.*device=\([^ ]*\).*/\1/p' | sort | uniq -c | sed 's/^/  trainers on /'
sed 's/\x1b\[[0-9;]*m//g' /tmp/gpu-audits-testnet/node*/node.log 2>/dev/null |
    grep -E "audit (passed|failed)" >"$LOGS/audits.txt"
echo "  audits passed: $(grep -c 'audit passed' "$LOGS/audits.txt"), failed: $(grep -c 'audit failed' "$LOGS/audits.txt")"
grep -o 'relative distance [0-9.e+-]*' "$LOGS/audits.txt" | awk '{print $3}' | sort -g | tail -3 | sed 's/^/  largest distances: /'
grep 'audit failed' "$LOGS/audits.txt" | head -3 | sed 's/^/  /'
sed 's/\x1b\[[0-9;]*m//g' /tmp/gpu-audits-testnet/node*/node.log 2>/dev/null | grep "round audited" |
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] } }
         END { printf "  audit cost in the job: %d of %d updates drawn, %d ms auditing for %d ms of worker training (%.1f%%)\n",
               v["drawn"], v["updates"], v["audit_ms"], v["worker_ms"], 100 * v["audit_ms"] / (v["worker_ms"] + 1e-9) }'

echo
echo "total $(( $(date +%s) - T0 ))s; logs in $LOGS"
if [ ${#FAILURES[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILURES[@]}"
    exit 1
fi
