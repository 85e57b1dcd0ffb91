"""The Encoder protocol: what the rest of pixquery needs from a CLIP model.

Backends (ONNX Runtime, open_clip/torch) live one per file in this package; nothing outside
`pixquery.encoders` imports onnxruntime or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input tensor (open_clip's `preprocess_cfg`)."""

    size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # open_clip: shortest | longest | squash
    fill_color: int = 0

    @classmethod
    def from_dict(cls, raw: dict) -> PreprocessConfig:
        """From open_clip's preprocess_cfg (preprocess_cfg.json): size may be [h, w]; missing keys default."""
        d = cls()
        size = raw.get("size", d.size)
        return cls(
            size=int(size[0] if isinstance(size, (list, tuple)) else size),
            mean=tuple(float(v) for v in raw.get("mean", d.mean)),
            std=tuple(float(v) for v in raw.get("std", d.std)),
            interpolation=raw.get("interpolation", d.interpolation),
            resize_mode=raw.get("resize_mode", d.resize_mode),
            fill_color=int(raw.get("fill_color", d.fill_color)),
        )


@runtime_checkable
class Encoder(Protocol):
    name: str  # e.g. "ViT-B-32__openai"
    dim: int  # embedding width
    fingerprint: str  # identifies the weights: embeddings from different fingerprints never mix
    preprocess_cfg: PreprocessConfig

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        """(n, 3, H, W) float32 preprocessed pixels -> (n, dim) float32, L2-normalised."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """n sentences -> (n, dim) float32, L2-normalised."""
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
