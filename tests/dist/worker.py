"""Scenarios run under torchrun by tests/unit/hashing/test_distributed.py: each rank prints one JSON line per check.

argv: OUT_DIR SCENARIO... ; the keys are written by the test into OUT_DIR (key.pem, key.pub.pem).
Each rank writes its results to OUT_DIR/rank<R>.jsonl, one JSON object per check."""
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

import sentry
from sentry.errors import SentryError, VerificationError

OUT = sys.argv[1]
KEY, PUB = os.path.join(OUT, "key.pem"), os.path.join(OUT, "key.pub.pem")


def say(check, **fields):
    """One result line in OUT/rank<R>.jsonl (ranks printing to one stdout interleave)."""
    with open(os.path.join(OUT, f"rank{dist.get_rank()}.jsonl"), "a") as f:
        f.write(json.dumps({"rank": dist.get_rank(), "check": check, **fields}) + "\n")


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(300, 513), torch.nn.ReLU(), torch.nn.Linear(513, 10))


def reference_items(state):
    """The single-process CPU engine's items of the full tensors."""
    return {it.name: (it.root.hex(), it.chunks, it.size) for it in sentry.hash_artifact(state, device="cpu").items}


def full_tensors():
    g = torch.Generator().manual_seed(1)
    return {
        "aligned": torch.randn(1024, 1024, generator=g),  # 4 MiB, shards on leaf boundaries
        "unaligned": torch.randn(1001, 77, generator=g),
        "bf16": torch.randn(333, 7, generator=g).bfloat16(),
        "tiny": torch.arange(3, dtype=torch.int64),  # fewer rows than some meshes have ranks
        "cols": torch.randn(65, 130, generator=g),
    }


def dtensors(mesh_shape, placements_of):
    mesh = init_device_mesh("cpu", mesh_shape)
    full = full_tensors()
    return full, {k: distribute_tensor(t, mesh, placements_of(k)) for k, t in full.items()}


def check_roots(label, full, sharded):
    stats = {}
    from sentry.hashing.params import HashParams
    from sentry.hashing.sharded import digest_sharded

    digests = digest_sharded(list(sharded.items()), HashParams(), device="cpu", stats=stats)
    want = reference_items(full)
    got = {k: (d.root.hex(), d.chunks if len(d.chunks) > 1 else (), d.size) for k, d in zip(sharded, digests)}
    say(label, same=got == want, bytes_sent=stats["bytes_sent"], names=sorted(k for k in want if got[k] != want[k]))


def scenario_dtensor():
    world = dist.get_world_size()
    full, sharded = dtensors((world,), lambda k: [Shard(1)] if k == "cols" else [Shard(0)])
    check_roots("dtensor_1d", full, sharded)


