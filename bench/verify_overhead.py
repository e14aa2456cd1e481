"""Host-side cost of `sentry.verify_model` for a Llama-2-7B-shaped bf16 model on the CUDA path.

    .venv/bin/python bench/verify_overhead.py [--repeats 21] [--layers 32] [--out FILE]

Issue 3's target is verify_model of a 14 GB bf16 model in under 40 ms on an H100, of which the
Merkle kernels take ~28 ms: everything else must fit in ~12 ms. This measures everything else.

The model is a state_dict with Llama-2-7B's 291 tensors and shapes (13.5 GB of bf16), held as
stand-ins with no bytes (bench/gpu_stub.py). It is signed with a real P-256 key, and
verify_model(state_dict, public_key=PEM path, signature=bundle path) runs the real code: bundle
read, DSSE/ECDSA check, statement and predicate parsing, the signed manifest's root, the manifest
of the model through the CUDA backend's Python (gpu_plan work tables and windows, `_run`'s launch
loop, assembly), comparison and report. Stubbed: the GPU itself (allocations, copies, the kernels,
whose place is taken by writing each tensor's known digest where the kernels write roots), so the
kernel time is NOT included and must be measured on a GPU. The manifest's roots are made up but
consistent (each tensor's chunk roots fold into its root), so every check passes as it would.

Figures are medians of --repeats runs after one warm-up: the total from plain runs, the breakdown
from runs with each stage's function wrapped in a timer (a child's time is part of its parent's).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import inspect
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch
from cpu_hash import cpu_model, mem_total
from gpu_stub import StandIn, StubLog, stubbed_cuda

import sentry
import sentry.api
import sentry.signing
from sentry.hashing import cuda, gpu_plan
from sentry.hashing.cpu import ItemDigest
from sentry.hashing.merkle import chunk_leaves, leaf_count, root_of_hashes
from sentry.hashing.params import HashParams
from sentry.manifest.manifest import Manifest
from sentry.signing import KeyVerifier, write_keypair

VOCAB, HIDDEN, FFN = 32000, 4096, 11008


def llama2_7b_shapes(layers: int = 32) -> list:
    """(state_dict key, shape) of Llama-2-7B (Hugging Face names), in its state_dict order."""
    shapes = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + f"self_attn.{x}_proj.weight", (HIDDEN, HIDDEN)) for x in "qkvo"]
        shapes += [(p + "mlp.gate_proj.weight", (FFN, HIDDEN)), (p + "mlp.up_proj.weight", (FFN, HIDDEN)),
                   (p + "mlp.down_proj.weight", (HIDDEN, FFN))]
        shapes += [(p + "input_layernorm.weight", (HIDDEN,)), (p + "post_attention_layernorm.weight", (HIDDEN,))]
    return shapes + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def made_up_digest(name: str, size: int, params: HashParams) -> ItemDigest:
    """Chunk roots derived from the name, folded into the root as a real digest's are."""
    n = leaf_count(size, params.leaf_size)
    chunks = tuple(hashlib.sha256(f"{name}:{i}".encode()).digest()
                   for i in range(-(-n // chunk_leaves(n, params.max_chunks))))
    return ItemDigest(size, root_of_hashes(chunks), chunks)


def standin_model(layers: int, params: HashParams) -> dict:
    state = {}
    for i, (name, shape) in enumerate(llama2_7b_shapes(layers)):
        size = 2 * int(torch.Size(shape).numel())
        state[name] = StandIn(shape, torch.bfloat16, made_up_digest(name, size, params), i)
    return state


# (label, depth, owner, attribute): each stage is the time spent in that function.
STAGES = [
    ("load public key (PEM)", 1, sentry.api, "verifier_for"),
    ("read bundle (file, strict JSON, base64)", 1, sentry.signing, "read_bundle"),
    ("signature check (DSSE PAE, ECDSA P-256)", 1, KeyVerifier, "verify"),
    ("parse statement (strict JSON)", 1, sentry.signing, "parse_statement"),
    ("signed manifest: items from the predicate", 1, Manifest, "from_predicate"),
    ("signed manifest: root over the records", 1, Manifest, "root"),
    ("manifest of the model (hash_artifact)", 1, sentry.api, "_hash"),  # hash_artifact after its options resolve
    ("state_dict_of", 2, sentry.api, "state_dict_of"),
    ("tensor_items", 2, sentry.api, "tensor_items"),
    ("hashing.digest_tensors", 3, sentry.hashing, "digest_tensors"),
    ("cuda.digest_tensors", 4, cuda, "digest_tensors"),
    ("gpu_plan.plan", 5, gpu_plan, "plan"),
    ("cuda._run (launch loop)", 5, cuda, "_run"),
    ("gpu_plan.table + levels", 6, gpu_plan, "table"),
    ("gpu_plan.table + levels", 6, gpu_plan, "levels"),
    ("gpu_plan.assemble", 5, gpu_plan, "assemble"),
    ("compare_manifests", 1, sentry.api, "compare_manifests"),
    ("verdict (Report)", 1, sentry.api, "_verdict"),
]
STUB = "stub kernels (not Sentry's time)"


def _timed_patch(owner, attr: str, spent: dict, label: str):
    """Replace owner.attr with a wrapper adding its run time to spent[label] (methods and
    classmethods alike)."""
    raw = inspect.getattr_static(owner, attr)
    fn = raw.__func__ if isinstance(raw, classmethod) else raw

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - start

    return mock.patch.object(owner, attr, classmethod(timed) if isinstance(raw, classmethod) else timed)


def median_ms(samples) -> float:
    return statistics.median(samples) * 1e3


def measure(state: dict, pub: Path, sig: Path, repeats: int):
    """(plain totals without the stub kernels' time, {label: per-run seconds}, the GPU calls the
    stub stood in for in one verify) of verify_model, after one warm-up."""
    log = StubLog()
    with stubbed_cuda(state.values(), log):
        report = sentry.verify_model(state, public_key=pub, signature=sig)  # warm-up, imports
        assert report.ok and report.checked == len(state), report.summary()
        calls = dict(log.calls)
        totals = []
        for _ in range(repeats):
            log.seconds = 0.0
            start = time.perf_counter()
            sentry.verify_model(state, public_key=pub, signature=sig)
            totals.append(time.perf_counter() - start - log.seconds)
        runs = []
        for _ in range(repeats):
            spent, log.seconds = {}, 0.0
            with _patched_stages(spent):
                start = time.perf_counter()
                sentry.verify_model(state, public_key=pub, signature=sig)
                spent["total"] = time.perf_counter() - start
            spent[STUB] = log.seconds
            runs.append(spent)
    return totals, {label: [r.get(label, 0.0) for r in runs] for label in runs[0]}, calls


def _patched_stages(spent: dict):
    stack = contextlib.ExitStack()
    for label, _, owner, attr in STAGES:
        stack.enter_context(_timed_patch(owner, attr, spent, label))
    return stack


def plan_alone(state: dict, params: HashParams, repeats: int) -> tuple:
    """Medians (ms) of gpu_plan.plan and of a full pass of window_tables, for these sizes."""
    sizes = [t.numel() * t.element_size() for t in state.values()]
    plans, tables = [], []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        work = gpu_plan.plan(sizes, params, cuda.WINDOW_LEAVES)
        mid = time.perf_counter()
        windows = list(gpu_plan.window_tables(work, params.leaf_size, cuda.WINDOW_LEAVES, lambda s: [0] * len(s)))
        plans.append(mid - start)
        tables.append(time.perf_counter() - mid)
    return median_ms(plans[1:]), median_ms(tables[1:]), len(work.segments), len(windows)


def breakdown_lines(stages: dict) -> list:
    """The stage tree with inclusive medians; '(rest)' lines give a parent's time outside its children."""
    labels = list(dict.fromkeys(label for label, *_ in STAGES))
    depth = {label: d for label, d, *_ in STAGES}
    depth[STUB] = 6
    labels.insert(labels.index("gpu_plan.assemble"), STUB)
    med = {label: median_ms(stages[label]) for label in labels if label in stages}
    lines = []

    def rest(parent: str, children: list) -> float:
        per_run = [stages[parent][i] - sum(stages[c][i] for c in children if c in stages)
                   for i in range(len(stages[parent]))]
        return median_ms(per_run)

    def emit(i: int, parent: str, d: int) -> int:
        children = []
        while i < len(labels) and depth[labels[i]] == d:
            label = labels[i]
            children.append(label)
            lines.append(f"{'  ' * (d - 1)}{label:<{52 - 2 * (d - 1)}} {med.get(label, 0.0):8.3f}")
            i = emit(i + 1, label, d + 1)
        if children:
            lines.append(f"{'  ' * (d - 1)}{'(rest of ' + parent + ')':<{52 - 2 * (d - 1)}} {rest(parent, children):8.3f}")
        return i

    emit(0, "total", 1)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=21, help="timed runs per figure (median)")
    ap.add_argument("--layers", type=int, default=32, help="decoder layers (32: Llama-2-7B)")
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args(argv)

    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    from cryptography.hazmat.backends.openssl.backend import backend

    params = HashParams()
    state = standin_model(args.layers, params)
    nbytes = sum(t.digest.size for t in state.values())
    say(f"# bench/verify_overhead.py  {datetime.datetime.now().isoformat(timespec='seconds')}")
    argv = sys.argv[1:] if argv is None else argv
    say(f"command: {' '.join([os.path.relpath(sys.executable), os.path.relpath(__file__)] + argv)}")
    say(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {mem_total()}, {platform.platform()}; no GPU")
    say(f"python {platform.python_version()}, torch {torch.__version__}, {backend.openssl_version_text()}")
    say(f"model: Llama-2-7B shapes, {args.layers} layers, {len(state)} bf16 tensors, {nbytes / 1e9:.2f} GB "
        f"(stand-ins: shape and dtype, no bytes), leaf {params.leaf_size}, max_chunks {params.max_chunks}")
    say("real: bundle read, ECDSA P-256 check, statement + predicate parsing, signed manifest root, the CUDA")
    say("      backend's Python (gpu_plan tables/windows, _run launch loop, assemble), compare, Report")
    say("stubbed (bench/gpu_stub.py): the GPU - allocations, copies and the Merkle kernels, replaced by writing")
    say("      each tensor's signed digest where the kernels write roots. Kernel time is NOT included: measure it")
    say("      on a GPU (bench/gpu_merkle.py); the target leaves ~12 ms of the 40 ms for what is measured here.")

    with tempfile.TemporaryDirectory() as tmp:
        key, pub, sig = Path(tmp, "key.pem"), Path(tmp, "key.pub.pem"), Path(tmp, "model.sig")
        write_keypair(key, pub)
        with stubbed_cuda(state.values()):
            sentry.sign_model(state, key=key, signature=sig)
        say(f"signature: {sig.stat().st_size:,} byte bundle, real P-256 key; {args.repeats} runs per figure, median")
        totals, stages, calls = measure(state, pub, sig, args.repeats)
    plan_ms, tables_ms, segments, windows = plan_alone(state, params, args.repeats)

    say()
    timed = [t - s for t, s in zip(stages["total"], stages[STUB])]
    say("verify_model, end to end, without the stub kernels' time (median, and min of the runs):")
    say(f"{'  plain runs':<52} {median_ms(totals):8.3f} ms  (min {min(totals) * 1e3:.3f})")
    say(f"{'  runs with the stage timers below':<52} {median_ms(timed):8.3f} ms  (min {min(timed) * 1e3:.3f})")
    say()
    say(f"{'stage (inclusive, ms)':<52} {'median':>8}")
    for line in breakdown_lines(stages):
        say(line)
    say()
    say(f"on their own: gpu_plan.plan {plan_ms:.3f} ms, window_tables (all {windows} windows, "
        f"{segments} segments) {tables_ms:.3f} ms")
    say("GPU calls per verify that the stub stood in for (their CuPy/driver host cost is not above): "
        + ", ".join(f"{what} {n}" for what, n in calls.items()))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
