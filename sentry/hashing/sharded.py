"""Digests of DTensors (FSDP2, tensor parallel) inside a torch.distributed process group.

Every rank hashes only its local shard, which for ``Shard(0)`` placements is one contiguous byte
range of the flattened tensor (``pieces.plan_range``). The pieces of all tensors travel in one
exchange over the default group (two ``all_gather`` calls, sizes then bytes, as
``all_gather_object`` does, but with a timeout and without pickle: a peer's message is parsed,
never unpickled). Every rank then folds all pieces and gets exactly the roots of the unsharded
tensor (docs/spec.md §1.3, §11). Each step waits at most ``timeout`` seconds for the other ranks.

Replicas (a ``Replicate`` mesh dimension; with ``spread_replicas``, also the plain tensors every
rank holds whole, as under DDP) each hash their whole copy by default, and the fold checks that
the copies agree. ``spread_replicas`` splits each replicated range among its holders instead, on
leaf boundaries: each rank hashes 1/k of it, and the parts another replica hashed of its own copy
are not checked (README "At scale").
"""
from __future__ import annotations

import datetime
import hashlib
import math
import struct

from ..errors import SentryError
from .params import HashParams
from .pieces import Pieces, plan_range

__all__ = ["DEFAULT_TIMEOUT", "all_gather_bytes", "any_rank", "digest_sharded", "held_bytes", "is_sharded", "local_range",
           "rank", "spread_part"]

DEFAULT_TIMEOUT = 600.0  # seconds a rank waits for the others before it gives up with an error
_MAGIC = b"SENTRY-SHARDS-1"
_COUNTS = struct.Struct("<II")
_BLOCK = struct.Struct("<qq32s")
_EDGE = struct.Struct("<qI")


