"""Optional dependencies: imported only when a call needs one, and a missing one is one sentence
naming the extra of sentry-artifacts that installs it. ``sentry doctor`` lists them from here."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from typing import NamedTuple

from .errors import MissingDependency, reason

__all__ = ["OPTIONAL", "Dependency", "installed", "require", "version"]


class Dependency(NamedTuple):
    name: str  # what users call it
    distributions: tuple  # the PyPI names it comes as, to read its version without importing it
    extras: tuple  # the extras of sentry-artifacts that install it


OPTIONAL = {
    "numpy": Dependency("NumPy", ("numpy",), ("torch", "gpu", "dali")),
    "torch": Dependency("PyTorch", ("torch",), ("torch",)),
    "PIL": Dependency("Pillow", ("pillow",), ("torch",)),
    "cupy": Dependency("CuPy", ("cupy-cuda13x", "cupy-cuda12x", "cupy"), ("gpu",)),
    "kvikio": Dependency("kvikio", ("kvikio-cu13", "kvikio-cu12", "kvikio"), ("gpu",)),
    "nvidia.dali": Dependency("NVIDIA DALI", ("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-dali"), ("dali",)),
    "sigstore": Dependency("sigstore-python", ("sigstore",), ("sigstore",)),
}


def require(module: str, extra: str, purpose: str):
    """``import module``, or MissingDependency saying ``purpose`` needs it and that ``extra`` has it.

    Only the module itself (or its parent package) missing is reported as not installed; an
    installed module that fails to import (a missing shared library, say) is named with its reason."""
    name = OPTIONAL[module].name if module in OPTIONAL else module
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and (module + ".").startswith(exc.name + "."):
            raise MissingDependency(f"{purpose} needs {name}, which is not installed: "
                                    f"pip install 'sentry-artifacts[{extra}]'", name=module) from None
        raise MissingDependency(f"{purpose} needs {name}, which does not import ({reason(exc)}): "
                                f"reinstall it, e.g. pip install --force-reinstall 'sentry-artifacts[{extra}]'",
                                name=module) from None


def installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (a parent package may be imported)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent missing or blocked
        return False


def version(module: str) -> str | None:
    """The installed version of an optional dependency, from its distribution's metadata."""
    for dist in OPTIONAL[module].distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
