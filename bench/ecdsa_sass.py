"""Compile-time facts of kernels/ecdsa.cu for sm_90, no GPU needed: nvcc wall time, ptxas's
registers / stack frame / spills per function, and SASS instruction counts per function.

    .venv/bin/python bench/ecdsa_sass.py [KERNELS_DIR]     # needs nvcc and nvdisasm

These are static counts: the code the GPU would run, not how fast it runs.
"""
from __future__ import annotations

import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import sass_ct

SHOWN = ("IMAD", "IADD3", "LOP3", "SEL", "SHF", "LDL", "STL", "LDS", "BRA", "CALL")


def main() -> int:
    kernels = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "kernels")
    nvdisasm = sass_ct.find_nvdisasm()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "ecdsa.cubin"
        start = time.perf_counter()
        run = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-Xptxas", "-v", f"-I{kernels}", "-o", str(cubin),
                              str(kernels / "ecdsa.cu")], capture_output=True, text=True, check=True)
        print(f"nvcc -arch=sm_90 -cubin -Xptxas -v: {time.perf_counter() - start:.1f} s wall")
        for line in run.stderr.splitlines():
            if "Compiling entry" in line or "Function properties" in line or "bytes stack" in line \
                    or "registers" in line:
                print("  " + line.strip().replace("ptxas info    : ", ""))
        if nvdisasm is None:
            print("no nvdisasm: no SASS counts")
            return 0
        sass = subprocess.run([nvdisasm, "-c", str(cubin)], capture_output=True, text=True, check=True).stdout
    print("SASS instructions per function (kernel bodies exclude their callees):")
    for name, (instrs, _) in sass_ct.parse(sass).items():
        ops = collections.Counter(i.base for i in instrs)
        detail = " ".join(f"{op}={ops[op]}" for op in SHOWN if ops[op])
        print(f"  {name}: {len(instrs)}  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
