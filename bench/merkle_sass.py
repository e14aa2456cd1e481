"""Compile-time facts of the Merkle kernels (kernels/merkle.cu) for sm_90, no GPU needed: ptxas's
registers / stack / spills / shared memory per kernel, the occupancy they allow at 256 threads
per block on an H100/H200 SM, and the SASS instruction mix (memory instructions by kind and width).

    .venv/bin/python bench/merkle_sass.py [KERNELS_DIR]     # needs nvcc and nvdisasm

These are static counts: the code the GPU would run, not how fast it runs.
"""
from __future__ import annotations

import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import sass_ct

THREADS = 256
# sm_90 limits (CUDA occupancy calculator): registers per SM partition, allocation granule, threads,
# blocks, shared memory per SM and the 1 KiB the driver reserves per block.
REGS_PER_PARTITION, PARTITIONS, REG_GRANULE = 16384, 4, 256
MAX_THREADS, MAX_BLOCKS, SMEM_PER_SM, SMEM_RESERVED = 2048, 32, 233472, 1024
MEMORY = re.compile(r"^(LD|ST|LDG|STG|LDS|STS|LDGSTS|LDSM|ATOM|RED)")
SHOWN = ("SHFL", "BAR", "WARPSYNC", "DEPBAR", "PRMT", "SEL", "SHF", "LOP3", "IADD3")
RESOURCES = re.compile(r"Used (\d+) registers.*?(?:(\d+) bytes smem)?$")


def blocks_per_sm(regs: int, smem: int) -> tuple[int, str]:
    """Resident blocks of THREADS threads per SM, and what limits them."""
    warps = THREADS // 32
    per_warp = -(-regs * 32 // REG_GRANULE) * REG_GRANULE
    limits = {
        "registers": (REGS_PER_PARTITION // per_warp) * PARTITIONS // warps,
        "threads": MAX_THREADS // THREADS,
        "blocks": MAX_BLOCKS,
        "shared memory": SMEM_PER_SM // (smem + SMEM_RESERVED),
    }
    limit = min(limits, key=limits.get)
    return limits[limit], limit


def ptxas_report(stderr: str) -> dict:
    """Kernel -> (registers, stack, spill stores, spill loads, shared bytes) from `-Xptxas -v`."""
    out, name = {}, None
    for line in stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            out.setdefault(name, {}).update(stack=int(m[1]), spill_st=int(m[2]), spill_ld=int(m[3]))
        m = RESOURCES.search(line)
        if m and name:
            out.setdefault(name, {}).update(regs=int(m[1]), smem=int(m[2] or 0))
    return out


def largest_loop(instrs: list, labels: dict) -> list:
    """The instructions of the longest innermost loop (a backward branch whose body holds no other
    loop: the per-block loop of a hash kernel), every path through its body, taken or not."""
    loops = []
    for i in instrs:
        m = re.search(r"\(([.\w$]+)\)", " ".join(i.operands)) if i.base == "BRA" else None
        start = labels.get(m.group(1)) if m else None
        if start is not None and start < i.addr:
            loops.append((start, i.addr))
    inner = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]
    spans = [[j for j in instrs if a <= j.addr <= b] for a, b in inner]
    return max(spans, key=len, default=[])


def main() -> int:
    kernels = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "kernels")
    nvdisasm = sass_ct.find_nvdisasm()
    version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True).stdout
    print("nvcc:", version.strip().splitlines()[-1])
    for src in ("merkle.cu", "sha256_rate.cu"):
        with tempfile.TemporaryDirectory() as tmp:
            cubin = Path(tmp) / "k.cubin"
            run = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-Xptxas", "-v", f"-I{kernels}", "-o", str(cubin),
                                  str(kernels / src)], capture_output=True, text=True, check=True)
            print(f"\n$ nvcc -arch=sm_90 -cubin -Xptxas -v kernels/{src}")
            sass = subprocess.run([nvdisasm, "-c", str(cubin)], capture_output=True, text=True,
                                  check=True).stdout if nvdisasm else ""
        functions = sass_ct.parse(sass)
        for name, r in ptxas_report(run.stderr).items():
            blocks, limit = blocks_per_sm(r["regs"], r["smem"])
            print(f"{name}: {r['regs']} registers, {r['stack']} B stack, {r['spill_st']}/{r['spill_ld']} B spill "
                  f"stores/loads, {r['smem']} B shared; {blocks} blocks of {THREADS}/SM (by {limit}), "
                  f"occupancy {blocks * THREADS / MAX_THREADS:.1%}")
            if name not in functions:
                continue
            instrs = functions[name][0]
            ops = collections.Counter(i.base for i in instrs)
            mem = collections.Counter(i.opcode for i in instrs if MEMORY.match(i.base))
            print(f"  SASS: {len(instrs)} instructions; " + " ".join(f"{op}={ops[op]}" for op in SHOWN if ops[op]))
            print("  memory: " + " ".join(f"{op}={n}" for op, n in sorted(mem.items())))
            loop = largest_loop(*functions[name])
            if loop:
                ops = collections.Counter(i.base for i in loop)
                mix = " ".join(f"{op}={ops[op]}" for op in SHOWN if ops[op])
                print(f"  largest innermost loop: {len(loop)} instructions; {mix}")
    if nvdisasm is None:
        print("no nvdisasm: no SASS counts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
