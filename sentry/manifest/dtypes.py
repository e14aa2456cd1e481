"""Tensor dtype names: safetensors' spelling, and their element sizes in bytes."""
from __future__ import annotations

__all__ = ["ELEMENT_SIZE", "torch_dtype_name"]

# safetensors dtype -> element size in bytes.
ELEMENT_SIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}

# torch dtype attribute name -> safetensors dtype (resolved lazily so torch is imported only when used).
_TORCH_NAMES = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "uint16": "U16", "int16": "I16", "float16": "F16", "bfloat16": "BF16",
    "uint32": "U32", "int32": "I32", "float32": "F32",
    "uint64": "U64", "int64": "I64", "float64": "F64",
}


def torch_dtype_name(dtype) -> str | None:
    """safetensors name of a torch dtype, or None when safetensors cannot store it."""
    return _TORCH_NAMES.get(str(dtype).removeprefix("torch."))
