"""Static check of the signing kernel's machine code (SASS) for secret-dependent control flow and
memory addresses, where the secret work happens:

1. p256_madd_core and p256_dbl, the point operations the signing loop calls, must be straight-line
   code: one RET and no other branch, call or exit.
2. In the loop of p256_sign_batch that calls p256_madd_core (the fixed-base scalar multiplication),
   no branch or predicated memory access may be guarded by, and no memory address computed from,
   a value loaded from memory (the key, the digest, the nonce's digits, the table entries, anything
   reloaded from the stack) or written by a call, directly or through any chain of instructions:
   a taint analysis over the whole kernel's control flow, to a fixed point.

It over-approximates (every loaded value counts as secret, and a call taints every register its
callee may write), so it can cry wolf but not miss a dependence in the code it reads. It does not
see timing that depends on operand values, nor code outside that loop and the two point
operations. valgrind (tests/native/test_ecdsa_ct.py) covers the C++ on the CPU; this covers what nvcc
and ptxas made of it.

    python tests/sass_ct.py [kernels/ecdsa.cu]   # needs nvcc and nvdisasm
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KERNEL = "p256_sign_batch"
STRAIGHT = ("p256_madd_core", "p256_dbl")
CONTROL = {"BRA", "BRX", "JMP", "JMX", "CALL", "RET", "EXIT", "BSSY", "BSYNC", "BREAK", "KILL"}
MEMORY = re.compile(r"^(LD|ST|ATOM|RED)")
LOADS = re.compile(r"^(LD|LDS|LDL|LDG|ATOM)$")
REG = re.compile(r"^(U?R\d+|U?P\d+)$")
PUBLIC_REGS = {"RZ", "URZ", "PT", "UPT"}
ALL_REGISTERS = {f"R{k}" for k in range(256)} | {f"P{k}" for k in range(7)}
LINE = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?(\S+)\s*(.*?)\s*;")


def find_nvdisasm() -> str | None:
    """nvdisasm on PATH, or the one the nvidia-cuda-nvdisasm wheel puts in site-packages."""
    from support import nvidia_wheel_file

    found = shutil.which("nvdisasm") or nvidia_wheel_file("cu*/bin/nvdisasm")
    return str(found) if found else None


class Instr:
    def __init__(self, addr: int, guard: str | None, opcode: str, operands: list[str]):
        self.addr, self.guard, self.opcode, self.operands = addr, guard, opcode, operands
        self.base = opcode.split(".")[0]

    def __repr__(self) -> str:
        guard = f"@{self.guard} " if self.guard else ""
        return f"/*{self.addr:04x}*/ {guard}{self.opcode} {', '.join(self.operands)}"

    def _width(self) -> int:
        parts = set(self.opcode.split(".")[1:])
        if "128" in parts:
            return 4
        if parts & {"64", "WIDE"} or self.base == "CS2R":
            return 2
        return 1

    def _dest_count(self) -> int:
        """Leading operands written: the first (unless a store, branch or call), then the
        predicates right after it (carry-outs, ISETP's second result)."""
        if self.base in CONTROL or (MEMORY.match(self.base) and not self.base.startswith("LD")):
            return 0
        ops = [_strip(op) for op in self.operands]
        if not ops or (not REG.match(ops[0]) and ops[0] not in PUBLIC_REGS):
            return 0
        count = 1
        while count < len(ops) and re.match(r"^U?P(\d+|T)$", ops[count]):
            count += 1
        return count

    def dests(self) -> set[str]:
        out: set[str] = set()
        for k, op in enumerate(_strip(op) for op in self.operands[: self._dest_count()]):
            m = re.match(r"^(U?R)(\d+)$", op)
            if k == 0 and m:  # a register range for wide results
                out |= {f"{m.group(1)}{int(m.group(2)) + w}" for w in range(self._width())}
            else:
                out.add(op)
        return out - PUBLIC_REGS

    def sources(self) -> set[str]:
        found = _registers(self.operands[self._dest_count():])
        if self._width() > 1:  # a wide operation may read register pairs or quads
            found |= {f"{r[:-len(n)]}{int(n) + w}" for r in found if (n := re.sub(r"^U?[RP]", "", r))
                      and r.lstrip("U")[0] == "R" for w in range(1, self._width())}
        return found

    def addresses(self) -> set[str]:
        return _registers(inner for op in self.operands for inner in re.findall(r"\[([^\]]*)\]", op))


def _registers(operands) -> set[str]:
    """Registers and predicates read by these operands; Rn.64 names the pair Rn, Rn+1 and PR all
    the predicates (P2R)."""
    found: set[str] = set()
    for op in operands:
        found |= set(re.findall(r"U?R\d+|U?P\d+", op))
        if re.search(r"\bPR\b", op):
            found |= {f"P{k}" for k in range(7)}
        for prefix, num in re.findall(r"(U?R)(\d+)\.64", op):
            found.add(f"{prefix}{int(num) + 1}")
    return found - PUBLIC_REGS


def _strip(op: str) -> str:
    op = op.strip().lstrip("-!~|").rstrip("|")
    return op.split(".")[0] if REG.match(op.split(".")[0]) else op


def parse(sass: str) -> dict[str, tuple[list[Instr], dict[str, int]]]:
    """Function name -> (instructions, label -> address), from `nvdisasm -c` output."""
    functions: dict[str, tuple[list[Instr], dict[str, int]]] = {}
    current = None
    pending: list[str] = []
    for line in sass.splitlines():
        label = re.match(r"^(\$?[A-Za-z_.][\w$.]*):\s*$", line)
        if label:
            name = label.group(1)
            if name.startswith(".L"):
                pending.append(name)
            elif not name.startswith(".text"):
                current = name
                functions[current] = ([], {})
            continue
        m = LINE.match(line)
        if m and current:
            addr = int(m.group(1), 16)
            guard = m.group(2).strip()[1:] if m.group(2) else None
            operands = [op.strip() for op in _split_operands(m.group(4))] if m.group(4) else []
            instrs, labels = functions[current]
            for name in pending:
                labels[name] = addr
            pending = []
            instrs.append(Instr(addr, guard, m.group(3), operands))
    return functions


def _split_operands(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(`":
            depth += 1
        elif ch in "])" and depth:
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def _function(functions, kernel: str, short: str):
    for name, body in functions.items():
        if name.startswith(f"${kernel}$") and re.search(rf"\d{short}[A-Z]", name):
            return name, body
    raise AssertionError(f"no {short} called from {kernel} in the SASS")


def check_straight_line(instrs: list[Instr]) -> list[str]:
    problems = []
    rets = [i for i in instrs if i.base == "RET"]
    if len(rets) != 1 or rets[0].guard:
        problems.append(f"expected one unconditional RET, found {rets}")
    end = rets[0].addr if rets else instrs[-1].addr
    for i in instrs:
        if i.addr < end and (i.base in CONTROL - {"RET"}):
            problems.append(f"control flow in straight-line code: {i}")
    return problems


def scalar_mult_loop(instrs: list[Instr], labels: dict[str, int], callee: str) -> list[Instr]:
    """The innermost loop (a backward branch and its target) around the call to `callee`."""
    call = next(i for i in instrs if i.base == "CALL" and callee in " ".join(i.operands))
    best = None
    for i in instrs:
        if i.base != "BRA" or i.addr <= call.addr:
            continue
        target = re.search(r"\((\.L\w+)\)", i.operands[0])
        head = labels.get(target.group(1)) if target else None
        if head is not None and head < call.addr and (best is None or i.addr - head < best[1] - best[0]):
            best = (head, i.addr)
    if best is None:
        raise AssertionError(f"no loop around the call to {callee}")
    return [i for i in instrs if best[0] <= i.addr <= best[1]]


def _target(i: Instr, labels: dict[str, int]) -> int | None:
    m = re.search(r"\((\.L\w+)\)", " ".join(i.operands))
    return labels.get(m.group(1)) if m else None


def tainted_uses(code: list[Instr], labels: dict[str, int], clobbers: dict[str, set[str]],
                 watch: tuple[int, int]) -> list[str]:
    """Forward taint analysis over the kernel's control-flow graph, to a fixed point; reports
    the uses inside `watch` (an address range). Taint starts at every load (the key and the
    digest arrive by loads) and at every register a call may write (`clobbers`: callee name ->
    registers), and flows through every instruction that reads a tainted register or predicate,
    or is guarded by one (a guarded write may also not happen, so it adds taint and never
    removes it)."""
    loop = code
    addrs = [i.addr for i in loop]
    index = {a: k for k, a in enumerate(addrs)}
    leaders = {0} | {index[a] for a in labels.values() if a in index}
    leaders |= {k + 1 for k, i in enumerate(loop[:-1]) if i.base in {"BRA", "EXIT", "RET"}}
    starts = sorted(leaders)
    blocks = [loop[s:e] for s, e in zip(starts, starts[1:] + [len(loop)])]
    block_at = {b[0].addr: n for n, b in enumerate(blocks)}

    def successors(n: int) -> list[int]:
        last = blocks[n][-1]
        out = []
        if last.base == "BRA":
            target = _target(last, labels)
            if target in block_at:
                out.append(block_at[target])
            if not last.guard:
                return out
        elif last.base in {"EXIT", "RET"} and not last.guard:
            return out
        return out + ([n + 1] if n + 1 < len(blocks) else [])

    def step(state: set[str], i: Instr, report: list[str] | None) -> set[str]:
        guard = i.guard.lstrip("!") if i.guard else None
        if report is not None:
            if guard in state and (i.base in CONTROL or MEMORY.match(i.base)):
                report.append(f"guarded by a loaded value: {i}")
            if MEMORY.match(i.base) and i.addresses() & state:
                report.append(f"address computed from a loaded value: {i}")
        if i.base == "CALL":
            callee = next((name for name in clobbers if name in " ".join(i.operands)), None)
            return state | (clobbers[callee] if callee else ALL_REGISTERS)
        dests = i.dests()
        dirty = LOADS.match(i.base) or bool((i.sources() | ({guard} if guard else set())) & state)
        if dirty:
            return state | dests
        return state if guard else state - dests

    entry: dict[int, set[str]] = {0: set()}
    work = [0]
    while work:
        n = work.pop()
        state = set(entry[n])
        for i in blocks[n]:
            state = step(state, i, None)
        for succ in successors(n):
            if succ not in entry or not state <= entry[succ]:
                entry[succ] = entry.get(succ, set()) | state
                work.append(succ)
    problems: list[str] = []
    for n, block in enumerate(blocks):
        state = set(entry.get(n, set()))
        for i in block:
            state = step(state, i, problems if watch[0] <= i.addr <= watch[1] else None)
    return problems


def callee_writes(functions, kernel: str) -> dict[str, set[str]]:
    """Callee name -> every register it or its own callees may write (ptxas allocates registers
    across the whole program, so a caller keeps values in whatever its callee leaves alone).
    R1, the stack pointer, comes back as it went in."""
    prefix = f"${kernel}$"
    direct = {name: {r for i in body for r in i.dests()} - {"R1"}
              for name, (body, _) in functions.items() if name.startswith(prefix)}
    calls = {name: {other for i in body if i.base == "CALL" for other in direct if other in " ".join(i.operands)}
             for name, (body, _) in functions.items() if name in direct}
    changed = True
    while changed:
        changed = False
        for name in direct:
            for other in calls[name]:
                if not direct[other] <= direct[name]:
                    direct[name] |= direct[other]
                    changed = True
    return direct


def check_sass(sass: str) -> list[str]:
    functions = parse(sass)
    problems = []
    for short in STRAIGHT:
        name, (instrs, _) = _function(functions, KERNEL, short)
        problems += [f"{short}: {p}" for p in check_straight_line(instrs)]
    madd, _ = _function(functions, KERNEL, STRAIGHT[0])
    instrs, labels = functions[KERNEL]
    loop = scalar_mult_loop(instrs, labels, madd)
    watch = (loop[0].addr, loop[-1].addr)
    clobbers = callee_writes(functions, KERNEL)
    problems += [f"{KERNEL} scalar multiplication loop: {p}" for p in tainted_uses(instrs, labels, clobbers, watch)]
    return problems


def sass_of(source: Path, include: Path, nvdisasm: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        subprocess.run(["nvcc", "-arch=sm_90", "-cubin", f"-I{include}", "-o", str(cubin), str(source)],
                       check=True, capture_output=True)
        return subprocess.run([nvdisasm, "-c", str(cubin)], check=True, capture_output=True, text=True).stdout


def main() -> int:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "kernels" / "ecdsa.cu")
    nvdisasm = find_nvdisasm()
    if nvdisasm is None or shutil.which("nvcc") is None:
        print("needs nvcc and nvdisasm (pip install nvidia-cuda-nvdisasm)", file=sys.stderr)
        return 2
    problems = check_sass(sass_of(source, source.parent, nvdisasm))
    for p in problems:
        print(p)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
