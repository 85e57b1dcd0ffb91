"""Model names -> Encoders, open_clip-factory style: tables, not if-chains.

    load_encoder("ViT-B-32")                  immich-app/ViT-B-32__openai from the hub (cached)
    load_encoder("ViT-B/32")                  the same (OpenAI's spelling)
    load_encoder("ViT-B-16-SigLIP2")          any model of the table below, by its name
    load_encoder("models/tiny-vit-b-32")      any local folder in the immich layout
    load_encoder("hf:immich-app/ViT-B-16__laion2b-s34b-b88k")   any hub repo in that layout
    load_encoder("open_clip:ViT-B-32/openai") open_clip in torch (the [torch] extra); the part
                                              after the first "/" is a pretrained tag or a
                                              checkpoint file; "open_clip:local-dir:/path" also works

Every model known by name is one ModelSpec row: where its ONNX folder comes from (an immich hub
repo, or `pixquery export` of open_clip weights where immich publishes none), its open_clip
architecture and pretrained tag (what bench/models.py and `pixquery export` build), its licence,
and the published accuracy figures with their source. Speeds are measured, not written here:
bench/models.py writes them to bench/results/models.json, which `pixquery models` reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pixquery.encoders.base import Encoder
from pixquery.errors import ModelNotAvailable, PixqueryError

# Sources of the accuracy columns (ImageNet-1k zero-shot top-1 %, COCO 5k text->image recall@1 %).
OPEN_CLIP_TABLES = (
    "open_clip docs/openclip_results.csv (ImageNet 1k) and docs/openclip_retrieval_results.csv (MSCOCO image retr. R@1)"
)
MOBILECLIP2_CARD = "Apple's MobileCLIP2 model cards (apple/MobileCLIP2-B on Hugging Face), Checkpoints table"
SIGLIP2_PAPER = "SigLIP 2 paper (Tschannen et al. 2025, arXiv 2502.14786), Table 1, B/16 at 224 px"

# Licences: `commercial` False means a research-only / non-commercial licence, which is never a
# default and must be accepted once by the user (`pixquery models --accept NAME`).
MIT_OPENAI = "MIT (OpenAI CLIP)"
MIT_OPEN_CLIP = "MIT (open_clip weights)"
APACHE_SIGLIP = "Apache-2.0 (Google big_vision)"
CC_BY_NC_NLLB = "CC-BY-NC-4.0 (NLLB text tower)"
APPLE_AMLR = "Apple ML Research Model Terms of Use (research only)"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # pixquery's name (`--model NAME`)
    repo: str  # immich's ONNX export on the Hugging Face hub; "" when only `pixquery export` makes one
    dim: int
    notes: str
    family: str = "openai"  # openai | open_clip | siglip | siglip2 | multilingual | mobileclip2
    arch: str = ""  # open_clip architecture
    pretrained: str = ""  # open_clip pretrained tag
    image_size: int = 224
    licence: str = MIT_OPENAI
    commercial: bool = True  # False: research-only / non-commercial weights
    multilingual: bool = False
    imagenet_top1: float | None = None  # published zero-shot top-1, %
    coco_t2i_r1: float | None = None  # published MSCOCO text->image recall@1, %
    accuracy_source: str = OPEN_CLIP_TABLES


DEFAULT_MODEL = "ViT-B-32-laion2b"
# The default until the rule below chose one; libraries indexed with it keep it (api.Library.default_model).
LEGACY_DEFAULT_MODEL = "ViT-B-32"
# The rule (README "Models"): the most accurate permissively licensed model, ready to download as
# an ONNX folder (no torch), whose measured CPU indexing speed is at least OpenAI ViT-B/32's
# (within the 5% run-to-run noise of bench/models.py: several rows share ViT-B/32's exact graph).
# Applied by bench/models.py (`default_by_rule`) to its measurements; DEFAULT_MODEL is its answer.

_S = ModelSpec
_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # The study's five: OpenAI's weights, immich's exports.
        _S(
            "RN50",
            "immich-app/RN50__openai",
            1024,
            "ResNet-50",
            arch="RN50",
            pretrained="openai",
            imagenet_top1=59.8,
            coco_t2i_r1=28.5,
        ),
        _S(
            "RN50x4",
            "immich-app/RN50x4__openai",
            640,
            "wider ResNet, 288 px input",
            arch="RN50x4",
            pretrained="openai",
            image_size=288,
            imagenet_top1=66.3,
            coco_t2i_r1=33.4,
        ),
        _S(
            "ViT-B-32",
            "immich-app/ViT-B-32__openai",
            512,
            "the study's default",
            arch="ViT-B-32",
            pretrained="openai",
            imagenet_top1=63.3,
            coco_t2i_r1=30.4,
        ),
        _S(
            "ViT-B-16",
            "immich-app/ViT-B-16__openai",
            512,
            "~4x the compute of ViT-B-32",
            arch="ViT-B-16",
            pretrained="openai",
            imagenet_top1=68.3,
            coco_t2i_r1=33.1,
        ),
        _S(
            "ViT-L-14",
            "immich-app/ViT-L-14__openai",
            768,
            "~15x ViT-B-32's compute: GPU",
            arch="ViT-L-14",
            pretrained="openai",
            imagenet_top1=75.5,
            coco_t2i_r1=36.5,
        ),
        # open_clip's LAION-2B and DataComp-XL weights of the same architectures (same compute).
        _S(
            "ViT-B-32-laion2b",
            "immich-app/ViT-B-32__laion2b-s34b-b79k",
            512,
            "ViT-B/32 trained on LAION-2B",
            family="open_clip",
            arch="ViT-B-32",
            pretrained="laion2b_s34b_b79k",
            licence=MIT_OPEN_CLIP,
            imagenet_top1=66.6,
            coco_t2i_r1=39.3,
        ),
        _S(
            "ViT-B-32-datacomp",
            "",
            512,
            "ViT-B/32 trained on DataComp-XL; immich publishes no export",
            family="open_clip",
            arch="ViT-B-32",
            pretrained="datacomp_xl_s13b_b90k",
            licence=MIT_OPEN_CLIP,
            imagenet_top1=69.2,
            coco_t2i_r1=37.1,
        ),
        _S(
            "ViT-B-16-laion2b",
            "",
            512,
            "ViT-B/16 trained on LAION-2B; immich publishes no export",
            family="open_clip",
            arch="ViT-B-16",
            pretrained="laion2b_s34b_b88k",
            licence=MIT_OPEN_CLIP,
            imagenet_top1=70.2,
            coco_t2i_r1=42.3,
        ),
        _S(
            "ViT-B-16-datacomp",
            "",
            512,
            "ViT-B/16 trained on DataComp-XL; immich publishes no export",
            family="open_clip",
            arch="ViT-B-16",
            pretrained="datacomp_xl_s13b_b90k",
            licence=MIT_OPEN_CLIP,
            imagenet_top1=73.5,
            coco_t2i_r1=40.2,
        ),
        # SigLIP / SigLIP 2: sigmoid-trained (scores through the model's logit scale and bias),
        # their own tokenizers, squashed (not centre-cropped) 0.5-mean images.
        _S(
            "ViT-B-16-SigLIP",
            "immich-app/ViT-B-16-SigLIP__webli",
            768,
            "SigLIP, English",
            family="siglip",
            arch="ViT-B-16-SigLIP",
            pretrained="webli",
            licence=APACHE_SIGLIP,
            imagenet_top1=76.0,
            coco_t2i_r1=47.8,
        ),
        _S(
            "ViT-B-32-SigLIP2-256",
            "immich-app/ViT-B-32-SigLIP2-256__webli",
            768,
            "SigLIP 2, multilingual, 256 px",
            family="siglip2",
            arch="ViT-B-32-SigLIP2-256",
            pretrained="webli",
            image_size=256,
            licence=APACHE_SIGLIP,
            multilingual=True,
            accuracy_source=SIGLIP2_PAPER,
        ),
        _S(
            "ViT-B-16-SigLIP2",
            "immich-app/ViT-B-16-SigLIP2__webli",
            768,
            "SigLIP 2, multilingual",
            family="siglip2",
            arch="ViT-B-16-SigLIP2",
            pretrained="webli",
            licence=APACHE_SIGLIP,
            multilingual=True,
            imagenet_top1=78.2,
            coco_t2i_r1=52.1,
            accuracy_source=SIGLIP2_PAPER,
        ),
        # immich's multilingual models.
        _S(
            "nllb-clip-base-siglip",
            "immich-app/nllb-clip-base-siglip__v1",
            768,
            "NLLB-200 text tower + SigLIP ViT-B/16 at 384 px; 200 languages",
            family="multilingual",
            arch="nllb-clip-base-siglip",
            pretrained="v1",
            image_size=384,
            licence=CC_BY_NC_NLLB,
            commercial=False,
            multilingual=True,
        ),
        _S(
            "XLM-Roberta-Base-ViT-B-32",
            "immich-app/XLM-Roberta-Base-ViT-B-32__laion5b_s13b_b90k",
            512,
            "XLM-RoBERTa-base text tower + ViT-B/32; ~100 languages",
            family="multilingual",
            arch="xlm-roberta-base-ViT-B-32",
            pretrained="laion5b_s13b_b90k",
            licence=MIT_OPEN_CLIP,
            multilingual=True,
            imagenet_top1=62.4,
            coco_t2i_r1=37.8,
        ),
        # Apple's MobileCLIP2: small re-parameterisable image tower; research-only weights.
        _S(
            "MobileCLIP2-S0",
            "",
            512,
            "FastViT-MCi0 image tower, 256 px; `pixquery export` re-parameterises it",
            family="mobileclip2",
            arch="MobileCLIP2-S0",
            pretrained="dfndr2b",
            image_size=256,
            licence=APPLE_AMLR,
            commercial=False,
            imagenet_top1=71.5,
            accuracy_source=MOBILECLIP2_CARD,
        ),
    )
}

# Measured by bench/models.py (random weights, one run, this repo's dev machine): name -> figures.
BENCH_FILE = Path(__file__).resolve().parent.parent / "data" / "model_speeds.json"


def measured_speeds() -> dict[str, dict]:
    """{name: {images_per_s, text_ms, download_mb, ...}} from the last bench/models.py run, or {}."""
    try:
        return json.loads(BENCH_FILE.read_text(encoding="utf-8")).get("models", {})
    except (OSError, ValueError):
        return {}


def known_models() -> list[dict]:
    """Every model known by name, as plain dicts (JSON-ready): the ModelSpec fields, whether its
    licence has been accepted here, and the speeds bench/models.py measured (None if not)."""
    speeds = measured_speeds()
    out = []
    for spec in _MODELS.values():
        row = asdict(spec)
        m = speeds.get(spec.name, {})
        row.update(
            images_per_s=m.get("images_per_s"),
            text_ms=m.get("text_ms"),
            download_mb=m.get("download_mb"),
            licence_accepted=spec.commercial or spec.name in accepted_licences(),
        )
        out.append(row)
    return out


def model_spec(name: str) -> ModelSpec | None:
    canonical = _canonical(name)
    return _MODELS[canonical] if canonical else None


def _canonical(name: str) -> str | None:
    key = name.replace("/", "-").lower()
    return next((n for n in _MODELS if n.lower() == key), None)


# -- non-commercial licences: accepted once, remembered per user ------------------------------------
def _licence_file() -> Path:
    base = os.environ.get("PIXQUERY_CONFIG_DIR") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "pixquery"
    )
    return Path(base) / "accepted-licences.json"


def accepted_licences() -> set[str]:
    try:
        return set(json.loads(_licence_file().read_text(encoding="utf-8")).get("accepted", []))
    except (OSError, ValueError):
        return set()


def accept_licence(name: str) -> ModelSpec:
    """Record that the user accepts `name`'s (non-commercial) licence; written atomically."""
    spec = model_spec(name)
    if spec is None:
        raise PixqueryError(f"unknown model {name!r}: see `pixquery models`")
    path = _licence_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    accepted = sorted(accepted_licences() | {spec.name})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"accepted": accepted}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return spec


