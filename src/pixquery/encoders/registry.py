"""Model names -> Encoders, open_clip-factory style: tables, not if-chains.

    load_encoder("ViT-B-32")                  immich-app/ViT-B-32__openai from the hub (cached)
    load_encoder("ViT-B/32")                  the same (OpenAI's spelling)
    load_encoder("models/tiny-vit-b-32")      any local folder in the immich layout
    load_encoder("hf:immich-app/ViT-B-16__laion2b-s34b-b88k")   any hub repo in that layout
    load_encoder("open_clip:ViT-B-32/openai") open_clip in torch (the [torch] extra); the part
                                              after the first "/" is a pretrained tag or a
                                              checkpoint file; "open_clip:local-dir:/path" also works
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pixquery.encoders.base import Encoder
from pixquery.errors import PixqueryError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    repo: str
    dim: int
    notes: str


DEFAULT_MODEL = "ViT-B-32"

_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("RN50", "immich-app/RN50__openai", 1024, "ResNet-50; ~17 img/s on 2 CPU cores"),
        ModelSpec("RN50x4", "immich-app/RN50x4__openai", 640, "wider ResNet, 288 px input; slower"),
        ModelSpec("ViT-B-32", "immich-app/ViT-B-32__openai", 512, "best speed/quality on CPU; ~20 img/s, ~40 int8"),
        ModelSpec("ViT-B-16", "immich-app/ViT-B-16__openai", 512, "~4x the compute of ViT-B-32; finer detail"),
        ModelSpec("ViT-L-14", "immich-app/ViT-L-14__openai", 768, "best quality; ~40x slower than ViT-B-32: GPU"),
    )
}


def known_models() -> list[dict]:
    """[{name, repo, dim, notes}] for the models known by name (plain dicts: JSON-ready)."""
    return [asdict(spec) for spec in _MODELS.values()]


def _canonical(name: str) -> str | None:
    key = name.replace("/", "-").lower()
    return next((n for n in _MODELS if n.lower() == key), None)


def _load_hf_repo(repo: str, precision: str, cache_dir, model: str | None = None) -> Encoder:
    from pixquery.encoders.hub import fetch
    from pixquery.encoders.onnx import OnnxClipEncoder

    path = fetch(model or repo, repo, cache_dir=cache_dir)
    return OnnxClipEncoder(path, name=repo.split("/")[-1], precision=precision, cache_dir=_int8_dir(cache_dir))


def _load_open_clip(spec: str, precision: str, cache_dir) -> Encoder:
    from pixquery.encoders.open_clip import OpenClipEncoder

    if precision != "fp32":
        raise PixqueryError("open_clip models run in fp32 only; int8 is for ONNX models")
    if spec.startswith(("local-dir:", "hf-hub:")):  # open_clip's own schemes carry their config
        return OpenClipEncoder(spec, None, cache_dir=cache_dir)
    arch, _, pretrained = spec.partition("/")
    return OpenClipEncoder(arch, pretrained or None, cache_dir=cache_dir)


def _int8_dir(cache_dir):
    return Path(cache_dir) / "pixquery-int8" if cache_dir else None


# scheme prefix -> loader(rest of the name, precision, cache_dir)
_SCHEMES: dict[str, Callable[[str, str, object], Encoder]] = {
    "open_clip": _load_open_clip,
    "hf": _load_hf_repo,
}


def load_encoder(name_or_path: str | Path = DEFAULT_MODEL, *, precision: str = "fp32", cache_dir: str | Path | None = None) -> Encoder:
    """An Encoder for a model name, a local model folder, or a `scheme:` spec (see module doc).
    Raises ModelNotAvailable when a hub model is neither cached nor downloadable, PixqueryError
    for anything else the user can fix (unknown name, incomplete folder, missing torch)."""
    text = str(name_or_path)
    scheme, sep, rest = text.partition(":")
    if sep and scheme in _SCHEMES:
        return _SCHEMES[scheme](rest, precision, cache_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        from pixquery.encoders.onnx import OnnxClipEncoder

        return OnnxClipEncoder(path, precision=precision, cache_dir=_int8_dir(cache_dir))
    canonical = _canonical(text)
    if canonical:
        return _load_hf_repo(_MODELS[canonical].repo, precision, cache_dir, model=canonical)
    if "/" in text or "\\" in text or text.startswith("."):
        raise PixqueryError(f"model folder not found: {text}")
    names = ", ".join(_MODELS)
    raise PixqueryError(
        f"unknown model {text!r}: use one of {names}, a folder in the immich layout, "
        f"'hf:<org>/<repo>' or 'open_clip:<arch>/<pretrained>'"
    )
