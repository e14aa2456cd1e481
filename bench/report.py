"""The one way a benchmark publishes its text report: print it (unless it printed as it went) and,
with --out, write the same lines to the file committed under bench/results/."""
from __future__ import annotations


def publish(lines: list[str], out: str | None, *, echo: bool = True) -> None:
    text = "\n".join(lines) + "\n"
    if echo:
        print(text, end="")
    if out:
        with open(out, "w") as f:
            f.write(text)
