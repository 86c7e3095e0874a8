#!/usr/bin/env bash
# Lays out what bench/gpu-jobs.sh needs on the GPU machine (no Rust there)
# in DEST (default .device-carry/): the release `fairgrid-testnet`,
# stripped and gzipped (its `node --` subcommand is `fairgrid`), the
# scripts and the Fashion-MNIST files (default: the full set from the
# Debian package dataset-fashion-mnist).
#
#   bench/gpu-jobs-carry.sh [DEST] [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.device-carry}
DATA_DIR=${2:-/usr/share/datasets/fashion-mnist}

cargo build --release -p fairgrid-testnet
rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/bench" "$DEST/data"
strip -o "$DEST/bin/fairgrid-testnet" target/release/fairgrid-testnet
gzip -9 "$DEST/bin/fairgrid-testnet"
cp bench/gpu-jobs.sh bench/find-cuda-libs.sh bench/torch_gpu.py "$DEST/bench/"
cp "$DATA_DIR"/*-ubyte* "$DEST/data/"
du -sh "$DEST" "$DEST"/bin/* "$DEST/data"
