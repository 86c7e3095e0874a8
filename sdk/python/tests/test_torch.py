"""The PyTorch bridge. Runs where PyTorch is installed (`.ci/run` installs
it and sets FAIRGRID_REQUIRE_TORCH, so there a missing PyTorch fails);
elsewhere pytest reports these tests as skipped."""

import gzip
import os
import struct
from pathlib import Path

import pytest

if os.environ.get("FAIRGRID_REQUIRE_TORCH"):
    import torch
else:
    torch = pytest.importorskip("torch")
nn = torch.nn

import fairgrid  # noqa: E402
import fairgrid.torch as ft  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "kernels" / "data"


def test_zoo_shapes_keep_their_names():
    assert ft.arch_of(nn.Sequential(nn.Flatten(), nn.Linear(784, 10))) == {"arch": "logreg"}
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    assert ft.arch_of(mlp) == {"arch": "mlp", "hidden": [64]}
    wide = nn.Sequential(nn.Flatten(), nn.Linear(784, 9000), nn.ReLU(), nn.Linear(9000, 10))
    assert ft.arch_of(wide)["arch"] == "layers", "beyond the zoo's bounds: declared"
    cnn = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1152, 128), nn.ReLU(), nn.Linear(128, 10))
    assert ft.arch_of(cnn) == {"arch": "cnn"}


def test_other_networks_are_declared_layer_by_layer():
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.GELU(),
        ft.Residual(nn.Conv2d(8, 8, 3, padding=1), nn.Tanh()),
        nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.25), nn.Linear(8 * 7 * 7, 10))
    assert ft.arch_of(net) == {"arch": "layers", "layers": [
        {"type": "conv2d", "out_channels": 8, "kernel": 3, "stride": 2, "padding": 1},
        {"type": "batch_norm"},
        {"type": "gelu"},
        {"type": "residual", "layers": [
            {"type": "conv2d", "out_channels": 8, "kernel": 3, "stride": 1, "padding": 1},
            {"type": "tanh"}]},
        {"type": "avg_pool2d", "kernel": 2, "stride": 2},
        {"type": "flatten"},
        {"type": "dropout", "p": 0.25},
        {"type": "linear", "out_features": 10}]}
    for bad, where in [
        (nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.LeakyReLU()), "layer 2"),
        (nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2)), "layer 0"),
        (nn.Sequential(ft.Residual(nn.ReLU(), ft.Residual(nn.ReLU()))), "layer 0.1"),
        (nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=False)), "layer 1"),
    ]:
        with pytest.raises(ft.UnsupportedModel, match=where):
            ft.arch_of(bad)


