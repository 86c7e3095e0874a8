"""PyTorch side of bench/gpu-check.sh, on the GPU.

`cnn`: trains fairgrid's zoo CNN (conv32-pool-conv64-pool-conv128-pool-
fc128-fc10) on Fashion-MNIST with the same optimizer, batch and epoch
structure as `fairgrid train --device cuda`: fp32 (TF32 off unless
--tf32), data resident on the GPU as uint8 and converted per batch, no
host synchronisation inside an epoch. `--mode` picks how PyTorch runs it:

- `eager` (default): the model and torch.optim.SGD as written;
- `compile`: the model through torch.compile(mode="max-autotune") (which
  autotunes the kernels and replays CUDA graphs); the epoch's last,
  smaller batch is dropped so that one shape is compiled;
- `graphs`: the model through torch.compile(mode="reduce-overhead"):
  forward and backward replayed as CUDA graphs, without the autotuning;
  the optimizer step stays eager (foreach SGD); the last, smaller batch is
  dropped too. (A hand-captured whole step crashed on the H200, segfault
  and device-side assert, and was dropped.)

Epoch 1 (compilation, capture) is left out of the median. Prints one line
per epoch and a summary line:

    torch_cnn median_samples_per_sec=... peak_mem_mb=... test_accuracy=... mode=...

`sgemm`: times torch.matmul on two fp32 n x n matrices the way `fairgrid
devices --gemm-size n` times cuBLAS (two warm-up products, then batches of
about 20 ms between synchronisations for --seconds):

    torch_sgemm n=4096 gflops=...
"""
import argparse
import gzip
import os
import statistics
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


def cnn():
    # The same layers, in the same order, as fairgrid's zoo CNN for 28x28x1.
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def set_precision(tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def train_cnn(a):
    dev = torch.device("cuda")
    set_precision(a.tf32)
    torch.manual_seed(a.seed)
    load = lambda name: torch.from_numpy(read_idx(find(a.data, name)).copy()).to(dev)
    x_train, y_train = load("train-images-idx3-ubyte"), load("train-labels-idx1-ubyte").long()
    x_test, y_test = load("t10k-images-idx3-ubyte"), load("t10k-labels-idx1-ubyte").long()
    # The data live on the GPU; fairgrid keeps them on the host, so the
    # memory comparison leaves them out (data_mb says how much they are).
    data_bytes = sum(t.numel() * t.element_size() for t in (x_train, y_train, x_test, y_test))
    model = cnn().to(dev)
    loss_fn = nn.CrossEntropyLoss()
    n = x_train.shape[0]
    drop_last = a.mode != "eager"
    steps_per_epoch = n // a.batch if drop_last else (n + a.batch - 1) // a.batch
    used = steps_per_epoch * a.batch if drop_last else n
    total = steps_per_epoch * a.epochs
    schedule = lambda step: a.lr * 0.5 * (1 + np.cos(np.pi * min(step, total) / total))
    step_fn = make_step(a, model, loss_fn, dev)
    g = torch.Generator(device=dev).manual_seed(a.seed)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    rates = []
    step = 0
    for epoch in range(1, a.epochs + 1):
        order = torch.randperm(n, device=dev, generator=g)
        loss_sum = torch.zeros((), device=dev)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, used, a.batch):
            # Cosine schedule, as fairgrid's default.
            idx = order[i:i + a.batch]
            xb = x_train[idx].unsqueeze(1).float().div_(255.0)
            yb = y_train[idx]
            loss = step_fn(xb, yb, schedule(step))
            loss_sum += loss * yb.shape[0]
            step += 1
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        rates.append(used / elapsed)
        correct = 0
        with torch.no_grad():
            for i in range(0, x_test.shape[0], a.batch):
                xb = x_test[i:i + a.batch].unsqueeze(1).float().div_(255.0)
                correct += (model(xb).argmax(1) == y_test[i:i + a.batch]).sum().item()
        acc = correct / x_test.shape[0]
        print(f"torch epoch {epoch} train_loss={loss_sum.item() / used:.4f} test_acc={acc:.4f} "
              f"samples_per_sec={used / elapsed:.0f}", flush=True)
    steady = rates[1:] if len(rates) > 1 else rates
    free, total_mem = torch.cuda.mem_get_info()
    print(
        f"torch_cnn median_samples_per_sec={statistics.median(steady):.0f} "
        f"peak_mem_mb={torch.cuda.max_memory_allocated() / 2**20:.1f} "
        f"data_mb={data_bytes / 2**20:.1f} "
        f"peak_mem_without_data_mb={(torch.cuda.max_memory_allocated() - data_bytes) / 2**20:.1f} "
        f"device_used_mb={(total_mem - free) / 2**20:.0f} test_accuracy={acc:.4f} "
        f"tf32={int(a.tf32)} mode={a.mode} batch={a.batch} torch={torch.__version__} cuda={torch.version.cuda} "
        f"cudnn={torch.backends.cudnn.version()}",
        flush=True,
    )


def make_step(a, model, loss_fn, dev):
    """A function (images, labels, lr) -> detached loss that trains one step."""
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    compiled = {"compile": "max-autotune", "graphs": "reduce-overhead"}
    forward = torch.compile(model, mode=compiled[a.mode]) if a.mode in compiled else model

    def step(xb, yb, lr):
        if a.mode in compiled:
            # A new iteration: the CUDA graphs may reuse the last one's outputs.
            torch.compiler.cudagraph_mark_step_begin()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(forward(xb), yb)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def time_sgemm(a):
    set_precision(a.tf32)
    dev = torch.device("cuda")
    x = torch.full((a.n, a.n), 0.5, device=dev)
    y = torch.full((a.n, a.n), 0.25, device=dev)
    out = torch.empty_like(x)
    for _ in range(2):
        torch.matmul(x, y, out=out)
    torch.cuda.synchronize()
    start = time.perf_counter()
    torch.matmul(x, y, out=out)
    torch.cuda.synchronize()
    one = max(time.perf_counter() - start, 1e-6)
    per_batch = max(1, min(1000, int(np.ceil(0.02 / one))))
    runs = 0
    start = time.perf_counter()
    while runs == 0 or time.perf_counter() - start < a.seconds:
        for _ in range(per_batch):
            torch.matmul(x, y, out=out)
        torch.cuda.synchronize()
        runs += per_batch
    gflops = 2 * a.n ** 3 * runs / (time.perf_counter() - start) / 1e9
    print(f"torch_sgemm n={a.n} gflops={gflops:.1f} tf32={int(a.tf32)}", flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cnn")
    c.add_argument("--data", required=True)
    c.add_argument("--epochs", type=int, default=5)
    c.add_argument("--batch", type=int, default=256)
    c.add_argument("--lr", type=float, default=0.05)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--tf32", action="store_true")
    c.add_argument("--mode", choices=["eager", "compile", "graphs"], default="eager")
    s = sub.add_parser("sgemm")
    s.add_argument("--n", type=int, default=4096)
    s.add_argument("--seconds", type=float, default=1.0)
    s.add_argument("--tf32", action="store_true")
    a = p.parse_args()
    if a.what == "cnn":
        train_cnn(a)
    else:
        time_sgemm(a)


if __name__ == "__main__":
    main()
