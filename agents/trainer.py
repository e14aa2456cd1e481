"""sentry_trainer: train a small CNN on a signed dataset, every batch verified, and sign the checkpoint
with its link to that dataset.

    python -m agents.trainer --dataset data/digits --dataset-public-key owner.pub.pem \\
        --out ckpt/digits.safetensors --key trainer.pem --epochs 8

Samples load through Sentry's PyTorch ``VerifiedDataset`` (policy raise): a sample whose bytes are
not the signed ones stops training at that batch, naming it (exit 1). Every fifth sample is held
out for the accuracy printed at the end. After training, one verified pass over the whole dataset
checks its root against the signature and, with one unverified pass over the same files, gives the
loading rate with and without verification. The checkpoint (``.safetensors``) is signed with a
link to the dataset's signature (docs/spec.md §3.1; default signature ``CKPT.sig``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from sentry import SentryError, VerificationError

from .common import (
    EXIT_CODES,
    Parser,
    add_signing_options,
    add_trust_config_option,
    add_verifying_options,
    log,
    run,
    same_file,
    signature_beside,
    signing,
    verifying,
)

AGENT = "sentry_trainer"
SAMPLE_EXTENSIONS = (".png", ".npy")
HOLD_OUT = 5  # every fifth sample is a test sample


def build_parser() -> Parser:
    p = Parser(prog="python -m agents.trainer", description=__doc__, epilog=EXIT_CODES)
    p.add_argument("--dataset", required=True, type=Path, help="the signed dataset directory (class folders)")
    add_verifying_options(p, "dataset-", "the dataset owner's")
    p.add_argument("--dataset-signature", type=Path, help="the dataset's signature (default: DIR.sig beside DIR)")
    p.add_argument("--out", required=True, type=Path, help="the checkpoint to write (.safetensors)")
    add_signing_options(p, "the trainer's")
    add_trust_config_option(p)
    p.add_argument("--signature", type=Path, help="where the checkpoint's signature goes (default: CKPT.sig)")
    p.add_argument("--provenance", nargs=2, action="append", metavar=("FILE", "PUB"),
                   help="also require each sample's signature by its source: a provenance file and the "
                        "source's public key (docs/spec.md §7); repeatable, one per source")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per batch (default 32)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate (default 0.003)")
    p.add_argument("--limit", type=int, help="train on the first N training samples only (a quick run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the shuffling (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch CPU threads (default 1: this CNN is too small to gain from more, and more "
                        "threads stall on a busy host)")
    return p


def check_args(args) -> None:
    if min(args.epochs, args.batch_size, args.limit or 1, args.threads) < 1:
        raise SentryError("--epochs, --batch-size, --limit and --threads must be positive")
    if args.out.suffix != ".safetensors":
        raise SentryError(f"--out {args.out} must be a .safetensors file")
    if not args.dataset.is_dir():
        raise SentryError(f"dataset {args.dataset} is not a directory")
    out = args.out.resolve()
    if out.is_relative_to(args.dataset.resolve()):
        raise SentryError(f"--out {args.out} lies inside the dataset {args.dataset}")
    for given in (args.key, args.dataset_public_key, args.dataset_signature, args.password_file, args.trust_config):
        if given and same_file(args.out, given):
            raise SentryError(f"--out {args.out} is {given}, an input of the trainer")
    if (args.out.exists() or args.out.is_symlink()) and not _written_by_trainer(args.out):
        raise SentryError(f"--out {args.out} exists and is not a checkpoint this trainer wrote: "
                          f"choose another --out or remove it")


def _written_by_trainer(path: Path) -> bool:
    """Whether ``path`` is a plain .safetensors file whose metadata names this agent (a rerun's)."""
    from safetensors import safe_open

    if path.is_symlink() or not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("sentry.agent") == AGENT
    except Exception:  # not a safetensors file at all: never written over
        return False


def split(count: int, limit):
    train = [i for i in range(count) if i % HOLD_OUT]
    return train[:limit] if limit else train, [i for i in range(count) if i % HOLD_OUT == 0]


def inputs_labels(batch):
    """(inputs, labels) of a batch, as a tuple or as DALI's iterators give it: ``[{"data", "label"}]``."""
    if isinstance(batch, list) and len(batch) == 1 and isinstance(batch[0], dict):
        return batch[0]["data"], batch[0]["label"]
    return batch


def train(model, loader, epochs: int, lr: float, dataset_dir) -> float:
    """Train; samples/s of verified loading plus training. A sample that fails verification raises
    VerificationError naming the epoch, the batch and the sample."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    seen, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        batch = 0
        try:
            for batch, (x, y) in enumerate(map(inputs_labels, loader), 1):  # noqa: B007 (the count, read after)
                optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                seen += len(y)
        except VerificationError as exc:
            raise VerificationError(f"training stopped at epoch {epoch}, batch {batch + 1} of dataset {dataset_dir}: "
                                    f"{exc}") from None
        log(AGENT, f"epoch {epoch}/{epochs}: loss {loss.item():.4f}")
    return seen / (time.perf_counter() - start)


def accuracy(model, loader) -> float:
    import torch

    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in map(inputs_labels, loader):
            right += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return right / total


def loading_rates(dataset, batch_size: int) -> tuple[float, float, bytes]:
    """Samples/s of one pass over every sample, verified (Sentry's loader) and unverified (a plain
    DataLoader reading and decoding the same files); best of five passes each. Also the dataset
    root the verified pass computed."""
    from torch.utils.data import DataLoader, Dataset

    from sentry.data import verified_dataloader

    class Plain(Dataset):
        def __len__(self):
            return len(dataset.names)

        def __getitem__(self, i):
            name = dataset.names[i]
            return dataset.decode(name, (dataset.root / name).read_bytes()), dataset.labels[i]

    def rate(loader) -> float:
        start = time.perf_counter()
        count = sum(len(y) for _, y in map(inputs_labels, loader))
        return count / (time.perf_counter() - start)

    verified, hasher = verified_dataloader(dataset, batch_size)
    plain = DataLoader(Plain(), batch_size=batch_size)
    with_verification = max(rate(verified) for _ in range(5))
    without = max(rate(plain) for _ in range(5))
    return with_verification, without, hasher.compute()


def save_checkpoint(model, out: Path, metadata: dict) -> None:
    """The state_dict as .safetensors, written whole or not at all."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=metadata)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv=None) -> int:
    import torch
    from torch.utils.data import SubsetRandomSampler

    import sentry
    from sentry.data import VerifiedDataset, verified_dataloader

    from .model import SmallCNN, decode_sample

    args = build_parser().parse_args(argv)
    check_args(args)
    owner = verifying(args, "dataset-")
    signs = signing(args)  # a bad key or identity token fails before any training
    dataset_sig = signature_beside(args.dataset, args.dataset_signature)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    dataset = VerifiedDataset(args.dataset, public_key=owner.verifier, signature=dataset_sig,
                              extensions=SAMPLE_EXTENSIONS, decode=decode_sample, policy="raise",
                              provenance=[tuple(p) for p in args.provenance] if args.provenance else None)
    sources = f" with its source's signature ({len(args.provenance)} given)" if args.provenance else ""
    log(AGENT, f"dataset {args.dataset}: signature {dataset_sig} verified with {owner.who}, "
               f"sample list checked; {len(dataset)} samples, each verified as it loads{sources}")
    if len(dataset) < HOLD_OUT or min(dataset.labels) < 0:
        raise SentryError(f"dataset {args.dataset} needs at least {HOLD_OUT} samples, all in class folders")
    train_idx, test_idx = split(len(dataset), args.limit)
    shape = tuple(dataset[train_idx[0]][0].shape)
    model = SmallCNN(max(dataset.labels) + 1, shape)
    shuffle = SubsetRandomSampler(train_idx, generator=torch.Generator().manual_seed(args.seed))
    train_loader, _ = verified_dataloader(dataset, args.batch_size, sampler=shuffle)
    test_loader, _ = verified_dataloader(dataset, args.batch_size, sampler=test_idx)
    try:
        train_rate = train(model, train_loader, args.epochs, args.lr, args.dataset)
        try:
            acc = accuracy(model, test_loader)
            verified_rate, plain_rate, root = loading_rates(dataset, args.batch_size)
        except VerificationError as exc:
            raise VerificationError(f"testing stopped, dataset {args.dataset}: {exc}") from None
    except RuntimeError as exc:  # e.g. samples of different sizes that do not stack into a batch
        raise SentryError(f"cannot train on {args.dataset}: {str(exc).splitlines()[0]}") from None
    sentry.verify_dataset(root, public_key=owner.verifier, signature=dataset_sig)
    log(AGENT, f"every sample of {args.dataset} verified: dataset root {root.hex()} is the signed one")
    print(f"accuracy: {acc:.2%} on {len(test_idx)} held-out samples after {args.epochs} epochs "
          f"({len(train_idx)} training samples)")
    print(f"training: {train_rate:.0f} samples/s (verified loading, forward, backward; CPU, "
          f"{torch.get_num_threads()} threads)")
    print(f"loading: {verified_rate:.0f} samples/s verified, {plain_rate:.0f} samples/s unverified "
          f"(verification costs {max(0.0, 1 - verified_rate / plain_rate):.0%})", flush=True)

    link = sentry.dataset_link(dataset_sig, owner.verifier)
    if link.root != root.hex():  # the signature was replaced while training
        raise VerificationError(f"{dataset_sig} no longer signs the dataset root the model was trained on")
    save_checkpoint(model, args.out, {"sentry.agent": AGENT, "dataset": link.name, "dataset_root": link.root})
    sig = sentry.sign_model(args.out, key=signs.signer, signature=args.signature, training_data=link,
                            key_files=signs.files + owner.files + [dataset_sig])
    report = sentry.verify_model(args.out, public_key=signs.verifier, signature=sig)
    log(AGENT, f"signed checkpoint {args.out} (manifest root {report.root}; trained on dataset {link.name}, root "
               f"{link.root}) with {signs.who}: {sig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(AGENT, main))
