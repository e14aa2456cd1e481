"""Optional dependencies: imported only when a call needs one, and a missing one is one sentence
naming the extra of sentry-artifacts that installs it."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependency, reason

# import name -> the distribution users know it by
NAMES = {
    "numpy": "NumPy",
    "torch": "PyTorch",
    "PIL": "Pillow",
    "cupy": "CuPy",
    "kvikio": "kvikio",
    "nvidia.dali": "NVIDIA DALI",
    "sigstore": "sigstore-python",
}



def missing(module: str, extra: str, purpose: str) -> MissingDependency:
    name = NAMES.get(module, module)
    return MissingDependency(f"{purpose} needs {name}, which is not installed: "
                             f"pip install 'sentry-artifacts[{extra}]'", name=module)


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or MissingDependency saying ``purpose`` needs it and which extra has it.

    Only the module itself missing is reported that way; an installed module that fails to import
    (a missing shared library, say) is named with its own reason."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and (module + ".").startswith(exc.name + "."):  # it, or its parent package
            raise missing(module, extra, purpose) from None
        raise MissingDependency(f"{purpose} needs {NAMES.get(module, module)}, which does not import "
                                f"({reason(exc)}): reinstall it, e.g. pip install --force-reinstall "
                                f"'sentry-artifacts[{extra}]'", name=module) from None
