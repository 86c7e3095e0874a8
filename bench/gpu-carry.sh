#!/usr/bin/env bash
# Builds what bench/gpu-check.sh needs on the GPU machine (which has no
# Rust) and lays it out in DEST (default .device-carry/ in the repository):
# the release `fairgrid`, the kernels test binaries with CUDA cases, the
# scripts and the Fashion-MNIST files. Binaries are stripped to keep the
# copy small.
#
#   bench/gpu-carry.sh [DEST] [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.device-carry}
DATA_DIR=${2:-kernels/data}

echo "== building (release)"
cargo build --release -p fairgrid-node
cargo test --release -p fairgrid-kernels --no-run --message-format=json 2>/dev/null >/tmp/fairgrid-test-build.json
mkdir -p "$DEST/bin" "$DEST/bench" "$DEST/data"
cp target/release/fairgrid "$DEST/bin/fairgrid"
python3 - "$DEST/bin" /tmp/fairgrid-test-build.json <<'PY'
import json, shutil, sys
dest, log = sys.argv[1], sys.argv[2]
wanted = {"it": "kernels-it", "fairgrid_kernels": "kernels-lib"}
found = {}
for line in open(log):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    target = msg["target"]
    name = target["name"]
    if name in wanted and (target["kind"] != ["lib"] or msg["profile"]["test"]):
        found[wanted[name]] = msg["executable"]
missing = set(wanted.values()) - set(found)
if missing:
    sys.exit(f"test binaries not built: {sorted(missing)}")
for short, path in found.items():
    shutil.copy(path, f"{dest}/{short}")
    print(f"{short} <- {path}")
PY
strip "$DEST"/bin/* 2>/dev/null || true
cp bench/gpu-check.sh bench/find-cuda-libs.sh bench/torch_gpu.py "$DEST/bench/"
cp "$DATA_DIR"/*-ubyte* "$DEST/data/"
du -sh "$DEST" "$DEST"/bin/* "$DEST/data"
