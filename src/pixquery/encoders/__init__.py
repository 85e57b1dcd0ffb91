"""CLIP encoders: `load_encoder(name_or_path)` returns an Encoder (see base.py).

Importing this package is cheap: onnxruntime, huggingface_hub and torch load only when a model does.
"""

from pixquery.encoders.base import Encoder, PreprocessConfig, l2_normalize
from pixquery.encoders.registry import DEFAULT_MODEL, ModelSpec, known_models, load_encoder

__all__ = ["Encoder", "PreprocessConfig", "l2_normalize", "DEFAULT_MODEL", "ModelSpec", "known_models", "load_encoder"]
