"""PyTorch side of bench/pytorch-compare.sh: trains the fairgrid zoo CNN
(conv32-pool-conv64-pool-conv128-pool-fc128-fc10) on Fashion-MNIST with the
same optimizer, batch and thread count as `fairgrid train`, and prints one
line: `torch samples_per_sec=... peak_rss_mb=... test_accuracy=...`.

Data stays uint8 and is converted per batch, as fairgrid does, so the
memory figures compare like with like.
"""
import argparse
import gzip
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndims = raw[3]
    dims = struct.unpack(">" + "I" * ndims, raw[4:4 + 4 * ndims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndims).reshape(dims)


def find(data_dir, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(os.path.join(data_dir, name))


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def cnn():
    # The same layers, in the same order, as fairgrid's zoo CNN for 28x28x1.
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x_train = torch.from_numpy(read_idx(find(a.data, "train-images-idx3-ubyte")).copy())
    y_train = torch.from_numpy(read_idx(find(a.data, "train-labels-idx1-ubyte")).astype(np.int64))
    x_test = torch.from_numpy(read_idx(find(a.data, "t10k-images-idx3-ubyte")).copy())
    y_test = torch.from_numpy(read_idx(find(a.data, "t10k-labels-idx1-ubyte")).astype(np.int64))
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    n = x_train.shape[0]
    g = torch.Generator().manual_seed(a.seed)
    order = torch.randperm(n, generator=g)
    cursor = 0
    start = time.perf_counter()
    for _ in range(a.steps):
        if cursor + a.batch > n:
            order = torch.randperm(n, generator=g)
            cursor = 0
        idx = order[cursor:cursor + a.batch]
        cursor += a.batch
        xb = x_train[idx].unsqueeze(1).float().div_(255.0)
        yb = y_train[idx]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    correct = 0
    with torch.no_grad():
        for i in range(0, x_test.shape[0], a.batch):
            xb = x_test[i:i + a.batch].unsqueeze(1).float().div_(255.0)
            correct += (model(xb).argmax(1) == y_test[i:i + a.batch]).sum().item()
    print(
        f"torch samples_per_sec={a.steps * a.batch / elapsed:.0f} "
        f"peak_rss_mb={peak_rss_mb():.0f} test_accuracy={correct / x_test.shape[0]:.4f} "
        f"torch_version={torch.__version__} threads={torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
