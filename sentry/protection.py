"""``sentry.protect``: no forward of a model, or of any module in it, runs before the whole model verified.

Every module of the tree gets a forward pre-hook that shares one :class:`Protection`. The first
call of any of them verifies the whole model; a failure is final (every later call raises it
again). After a success each call first compares what it can read (its own subtree: modules,
parameters, persistent buffers) with what was verified; a difference re-verifies the whole model.
A tensor is "what was verified" while it is the same object, at the same address, with the same
dtype, device, shape, strides and version counter (every in-place write bumps the counter).
"""
from __future__ import annotations

import threading
import weakref

import torch

from .errors import SentryError, VerificationError

__all__ = ["Protection"]

_active: weakref.WeakSet = weakref.WeakSet()  # protections whose registration watch is on
_watch_handle = None


def _tensor_state(t):
    if t is None:
        return None
    return id(t), t.data_ptr(), t._version, t.dtype, t.device, t.shape, t.stride()


def _own_state(module) -> tuple:
    """What one module holds, for comparison; module objects compare by identity."""
    buffers = module._buffers
    skipped = module._non_persistent_buffers_set  # not in state_dict, so not signed: not compared
    return (tuple(module._modules.items()),
            tuple((n, _tensor_state(t)) for n, t in module._parameters.items()),
            tuple((n, _tensor_state(t)) for n, t in buffers.items() if n not in skipped))


def _on_module_registered(parent, name, child):
    """A module attached to a protected module is hooked at once: it cannot run unchecked."""
    for protection in list(_active):
        if parent in protection._hooks and child is not None:
            protection._hook_tree(child)


class Protection:
    """The handle :func:`sentry.protect` returns; ``remove()`` takes every hook off again."""

    def __init__(self, model: torch.nn.Module, verify):
        global _watch_handle
        if not isinstance(model, torch.nn.Module):
            raise SentryError(f"protect guards a torch.nn.Module, not a {type(model).__name__}")
        self._model, self._verify = model, verify
        self._hooks: dict = {}  # module -> its pre-hook handle
        self._verified: dict | None = None  # id(module) -> its _own_state when the model verified
        self._objects: list = []  # keeps the verified modules and tensors alive, so ids stay unique
        self._error: VerificationError | None = None
        self._lock = threading.RLock()
        self._in_root = threading.local()  # depth of checked forwards of the whole model, per thread
        self._root_done = model.register_forward_hook(self._leave_root, always_call=True)
        self._hook_tree(model)
        _active.add(self)
        if _watch_handle is None:
            _watch_handle = torch.nn.modules.module.register_module_module_registration_hook(_on_module_registered)

    def remove(self) -> None:
        _active.discard(self)
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()
        self._root_done.remove()

    def _hook_tree(self, module) -> None:
        for m in module.modules():
            if m not in self._hooks:
                self._hooks[m] = m.register_forward_pre_hook(self._before_forward)

    def _before_forward(self, module, args):
        if module is self._model:
            self._check(module)
            self._in_root.depth = getattr(self._in_root, "depth", 0) + 1
        elif not getattr(self._in_root, "depth", 0):  # inside the model's forward, checked at its entry
            self._check(module)

    def _leave_root(self, module, args, output):
        # Also runs when the forward (or our pre-hook) raised: an error only makes later checks fuller.
        self._in_root.depth = max(0, getattr(self._in_root, "depth", 0) - 1)

    def _check(self, module) -> None:
        if self._error is None and self._unchanged(module):
            return
        with self._lock:
            if self._error is None and not self._unchanged(module):
                self._verify_now()
            if self._error is not None:
                raise type(self._error)(str(self._error), self._error.report)  # the same kind, raised anew

    def _unchanged(self, module) -> bool:
        verified = self._verified
        return verified is not None and all(verified.get(id(m)) == _own_state(m) for m in module.modules())

    def _verify_now(self) -> None:
        # The state is taken before hashing: a write during the hash shows as a change next call.
        modules = list(self._model.modules())
        objects = modules + list(self._model.parameters()) + list(self._model.buffers())
        state = {id(m): _own_state(m) for m in modules}
        try:
            self._verify()
        except VerificationError as exc:
            self._error = exc
            return
        self._verified, self._objects = state, objects
        for gone in set(self._hooks) - set(modules):  # detached: no longer part of what is protected
            self._hooks.pop(gone).remove()
        self._hook_tree(self._model)  # modules attached behind the registration hook's back
