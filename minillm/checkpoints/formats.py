"""The two file formats every checkpoint is made of: safetensors (arrays) and JSON (settings).

Reading checks what it reads: a missing file, a file that is not JSON, a safetensors header that
does not fit its file are each one CheckpointError sentence naming the file.

safetensors (https://github.com/huggingface/safetensors): 8 bytes little-endian header length N,
N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{...}}``, then the data; offsets count from the end of the header. Tensors are read lazily as
read-only ``np.memmap`` views, so a tensor is only read when it is used (a 6 GB gpt2-xl file
never sits in memory twice) and callers copy what they keep. NumPy has no bfloat16: a BF16
tensor comes back as its raw uint16 bits, which ``to_float32`` widens.
Writing goes through the ``safetensors`` package, so the files are the reference format.
"""

import json
from pathlib import Path

import numpy as np

from minillm import backend
from minillm.errors import CheckpointError

# safetensors dtype -> NumPy dtype (floats only: checkpoints hold weights and optimizer moments)
SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_json(path, hint=None):
    """The JSON value in ``path``; ``hint`` (how to get a good file) ends the error sentence."""
    path = Path(path)
    end = f"; {hint}." if hint else ""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing{end}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise CheckpointError(f"checkpoint file {path} is corrupt ({e}){end}") from None


def read_safetensors(path):
    """name -> read-only np.memmap of one .safetensors file (BF16 as raw uint16 bits)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= size - 8:
                raise ValueError(f"header length {n} does not fit a file of {size} bytes")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        header.pop("__metadata__", None)
        out = {}
        for name, info in header.items():
            dtype = SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                raise ValueError(f"tensor {name} has dtype {info['dtype']}, not a float type")
            begin, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(s) for s in info["shape"])
            if min(shape, default=0) < 0 or not 0 <= begin <= end:
                raise ValueError(f"tensor {name} has a negative size or offset")
            if end > size - 8 - n or end - begin != np.dtype(dtype).itemsize * int(np.prod(shape)):
                raise ValueError(f"tensor {name} runs past the end of the file")
            if end == begin:  # an empty tensor: np.memmap cannot map zero bytes
                out[name] = np.zeros(shape, dtype=dtype)
                continue
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=8 + n + begin, shape=shape)
        return out
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupt ({e})") from None


def to_float32(a):
    """A float32 copy of an array read by ``read_safetensors`` (uint16 there means BF16: the
    top 16 bits of a float32)."""
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) << 16).view(np.float32)
    return np.array(a, dtype=np.float32)


def safetensors_bytes(arrays, metadata=None):
    """The safetensors file (bytes) for ``arrays`` (name -> NumPy or CuPy array)."""
    from safetensors.numpy import save

    clean = {k: np.ascontiguousarray(backend.to_numpy(v)) for k, v in arrays.items()}
    return save(clean, metadata=metadata)