def require_licence(spec: ModelSpec) -> None:
    """A research-only / non-commercial model loads only once its licence is accepted."""
    if spec.commercial or spec.name in accepted_licences():
        return
    raise PixqueryError(
        f"{spec.name}'s weights are under {spec.licence}: not for commercial use. To accept that "
        f"licence (once, for this user): pixquery models --accept {spec.name}"
    )


def _licence_of_folder(path: Path) -> None:
    """A folder written by `pixquery export` names the model its weights came from: the same rule
    (random weights of the architecture carry no one's licence)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    name = None if config.get("random_weights") else config.get("pixquery_model")
    spec = model_spec(name) if isinstance(name, str) else None
    if spec is not None:
        require_licence(spec)


# -- loaders ------------------------------------------------------------------------------------------
def exported_dir(name: str, cache_dir=None) -> Path:
    """Where `pixquery export NAME` puts a model that immich does not publish."""
    from pixquery.encoders.quantize import default_cache_dir

    return Path(cache_dir or default_cache_dir()).parent / "models" / name


def _load_hf_repo(repo: str, precision: str, cache_dir, model: str | None = None) -> Encoder:
    from pixquery.encoders.hub import fetch
    from pixquery.encoders.onnx import OnnxClipEncoder

    path = fetch(model or repo, repo, cache_dir=cache_dir)
    return OnnxClipEncoder(path, name=repo.split("/")[-1], precision=precision, cache_dir=_int8_dir(cache_dir))


def _load_named(spec: ModelSpec, precision: str, cache_dir) -> Encoder:
    require_licence(spec)
    if spec.repo:
        return _load_hf_repo(spec.repo, precision, cache_dir, model=spec.name)
    from pixquery.encoders.onnx import REQUIRED, OnnxClipEncoder

    folder = exported_dir(spec.name)
    if all((folder / f).is_file() for f in REQUIRED):
        return OnnxClipEncoder(
            folder, name=f"{spec.arch}__{spec.pretrained}", precision=precision, cache_dir=_int8_dir(cache_dir)
        )
    raise ModelNotAvailable(
        f"Model {spec.name!r} is not available: immich publishes no ONNX export of it, and none is in {folder}. "
        f"To fix: pixquery export {spec.name} (needs pixquery[torch] and open_clip's weights "
        f"{spec.arch}/{spec.pretrained}, downloaded once), or pass --model /path/to/exported/folder."
    )


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


def load_encoder(
    name_or_path: str | Path = DEFAULT_MODEL, *, precision: str = "fp32", cache_dir: str | Path | None = None
) -> Encoder:
    """An Encoder for a model name, a local model folder, or a `scheme:` spec (see module doc).
    Raises ModelNotAvailable when a hub model is neither cached nor downloadable, PixqueryError
    for anything else the user can fix (unknown name, incomplete folder, missing torch, a
    non-commercial licence not yet accepted)."""
    text = str(name_or_path)
    scheme, sep, rest = text.partition(":")
    if sep and scheme in _SCHEMES:
        return _SCHEMES[scheme](rest, precision, cache_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        from pixquery.encoders.onnx import OnnxClipEncoder

        _licence_of_folder(path)
        return OnnxClipEncoder(path, precision=precision, cache_dir=_int8_dir(cache_dir))
    spec = model_spec(text)
    if spec:
        return _load_named(spec, precision, cache_dir)
    if "/" in text or "\\" in text or text.startswith("."):
        raise PixqueryError(f"model folder not found: {text}")
    names = ", ".join(_MODELS)
    raise PixqueryError(
        f"unknown model {text!r}: use one of {names}, a folder in the immich layout, "
        f"'hf:<org>/<repo>' or 'open_clip:<arch>/<pretrained>'"
    )
