"""What a directory listing leaves out: default ignores (top level only) and the signer's patterns.

The rules (docs/spec.md §2.1):

- A **default ignore** is an exact name matched against the entries directly under the root
  (a file or a directory, with everything below it), as model_signing ignores its git paths;
  nested ``.git`` directories are hashed like any other. ``__pycache__`` and ``*.pyc`` are not
  defaults: they are code that runs. The effective list is recorded in the signature.
- A **pattern without '/'** is a glob (``fnmatch``, case-sensitive) matched against every single
  path component, at any depth: ``*.log`` leaves out every log file, ``wandb`` every entry of
  that name (a directory with everything below it).
- A **pattern with '/'** is anchored at the root (a leading '/' changes nothing else): its
  components are globs matched one for one against the path's first components, never across a
  '/', and it leaves out that path with everything below it. A trailing '/' makes it match a
  directory only: ``runs/`` is the top-level directory ``runs``, ``/notes.txt`` the top-level
  file only, ``logs/*.txt`` the text files directly in the top-level ``logs``.

Rules are asked about each entry as a walk meets it, before it enters a directory: an ignored
directory is not entered, so a rule never needs to look at a path's parents.
"""
from __future__ import annotations

import fnmatch
import functools
import re

__all__ = ["DEFAULT_IGNORES", "IgnoreRules", "default_ignore_names", "is_plain_entry_name"]

# Version-control and OS clutter at the top of a model or dataset directory.
DEFAULT_IGNORES = (".git", ".github", ".gitattributes", ".gitignore", ".hg", ".svn", ".DS_Store")


def default_ignore_names(default_ignores) -> tuple:
    """``default_ignores``: True (Sentry's defaults), False (none) or the names a signature recorded."""
    if default_ignores is True:
        return DEFAULT_IGNORES
    return () if default_ignores is False else tuple(default_ignores)


def is_plain_entry_name(name) -> bool:
    """A default ignore is one directory entry's name."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\x00" not in name


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple):
    """(regex of the component patterns, {component count: [(segments, directory only)]})."""
    component: list[str] = []
    anchored: dict[int, list[tuple[tuple[str, ...], bool]]] = {}
    for p in patterns:
        if "/" not in p:
            component.append(fnmatch.translate(p))
            continue
        dir_only = p.endswith("/")
        segments = tuple(p.strip("/").split("/"))
        if segments != ("",):  # "/" alone names nothing
            anchored.setdefault(len(segments), []).append((segments, dir_only))
    regex = re.compile("|".join(component)).match if component else None
    return regex, anchored


class IgnoreRules:
    """``rules(relname, is_dir)``: whether a walk leaves the entry out. Every entry left out is
    appended to ``found`` (a directory with a trailing '/'), so a verifier can show them."""

    def __init__(self, patterns=(), defaults=DEFAULT_IGNORES, found: list | None = None):
        self.patterns, self.defaults = tuple(patterns), frozenset(defaults)
        self._component, self._anchored = _compiled(self.patterns)
        self.found = [] if found is None else found

    def __call__(self, relname: str, is_dir: bool) -> bool:
        if self._matches(relname, is_dir):
            self.found.append(relname + "/" if is_dir else relname)
            return True
        return False

    def _matches(self, relname: str, is_dir: bool) -> bool:
        top_level = "/" not in relname
        if top_level and relname in self.defaults:
            return True
        name = relname if top_level else relname.rsplit("/", 1)[1]
        if self._component is not None and self._component(name):
            return True
        if self._anchored:
            parts = relname.split("/")
            for segments, dir_only in self._anchored.get(len(parts), ()):
                if (is_dir or not dir_only) and all(fnmatch.fnmatchcase(c, s) for c, s in zip(parts, segments)):
                    return True
        return False
