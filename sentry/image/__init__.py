"""Model disk images: a deterministic EROFS image of a model directory with a dm-verity hash tree
(format 1, 4 KiB blocks) computed by Sentry's engine, in the plain, Modelwrap or Privatemode
layout; verification of an image against a root hash; and verify-on-read without privileges.

Modules, one job each: ``mkfs`` (the mkfs.erofs call), ``erofs`` (a minimal read-only EROFS
reader), ``verity`` (tree, root, superblock), ``layouts`` (parameters and side files per layout),
``build`` (image + tree + one-pass file roots), ``verify`` (recompute, name the bad block),
``signed`` (the signed statement: parse it, check the image against it),
``reader`` (VerifiedImage). This module ties them to the manifest and the signing layers.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import Remedy, SentryError
from ..manifest.manifest import IMAGE_PREDICATE_TYPE
from .build import ImageResult
from .layouts import LAYOUTS, layout_for
from .reader import VerifiedImage
from .signed import verify_signed_image
from .verify import verify_image

__all__ = ["IMAGE_PREDICATE_TYPE", "LAYOUTS", "ImageResult", "VerifiedImage", "build_image", "layout_for",
           "verify_image", "verify_signed_image"]


def _outputs_ok(model: Path, outputs: list, force: bool, key_files) -> None:
    real_model = os.path.realpath(model)
    keep = {os.path.realpath(k): what for k, what in dict(key_files).items()}
    out = outputs[0]
    for p in outputs:
        real = os.path.realpath(p)
        if real == real_model or real.startswith(real_model + os.sep):
            raise SentryError(f"{p} is inside the model directory {model}: write the image elsewhere")
        if real in keep:  # whatever force says
            raise SentryError(f"{p} is {keep[real]}: it is never written over")
        if os.path.lexists(p) and not force:
            raise SentryError(f"{p} exists", remedy=Remedy("force", purpose="to replace it"))
    if not out.parent.is_dir():
        raise SentryError(f"{out.parent} is not a directory")


def build_image(model, out, *, layout="plain", salt=None, uuid=None, model_id=None, ignore=(),
                default_ignores=True, allow_symlinks=False, device="cpu", force=False, signer=None,
                signature=None, progress=None, key_files=None) -> ImageResult:
    """Build the image of the model directory ``model`` at ``out``; with ``signer`` (a
    :class:`sentry.signing.Signer`: key, certificate or Sigstore), also sign a statement binding its
    verity root, image digest and manifest root (to ``signature``, default OUT.sig). ``key_files``
    (path -> what it is) are never written over, even with ``force``."""
    from ..api import hash_artifact
    from ..manifest.ignore import IgnoreRules, default_ignore_names
    from ..manifest.sources import files_of, stamp

    model, out = Path(model), Path(out)
    lay = layout_for(layout, salt=salt, uuid=uuid, model_id=model_id)
    if not model.is_dir():
        raise SentryError(f"{model} is not a directory: an image is built from a model directory")
    sig = Path(signature) if signature else (out.with_name(out.name + ".sig") if signer else None)
    _outputs_ok(model, [out, *lay.side_paths(out), *([sig] if sig else [])], force, key_files or {})
    _, files = files_of(model, IgnoreRules(ignore, default_ignore_names(default_ignores)), allow_symlinks)
    stamps = {real: stamp(os.stat(real)) for _, real in files}  # before hashing: any change after is caught
    manifest = hash_artifact(model, ignore=ignore, default_ignores=default_ignores, allow_symlinks=allow_symlinks,
                             device="cpu" if device == "cpu" else "auto", progress=progress)

    def unchanged():
        for real, before in stamps.items():
            if stamp(os.stat(real)) != before:
                raise SentryError(f"{real} changed while the image was being built")

    from .build import write_image

    result = write_image(files, manifest, out, lay, device=device, stamps=unchanged)
    if signer is not None and sig is not None:  # sig is set whenever signer is
        from ..signing import make_statement, write_bundle

        payload = make_statement(out.name, result.image_sha256, result.predicate(manifest.params.leaf_size),
                                 predicate_type=IMAGE_PREDICATE_TYPE)
        write_bundle(sig, signer.sign(payload))
        result.outputs.append(sig)
    return result