def is_sharded(t) -> bool:
    """Whether ``t`` is a DTensor (only then is torch.distributed.tensor imported)."""
    import sys

    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def _contiguous_range(dt):
    """(local shard, start byte, end byte) when the local shard is one byte range of the tensor."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(dt.shape, dt.device_mesh, dt.placements)
    if tuple(shape[1:]) != tuple(dt.shape[1:]) or any(offset[1:]):
        return None
    row = math.prod(dt.shape[1:]) * dt.element_size()
    local = dt.to_local()
    if tuple(local.shape) != tuple(shape):
        return None
    return local, offset[0] * row if shape[0] else 0, (offset[0] + shape[0]) * row if shape[0] else 0


def local_range(name: str, dt):
    """:func:`_contiguous_range`, after redistributing another placement (``Shard(1)``, tensor
    parallel) to ``Shard(0)`` on every mesh dimension: a collective that moves this tensor's
    bytes once between ranks (one tensor at a time, so the extra memory is one shard)."""
    held = _contiguous_range(dt)
    if held is None:
        from torch.distributed.tensor import Shard

        held = _contiguous_range(dt.redistribute(dt.device_mesh, [Shard(0)] * dt.device_mesh.ndim))
    if held is None:
        raise SentryError(f"tensor {name!r} has placements {dt.placements} whose shards are not byte ranges "
                          f"even as Shard(0): verify it with full_tensor()")
    return held


def _replica_slot(dt) -> tuple[int, int]:
    """(this rank's index among the ranks that hold the same bytes of ``dt``, how many hold them):
    its coordinates on the mesh dimensions where ``dt`` is replicated."""
    from torch.distributed.tensor import Replicate

    coordinate = dt.device_mesh.get_coordinate()
    index, count = 0, 1
    for dim, placement in enumerate(dt.placements):
        if isinstance(placement, Replicate):
            n = dt.device_mesh.size(dim)
            index, count = index * n + coordinate[dim], count * n
    return index, count


def spread_part(start: int, end: int, index: int, count: int, leaf_size: int) -> tuple[int, int]:
    """Replica ``index`` of ``count``'s part of ``[start, end)``: consecutive parts that cover it,
    cut on leaf boundaries (so a part adds no partial leaves beyond the range's own)."""
    def cut(j: int) -> int:
        if j in (0, count):
            return start if j == 0 else end
        return min(max((start + (end - start) * j // count) // leaf_size * leaf_size, start), end)

    return cut(index), cut(index + 1)


def held_bytes(name: str, t, params: HashParams, spread_replicas: bool):
    """(the flat bytes this rank hashes of ``t``, their start and end in the tensor's bytes). A
    plain tensor (only given with ``spread_replicas``) is one every rank of the group holds whole."""
    import torch
    import torch.distributed as dist

    if is_sharded(t):
        held = _contiguous_range(t)
        slot = _replica_slot(t) if held is not None and spread_replicas else (0, 1)
        local, start, end = held if held is not None else local_range(name, t)
    else:
        local, start, end = t, 0, t.numel() * t.element_size()
        slot = (dist.get_rank(), dist.get_world_size())
    flat = local.detach().contiguous().reshape(-1).view(torch.uint8)
    if slot[1] > 1:
        lo, hi = spread_part(start, end, *slot, params.leaf_size)
        flat, start, end = flat[lo - start: hi - start], lo, hi
    return flat, start, end


def _local_pieces(name: str, size: int, held, params: HashParams, device: str) -> bytes:
    """This rank's pieces of one tensor of ``size`` bytes, of which it holds ``held``
    (:func:`held_bytes`), encoded."""
    from . import digest_tensors

    flat, start, end = held
    plan = plan_range(size, start, end, params)
    ls, blocks = params.leaf_size, []
    for r in plan.regions:
        view = flat[r.lo * ls - start: min(r.hi * ls, size) - start]
        digest = digest_tensors([(name, view)], r.params(ls), device=device)[0]
        for i, root in enumerate(digest.chunks):
            lo = r.lo + i * r.unit
            blocks.append(_BLOCK.pack(lo, min(lo + r.unit, r.hi), root))
    edges = [_EDGE.pack(s, e - s) + flat[s - start: e - start].cpu().numpy().tobytes() for s, e in plan.edges]
    return b"".join([_COUNTS.pack(len(blocks), len(edges)), *blocks, *edges])


def _read_pieces(msg: memoryview, pos: int, pieces: Pieces) -> int:
    """Add one rank's pieces of one tensor from ``msg`` at ``pos``; the position after them."""
    try:
        nblocks, nedges = _COUNTS.unpack_from(msg, pos)
        pos += _COUNTS.size
        for _ in range(nblocks):
            lo, hi, root = _BLOCK.unpack_from(msg, pos)
            pieces.add_block(lo, hi, root)
            pos += _BLOCK.size
        for _ in range(nedges):
            start, length = _EDGE.unpack_from(msg, pos)
            pos += _EDGE.size
            if pos + length > len(msg) or start < 0 or start + length > pieces.size:
                raise struct.error("edge out of bounds")
            pieces.add_bytes(start, bytes(msg[pos: pos + length]))
            pos += length
    except struct.error:
        raise SentryError(f"a rank sent malformed pieces of tensor {pieces.name!r}") from None
    return pos


def _layout_digest(named) -> bytes:
    """What every rank must agree on before pieces are matched up: names, dtypes, shapes."""
    text = "\n".join(f"{n}\t{t.dtype}\t{tuple(t.shape)}" for n, t in named)
    return hashlib.sha256(text.encode()).digest()


def digest_sharded(named, params: HashParams, *, device="auto", timeout=None, stats=None,
                   spread_replicas=False) -> list:
    """Digests (``cpu.ItemDigest``) of the DTensors ``named`` ([(name, dtensor)], the same list on
    every rank of the default group, which all call this); with ``spread_replicas``, plain tensors
    too (each held whole by every rank) and replicas share the hashing. ``stats`` (a dict), if
    given, receives ``bytes_sent``, ``bytes_gathered`` and ``bytes_hashed`` (by this rank)."""
    named = list(named)
    pieces_here, hashed = [], 0
    for name, t in named:  # one tensor at a time: a redistributed copy lives only for its turn
        held = held_bytes(name, t, params, spread_replicas)
        hashed += held[2] - held[1]
        pieces_here.append(_local_pieces(name, t.numel() * t.element_size(), held, params, device))
    payload = _MAGIC + _layout_digest(named) + b"".join(pieces_here)
    messages = all_gather_bytes(payload, timeout)
    if stats is not None:
        stats.update(bytes_sent=len(payload), bytes_gathered=sum(len(m) for m in messages),
                     bytes_hashed=hashed)
    pieces = [Pieces(n, t.numel() * t.element_size(), params) for n, t in named]
    head = len(_MAGIC) + 32
    for rank, msg in enumerate(messages):
        if msg[:head] != payload[:head]:
            raise SentryError(f"rank {rank} verifies other sharded tensors (names, dtypes or shapes) than this rank")
        pos = head
        for p in pieces:
            pos = _read_pieces(msg, pos, p)
        if pos != len(msg):
            raise SentryError(f"rank {rank} sent more pieces than its tensors have")
    return [p.fold() for p in pieces]


# -- collectives, each bounded by the timeout -----------------------------------------------------------
def _exchange_device():
    """Where collective buffers live: a GPU for NCCL (one device per rank), the host otherwise."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _wait(work, timeout, what: str) -> None:
    seconds = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    try:
        work.wait(timeout=datetime.timedelta(seconds=seconds))
    except RuntimeError as exc:
        raise SentryError(f"{what}: the other ranks did not answer within {seconds:g} s (a rank died or "
                          f"is not verifying the same model): {exc}") from None


def all_gather_bytes(payload: bytes, timeout=None) -> list:
    """Every rank's ``payload``, in rank order."""
    import torch
    import torch.distributed as dist

    dev, world = _exchange_device(), dist.get_world_size()
    size = torch.tensor([len(payload)], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    _wait(dist.all_gather(sizes, size, async_op=True), timeout, "exchanging shard pieces")
    lengths = [int(s.item()) for s in sizes]
    buf = torch.zeros(max(lengths), dtype=torch.uint8, device=dev)
    buf[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(dev) if payload else buf[:0]
    bufs = [torch.empty_like(buf) for _ in range(world)]
    _wait(dist.all_gather(bufs, buf, async_op=True), timeout, "exchanging shard pieces")
    return [memoryview(b[:n].cpu().numpy().tobytes()) for b, n in zip(bufs, lengths)]


def any_rank(flag: bool, timeout=None) -> bool:
    """Whether ``flag`` holds on any rank of the default group (all must call this)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(bool(flag))], dtype=torch.int32, device=_exchange_device())
    _wait(dist.all_reduce(t, op=dist.ReduceOp.MAX, async_op=True), timeout, "agreeing on the verdict")
    return bool(t.item())


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank()
