"""Items for tensors held in memory: an nn.Module or a state_dict, on whatever device.

A tensor's item hashes its C-contiguous little-endian bytes, exactly what safetensors stores,
so it matches the same tensor's item read from a .safetensors file. torch is imported only when a model is hashed.
"""
from __future__ import annotations

from ..errors import SentryError
from ..hashing.params import HashParams
from .dtypes import torch_dtype_name
from .item import TENSOR, Item

__all__ = ["is_sharded_manifest", "state_dict_of", "tensor_items", "tied_twin"]


def state_dict_of(model) -> dict:
    """The tensors of a module (parameters and buffers) or of a mapping of tensors."""
    from .._optional import require

    torch = require("torch", "torch", "hashing a model in memory")

    if isinstance(model, torch.nn.Module):
        state = model.state_dict(keep_vars=False)
    elif isinstance(model, dict):
        state = model
    else:
        raise SentryError(f"expected a torch.nn.Module, a state_dict or a path, got {type(model).__name__}")
    for name, t in state.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise SentryError(f"state_dict entry {name!r} is not a tensor")
    return state


def tensor_items(state: dict, params: HashParams, *, strip_prefix="", add_prefix="", device="auto", progress=None,
                 timeout=None, spread_replicas=False) -> list[Item]:
    """One item per tensor, named by its state_dict key after prefix mapping; ``extra`` holds the tensor
    (for a DTensor, ``sharded``: its roots came from every rank's shard, see hashing/sharded.py,
    which waits at most ``timeout`` seconds for the other ranks). ``spread_replicas`` inside an
    initialized process group: the ranks share the hashing of replicated bytes, plain tensors too."""
    from ..hashing.sharded import is_sharded

    spread_replicas = spread_replicas and _in_process_group()

    if hasattr(progress, "set_total"):
        progress.set_total(sum(t.numel() * t.element_size() for t in state.values()))
    for key, t in state.items():
        if torch_dtype_name(t.dtype) is None:
            raise SentryError(f"tensor {key!r} has dtype {t.dtype}, which safetensors cannot store")
    digests = _digests(state, params, device, progress, timeout, spread_replicas)
    items = []
    for (key, t), d in zip(state.items(), digests):
        dtype = torch_dtype_name(t.dtype)
        name = add_prefix + (key[len(strip_prefix):] if strip_prefix and key.startswith(strip_prefix) else key)
        extra = {"sharded": True, "key": key} if is_sharded(t) else {"tensor": t, "key": key}
        if spread_replicas:
            extra["sharded"] = True  # its roots came from several ranks: every rank takes the verdict of all
        items.append(Item(TENSOR, name, d.size, d.root, d.chunks if len(d.chunks) > 1 else (), dtype, tuple(t.shape), None, extra))
    return items


def _in_process_group() -> bool:
    import sys

    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _digests(state: dict, params: HashParams, device, progress, timeout, spread_replicas=False) -> list:
    """The tensors' digests in state order: plain ones in one engine run, DTensors from their shards
    (with ``spread_replicas``, plain ones too, each rank hashing its part)."""
    from ..hashing import digest_tensors
    from ..hashing.sharded import digest_sharded, is_sharded

    sharded = [(k, t) for k, t in state.items() if spread_replicas or is_sharded(t)]
    plain = [(k, t) for k, t in state.items() if not (spread_replicas or is_sharded(t))]
    by_key = dict(zip((k for k, _ in plain), digest_tensors(plain, params, device=device, progress=progress)))
    if sharded:
        by_key.update(zip((k for k, _ in sharded), digest_sharded(sharded, params, device=device, timeout=timeout,
                                                                 spread_replicas=spread_replicas)))
        for k, _ in sharded if progress else ():
            progress(by_key[k].size)
    return [by_key[k] for k in state]


def is_sharded_manifest(items) -> bool:
    """Whether some item's roots were folded from every rank's shards (all ranks must then agree)."""
    return any(it.extra and it.extra.get("sharded") for it in items)


def tied_twin(item: Item, verified: list[Item]) -> Item | None:
    """A verified tensor item viewing exactly the same memory as ``item``'s live tensor (tied
    weights: one parameter under two names), if any; items read from disk have no tensor."""
    t = (item.extra or {}).get("tensor")
    if t is None:
        return None
    for other in verified:
        u = (other.extra or {}).get("tensor")
        if (
            u is not None
            and u.device == t.device
            and u.dtype == t.dtype
            and u.shape == t.shape
            and u.stride() == t.stride()
            and u.data_ptr() == t.data_ptr()
        ):
            return other
    return None
