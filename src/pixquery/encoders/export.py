"""Write the immich ONNX layout from any open_clip model or checkpoint (the [torch] extra).

    out_dir/config.json                  open_clip model config (embed_dim, vision_cfg, text_cfg)
    out_dir/visual/model.onnx            image -> embedding, dynamic batch axis
    out_dir/visual/preprocess_cfg.json   size, mean, std, interpolation, resize_mode, fill_color
    out_dir/textual/model.onnx           int32 ids (n, context_length) -> embedding
    out_dir/textual/tokenizer.json       CLIP BPE for the `tokenizers` library, built offline
                                         from the vocabulary file open_clip ships

The folder is written beside its destination and renamed into place, so a crash never
leaves a half-written model that later loads.
"""

from __future__ import annotations

import json
import os
import warnings
from copy import deepcopy
from dataclasses import asdict
from pathlib import Path

from pixquery.encoders.clip_bpe import EOT, SOT
from pixquery.encoders.onnx import writing_model_folder  # open_clip's names for ids 49406 / 49407
from pixquery.errors import ModelNotAvailable, PixqueryError

LAYOUT = (
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
)


def require_torch():
    try:
        import open_clip
        import torch
    except ImportError as e:
        raise PixqueryError(
            f"This needs torch and open_clip ({e.name} is not installed): pip install 'pixquery[torch]'"
        ) from None
    return torch, open_clip


def build_clip_tokenizer():
    """open_clip's tokenizer as a `tokenizers` tokenizer.json, from the vocabulary file open_clip ships
    (the same file as pixquery/data/bpe_simple_vocab_16e6.txt.gz; see pixquery.encoders.clip_bpe)."""
    from open_clip.tokenizer import default_bpe

    from pixquery.encoders.clip_bpe import build_clip_tokenizer as build

    return build(default_bpe())


def preprocess_cfg_of(model) -> dict:
    """open_clip's defaults (OpenAI mean/std, bicubic, shortest side) under what the model states."""
    from open_clip import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    return merge_preprocess_dict(asdict(PreprocessCfg()), get_model_preprocess_cfg(model))


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _weights_cached(tag_cfg: dict) -> bool:
    """Whether open_clip finds these weights without the network: it fetches most tags through
    huggingface_hub (cache: HF_HUB_CACHE) and some OpenAI ones with urllib (cache: ~/.cache/clip)."""
    from open_clip.pretrained import has_hf_hub

    if tag_cfg.get("file"):
        return os.path.isfile(tag_cfg["file"])
    hub, url = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")
    if hub and has_hf_hub():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(repo_id=os.path.split(hub)[0], local_files_only=True))
        except Exception:  # the repo is not in the cache at all
            return False
        return any(f.suffix in (".bin", ".safetensors", ".pt", ".pth") for f in folder.iterdir())
    if url:
        return os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)))
    return False


def _check_pretrained(open_clip, arch: str, pretrained: str) -> dict:
    """open_clip's config of a pretrained tag; fails at once (not after minutes of retries) on an
    unknown tag, or when offline (HF_HUB_OFFLINE) and the weights are not cached."""
    from pixquery.encoders.hub import _offline

    if os.path.isfile(pretrained):  # open_clip also takes a weights file here
        return {}
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise PixqueryError(f"open_clip has no pretrained weights {pretrained!r} for {arch}; its tags: {tags}")
    if _weights_cached(tag_cfg):
        return tag_cfg
    reason = "HF_HUB_OFFLINE is set" if _offline() else _unreachable(tag_cfg)
    if reason:
        raise ModelNotAvailable(
            f"open_clip weights {arch} {pretrained!r} are not cached and cannot be downloaded ({reason}). "
            f"Connect to the internet once (they are then cached), or give --checkpoint FILE."
        )
    return tag_cfg


