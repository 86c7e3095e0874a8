"""Loads a fairgrid model file into the equivalent PyTorch nn.Sequential and
evaluates it on Fashion-MNIST's test split (the snippet in docs/kernels.md,
made runnable):

    bench/.venv/bin/python bench/load_in_pytorch.py model.safetensors [DATA_DIR]
"""
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file


def sequential(spec):
    c, h, w = spec["input"]["channels"], spec["input"]["height"], spec["input"]["width"]
    arch, classes = spec["arch"], spec["classes"]
    if arch == "log_reg":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes))
    if isinstance(arch, dict) and "mlp" in arch:
        layers, width = [nn.Flatten()], c * h * w
        for hidden in arch["mlp"]["hidden"]:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        return nn.Sequential(*layers, nn.Linear(width, classes))
    if arch == "cnn":
        return nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(128 * (h // 8) * (w // 8), 128), nn.ReLU(),
            nn.Linear(128, classes),
        )
    raise ValueError(f"unknown arch {arch!r}")


def read_idx(path):
    raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
    dims = struct.unpack(">" + "I" * raw[3], raw[4:4 + 4 * raw[3]])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def main():
    path = sys.argv[1]
    data = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist"
    with safe_open(path, "pt") as f:
        spec = json.loads(f.metadata()["fairgrid.model"])
    model = sequential(spec)
    model.load_state_dict(load_file(path))  # strict: every name and shape must match
    model.eval()
    find = lambda n: next(p for p in (os.path.join(data, n), os.path.join(data, n + ".gz")) if os.path.exists(p))
    x = torch.from_numpy(read_idx(find("t10k-images-idx3-ubyte")).copy()).unsqueeze(1).float() / 255
    y = torch.from_numpy(read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64))
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"pytorch test_accuracy={accuracy:.4f} ({spec['arch']}, {len(y)} samples)")


if __name__ == "__main__":
    main()
