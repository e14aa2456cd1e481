"""The small CNN the trainer trains and the inferencer serves, and how samples become its input.

Input: FP32 ``[N, C, H, W]`` with values in 0..1 (grey levels / 255); for scikit-learn's digits
``[N, 1, 8, 8]``. Output: ``[N, classes]`` logits. The input shape is a buffer of the model, so it
is signed with the weights and the inferencer takes it from verified tensors only.
"""
from __future__ import annotations

import io

import torch
from torch import nn

from sentry import SentryError


class SmallCNN(nn.Module):
    def __init__(self, classes: int, input_shape=(1, 8, 8)):
        super().__init__()
        channels = input_shape[0]
        self.register_buffer("input_shape", torch.tensor(list(input_shape), dtype=torch.int64))
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(4),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x):
        return self.classifier(self.features(x))

    @classmethod
    def from_state_dict(cls, state: dict) -> SmallCNN:
        """The model these tensors fit (sizes read from them); SentryError if they fit none."""
        try:
            shape = tuple(int(v) for v in state["input_shape"].tolist())
            model = cls(int(state["classifier.3.weight"].shape[0]), shape)
            model.load_state_dict(state, strict=True)
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise SentryError(f"the checkpoint does not hold this agent's CNN ({type(exc).__name__})") from None
        return model


def decode_sample(name: str, data: bytes) -> torch.Tensor:
    """A verified sample's bytes as a float ``[C, H, W]`` tensor in 0..1: PNG (grey -> 1 channel,
    anything else -> RGB) or ``.npy`` (uint8 ``HxW`` or ``HxWxC``)."""
    import numpy as np

    if name.lower().endswith(".npy"):
        array = np.load(io.BytesIO(data), allow_pickle=False)
    else:
        from PIL import Image

        image = Image.open(io.BytesIO(data))
        array = np.asarray(image if image.mode == "L" else image.convert("RGB"))
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise SentryError(f"sample {name} is not a uint8 image")
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).float() / 255
