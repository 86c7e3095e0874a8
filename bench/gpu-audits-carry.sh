#!/usr/bin/env bash
# Lays out what bench/gpu-audits.sh needs on the GPU machine (no Rust
# there) in DEST (default .device-carry/): the release `fairgrid-testnet`
# and the `audits` bench, stripped and gzipped, the scripts and the
# Fashion-MNIST files.
#
#   bench/gpu-audits-carry.sh [DEST] [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.device-carry}
DATA_DIR=${2:-/usr/share/datasets/fashion-mnist}

cargo build --release -p fairgrid-testnet
cargo bench -p fairgrid-node --features test-utils --bench audits --no-run
AUDITS=$(ls -t target/release/deps/audits-* | grep -v '\.d$' | head -1)
rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/bench" "$DEST/data"
strip -o "$DEST/bin/fairgrid-testnet" target/release/fairgrid-testnet
strip -o "$DEST/bin/audits" "$AUDITS"
gzip -9 "$DEST/bin/fairgrid-testnet" "$DEST/bin/audits"
cp bench/gpu-audits.sh bench/find-cuda-libs.sh "$DEST/bench/"
cp "$DATA_DIR"/*-ubyte* "$DEST/data/"
du -sh "$DEST" "$DEST"/bin/* "$DEST/data"
