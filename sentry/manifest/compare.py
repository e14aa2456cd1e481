"""Compare a signed manifest with a recomputed one and name every difference."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SentryError
from ..hashing.merkle import chunk_leaves, leaf_count
from .item import SAMPLE, Item
from .tensors import tied_twin

__all__ = ["Change", "Report", "compare", "compare_digests", "compare_manifests", "diff_item"]


class ItemLabel(str):
    """An item's label ("tensor w (in a.safetensors)") that keeps the item's identity, so a report's
    JSON names its kind, name and file without parsing the text (a tensor's name may hold anything)."""

    kind: str
    name: str
    file: str | None

    @classmethod
    def of(cls, item: Item) -> ItemLabel:
        label = cls(item.label)
        label.kind, label.name, label.file = item.kind, item.name, item.file
        return label


def identity(label: str, kind: str | None = None) -> dict:
    """``{"kind", "name", "file", "label"}`` of a report entry: an :class:`ItemLabel`'s own; else a
    plain label (a file or sample: "KIND NAME"), or a bare tensor name when ``kind`` is given."""
    if isinstance(label, ItemLabel):
        return {"kind": label.kind, "name": label.name, "file": label.file, "label": str(label)}
    if kind is not None:
        return {"kind": kind, "name": label, "file": None, "label": f"{kind} {label}"}
    first, _, name = label.partition(" ")
    return {"kind": first, "name": name, "file": None, "label": label}


@dataclass(frozen=True)
class Change:
    label: str
    reasons: tuple[str, ...]
    # The first difference lies in bytes [offset, offset + length) of the item, when known.
    first_difference: tuple[int, int] | None = None
    # A dataset sample's source, when per-sample provenance names one (docs/spec.md §7).
    source: str | None = None

    def to_json(self) -> dict:
        obj = {**identity(self.label), "reasons": list(self.reasons)}
        if self.first_difference:
            obj["first_difference"] = {"offset": self.first_difference[0], "length": self.first_difference[1]}
        if self.source is not None:
            obj["source"] = self.source
        return obj

    def __str__(self) -> str:
        text = f"{self.label}: {', '.join(self.reasons)}"
        if self.first_difference:
            off, length = self.first_difference
            text += f" (first difference in bytes {off}..{off + length - 1})"
        if self.source is not None:
            text += f" (from source {self.source})"
        return text


@dataclass
class Report:
    """What a verification found. ``ok`` is true when nothing is missing, extra or changed, and no
    file on disk went uncovered by a signature of a model in memory unless the caller accepted it."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    # Tensors the caller declared legitimately absent, and tensors tied (same memory) to a verified one.
    allowed_absent: list[str] = field(default_factory=list)
    tied: list[tuple[str, str]] = field(default_factory=list)
    # Files on disk that a signature of an in-memory model cannot cover (e.g. config.json, code):
    # they fail the verification unless the caller accepts them (``uncovered_allowed``).
    uncovered: list[str] = field(default_factory=list)
    uncovered_allowed: bool = False
    # Paths on disk the ignore rules left out (a directory with a trailing '/'): not a failure, shown.
    ignored: list[str] = field(default_factory=list)
    # spread_replicas: each rank hashed only its part of what replicas hold; the rest of its own
    # copy was not checked (another replica hashed that part of its copy). Not a failure, shown.
    replicas_spread: bool = False
    # What the verified signature signs (its subject digest, hex) and, for a model, the datasets
    # it names as its training data (manifest/lineage.py TrainingData); set by the API's verify calls.
    root: str | None = None
    training_data: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed or self._failing_uncovered())

    def _failing_uncovered(self) -> list[str]:
        return [] if self.uncovered_allowed else self.uncovered

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "missing": [identity(m) for m in self.missing],
            "extra": [identity(e) for e in self.extra],
            "changed": [c.to_json() for c in self.changed],
            "allowed_absent": [identity(a, "tensor") for a in self.allowed_absent],
            "tied": [{"item": identity(a, "tensor"), "same_memory_as": identity(b, "tensor")} for a, b in self.tied],
            "uncovered": [identity(u) for u in self.uncovered],
            "uncovered_allowed": self.uncovered_allowed,
            "ignored": self.ignored,
            "replicas_spread": self.replicas_spread,
            "root": self.root,
            "training_data": [link.to_json() for link in self.training_data],
        }

    def lines(self) -> list[str]:
        out = [f"missing: {m}" for m in self.missing]
        out += [f"extra: {e}" for e in self.extra]
        out += [f"changed: {c}" for c in self.changed]
        # Failures first: a failed verification's message quotes the first line.
        allowed = " (allowed)" if self.uncovered_allowed else ""
        out += [f"not covered by the signature{allowed}: {u}" for u in self.uncovered]
        out += [f"absent (allowed): {a}" for a in self.allowed_absent]
        out += [f"tied: {a} shares memory with {b}" for a, b in self.tied]
        out += [f"ignored: {i}" for i in self.ignored]
        if self.replicas_spread:
            out.append("replicas spread: this rank checked only its part of the replicated bytes it holds")
        out += [f"trained on: {t.name} (dataset root {t.root})" for t in self.training_data]
        return out

    def summary(self) -> str:
        if self.ok:
            return f"verified {self.checked} items"
        parts = [f"{len(v)} {k}" for k, v in (("changed", self.changed), ("missing", self.missing), ("extra", self.extra)) if v]
        text = [f"{', '.join(parts)} of {self.checked} items"] if parts else []
        if self._failing_uncovered():
            text.append(f"{len(self.uncovered)} files not covered by the signature")
        return "; ".join(text)


def diff_item(signed: Item, actual: Item, leaf_size: int, max_chunks: int) -> Change | None:
    reasons = []
    if signed.kind == "tensor":
        if signed.dtype != actual.dtype:
            reasons.append(f"dtype {signed.dtype} -> {actual.dtype}")
        if signed.shape != actual.shape:
            reasons.append(f"shape {list(signed.shape or ())} -> {list(actual.shape or ())}")
    if signed.size != actual.size:
        reasons.append(f"size {signed.size} -> {actual.size} bytes")
    if signed.root != actual.root:
        reasons.append("content differs")
    if not reasons:
        return None
    return Change(ItemLabel.of(signed), tuple(reasons), _first_difference(signed, actual, leaf_size, max_chunks))


def _first_difference(signed: Item, actual: Item, leaf_size: int, max_chunks: int):
    """Locate the first differing chunk (a single leaf for small items) when sizes agree."""
    if signed.size != actual.size or signed.root == actual.root or signed.size == 0 or signed.kind == SAMPLE:
        return None
    per_chunk = chunk_leaves(leaf_count(signed.size, leaf_size), max_chunks) * leaf_size
    a = signed.chunks or (signed.root,)
    b = actual.chunks or (actual.root,)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            offset = i * per_chunk
            return offset, min(per_chunk, signed.size - offset)
    return None


def compare(signed: list[Item], actual: list[Item], key, leaf_size: int, max_chunks: int, report: Report) -> Report:
    """Fill ``report`` with the differences between two item lists matched by ``key(item)``."""
    want = {key(it): it for it in signed}
    have = {key(it): it for it in actual}
    report.checked += len(want.keys() | have.keys())
    for k in sorted(want.keys() - have.keys()):
        report.missing.append(ItemLabel.of(want[k]))
    for k in sorted(have.keys() - want.keys()):
        report.extra.append(ItemLabel.of(have[k]))
    for k in sorted(want.keys() & have.keys()):
        change = diff_item(want[k], have[k], leaf_size, max_chunks)
        if change:
            report.changed.append(change)
    return report


def compare_digests(signed: dict[str, bytes], actual: dict[str, bytes], kind: str) -> Report:
    """The report for two {name: digest} maps (formats that record only a digest per item)."""
    report = Report(checked=len(signed.keys() | actual.keys()))
    report.missing = [f"{kind} {n}" for n in sorted(signed.keys() - actual.keys())]
    report.extra = [f"{kind} {n}" for n in sorted(actual.keys() - signed.keys())]
    report.changed = [Change(f"{kind} {n}", ("content differs",))
                      for n in sorted(signed.keys() & actual.keys()) if signed[n] != actual[n]]
    return report


def compare_manifests(signed, actual, *, allow_missing=(), allow_uncovered=False) -> Report:
    """Compare a signed manifest with the one just computed.

    Two disk manifests match item by item (files and the tensors inside them). When either side
    was taken from memory, only tensors can be compared, by name, wherever they were stored;
    tensors named in ``allow_missing`` may be absent from either side, and a model tensor that
    shares memory with a verified one (tied weights) counts as verified through it. Both are
    listed in the report. Against a signature of a model in memory, a file on disk is covered
    only by the tensors read from it (a .safetensors file); every other file is uncovered and
    fails the comparison unless ``allow_uncovered``.
    """
    p = signed.params
    report = Report()
    if "memory" not in (signed.source, actual.source):
        return compare(signed.items, actual.items, lambda it: it.key, p.leaf_size, p.max_chunks, report)

    if signed.source == "memory":
        # Every tensor read from a file is compared below, so such a file is covered by its tensors.
        # (A DCP checkpoint's tensor names the files it was read from: docs/spec.md §11.2.)
        holding_tensors = {f for it in actual.items if it.kind == "tensor" for f in (it.extra or {}).get("covers", (it.file,))}
        report.uncovered = [ItemLabel.of(it) for it in actual.items if it.kind == "file" and it.name not in holding_tensors]
        report.uncovered_allowed = allow_uncovered
    want, have = _tensors_by_name(signed), _tensors_by_name(actual)
    allowed = set(allow_missing)
    for name in sorted(allowed & (want.keys() ^ have.keys())):
        report.allowed_absent.append(name)
        want.pop(name, None)
        have.pop(name, None)
    for name in sorted(have.keys() - want.keys()):
        twin = tied_twin(have[name], [have[n] for n in sorted(want.keys() & have.keys())])
        if twin is not None:
            report.tied.append((name, twin.name))
            del have[name]
    return compare(list(want.values()), list(have.values()), lambda it: it.name, p.leaf_size, p.max_chunks, report)


def _tensors_by_name(manifest) -> dict:
    by_name: dict = {}
    for it in manifest.items:
        if it.kind != "tensor":
            continue
        if it.name in by_name:
            raise SentryError(
                f"tensor {it.name!r} appears in both {by_name[it.name].file} and {it.file}; "
                "verify the checkpoint file that holds the model instead of its directory"
            )
        by_name[it.name] = it
    return by_name
