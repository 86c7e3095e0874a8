"""Reading a safetensors file (the trained model) without the
`safetensors` package: an 8-byte little-endian header length, a JSON
header naming each tensor's dtype, shape and byte range, then the data."""

import json
import struct

# Largest header accepted (a model's is a few kilobytes).
MAX_HEADER = 16 * 1024 * 1024


def read(path):
    """{name: (dtype, shape, bytes)} and the metadata dict; a file that
    is not safetensors raises ValueError naming it and the problem."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"{path}: a header of {n} bytes does not fit the file's {len(data)}")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise ValueError(f"{path}: the header is not JSON ({e})") from None
    meta = header.pop("__metadata__", {}) or {}
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(body):
            raise ValueError(f"{path}: tensor {name} lies outside the file")
        tensors[name] = (info["dtype"], list(info["shape"]), body[start:end])
    return tensors, meta
