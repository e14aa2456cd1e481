"""sentry_dataset: build a dataset directory of class folders from a source, then sign it.

    python -m agents.dataset --out data/digits --key owner.pem            # scikit-learn digits, PNG
    python -m agents.dataset --out data/mnist --source hf_saved_dir/ --key owner.pem
    python -m agents.dataset --out data/x --source train.parquet test.parquet --format npy --key owner.pem

The directory holds ``<label>/<n>.png`` (or ``.npy``) samples, labels zero-padded so that their
sorted order is their numeric order (what ImageFolder-style loaders index). It is signed with
``sentry.sign_dataset``: the signature (default ``DIR.sig``) and its sample list
(``DIR.samples.jsonl``) go beside it. Running again rewrites the samples and signs again.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from sentry import SentryError
from sentry.errors import reason

from .common import (
    EXIT_CODES,
    Parser,
    add_signing_options,
    add_trust_config_option,
    log,
    run,
    signature_beside,
    signing,
)

AGENT = "sentry_dataset"
FORMATS = ("png", "npy")
IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")
TABLE_SUFFIXES = (".parquet", ".arrow")


def digits_samples():
    """scikit-learn's digits (bundled with it: no network): 1797 8x8 images, grey levels 0..16
    scaled to 0..255."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return zip(images, (int(t) for t in digits.target))


def table_files(source: Path) -> list[Path]:
    """The Arrow/Parquet files of a Hugging Face ``save_to_disk`` directory (a Dataset, or the
    ``train`` split, else the first, of a DatasetDict), or the file itself."""
    import json

    if source.is_file():
        return [source]
    if (source / "dataset_dict.json").is_file():
        splits = json.loads((source / "dataset_dict.json").read_text())["splits"]
        return table_files(source / ("train" if "train" in splits else splits[0]))
    names = [entry["filename"] for entry in json.loads((source / "state.json").read_text())["_data_files"]]
    if not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in names):
        raise SentryError(f"{source}/state.json names data files outside its directory")
    return [source / name for name in names]