def _unreachable(tag_cfg: dict) -> str | None:
    """Why the download host cannot be reached, or None. Without a network huggingface_hub retries
    each candidate file for about a minute; one connection attempt answers in seconds. Behind a
    proxy (which may resolve what we cannot) the download is left to try."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    from open_clip.pretrained import has_hf_hub

    if tag_cfg.get("hf_hub") and has_hf_hub():
        from huggingface_hub import constants

        url = constants.ENDPOINT
    else:
        url = tag_cfg.get("url", "")
    parsed = urlparse(url)
    if not parsed.hostname:
        return None
    try:
        socket.create_connection(
            (parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)), timeout=5
        ).close()
    except OSError as e:
        return f"cannot reach {parsed.hostname}: {e.strerror or e}"
    return None


# config.json keys that are pixquery's, not open_clip's
PIXQUERY_KEYS = ("random_weights", "pixquery_model", "logit_scale", "logit_bias")


def open_clip_cfg(model_cfg: dict) -> dict:
    """An open_clip model config without pixquery's keys; a Hugging Face text tower is built from
    its config only (hf_model_pretrained False): its weights come with the CLIP checkpoint."""
    cfg = {k: deepcopy(v) for k, v in model_cfg.items() if k not in PIXQUERY_KEYS}
    if "hf_model_name" in cfg.get("text_cfg", {}):
        cfg["text_cfg"]["hf_model_pretrained"] = False
    return cfg


def build_open_clip(model_cfg: dict):
    """open_clip's model class for a config: CustomTextCLIP for a non-CLIP text tower (SigLIP's,
    MobileCLIP's, a Hugging Face one), CLIP otherwise (as open_clip.create_model decides)."""
    _, open_clip = require_torch()
    cfg = open_clip_cfg(model_cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    return (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)


def _create_model(arch, pretrained, checkpoint, model_cfg, seed):
    torch, open_clip = require_torch()
    torch.manual_seed(seed)  # random towers (no weights given) are reproducible
    if model_cfg is not None:  # an architecture that is not among open_clip's named configs
        cfg = open_clip_cfg(model_cfg)
        model = build_open_clip(cfg)
        if checkpoint is not None:
            open_clip.load_checkpoint(model, str(checkpoint))
        return model, cfg
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise PixqueryError(f"open_clip has no model called {arch!r}; see open_clip.list_models()")
    if pretrained is None and checkpoint is None:  # random weights: nothing to download, even for HF text towers
        model = build_open_clip(cfg)
        return model, open_clip_cfg(cfg)
    # OpenAI weights were trained with QuickGELU; open_clip only warns if the config disagrees.
    tag_cfg = _check_pretrained(open_clip, arch, pretrained) if pretrained and checkpoint is None else {}
    quick_gelu = bool(tag_cfg.get("quick_gelu")) and not cfg.get("quick_gelu")
    if quick_gelu:
        cfg["quick_gelu"] = True
    source = pretrained if checkpoint is None else str(checkpoint)
    try:
        model = open_clip.create_model(arch, pretrained=source, force_quick_gelu=quick_gelu)
    except RuntimeError as e:  # download failed, unknown tag, missing file
        raise ModelNotAvailable(f"open_clip cannot load {arch} weights {source!r}: {e}") from None
    return model, cfg


def _tower(model, which: str):
    """One tower as a module whose forward is what the ONNX graph computes (unit-norm output)."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            fn = self.model.encode_image if which == "visual" else self.model.encode_text
            return fn(x, normalize=True)

    return Tower().eval()


def reparameterized(model):
    """The model with every re-parameterisable block (MobileCLIP's FastViT / RepMixer branches:
    parallel convolutions and batch norms) folded into one convolution, as for inference: the same
    function, a fraction of the work. A copy; models without such blocks come back as they are."""
    if not any(hasattr(m, "reparameterize") for m in model.modules()):
        return model
    from timm.utils.model import reparameterize_model

    return reparameterize_model(model)


def _hf_text(model_cfg: dict) -> bool:
    return "hf_tokenizer_name" in model_cfg.get("text_cfg", {})


def _write_layout(
    model,
    model_cfg: dict,
    tmp: Path,
    dynamic_batch: bool,
    opset: int,
    save_torch: bool,
    tokenizer_dir: Path | None = None,
    preprocess_overrides: dict | None = None,
) -> None:
    torch, open_clip = require_torch()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    preprocess_cfg = {**preprocess_cfg_of(model), **(preprocess_overrides or {})}
    size = preprocess_cfg["size"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    context_length = model_cfg["text_cfg"].get("context_length", 77)
    source_state = model.state_dict()  # before re-parameterising: open_clip's own layout (tests load it)
    model = reparameterized(model)

    image = torch.randn(2 if dynamic_batch else 1, 3, size, size)
    if _hf_text(model_cfg):  # any ids below the smallest vocabulary: the graphs have no id-dependent branch
        text = torch.randint(3, 100, (2 if dynamic_batch else 1, context_length), dtype=torch.int32)
    else:
        text = torch.randint(0, 1000, (2 if dynamic_batch else 1, context_length), dtype=torch.int32)
        text[:, -1] = 49407  # argmax pooling finds the end token
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # The fused attention fast path has no ONNX export; the plain path exports (autograd stays on).
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for which, arg, name in (("visual", image, "image"), ("textual", text, "text")):
                torch.onnx.export(
                    _tower(model, which),
                    (arg,),
                    str(tmp / which / "model.onnx"),
                    input_names=[name],  # immich's names
                    output_names=["embedding"],
                    dynamic_axes={name: {0: "batch"}, "embedding": {0: "batch"}} if dynamic_batch else None,
                    opset_version=opset,
                    dynamo=False,
                )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)

    config = dict(model_cfg)
    if getattr(model, "logit_bias", None) is not None:  # sigmoid-trained: scores mean probabilities
        config["logit_scale"] = float(model.logit_scale.exp().item())
        config["logit_bias"] = float(model.logit_bias.item())
    _write_json(tmp / "config.json", config)
    _write_json(tmp / "visual" / "preprocess_cfg.json", preprocess_cfg)
    if _hf_text(model_cfg):
        _write_hf_tokenizer(model_cfg, tmp / "textual", tokenizer_dir)
    else:
        build_clip_tokenizer().save(str(tmp / "textual" / "tokenizer.json"))
        specials = {
            "bos_token": SOT,
            "eos_token": EOT,
            "unk_token": EOT,
            "pad_token": "!",
        }  # open_clip pads with id 0 = "!"
        _write_json(tmp / "textual" / "special_tokens_map.json", specials)
        _write_json(
            tmp / "textual" / "tokenizer_config.json",
            {**specials, "model_max_length": context_length, "do_lower_case": True},
        )
    if save_torch:  # the same weights for open_clip's `local-dir:` loader (tests compare torch and ONNX)
        import shutil

        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source_state.items()}, str(tmp / "open_clip_model.safetensors"))
        _write_json(tmp / "open_clip_config.json", {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg})
        if _hf_text(model_cfg):  # open_clip's local-dir: reads an HF tokenizer from the folder itself
            for f in (tmp / "textual").iterdir():
                shutil.copy(f, tmp / f.name)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _write_hf_tokenizer(model_cfg: dict, textual: Path, tokenizer_dir: Path | None) -> None:
    """A Hugging Face tokenizer's files (tokenizer.json + config) into textual/: from
    `tokenizer_dir` when given (offline, tests), else the one open_clip names, downloaded once."""
    import shutil

    if tokenizer_dir is not None:
        tokenizer_dir = Path(tokenizer_dir)
        if not (tokenizer_dir / "tokenizer.json").is_file():
            raise PixqueryError(f"{tokenizer_dir}: no tokenizer.json (a Hugging Face tokenizer folder is needed)")
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy(tokenizer_dir / name, textual / name)
        return
    fetch_hf_tokenizer(model_cfg["text_cfg"]["hf_tokenizer_name"], textual)


def fetch_hf_tokenizer(name: str, dest: Path) -> None:
    """The Hugging Face tokenizer `name` saved into `dest` (downloaded once, then cached)."""
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(name).save_pretrained(str(dest))
    except Exception as e:  # offline, not cached, transformers missing
        raise ModelNotAvailable(
            f"the tokenizer {name!r} is not cached and cannot be downloaded ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}). Connect to the internet once, or give "
            f"--tokenizer DIR (a folder with its tokenizer.json)."
        ) from None
    if not (Path(dest) / "tokenizer.json").is_file():
        raise PixqueryError(f"the tokenizer {name!r} has no fast (tokenizer.json) form; pixquery needs one")


def export_model(
    model,
    model_cfg: dict,
    out_dir: Path,
    *,
    dynamic_batch: bool = True,
    opset: int = 17,
    save_torch: bool = False,
    tokenizer_dir: Path | None = None,
    preprocess_overrides: dict | None = None,
) -> Path:
    """Export an already-built open_clip model into `out_dir` (atomically). tokenizer_dir: a Hugging
    Face tokenizer folder for models whose text tower uses one (SigLIP, XLM-R, NLLB)."""
    require_torch()
    out_dir = Path(out_dir)
    with writing_model_folder(out_dir) as tmp:
        _write_layout(model, model_cfg, tmp, dynamic_batch, opset, save_torch, tokenizer_dir, preprocess_overrides)
    return out_dir


def tag_preprocess(arch: str, pretrained: str | None) -> dict:
    """The preprocessing open_clip's pretrained tag states (SigLIP: 0.5 mean/std, squash; MobileCLIP2:
    0/1, bilinear), for random-weight exports of that architecture: the same input pipeline."""
    if not pretrained:
        return {}
    _, open_clip = require_torch()
    cfg = open_clip.get_pretrained_cfg(arch, pretrained) or {}
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in cfg.items()
        if k in ("mean", "std", "interpolation", "resize_mode")
    }


def export_open_clip(
    arch: str,
    pretrained: str | None,
    out_dir: Path,
    checkpoint: Path | None = None,
    *,
    model_cfg: dict | None = None,
    seed: int = 0,
    dynamic_batch: bool = True,
    opset: int = 17,
    save_torch: bool = False,
    force: bool = False,
    tokenizer_dir: Path | None = None,
    preprocess_from: str | None = None,
    registry_name: str | None = None,
) -> Path:
    """Export open_clip `arch` with `pretrained` weights (a tag such as "openai", or None for random
    weights) or a `checkpoint` file, into the immich layout at `out_dir`. `model_cfg` replaces the
    named config (for architectures open_clip does not name, e.g. tiny test models). Skips the
    work when `out_dir` already holds a complete export, unless `force`."""
    out_dir = Path(out_dir)
    if not force and all((out_dir / f).is_file() for f in LAYOUT):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    fetched = None  # a tokenizer fetched here, removed after the export
    if tokenizer_dir is None:  # an HF tokenizer is fetched first: offline, fail before minutes of export
        _, open_clip = require_torch()
        text_cfg = (model_cfg or open_clip.get_model_config(arch) or {}).get("text_cfg", {})
        if "hf_tokenizer_name" in text_cfg:
            import tempfile

            tokenizer_dir = fetched = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out_dir.parent))
    try:
        if fetched is not None:
            fetch_hf_tokenizer(text_cfg["hf_tokenizer_name"], fetched)
        model, cfg = _create_model(arch, pretrained, checkpoint, model_cfg, seed)
        overrides = tag_preprocess(arch, preprocess_from) if pretrained is None and preprocess_from else {}
        path = export_model(
            model,
            cfg,
            out_dir,
            dynamic_batch=dynamic_batch,
            opset=opset,
            save_torch=save_torch,
            tokenizer_dir=tokenizer_dir,
            preprocess_overrides=overrides,
        )
    finally:
        if fetched is not None:
            import shutil

            shutil.rmtree(fetched, ignore_errors=True)
    config = json.loads((path / "config.json").read_text())
    if pretrained is None and checkpoint is None:  # every command that uses it warns (not in open_clip's cfg)
        config["random_weights"] = True
    if registry_name:  # its licence rule follows the folder (pixquery.encoders.registry)
        config["pixquery_model"] = registry_name
    _write_json(path / "config.json", config)
    return path
