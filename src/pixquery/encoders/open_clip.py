"""Any open_clip model, run in torch (the [torch] extra): for models without an ONNX export and
as the reference the ONNX encoder is tested against. The only runtime module importing torch."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from pixquery.encoders.base import PreprocessConfig
from pixquery.encoders.export import preprocess_cfg_of, require_torch
from pixquery.errors import ModelNotAvailable, PixqueryError


def _weights_fingerprint(model) -> str:
    # Leading values of every tensor: exact for "same weights?", a few ms even for ViT-L.
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(f"{key}{tuple(t.shape)}".encode())
        h.update(t.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class OpenClipEncoder:
    def __init__(self, arch: str, pretrained: str | None = None, *, cache_dir=None, device: str = "cpu"):
        torch, open_clip = require_torch()
        arch = arch if arch.startswith(("local-dir:", "hf-hub:")) else arch.replace("/", "-")
        tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained) if pretrained else {}
        cfg = open_clip.get_model_config(arch) or {}
        quick_gelu = bool(tag_cfg.get("quick_gelu")) and not cfg.get("quick_gelu")  # OpenAI weights
        try:
            model = open_clip.create_model(
                arch, pretrained=pretrained, force_quick_gelu=quick_gelu, cache_dir=cache_dir, device=device
            )
        except (RuntimeError, FileNotFoundError, ValueError) as e:
            raise ModelNotAvailable(f"open_clip cannot load {arch!r} with pretrained={pretrained!r}: {e}") from None
        self._torch = torch
        self.model = model.eval()
        self.device = device
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.name = f"open_clip:{arch}" + (f"/{pretrained}" if pretrained else "")
        # CLIP's visual tower states its width; timm towers (SigLIP, MobileCLIP) do not, the text tower does
        self.dim = int(getattr(model.visual, "output_dim", None) or model.text.output_dim)
        self.fingerprint = _weights_fingerprint(model)
        self.preprocess_cfg = PreprocessConfig.from_dict(preprocess_cfg_of(model))
        if self.preprocess_cfg.interpolation not in ("bicubic", "bilinear", "nearest", "lanczos"):
            raise PixqueryError(f"unsupported interpolation {self.preprocess_cfg.interpolation!r} for {arch}")

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.model.encode_image(x, normalize=True).float().cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            ids = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(ids, normalize=True).float().cpu().numpy()
