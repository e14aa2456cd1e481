"""The bytes a tensor item hashes: C-contiguous, little-endian, as safetensors stores them."""
from __future__ import annotations

from ..errors import SentryError

__all__ = ["check_tensor", "cpu_tensor_bytes"]


def check_tensor(name: str, t) -> None:
    """SentryError unless the tensor has plain strided bytes to hash."""
    import torch

    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        raise SentryError(f"tensor {name!r} is sparse, quantized or on the meta device and cannot be hashed")


def cpu_tensor_bytes(name: str, t):
    """A uint8 numpy view of the tensor's bytes in host memory (zero-copy for a contiguous CPU tensor;
    strided or device tensors are copied, one tensor at a time)."""
    import torch

    from .._optional import require

    require("numpy", "torch", "hashing a tensor on the CPU")  # torch's .numpy() needs it; torch does not
    check_tensor(name, t)
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()
