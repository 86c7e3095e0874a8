"""PyTorch bridge: an `nn.Sequential` of the zoo's shapes becomes a job's
`model` table, and a trained fairgrid model (safetensors, named as in
PyTorch's state dict) loads back into it. Jobs never ship code: only
networks the node's zoo builds are accepted, and anything else is refused
with the layer that does not fit. Needs PyTorch; the rest of the client
does not."""

import torch
from torch import nn

from . import safetensors

CNN_CHANNELS = (32, 64, 128)
CNN_FC = 128


class UnsupportedModel(ValueError):
    pass


def _kinds(model):
    return [type(m).__name__ for m in model]


def arch_of(model):
    """The job's `model` table for `model`: {"arch": "logreg"}, {"arch":
    "mlp", "hidden": [...]} or {"arch": "cnn"}."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedModel(f"expected an nn.Sequential, got {type(model).__name__}")
    layers = list(model)
    kinds = _kinds(model)
    if kinds == ["Flatten", "Linear"]:
        return {"arch": "logreg"}
    if kinds and kinds[0] == "Flatten" and kinds[-1] == "Linear" and len(kinds) >= 4:
        body = kinds[1:-1]
        if body == ["Linear", "ReLU"] * (len(body) // 2):
            return {"arch": "mlp", "hidden": [m.out_features for m in layers[1:-1:2]]}
    cnn = ["Conv2d", "ReLU", "MaxPool2d"] * 3 + ["Flatten", "Linear", "ReLU", "Linear"]
    if kinds == cnn:
        for i, out in enumerate(CNN_CHANNELS):
            conv, pool = layers[3 * i], layers[3 * i + 2]
            if (conv.out_channels != out or conv.kernel_size != (3, 3) or conv.padding != (1, 1)
                    or conv.stride != (1, 1) or pool.kernel_size not in (2, (2, 2))):
                raise UnsupportedModel(
                    f"layer {3 * i}: the zoo's CNN has Conv2d(_, {out}, 3, padding=1) then "
                    "ReLU and MaxPool2d(2)")
        if layers[10].out_features != CNN_FC:
            raise UnsupportedModel(f"layer 10: the zoo's CNN has a {CNN_FC}-unit hidden layer")
        return {"arch": "cnn"}
    raise UnsupportedModel(
        "not one of the zoo's networks (Flatten+Linear; Flatten+(Linear+ReLU)*n+Linear; "
        f"the seed CNN): got {kinds}")


def read_safetensors(path):
    """The file's tensors as torch tensors, and its metadata."""
    raw, meta = safetensors.read(path)
    tensors = {}
    for name, (dtype, shape, data) in raw.items():
        if dtype != "F32":
            raise ValueError(f"{path}: tensor {name} is {dtype}, not F32")
        tensors[name] = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape)
    return tensors, meta


def load_into(model, path):
    """Loads a trained fairgrid model into `model` (strictly: every tensor
    present and of the right shape) and returns it in eval mode."""
    tensors, _ = read_safetensors(path)
    model.load_state_dict(tensors, strict=True)
    return model.eval()
