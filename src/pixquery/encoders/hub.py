"""Model folders from the Hugging Face hub (immich's ONNX exports), cached by huggingface_hub.

The cache is asked first with `local_files_only`, so a model downloaded once never touches the
network again (no HEAD request per start, works offline). Only the files pixquery reads are
fetched: immich's repos also hold ARM NN / RKNN builds that would double the download.
"""

from __future__ import annotations

import os
from pathlib import Path

from pixquery.encoders.onnx import REQUIRED, check_layout
from pixquery.errors import ModelNotAvailable

ALLOW_PATTERNS = [*REQUIRED, "textual/tokenizer_config.json", "textual/special_tokens_map.json"]


def _offline() -> bool:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once at import; honour a later change too.
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _not_available(model: str, repo: str, where: Path, reason: str) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"Model {model!r} is not available: it comes from the Hugging Face repo {repo}, no complete copy is "
        f"cached in {where}, and it could not be downloaded ({reason}). To fix: connect to the internet once "
        f"(it is then cached), or pass --model /path/to/local/dir (a folder in the immich layout), "
        f"or write one from open_clip weights with `pixquery export`."
    )


def fetch(model: str, repo: str, *, cache_dir: str | Path | None = None, revision: str | None = None) -> Path:
    """Local snapshot folder of `repo`, downloading it on first use. Raises ModelNotAvailable."""
    from huggingface_hub import constants, snapshot_download

    where = Path(cache_dir or constants.HF_HUB_CACHE)
    kwargs = dict(repo_id=repo, revision=revision, allow_patterns=ALLOW_PATTERNS, cache_dir=cache_dir)
    try:
        path = Path(snapshot_download(**kwargs, local_files_only=True))
        if all((path / f).is_file() for f in REQUIRED):
            return path
    except Exception:  # not cached (LocalEntryNotFoundError and kin): go to the network
        pass
    if _offline():
        raise _not_available(model, repo, where, "HF_HUB_OFFLINE is set")
    try:
        path = Path(snapshot_download(**kwargs))
    except Exception as e:  # connection, 404, auth, disk: all end the same way for the user
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise _not_available(model, repo, where, f"{type(e).__name__}: {reason}") from None
    check_layout(path)
    return path
