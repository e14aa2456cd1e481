"""A small progress bar on stderr for long hashing; silent when stderr is not a terminal."""
from __future__ import annotations

import sys
import threading
import time

__all__ = ["ProgressBar"]


class ProgressBar:
    """Callable with the number of bytes just hashed; the hashing layer calls ``set_total`` first."""

    def __init__(self, label: str = "hashing", enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.label, self.done = 0, label, 0
        self.start = self._last = time.monotonic()
        self._lock = threading.Lock()

    def set_total(self, total: int) -> None:
        self.total = max(total, 0)

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            now = time.monotonic()
            if self.enabled and now - self._last >= 0.1:
                self._last = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(30 * frac)
        rate = self.done / max(now - self.start, 1e-9) / 1e6
        done, total = f"{self.done / 1e6:,.0f}", f"{self.total / 1e6:,.0f}"
        self.stream.write(f"\r{self.label} [{bar:<30}] {100 * frac:5.1f}% {done}/{total} MB {rate:,.0f} MB/s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
