"""How to hash an artifact (:class:`Options`, resolved once per call) and the defaults
``sentry.configure`` sets for later calls (:class:`Defaults`).

The public functions keep their keyword arguments; each resolves them here once, against the
configured defaults, and hands one frozen object down instead of threading a dozen keywords.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import SentryError
from ..hashing.params import HashParams
from .ignore import DEFAULT_IGNORES, default_ignore_names

__all__ = ["Defaults", "Options"]


class Defaults:
    """What ``configure`` set: a value given to a call wins, else the configured one."""

    KEYS = frozenset({"key", "public_key", "signature", "dataset_public_key", "dataset_signature", "password",
                      "device", "leaf_size", "progress", "distributed_timeout", "spread_replicas"})

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def set(self, **settings) -> None:
        """Set each setting; ``None`` clears one. An unknown name sets nothing."""
        unknown = set(settings) - self.KEYS
        if unknown:
            raise SentryError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for name, value in settings.items():
            if value is None:
                self._values.pop(name, None)
            else:
                self._values[name] = value

    def pick(self, name: str, given):
        """``given``, or the configured value of ``name`` when ``given`` is None."""
        return self._values.get(name) if given is None else given


@dataclass(frozen=True)
class Options:
    """How to hash (model: ``model_signing.hashing.Config``): the tree parameters, what the walk
    leaves out and follows, state_dict name mapping, the engine's device, progress reporting, and
    how long a rank of a sharded model waits for the others (None: 600 s), and whether replicas
    share the hashing of what they all hold (hashing/sharded.py)."""

    params: HashParams = field(default_factory=HashParams)
    ignore: tuple[str, ...] = ()
    default_ignores: tuple[str, ...] = DEFAULT_IGNORES
    allow_symlinks: bool = False
    strip_prefix: str = ""
    add_prefix: str = ""
    device: str = "auto"
    progress: Any = None
    distributed_timeout: float | None = None
    spread_replicas: bool = False

    @classmethod
    def resolve(cls, defaults: Defaults, *, params: HashParams | None = None, leaf_size=None, ignore=(),
                default_ignores=True, allow_symlinks=False, strip_prefix="", add_prefix="", device=None,
                progress=None, distributed_timeout=None, spread_replicas=None) -> Options:
        """The options of one call: its keyword arguments, else the configured ``defaults``.
        ``params`` (a signature's) wins over ``leaf_size``; ``default_ignores`` as for
        :func:`default_ignore_names`."""
        if params is None:
            leaf_size = defaults.pick("leaf_size", leaf_size)
            params = HashParams() if leaf_size is None else HashParams(leaf_size=leaf_size)
        return cls(params, tuple(ignore), default_ignore_names(default_ignores), allow_symlinks, strip_prefix,
                   add_prefix, defaults.pick("device", device) or "auto", defaults.pick("progress", progress),
                   defaults.pick("distributed_timeout", distributed_timeout),
                   bool(defaults.pick("spread_replicas", spread_replicas)))

    def replace(self, **changes) -> Options:
        return dataclasses.replace(self, **changes)