def read_table(path: Path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SentryError("reading Parquet or Arrow files needs pyarrow, which is not installed: "
                          "pip install 'sentry-artifacts[agents]'") from None
    if path.suffix == ".parquet":
        return pq.read_table(path)
    with pa.memory_map(str(path)) as source:  # save_to_disk writes the IPC stream format
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all()


def table_samples(files, image_column=None, label_column=None):
    """(image as a uint8 array, label) per row of Hugging Face style tables: an image column of
    ``{"bytes", "path"}`` structs (the ``Image`` feature) or of arrays, and an integer label column."""
    import numpy as np
    from PIL import Image

    for path in files:
        table = read_table(path)
        image_col = image_column or _pick(table.column_names, IMAGE_COLUMNS, path, "image")
        label_col = label_column or _pick(table.column_names, LABEL_COLUMNS, path, "label")
        for image, label in zip(table.column(image_col).to_pylist(), table.column(label_col).to_pylist()):
            if isinstance(image, dict):
                image = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"])
            array = np.asarray(image)
            if array.dtype.kind in "iu" and array.size and 0 <= array.min() and array.max() <= 255:
                array = array.astype(np.uint8)  # an array column read back as Python ints
            if array.dtype != np.uint8 or type(label) is not int or label < 0:
                raise SentryError(f"{path}: expected uint8 images and non-negative integer labels")
            yield array, label


def _pick(columns, candidates, path, what):
    for name in candidates:
        if name in columns:
            return name
    raise SentryError(f"{path} has no {what} column ({', '.join(candidates)}): name it with --{what}-column")


def encode(array, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "npy":
        import numpy as np

        np.save(out, array, allow_pickle=False)
    else:
        from PIL import Image

        Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def copy_directory(source: Path):
    """(relative path, bytes) of every regular file below a local directory, class folders as they are."""
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                raise SentryError(f"{path} is not a regular file: a dataset source holds plain files only")
            yield path.relative_to(source).as_posix(), path.read_bytes()


def labelled_files(samples, fmt: str):
    """(``<label>/<n>.<fmt>``, bytes) for (array, label) samples, labels padded to one width."""
    samples = list(samples)
    width = len(str(max((label for _, label in samples), default=0)))
    counts: dict = {}
    for array, label in samples:
        n = counts[label] = counts.get(label, -1) + 1
        yield f"{label:0{width}d}/{n:05d}.{fmt}", encode(array, fmt)


def source_files(sources: list[str], fmt: str, image_column=None, label_column=None):
    if sources == ["digits"]:
        return labelled_files(digits_samples(), fmt)
    paths = [Path(s) for s in sources]
    for path in paths:
        if not path.exists():
            raise SentryError(f"source {path} does not exist")
    if len(paths) == 1 and paths[0].is_dir() and not _is_hf_directory(paths[0]):
        return copy_directory(paths[0])
    files = []
    for path in paths:
        if path.is_file() and path.suffix not in TABLE_SUFFIXES:
            raise SentryError(f"source {path} is not a .parquet or .arrow file")
        if path.is_dir() and not _is_hf_directory(path):
            raise SentryError(f"source {path} is not a Hugging Face save_to_disk directory")
        files += table_files(path)
    return labelled_files(table_samples(files, image_column, label_column), fmt)


def _is_hf_directory(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def write_dataset(out: Path, files) -> int:
    """Write the samples (only those whose bytes differ); a file there that the source did not
    produce is an error: it would be signed as a sample."""
    written = set()
    for name, data in files:
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (path.is_file() and not path.is_symlink() and path.read_bytes() == data):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        written.add(name)
    for dirpath, _, filenames in os.walk(out):
        for name in filenames:
            rel = Path(dirpath, name).relative_to(out).as_posix()
            if rel not in written:
                raise SentryError(f"{out} holds {rel}, which the source does not produce: remove it or choose "
                                  f"another --out")
    return len(written)


def build_parser() -> Parser:
    p = Parser(prog="python -m agents.dataset", description=__doc__, epilog=EXIT_CODES)
    p.add_argument("--out", required=True, type=Path, help="the dataset directory to build and sign: new, empty, or one this agent built "
                                                      "before (its signature beside it)")
    p.add_argument("--source", nargs="+", default=["digits"], metavar="SOURCE",
                   help="'digits' (scikit-learn's, no network; the default), a local directory of class "
                        "folders (copied as it is), a Hugging Face save_to_disk directory, or .parquet/.arrow "
                        "files (image + label columns; needs pyarrow)")
    p.add_argument("--format", choices=FORMATS, default="png", help="sample files written from images (default png)")
    p.add_argument("--image-column", help="the image column of a table source (default: image, img or pixel_values)")
    p.add_argument("--label-column", help="the label column of a table source (default: label, labels or fine_label)")
    add_signing_options(p, "the dataset owner's")
    add_trust_config_option(p)
    p.add_argument("--signature", type=Path, help="where the signature goes (default: DIR.sig beside DIR)")
    p.add_env_option("--source-key", "SENTRY_SOURCE_KEY_FILE", required=False, metavar="KEYFILE",
                     help="the source's private key: also sign each sample's provenance into "
                          "DIR.provenance.jsonl (docs/spec.md §7), for a trainer's --provenance")
    return p


def main(argv=None) -> int:
    import sentry
    from sentry.signing import load_private_key, public_key_hint, read_password

    args = build_parser().parse_args(argv)
    signs = signing(args)  # a bad key or identity token fails before anything is built
    out = args.out
    if out.exists() and not out.is_dir():
        raise SentryError(f"--out {out} exists and is not a directory")
    sig_path = signature_beside(out, args.signature)
    if out.is_dir() and any(out.iterdir()) and not sig_path.is_file():
        # only a directory this agent built (its signature beside it) is built again in place
        raise SentryError(f"--out {out} is a directory with files in it and no signature {sig_path}: "
                          f"choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    source = " ".join(args.source)
    try:
        count = write_dataset(out, source_files(args.source, args.format, args.image_column, args.label_column))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:  # unreadable files, tables, images
        raise SentryError(f"cannot build {out} from {source}: {reason(exc)}") from None
    log(AGENT, f"built {out} from {source}: {count} samples")
    sig = sentry.sign_dataset(out, key=signs.signer, signature=sig_path, key_files=signs.files)
    link = sentry.dataset_link(sig, signs.verifier)  # reads back and verifies what was signed
    log(AGENT, f"signed dataset {out} ({count} samples, root {link.root}) with {signs.who}: {sig}")
    if args.source_key:
        source_key = load_private_key(args.source_key, read_password(args.password_file, prompt=False))
        provenance = sentry.sign_samples(out, key=source_key, key_files=signs.files + [args.source_key])
        log(AGENT, f"signed the provenance of every sample of {out} with key "
                   f"{public_key_hint(source_key.public_key())}: {provenance}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(AGENT, main))