def scenario_mesh2d():
    full, sharded = dtensors((2, dist.get_world_size() // 2),
                             lambda k: {"aligned": [Shard(0), Shard(0)], "unaligned": [Shard(0), Replicate()],
                                        "bf16": [Replicate(), Shard(0)], "cols": [Shard(0), Shard(1)]}.get(k, [Shard(0), Shard(0)]))
    check_roots("dtensor_2d", full, sharded)
    from sentry.hashing.params import HashParams
    from sentry.hashing.sharded import digest_sharded

    if dist.get_rank() == 1:  # one replica of a (Shard(0), Replicate) tensor differs from its twin
        sharded["unaligned"].to_local()[0, 0] += 1
    try:
        digest_sharded(list(sharded.items()), HashParams(), device="cpu")
        say("replicas_disagree", raised=False)
    except SentryError as exc:
        say("replicas_disagree", raised=True, message=str(exc))


def scenario_fsdp():
    from torch.distributed.fsdp import fully_shard

    sig_whole, sig_sharded = os.path.join(OUT, "whole.sig"), os.path.join(OUT, "sharded.sig")
    model = mlp()
    if dist.get_rank() == 0:
        sentry.sign_model(model, KEY, sig_whole)
    dist.barrier()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    report = sentry.verify_model(model, PUB, sig_whole)
    say("fsdp_verifies_whole_signature", ok=report.ok)
    sentry.sign_model(model, KEY, sig_sharded, force=True)
    say("fsdp_signed", exists=os.path.exists(sig_sharded))
    if dist.get_rank() == 0:
        sentry.verify_model(mlp(), PUB, sig_sharded)  # the reverse: unsharded, one process
        say("whole_verifies_sharded_signature", ok=True)
    with torch.no_grad():  # one rank changes its shard of one tensor
        if dist.get_rank() == dist.get_world_size() - 1:
            model[2].weight.to_local()[-1, -1] += 1
    try:
        sentry.verify_model(model, PUB, sig_whole)
        say("tampered_shard", raised=False)
    except VerificationError as exc:
        say("tampered_shard", raised=True, message=str(exc), lines=exc.report.lines())
    from torch.distributed.checkpoint import save

    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    state = mlp_state_sharded(mesh)  # untampered
    save(state, checkpoint_id=os.path.join(OUT, "dcp"))
    save(state, storage_writer=HuggingFaceStorageWriter(os.path.join(OUT, "hf"), save_distributed=True,
                                                        enable_consolidation=True))
    say("dcp_saved", ok=True)


def scenario_spread():
    """Replicas sharing the hashing: Replicate DTensors, then a plain (DDP-like) model."""
    from sentry.hashing.params import HashParams
    from sentry.hashing.sharded import digest_sharded

    full, replicated = dtensors((dist.get_world_size(),), lambda k: [Replicate()])
    want = reference_items(full)
    for spread in (False, True):
        stats = {}
        digests = digest_sharded(list(replicated.items()), HashParams(), device="cpu", stats=stats,
                                 spread_replicas=spread)
        got = {k: (d.root.hex(), d.chunks if len(d.chunks) > 1 else (), d.size) for k, d in zip(replicated, digests)}
        say("replicated", spread=spread, same=got == want, bytes_hashed=stats["bytes_hashed"],
            total=sum(d.size for d in digests))
    sig = os.path.join(OUT, "ddp.sig")
    if dist.get_rank() == 0:
        sentry.sign_model(mlp(), KEY, sig)
    dist.barrier()
    model = mlp()
    report = sentry.verify_model(model, PUB, sig, spread_replicas=True)
    say("ddp_spread_verifies", ok=report.ok, shown=report.replicas_spread and any("replicas spread" in line
                                                                                for line in report.lines()))
    last = dist.get_world_size() - 1
    for where, index in (("own_part", -1), ("other_part", 0)):  # the last rank hashes the end of each tensor
        model = mlp()
        with torch.no_grad():
            if dist.get_rank() == last:
                model[0].weight.view(-1)[index] += 1
        try:
            sentry.verify_model(model, PUB, sig, spread_replicas=True)
            say("ddp_spread_tampered", where=where, raised=False)
        except VerificationError as exc:
            say("ddp_spread_tampered", where=where, raised=True, lines=exc.report.lines())


def mlp_state_sharded(mesh):
    from torch.distributed.fsdp import fully_shard

    model = mlp()
    fully_shard(model, mesh=mesh)
    return model.state_dict()


def scenario_dead_rank():
    from torch.distributed.fsdp import fully_shard

    model = mlp()
    fully_shard(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    if dist.get_rank() == 1:
        time.sleep(8)  # never joins the verification, then leaves
        return
    start = time.monotonic()
    try:
        sentry.verify_model(model, PUB, os.path.join(OUT, "whole.sig"), distributed_timeout=2)
        say("dead_rank", raised=False)
    except SentryError as exc:
        say("dead_rank", raised=True, message=str(exc), seconds=time.monotonic() - start)


if __name__ == "__main__":
    dist.init_process_group("gloo")
    for name in sys.argv[2:]:
        globals()["scenario_" + name]()
    if "dead_rank" not in sys.argv[2:]:
        dist.destroy_process_group()
