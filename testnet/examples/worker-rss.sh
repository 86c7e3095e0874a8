#!/bin/bash
# Worker memory against its offer (issue 11, docs/benchmarks.md "Attacks,
# before and after"). Node A coordinates and does not work; node B works
# with offer.memory_mib=$MEM and one training thread. The job: a logreg
# (2.6 M parameters) on 60 random 512x512 images in 7 shards. Prints B's
# idle and peak RSS (VmHWM) and how the job ended.
#
#   cargo build -p fairgrid-node && MEM=160 testnet/examples/worker-rss.sh
set -u
BIN=${BIN:-target/debug/fairgrid}
MEM=${MEM:-64}
R=$(mktemp -d /tmp/worker-rss.XXXX)
trap 'kill $A $B 2>/dev/null; wait; rm -rf "$R"' EXIT
python3 - "$R/data" <<'PY'
import os, random, struct, sys
d = sys.argv[1]; os.makedirs(d); random.seed(1)
def images(name, n):
    with open(f"{d}/{name}", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 512, 512)); f.write(os.urandom(n * 512 * 512))
def labels(name, n):
    with open(f"{d}/{name}", "wb") as f:
        f.write(struct.pack(">II", 0x801, n)); f.write(bytes(random.randrange(10) for _ in range(n)))
images("train-images-idx3-ubyte", 60); labels("train-labels-idx1-ubyte", 60)
images("t10k-images-idx3-ubyte", 10); labels("t10k-labels-idx1-ubyte", 10)
PY
cat > "$R/job.toml" <<TOML
name = "big-images"
[model]
arch = "logreg"
[data]
source = "$R/data"
shard_size = 9
[training]
rounds = 5
local_steps = 2
batch_size = 8
[market]
alpha = 1.0
bid_window_secs = 3
round_timeout_secs = 60
[market.demand_per_shard]
cpu_milli = 1
mem_mib = 1
TOML
$BIN init --data-dir "$R/a" --listen /ip4/127.0.0.1/tcp/47101 --api-listen 127.0.0.1:47111 > "$R/a.init"
$BIN init --data-dir "$R/b" --listen /ip4/127.0.0.1/tcp/47102 --api-listen 127.0.0.1:47112 > /dev/null
APEER=$(grep "peer id" "$R/a.init" | awk '{print $3}')
FAIRGRID_WORKER_ENABLED=false $BIN run --data-dir "$R/a" --no-mdns > "$R/a.log" 2>&1 &
A=$!
sleep 2
FAIRGRID_OFFER_MEMORY_MIB=$MEM FAIRGRID_WORKER_THREADS=1 $BIN run --data-dir "$R/b" --no-mdns \
  --bootstrap "/ip4/127.0.0.1/tcp/47101/p2p/$APEER" > "$R/b.log" 2>&1 &
B=$!
sleep 4
echo "offer $MEM MiB; B idle: $(awk '/VmRSS/ {print $2}' /proc/$B/status) kB"
JOB=$($BIN job submit "$R/job.toml" --data-dir "$R/a" | grep -o "[0-9a-f]\{64\}" | head -1)
state=""
for _ in $(seq 1 120); do
  state=$(curl -s -H "Authorization: Bearer $(cat "$R/a/api.token")" "http://127.0.0.1:47111/v1/jobs/$JOB" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["state"], "round", d["round"], d.get("error") or "")')
  case "$state" in finished*|failed*) break ;; esac
  sleep 1
done
echo "job: $state"
echo "B peak: $(awk '/VmHWM/ {print $2}' /proc/$B/status) kB"
sed 's/\x1b\[[0-9;]*m//g' "$R/b.log" | grep -oE "not bidding.*|allocation verified.*shards=[0-9]+" | head -2
