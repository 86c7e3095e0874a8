"""PyTorch bridge: an `nn.Sequential` becomes a job's `model` table, and a
trained fairgrid model (safetensors, named as in PyTorch's state dict)
loads back into it. Jobs never ship code: the network travels as a list of
layers the node knows (docs/kernels.md, "Declared architectures"), and a
module it does not know is refused with its place in the network. Needs
PyTorch; the rest of the client does not."""

import torch
from torch import nn

from . import safetensors

CNN_CHANNELS = (32, 64, 128)
CNN_FC = 128


class UnsupportedModel(ValueError):
    pass


class Residual(nn.Sequential):
    """`x + f(x)`, `f` the modules inside (plain layers that keep the
    shape): fairgrid's residual block. Parameter names nest like any
    `nn.Sequential` ("3.0.weight")."""

    def forward(self, x):
        return x + super().forward(x)


def _kinds(model):
    return [type(m).__name__ for m in model]


def _zoo_name(model):
    """The zoo's table when `model` is one of its networks, else None."""
    layers = list(model)
    kinds = _kinds(model)
    if kinds == ["Flatten", "Linear"]:
        return {"arch": "logreg"}
    if kinds and kinds[0] == "Flatten" and kinds[-1] == "Linear" and len(kinds) >= 4:
        body = kinds[1:-1]
        hidden = [m.out_features for m in layers[1:-1:2]]
        # Within the zoo's bounds only; a wider or deeper MLP is declared.
        if (body == ["Linear", "ReLU"] * (len(body) // 2) and len(hidden) <= 8
                and all(w <= 8192 for w in hidden)):
            return {"arch": "mlp", "hidden": hidden}
    cnn = ["Conv2d", "ReLU", "MaxPool2d"] * 3 + ["Flatten", "Linear", "ReLU", "Linear"]
    if kinds == cnn:
        for i, out in enumerate(CNN_CHANNELS):
            conv, pool = layers[3 * i], layers[3 * i + 2]
            if (conv.out_channels != out or conv.kernel_size != (3, 3) or conv.padding != (1, 1)
                    or conv.stride != (1, 1) or pool.kernel_size not in (2, (2, 2))
                    or pool.stride not in (2, (2, 2))):
                return None
        if layers[10].out_features == CNN_FC:
            return {"arch": "cnn"}
    return None


def _square(value, what, where):
    if isinstance(value, int):
        return value
    if len(value) == 2 and value[0] == value[1]:
        return value[0]
    raise UnsupportedModel(f"{where}: {what} {value} is not square")


def _layer(m, where):
    """One module as a layer table, or why it cannot be one."""
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or _square(m.dilation, "dilation", where) != 1:
            raise UnsupportedModel(f"{where}: Conv2d with groups or dilation")
        if m.bias is None or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedModel(f"{where}: Conv2d needs a bias and numeric zero padding")
        return {"type": "conv2d", "out_channels": m.out_channels,
                "kernel": _square(m.kernel_size, "kernel", where),
                "stride": _square(m.stride, "stride", where),
                "padding": _square(m.padding, "padding", where)}
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        name = "max_pool2d" if isinstance(m, nn.MaxPool2d) else "avg_pool2d"
        if _square(m.padding, "padding", where) != 0 or m.ceil_mode:
            raise UnsupportedModel(f"{where}: pooling without padding or ceil_mode only")
        if isinstance(m, nn.MaxPool2d) and _square(m.dilation, "dilation", where) != 1:
            raise UnsupportedModel(f"{where}: MaxPool2d with dilation")
        if isinstance(m, nn.AvgPool2d) and m.divisor_override is not None:
            raise UnsupportedModel(f"{where}: AvgPool2d with divisor_override")
        stride = m.stride if m.stride is not None else m.kernel_size
        return {"type": name, "kernel": _square(m.kernel_size, "kernel", where),
                "stride": _square(stride, "stride", where)}
    if isinstance(m, nn.Linear):
        if m.bias is None:
            raise UnsupportedModel(f"{where}: Linear needs a bias")
        return {"type": "linear", "out_features": m.out_features}
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if (not m.affine or not m.track_running_stats or abs(m.eps - 1e-5) > 1e-12
                or m.momentum is None or abs(m.momentum - 0.1) > 1e-12):
            raise UnsupportedModel(
                f"{where}: batch norm with PyTorch's defaults only (affine, running "
                "statistics, eps 1e-5, momentum 0.1)")
        return {"type": "batch_norm"}
    if isinstance(m, nn.GELU):
        if m.approximate != "none":
            raise UnsupportedModel(f"{where}: GELU(approximate='{m.approximate}')")
        return {"type": "gelu"}
    if isinstance(m, nn.Dropout):
        return {"type": "dropout", "p": float(m.p)}
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedModel(f"{where}: Flatten() from dimension 1 only")
        return {"type": "flatten"}
    simple = {nn.ReLU: "relu", nn.Tanh: "tanh"}
    for cls, name in simple.items():
        if type(m) is cls:
            return {"type": name}
    raise UnsupportedModel(
        f"{where}: {type(m).__name__} is not a layer fairgrid trains (Conv2d, MaxPool2d, "
        "AvgPool2d, Linear, ReLU, GELU, Tanh, Dropout, BatchNorm1d/2d, Flatten, Residual)")


def layers_of(model):
    """`model`'s layers as the job's `model.layers` list."""
    out = []
    for i, m in enumerate(model):
        if isinstance(m, Residual):
            inner = []
            for j, sub in enumerate(m):
                if isinstance(sub, Residual):
                    raise UnsupportedModel(f"layer {i}.{j}: residual blocks do not nest")
                inner.append(_layer(sub, f"layer {i}.{j}"))
            out.append({"type": "residual", "layers": inner})
        else:
            out.append(_layer(m, f"layer {i}"))
    return out


def arch_of(model):
    """The job's `model` table for `model`: a zoo name when it is one of
    the zoo's networks ({"arch": "cnn"}, ...), else {"arch": "layers",
    "layers": [...]}."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedModel(f"expected an nn.Sequential, got {type(model).__name__}")
    layers = layers_of(model)  # checks every module, zoo network or not
    return _zoo_name(model) or {"arch": "layers", "layers": layers}


INT8_PER_CHANNEL = "int8-per-output-channel"
_DTYPES = {"F32": (torch.float32, 4), "I8": (torch.int8, 1)}


def read_safetensors(path):
    """The file's tensors as float32 torch tensors, and its metadata. An
    int8 model (`fairgrid model compress --int8`: `NAME` as I8 codes and
    `NAME.scale` one F32 per output channel) is dequantised,
    `NAME = codes * scale`, as docs/sdk.md ("Compressed models") says."""
    raw, meta = safetensors.read(path)
    tensors = {}
    for name, (dtype, shape, data) in raw.items():
        if dtype not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} is {dtype}, not F32 or I8")
        torch_dtype, size = _DTYPES[dtype]
        count = 1
        for d in shape:
            count *= d
        if len(data) != count * size:
            raise ValueError(f"{path}: tensor {name} holds {len(data)} bytes for shape {shape}")
        tensors[name] = torch.frombuffer(bytearray(data), dtype=torch_dtype).reshape(shape)
    if meta.get("fairgrid.quantization") == INT8_PER_CHANNEL:
        for name in [n for n, t in tensors.items() if t.dtype == torch.int8]:
            scale = tensors.pop(f"{name}.scale", None)
            codes = tensors[name]
            if scale is None or scale.dtype != torch.float32 or scale.shape != (codes.shape[0],):
                raise ValueError(f"{path}: {name} has no scale of {codes.shape[0]} floats")
            view = [-1] + [1] * (codes.dim() - 1)
            tensors[name] = codes.float() * scale.view(view)
    stray = [n for n, t in tensors.items() if t.dtype != torch.float32]
    if stray:
        raise ValueError(f"{path}: int8 tensors {stray} in a file not marked {INT8_PER_CHANNEL}")
    return tensors, meta


def load_into(model, path):
    """Loads a trained fairgrid model into `model` (strictly: every tensor
    present and of the right shape; batch norm's `num_batches_tracked`,
    which fairgrid does not keep, is the only key allowed missing) and
    returns it in eval mode."""
    tensors, _ = read_safetensors(path)
    result = model.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path} does not fit the network: missing {missing}, "
                         f"unexpected {result.unexpected_keys}")
    return model.eval()