def _idx(name):
    raw = gzip.decompress((DATA / name).read_bytes())
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return torch.frombuffer(bytearray(raw[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def test_a_declared_network_trains_and_pytorch_agrees_with_the_report(testnet, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        ft.Residual(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.1),
        nn.Linear(8 * 7 * 7, 10))
    node = fairgrid.connect(testnet[0]["dir"])
    job = node.submit({"name": "torch-declared", "model": ft.arch_of(net),
                       "data": {"source": "builtin", "max_train_samples": 2000, "shard_size": 500},
                       "training": {"rounds": 3, "local_steps": 10, "lr": 0.05},
                       "market": {"alpha": 0.5}})
    job.follow(progress=False, timeout=300)
    reported = job.report()["final_test_accuracy"]
    ft.load_into(net, job.download(tmp_path / "m.safetensors"))
    images = _idx("t10k-images-idx3-ubyte.gz").float() * torch.tensor(1.0 / 255.0)
    labels = _idx("t10k-labels-idx1-ubyte.gz").long()
    with torch.no_grad():
        predicted = net(images.reshape(-1, 1, 28, 28)).argmax(dim=1)
    accuracy = (predicted == labels).float().mean().item()
    print(f"PyTorch accuracy {accuracy:.4f}, fairgrid's report {reported:.4f}")
    assert reported > 0.5, reported
    # The same parameters on the same 2000 images: only float rounding
    # near a decision boundary may flip a prediction.
    assert abs(accuracy - reported) <= 2 / len(labels), (accuracy, reported)


def _save_npy(path, tensor, descr):
    """A version 1.0 .npy file of a contiguous tensor (NumPy's layout)."""
    shape = tuple(tensor.shape)
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    values = tensor.flatten().tolist()  # no NumPy needed
    data = struct.pack(f"<{len(values)}f", *values) if descr == "<f4" else bytes(values)
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data)


def test_tabular_features_train_and_pytorch_agrees_with_the_report(testnet, tmp_path):
    """Your own data: float32 features written as .npy files, a network
    that starts with a linear layer (no flatten) and BatchNorm1d."""
    generator = torch.Generator().manual_seed(1)
    data = tmp_path / "tabular"
    data.mkdir()
    splits = {}
    for split, n in [("train", 1500), ("test", 300)]:
        labels = torch.arange(n) % 2
        features = (labels.float() * 2 - 1)[:, None] + 1.5 * torch.randn(n, 5, generator=generator)
        _save_npy(data / f"{split}_features.npy", features.float(), "<f4")
        _save_npy(data / f"{split}_labels.npy", labels.to(torch.uint8), "|u1")
        splits[split] = (features.float(), labels)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    assert ft.arch_of(net)["layers"][0] == {"type": "linear", "out_features": 16}
    node = fairgrid.connect(testnet[0]["dir"])
    job = node.submit({"name": "torch-tabular", "model": ft.arch_of(net),
                       "data": {"source": str(data), "shard_size": 250},
                       "training": {"rounds": 3, "local_steps": 10, "lr": 0.05},
                       "market": {"alpha": 0.5}})
    job.follow(progress=False, timeout=300)
    reported = job.report()["final_test_accuracy"]
    ft.load_into(net, job.download(tmp_path / "m.safetensors"))
    features, labels = splits["test"]
    with torch.no_grad():
        predicted = net(features).argmax(dim=1)
    accuracy = (predicted == labels).float().mean().item()
    print(f"PyTorch accuracy {accuracy:.4f}, fairgrid's report {reported:.4f}")
    assert reported > 0.7, reported
    assert abs(accuracy - reported) <= 2 / len(labels), (accuracy, reported)


def _write_safetensors(path, tensors, meta):
    """A minimal safetensors writer: {name: (dtype, shape, bytes)}."""
    import json
    header, body = {"__metadata__": meta}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(body), len(body) + len(data)]}
        body += data
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def test_an_int8_model_file_loads_dequantised(tmp_path):
    codes = torch.tensor([[-127, 0, 5], [64, -1, 127]], dtype=torch.int8)
    scale = torch.tensor([0.5, 0.25], dtype=torch.float32)
    bias = torch.tensor([1.0, -2.0], dtype=torch.float32)
    tensors = {
        "1.weight": ("I8", [2, 3], bytes(codes.view(torch.uint8).flatten().tolist())),
        "1.weight.scale": ("F32", [2], struct.pack("<2f", *scale.tolist())),
        "1.bias": ("F32", [2], struct.pack("<2f", *bias.tolist())),
    }
    path = tmp_path / "int8.safetensors"
    _write_safetensors(path, tensors, {"fairgrid.quantization": ft.INT8_PER_CHANNEL})
    net = ft.load_into(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), path)
    assert torch.equal(net[1].weight, codes.float() * scale.view(-1, 1))
    assert torch.equal(net[1].bias, bias)
    # Not marked as quantised: refused, not misread.
    _write_safetensors(path, tensors, {})
    with pytest.raises(ValueError, match="not marked"):
        ft.read_safetensors(path)
    del tensors["1.weight.scale"]
    _write_safetensors(path, tensors, {"fairgrid.quantization": ft.INT8_PER_CHANNEL})
    with pytest.raises(ValueError, match="no scale"):
        ft.read_safetensors(path)
